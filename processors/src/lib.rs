//! syncline's processors: stages that read change topics, transform or
//! deduplicate the changes, and publish them again.
//!
//! - [`rules`]: declarative transformation steps (filter, set, rename, drop,
//!   cast, mask, route, unwrap) with CEL expressions, and the `rules`
//!   processor that consumes, applies them and produces (at least once, with
//!   stable identity; see [`rules::runtime`]).

pub mod rules;

pub use rules::{CompiledRules, Outcome, RulesConfig, RulesProcessorConfig, StepConfig};
