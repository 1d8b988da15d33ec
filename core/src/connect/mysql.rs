//! A MySQL/MariaDB connection string with its TLS settings taken out (see
//! the [module docs](super) for the modes), connected through mysql_async
//! with native-tls.

use super::{Dialect, Tls, TlsMode};
use crate::error::mysql::mysql_error;
use crate::{Error, Result};
use mysql_async::{Conn, DriverError, Opts, OptsBuilder, SslOpts};

/// Where a MySQL database is and how to reach it.
#[derive(Debug, Clone)]
pub struct Mysql {
    /// Without TLS: what the URL said otherwise.
    opts: Opts,
    tls: Tls,
}

impl Mysql {
    /// A `mysql://` URL. The error is a sentence for the `connection`
    /// field, with the fix.
    pub fn parse(conn: &str) -> std::result::Result<Mysql, String> {
        let (rest, tls) = Tls::split(conn.trim(), Dialect::Mysql)?;
        let opts = Opts::from_url(&rest).map_err(|e| {
            format!("not a MySQL connection URL ({e}); write e.g. `mysql://user@host:3306/dbname`")
        })?;
        Ok(Mysql { opts, tls })
    }

    /// The options the URL gave, TLS aside.
    pub fn opts(&self) -> &Opts {
        &self.opts
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// The options with TLS asked for. The connection stays on TCP: the
    /// driver would move a loopback connection to the server's Unix socket
    /// and skip TLS there.
    fn with_tls(&self) -> Opts {
        let mode = self.tls.mode;
        let mut ssl = SslOpts::default()
            .with_danger_accept_invalid_certs(!mode.verifies())
            .with_danger_skip_domain_validation(mode != TlsMode::VerifyFull);
        if let Some(ca) = &self.tls.ca_file {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        OptsBuilder::from_opts(self.opts.clone())
            .ssl_opts(Some(ssl))
            .prefer_socket(false)
            .into()
    }

    /// Connect. `what` names the database in the error (never with its
    /// password). Under `prefer`, a server that offers no TLS gets a plain
    /// connection; under every stronger mode it is refused.
    pub async fn connect(&self, what: &str) -> Result<Conn> {
        let mode = self.tls.mode;
        let fail = |e| {
            mysql_error(
                e,
                format!("cannot connect to {what} (ssl-mode={})", mode.as_str()),
            )
        };
        if mode == TlsMode::Disable {
            return Conn::new(self.opts.clone()).await.map_err(fail);
        }
        match Conn::new(self.with_tls()).await {
            Ok(conn) => Ok(conn),
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
                if mode == TlsMode::Prefer =>
            {
                tracing::debug!(database = what, "the server offers no TLS: ssl-mode=prefer connects in plain TCP");
                Conn::new(self.opts.clone()).await.map_err(fail)
            }
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) => {
                Err(Error::transient(format!(
                    "cannot connect to {what}: the server offers no TLS and ssl-mode={} never falls back to plain TCP; turn TLS on at the server (ssl_cert, ssl_key) or set ssl-mode=PREFERRED",
                    mode.as_str()
                )))
            }
            Err(e) => Err(fail(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_asked_for_stays_on_tcp_and_checks_what_the_mode_says() {
        let m = Mysql::parse("mysql://u@h:3306/db?ssl-mode=VERIFY_CA").unwrap();
        let o = m.with_tls();
        assert!(!o.prefer_socket());
        let ssl = o.ssl_opts().unwrap();
        assert!(!ssl.accept_invalid_certs());
        assert!(ssl.skip_domain_validation());
        let m = Mysql::parse("mysql://u@h:3306/db?ssl-mode=verify-full").unwrap();
        let o = m.with_tls();
        let ssl = o.ssl_opts().unwrap();
        assert!(!ssl.accept_invalid_certs() && !ssl.skip_domain_validation());
        let m = Mysql::parse("mysql://u@h:3306/db").unwrap();
        assert_eq!(m.tls().mode, TlsMode::Prefer);
        assert!(m.with_tls().ssl_opts().unwrap().accept_invalid_certs());
        assert_eq!(m.opts().db_name(), Some("db"));
    }

    #[test]
    fn a_bad_url_names_the_fix() {
        let e = Mysql::parse("mysql://h/db?nonsense=1").unwrap_err();
        assert!(e.contains("mysql://user@host:3306/dbname"), "{e}");
    }
}
