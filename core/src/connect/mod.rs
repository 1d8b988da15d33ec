//! Connections to the databases syncline reads and writes, and their TLS:
//! one model for Postgres (the `postgres` sink, `sql_poll`, `postgres_cdc`
//! and its replication connection) and MySQL/MariaDB (the `mysql` sink).
//!
//! # Where the settings are
//! In the connection string, in the words each database's own clients take
//! (libpq/psql, the mysql client, sqlx), so a URL copied from a provider's
//! console works as it is:
//!
//! | | Postgres | MySQL |
//! |---|---|---|
//! | mode | `sslmode=` | `ssl-mode=` |
//! | CA file | `sslrootcert=` | `ssl-ca=` |
//!
//! Mode values, in either database, any case: `disable` (`disabled`),
//! `prefer` (`preferred`, the default, as in libpq and the mysql client),
//! `require` (`required`), `verify-ca` (`verify_ca`), `verify-full`
//! (`verify_identity`).
//!
//! | mode | encrypted | certificate chain checked | host name checked | server without TLS |
//! |---|---|---|---|---|
//! | `disable` | never | - | - | plain TCP |
//! | `prefer` | when the server offers TLS | no | no | plain TCP |
//! | `require` | always | no | no | refused |
//! | `verify-ca` | always | yes | no | refused |
//! | `verify-full` | always | yes | yes | refused |
//!
//! - **Guarantee**: under `require`, `verify-ca` and `verify-full` no byte of
//!   the session after the TLS request (the password included) crosses plain
//!   TCP. A server that does not offer TLS fails the connection; nothing
//!   falls back, and a MySQL connection never moves to the server's Unix
//!   socket (where the client would skip TLS).
//! - The CA file (PEM, one or more certificates, or one DER certificate)
//!   replaces the system's trust store when given; without one,
//!   `verify-ca`/`verify-full` trust the system's store (OpenSSL's default
//!   paths, or `SSL_CERT_FILE`).
//! - `require` with a CA file verifies the chain (it behaves as
//!   `verify-ca`), the rule of libpq and of the mysql client both.
//! - A CA file with `disable` or `prefer`, or without a mode, is a
//!   configuration error (it would be ignored): the fix is `verify-full`.
//! - Client certificates (`sslcert`, `ssl-cert`) are not supported yet; the
//!   loader says so instead of ignoring them.
//! - Environment variables (`PGSSLMODE`, ...) are not read: the pipeline
//!   file is the one place the settings are (`${VAR}` substitution works
//!   there). The replication connection, which goes through libpq, is given
//!   every setting explicitly for the same reason.
//! - The CA file is read again at every connection, so a rotated file is
//!   picked up by the next reconnect without a restart.

pub mod mysql;
pub mod postgres;

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// How a connection uses TLS (see the module docs for each mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    /// Either database's spelling, any case.
    pub fn parse(s: &str) -> Option<TlsMode> {
        Some(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "disable" | "disabled" => TlsMode::Disable,
            "prefer" | "preferred" => TlsMode::Prefer,
            "require" | "required" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" | "verify-identity" => TlsMode::VerifyFull,
            _ => return None,
        })
    }

    /// The libpq name (also what logs and errors say).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a server without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
        )
    }

    /// Whether the server's certificate chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// The TLS settings of one connection, as the connection string gave them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub mode: TlsMode,
    /// Trusted CA certificates instead of the system's store.
    pub ca_file: Option<PathBuf>,
}

/// Which database's parameter names a connection string uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

impl Dialect {
    fn mode_key(self) -> &'static str {
        match self {
            Dialect::Postgres => "sslmode",
            Dialect::Mysql => "ssl-mode",
        }
    }

    fn ca_key(self) -> &'static str {
        match self {
            Dialect::Postgres => "sslrootcert",
            Dialect::Mysql => "ssl-ca",
        }
    }

    /// TLS parameters the driver would take but syncline does not: the fix.
    fn unsupported(self, key: &str) -> Option<String> {
        match (self, key) {
            (Dialect::Postgres, "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir") => {
                Some(format!("`{key}` (client certificates and CRLs) is not supported yet; remove it (server certificates are checked with sslmode=verify-full and sslrootcert)"))
            }
            (Dialect::Mysql, "ssl-cert" | "ssl-key" | "ssl-crl" | "ssl-capath") => {
                Some(format!("`{key}` is not supported yet; remove it (server certificates are checked with ssl-mode=VERIFY_IDENTITY and ssl-ca)"))
            }
            (Dialect::Mysql, "require_ssl" | "verify_ca" | "verify_identity" | "built_in_roots") => {
                Some(format!("`{key}` is the driver's own switch; write `ssl-mode=` (DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY) and `ssl-ca=` instead"))
            }
            _ => None,
        }
    }
}

impl Tls {
    /// Takes the TLS parameters out of a connection string (a URL's query,
    /// or Postgres' `key=value` form): the string the driver gets, and the
    /// settings. The error is a sentence for the `connection` field.
    pub fn split(conn: &str, dialect: Dialect) -> std::result::Result<(String, Tls), String> {
        let mut mode: Option<TlsMode> = None;
        let mut ca_file: Option<PathBuf> = None;
        let mut take = |key: &str, value: &str| -> std::result::Result<bool, String> {
            if key == dialect.mode_key() {
                mode = Some(TlsMode::parse(value).ok_or_else(|| {
                    format!(
                        "`{key}={value}` is not a TLS mode: write disable, prefer, require, verify-ca or verify-full"
                    )
                })?);
                Ok(true)
            } else if key == dialect.ca_key() {
                ca_file = Some(PathBuf::from(value));
                Ok(true)
            } else if let Some(fix) = dialect.unsupported(key) {
                Err(fix)
            } else {
                Ok(false)
            }
        };
        let rest = if conn.contains("://") {
            match conn.split_once('?') {
                None => conn.to_string(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        if !take(&percent_decode(k), &percent_decode(v))? {
                            kept.push(pair);
                        }
                    }
                    if kept.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for token in conn.split_whitespace() {
                let (k, v) = token.split_once('=').unwrap_or((token, ""));
                let v = v.trim_matches('\'');
                if !take(k.trim(), v)? {
                    kept.push(token);
                }
            }
            kept.join(" ")
        };
        let ca_key = dialect.ca_key();
        let mode = match (mode, &ca_file) {
            (Some(TlsMode::Require), Some(_)) => TlsMode::VerifyCa,
            (Some(m @ (TlsMode::Disable | TlsMode::Prefer)), Some(_)) => {
                return Err(format!(
                    "`{ca_key}` is ignored with {}={}: write {}=verify-full (or verify-ca) to check the server's certificate",
                    dialect.mode_key(),
                    m.as_str(),
                    dialect.mode_key()
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "`{ca_key}` needs a mode that checks certificates: add {}=verify-full (or verify-ca)",
                    dialect.mode_key()
                ))
            }
            (m, _) => m.unwrap_or_default(),
        };
        let tls = Tls { mode, ca_file };
        if let Some(ca) = &tls.ca_file {
            read_certificates(ca).map_err(|e| format!("`{ca_key}`: {e}"))?;
        }
        Ok((rest, tls))
    }

    /// A TLS connector for this mode, trusting the CA file (read now) or the
    /// system's store.
    pub fn connector(&self) -> Result<native_tls::TlsConnector> {
        let mut b = native_tls::TlsConnector::builder();
        b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        match self.mode {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
                b.danger_accept_invalid_certs(true);
                b.danger_accept_invalid_hostnames(true);
            }
            TlsMode::VerifyCa => {
                b.danger_accept_invalid_hostnames(true);
            }
            TlsMode::VerifyFull => {}
        }
        if let Some(ca) = &self.ca_file {
            b.disable_built_in_roots(true);
            for cert in read_certificates(ca).map_err(Error::config)? {
                b.add_root_certificate(cert);
            }
        }
        b.build()
            .map_err(|e| Error::config("cannot set up TLS").with_source(e))
    }

    /// The CA file a client that needs a file (libpq) is given: the
    /// configured one, else the system's bundle.
    pub fn ca_file_or_system(&self) -> Result<PathBuf> {
        if let Some(ca) = &self.ca_file {
            return Ok(ca.clone());
        }
        system_ca_bundle().ok_or_else(|| {
            Error::config(format!(
                "sslmode={} needs trusted CA certificates and this machine has no system bundle: give a CA file (sslrootcert=/path/to/ca.pem)",
                self.mode.as_str()
            ))
        })
    }
}

/// The system's CA bundle, where OpenSSL looks for it.
pub fn system_ca_bundle() -> Option<PathBuf> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    env.into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/ca-bundle.pem",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        )
        .find(|p| p.is_file())
}

/// The certificates of a CA file: PEM (one or more) or one DER certificate.
fn read_certificates(path: &Path) -> std::result::Result<Vec<native_tls::Certificate>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    let bad = |e: native_tls::Error| {
        format!(
            "the CA file {} holds no valid certificate: {e}",
            path.display()
        )
    };
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains(BEGIN) {
        return native_tls::Certificate::from_der(&bytes)
            .map(|c| vec![c])
            .map_err(bad);
    }
    let mut certs = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(format!(
                "the CA file {} has a certificate without its END line",
                path.display()
            ));
        };
        let block = &rest[start..start + len + END.len()];
        certs.push(native_tls::Certificate::from_pem(block.as_bytes()).map_err(bad)?);
        rest = &rest[start + len + END.len()..];
    }
    Ok(certs)
}

/// `%XX` escapes of a URL query, decoded.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Everything but ASCII letters, digits and `-._~/:` is escaped in a query
/// value this module writes.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b':');

/// A query value with `&`, `=`, `%`, `#`, spaces and non-ASCII escaped.
pub(crate) fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_pg(s: &str) -> std::result::Result<(String, Tls), String> {
        Tls::split(s, Dialect::Postgres)
    }

    #[test]
    fn modes_in_either_spelling() {
        for (s, m) in [
            ("disable", TlsMode::Disable),
            ("DISABLED", TlsMode::Disable),
            ("Preferred", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("VERIFY_CA", TlsMode::VerifyCa),
            ("verify-ca", TlsMode::VerifyCa),
            ("verify-full", TlsMode::VerifyFull),
            ("VERIFY_IDENTITY", TlsMode::VerifyFull),
        ] {
            assert_eq!(TlsMode::parse(s), Some(m), "{s}");
        }
        assert_eq!(TlsMode::parse("verify"), None);
        assert_eq!(TlsMode::parse("allow"), None);
    }

    #[test]
    fn the_tls_parameters_leave_the_url_and_the_rest_stays() {
        let (rest, tls) = split_pg(
            "postgres://u:p@h:5432/db?application_name=x&sslmode=require&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@h:5432/db?application_name=x&connect_timeout=3"
        );
        assert_eq!(
            tls,
            Tls {
                mode: TlsMode::Require,
                ca_file: None
            }
        );
        let (rest, tls) = split_pg("postgres://h/db").unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(tls.mode, TlsMode::Prefer, "libpq's default");
        let (rest, tls) = split_pg("host=h dbname=db sslmode=disable user=u").unwrap();
        assert_eq!(rest, "host=h dbname=db user=u");
        assert_eq!(tls.mode, TlsMode::Disable);
        let (rest, tls) =
            Tls::split("mysql://u@h/db?ssl-mode=VERIFY_IDENTITY", Dialect::Mysql).unwrap();
        assert_eq!(rest, "mysql://u@h/db");
        assert_eq!(tls.mode, TlsMode::VerifyFull);
    }

    #[test]
    fn a_ca_file_without_a_checking_mode_is_refused_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("syncline-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = split_pg(&format!(
            "postgres://h/db?sslmode=verify-full&sslrootcert={}",
            missing.display()
        ))
        .unwrap_err();
        assert!(
            e.contains("cannot read the CA file") && e.contains("missing.pem"),
            "{e}"
        );
        let junk = dir.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = split_pg(&format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            junk.display()
        ))
        .unwrap_err();
        assert!(e.contains("no valid certificate"), "{e}");
        let e = split_pg("postgres://h/db?sslmode=prefer&sslrootcert=/x.pem").unwrap_err();
        assert!(e.contains("sslmode=verify-full"), "{e}");
        let e = split_pg("postgres://h/db?sslrootcert=/x.pem").unwrap_err();
        assert!(e.contains("add sslmode=verify-full"), "{e}");
        let e = split_pg("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(e.contains("not a TLS mode"), "{e}");
        let e = split_pg("postgres://h/db?sslmode=verify-full&sslcert=/c.pem").unwrap_err();
        assert!(e.contains("not supported yet"), "{e}");
        let e = Tls::split("mysql://h/db?require_ssl=true", Dialect::Mysql).unwrap_err();
        assert!(e.contains("ssl-mode="), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn percent_escapes_round_trip() {
        let s = "/tmp/a b&c=%d.pem";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
