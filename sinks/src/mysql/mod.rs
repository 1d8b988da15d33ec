//! The `mysql` sink: changes from Kafka topics upserted into MySQL 8 or
//! MariaDB 10.11+ tables, exactly once.
//!
//! # What it guarantees
//! The postgres sink's guarantee, in MySQL: every change record's effect
//! lands in its target row exactly once, even across crashes (kill -9 at any
//! point), rebalances, several instances in one consumer group, and sources
//! that replay changes they had already produced. It needs nothing from the
//! broker beyond consumer groups. How (the rules are `crate::table`'s):
//! - the consumed offsets are written in the same InnoDB transaction as the
//!   rows, in `syncline_offsets`, and every assigned partition resumes from
//!   them ([`OffsetsHome::Stage`]);
//! - a change is applied only if it is newer (by position) than what the
//!   row, or the row's tombstone, holds (`apply.rs`).
//!
//! # Data flow
//! The sink is a [`Stage`] of the connector runtime, which consumes,
//! batches, decodes, retries and dead-letters. The sink says where offsets
//! are stored ([`Stage::assigned`]), checks each decoded change
//! ([`Stage::prepare`]), and writes a batch in one transaction (`apply.rs`);
//! `ddl.rs` creates or evolves target tables (and holds the type mapping),
//! `values.rs` turns Avro values into MySQL values.
//!
//! # Errors
//! By the one MySQL classification (`syncline_core::error::mysql`): a
//! deadlock, a lock wait timeout or a lost connection is retried with
//! backoff; a value the database refuses (too long, out of range, NaN, a
//! date outside 1-9999, invalid JSON, a constraint) goes to
//! `dead_letter_topic` with the reason, and the rest of its batch lands (the
//! runtime splits a refused batch to find it); what an operator must fix
//! (credentials, privileges, a missing table without `create_tables`) stops
//! the sink with a message naming it.

mod apply;
mod config;
mod ddl;
mod values;

pub use config::MysqlSinkConfig;

use crate::table::{Change, Router};
use apply::Writer;
use config::Settings;
use std::collections::HashMap;
use syncline_core::codec::Decoded;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};
use syncline_runtime::consume::ConsumeSettings;
use syncline_runtime::{Commit, OffsetsHome, Record, Stage, TopicPartition};

/// ``na`me`` -> `` `na``me` ``.
pub(crate) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A built sink, ready to run.
pub struct MysqlSink {
    settings: Settings,
    ctx: ComponentContext,
}

impl MysqlSink {
    /// Connect once and create the sink's own tables.
    async fn new(settings: Settings, ctx: ComponentContext) -> Result<MysqlSink> {
        let fail = |e: Error| {
            Error::new(
                e.kind(),
                format!(
                    "mysql sink `{}`: cannot reach the target database",
                    ctx.component
                ),
            )
            .with_source(e)
        };
        let mut conn = apply::connect(&settings.mysql).await.map_err(fail)?;
        ddl::ensure_bookkeeping(&mut conn).await.map_err(fail)?;
        let _ = conn.disconnect().await;
        Ok(MysqlSink { settings, ctx })
    }

    /// Consume until `shutdown`, or until an error that retrying cannot fix.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let consume = ConsumeSettings {
            kind: "mysql",
            group_id: s.group_id.clone(),
            topics: s.topics.clone(),
            batch: s.batch.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
        };
        let stage = SinkStage {
            router: Router::new("mysql", &self.ctx.component, &s.tables, s.on_truncate),
            settings: self.settings.clone(),
            writer: None,
        };
        crate::run_stage(&self.ctx, consume, stage, shutdown).await
    }
}

/// The sink's part of the runtime contract.
struct SinkStage {
    settings: Settings,
    router: Router,
    /// The connection and what it knows (its staging tables go with it);
    /// dropped after an error and made again on the next call.
    writer: Option<Writer>,
}

impl SinkStage {
    async fn writer(&mut self) -> Result<&mut Writer> {
        if self.writer.is_none() {
            let s = &self.settings;
            let conn = apply::connect(&s.mysql).await?;
            self.writer = Some(Writer::new(
                conn,
                s.group_id.clone(),
                ddl::Evolution {
                    create: s.create_tables,
                    on_type_change: s.on_type_change,
                    on_dropped_column: s.on_dropped_column,
                },
            ));
        }
        Ok(self.writer.as_mut().expect("writer just set"))
    }
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
        let topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
        let group = self.settings.group_id.clone();
        let conn = self.writer().await?.connection();
        let stored = apply::read_offsets(conn, &group, &topics).await;
        if stored.is_err() {
            self.writer = None;
        }
        stored
    }

    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Change>> {
        self.router.prepare(record, decoded)
    }

    async fn write(&mut self, items: &[Change], commit: &Commit<'_>) -> Result<usize> {
        let written = self.writer().await?.write_batch(items, commit.next()).await;
        match written {
            Ok(()) => Ok(items.len()),
            Err(e) => {
                // A fresh connection (and staging tables) for the retry.
                if let Some(w) = self.writer.take() {
                    let _ = w.into_connection().disconnect().await;
                }
                Err(e)
            }
        }
    }
}
