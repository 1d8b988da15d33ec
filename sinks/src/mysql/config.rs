//! The `mysql` sink's section of a pipeline file: the user's words, checked
//! here and turned into typed values for the running sink.

use super::MysqlSink;
use crate::table::config::{
    default_batch_linger_ms, default_batch_max_bytes, default_batch_size, default_batch_timeout_ms,
    default_true, refuse, table_for, Common, OnDroppedColumn, OnTruncate, OnTypeChange,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use syncline_core::config::Issue;
use syncline_core::connect::mysql::Mysql;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};

/// MySQL and MariaDB allow table names of at most 64 characters.
const MAX_TABLE_NAME: usize = 64;

/// Writes the changes of Kafka topics into MySQL 8 or MariaDB 10.11+ tables,
/// exactly once: upserts by key, applies deletes, and keeps the consumed
/// offsets in the target database in the same transaction as the rows.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// Connection URL of the target database, which must name the database:
    /// `mysql://syncline:${MYSQL_PASSWORD}@db.internal:3306/warehouse`. The
    /// sink's own tables (`syncline_offsets`, `syncline_tombstones`) live in
    /// it too. TLS as the mysql client takes it: `ssl-mode=` DISABLED,
    /// PREFERRED (default), REQUIRED, VERIFY_CA or VERIFY_IDENTITY (the
    /// libpq names work too), and `ssl-ca=` a CA file (PEM); REQUIRED and
    /// stronger never fall back to plain TCP or to the Unix socket.
    pub connection: String,
    /// The topics to read. Each topic's records must be syncline change
    /// records (Avro, Confluent wire format, key = primary key).
    pub topics: Vec<String>,
    /// Target table per topic. A topic not listed here goes to the table named
    /// like the topic with every character other than `[A-Za-z0-9_]` replaced
    /// by `_` (`shop.orders` -> `shop_orders`). Names are used as written
    /// (quoted with backticks).
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
    /// Keep it under the server's `max_allowed_packet` (a statement larger
    /// than that is split until it fits).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Kafka consumer group. Instances with the same group share the
    /// partitions. Default: `syncline.<pipeline>.<sink name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Create a missing target table from the registered schema (primary key
    /// = the record key; `utf8mb4_bin`, so keys compare exactly), and add
    /// missing columns to an existing one (always nullable). When false, a
    /// missing table or column stops the sink with an error naming it.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// Topic for poison records: records this sink cannot decode, that are
    /// not syncline change records, or whose values the database refuses (too
    /// long, out of range, NaN or Infinity in a float column, a date outside
    /// years 1-9999, invalid JSON, a constraint). Each goes there unchanged
    /// with headers `syncline.reason`, `syncline.topic`,
    /// `syncline.partition` and `syncline.offset`, and the rest of its batch
    /// lands. Default: `<pipeline>.<sink name>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// When a column's type changes at the source: `widen` (default) alters
    /// the target column (`MODIFY COLUMN`) when the new type holds every old
    /// value (int -> bigint -> decimal, decimal(p,s) -> a wider decimal,
    /// float -> double, -> longtext); `keep` leaves it. Needs
    /// `create_tables`.
    #[serde(default)]
    pub on_type_change: OnTypeChange,
    /// When a column disappears from the source: `keep` (default) leaves the
    /// target column and its values; `drop` drops it. Needs `create_tables`.
    #[serde(default)]
    pub on_dropped_column: OnDroppedColumn,
    /// When a source table is truncated: `apply` (default) deletes the target
    /// rows this source wrote before the truncate, and rows no syncline sink
    /// wrote; `ignore` keeps them.
    #[serde(default)]
    pub on_truncate: OnTruncate,
}

/// The typed settings the running sink gets.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub mysql: Mysql,
    pub topics: Vec<String>,
    pub tables: BTreeMap<String, String>,
    pub batch: syncline_runtime::BatchSettings,
    pub group_id: String,
    pub create_tables: bool,
    pub on_type_change: OnTypeChange,
    pub on_dropped_column: OnDroppedColumn,
    pub on_truncate: OnTruncate,
    pub dead_letter_topic: String,
}

impl MysqlSinkConfig {
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
        match Mysql::parse(&self.connection) {
            Err(e) => issues.push(Issue::new("connection", e)),
            Ok(m) if m.opts().db_name().is_none() => issues.push(Issue::new(
                "connection",
                "name the database in the URL, e.g. `mysql://user@host:3306/warehouse`",
            )),
            Ok(_) => {}
        }
        issues.extend(self.common().check(Some((MAX_TABLE_NAME, "MySQL"))));
        issues
    }

    pub(crate) fn settings(&self, ctx: &ComponentContext) -> Result<Settings> {
        refuse("mysql", ctx, self.check())?;
        let mysql = Mysql::parse(&self.connection).map_err(|e| {
            Error::config(format!(
                "mysql sink `{}`: bad connection URL: {e}",
                ctx.component
            ))
        })?;
        let common = self.common();
        Ok(Settings {
            mysql,
            topics: self.topics.clone(),
            tables: common.tables(),
            batch: common.batch(),
            group_id: common.group_id(ctx),
            create_tables: self.create_tables,
            on_type_change: self.on_type_change,
            on_dropped_column: self.on_dropped_column,
            on_truncate: self.on_truncate,
            dead_letter_topic: common.dead_letter_topic(ctx),
        })
    }
}

impl syncline_runtime::Component for MysqlSinkConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_in(&self) -> Vec<String> {
        self.topics.clone()
    }

    fn check(&self) -> Vec<Issue> {
        MysqlSinkConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        let settings = self.settings(&ctx)?;
        MysqlSink::new(settings, ctx).await?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_must_name_a_database() {
        let parse = |v: serde_json::Value| serde_json::from_value::<MysqlSinkConfig>(v).unwrap();
        let c = parse(
            serde_json::json!({"connection": "mysql://root@127.0.0.1:3306/w", "topics": ["a.b"]}),
        );
        assert!(c.check().is_empty(), "{:?}", c.check());
        assert_eq!(c.table_for("a.b"), "a_b");
        let c = parse(
            serde_json::json!({"connection": "mysql://root@127.0.0.1:3306", "topics": ["t"]}),
        );
        assert_eq!(c.check()[0].path, "connection");
        let c = parse(serde_json::json!({"connection": "postgres://x", "topics": ["t"]}));
        assert_eq!(c.check()[0].path, "connection");
    }
}
