//! The `sqlite` sink's section of a pipeline file: the user's words, checked
//! here and turned into typed values for the running sink.

use super::SqliteSink;
use crate::table::config::{
    default_batch_linger_ms, default_batch_max_bytes, default_batch_size, default_batch_timeout_ms,
    default_true, refuse, table_for, Common,
};
use crate::table::config::{OnDroppedColumn, OnTruncate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Result;

/// Writes the changes of Kafka topics into tables of one SQLite database
/// file, exactly once: upserts by key, applies deletes, and keeps the
/// consumed offsets in the same file, in the same transaction as the rows.
/// For edge and embedded targets.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqliteSinkConfig {
    /// Path of the database file; created (with its directory's permission)
    /// when missing. The file is switched to WAL mode, so readers never
    /// block the sink and the sink never blocks them.
    pub path: PathBuf,
    /// The topics to read. Each topic's records must be syncline change
    /// records (Avro, Confluent wire format, key = primary key).
    pub topics: Vec<String>,
    /// Target table per topic. A topic not listed here goes to the table named
    /// like the topic with every character other than `[A-Za-z0-9_]` replaced
    /// by `_` (`shop.orders` -> `shop_orders`). Names are used as written
    /// (quoted).
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    /// Most records written in one database transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a record waits for its batch to fill before the batch is
    /// written anyway, in milliseconds.
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
    /// A batch is written as soon as no record arrived for this many
    /// milliseconds.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Most bytes (keys, values and headers of the records) in one batch.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Kafka consumer group. Instances with the same group share the
    /// partitions (and take turns at the file's write lock). Default:
    /// `syncline.<pipeline>.<sink name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Create a missing target table from the registered schema (primary key
    /// = the record key), and add missing columns to an existing one (new
    /// source columns, and the sink's `_syncline_source` /
    /// `_syncline_position` columns). When false, a missing table or column
    /// stops the sink with an error naming it.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// Topic for poison records: records this sink cannot decode, that are
    /// not syncline change records, or that the database refuses (a
    /// constraint of a table you created, a value over SQLite's size
    /// limit). Each goes there unchanged with headers `syncline.reason`,
    /// `syncline.topic`, `syncline.partition` and `syncline.offset`, and
    /// the rest of its batch lands. Default: `<pipeline>.<sink name>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// When a column disappears from the source (DROP COLUMN): `keep`
    /// (default) leaves the target column and its values (rows written later
    /// get null there); `drop` drops the target column. Needs
    /// `create_tables`. (A column whose type changes needs nothing: SQLite
    /// columns take values of any type, see the type mapping in the docs.)
    #[serde(default)]
    pub on_dropped_column: OnDroppedColumn,
    /// When a source table is truncated (a TRUNCATE change): `apply`
    /// (default) deletes the target rows this source wrote before the
    /// truncate, and rows no syncline sink wrote; `ignore` keeps them.
    #[serde(default)]
    pub on_truncate: OnTruncate,
    /// How long a write waits for the file's lock (another process writing
    /// it) before it is retried with backoff, in milliseconds.
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// `normal` (default) or `full`: SQLite's `synchronous` setting in WAL
    /// mode. `normal` does not sync the file at every commit; a power loss
    /// (not a crash of syncline) can then roll back the last transactions,
    /// rows and offsets together, and the sink reads those records again
    /// from Kafka: still exactly once, as long as Kafka keeps them. `full`
    /// syncs every commit.
    #[serde(default)]
    pub synchronous: Synchronous,
}

/// SQLite's `PRAGMA synchronous` for the sink's connection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// Sync at checkpoints, not at every commit.
    #[default]
    Normal,
    /// Sync at every commit.
    Full,
}

fn default_busy_timeout_ms() -> u64 {
    5000
}

/// The typed settings the running sink gets.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub path: PathBuf,
    pub topics: Vec<String>,
    /// Target table per topic, every topic present.
    pub tables: BTreeMap<String, String>,
    pub batch: syncline_runtime::BatchSettings,
    pub group_id: String,
    pub create_tables: bool,
    pub on_dropped_column: OnDroppedColumn,
    pub on_truncate: OnTruncate,
    pub dead_letter_topic: String,
    pub busy_timeout: Duration,
    pub synchronous: Synchronous,
}

impl SqliteSinkConfig {
    /// The target table of `topic`.
    pub fn table_for(&self, topic: &str) -> String {
        table_for(&self.tables, topic)
    }

    fn common(&self) -> Common<'_> {
        Common {
            topics: &self.topics,
            tables: &self.tables,
            batch_size: self.batch_size,
            batch_max_bytes: self.batch_max_bytes,
            batch_timeout_ms: self.batch_timeout_ms,
            batch_linger_ms: self.batch_linger_ms,
            group_id: self.group_id.as_deref(),
            dead_letter_topic: self.dead_letter_topic.as_deref(),
        }
    }

    /// Problems serde cannot see; paths are relative to the sink's entry.
    pub fn check(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        if self.path.as_os_str().is_empty() {
            issues.push(Issue::new(
                "path",
                "name the database file, e.g. `/var/lib/app/replica.db`",
            ));
        } else if self.path.is_dir() {
            issues.push(Issue::new(
                "path",
                format!(
                    "`{}` is a directory; name a file in it, e.g. `{}`",
                    self.path.display(),
                    self.path.join("replica.db").display()
                ),
            ));
        }
        issues.extend(self.common().check(None));
        issues
    }

    pub(crate) fn settings(&self, ctx: &ComponentContext) -> Result<Settings> {
        refuse("sqlite", ctx, self.check())?;
        let common = self.common();
        Ok(Settings {
            path: self.path.clone(),
            topics: self.topics.clone(),
            tables: common.tables(),
            batch: common.batch(),
            group_id: common.group_id(ctx),
            create_tables: self.create_tables,
            on_dropped_column: self.on_dropped_column,
            on_truncate: self.on_truncate,
            dead_letter_topic: common.dead_letter_topic(ctx),
            busy_timeout: Duration::from_millis(self.busy_timeout_ms),
            synchronous: self.synchronous,
        })
    }
}

impl syncline_runtime::Component for SqliteSinkConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_in(&self) -> Vec<String> {
        self.topics.clone()
    }

    fn check(&self) -> Vec<Issue> {
        SqliteSinkConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        let settings = self.settings(&ctx)?;
        SqliteSink::new(settings, ctx)?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> SqliteSinkConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_and_table_names() {
        let c = parse(serde_json::json!({"path": "/tmp/x.db", "topics": ["shop.orders"]}));
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.busy_timeout_ms, 5000);
        assert_eq!(c.synchronous, Synchronous::Normal);
        assert!(c.create_tables);
        assert_eq!(c.table_for("shop.orders"), "shop_orders");
        assert!(c.check().is_empty(), "{:?}", c.check());
    }

    #[test]
    fn check_names_the_bad_field() {
        let c = parse(serde_json::json!({"path": "/tmp", "topics": [], "batch_size": 0}));
        let paths: Vec<_> = c.check().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["path", "topics", "batch_size"]);
        let v = serde_json::json!({"path": "x.db", "topics": ["t"], "synchronous": "off"});
        assert!(serde_json::from_value::<SqliteSinkConfig>(v).is_err());
    }
}
