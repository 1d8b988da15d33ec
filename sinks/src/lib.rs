//! Sinks: the last stage of a pipeline, where changes read from Kafka land in
//! a target system. One module per target, each with its `config.rs` (the
//! user's words) and the running component built from it.

pub mod postgres;
