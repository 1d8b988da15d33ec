//! Postgres errors by SQLSTATE: what every component that talks to Postgres
//! (the CDC and polling sources, the sink) does next. One table, so that a
//! source and a sink never disagree about the same server's answer.
//!
//! - `Transient`: the server, the network or a lock was the problem; retry
//!   with backoff (the work is repeated from its stored position).
//! - `Data`: this row or value is refused (bad text for a uuid or numeric, a
//!   NUL in text or jsonb, a value out of range, a constraint): the record
//!   goes to the dead-letter topic and the rest goes on.
//! - `Config`: the operator must act (credentials, a missing table or
//!   privilege, a server setting); the component stops and says why.
//! - `Internal`: the server or syncline broke an invariant; stop.
//!
//! A code not in the table stops the component (`Config`): retrying an
//! unknown permanent error forever, or dead-lettering a whole stream for a
//! systemic one, would both be worse than asking.

use super::{Error, ErrorKind, Row};
use ErrorKind::{Config, Data, Internal, Transient};

/// SQLSTATE codes or class prefixes; the longest matching prefix wins.
#[rustfmt::skip]
pub const TABLE: &[Row] = &[
    (
        "08",
        Transient,
        "connection exception: the server or the network is away",
    ),
    ("0A", Config, "feature not supported by this server"),
    ("21", Data, "cardinality violation"),
    ("22", Data, "data exception: a value the column refuses"),
    ("23", Data, "integrity constraint violation"),
    (
        "25006",
        Transient,
        "read-only transaction: a failover made the server a standby",
    ),
    ("25", Internal, "invalid transaction state"),
    ("27", Data, "a trigger refused the change"),
    (
        "28",
        Config,
        "invalid authorization: check the user and password",
    ),
    ("3D", Config, "the database does not exist"),
    ("3F", Config, "the schema does not exist"),
    (
        "40",
        Transient,
        "transaction rollback: serialization failure or deadlock",
    ),
    (
        "42804",
        Data,
        "datatype mismatch: a value's type does not fit the target column",
    ),
    (
        "42",
        Config,
        "a missing table, column or privilege, or a statement the server refuses",
    ),
    ("44", Data, "WITH CHECK OPTION violation"),
    (
        "53",
        Transient,
        "insufficient resources: disk, memory or connections",
    ),
    (
        "54",
        Data,
        "program limit exceeded: a row or value too large for the target",
    ),
    (
        "55006",
        Transient,
        "object in use (e.g. a replication slot still held)",
    ),
    ("55P03", Transient, "lock not available"),
    (
        "55",
        Config,
        "object not in prerequisite state (e.g. wal_level)",
    ),
    (
        "57",
        Transient,
        "operator intervention: shutdown, restart or a cancelled query",
    ),
    ("58", Transient, "system error: an I/O error on the server"),
    ("72", Transient, "snapshot too old"),
    ("F0", Config, "configuration file error on the server"),
    (
        "P0",
        Data,
        "a trigger or function raised an error for this row",
    ),
    ("XX", Internal, "internal error of the server"),
];

/// What `sqlstate` means, by [`TABLE`]: (kind, why).
pub fn classify_sqlstate(sqlstate: &str) -> (ErrorKind, &'static str) {
    TABLE
        .iter()
        .filter(|(code, _, _)| sqlstate.starts_with(code))
        .max_by_key(|(code, _, _)| code.len())
        .map(|(_, kind, why)| (*kind, *why))
        .unwrap_or((Config, "an error code syncline does not know"))
}

/// The kind of a client error: by its SQLSTATE when the server sent one;
/// otherwise a lost connection or an I/O failure is transient and a value
/// the client could not encode (`error serializing parameter`) is data.
pub fn kind(e: &tokio_postgres::Error) -> ErrorKind {
    if let Some(code) = e.code() {
        return classify_sqlstate(code.code()).0;
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        return Transient;
    }
    if e.to_string().starts_with("error serializing parameter") {
        return Data;
    }
    Transient
}

/// `e` as a syncline error whose kind says what to do next, with `what`
/// (what was being done) as its message and `e` kept as its cause.
pub fn pg_error(e: tokio_postgres::Error, what: impl Into<String>) -> Error {
    Error::new(kind(&e), what).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case per row: a real SQLSTATE of that class and its kind.
    #[test]
    fn every_row_classifies_a_real_code() {
        let cases = [
            ("08006", Transient), // connection failure
            ("0A000", Config),    // feature not supported
            ("21000", Data),      // cardinality violation
            ("22P02", Data),      // invalid text representation (uuid, numeric)
            ("23505", Data),      // unique violation
            ("25006", Transient), // read-only sql transaction
            ("25P02", Internal),  // in failed sql transaction
            ("27000", Data),      // triggered data change violation
            ("28P01", Config),    // invalid password
            ("3D000", Config),    // invalid catalog name
            ("3F000", Config),    // invalid schema name
            ("40P01", Transient), // deadlock detected
            ("42804", Data),      // datatype mismatch (a text value into a uuid column)
            ("42P01", Config),    // undefined table
            ("44000", Data),      // with check option violation
            ("53300", Transient), // too many connections
            ("54000", Data),      // program limit exceeded
            ("55006", Transient), // object in use
            ("55P03", Transient), // lock not available
            ("55000", Config),    // object not in prerequisite state
            ("57P01", Transient), // admin shutdown
            ("58030", Transient), // io error
            ("72000", Transient), // snapshot too old
            ("F0000", Config),    // config file error
            ("P0001", Data),      // raise exception
            ("XX000", Internal),  // internal error
        ];
        assert_eq!(cases.len(), TABLE.len(), "a case for every row");
        for (code, want) in cases {
            assert_eq!(classify_sqlstate(code).0, want, "{code}");
        }
    }

    #[test]
    fn values_the_target_refuses_are_data() {
        for code in [
            "22P02", "22P05", "22003", "22001", "22021", "23502", "23503", "23514",
        ] {
            assert_eq!(classify_sqlstate(code).0, Data, "{code}");
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_unknown_codes_stop() {
        assert_eq!(classify_sqlstate("55P03").0, Transient);
        assert_eq!(classify_sqlstate("55P02").0, Config);
        assert_eq!(classify_sqlstate("ZZ999").0, Config);
    }
}
