//! The pipeline file's types: the user's words, and nothing else. Each
//! component's own config lives with the component (sources/, processors/,
//! sinks/); which component types exist is said once, in `registry.rs`.

use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;
use syncline_core::kafka::KafkaConfig;
use syncline_core::limits::DecodeLimits;
use syncline_core::registry::RegistryConfig;

pub use super::registry::{ProcessorConfig, SinkConfig, SourceConfig};

/// A pipeline: sources write change records to Kafka topics, processors
/// transform them into other topics, sinks apply them to targets. One file, one pipeline; run several files for several.
/// (Built by `load.rs` part by part, so that every mistake is reported.)
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline's name: letters, digits, `-` and `_`. Consumer groups and
    /// stored state (cursors, sink offsets) are keyed by it, so renaming a
    /// pipeline starts it afresh.
    pub name: String,
    /// The Kafka-protocol broker(s).
    pub kafka: KafkaConfig,
    /// The Confluent-compatible schema registry.
    pub registry: RegistryConfig,
    /// Sources by name. Each entry has a `type` and that type's settings.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Processors by name. Each entry has a `type` and that type's settings.
    #[serde(default)]
    pub processors: BTreeMap<String, ProcessorConfig>,
    /// Sinks by name. Each entry has a `type` and that type's settings.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Topics that producers outside this file write (another pipeline, an
    /// application using a Confluent Avro serializer with syncline's envelope).
    /// Sinks and processors may read them; any other topic they read must be
    /// written by a source or a processor of this file, so that a typo is an
    /// error, not an idle sink.
    #[serde(default)]
    pub external_topics: Vec<String>,
    /// Bounds on what one record may make a consumer do (nesting of its
    /// writer schema, decimal precision, allocation sizes). A record beyond
    /// them goes to its stage's dead-letter topic with the reason.
    #[serde(default)]
    pub limits: DecodeLimits,
    /// When a component stops with an error that retrying cannot fix (it
    /// needs an operator), stop the whole pipeline too. Default `false`: only
    /// that component stops, says so in the log and in the metric
    /// `syncline_component_stopped`, and the others go on; `syncline run`
    /// exits with an error once every component has ended.
    #[serde(default)]
    pub fail_fast: bool,
    /// The management API and dashboard of `syncline run` (docs/api.md).
    #[serde(default)]
    pub api: super::api_config::ApiConfig,
}
