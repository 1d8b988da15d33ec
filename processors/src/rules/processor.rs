//! The `rules` processor's section of a pipeline file: which topics it reads
//! and writes, and its steps. Checked here, turned into typed settings for
//! the running processor ([`super::runtime`]).

use super::runtime::RulesProcessor;
use super::StepConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Result;

/// Reads change topics, applies declarative steps to every change (filter,
/// set, rename, drop, cast, mask, route, unwrap) and publishes the results.
/// At least once, with each output keeping its input's identity, so syncline
/// sinks downstream apply every change exactly once.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesProcessorConfig {
    /// The topics to read: syncline change records (Avro, Confluent wire format).
    pub from: Vec<String>,
    /// The topic the outputs go to, unless a `route` step picks another.
    pub to: String,
    /// The steps, applied in order to every change; a `filter` that is false
    /// ends the list for that change (nothing is published for it).
    pub steps: Vec<StepConfig>,
    /// Topic for changes the steps fail on (a division by zero, a type
    /// error) and records that cannot be decoded. Each goes there unchanged
    /// with headers `syncline.reason`, `syncline.topic`, `syncline.partition`
    /// and `syncline.offset`, and processing goes on. Default:
    /// `<pipeline>.<processor>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Kafka consumer group. Instances with the same group share the input
    /// partitions. Default: `syncline.<pipeline>.<processor name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Most records consumed before their outputs are flushed and the input
    /// offsets committed.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a record waits for its batch to fill before the batch is
    /// flushed anyway, in milliseconds. A batch is also flushed as soon as
    /// the input is idle for 5 ms, so at a trickle changes do not wait.
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
}

fn default_batch_size() -> usize {
    500
}
fn default_batch_timeout_ms() -> u64 {
    200
}

impl RulesProcessorConfig {
    /// The topics this processor reads.
    pub fn topics_in(&self) -> Vec<String> {
        self.from.clone()
    }

    /// The topics this processor may write: `to` and every `route` topic
    /// (not the dead-letter topic, which holds no change records).
    pub fn topics_out(&self) -> Vec<String> {
        super::runtime::output_topics(&self.to, &self.steps)
    }

    /// Problems serde cannot see; paths are relative to the processor's entry.
    pub fn check(&self) -> Vec<Issue> {
        crate::check_common(
            &self.from,
            &self.to,
            &self.topics_out(),
            self.batch_size,
            self.batch_timeout_ms,
        )
    }

    /// The running processor. Steps are compiled against each input's row
    /// shape when it is first seen (the shape lives in the registry).
    pub async fn build(&self, ctx: ComponentContext) -> Result<RulesProcessor> {
        let settings = super::runtime::Settings {
            group_id: self
                .group_id
                .clone()
                .unwrap_or_else(|| ctx.qualified_name()),
            dead_letter_topic: self
                .dead_letter_topic
                .clone()
                .unwrap_or_else(|| format!("{}.{}.dead", ctx.pipeline, ctx.component)),
            from: self.from.clone(),
            to: self.to.clone(),
            steps: self.steps.clone(),
            batch: syncline_runtime::BatchSettings {
                max_records: self.batch_size,
                max_wait: std::time::Duration::from_millis(self.batch_timeout_ms),
                ..Default::default()
            },
        };
        RulesProcessor::new(settings, ctx)
    }
}

impl syncline_runtime::Component for RulesProcessorConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_in(&self) -> Vec<String> {
        RulesProcessorConfig::topics_in(self)
    }

    fn topics_out(&self) -> Vec<String> {
        RulesProcessorConfig::topics_out(self)
    }

    fn check(&self) -> Vec<Issue> {
        RulesProcessorConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        self.build(ctx).await?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> RulesProcessorConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn topics_out_lists_to_and_every_route_topic_once() {
        let c = parse(
            "from: [a]\nto: b\nsteps:\n  - route: [{when: 'true', topic: c}, {when: 'false', topic: b}]\n",
        );
        assert_eq!(c.topics_in(), ["a"]);
        assert_eq!(c.topics_out(), ["b", "c"]);
        assert!(c.check().is_empty());
    }

    #[test]
    fn reading_what_it_writes_is_an_issue() {
        let c = parse("from: [a]\nto: a\nsteps: []\n");
        assert_eq!(c.check()[0].path, "to");
    }
}
