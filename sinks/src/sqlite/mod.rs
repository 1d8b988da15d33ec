//! The `sqlite` sink: changes from Kafka topics upserted into tables of one
//! SQLite file, exactly once. For edge and embedded targets: the same
//! guarantee as the `postgres` sink, with no server.
//!
//! # What it guarantees
//! Every change record's effect lands in its target row exactly once, even
//! across crashes (kill -9 at any point), rebalances, several instances in
//! one consumer group (on one machine, taking turns at the file's write
//! lock), and sources that replay changes they had already produced. It
//! needs nothing from the broker beyond consumer groups. How (the rules are
//! `crate::table`'s):
//! - the consumed offsets are written in the same SQLite transaction as the
//!   rows, in the file's `syncline_offsets` table, and every assigned
//!   partition resumes from them ([`OffsetsHome::Stage`]);
//! - a change is applied only if it is newer (by position) than what the
//!   row, or the row's tombstone, holds (`apply.rs`).
//!
//! With `synchronous: normal` (the default) a power loss may roll back the
//! last committed batches, rows and offsets together: they are read again
//! from Kafka, and the guarantee holds while Kafka keeps them.
//!
//! # Data flow
//! The sink is a [`Stage`] of the connector runtime, which consumes,
//! batches, decodes, retries and dead-letters. The sink says where offsets
//! are stored ([`Stage::assigned`]), checks each decoded change
//! ([`Stage::prepare`]), and writes a batch in one transaction (`apply.rs`);
//! `ddl.rs` creates or evolves target tables (and holds the type mapping),
//! `values.rs` turns Avro values into SQLite values. SQLite calls block:
//! they run on the runtime's writer and consumer threads, never on an
//! async worker.
//!
//! # Errors
//! By the one SQLite classification (`syncline_core::error::sqlite`): a
//! locked file is waited out (`busy_timeout_ms`, then retried with
//! backoff); a record the database refuses (a constraint of a table you
//! made, a value over SQLite's size limit) or that does not fit its column
//! goes to `dead_letter_topic` with the reason, and the rest of its batch
//! lands; a file that cannot be opened or written stops the sink with a
//! message naming it.

mod apply;
mod config;
mod ddl;
mod values;

pub use config::{SqliteSinkConfig, Synchronous};

use crate::table::{Change, Router};
use apply::Writer;
use config::Settings;
use std::collections::HashMap;
use syncline_core::codec::Decoded;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};
use syncline_runtime::consume::ConsumeSettings;
use syncline_runtime::{Commit, OffsetsHome, Record, Stage, TopicPartition};

pub(crate) use syncline_core::error::sqlite::sqlite_error;

/// `na"me` -> `"na""me"`.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A built sink, ready to run.
pub struct SqliteSink {
    settings: Settings,
    ctx: ComponentContext,
}

impl SqliteSink {
    /// Check that the file can be opened and holds the sink's tables.
    fn new(settings: Settings, ctx: ComponentContext) -> Result<SqliteSink> {
        apply::open(&settings.path, settings.busy_timeout, settings.synchronous).map_err(|e| {
            Error::new(e.kind(), format!("sqlite sink `{}`: {e}", ctx.component)).with_source(e)
        })?;
        Ok(SqliteSink { settings, ctx })
    }

    /// Consume until `shutdown`, or until an error that retrying cannot fix.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let consume = ConsumeSettings {
            kind: "sqlite",
            group_id: s.group_id.clone(),
            topics: s.topics.clone(),
            batch: s.batch.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
        };
        let stage = SinkStage {
            router: Router::new("sqlite", &self.ctx.component, &s.tables, s.on_truncate),
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
    /// The connection and what it knows; dropped after an error and opened
    /// again on the next call.
    writer: Option<Writer>,
}

impl SinkStage {
    fn writer(&mut self) -> Result<&mut Writer> {
        if self.writer.is_none() {
            let s = &self.settings;
            let conn = apply::open(&s.path, s.busy_timeout, s.synchronous)?;
            self.writer = Some(Writer::new(
                conn,
                s.group_id.clone(),
                s.create_tables,
                s.on_dropped_column,
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
        let stored = apply::read_offsets(self.writer()?.connection(), &group, &topics);
        if stored.is_err() {
            self.writer = None;
        }
        stored
    }

    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Change>> {
        self.router.prepare(record, decoded)
    }

    async fn write(&mut self, items: &[Change], commit: &Commit<'_>) -> Result<usize> {
        let written = self.writer()?.write_batch(items, commit.next());
        match written {
            Ok(()) => Ok(items.len()),
            Err(e) => {
                if e.kind() != syncline_core::ErrorKind::Data {
                    // A fresh connection for the retry.
                    self.writer = None;
                }
                Err(e)
            }
        }
    }
}
