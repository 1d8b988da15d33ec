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
//!   the rows, and consumption always resumes from them (`offsets.rs`,
//!   `consumer.rs`);
//! - a change is applied only if it is newer (by position) than what the row,
//!   or the row's tombstone, holds (`apply.rs`).
//!
//! # Data flow
//! `consumer.rs` polls records on a dedicated thread into a batch (at most
//! `batch_size` records or `batch_timeout_ms`), the batch is decoded with the
//! registry codec, checked, and written by `apply.rs` in one transaction;
//! `ddl.rs` creates or evolves target tables from the registered schema and
//! `values.rs` turns Avro values into Postgres text input.
//!
//! # Errors
//! A record that cannot be decoded or is not a change record (a poison
//! record) goes to `dead_letter_topic` with the reason, when that is set;
//! otherwise it stops the sink with an error naming its topic, partition and
//! offset. A record the database refuses stops the sink. Nothing is skipped
//! silently.
//! Transient errors (database or registry briefly away) are retried with
//! backoff; the batch is rebuilt from the stored offsets if the group moved
//! on meanwhile.

mod apply;
mod config;
mod consumer;
mod ddl;
mod offsets;
mod truncate;
mod values;

pub use config::{OnDroppedColumn, OnTruncate, OnTypeChange, PostgresSinkConfig};

use apply::{Change, Origin, Writer};
use config::Settings;
use consumer::SinkContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use syncline_core::codec::Decoder;
use syncline_core::error::{Context, ErrorKind};
use syncline_core::kafka::DeadLetter;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};
use tokio::runtime::Handle;

/// Longest wait between two checks of the shutdown signal while polling.
const POLL_SLICE: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
    ///
    /// Needs a multi-thread runtime: the sink's own thread blocks on it
    /// (`Handle::block_on`) for database and registry calls.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let handle = Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let name = format!("sink-{}", self.ctx.component);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _ = tx.send(self.run_blocking(handle, shutdown));
            })
            .context(ErrorKind::Internal, || {
                "cannot start the postgres sink thread".into()
            })?;
        rx.await
            .unwrap_or_else(|_| Err(Error::internal("the postgres sink thread panicked")))
    }

    fn run_blocking(self, handle: Handle, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let context = SinkContext {
            handle: handle.clone(),
            pg: s.pg.clone(),
            schema: s.schema.clone(),
            group: s.group_id.clone(),
            topics: s.topics.clone(),
            shutdown: shutdown.clone(),
            client: Mutex::new(None),
            news: Mutex::new(Default::default()),
        };
        let consumer: BaseConsumer<SinkContext> =
            self.ctx.kafka.subscribed(&s.group_id, &s.topics, context)?;
        let decoder = self.ctx.decoder()?;
        let dead_letter = match &s.dead_letter_topic {
            None => None,
            Some(topic) => {
                handle.block_on(self.ctx.kafka.ensure_topic(
                    topic,
                    self.ctx.kafka.partitions,
                    false,
                ))?;
                Some((self.ctx.kafka.producer()?, topic.clone()))
            }
        };
        let tables: HashMap<String, Arc<str>> = s
            .tables
            .iter()
            .map(|(topic, table)| (topic.clone(), Arc::from(table.as_str())))
            .collect();
        let mut lp = Loop {
            settings: s,
            component: &self.ctx.component,
            consumer: &consumer,
            decoder,
            tables,
            writer: None,
            dead_letter,
            handle,
            shutdown: &shutdown,
        };
        tracing::info!(sink = %self.ctx.component, group = %s.group_id, topics = ?s.topics, "postgres sink started");
        let result = lp.run();
        match &result {
            Ok(()) => tracing::info!(sink = %self.ctx.component, "postgres sink stopped"),
            Err(e) => {
                tracing::error!(sink = %self.ctx.component, error = %e, "postgres sink failed")
            }
        }
        result
    }
}

/// A record as polled, owned so that it outlives the poll.
struct Raw {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Columns named by the `syncline.unchanged` header.
    unchanged: Vec<String>,
}

/// The columns a record's [`syncline_core::change::UNCHANGED_HEADER`] names.
fn unchanged_columns(m: &impl Message) -> Vec<String> {
    use rdkafka::message::Headers;
    let Some(headers) = m.headers() else {
        return Vec::new();
    };
    headers
        .iter()
        .filter(|h| h.key == syncline_core::change::UNCHANGED_HEADER)
        .filter_map(|h| h.value)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_string))
        .collect()
}

struct Loop<'a> {
    settings: &'a Settings,
    component: &'a str,
    consumer: &'a BaseConsumer<SinkContext>,
    decoder: Decoder,
    tables: HashMap<String, Arc<str>>,
    writer: Option<Writer>,
    /// Producer and topic for poison records, when `dead_letter_topic` is set.
    dead_letter: Option<(FutureProducer, String)>,
    handle: Handle,
    shutdown: &'a Shutdown,
}

/// Drop the polled but unwritten records of partitions that were revoked or
/// re-assigned: the consumer restarts those at the stored offsets, so keeping
/// them would write them twice (harmless) or out of order with the re-read.
fn discard_reset(pending: &mut Vec<Raw>, reset: &HashSet<offsets::TopicPartition>) {
    if !reset.is_empty() {
        pending.retain(|r| !reset.contains(&(r.topic.to_string(), r.partition)));
    }
}

impl Loop<'_> {
    fn run(&mut self) -> Result<()> {
        let mut pending: Vec<Raw> = Vec::with_capacity(self.settings.batch_size);
        let mut batch_started = Instant::now();
        while !self.shutdown.is_cancelled() {
            let wait = if pending.is_empty() {
                POLL_SLICE
            } else {
                (batch_started + self.settings.batch_timeout)
                    .saturating_duration_since(Instant::now())
                    .min(POLL_SLICE)
            };
            let polled = self.consumer.poll(wait);
            // The rebalance callback runs inside poll, before the record it
            // returns (which already belongs to the new assignment).
            {
                let mut news = self
                    .consumer
                    .context()
                    .news
                    .lock()
                    .expect("rebalance news poisoned");
                if let Some(e) = news.error.take() {
                    return Err(e);
                }
                discard_reset(&mut pending, &std::mem::take(&mut news.reset));
            }
            match polled {
                None => {}
                Some(Ok(m)) => {
                    if pending.is_empty() {
                        batch_started = Instant::now();
                    }
                    pending.push(Raw {
                        topic: Arc::from(m.topic()),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        unchanged: unchanged_columns(&m),
                    });
                }
                Some(Err(e)) => {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::Fatal)
                    ) {
                        return Err(Error::transient("the Kafka consumer failed").with_source(e));
                    }
                    tracing::warn!(sink = %self.component, error = %e, "Kafka consumer error");
                }
            }
            let full = pending.len() >= self.settings.batch_size;
            let due = !pending.is_empty() && batch_started.elapsed() >= self.settings.batch_timeout;
            if full || due {
                self.flush(&pending)?;
                pending.clear();
            }
        }
        Ok(())
    }

    /// Decode and write `batch` in one transaction, retrying transient
    /// failures; then tell Kafka (best-effort) how far we are.
    fn flush(&mut self, batch: &[Raw]) -> Result<()> {
        let started = Instant::now();
        let changes = self.decode(batch)?;
        let next = offsets::next_offsets(batch.iter().map(|r| (&*r.topic, r.partition, r.offset)));
        let mut delay = Duration::from_millis(100);
        loop {
            let handle = self.handle.clone();
            let attempt = handle.block_on(async {
                if self.writer.is_none() {
                    let client = connect(&self.settings.pg).await?;
                    let s = self.settings;
                    self.writer = Some(Writer::new(
                        client,
                        s.schema.clone(),
                        s.group_id.clone(),
                        s.evolution,
                    ));
                }
                self.writer
                    .as_mut()
                    .expect("writer just set")
                    .write_batch(&changes, &next)
                    .await
            });
            match attempt {
                Ok(()) => break,
                Err(e) if e.is_transient() && !self.shutdown.is_cancelled() => {
                    // The connection's staging tables and checks go with it.
                    self.writer = None;
                    tracing::warn!(sink = %self.component, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot write a batch; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    self.writer = None;
                    return Err(e);
                }
            }
        }
        tracing::debug!(sink = %self.component, records = batch.len(), elapsed_ms = started.elapsed().as_millis() as u64,
            "batch committed");
        self.commit_to_kafka(&next);
        Ok(())
    }

    /// Send a poison record, unchanged, to the dead-letter topic with the
    /// reason and where it came from; wait until the broker has it, so that
    /// its offset is stored (with the batch) only once it is safe there.
    fn dead_letter(&self, r: &Raw, reason: &Error) -> Result<()> {
        let (producer, topic) = self.dead_letter.as_ref().expect("checked by the caller");
        let reason_text = reason.to_string();
        let record = DeadLetter {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            reason: &reason_text,
        }
        .record(topic);
        self.handle
            .block_on(producer.send(record, Duration::from_secs(60)))
            .map_err(|(e, _)| {
                Error::transient(format!("cannot dead-letter the record to `{topic}`"))
                    .with_source(e)
            })?;
        tracing::warn!(sink = %self.component, dead_letter_topic = %topic, reason = %reason, "poison record dead-lettered");
        Ok(())
    }

    fn decode(&self, batch: &[Raw]) -> Result<Vec<Change>> {
        let mut changes = Vec::with_capacity(batch.len());
        for r in batch {
            let origin = Origin {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
            };
            let mut delay = Duration::from_millis(100);
            let decoded = loop {
                match self
                    .handle
                    .block_on(self.decoder.decode(r.key.as_deref(), r.value.as_deref()))
                {
                    Ok(d) => break Ok(d),
                    Err(e) if e.is_transient() && !self.shutdown.is_cancelled() => {
                        tracing::warn!(sink = %self.component, error = %e, "schema registry unavailable; retrying");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(MAX_BACKOFF);
                    }
                    Err(e) => {
                        break Err(Error::new(
                            e.kind(),
                            format!("cannot decode the record at {origin}"),
                        )
                        .with_source(e))
                    }
                }
            };
            // Every subscribed topic has a table (Settings::tables).
            let table = self.tables[&*r.topic].clone();
            let change = decoded.and_then(|d| {
                Change::new(table, d, origin.clone())
                    .map(|mut c| {
                        c.unchanged = r.unchanged.clone();
                        c
                    })
                    .map_err(|reason| {
                        Error::data(format!("cannot apply the record at {origin}: {reason}"))
                    })
            });
            match change {
                Ok(c) if c.truncate && self.settings.on_truncate == OnTruncate::Ignore => {
                    tracing::info!(sink = %self.component, at = %c.origin, "postgres sink: TRUNCATE ignored (on_truncate: ignore)");
                }
                Ok(c) => changes.push(c),
                Err(e) if e.kind() == ErrorKind::Data && self.dead_letter.is_some() => {
                    self.dead_letter(r, &e)?
                }
                Err(e) => return Err(e),
            }
        }
        Ok(changes)
    }

    /// Only for lag tools: the database holds the offsets that count.
    fn commit_to_kafka(&self, next: &BTreeMap<offsets::TopicPartition, i64>) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(sink = %self.component, error = %e, "best-effort Kafka offset commit failed");
        }
    }
}

/// Connect, with the connection task on the current runtime.
async fn connect(pg: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| pg_error(e, "cannot connect to Postgres"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

pub(crate) use syncline_core::error::postgres::pg_error;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(topic: &str, partition: i32, offset: i64) -> Raw {
        Raw {
            topic: Arc::from(topic),
            partition,
            offset,
            key: None,
            value: None,
            unchanged: Vec::new(),
        }
    }

    #[test]
    fn a_rebalance_drops_only_the_reset_partitions_records() {
        let mut pending = vec![
            raw("a", 0, 1),
            raw("a", 1, 1),
            raw("b", 0, 1),
            raw("a", 0, 2),
        ];
        discard_reset(&mut pending, &HashSet::from([("a".to_string(), 0)]));
        let left: Vec<_> = pending
            .iter()
            .map(|r| (r.topic.to_string(), r.partition, r.offset))
            .collect();
        assert_eq!(left, [("a".to_string(), 1, 1), ("b".to_string(), 0, 1)]);
    }
}
