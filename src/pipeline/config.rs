//! The pipeline file's types: the user's words, and nothing else. Each
//! component's own config lives with the component (sources/, processors/,
//! sinks/); this
//! file only says which components exist and how they are named.

use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;
use syncline_core::kafka::KafkaConfig;
use syncline_core::limits::DecodeLimits;
use syncline_core::registry::RegistryConfig;
use syncline_processors::{DedupProcessorConfig, RulesProcessorConfig};
use syncline_sinks::postgres::PostgresSinkConfig;
use syncline_sources::postgres_cdc::PostgresCdcConfig;
use syncline_sources::sql_poll::SqlPollConfig;

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
}

/// A source: `type` picks the kind.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Polls tables or queries (Postgres, SQLite) on a schedule.
    SqlPoll(SqlPollConfig),
    /// Captures inserts, updates and deletes of Postgres tables through
    /// logical replication, after a snapshot consistent with the slot.
    PostgresCdc(PostgresCdcConfig),
}

/// A processor: `type` picks the kind.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessorConfig {
    /// Transforms each change with declarative steps (filter, set, rename,
    /// drop, cast, mask, route, unwrap), at least once with stable identity.
    Rules(RulesProcessorConfig),
    /// Drops changes already seen (by identity, content or fields, forever
    /// or within a TTL), with RocksDB state backed by a changelog topic.
    Dedup(DedupProcessorConfig),
}

/// A sink: `type` picks the kind.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Applies changes to Postgres tables, exactly once.
    Postgres(PostgresSinkConfig),
}

pub const SOURCE_TYPES: &[&str] = &["sql_poll", "postgres_cdc"];
pub const PROCESSOR_TYPES: &[&str] = &["rules", "dedup"];
pub const SINK_TYPES: &[&str] = &["postgres"];

impl SourceConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::SqlPoll(_) => "sql_poll",
            SourceConfig::PostgresCdc(_) => "postgres_cdc",
        }
    }
    pub fn topics(&self) -> Vec<String> {
        match self {
            SourceConfig::SqlPoll(c) => c.topics(),
            SourceConfig::PostgresCdc(c) => c.topics(),
        }
    }
    pub fn check(&self) -> Vec<syncline_core::config::Issue> {
        match self {
            SourceConfig::SqlPoll(c) => c.check(),
            SourceConfig::PostgresCdc(c) => c.check(),
        }
    }
}

impl ProcessorConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            ProcessorConfig::Rules(_) => "rules",
            ProcessorConfig::Dedup(_) => "dedup",
        }
    }
    pub fn topics_in(&self) -> Vec<String> {
        match self {
            ProcessorConfig::Rules(c) => c.topics_in(),
            ProcessorConfig::Dedup(c) => c.topics_in(),
        }
    }
    pub fn topics_out(&self) -> Vec<String> {
        match self {
            ProcessorConfig::Rules(c) => c.topics_out(),
            ProcessorConfig::Dedup(c) => c.topics_out(),
        }
    }
    pub fn check(&self) -> Vec<syncline_core::config::Issue> {
        match self {
            ProcessorConfig::Rules(c) => c.check(),
            ProcessorConfig::Dedup(c) => c.check(),
        }
    }
}

impl SinkConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Postgres(_) => "postgres",
        }
    }
    pub fn topics(&self) -> Vec<String> {
        match self {
            SinkConfig::Postgres(c) => c.topics(),
        }
    }
    pub fn check(&self) -> Vec<syncline_core::config::Issue> {
        match self {
            SinkConfig::Postgres(c) => c.check(),
        }
    }
}
