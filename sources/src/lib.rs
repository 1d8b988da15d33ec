//! syncline's sources: components that read changes from a system and
//! publish them to Kafka as [`syncline_core::ChangeEvent`]s.
//!
//! - [`sql_poll`]: polls tables (or queries) of Postgres and SQLite by an
//!   incrementing column or a timestamp + id cursor.
//! - [`postgres_cdc`]: change-data-capture from Postgres through logical
//!   replication, after a snapshot consistent with the replication slot.
//! - [`mysql_cdc`]: change-data-capture from MariaDB and MySQL through the
//!   binlog, after a snapshot consistent with a binlog position.
//! - [`http_poll`]: polls an HTTP API on a schedule, page by page, storing
//!   its cursor and page only after the broker acknowledged the records.
//! - [`webhook`]: an HTTP listener publishing each signed delivery, answering
//!   2xx only once the broker has it.

pub mod http_poll;
pub mod mysql_cdc;
pub mod postgres_cdc;
pub mod snapshot_progress;
pub mod sql_poll;
pub mod state;
pub mod webhook;

use syncline_core::config::Issue;

/// Kafka's rule for topic names.
pub(crate) fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The issue of a topic name Kafka refuses, at `field`.
pub(crate) fn topic_name_issue(field: &str, t: &str) -> Option<Issue> {
    (!valid_topic(t)).then(|| {
        Issue::new(
            field,
            "must be 1-249 characters of letters, digits, `.`, `_` and `-`",
        )
    })
}

/// What is wrong with the topic name at `field`, if anything: one Kafka
/// refuses, or one of syncline's own state topics.
pub(crate) fn topic_issue(field: &str, t: &str) -> Option<Issue> {
    if let Some(issue) = topic_name_issue(field, t) {
        Some(issue)
    } else if t.starts_with("_syncline") {
        Some(Issue::new(
            field,
            "topics starting with `_syncline` hold syncline's own state: choose another name",
        ))
    } else {
        None
    }
}

/// What is wrong with a source's `dead_letter_topic`, if anything.
pub(crate) fn dead_letter_topic_issue(topic: Option<&str>) -> Option<Issue> {
    topic_issue("dead_letter_topic", topic?)
}

/// The values of `key` in `row`, in key order (null for a column the row
/// lacks).
pub(crate) fn key_of(
    key: &[String],
    row: &[(String, apache_avro::types::Value)],
) -> Vec<(String, apache_avro::types::Value)> {
    key.iter()
        .map(|k| {
            let v = row
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or(apache_avro::types::Value::Null);
            (k.clone(), v)
        })
        .collect()
}

/// At most 60 bytes of `s` (cut at a character), for a value quoted in an error.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= 60 {
        s.to_string()
    } else {
        let mut end = 60;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// The issues of one `tables:` entry of a CDC source (`postgres_cdc`,
/// `mysql_cdc`) at index `i`: its topic (with the `placeholders` a pattern
/// may use, `{table}` among them), a pattern without `{table}`, a topic
/// already taken (`topics`), and `key`. The table name's own form is the
/// source's business.
pub(crate) fn cdc_table_issues(
    i: usize,
    table: &str,
    topic: &str,
    key: Option<&[String]>,
    placeholders: &[&str],
    topics: &mut std::collections::HashSet<String>,
) -> Vec<Issue> {
    let at = |f: &str| format!("tables[{i}].{f}");
    let mut issues = Vec::new();
    let plain = placeholders
        .iter()
        .fold(topic.to_string(), |t, p| t.replace(p, "x"));
    if let Some(mut issue) = topic_issue(&at("topic"), &plain) {
        issue.message.push_str(&format!(
            " (and {} with patterns)",
            placeholders
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        issues.push(issue);
    }
    if table.contains('*') && !topic.contains("{table}") {
        issues.push(Issue::new(
            at("topic"),
            format!(
                "a pattern captures several tables: put {} in the topic",
                placeholders
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ));
    }
    if !topic.contains('{') && !topics.insert(topic.to_string()) {
        issues.push(Issue::new(
            at("topic"),
            format!("topic `{topic}` is used by another table"),
        ));
    }
    if let Some(k) = key {
        if k.is_empty() {
            issues.push(Issue::new(at("key"), "list at least one column"));
        }
        if table.contains('*') {
            issues.push(Issue::new(
                at("key"),
                "`key` applies to one table: name it without a pattern",
            ));
        }
    }
    issues
}

/// What fuzzing (`fuzz/`) reaches inside the sources: the pure functions
/// that meet hostile bytes (pgoutput messages, Postgres text values). Not a
/// stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::postgres_cdc::decode::{
        row_values, table_schema, text_value, RawColumn, TypeInfo,
    };
    pub use pg_walstream::{ChangeEvent, EventType, Lsn, PgOutputDecoder};
}
