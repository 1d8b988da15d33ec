//! What every running component gets from the pipeline: its names, the
//! shared Kafka and registry settings, its live status, and a shutdown signal.

use crate::kafka::KafkaConfig;
use crate::registry::RegistryConfig;
pub use tokio_util::sync::CancellationToken as Shutdown;

#[derive(Debug, Clone)]
pub struct ComponentContext {
    /// The pipeline's name (`name:` in the pipeline file). Consumer groups and
    /// state keys are derived from it, so two pipelines never share state.
    pub pipeline: String,
    /// The component's name (its key under `sources:` or `sinks:`).
    pub component: String,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    /// Where stateful components keep local state (`--state-dir`); each
    /// uses `<state_dir>/<pipeline>/<component>`.
    pub state_dir: std::path::PathBuf,
    /// What one record may make a decoder do (`limits:`).
    pub limits: crate::limits::DecodeLimits,
    /// The component's live status (state, counts, lag), which the
    /// management API shows; the runtime's events and the source write it.
    pub status: crate::status::Status,
}

impl ComponentContext {
    /// A decoder of change records within this pipeline's limits.
    pub fn decoder(&self) -> crate::Result<crate::codec::Decoder> {
        crate::codec::Decoder::with_limits(&self.registry, self.limits.clone())
    }

    /// A name unique to this component of this pipeline, e.g. for a consumer group.
    pub fn qualified_name(&self) -> String {
        format!("syncline.{}.{}", self.pipeline, self.component)
    }
}
