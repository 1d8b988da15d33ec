//! The user's words: the `postgres_cdc` entry of a pipeline file.

use super::PostgresCdcSource;
use crate::sql_poll::connection::redact;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Result;

/// Captures every insert, update and delete of Postgres tables through
/// logical replication (pgoutput), after an initial snapshot consistent with
/// the replication slot. See sources/src/postgres_cdc/README.md for what it
/// guarantees and what it needs from the database (`wal_level = logical`, a
/// role with REPLICATION).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresCdcConfig {
    /// The database: `postgres://user@host:5432/db` (a password may be given
    /// in the URL; it is never logged). The role needs REPLICATION (or
    /// superuser), SELECT on the tables, and CREATE on the database to create
    /// the publication when it is missing. TLS as libpq takes it:
    /// `sslmode=` disable, prefer (default), require, verify-ca or
    /// verify-full, and `sslrootcert=` a CA file (PEM), for the replication
    /// connection and every other one alike; `require` and stronger never
    /// fall back to plain TCP.
    pub connection: String,
    /// The logical replication slot (created when missing, with the initial
    /// snapshot exported from it). Default: `syncline_<pipeline>_<source>`
    /// (lower case, other characters as `_`).
    #[serde(default)]
    pub slot: Option<String>,
    /// The publication (created `FOR TABLE` the captured tables when missing;
    /// captured tables it lacks are added). Default: the slot name.
    #[serde(default)]
    pub publication: Option<String>,
    /// The tables to capture, each to its topic.
    pub tables: Vec<CdcTableConfig>,
    /// `initial` (default): read the tables' current rows first (op `READ`),
    /// then stream; `never`: stream only.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk: a chunk is read by primary key, published,
    /// acknowledged, then recorded; a crash resumes after the last recorded chunk.
    #[serde(default = "default_chunk_size")]
    pub snapshot_chunk_size: usize,
    /// Chunks read at once, each on its own database connection (all in the
    /// same exported snapshot). A large table is split into this many key
    /// ranges (boundaries from a `TABLESAMPLE` of its keys); several tables
    /// are read at once too. Default 1: raise it when the database's reads,
    /// not syncline's encoding, are the narrower part (the readers share one
    /// task's CPU for encoding; on a 2-core machine that also ran the
    /// database and the broker, 4 was slower than 1).
    #[serde(default = "default_parallelism")]
    pub snapshot_parallelism: usize,
    /// Milliseconds between two heartbeats (`pg_logical_emit_message`), which
    /// let the slot advance while the captured tables are idle but the
    /// database is busy. 0 turns heartbeats off (needs EXECUTE on that function).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Where a change goes whose record is larger than the broker takes
    /// (the producer's `message.max.bytes`), with the reason and the row's
    /// key, so that the slot moves on. Default: `<pipeline>.<source>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// Whether the current rows are read before streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Read every captured table once (resumable by chunk), then stream.
    #[default]
    Initial,
    /// Only stream changes committed after the source first started (for
    /// `postgres_cdc`: after its slot was created).
    Never,
}

/// One table, or a pattern of tables, to capture.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CdcTableConfig {
    /// `schema.table`, or a pattern with `*` (any characters), e.g.
    /// `public.*` or `sales.order_*`. Without a schema, `public`.
    pub table: String,
    /// The Kafka topic (created if missing). With a pattern, use `{schema}`
    /// and `{table}`, e.g. `cdc.{schema}.{table}`.
    pub topic: String,
    /// Key columns for a table without a primary key (the Kafka key and the
    /// sink's row identity). They must identify a row, and the table needs
    /// `REPLICA IDENTITY FULL` (or `USING INDEX` on them) so that updates and
    /// deletes carry them. Default: the primary key.
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

fn default_chunk_size() -> usize {
    10_000
}
fn default_parallelism() -> usize {
    1
}
fn default_heartbeat_ms() -> u64 {
    10_000
}

/// Postgres identifier rule for slot names: lower case letters, digits, `_`, at most 63.
pub fn valid_slot_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `syncline_<pipeline>_<source>` with every other character as `_`, at most 63 characters.
pub fn default_slot_name(pipeline: &str, source: &str) -> String {
    let mut s: String = format!("syncline_{pipeline}_{source}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(63);
    s
}

impl PostgresCdcConfig {
    /// The topics this source writes that are known without the database
    /// (topic templates of patterns are resolved at start).
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
        if !(c.starts_with("postgres://") || c.starts_with("postgresql://")) {
            issues.push(Issue::new(
                "connection",
                format!(
                    "`{}` is not a Postgres URL: use postgres://user@host:5432/db",
                    redact(c)
                ),
            ));
        } else if let Err(e) = syncline_core::connect::postgres::Postgres::parse(c) {
            issues.push(Issue::new("connection", e));
        }
        issues.extend(crate::dead_letter_topic_issue(
            self.dead_letter_topic.as_deref(),
        ));
        for (field, v) in [("slot", &self.slot), ("publication", &self.publication)] {
            if let Some(v) = v {
                if !valid_slot_name(v) {
                    issues.push(Issue::new(
                        field,
                        "use lower-case letters, digits and `_` (at most 63)",
                    ));
                }
            }
        }
        if self.snapshot_chunk_size == 0 {
            issues.push(Issue::new(
                "snapshot_chunk_size",
                "must be at least 1 (rows per chunk, e.g. 10000)",
            ));
        }
        if !(1..=64).contains(&self.snapshot_parallelism) {
            issues.push(Issue::new(
                "snapshot_parallelism",
                "must be 1 to 64 (chunks read at once, one connection each; e.g. 4)",
            ));
        }
        if self.tables.is_empty() {
            issues.push(Issue::new(
                "tables",
                "list at least one table: `- { table: public.orders, topic: shop.orders }`",
            ));
        }
        let mut topics = HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = |f: &str| format!("tables[{i}].{f}");
            if t.table.trim().is_empty() {
                issues.push(Issue::new(at("table"), "name a table, e.g. public.orders"));
            }
            issues.extend(crate::cdc_table_issues(
                i,
                &t.table,
                &t.topic,
                t.key.as_deref(),
                &["{schema}", "{table}"],
                &mut topics,
            ));
        }
        issues
    }

    /// Connect, resolve the tables and prepare their schemas.
    pub async fn build(&self, ctx: ComponentContext) -> Result<PostgresCdcSource> {
        PostgresCdcSource::build(self, ctx).await
    }
}

impl syncline_runtime::Component for PostgresCdcConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_out(&self) -> Vec<String> {
        PostgresCdcConfig::topics(self)
    }

    fn check(&self) -> Vec<Issue> {
        PostgresCdcConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        self.build(ctx).await?.run(shutdown).await
    }
}
