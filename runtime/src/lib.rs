//! The connector runtime: the loops every syncline component shares,
//! written once, so that a connector only says what is particular to its
//! system.
//!
//! - [`consume`]: the consuming side. A sink or processor implements
//!   [`consume::Stage`] (load the stored offsets of assigned partitions;
//!   turn one decoded record into an item; write a batch of items together
//!   with the offsets that follow it) and [`consume::run`] does the rest: the
//!   consumer thread, eager and cooperative rebalancing, batching by count,
//!   bytes and idleness, decoding through the registry within the pipeline's
//!   limits, dead-lettering, retries, poison isolation by splitting a
//!   refused batch, and graceful shutdown.
//! - [`publish`]: the producing side. One publisher that encodes (schemas
//!   registered once per shape), sets the change's headers, applies
//!   back-pressure, broadcasts truncates and acknowledges in order.
//! - [`component`]: what every component type's settings implement, so
//!   that one registration makes the type known to the loader, `validate`,
//!   the reference and the supervisor.
//! - [`backoff`]: the one retry policy (exponential, with jitter).
//! - [`dead_letter`]: the dead-letter topic every stage shares the format of.
//! - [`events`]: one event per thing worth counting; each is a metric and,
//!   where an operator cares, a log line, with the same names for every
//!   component (docs/metrics.md).
//! - [`record`]: a consumed record, owned, and the offsets that follow a
//!   batch of them.

pub mod backoff;
pub mod component;
pub mod consume;
pub mod dead_letter;
pub mod events;
pub mod produce;
pub mod publish;
pub mod record;

pub use backoff::Backoff;
pub use component::Component;
pub use consume::{BatchSettings, Commit, ConsumeSettings, OffsetsHome, Stage};
pub use record::{Offsets, Record, TopicPartition};
