//! SQLite errors by result code: what every component that opens a SQLite
//! file (the `sql_poll` source, the `sqlite` sink) does next, in one table.
//!
//! - `Transient`: another connection holds the lock past `busy_timeout`, the
//!   disk is full or failed for a moment, the schema changed under a
//!   prepared statement: retry with backoff.
//! - `Data`: this row or value is refused (a constraint, a type mismatch in
//!   a STRICT table, a value over SQLite's size limit): the record goes to
//!   the dead-letter topic and the rest goes on.
//! - `Config`: the operator must act (the file cannot be opened or written,
//!   it is not a database or is corrupt, a missing table or column).
//! - `Internal`: syncline misused SQLite; stop.
//!
//! rusqlite's own errors (a value of the wrong kind read back, a NUL in a
//! path) are not in the table: they are `Data` where a value was read, and
//! the caller says so.

use super::{Error, ErrorKind};
use rusqlite::ErrorCode as C;
use ErrorKind::{Config, Data, Internal, Transient};

/// (primary result code, kind, why).
#[rustfmt::skip]
pub const TABLE: &[(C, ErrorKind, &str)] = &[
    (C::DatabaseBusy, Transient, "the database file is locked by another connection"),
    (C::DatabaseLocked, Transient, "a table is locked by another statement"),
    (C::OutOfMemory, Transient, "SQLite ran out of memory"),
    (C::OperationInterrupted, Transient, "the operation was interrupted"),
    (C::SystemIoFailure, Transient, "a disk I/O error"),
    (C::DiskFull, Transient, "the disk (or the database's size limit) is full"),
    (C::SchemaChanged, Transient, "the schema changed under a prepared statement"),
    (C::FileLockingProtocolFailed, Transient, "the file locking protocol failed"),
    (C::ConstraintViolation, Data, "a constraint refused the row (NOT NULL, CHECK, UNIQUE, FOREIGN KEY)"),
    (C::TypeMismatch, Data, "a value's type does not fit the column"),
    (C::TooBig, Data, "a string or blob is larger than SQLite's limit"),
    (C::PermissionDenied, Config, "permission denied: check the file's and the directory's permissions"),
    (C::ReadOnly, Config, "the database is read-only: check the file's permissions and the mount"),
    (C::CannotOpen, Config, "the database file cannot be opened: check the path and its directory"),
    (C::NotADatabase, Config, "the file is not a SQLite database"),
    (C::DatabaseCorrupt, Config, "the database file is corrupt: restore it or point to another"),
    (C::NoLargeFileSupport, Config, "the file system does not support large files"),
    (C::AuthorizationForStatementDenied, Config, "an authorizer refused the statement"),
    (C::Unknown, Config, "a missing table or column, or a statement SQLite refuses"),
    (C::OperationAborted, Internal, "a callback aborted the operation"),
    (C::InternalMalfunction, Internal, "SQLite reported an internal error"),
    (C::ApiMisuse, Internal, "SQLite was used incorrectly (a bug in syncline)"),
    (C::ParameterOutOfRange, Internal, "a bound parameter is out of range (a bug in syncline)"),
    (C::NotFound, Internal, "an unknown file control (a bug in syncline)"),
];

/// What `code` means, by [`TABLE`]: (kind, why). A code not in the table
/// stops the component (`Config`).
pub fn classify_code(code: C) -> (ErrorKind, &'static str) {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, kind, why)| (*kind, *why))
        .unwrap_or((Config, "an unknown SQLite error"))
}

/// `e` as a syncline error whose kind says what to do next; `what` is the
/// message, the table's reason and `e` follow it. An error that is not
/// SQLite's own (rusqlite converting a value) is `Data`.
pub fn sqlite_error(e: rusqlite::Error, what: impl Into<String>) -> Error {
    let (kind, why) = match &e {
        rusqlite::Error::SqliteFailure(f, _) => classify_code(f.code),
        // A statement SQLite refused to prepare (with where in the text).
        rusqlite::Error::SqlInputError { error, .. } => classify_code(error.code),
        _ => (Data, "a value SQLite cannot take or give"),
    };
    Error::new(kind, format!("{} ({why})", what.into())).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn every_row_is_what_the_table_says_and_listed_once() {
        for (i, (code, kind, why)) in TABLE.iter().enumerate() {
            assert_eq!(classify_code(*code), (*kind, *why), "{code:?}");
            assert!(
                !TABLE[..i].iter().any(|(c, _, _)| c == code),
                "{code:?} is listed twice"
            );
        }
    }

    /// Real SQLite errors, made on purpose, classify as their row says.
    #[test]
    fn real_errors_classify_by_their_code() {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL CHECK (v <> 'bad'));
             CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER) STRICT;",
        )
        .unwrap();
        let kind = |sql: &str| sqlite_error(db.execute_batch(sql).unwrap_err(), "x").kind();
        assert_eq!(kind("INSERT INTO t VALUES (1, NULL)"), Data);
        assert_eq!(kind("INSERT INTO t VALUES (1, 'bad')"), Data);
        assert_eq!(kind("INSERT INTO s VALUES (1, 'not a number')"), Data);
        assert_eq!(kind("INSERT INTO nowhere VALUES (1)"), Config);
        assert_eq!(kind("SELECT nocolumn FROM t"), Config);

        let dir = std::env::temp_dir().join(format!("syncline-sqlite-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_db = dir.join("not.db");
        std::fs::write(&not_db, vec![b'x'; 4096]).unwrap();
        let e = Connection::open(&not_db)
            .and_then(|c| c.execute_batch("SELECT * FROM sqlite_master"))
            .unwrap_err();
        assert_eq!(sqlite_error(e, "x").kind(), Config);
        let e = Connection::open(dir.join("no/such/dir.db")).unwrap_err();
        assert_eq!(sqlite_error(e, "x").kind(), Config);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_database_is_waited_out() {
        let path =
            std::env::temp_dir().join(format!("syncline-sqlite-busy-{}.db", std::process::id()));
        let a = Connection::open(&path).unwrap();
        a.execute_batch("CREATE TABLE t (id INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let b = Connection::open(&path).unwrap();
        b.busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
        let e = b.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        assert_eq!(sqlite_error(e, "x").kind(), Transient);
        drop((a, b));
        std::fs::remove_file(&path).unwrap();
    }
}
