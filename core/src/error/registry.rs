//! Schema registry answers by what every stage does next: one table of HTTP
//! status and Confluent error code, for the encoder and the decoder alike.
//!
//! - `Transient`: the registry is away or overloaded (no answer, 408, 429,
//!   5xx), or refuses the credentials (401, 403: a registry restarted with
//!   other users, a password being rotated): retry with backoff and say
//!   what to check; nothing is dead-lettered for it, and the stream resumes
//!   once the registry answers again.
//! - `Data`: this record names a schema id the registry does not have
//!   (40403): that record goes to the dead-letter topic.
//! - `Config`: the operator must act: a URL that is not a registry (404
//!   without a Confluent code), a schema the registry refuses as
//!   incompatible (409) or invalid (422). A refused schema stops the whole
//!   pipeline, before anything encoded with it is written.

use super::ErrorKind;
use ErrorKind::{Config, Data, Transient};

/// Any Confluent error code.
pub const ANY: u32 = 0;

/// (HTTP status, Confluent `error_code` or [`ANY`], kind, why). The first
/// row whose status matches and whose code matches (or is `ANY`) wins.
#[rustfmt::skip]
pub const TABLE: &[(u16, u32, ErrorKind, &str)] = &[
    (
        401,
        ANY,
        Transient,
        "the registry refused the credentials (check registry.username / registry.password)",
    ),
    (
        403,
        ANY,
        Transient,
        "the registry does not allow this user to do that (check its roles)",
    ),
    (
        404,
        40403,
        Data,
        "the record names a schema id the registry does not have",
    ),
    (
        404,
        40401,
        Config,
        "the subject does not exist in the registry",
    ),
    (
        404,
        ANY,
        Config,
        "not a schema registry at this URL (registry.url)",
    ),
    (408, ANY, Transient, "the registry timed out"),
    (
        409,
        ANY,
        Config,
        "the registry refused the schema as incompatible with the subject's earlier versions",
    ),
    (
        415,
        ANY,
        Config,
        "the registry refused the request's content type",
    ),
    (
        422,
        ANY,
        Config,
        "the registry refused the schema as invalid",
    ),
    (429, ANY, Transient, "the registry asks to slow down"),
    (500, ANY, Transient, "the registry failed (500)"),
    (
        502,
        ANY,
        Transient,
        "a proxy in front of the registry failed (502)",
    ),
    (503, ANY, Transient, "the registry is unavailable (503)"),
    (
        504,
        ANY,
        Transient,
        "a proxy in front of the registry timed out (504)",
    ),
];

/// What an answer with `status` and Confluent `code` means: (kind, why).
/// Statuses not in the table: other 5xx are transient, other 4xx stop.
pub fn classify(status: u16, code: u32) -> (ErrorKind, &'static str) {
    if let Some((_, _, kind, why)) = TABLE
        .iter()
        .find(|(s, c, _, _)| *s == status && (*c == ANY || *c == code))
    {
        return (*kind, why);
    }
    if status >= 500 {
        (Transient, "the registry failed")
    } else {
        (Config, "the registry refused the request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_decides_its_answer() {
        let cases = [
            ((401, 40101), Transient),
            ((403, 40301), Transient),
            ((404, 40403), Data),
            ((404, 40401), Config),
            ((404, 0), Config),
            ((408, 0), Transient),
            ((409, 409), Config),
            ((415, 0), Config),
            ((422, 42201), Config),
            ((429, 0), Transient),
            ((500, 50001), Transient),
            ((502, 0), Transient),
            ((503, 0), Transient),
            ((504, 0), Transient),
        ];
        assert_eq!(cases.len(), TABLE.len(), "a case for every row");
        for ((status, code), want) in cases {
            assert_eq!(classify(status, code).0, want, "{status} {code}");
        }
    }

    /// The answers the connector runtime issue names: none may dead-letter
    /// a valid record.
    #[test]
    fn outages_and_credentials_are_never_data() {
        for status in [401, 403, 500, 504] {
            assert_ne!(classify(status, 0).0, Data, "{status}");
        }
        assert_eq!(classify(507, 0).0, Transient);
        assert_eq!(classify(400, 0).0, Config);
    }
}
