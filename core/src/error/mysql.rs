//! MySQL and MariaDB errors by server error code: what every component that
//! talks to MySQL (the `mysql` sink; the MySQL sources to come) does next,
//! in one table.
//!
//! - `Transient`: the server, the network or a lock was the problem
//!   (deadlock, lock wait timeout, too many connections, a read-only server
//!   during a failover): retry with backoff.
//! - `Data`: this row or value is refused (too long, out of range, an
//!   incorrect value for the column, a constraint, a row larger than the
//!   server's packet or row limit): the record goes to the dead-letter
//!   topic and the rest goes on.
//! - `Config`: the operator must act (credentials, a missing database,
//!   table, column or privilege).
//! - `Internal`: syncline sent something the server cannot parse; stop.
//!
//! Errors without a server code: a broken or refused connection is
//! `Transient`; a bad URL is `Config`; a value the driver cannot convert is
//! `Data`. A server code not in the table stops the component (`Config`).

use super::{Error, ErrorKind};
use mysql_async::{DriverError, Error as E};
use ErrorKind::{Config, Data, Internal, Transient};

/// (server error code, kind, why).
#[rustfmt::skip]
pub const TABLE: &[(u16, ErrorKind, &str)] = &[
    (1040, Transient, "too many connections"),
    (1053, Transient, "the server is shutting down"),
    (1205, Transient, "lock wait timeout"),
    (1213, Transient, "deadlock; the transaction is retried"),
    (1290, Transient, "the server runs with --read-only (a failover made it a replica?)"),
    (1836, Transient, "the server is in read-only mode"),
    (1927, Transient, "the connection was killed"),
    (1021, Transient, "the disk is full"),
    (1114, Transient, "the table is full"),
    (1041, Transient, "the server is out of memory"),
    (1048, Data, "a column cannot be null"),
    (1062, Data, "a duplicate entry for a unique key other than the one upserted by"),
    (1118, Data, "the row is larger than the table's row size limit"),
    (1153, Data, "the statement is larger than max_allowed_packet"),
    (1264, Data, "a value is out of range for its column"),
    (1265, Data, "a value was truncated"),
    (1292, Data, "an incorrect date, time or number value"),
    (1366, Data, "an incorrect value for the column (e.g. characters the charset cannot hold)"),
    (1406, Data, "a value is too long for its column"),
    (1416, Data, "cannot get a geometry object from the data"),
    (1451, Data, "a foreign key refused the delete"),
    (1452, Data, "a foreign key refused the row"),
    (1690, Data, "a value is out of range"),
    (3140, Data, "invalid JSON text"),
    (3819, Data, "a check constraint refused the row"),
    (4025, Data, "a constraint refused the row (MariaDB; e.g. invalid JSON in a JSON column)"),
    (1044, Config, "access denied to the database: grant the privileges"),
    (1045, Config, "access denied: check the user and password"),
    (1049, Config, "the database does not exist"),
    (1054, Config, "a column does not exist"),
    (1142, Config, "a command is denied to the user on a table: grant the privilege"),
    (1143, Config, "a command is denied to the user on a column: grant the privilege"),
    (1146, Config, "a table does not exist"),
    (1227, Config, "access denied: the user needs a privilege for this"),
    (1251, Config, "the server asks for an authentication method the client does not support"),
    (1052, Internal, "an ambiguous column in a statement (a bug in syncline)"),
    (1064, Internal, "a statement the server cannot parse (a bug in syncline)"),
];

/// What server error `code` means, by [`TABLE`]: (kind, why).
pub fn classify_code(code: u16) -> (ErrorKind, &'static str) {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, kind, why)| (*kind, *why))
        .unwrap_or((Config, "an unknown MySQL error"))
}

/// What `e` means: (kind, why).
pub fn classify(e: &E) -> (ErrorKind, &'static str) {
    match e {
        // Two writers inserted the same key at once (fan-in of two topics
        // into one table): the retry finds the row and updates it. A
        // duplicate on another unique index is the record's refusal.
        E::Server(s) if s.code == 1062 && is_primary_key_duplicate(&s.message) => (
            Transient,
            "another transaction inserted the same key at the same time",
        ),
        E::Server(s) => classify_code(s.code),
        E::Io(_) => (Transient, "the connection to the server failed"),
        E::Url(_) => (Config, "a bad connection URL"),
        E::Driver(DriverError::FromValue { .. } | DriverError::FromRow { .. }) => {
            (Data, "a value the driver cannot convert")
        }
        E::Driver(DriverError::ConnectionClosed) => (Transient, "the connection was closed"),
        E::Driver(_) => (Transient, "the driver lost its connection state"),
        E::Other(_) => (Transient, "a passing client error"),
    }
}

/// Whether a 1062 message names the primary key ("... for key 'PRIMARY'"
/// in MariaDB, "... for key 'items.PRIMARY'" in MySQL 8).
fn is_primary_key_duplicate(message: &str) -> bool {
    message.ends_with("'PRIMARY'") || message.ends_with(".PRIMARY'")
}

/// `e` as a syncline error whose kind says what to do next; `what` is the
/// message, the table's reason and `e` follow it.
pub fn mysql_error(e: E, what: impl Into<String>) -> Error {
    let (kind, why) = classify(&e);
    Error::new(kind, format!("{} ({why})", what.into())).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_what_the_table_says_and_listed_once() {
        for (i, (code, kind, why)) in TABLE.iter().enumerate() {
            assert_eq!(classify_code(*code), (*kind, *why), "{code}");
            assert!(
                !TABLE[..i].iter().any(|(c, _, _)| c == code),
                "{code} is listed twice"
            );
        }
    }

    #[test]
    fn refusals_are_data_passing_faults_are_retried_and_the_rest_stops() {
        for code in [1406, 1264, 1366, 1292, 1048, 3819, 4025] {
            assert_eq!(classify_code(code).0, Data, "{code}");
        }
        for code in [1213, 1205, 1040, 1290] {
            assert_eq!(classify_code(code).0, Transient, "{code}");
        }
        for code in [1045, 1049, 1146, 9999] {
            assert_eq!(classify_code(code).0, Config, "{code}");
        }
        let io = E::Io(mysql_async::IoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(classify(&io).0, Transient);
    }

    #[test]
    fn a_duplicate_primary_key_is_retried_and_another_unique_key_refuses() {
        assert!(is_primary_key_duplicate(
            "Duplicate entry '3' for key 'PRIMARY'"
        ));
        assert!(is_primary_key_duplicate(
            "Duplicate entry '3' for key 'items.PRIMARY'"
        ));
        assert!(!is_primary_key_duplicate(
            "Duplicate entry 'taken' for key 'items_v'"
        ));
        assert!(!is_primary_key_duplicate(
            "Duplicate entry 'PRIMARY' for key 'items_v'"
        ));
    }
}
