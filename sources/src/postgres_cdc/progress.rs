//! Snapshot progress per table, kept in the compacted topic
//! `_syncline_cursors` (key `<pipeline>/<source>/snapshot/<schema.table>`).
//!
//! A table's entry is written only after the broker has acknowledged every
//! row of the chunk it covers, so a crash resumes after the last recorded
//! chunk and republishes at most one chunk (with the same identities, see
//! [`super::snapshot`]). Entries belong to one incarnation of the slot: they
//! are removed (tombstones) before a slot is created, so a re-created slot
//! never trusts the progress of an old one.

use crate::state::JsonState;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use syncline_core::kafka::KafkaConfig;
use syncline_core::Result;

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
