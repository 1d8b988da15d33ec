//! The registry's state as a replicated log of commands in one Kafka topic.
//!
//! # Design
//!
//! - **The topic is the log.** Every change (register, delete, compatibility
//!   level) is a [`Command`] written as one record to partition 0 of the
//!   topic (default `_schemas`, created compacted with one partition; a topic
//!   with more partitions is refused because the log needs one order).
//! - **Every instance applies the whole log, in order.** Each instance
//!   consumes the topic from the beginning, forever, and [`State::apply`]s
//!   each command. `State` is deterministic, so ids and versions are assigned
//!   *at apply time* and every instance computes the same ones, including the
//!   compatibility check: of two concurrent conflicting registrations, the one
//!   later in the log is rejected, identically on every instance.
//! - **A write is answered from its own apply.** The instance that receives a
//!   write produces the command under a fresh unique key (a UUID), waits until
//!   its own consumer has applied that record, and answers with the outcome
//!   of that apply. Unique keys mean compaction never drops a command, so
//!   replaying the log always rebuilds the same state (hard deletes therefore
//!   hide a schema's text from the API but not from the topic).
//! - **Reads come from memory.** At start the instance catches up to the end
//!   of the topic before it serves HTTP. After that, reads answer from the
//!   in-memory state; a read that finds nothing first catches up to the
//!   topic's current end and asks again, so a consumer that meets an id
//!   written through another instance a moment ago still resolves it.
//!   Other reads may lag another instance's writes by the consumer's delay.
//! - **The log has no holes.** Catching up waits until the applied offset
//!   reaches the topic's end offset. Offsets are dense because every key is
//!   unique (compaction removes nothing) and no transaction writes here; a
//!   topic with holes at its end would make start-up time out, loudly.
//! - **Re-registering a live schema writes nothing**: the answer cannot
//!   change by applying it, so it comes from memory (clients register the
//!   same schema on every start).
//!
//! Guarantees: a write is acknowledged only after it is in the log (acks=all,
//! idempotent producer) and applied, so a restart, `kill -9` included, loses
//! no acknowledged write. A write whose answer was lost (timeout) may still
//! be applied; retrying it is safe because registering is idempotent.
//! Records this version cannot decode are skipped with an error log; all
//! instances must run the same version to stay in agreement.

use crate::state::{Applied, Command, Rejection, State};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use syncline_core::error::{Context, Error, ErrorKind, Result};
use syncline_core::kafka::KafkaConfig;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How long a write waits for its record to be written and applied.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read that missed waits to catch up with the log.
const READ_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// The format of the records this version writes and reads.
const RECORD_FORMAT: u32 = 1;
/// The log is this single partition.
const PARTITION: i32 = 0;

/// One log record's value. The key is the command's unique id.
#[derive(Serialize, Deserialize)]
struct Record {
    format: u32,
    command: Command,
}

/// Why a write got no outcome from the state machine.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Applied, and refused by the state machine.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Not written to the log.
    #[error("cannot write to the schema log: {0}")]
    Store(Error),
    /// Written (maybe), but not applied within the timeout.
    #[error("the schema log did not apply the write within {0:?}")]
    TimedOut(Duration),
}

type Outcome = std::result::Result<Applied, Rejection>;

/// The log, its applier, and the state it builds.
pub struct Store {
    topic: String,
    state: RwLock<State>,
    producer: FutureProducer,
    consumer: Arc<StreamConsumer>,
    /// The next offset to apply: everything before it is in `state`.
    next_offset: watch::Sender<i64>,
    /// Writers waiting for their command's outcome, by record key.
    waiters: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
}

impl Store {
    /// Make sure the topic exists with one partition, and set up the clients.
    /// Nothing is read until [`Store::run`].
    pub async fn open(kafka: &KafkaConfig, topic: &str) -> Result<Arc<Self>> {
        kafka.ensure_topic(topic, 1, true).await?;
        let mut config = kafka.reader_config();
        // Catching up compares the applied offset with the end offset, so no
        // end-of-partition events; a short fetch wait keeps writes fast.
        config
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100");
        let consumer: StreamConsumer = config
            .create()
            .context(ErrorKind::Config, || "cannot create Kafka consumer".into())?;
        let consumer = Arc::new(consumer);
        let partitions = {
            let (consumer, topic) = (consumer.clone(), topic.to_string());
            tokio::task::spawn_blocking(move || {
                let md = consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(30))
                    .context(ErrorKind::Transient, || {
                        format!("cannot read metadata of `{topic}`")
                    })?;
                Ok::<_, Error>(
                    md.topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .map_or(0, |t| t.partitions().len()),
                )
            })
            .await
            .map_err(|e| Error::internal("metadata task failed").with_source(e))??
        };
        if partitions != 1 {
            return Err(Error::config(format!(
                "topic `{topic}` has {partitions} partitions; the schema log needs exactly 1 (one order for all commands)"
            )));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, PARTITION, Offset::Beginning)
            .map_err(|e| Error::internal("bad partition list").with_source(e))?;
        consumer
            .assign(&tpl)
            .context(ErrorKind::Transient, || format!("cannot assign `{topic}`"))?;
        Ok(Arc::new(Self {
            topic: topic.to_string(),
            state: RwLock::new(State::default()),
            producer: kafka.producer()?,
            consumer,
            next_offset: watch::Sender::new(0),
            waiters: Mutex::new(HashMap::new()),
        }))
    }

    /// Apply the log as it grows, until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            match received {
                Ok(m) => self.apply_record(m.offset(), m.key(), m.payload()),
                Err(e) => {
                    tracing::warn!(error = %e, topic = %self.topic, "cannot read the schema log; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "cannot flush the schema log producer");
        }
    }

    fn apply_record(&self, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let key = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or_default();
        match payload.map(serde_json::from_slice::<Record>) {
            Some(Ok(record)) if record.format == RECORD_FORMAT => {
                let outcome = self
                    .state
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .apply(&record.command);
                let command = &record.command;
                let waiter = self
                    .waiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(key);
                // Info for the writes this instance accepted; replay and
                // other instances' writes only at debug.
                match (&outcome, waiter.is_some()) {
                    (Ok(applied), true) => {
                        tracing::info!(
                            offset,
                            op = command.op(),
                            subject = command.subject(),
                            ?applied,
                            "applied"
                        )
                    }
                    (Ok(applied), false) => {
                        tracing::debug!(
                            offset,
                            op = command.op(),
                            subject = command.subject(),
                            ?applied,
                            "applied"
                        )
                    }
                    (Err(rejection), _) => {
                        tracing::debug!(offset, op = command.op(), %rejection, "rejected")
                    }
                }
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
            Some(Ok(record)) => {
                tracing::error!(
                    offset,
                    format = record.format,
                    "skipping a schema log record of an unknown format"
                )
            }
            Some(Err(e)) => {
                tracing::error!(offset, error = %e, "skipping an undecodable schema log record")
            }
            None => tracing::debug!(offset, "skipping an empty schema log record"),
        }
        self.next_offset.send_replace(offset + 1);
    }

    /// Wait until everything in the log right now is applied.
    pub async fn catch_up(&self, timeout: Duration) -> Result<()> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let (_, end) = tokio::task::spawn_blocking(move || {
            consumer
                .fetch_watermarks(&topic, PARTITION, timeout)
                .context(ErrorKind::Transient, || {
                    format!("cannot read the end offset of `{topic}`")
                })
        })
        .await
        .map_err(|e| Error::internal("watermark task failed").with_source(e))??;
        let mut next = self.next_offset.subscribe();
        tokio::time::timeout(timeout, next.wait_for(|&n| n >= end))
            .await
            .map_err(|_| {
                Error::transient(format!(
                    "did not apply `{}` up to offset {end} within {timeout:?}",
                    self.topic
                ))
            })?
            .map_err(|e| Error::internal("schema log applier stopped").with_source(e))?;
        Ok(())
    }

    /// Answer from the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Answer from the applied state; when that says "not found", catch up
    /// with the log (another instance may have just written it) and ask again.
    pub async fn read_fresh<T>(
        &self,
        f: impl Fn(&State) -> std::result::Result<T, Rejection>,
    ) -> std::result::Result<T, Rejection> {
        match self.read(&f) {
            Err(r) if r.is_not_found() => {
                if let Err(e) = self.catch_up(READ_CATCH_UP_TIMEOUT).await {
                    tracing::warn!(error = %e, "cannot catch up with the schema log; answering from memory");
                    return Err(r);
                }
                self.read(&f)
            }
            answer => answer,
        }
    }

    /// Write `command` to the log and return the outcome of applying it.
    pub async fn write(&self, command: Command) -> std::result::Result<Applied, WriteError> {
        let key = uuid::Uuid::new_v4().to_string();
        let payload = serde_json::to_vec(&Record {
            format: RECORD_FORMAT,
            command,
        })
        .map_err(|e| {
            WriteError::Store(Error::internal("cannot encode a command").with_source(e))
        })?;
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::register(self, &key, tx);
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            let record = FutureRecord::to(&self.topic)
                .partition(PARTITION)
                .key(&key)
                .payload(&payload);
            let delivery = self
                .producer
                .send(record, WRITE_TIMEOUT)
                .await
                .map_err(|(e, _)| {
                    WriteError::Store(
                        Error::transient(format!("cannot write to `{}`", self.topic))
                            .with_source(e),
                    )
                })?;
            tracing::debug!(offset = delivery.offset, %key, "command written");
            rx.await
                .map_err(|_| WriteError::Store(Error::internal("the schema log applier stopped")))
        })
        .await;
        drop(waiter);
        match written {
            Ok(Ok(outcome)) => outcome.map_err(WriteError::Rejected),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WriteError::TimedOut(WRITE_TIMEOUT)),
        }
    }
}

/// A writer's place in [`Store::waiters`], removed when the writer gives up
/// (timeout, client gone) so the map never grows.
struct Waiter<'a> {
    store: &'a Store,
    key: &'a str,
}

impl<'a> Waiter<'a> {
    fn register(store: &'a Store, key: &'a str, tx: oneshot::Sender<Outcome>) -> Self {
        store
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_string(), tx);
        Self { store, key }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.store
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.key);
    }
}
