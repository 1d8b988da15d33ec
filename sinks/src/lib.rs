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

use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_runtime::consume::{self, ConsumeSettings};

/// Run a sink's stage on the connector runtime until `shutdown` or an error
/// that retrying cannot fix, and log how it ended.
pub(crate) async fn run_stage<S: syncline_runtime::Stage>(
    ctx: &ComponentContext,
    settings: ConsumeSettings,
    stage: S,
    shutdown: Shutdown,
) -> syncline_core::Result<()> {
    let kind = settings.kind;
    let result = consume::run(ctx, settings, stage, shutdown).await;
    match &result {
        Ok(()) => tracing::info!(sink = %ctx.component, r#type = kind, "sink stopped"),
        Err(e) => tracing::error!(sink = %ctx.component, r#type = kind, error = %e, "sink failed"),
    }
    result
}
