//! What every Postgres-reading source shares.

use syncline_core::{Error, ErrorKind};

/// Postgres errors by what to do next: connection and resource trouble is
/// transient; a bad name or syntax is the user's config; the rest is data.
pub(crate) fn pg_error(e: tokio_postgres::Error, what: impl FnOnce() -> String) -> Error {
    let kind = match e.code().map(|c| c.code()) {
        None => ErrorKind::Transient,
        Some(c)
            if ["08", "40", "53", "57", "55"]
                .iter()
                .any(|p| c.starts_with(p)) =>
        {
            ErrorKind::Transient
        }
        Some(c) if c.starts_with("42") || c.starts_with("3F") || c.starts_with("28") => {
            ErrorKind::Config
        }
        Some(_) => ErrorKind::Data,
    };
    Error::new(kind, what()).with_source(e)
}
