//! Sinks: the last stage of a pipeline, where changes read from Kafka land in
//! a target system. One module per target, each with its `config.rs` (the
//! user's words) and the running component built from it; `table` holds
//! what every database target shares (the change as a row operation and
//! the rules that make applying it exactly once).

pub mod http;
pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod table;
