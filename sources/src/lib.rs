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

/// What fuzzing (`fuzz/`) reaches inside the sources: the pure functions
/// that meet hostile bytes (pgoutput messages, Postgres text values). Not a
/// stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::postgres_cdc::decode::{
        row_values, table_schema, text_value, RawColumn, TypeInfo,
    };
    pub use pg_walstream::{ChangeEvent, EventType, Lsn, PgOutputDecoder};
}
