//! The user's words: the `mysql_cdc` entry of a pipeline file.

use super::MysqlCdcSource;
use crate::postgres_cdc::SnapshotMode;
use crate::sql_poll::connection::redact;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Result;

/// Captures every insert, update and delete of MariaDB (10.6+) or MySQL 8
/// tables from the binlog (ROW format, FULL row image), after an initial
/// snapshot consistent with a binlog position, taken without a global read
/// lock. See sources/src/mysql_cdc/README.md for what it guarantees and
/// what it needs from the server (`log_bin`, `binlog_format = ROW`,
/// `binlog_row_image = FULL`, `binlog_row_metadata = FULL`, a user with
/// `REPLICATION SLAVE`, `REPLICATION CLIENT` or `BINLOG MONITOR`, and
/// `SELECT`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlCdcConfig {
    /// The server: `mysql://user:password@host:3306` (the password is never
    /// logged; a database in the path is not needed: tables are named with
    /// theirs). TLS with `ssl-mode=` DISABLED, PREFERRED (default),
    /// REQUIRED, VERIFY_CA or VERIFY_IDENTITY and `ssl-ca=` a CA file, as
    /// the mysql sink takes them.
    pub connection: String,
    /// The replica server id syncline reads the binlog as: unique among the
    /// server's replicas and different from the server's own `server_id`.
    /// Default: derived from the pipeline and source names (1,000,000 to
    /// 2,147,483,647).
    #[serde(default)]
    pub server_id: Option<u32>,
    /// The tables to capture, each to its topic.
    pub tables: Vec<MysqlTableConfig>,
    /// `initial` (default): read the tables' current rows first (op `READ`),
    /// then stream from the binlog position the snapshot is consistent
    /// with; `never`: stream only, from the binlog's end at the first start.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk: a chunk is read by key, published,
    /// acknowledged, then recorded; a crash resumes after the last recorded
    /// chunk.
    #[serde(default = "default_chunk_size")]
    pub snapshot_chunk_size: usize,
    /// Milliseconds between the server's heartbeats on an idle binlog
    /// (`@master_heartbeat_period`); a stream that hears nothing for three
    /// of them is reconnected. The stored binlog position moves on with
    /// every transaction, captured or not. 0: no heartbeats (and no idle
    /// timeout).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Where a change goes that cannot be published (its record is larger
    /// than the broker takes, or a value has no representation, e.g. a
    /// `TIME` beyond 24 hours), with the reason and the row's key, so that
    /// the stream moves on. Default: `<pipeline>.<source>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// One table, or a pattern of tables, to capture.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlTableConfig {
    /// `database.table`, or a pattern with `*` (any characters) in either
    /// part, e.g. `shop.*` or `shop.order_*`.
    pub table: String,
    /// The Kafka topic (created if missing). With a pattern, use
    /// `{database}` and `{table}`, e.g. `cdc.{database}.{table}`.
    pub topic: String,
    /// Key columns for a table without a primary key (the Kafka key, the
    /// snapshot's chunk order and the sink's row identity). They must
    /// identify a row (a UNIQUE index on NOT NULL columns). Default: the
    /// primary key.
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

fn default_chunk_size() -> usize {
    10_000
}
fn default_heartbeat_ms() -> u64 {
    5_000
}

/// The server id used when none is configured: a stable hash of the names,
/// in 1,000,000..=2,147,483,647 (away from the small ids people give servers).
pub fn default_server_id(pipeline: &str, source: &str) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{pipeline}/{source}").as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    1_000_000 + n % (2_147_483_647 - 1_000_000)
}

impl MysqlCdcConfig {
    /// The topics this source writes that are known without the server.
    pub fn topics(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|t| !t.topic.contains('{'))
            .map(|t| t.topic.clone())
            .collect()
    }

    /// Problems serde cannot see, with paths relative to the source entry.
    pub fn check(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        let c = self.connection.trim();
        if !c.starts_with("mysql://") {
            issues.push(Issue::new(
                "connection",
                format!(
                    "`{}` is not a MySQL URL: use mysql://user@host:3306",
                    redact(c)
                ),
            ));
        } else if let Err(e) = syncline_core::connect::mysql::Mysql::parse(c) {
            issues.push(Issue::new("connection", e));
        }
        if self.server_id == Some(0) {
            issues.push(Issue::new(
                "server_id",
                "0 is not a replica id: use 1 to 4294967295, unique among the server's replicas",
            ));
        }
        issues.extend(crate::dead_letter_topic_issue(
            self.dead_letter_topic.as_deref(),
        ));
        if self.snapshot_chunk_size == 0 {
            issues.push(Issue::new(
                "snapshot_chunk_size",
                "must be at least 1 (rows per chunk, e.g. 10000)",
            ));
        }
        if self.tables.is_empty() {
            issues.push(Issue::new(
                "tables",
                "list at least one table: `- { table: shop.orders, topic: shop.orders }`",
            ));
        }
        let mut topics = HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = |f: &str| format!("tables[{i}].{f}");
            match t.table.split_once('.') {
                Some((db, name)) if !db.is_empty() && !name.is_empty() && !name.contains('.') => {}
                _ => issues.push(Issue::new(
                    at("table"),
                    format!(
                        "`{}` is not `database.table`: name the database too, e.g. shop.orders",
                        t.table
                    ),
                )),
            }
            issues.extend(crate::cdc_table_issues(
                i,
                &t.table,
                &t.topic,
                t.key.as_deref(),
                &["{database}", "{table}"],
                &mut topics,
            ));
        }
        issues
    }
}

impl syncline_runtime::Component for MysqlCdcConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_out(&self) -> Vec<String> {
        MysqlCdcConfig::topics(self)
    }

    fn check(&self) -> Vec<Issue> {
        MysqlCdcConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        MysqlCdcSource::build(self, ctx).await?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> MysqlCdcConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn mistakes_name_the_field_and_the_fix() {
        let c = cfg(serde_json::json!({
            "connection": "postgres://x",
            "server_id": 0,
            "snapshot_chunk_size": 0,
            "tables": [
                {"table": "orders", "topic": "a b"},
                {"table": "shop.*", "topic": "shop.all", "key": ["id"]},
            ],
        }));
        let issues: Vec<String> = c
            .check()
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect();
        let all = issues.join("\n");
        for want in [
            "connection: `postgres://x` is not a MySQL URL",
            "server_id: 0 is not a replica id",
            "snapshot_chunk_size: must be at least 1",
            "tables[0].table: `orders` is not `database.table`",
            "tables[0].topic: must be 1-249 characters",
            "tables[1].topic: a pattern captures several tables",
            "tables[1].key: `key` applies to one table",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    }

    #[test]
    fn the_default_server_id_is_stable_and_in_range() {
        let a = default_server_id("p", "s");
        assert_eq!(a, default_server_id("p", "s"));
        assert_ne!(a, default_server_id("p", "t"));
        assert!((1_000_000..=2_147_483_647).contains(&a));
    }
}
