//! The `postgres` sink's section of a pipeline file: the user's words, checked
//! here and turned into typed values for the running sink.

use super::PostgresSink;
use crate::table::config::{
    default_batch_linger_ms, default_batch_max_bytes, default_batch_size, default_batch_timeout_ms,
    default_true, refuse, table_for, Common,
};
pub use crate::table::config::{OnDroppedColumn, OnTruncate, OnTypeChange};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use syncline_core::config::Issue;
use syncline_core::connect::postgres::Postgres;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};

/// Postgres allows identifiers of at most 63 bytes; longer names are cut silently.
const MAX_IDENT_BYTES: usize = 63;

/// Writes the changes of Kafka topics into Postgres tables, exactly once:
/// upserts by key, applies deletes, and keeps the consumed offsets in the
/// target database in the same transaction as the rows.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Connection URL of the target database, e.g.
    /// `postgres://syncline@db.internal:5432/warehouse` (use `${PGPASSWORD}`
    /// for secrets). TLS as libpq takes it: `sslmode=` disable, prefer
    /// (default), require, verify-ca or verify-full, and `sslrootcert=` a CA
    /// file (PEM); `require` and stronger never fall back to plain TCP.
    pub connection: String,
    /// The topics to read. Each topic's records must be syncline change
    /// records (Avro, Confluent wire format, key = primary key).
    pub topics: Vec<String>,
    /// The Postgres schema that holds the target tables and the sink's own
    /// tables (`syncline_offsets`, `syncline_tombstones`).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Target table per topic. A topic not listed here goes to the table named
    /// like the topic with every character other than `[A-Za-z0-9_]` replaced
    /// by `_` (`shop.orders` -> `shop_orders`). Names are used as written
    /// (quoted), so case matters.
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
    /// milliseconds: at a trickle, each change lands within this time of
    /// reaching Kafka; under load, batches still fill to `batch_size`.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Most bytes (keys, values and headers of the records) in one batch.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Kafka consumer group. Instances with the same group share the
    /// partitions. Default: `syncline.<pipeline>.<sink name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Create a missing target table from the registered schema (primary key
    /// = the record key), and add missing columns to an existing one (new
    /// source columns, always nullable, and the sink's `_syncline_source` /
    /// `_syncline_position` columns). When false, a missing table or column
    /// stops the sink with an error naming it.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// Topic for poison records: records this sink cannot decode, that are
    /// not syncline change records, or whose values the database refuses
    /// (bad uuid or numeric text, a NUL in text or jsonb, a value too wide
    /// or out of range, a constraint). Each goes there unchanged (key and
    /// value bytes) with headers `syncline.reason`, `syncline.topic`,
    /// `syncline.partition` and `syncline.offset`, and the rest of its
    /// batch lands (a refused batch is split until the refused record is
    /// found). A dead letter is acknowledged before the offset past it is
    /// stored; after a crash in between it may be dead-lettered twice, with
    /// equal headers. Default: `<pipeline>.<sink name>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// When a column's type changes at the source (a new schema version with
    /// another type): `widen` (default) alters the target column to the new
    /// type when that loses nothing (smallint -> integer -> bigint -> numeric,
    /// real -> double precision, numeric(p,s) -> a wider numeric, -> text);
    /// `keep` leaves the target column as it is (Postgres converts on insert,
    /// or refuses the batch naming the column). Narrowing is never applied.
    /// Needs `create_tables`.
    #[serde(default)]
    pub on_type_change: OnTypeChange,
    /// When a column disappears from the source (DROP COLUMN): `keep`
    /// (default) leaves the target column and its values (rows written later
    /// get null there); `drop` drops the target column. Needs `create_tables`.
    #[serde(default)]
    pub on_dropped_column: OnDroppedColumn,
    /// When a source table is truncated (a TRUNCATE change): `apply`
    /// (default) deletes the target rows this source wrote before the
    /// truncate, and rows no syncline sink wrote; rows from other sources
    /// stay. `ignore` skips truncates and keeps the target's rows (an
    /// archive that outlives the source's clean-ups).
    #[serde(default)]
    pub on_truncate: OnTruncate,
}

/// How target tables follow schema changes (the running form of the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evolution {
    pub create: bool,
    pub on_type_change: OnTypeChange,
    pub on_dropped_column: OnDroppedColumn,
}

fn default_schema() -> String {
    "public".into()
}

/// The typed settings the running sink gets (no raw user words).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub pg: Postgres,
    pub schema: String,
    pub topics: Vec<String>,
    /// Target table per topic, every topic present.
    pub tables: BTreeMap<String, String>,
    pub batch: syncline_runtime::BatchSettings,
    pub group_id: String,
    pub create_tables: bool,
    pub evolution: Evolution,
    pub on_truncate: OnTruncate,
    pub dead_letter_topic: String,
}

impl PostgresSinkConfig {
    /// The topics this sink reads.
    pub fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

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
        if let Err(e) = Postgres::parse(&self.connection) {
            issues.push(Issue::new("connection", e));
        }
        issues.extend(self.common().check(Some((MAX_IDENT_BYTES, "Postgres"))));
        if self.schema.is_empty() || self.schema.len() > MAX_IDENT_BYTES {
            issues.push(Issue::new(
                "schema",
                format!("a schema name needs 1 to {MAX_IDENT_BYTES} bytes"),
            ));
        }
        issues
    }

    pub(crate) fn settings(&self, ctx: &ComponentContext) -> Result<Settings> {
        refuse("postgres", ctx, self.check())?;
        let pg = Postgres::parse(&self.connection).map_err(|e| {
            Error::config(format!(
                "postgres sink `{}`: bad connection URL: {e}",
                ctx.component
            ))
        })?;
        Ok(Settings {
            pg,
            schema: self.schema.clone(),
            topics: self.topics.clone(),
            tables: self.common().tables(),
            batch: self.common().batch(),
            group_id: self.common().group_id(ctx),
            create_tables: self.create_tables,
            evolution: Evolution {
                create: self.create_tables,
                on_type_change: self.on_type_change,
                on_dropped_column: self.on_dropped_column,
            },
            on_truncate: self.on_truncate,
            dead_letter_topic: self.common().dead_letter_topic(ctx),
        })
    }

    /// Check the settings and connect to the target database (creating the
    /// sink's offsets and tombstones tables); the Kafka consumer starts in
    /// [`PostgresSink::run`].
    pub async fn build(&self, ctx: ComponentContext) -> Result<PostgresSink> {
        let settings = self.settings(&ctx)?;
        tracing::debug!(
            sink = %ctx.component,
            schema = %settings.schema,
            group = %settings.group_id,
            "building postgres sink"
        );
        PostgresSink::new(settings, ctx).await
    }
}

impl syncline_runtime::Component for PostgresSinkConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_in(&self) -> Vec<String> {
        PostgresSinkConfig::topics(self)
    }

    fn check(&self) -> Vec<Issue> {
        PostgresSinkConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        self.build(ctx).await?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> PostgresSinkConfig {
        serde_json::from_value(serde_json::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn defaults_and_table_names() {
        let c = parse(
            r#"{"connection": "postgres://postgres@127.0.0.1/t", "topics": ["shop.orders", "a-b"], "tables": {"a-b": "ab"}}"#,
        );
        assert_eq!(c.schema, "public");
        assert_eq!(c.batch_size, 1000);
        assert!(c.create_tables);
        assert_eq!(c.table_for("shop.orders"), "shop_orders");
        assert_eq!(c.table_for("a-b"), "ab");
        assert!(c.check().is_empty(), "{:?}", c.check());
    }

    #[test]
    fn check_names_the_bad_field() {
        let c = parse(
            r#"{"connection": "nonsense://", "topics": [], "tables": {"x": "y"}, "batch_size": 0, "batch_timeout_ms": 0}"#,
        );
        let paths: Vec<_> = c.check().into_iter().map(|i| i.path).collect();
        assert_eq!(
            paths,
            [
                "connection",
                "topics",
                "tables.x",
                "batch_size",
                "batch_timeout_ms"
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let v = serde_json::json!({"connection": "postgres://x", "topics": ["t"], "batchsize": 3});
        assert!(serde_json::from_value::<PostgresSinkConfig>(v).is_err());
    }
}
