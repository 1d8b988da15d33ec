//! The `postgres` sink: changes from Kafka topics upserted into Postgres
//! tables, exactly once.
//!
//! # What it guarantees
//! Every change record's effect lands in its target row exactly once, even
//! across crashes (kill -9 at any point), rebalances, several instances in
//! one consumer group, and sources that replay changes they had already
//! produced. It needs nothing from the broker beyond consumer groups (no
//! Kafka transactions). How:
//! - the consumed offsets are written in the same database transaction as
//!   the rows, and every assigned partition resumes from them
//!   (`offsets.rs`; [`OffsetsHome::Stage`]);
//! - a change is applied only if it is newer (by position) than what the row,
//!   or the row's tombstone, holds (`apply.rs`).
//!
//! # Data flow
//! The sink is a [`Stage`] of the connector runtime, which consumes,
//! batches, decodes, retries and dead-letters (`syncline_runtime::consume`).
//! The sink itself only says where offsets are stored ([`Stage::assigned`]),
//! checks each decoded change ([`Stage::prepare`]), and writes a batch in
//! one transaction (`apply.rs`, [`Stage::write`]); `ddl.rs` creates or
//! evolves target tables from the registered schema and `values.rs` turns
//! Avro values into Postgres text input.
//!
//! # Errors
//! A record that cannot be decoded, is not a change record, or whose values
//! the database refuses (bad text for a uuid or numeric, a NUL in text, a
//! value too wide or out of range, a constraint) goes to
//! `dead_letter_topic` with the reason, and the rest of its batch lands (the
//! runtime splits a refused batch to find it). Transient errors (database or
//! registry briefly away) are retried with backoff; errors an operator must
//! fix (credentials, privileges, a missing table without `create_tables`)
//! stop the sink with a message naming what to fix.

mod apply;
mod config;
mod ddl;
mod offsets;
mod truncate;
mod values;

pub use config::{OnDroppedColumn, OnTruncate, OnTypeChange, PostgresSinkConfig};

use crate::table::{Change, Router};
use apply::Writer;
use config::Settings;
use std::collections::HashMap;
use syncline_core::codec::Decoded;
use syncline_core::connect::postgres::Postgres;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};
use syncline_runtime::consume::ConsumeSettings;
use syncline_runtime::{Commit, OffsetsHome, Record, Stage, TopicPartition};

/// A built sink, ready to run.
pub struct PostgresSink {
    settings: Settings,
    ctx: ComponentContext,
}

impl PostgresSink {
    async fn new(settings: Settings, ctx: ComponentContext) -> Result<PostgresSink> {
        let client = connect(&settings.pg).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "postgres sink `{}`: cannot reach the target database",
                    ctx.component
                ),
            )
            .with_source(e)
        })?;
        ddl::ensure_bookkeeping(&client, &settings.schema, settings.create_tables).await?;
        Ok(PostgresSink { settings, ctx })
    }

    /// Consume until `shutdown`, or until an error that retrying cannot fix.
    /// Records polled but not yet committed at shutdown are dropped: they
    /// are read again from the stored offsets on the next start.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let consume = ConsumeSettings {
            kind: "postgres",
            group_id: s.group_id.clone(),
            topics: s.topics.clone(),
            batch: s.batch.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
        };
        let stage = SinkStage {
            router: Router::new("postgres", &self.ctx.component, &s.tables, s.on_truncate),
            settings: self.settings.clone(),
            writer: None,
            offsets_client: None,
        };
        crate::run_stage(&self.ctx, consume, stage, shutdown).await
    }
}

/// The sink's part of the runtime contract.
struct SinkStage {
    settings: Settings,
    router: Router,
    /// The batch writer and its connection; dropped after an error (its
    /// staging tables go with the connection) and made again on the next write.
    writer: Option<Writer>,
    /// A connection for reading offsets on assignment.
    offsets_client: Option<tokio_postgres::Client>,
}

impl Stage for SinkStage {
    type Item = Change;

    fn offsets_home(&self) -> OffsetsHome {
        OffsetsHome::Stage
    }

    async fn assigned(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let client = match self.offsets_client.take() {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.settings.pg).await?,
        };
        let topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
        let stored = offsets::read(
            &client,
            &self.settings.schema,
            &self.settings.group_id,
            &topics,
        )
        .await?;
        self.offsets_client = Some(client);
        Ok(stored)
    }

    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Change>> {
        self.router.prepare(record, decoded)
    }

    async fn write(&mut self, items: &[Change], commit: &Commit<'_>) -> Result<usize> {
        if self.writer.is_none() {
            let client = connect(&self.settings.pg).await?;
            let s = &self.settings;
            self.writer = Some(Writer::new(
                client,
                s.schema.clone(),
                s.group_id.clone(),
                s.evolution,
            ));
        }
        let writer = self.writer.as_mut().expect("writer just set");
        match writer.write_batch(items, commit.next()).await {
            Ok(()) => Ok(items.len()),
            Err(e) => {
                // The connection's staging tables and checks go with it.
                self.writer = None;
                Err(e)
            }
        }
    }
}

/// Connect, with the connection task on the current runtime, and TLS as
/// the connection URL asks (syncline_core::connect).
async fn connect(pg: &Postgres) -> Result<tokio_postgres::Client> {
    pg.connect("the target Postgres").await
}

pub(crate) use syncline_core::error::postgres::pg_error;
