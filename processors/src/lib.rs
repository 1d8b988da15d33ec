//! syncline's processors: stages that read change topics, transform or
//! deduplicate the changes, and publish them again.
//!
//! - [`rules`]: declarative transformation steps (filter, set, rename, drop,
//!   cast, mask, route, unwrap) with CEL expressions. A pure library: the
//!   runtime that consumes and produces around it comes later (issue 4).

pub mod rules;

pub use rules::{CompiledRules, Outcome, RulesConfig, StepConfig};
