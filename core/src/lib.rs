//! The shapes every syncline stage shares.
//!
//! - [`change`]: a change to one row, and its identity (source, table, key and position).
//! - [`schema`]: a table's columns, the Avro schemas derived from them, and the
//!   mapping back (so a sink can rebuild columns from a registered schema).
//! - [`codec`]: Confluent wire format through a schema registry.
//! - [`kafka`]: the `kafka:` section of a pipeline and the clients built from it.
//! - [`error`]: one error type whose kind says what to do next.

pub mod change;
pub mod codec;
pub mod config;
pub mod connect;
pub mod digest;
pub mod error;
pub mod kafka;
pub mod limits;
pub mod registry;
pub mod runtime;
pub mod schema;
pub mod status;
pub mod value;

pub use change::{ChangeEvent, Op, Position, SourceInfo};
pub use error::{Error, ErrorKind, Result};
pub use schema::{Column, ColumnType, TableSchema};
