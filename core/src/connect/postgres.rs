//! A Postgres connection string with its TLS settings taken out (see the
//! [module docs](super) for the modes), connected through tokio-postgres
//! with a native-tls connector, or handed to libpq for replication.

use super::{percent_encode, Dialect, Tls, TlsMode};
use crate::error::postgres::pg_error;
use crate::Result;
use tokio_postgres::config::SslMode;

/// Where a Postgres database is and how to reach it.
#[derive(Debug, Clone)]
pub struct Postgres {
    config: tokio_postgres::Config,
    tls: Tls,
    /// The connection string without its TLS parameters (for libpq).
    rest: String,
}

impl Postgres {
    /// A `postgres://` URL or a `key=value` string. The error is a
    /// sentence for the `connection` field, with the fix.
    pub fn parse(conn: &str) -> std::result::Result<Postgres, String> {
        let (rest, tls) = Tls::split(conn.trim(), Dialect::Postgres)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
            format!("not a Postgres connection URL ({e}); write e.g. `postgres://user@host:5432/dbname`")
        })?;
        config.ssl_mode(match tls.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            // tokio-postgres' Require refuses a server that answers "no
            // TLS"; the connector decides what is checked.
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        Ok(Postgres { config, tls, rest })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Session settings a component adds (options, application name).
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Connect, with the connection task on the current runtime. `what`
    /// names the database in the error (never with its password).
    pub async fn connect(&self, what: &str) -> Result<tokio_postgres::Client> {
        let connector = postgres_native_tls::MakeTlsConnector::new(self.tls.connector()?);
        let (client, connection) = self.config.connect(connector).await.map_err(|e| {
            pg_error(
                e,
                format!(
                    "cannot connect to {what} (sslmode={})",
                    self.tls.mode.as_str()
                ),
            )
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection closed");
            }
        });
        Ok(client)
    }

    /// The libpq connection string of the same database with the same TLS
    /// settings, made explicit (libpq would otherwise read `PGSSLMODE` and
    /// `~/.postgresql/root.crt`), and `extra` parameters added.
    pub fn libpq(&self, extra: &[(&str, &str)]) -> Result<String> {
        let mut params: Vec<(String, String)> =
            vec![("sslmode".into(), self.tls.mode.as_str().into())];
        if self.tls.mode.verifies() {
            let ca = self.tls.ca_file_or_system()?;
            params.push(("sslrootcert".into(), ca.to_string_lossy().into_owned()));
        }
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut out = self.rest.clone();
        if out.contains("://") {
            for (k, v) in params {
                out.push(if out.contains('?') { '&' } else { '?' });
                out.push_str(&format!("{k}={}", percent_encode(&v)));
            }
        } else {
            for (k, v) in params {
                let v = v.replace('\\', "\\\\").replace('\'', "\\'");
                out.push_str(&format!(" {k}='{v}'"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_gets_every_setting_explicitly() {
        let pg = Postgres::parse("postgres://u@h:5/db?sslmode=require").unwrap();
        assert_eq!(pg.config().get_ssl_mode(), SslMode::Require);
        assert_eq!(
            pg.libpq(&[("replication", "database"), ("options", "-c a=b")])
                .unwrap(),
            "postgres://u@h:5/db?sslmode=require&replication=database&options=-c%20a%3Db"
        );
        let pg = Postgres::parse("host=h dbname=db").unwrap();
        assert_eq!(pg.config().get_ssl_mode(), SslMode::Prefer);
        assert_eq!(
            pg.libpq(&[("options", "-c x='y'")]).unwrap(),
            "host=h dbname=db sslmode='prefer' options='-c x=\\'y\\''"
        );
        let pg = Postgres::parse("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(pg.config().get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn verifying_modes_name_a_ca_file_for_libpq() {
        let pg = Postgres::parse("postgres://h/db?sslmode=verify-full").unwrap();
        let s = pg.libpq(&[]).unwrap();
        assert!(
            s.starts_with("postgres://h/db?sslmode=verify-full&sslrootcert=/"),
            "{s}"
        );
    }

    #[test]
    fn a_bad_url_names_the_fix() {
        let e = Postgres::parse("postgres://h/db?nonsense=1").unwrap_err();
        assert!(e.contains("postgres://user@host:5432/dbname"), "{e}");
    }
}
