//! Settings every database sink shares (topics and their tables, batching,
//! the consumer group, the dead-letter topic, the schema-change and
//! truncate policies) and their checks, so that each sink's `config.rs` says
//! only what is its own.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use syncline_core::config::Issue;
use syncline_core::runtime::ComponentContext;
use syncline_core::{Error, Result};

/// What the sink does with a target column whose source type changed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnTypeChange {
    /// Alter the target column when the new type holds every old value.
    #[default]
    Widen,
    /// Leave the target column's type alone.
    Keep,
}

/// What the sink does with a target column the source dropped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnDroppedColumn {
    /// Leave the column (and its values) in the target.
    #[default]
    Keep,
    /// Drop the column from the target.
    Drop,
}

/// What the sink does with a TRUNCATE of a source table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnTruncate {
    /// Delete the target rows older than the truncate (see `crate::table`).
    #[default]
    Apply,
    /// Keep the target's rows.
    Ignore,
}

pub fn default_batch_size() -> usize {
    1000
}
pub fn default_batch_timeout_ms() -> u64 {
    200
}
pub fn default_batch_linger_ms() -> u64 {
    5
}
pub fn default_batch_max_bytes() -> usize {
    16 << 20
}
pub fn default_true() -> bool {
    true
}

/// `shop.orders` -> `shop_orders`.
pub fn default_table_name(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The target table of `topic`: named under `tables`, or after the topic.
pub fn table_for(tables: &BTreeMap<String, String>, topic: &str) -> String {
    tables
        .get(topic)
        .cloned()
        .unwrap_or_else(|| default_table_name(topic))
}

/// The settings of a database sink that are not about its database, as
/// written in its section.
pub struct Common<'a> {
    pub topics: &'a [String],
    pub tables: &'a BTreeMap<String, String>,
    pub batch_size: usize,
    pub batch_max_bytes: usize,
    pub batch_timeout_ms: u64,
    pub batch_linger_ms: u64,
    pub group_id: Option<&'a str>,
    pub dead_letter_topic: Option<&'a str>,
}

impl Common<'_> {
    /// Problems serde cannot see; paths are relative to the sink's entry.
    /// `max_table_name`: the target's limit on a table name, in bytes, and
    /// the target's name for the message.
    pub fn check(&self, max_table_name: Option<(usize, &str)>) -> Vec<Issue> {
        let mut issues = Vec::new();
        if self.topics.is_empty() {
            issues.push(Issue::new("topics", "list at least one topic to read"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.topics.iter().enumerate() {
            if t.is_empty() {
                issues.push(Issue::new(
                    format!("topics[{i}]"),
                    "a topic name cannot be empty",
                ));
            } else if t.starts_with('^') {
                issues.push(Issue::new(
                    format!("topics[{i}]"),
                    format!("`{t}` would be read as a pattern (a leading `^`); list topic names"),
                ));
            } else if !seen.insert(t) {
                issues.push(Issue::new(
                    format!("topics[{i}]"),
                    format!("topic `{t}` is listed twice"),
                ));
            }
        }
        for (topic, table) in self.tables {
            if !self.topics.contains(topic) {
                issues.push(Issue::new(
                    format!("tables.{topic}"),
                    format!("`{topic}` is not in `topics`; add it there or remove this entry"),
                ));
            }
            if table.is_empty() {
                issues.push(Issue::new(
                    format!("tables.{topic}"),
                    "a table name cannot be empty",
                ));
            }
        }
        if let Some((max, target)) = max_table_name {
            for topic in self.topics {
                let table = table_for(self.tables, topic);
                if table.len() > max {
                    let path = if self.tables.contains_key(topic) {
                        format!("tables.{topic}")
                    } else {
                        "topics".to_string()
                    };
                    issues.push(Issue::new(
                        path,
                        format!(
                            "table name `{table}` is longer than {target}'s {max} bytes; \
                             name a shorter one under `tables`"
                        ),
                    ));
                }
            }
        }
        if self.batch_size == 0 {
            issues.push(Issue::new(
                "batch_size",
                "must be at least 1 (records per transaction)",
            ));
        }
        if self.batch_max_bytes == 0 {
            issues.push(Issue::new(
                "batch_max_bytes",
                "must be at least 1 (bytes per transaction)",
            ));
        }
        if self.dead_letter_topic == Some("") {
            issues.push(Issue::new(
                "dead_letter_topic",
                "cannot be empty; remove it to use the default topic",
            ));
        }
        if self.batch_timeout_ms == 0 {
            issues.push(Issue::new(
                "batch_timeout_ms",
                "must be at least 1 millisecond",
            ));
        }
        if self.group_id == Some("") {
            issues.push(Issue::new(
                "group_id",
                "cannot be empty; remove it to use the default group",
            ));
        }
        issues
    }

    /// Target table per topic, every topic present.
    pub fn tables(&self) -> BTreeMap<String, String> {
        self.topics
            .iter()
            .map(|t| (t.clone(), table_for(self.tables, t)))
            .collect()
    }

    pub fn batch(&self) -> syncline_runtime::BatchSettings {
        syncline_runtime::BatchSettings {
            max_records: self.batch_size,
            max_bytes: self.batch_max_bytes,
            linger: Duration::from_millis(self.batch_linger_ms),
            max_wait: Duration::from_millis(self.batch_timeout_ms),
        }
    }

    /// The consumer group: as written, or `syncline.<pipeline>.<sink>`.
    pub fn group_id(&self, ctx: &ComponentContext) -> String {
        self.group_id
            .map(str::to_string)
            .unwrap_or_else(|| ctx.qualified_name())
    }

    /// The dead-letter topic: as written, or `<pipeline>.<sink>.dead`.
    pub fn dead_letter_topic(&self, ctx: &ComponentContext) -> String {
        self.dead_letter_topic
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}.{}.dead", ctx.pipeline, ctx.component))
    }
}

/// The first of `issues` as the error that stops the sink, naming it and
/// the field: `postgres sink `out` at `topics`: ...`.
pub fn refuse(kind: &str, ctx: &ComponentContext, issues: Vec<Issue>) -> Result<()> {
    let Some(first) = issues.into_iter().next() else {
        return Ok(());
    };
    let at = if first.path.is_empty() {
        String::new()
    } else {
        format!(" at `{}`", first.path)
    };
    Err(Error::config(format!(
        "{kind} sink `{}`{at}: {}",
        ctx.component, first.message
    )))
}
