//! Snapshot progress per table, kept in the compacted topic
//! `_syncline_cursors` (key `<pipeline>/<source>/snapshot/<schema.table>`).
//!
//! A table's entry is written only after the broker has acknowledged every
//! row of the chunk it covers, so a crash resumes after the last recorded
//! chunk and republishes at most one chunk (with the same identities, see
//! [`super::snapshot`]). Entries belong to one incarnation of the slot: they
//! are removed (tombstones) before a slot is created, so a re-created slot
//! never trusts the progress of an old one.

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use syncline_core::error::{Context, ErrorKind};
use syncline_core::kafka::{read_topic_to_end, KafkaConfig};
use syncline_core::{Error, Result};

pub const STATE_TOPIC: &str = "_syncline_cursors";

/// How far the snapshot of one table is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableProgress {
    /// Every row is published and acknowledged.
    pub done: bool,
    /// The key (as text, in key order) of the last row of the last recorded chunk.
    pub after: Option<Vec<String>>,
    /// Rows published so far.
    pub rows: u64,
}

#[derive(Clone)]
pub struct ProgressStore {
    kafka: KafkaConfig,
    /// `<pipeline>/<source>/snapshot/`
    prefix: String,
}

impl ProgressStore {
    pub fn new(kafka: KafkaConfig, pipeline: &str, source: &str) -> Self {
        Self {
            kafka,
            prefix: format!("{pipeline}/{source}/snapshot/"),
        }
    }

    pub fn key(&self, table: &str) -> String {
        format!("{}{table}", self.prefix)
    }

    /// The latest progress of every table (tombstoned entries are absent).
    pub async fn restore(&self) -> Result<HashMap<String, TableProgress>> {
        self.kafka.ensure_topic(STATE_TOPIC, 1, true).await?;
        let kafka = self.kafka.clone();
        let prefix = self.prefix.clone();
        let raw = tokio::task::spawn_blocking(move || {
            let mut latest: HashMap<String, Option<Vec<u8>>> = HashMap::new();
            read_topic_to_end(&kafka, STATE_TOPIC, |_, _, k, v| {
                if let Some(table) = k
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| k.strip_prefix(&prefix))
                {
                    latest.insert(table.to_string(), v.map(<[u8]>::to_vec));
                }
            })
            .map(|()| latest)
        })
        .await
        .map_err(|e| Error::internal("snapshot progress restore task failed").with_source(e))??;
        let mut out = HashMap::new();
        for (table, value) in raw {
            let Some(value) = value else { continue };
            let p: TableProgress =
                serde_json::from_slice(&value).context(ErrorKind::Data, || {
                    format!(
                        "the snapshot progress of `{table}` in `{STATE_TOPIC}` is not valid JSON"
                    )
                })?;
            out.insert(table, p);
        }
        Ok(out)
    }

    /// Record `progress` of `table`; call only once every row it covers is acknowledged.
    pub async fn store(
        &self,
        producer: &FutureProducer,
        table: &str,
        progress: &TableProgress,
    ) -> Result<()> {
        let value = serde_json::to_vec(progress)
            .map_err(|e| Error::internal("cannot serialize snapshot progress").with_source(e))?;
        self.send(producer, table, Some(&value)).await
    }

    /// Forget the progress of `tables` (before a new slot is created).
    pub async fn reset<'a>(
        &self,
        producer: &FutureProducer,
        tables: impl Iterator<Item = &'a String>,
    ) -> Result<()> {
        for t in tables {
            self.send(producer, t, None).await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        producer: &FutureProducer,
        table: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let key = self.key(table);
        let mut record = FutureRecord::<String, [u8]>::to(STATE_TOPIC).key(&key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| {
                Error::transient(format!("cannot store the snapshot progress of `{table}`"))
                    .with_source(e)
            })?;
        Ok(())
    }
}
