//! syncline's sources: components that read changes from a system and
//! publish them to Kafka as [`syncline_core::ChangeEvent`]s.
//!
//! - [`sql_poll`]: polls tables (or queries) of Postgres and SQLite by an
//!   incrementing column or a timestamp + id cursor.

pub mod sql_poll;
