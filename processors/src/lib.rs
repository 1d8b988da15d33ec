//! syncline's processors: stages that read change topics, transform or
//! deduplicate the changes, and publish them again.
//!
//! - [`rules`]: declarative transformation steps (filter, set, rename, drop,
//!   cast, mask, route, unwrap) with CEL expressions, and the `rules`
//!   processor that consumes, applies them and produces (at least once, with
//!   stable identity; see [`rules::runtime`]).
//! - [`dedup`]: the `dedup` processor: drops changes already seen (by
//!   identity, content or chosen fields, forever or within a TTL), with its
//!   state in RocksDB backed by a compacted changelog topic (see
//!   [`dedup::runtime`] for the commit order that makes it replay-safe).
//! - [`io`], [`metrics`]: what every stage shares.

pub mod dedup;
pub mod io;
pub mod metrics;
pub mod rules;

pub use dedup::DedupProcessorConfig;
pub use rules::{CompiledRules, Outcome, RulesConfig, RulesProcessorConfig, StepConfig};
