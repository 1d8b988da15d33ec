//! The `connection:` string of a sql_poll source: which database, and how to
//! name it in logs and errors without its password.

use syncline_core::{Error, Result};

/// A parsed `connection:` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// `postgres://…` or `postgresql://…` (also key=value strings starting with `host=`).
    Postgres(String),
    /// `sqlite:///abs/path.db` or `sqlite:relative.db` (relative to the working directory).
    Sqlite(std::path::PathBuf),
}

impl Connection {
    pub fn parse(s: &str) -> Result<Connection> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") || s.starts_with("host=")
        {
            syncline_core::connect::postgres::Postgres::parse(s)
                .map_err(|e| Error::config(format!("`{}`: {e}", redact(s))))?;
            return Ok(Connection::Postgres(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("sqlite:") {
            // sqlite:///abs/path -> /abs/path; sqlite://rel -> rel; sqlite:rel -> rel
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(Error::config(
                    "`sqlite:` needs a file path, e.g. sqlite:///var/lib/app.db",
                ));
            }
            return Ok(Connection::Sqlite(path.into()));
        }
        Err(Error::config(format!(
            "`{}` is not a supported connection: use postgres://user@host:port/db or sqlite:///path/to/file.db",
            redact(s)
        )))
    }

    /// How to name this connection in logs and errors: never with its password.
    pub fn display(&self) -> String {
        match self {
            Connection::Postgres(url) => redact(url),
            Connection::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user@host/db`;
/// `host=h password=secret` -> `host=h`. Anything else is returned unchanged.
pub fn redact(conn: &str) -> String {
    if let Some((scheme, rest)) = conn.split_once("://") {
        // userinfo ends at the last '@' before the first '/' of the path
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
                format!("{user}@{host}")
            }
            None => authority.to_string(),
        };
        // a password can also be a query parameter
        let path = match path.split_once('?') {
            Some((p, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| !kv.starts_with("password="))
                    .collect();
                if kept.is_empty() {
                    p.to_string()
                } else {
                    format!("{p}?{}", kept.join("&"))
                }
            }
            None => path.to_string(),
        };
        return format!("{scheme}://{authority}{path}");
    }
    conn.split_whitespace()
        .filter(|kv| !kv.starts_with("password="))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://app:s3cr@t@db:5432/shop"),
            "postgres://app@db:5432/shop"
        );
        assert_eq!(
            redact("postgres://app@db/shop?password=x&sslmode=disable"),
            "postgres://app@db/shop?sslmode=disable"
        );
        assert_eq!(redact("postgres://db/shop"), "postgres://db/shop");
        assert_eq!(
            redact("host=db user=app password=x dbname=shop"),
            "host=db user=app dbname=shop"
        );
    }

    #[test]
    fn parses_both_databases() {
        assert_eq!(
            Connection::parse("sqlite:///tmp/a.db").unwrap(),
            Connection::Sqlite("/tmp/a.db".into())
        );
        assert_eq!(
            Connection::parse("sqlite:rel.db").unwrap(),
            Connection::Sqlite("rel.db".into())
        );
        assert!(matches!(
            Connection::parse("postgresql://u@h/d").unwrap(),
            Connection::Postgres(_)
        ));
        let err = Connection::parse("mysql://u:pw@h/d")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw"), "{err}");
    }
}
