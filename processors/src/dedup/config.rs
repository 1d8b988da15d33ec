//! The `dedup` processor's section of a pipeline file. Checked here, turned
//! into typed [`Settings`] for the running processor.

use super::key::DedupKey;
use super::runtime::{DedupProcessor, Settings};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Result;

/// Drops changes already seen and publishes the rest unchanged (identity
/// included). State lives in RocksDB on local disk and in a compacted
/// changelog topic, so it survives crashes and moves with its partitions
/// when instances join or leave the consumer group.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupProcessorConfig {
    /// The topics to read: syncline change records (Avro, Confluent wire format).
    pub from: Vec<String>,
    /// The topic the changes that are not duplicates go to.
    pub to: String,
    /// What makes two changes duplicates:
    /// `identity` (default): the same change (same `source.name`, table,
    /// key and `source.position`) delivered more than once;
    /// `content`: equal operation, table and row values, whatever the
    /// identity (e.g. a re-read of an unchanged row);
    /// `fields`: equal values of the columns listed in `fields`.
    #[serde(default)]
    pub by: DedupBy,
    /// The columns compared when `by: fields`, e.g. `[order_id, kind]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// How long a change is remembered: `forever` (default) or a duration
    /// such as `90s`, `30m`, `24h`, `7d`. Time is the changes' own
    /// (`source.ts_us`), not the clock, so a replay decides the same way;
    /// entries older than the newest change seen minus the TTL are removed
    /// from disk and from the changelog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// The compacted topic that backs up the state. Default:
    /// `<pipeline>.<processor>.changelog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog_topic: Option<String>,
    /// The internal topic through which changes are re-keyed so that
    /// duplicates meet in one partition (and, for `identity` and `content`,
    /// each row's changes keep their order). Used when `by` is not
    /// `identity` or `from` lists several topics. Default:
    /// `<pipeline>.<processor>.repartition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repartition_topic: Option<String>,
    /// Topic for records that cannot be decoded or lack a `fields` column.
    /// Default: `<pipeline>.<processor>.dead`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Kafka consumer group. Instances with the same group share the
    /// partitions (and their state). Default: `syncline.<pipeline>.<processor>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Most records consumed before their outputs are flushed and the state
    /// and offsets committed. Each batch waits for two broker round trips
    /// (outputs, then the changelog), so a backlog drains faster in large
    /// batches; at a trickle a batch closes as soon as the input is idle,
    /// whatever this size.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a record waits for its batch to fill, in milliseconds.
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
}

/// What makes two changes duplicates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DedupBy {
    #[default]
    Identity,
    Content,
    Fields,
}

fn default_batch_size() -> usize {
    5000
}
fn default_batch_timeout_ms() -> u64 {
    200
}

/// `forever` -> None; `90s`, `30m`, `24h`, `7d`, `500ms` -> Some(duration).
pub fn parse_ttl(text: &str) -> std::result::Result<Option<Duration>, String> {
    let t = text.trim();
    if t == "forever" {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        format!("`{text}` is not a duration: write e.g. `90s`, `30m`, `24h`, `7d` or `forever`")
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => {
            return Err(format!(
                "`{text}` has no known unit: use ms, s, m, h or d (e.g. `24h`), or `forever`"
            ))
        }
    };
    if d.is_zero() {
        return Err(
            "a TTL of zero remembers nothing: give a positive duration or `forever`".into(),
        );
    }
    Ok(Some(d))
}

impl DedupProcessorConfig {
    pub fn topics_in(&self) -> Vec<String> {
        self.from.clone()
    }

    pub fn topics_out(&self) -> Vec<String> {
        vec![self.to.clone()]
    }

    /// Whether changes are re-keyed by dedup key before deduplication.
    pub fn repartitions(&self) -> bool {
        self.by != DedupBy::Identity || self.from.len() > 1
    }

    pub fn check(&self) -> Vec<Issue> {
        let mut issues = crate::check_common(
            &self.from,
            &self.to,
            &self.topics_out(),
            self.batch_size,
            self.batch_timeout_ms,
        );
        match (self.by, self.fields.is_empty()) {
            (DedupBy::Fields, true) => issues.push(Issue::new(
                "fields",
                "`by: fields` needs the columns to compare, e.g. `fields: [order_id]`",
            )),
            (DedupBy::Identity | DedupBy::Content, false) => issues.push(Issue::new(
                "fields",
                "`fields` is used only with `by: fields`; remove it or set `by: fields`",
            )),
            _ => {}
        }
        if let Some(ttl) = &self.ttl {
            if let Err(e) = parse_ttl(ttl) {
                issues.push(Issue::new("ttl", e));
            }
        }
        issues
    }

    /// The running processor; its state lives under
    /// `<state dir>/<pipeline>/<processor>`.
    pub async fn build(&self, ctx: ComponentContext) -> Result<DedupProcessor> {
        let name = |suffix: &str| format!("{}.{}.{suffix}", ctx.pipeline, ctx.component);
        let key = match self.by {
            DedupBy::Identity => DedupKey::Identity,
            DedupBy::Content => DedupKey::Content,
            DedupBy::Fields => DedupKey::Fields(self.fields.clone()),
        };
        let settings = Settings {
            group_id: self
                .group_id
                .clone()
                .unwrap_or_else(|| ctx.qualified_name()),
            from: self.from.clone(),
            to: self.to.clone(),
            key,
            ttl: self
                .ttl
                .as_deref()
                .map(parse_ttl)
                .transpose()
                .map_err(syncline_core::Error::config)?
                .flatten(),
            changelog_topic: self
                .changelog_topic
                .clone()
                .unwrap_or_else(|| name("changelog")),
            repartition_topic: self.repartitions().then(|| {
                self.repartition_topic
                    .clone()
                    .unwrap_or_else(|| name("repartition"))
            }),
            dead_letter_topic: self
                .dead_letter_topic
                .clone()
                .unwrap_or_else(|| name("dead")),
            state_dir: ctx.state_dir.join(&ctx.pipeline).join(&ctx.component),
            batch: syncline_runtime::BatchSettings {
                max_records: self.batch_size,
                max_wait: Duration::from_millis(self.batch_timeout_ms),
                ..Default::default()
            },
        };
        DedupProcessor::new(settings, ctx)
    }
}

impl syncline_runtime::Component for DedupProcessorConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_in(&self) -> Vec<String> {
        DedupProcessorConfig::topics_in(self)
    }

    fn topics_out(&self) -> Vec<String> {
        DedupProcessorConfig::topics_out(self)
    }

    fn check(&self) -> Vec<Issue> {
        DedupProcessorConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        self.build(ctx).await?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> DedupProcessorConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn ttl_units_and_forever() {
        assert_eq!(parse_ttl("forever"), Ok(None));
        assert_eq!(parse_ttl("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_ttl("7d"), Ok(Some(Duration::from_secs(7 * 86_400))));
        assert_eq!(parse_ttl("250ms"), Ok(Some(Duration::from_millis(250))));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("7 days").unwrap_err().contains("unit"));
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn identity_of_one_topic_needs_no_repartition() {
        let c = parse("from: [a]\nto: b\n");
        assert_eq!(c.by, DedupBy::Identity);
        assert!(!c.repartitions());
        assert!(c.check().is_empty());
        assert!(parse("from: [a, c]\nto: b\n").repartitions());
        assert!(parse("from: [a]\nto: b\nby: content\n").repartitions());
    }

    #[test]
    fn fields_are_required_exactly_with_by_fields() {
        let c = parse("from: [a]\nto: b\nby: fields\n");
        assert_eq!(c.check()[0].path, "fields");
        let c = parse("from: [a]\nto: b\nfields: [x]\n");
        assert_eq!(c.check()[0].path, "fields");
        let c = parse("from: [a]\nto: b\nby: fields\nfields: [x]\nttl: 24h\n");
        assert!(c.check().is_empty());
        let c = parse("from: [a]\nto: b\nttl: 24 hours\n");
        assert_eq!(c.check()[0].path, "ttl");
    }
}
