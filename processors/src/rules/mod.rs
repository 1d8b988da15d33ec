//! Declarative transformation rules: a processor's `steps:` (filter, set,
//! rename, drop, cast, mask, route, unwrap) compiled once against the input
//! schema, then applied to each change.
//!
//! - [`config`]: the user's words, as written in the pipeline file.
//! - [`compile`]: expressions parsed, columns checked, output schema derived.
//! - [`eval`]: one change in, one [`Outcome`] out.
//! - [`cel_value`]: Avro values to CEL values and back.
//! - [`processor`]: the processor's section of a pipeline file (topics, steps).
//! - [`runtime`]: the running processor: consume, apply, produce, commit.
//!
//! # Guarantee
//! Applying rules is a pure function of the change: no clock, no randomness,
//! no state, so a replayed change gets the same outcome, and an emitted change
//! keeps the identity (`source.name`, `source.position`) of the change it came
//! from. That is what lets a sink drop replays downstream.

pub mod cel_value;
pub mod compile;
pub mod config;
pub mod eval;
pub mod processor;
pub mod runtime;

pub use compile::CompiledRules;
pub use config::{RulesConfig, StepConfig};
pub use eval::Outcome;
pub use processor::RulesProcessorConfig;
pub use runtime::RulesProcessor;
