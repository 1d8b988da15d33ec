//! The user's words: the `sql_poll` entry of a pipeline file.

use super::connection::Connection;
use super::schedule::Schedule;
use super::SqlPollSource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};

/// Polls tables (or queries) of a Postgres or SQLite database and publishes
/// each new or changed row as a change event (op `UPSERT`, and `DELETE` for
/// detected deletes). See sources/README.md for what it guarantees.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlPollConfig {
    /// The database: `postgres://user@host:5432/db` (a password may be given
    /// in the URL; it is never logged), or `sqlite:///absolute/path.db`, or
    /// `sqlite:relative/path.db` (relative to the working directory).
    /// Postgres TLS as libpq takes it: `sslmode=` disable, prefer (default),
    /// require, verify-ca or verify-full, and `sslrootcert=` a CA file (PEM);
    /// `require` and stronger never fall back to plain TCP.
    pub connection: String,
    /// When to poll: `{ interval_ms: 1000 }` (default) or `{ cron: "*/10 * * * * *" }`
    /// (six or seven fields, seconds first, UTC). A poll reads until it has
    /// caught up, in batches of `batch_size`.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Rows read, published and acknowledged per batch; the cursor is stored
    /// after each batch. After a crash at most one batch is published again.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The tables (or queries) to poll, each to its own topic.
    pub tables: Vec<TableConfig>,
    /// Where a row goes whose record is larger than the broker takes (the
    /// producer's `message.max.bytes`), with the reason and the row's key, so
    /// that the poll moves on. Default: `<pipeline>.<source>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// `interval_ms` or `cron`: exactly one of them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Milliseconds from the start of one poll to the start of the next.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// A cron expression with seconds first, e.g. `"0 */5 * * * *"` (every
    /// five minutes), evaluated in UTC.
    #[serde(default)]
    pub cron: Option<String>,
}

impl ScheduleConfig {
    /// What is wrong with it, with paths relative to the source
    /// (`schedule`, `schedule.cron`, ...).
    pub fn issues(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        match (&self.interval_ms, &self.cron) {
            (Some(_), Some(_)) => issues.push(Issue::new(
                "schedule",
                "set either `interval_ms` or `cron`, not both",
            )),
            (None, None) => issues.push(Issue::new(
                "schedule",
                "set `interval_ms` (e.g. 1000) or `cron` (e.g. \"*/10 * * * * *\")",
            )),
            (Some(0), None) => issues.push(Issue::new(
                "schedule.interval_ms",
                "must be at least 1 (milliseconds between polls)",
            )),
            (None, Some(expr)) => {
                if let Err(e) = Schedule::cron(expr) {
                    issues.push(Issue::new("schedule.cron", e.to_string()));
                }
            }
            (Some(_), None) => {}
        }
        issues
    }

    pub fn build(&self) -> Result<Schedule> {
        match (&self.interval_ms, &self.cron) {
            (Some(ms), None) => Ok(Schedule::interval_ms(*ms)),
            (None, Some(expr)) => Schedule::cron(expr),
            _ => Err(Error::config(
                "schedule: set either `interval_ms` or `cron`",
            )),
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            interval_ms: Some(1_000),
            cron: None,
        }
    }
}

/// How new and changed rows are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Rows with a greater `incrementing_column` than the last published one:
    /// new rows only (updates are not seen).
    Incrementing,
    /// Rows with a greater (`timestamp_column`, `incrementing_column`) pair:
    /// new and updated rows, provided every update sets the timestamp.
    Timestamp,
}

/// One table (or query) to poll.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table (or view) to poll, `schema.table` or `table`. Set either
    /// `table` or `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT whose rows are polled instead of a table (the cursor filter
    /// and order are applied around it). Needs `name` and `key`.
    #[serde(default)]
    pub query: Option<String>,
    /// The name of this entry in change records (`source.table`), in the
    /// Avro record name and in the stored cursor's key. Default: `table`.
    /// Required with `query`.
    #[serde(default)]
    pub name: Option<String>,
    /// The Kafka topic the changes go to (created if missing).
    pub topic: String,
    /// `incrementing` or `timestamp`.
    pub mode: Mode,
    /// Timestamp column, updated on every change (mode `timestamp` only).
    /// Postgres: `timestamp` or `timestamptz`; SQLite: ISO-8601 text in one
    /// format (e.g. `CURRENT_TIMESTAMP`) or integer epoch values.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Integer column that grows with every new row (a sequence or identity;
    /// SQLite: an `INTEGER PRIMARY KEY`). In mode `timestamp` it orders rows
    /// with equal timestamps. Default: the key, if it is one integer column.
    #[serde(default)]
    pub incrementing_column: Option<String>,
    /// Key columns of the change records (the Kafka key). Default: the
    /// table's primary key. Required with `query`.
    #[serde(default)]
    pub key: Option<Vec<String>>,
    /// Detect hard deletes by scanning the keys of the table every
    /// `delete_scan_interval_ms`, and publish a `DELETE` for every published
    /// key that is gone. Costs memory for every live key (see README).
    #[serde(default)]
    pub detect_deletes: bool,
    /// Milliseconds between two key scans of `detect_deletes`.
    #[serde(default = "default_delete_scan_interval_ms")]
    pub delete_scan_interval_ms: u64,
    /// Postgres only: milliseconds by which a row's timestamp may precede
    /// the start of the transaction that writes it (application-supplied
    /// timestamps). The out-of-order fence waits this much longer. 0 when
    /// timestamps come from `now()`/`clock_timestamp()` or ids from a sequence.
    #[serde(default)]
    pub commit_delay_ms: u64,
}

fn default_batch_size() -> usize {
    5_000
}
fn default_delete_scan_interval_ms() -> u64 {
    60_000
}

impl TableConfig {
    /// The entry's name: `name`, else `table`.
    pub fn entry_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.table.clone())
            .unwrap_or_default()
    }
}

use crate::valid_topic;

impl SqlPollConfig {
    /// The topics this source writes (the cursor topic is state, not listed).
    pub fn topics(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.topic.clone()).collect()
    }

    /// Problems serde cannot see, with paths relative to the source entry.
    pub fn check(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        let connection = Connection::parse(&self.connection);
        if let Err(e) = &connection {
            issues.push(Issue::new("connection", e.to_string()));
        }
        issues.extend(crate::dead_letter_topic_issue(
            self.dead_letter_topic.as_deref(),
        ));
        let is_sqlite = matches!(connection, Ok(Connection::Sqlite(_)));
        issues.extend(self.schedule.issues());
        if self.batch_size == 0 {
            issues.push(Issue::new(
                "batch_size",
                "must be at least 1 (rows per batch, e.g. 5000)",
            ));
        }
        if self.tables.is_empty() {
            issues.push(Issue::new("tables", "list at least one table: `- { table: public.orders, topic: shop.orders, mode: incrementing }`"));
        }
        let mut topics = HashSet::new();
        let mut names = HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = |field: &str| {
                if field.is_empty() {
                    format!("tables[{i}]")
                } else {
                    format!("tables[{i}].{field}")
                }
            };
            match (&t.table, &t.query) {
                (Some(_), Some(_)) => issues.push(Issue::new(
                    at(""),
                    "set either `table` or `query`, not both",
                )),
                (None, None) => issues.push(Issue::new(
                    at(""),
                    "set `table` (e.g. public.orders) or `query` (with `name` and `key`)",
                )),
                (None, Some(q)) => {
                    if t.name.as_deref().is_none_or(str::is_empty) {
                        issues.push(Issue::new(
                            at("name"),
                            "a `query` needs a `name` (used in change records and the cursor key)",
                        ));
                    }
                    if t.key.is_none() {
                        issues.push(Issue::new(
                            at("key"),
                            "a `query` needs `key`: the columns that identify a row, e.g. [id]",
                        ));
                    }
                    if q.trim().is_empty() {
                        issues.push(Issue::new(at("query"), "is empty: write a SELECT"));
                    }
                }
                (Some(table), None) => {
                    if table.trim().is_empty() {
                        issues.push(Issue::new(
                            at("table"),
                            "is empty: name a table, e.g. public.orders",
                        ));
                    }
                }
            }
            if !valid_topic(&t.topic) {
                issues.push(Issue::new(
                    at("topic"),
                    "must be 1-249 characters of letters, digits, `.`, `_` and `-`",
                ));
            } else if t.topic.starts_with("_syncline") {
                issues.push(Issue::new(at("topic"), "topics starting with `_syncline` hold syncline's own state: choose another name"));
            } else if !topics.insert(t.topic.clone()) {
                issues.push(Issue::new(at("topic"), format!("topic `{}` is already written by another table of this source: give each table its own topic", t.topic)));
            }
            let name = t.entry_name();
            if !name.is_empty() && !names.insert(name.clone()) {
                issues.push(Issue::new(at("name"), format!("`{name}` is polled twice by this source: give the entries distinct `name`s")));
            }
            match t.mode {
                Mode::Timestamp if t.timestamp_column.is_none() => issues.push(Issue::new(
                    at("timestamp_column"),
                    "`mode: timestamp` needs `timestamp_column`: the column set on every insert and update, e.g. updated_at",
                )),
                Mode::Incrementing if t.timestamp_column.is_some() => issues.push(Issue::new(
                    at("timestamp_column"),
                    "is only used with `mode: timestamp`; remove it, or set `mode: timestamp` to also see updates",
                )),
                _ => {}
            }
            if let Some(key) = &t.key {
                if key.is_empty() {
                    issues.push(Issue::new(at("key"), "list at least one column, e.g. [id], or remove `key` to use the primary key"));
                }
                let mut seen = HashSet::new();
                if let Some(dup) = key.iter().find(|k| !seen.insert(*k)) {
                    issues.push(Issue::new(
                        at("key"),
                        format!("column `{dup}` is listed twice"),
                    ));
                }
            }
            if t.detect_deletes && t.delete_scan_interval_ms == 0 {
                issues.push(Issue::new(
                    at("delete_scan_interval_ms"),
                    "must be at least 1 (milliseconds between key scans, e.g. 60000)",
                ));
            }
            if is_sqlite && t.commit_delay_ms > 0 {
                issues.push(Issue::new(at("commit_delay_ms"), "applies to Postgres only: SQLite has one writer at a time, so rows become visible in commit order"));
            }
        }
        issues
    }

    pub fn schedule(&self) -> Result<Schedule> {
        self.schedule.build()
    }

    /// Connect, introspect every table, create the topics, register the
    /// schemas, and restore the cursors (and, for `detect_deletes`, the keys
    /// published so far): a built source is ready to run.
    pub async fn build(&self, ctx: ComponentContext) -> Result<SqlPollSource> {
        let issues = self.check();
        if !issues.is_empty() {
            let list: Vec<String> = issues
                .iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect();
            return Err(Error::config(format!(
                "source `{}`: {}",
                ctx.component,
                list.join("; ")
            )));
        }
        SqlPollSource::build(self, ctx).await
    }
}

impl syncline_runtime::Component for SqlPollConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_out(&self) -> Vec<String> {
        SqlPollConfig::topics(self)
    }

    fn check(&self) -> Vec<Issue> {
        SqlPollConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        self.build(ctx).await?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> SqlPollConfig {
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    fn paths(c: &SqlPollConfig) -> Vec<String> {
        c.check().into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn a_good_config_has_no_issues() {
        let c = parse(
            r#"{"connection":"postgres://u@h/db","tables":[
                {"table":"public.orders","topic":"shop.orders","mode":"timestamp","timestamp_column":"updated_at"},
                {"query":"SELECT 1 AS id","name":"q","key":["id"],"topic":"shop.q","mode":"incrementing"}]}"#,
        );
        assert_eq!(c.check(), vec![]);
        assert_eq!(
            c.topics(),
            vec!["shop.orders".to_string(), "shop.q".to_string()]
        );
        assert_eq!(c.batch_size, 5_000);
    }

    #[test]
    fn check_names_each_problem_by_path() {
        let c = parse(
            r#"{"connection":"mysql://x","schedule":{"interval_ms":1,"cron":"* * * * * *"},"batch_size":0,"tables":[
                {"table":"t","topic":"a","mode":"timestamp"},
                {"query":"SELECT 1","topic":"a","mode":"incrementing","timestamp_column":"x","key":[]},
                {"table":"t","query":"q","topic":"bad topic","mode":"incrementing","detect_deletes":true,"delete_scan_interval_ms":0}]}"#,
        );
        assert_eq!(
            paths(&c),
            vec![
                "connection",
                "schedule",
                "batch_size",
                "tables[0].timestamp_column",
                "tables[1].name",
                "tables[1].topic",
                "tables[1].timestamp_column",
                "tables[1].key",
                "tables[2]",
                "tables[2].topic",
                "tables[2].name",
                "tables[2].delete_scan_interval_ms",
            ]
        );
    }

    #[test]
    fn empty_tables_and_bad_cron_are_reported() {
        let c =
            parse(r#"{"connection":"sqlite:///x.db","schedule":{"cron":"every day"},"tables":[]}"#);
        assert_eq!(paths(&c), vec!["schedule.cron", "tables"]);
        let m = &c.check()[1].message;
        assert!(m.contains("at least one table"), "{m}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"connection":"sqlite:x.db","tables":[],"interval_ms":5}"#)
                .unwrap();
        assert!(serde_json::from_value::<SqlPollConfig>(v).is_err());
    }

    #[test]
    fn commit_delay_is_postgres_only() {
        let c = parse(
            r#"{"connection":"sqlite:x.db","tables":[{"table":"t","topic":"t","mode":"incrementing","commit_delay_ms":5}]}"#,
        );
        assert_eq!(paths(&c), vec!["tables[0].commit_delay_ms"]);
    }
}
