//! The `dedup` processor: publishes each change once, dropping those already
//! seen, by identity, by content or by chosen fields, forever or within a
//! TTL. Replay-safe without Kafka transactions; the commit order and what it
//! guarantees are in [`runtime`].
//!
//! - [`config`]: the processor's section of a pipeline file.
//! - [`key`]: the dedup key of a change (SHA-256 of what is compared).
//! - [`store`]: the state in RocksDB (a column family per store; state and
//!   input offsets in one `WriteBatch`).
//! - [`changelog`]: the compacted topic that backs the state up, and restore.
//! - [`runtime`]: the repartition and dedup stages.

pub mod changelog;
pub mod config;
pub mod key;
pub mod runtime;
pub mod store;

pub use config::{DedupBy, DedupProcessorConfig};
pub use runtime::DedupProcessor;
