//! syncline's sources: components that read changes from a system and
//! publish them to Kafka as [`syncline_core::ChangeEvent`]s.
//!
//! - [`sql_poll`]: polls tables (or queries) of Postgres and SQLite by an
//!   incrementing column or a timestamp + id cursor.
//! - [`postgres_cdc`]: change-data-capture from Postgres through logical
//!   replication, after a snapshot consistent with the replication slot.

pub mod postgres_cdc;
pub mod sql_poll;
pub mod state;
