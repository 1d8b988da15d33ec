//! Snapshot progress per table, of the CDC sources (`postgres_cdc`,
//! `mysql_cdc`), kept in the compacted topic `_syncline_cursors` (key
//! `<pipeline>/<source>/snapshot/<table>`).
//!
//! A table's entry is written only after the broker has acknowledged every
//! row of the chunk it covers, so a crash resumes each key range after its
//! last recorded chunk and republishes at most one chunk per range (with the
//! same identities, or newer ones: see each source's `snapshot` module).
//! Entries belong to one incarnation of the source's stream position (a
//! Postgres slot, a stored binlog position): they are removed (tombstones)
//! before a new one is made, so a new stream never trusts the progress of
//! an old one.

use crate::state::JsonState;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use syncline_core::kafka::KafkaConfig;
use syncline_core::Result;

/// How far the snapshot of one table is.
///
/// The table is split into key ranges (`segments`) planned once, before the
/// first chunk, and stored with the progress, so a resumed snapshot reads
/// the same ranges. Segment `i` covers the keys above segment `i - 1`'s
/// `upper` (from the start for the first) up to and including its own
/// `upper` (to the end for the last); several are read at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableProgress {
    /// Every row is published and acknowledged.
    pub done: bool,
    /// Rows published so far.
    pub rows: u64,
    /// The key ranges; empty until planned.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// The commit LSN of the re-snapshot request this snapshot answers (0:
    /// the initial snapshot). A request replayed by the stream is not
    /// answered twice.
    #[serde(default)]
    pub requested_at: u64,
    /// Before segments existed (one range): the last recorded key.
    #[serde(default, skip_serializing)]
    pub after: Option<Vec<String>>,
}

/// One key range of a table's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// The greatest key of the range (as text, in key order); `None`: no bound.
    pub upper: Option<Vec<String>>,
    /// The key of the last row of the last recorded chunk of this range.
    pub after: Option<Vec<String>>,
    /// Every row of the range is published and acknowledged.
    pub done: bool,
}

impl TableProgress {
    /// An entry written before segments existed is one unbounded range.
    pub fn upgraded(mut self) -> TableProgress {
        if self.segments.is_empty() && (self.after.is_some() || self.done) {
            self.segments = vec![Segment {
                upper: None,
                after: self.after.take(),
                done: self.done,
            }];
        }
        self
    }

    /// The exclusive lower bound of segment `i`: where it resumes.
    pub fn lower(&self, i: usize) -> Option<&Vec<String>> {
        let s = &self.segments[i];
        s.after.as_ref().or_else(|| {
            i.checked_sub(1)
                .and_then(|p| self.segments[p].upper.as_ref())
        })
    }
}

#[derive(Clone)]
pub struct ProgressStore(JsonState<TableProgress>);

impl ProgressStore {
    pub fn new(kafka: KafkaConfig, pipeline: &str, source: &str) -> Self {
        Self(JsonState::new(
            kafka,
            format!("{pipeline}/{source}/snapshot/"),
            "snapshot progress",
        ))
    }

    /// The latest progress of every table (tombstoned entries are absent).
    pub async fn restore(&self) -> Result<HashMap<String, TableProgress>> {
        self.0.restore().await
    }

    /// Record `progress` of `table`; call only once every row it covers is acknowledged.
    pub async fn store(
        &self,
        producer: &FutureProducer,
        table: &str,
        progress: &TableProgress,
    ) -> Result<()> {
        self.0.store(producer, table, Some(progress)).await
    }

    /// Record a request (committed at `lsn`) for a fresh snapshot of
    /// `table`: an entry that is not done and has no ranges yet, read again
    /// in full (also with `snapshot: never`).
    pub async fn request(&self, producer: &FutureProducer, table: &str, lsn: u64) -> Result<()> {
        let fresh = TableProgress {
            requested_at: lsn,
            ..TableProgress::default()
        };
        self.store(producer, table, &fresh).await
    }

    /// Forget the progress of `tables` (before a new slot is created).
    pub async fn reset<'a>(
        &self,
        producer: &FutureProducer,
        tables: impl Iterator<Item = &'a String>,
    ) -> Result<()> {
        for t in tables {
            self.0.store(producer, t, None).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Option<Vec<String>> {
        Some(vec![k.to_string()])
    }

    #[test]
    fn a_range_resumes_after_its_last_key_else_after_the_previous_range() {
        let p = TableProgress {
            segments: vec![
                Segment {
                    upper: key("100"),
                    after: key("40"),
                    done: false,
                },
                Segment {
                    upper: key("200"),
                    after: None,
                    done: false,
                },
                Segment {
                    upper: None,
                    after: key("250"),
                    done: false,
                },
            ],
            ..TableProgress::default()
        };
        assert_eq!(p.lower(0), key("40").as_ref());
        assert_eq!(p.lower(1), key("100").as_ref());
        assert_eq!(p.lower(2), key("250").as_ref());
        let first = TableProgress {
            segments: vec![Segment::default()],
            ..TableProgress::default()
        };
        assert_eq!(first.lower(0), None);
    }

    #[test]
    fn entries_written_before_ranges_existed_resume_as_one_range() {
        let old: TableProgress =
            serde_json::from_str(r#"{"done": false, "after": ["7"], "rows": 7}"#).unwrap();
        let p = old.upgraded();
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.lower(0), key("7").as_ref());
        assert_eq!(p.rows, 7);
        let fresh: TableProgress = serde_json::from_str(r#"{"done": false, "rows": 0}"#).unwrap();
        assert!(
            fresh.upgraded().segments.is_empty(),
            "a fresh entry is planned"
        );
        // written back, the old field is gone
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("after").is_none(), "{json}");
        assert_eq!(json["segments"][0]["after"][0], "7");
    }
}
