//! What every component type's settings implement, so that one line in the
//! registry (src/pipeline/registry.rs) makes a type known everywhere: the
//! pipeline-file loader, `syncline validate` (its checks and the topic
//! graph), the generated reference (docs/reference.md, from the type's doc
//! comments) and the supervisor (which runs it and restarts it by error
//! kind).
//!
//! The settings type is the component's section of the pipeline file
//! (serde + schemars; unknown keys refused). It lives in the component's
//! folder, with the code that runs it.

use std::future::Future;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Result;

pub trait Component: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The topics it reads (sinks and processors): `validate` checks that
    /// something writes each of them.
    fn topics_in(&self) -> Vec<String> {
        Vec::new()
    }

    /// The topics it writes (sources and processors).
    fn topics_out(&self) -> Vec<String> {
        Vec::new()
    }

    /// The dead-letter topic the file names, if it names one (the default
    /// is `<pipeline>.<component>.dead`): where the management API and
    /// `syncline dlq` look for this component's dead letters.
    fn dead_letter_topic(&self) -> Option<&str>;

    /// Problems serde cannot see (a value out of range, two settings that
    /// exclude each other), each with its path relative to the component's
    /// entry and the fix.
    fn check(&self) -> Vec<Issue>;

    /// Build the component and run it until `shutdown`, or until an error.
    /// The error's kind tells the supervisor what to do: `Transient`
    /// restarts the component after a backoff (it resumes from its stored
    /// position), anything else stops it and tells the operator.
    fn run(
        &self,
        ctx: ComponentContext,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<()>> + Send;
}
