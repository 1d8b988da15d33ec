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
//!   of that apply.
//! - **Checkpoints keep the log short.** Every [`CHECKPOINT_EVERY`] commands,
//!   the instance whose write reached the count writes the state as of that
//!   command's offset W (a [`Snapshot`], in chunks keyed
//!   `checkpoint/<W>/<i>`, then the marker `checkpoint/<W>` with the chunks'
//!   SHA-256), and only then tombstones every command at or below W and the
//!   records of older checkpoints; compaction removes them. A reader that
//!   meets a complete marker newer than the checkpoint its state rests on
//!   takes the checkpoint's state and applies again the commands it read
//!   after W: so whatever compaction removed, the state equals that of the
//!   whole history, and a start reads the live state plus the commands since
//!   the last checkpoint, not the history. Keys carry W, so two instances'
//!   checkpoints never overwrite each other; a marker is written only after
//!   its chunks, and tombstones only after the marker, so the newest
//!   complete checkpoint is always readable.
//! - **Reads come from memory.** At start the instance catches up to the end
//!   of the topic before it serves HTTP. After that, reads answer from the
//!   in-memory state; a read that finds nothing first catches up to the
//!   topic's current end and asks again, so a consumer that meets an id
//!   written through another instance a moment ago still resolves it.
//!   Other reads may lag another instance's writes by the consumer's delay.
//! - **Catching up** waits until the applied offset reaches the topic's end
//!   offset. Compaction leaves holes in the offsets but never removes the
//!   last record, and no transaction writes here, so the end is always read.
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

use crate::state::{Applied, Command, Rejection, Snapshot, State};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
/// Commands between two checkpoints.
pub const CHECKPOINT_EVERY: usize = 500;
/// Largest piece of a checkpoint in one record (the broker takes 1 MB by default).
const CHUNK_BYTES: usize = 512 * 1024;
/// Keys of checkpoint records start with this; commands' keys are UUIDs.
const CHECKPOINT_PREFIX: &str = "checkpoint/";

/// A checkpoint record's value (see the module docs).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CheckpointRecord {
    /// Piece `index` of `count` of the JSON of the [`Snapshot`] as of `as_of`.
    Chunk {
        as_of: i64,
        index: usize,
        count: usize,
        data: String,
    },
    /// Every chunk is written; `sha256` is of their concatenation.
    Done {
        as_of: i64,
        count: usize,
        sha256: String,
    },
}

fn chunk_key(as_of: i64, index: usize) -> String {
    format!("{CHECKPOINT_PREFIX}{as_of:020}/{index}")
}

fn done_key(as_of: i64) -> String {
    format!("{CHECKPOINT_PREFIX}{as_of:020}")
}

/// The `as_of` a checkpoint record's key names.
fn as_of_of(key: &str) -> Option<i64> {
    key.strip_prefix(CHECKPOINT_PREFIX)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    if out.is_empty() {
        out.push("");
    }
    out
}

/// What the applier keeps beside the state, for checkpoints.
#[derive(Default)]
struct Book {
    /// The `as_of` of the checkpoint the state rests on (-1: none).
    adopted: i64,
    /// Commands applied after `adopted`, with their offsets: applied again
    /// on a newer checkpoint, and counted towards the next one.
    since: Vec<(i64, Command)>,
    /// Command records not tombstoned yet: key -> offset.
    live_commands: HashMap<String, i64>,
    /// Checkpoint records present, by `as_of`.
    checkpoint_keys: BTreeMap<i64, Vec<String>>,
    /// Chunks of checkpoints newer than `adopted`, by `as_of` and index.
    chunks: BTreeMap<i64, BTreeMap<usize, String>>,
    /// A checkpoint is being written by this instance.
    writing: bool,
    /// The `as_of` of the last checkpoint this instance started.
    started: i64,
    /// Records read and commands applied since the process started.
    records_read: u64,
    commands_applied: u64,
}

impl Book {
    /// Enough commands since the newest checkpoint this instance adopted or
    /// started, and none being written.
    fn due(&self) -> bool {
        let after = self.adopted.max(self.started);
        let newer = self.since.len() - self.since.partition_point(|(o, _)| *o <= after);
        newer >= CHECKPOINT_EVERY && !self.writing
    }
}

/// A checkpoint to write: the state as of `as_of`, and what it makes obsolete.
struct Job {
    as_of: i64,
    snapshot: Snapshot,
    commands: Vec<String>,
    checkpoints: Vec<String>,
}

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
    book: Mutex<Book>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Store {
    /// Make sure the topic exists with one partition, and set up the clients.
    /// Nothing is read until [`Store::run`].
    pub async fn open(kafka: &KafkaConfig, topic: &str) -> Result<Arc<Self>> {
        // A new log rolls segments hourly so that compaction, which skips
        // the active segment, removes what checkpoints made obsolete.
        let mut log_kafka = kafka.clone();
        for (k, v) in [
            ("segment.ms", "3600000"),
            ("min.cleanable.dirty.ratio", "0.1"),
        ] {
            log_kafka
                .topic_properties
                .entry(k.to_string())
                .or_insert_with(|| v.to_string());
        }
        log_kafka.ensure_topic(topic, 1, true).await?;
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
        let (jobs, job_rx) = tokio::sync::mpsc::unbounded_channel();
        let store = Arc::new(Self {
            topic: topic.to_string(),
            state: RwLock::new(State::default()),
            producer: kafka.producer()?,
            consumer,
            next_offset: watch::Sender::new(0),
            waiters: Mutex::new(HashMap::new()),
            book: Mutex::new(Book {
                adopted: -1,
                started: -1,
                ..Book::default()
            }),
            jobs,
        });
        tokio::spawn(Self::checkpointer(Arc::downgrade(&store), job_rx));
        Ok(store)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write a checkpoint as of the last applied command if enough commands
    /// came since the last one (at start, for a log that never had one).
    pub fn checkpoint_if_due(&self) {
        let due = {
            let book = self.book();
            book.due()
                .then(|| book.since.last().map_or(-1, |(o, _)| *o))
        };
        if let Some(as_of) = due {
            self.start_checkpoint(as_of);
        }
    }

    /// Hand a checkpoint as of `as_of` (the last applied command: the state
    /// now is the state as of it) to the checkpointer.
    fn start_checkpoint(&self, as_of: i64) {
        let mut book = self.book();
        if book.writing {
            return;
        }
        // (book, then state: the order the applier takes them in)
        let snapshot = self.read(State::snapshot);
        book.writing = true;
        book.started = as_of;
        let commands = book
            .live_commands
            .iter()
            .filter(|(_, &o)| o <= as_of)
            .map(|(k, _)| k.clone())
            .collect();
        let checkpoints = book
            .checkpoint_keys
            .range(..as_of)
            .flat_map(|(_, keys)| keys.iter().cloned())
            .collect();
        let _ = self.jobs.send(Job {
            as_of,
            snapshot,
            commands,
            checkpoints,
        });
    }

    /// Write each checkpoint handed over: chunks, then the marker, then the
    /// tombstones of what it makes obsolete, each step acknowledged first.
    async fn checkpointer(
        store: std::sync::Weak<Self>,
        mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    ) {
        while let Some(job) = jobs.recv().await {
            let Some(store) = store.upgrade() else { return };
            let as_of = job.as_of;
            match store.write_checkpoint(job).await {
                Ok((chunks, bytes, removed)) => tracing::info!(
                    as_of,
                    chunks,
                    bytes,
                    obsolete_records = removed,
                    "schema log checkpoint written; compaction removes what it replaces"
                ),
                Err(e) => tracing::warn!(as_of, error = %e,
                    "cannot write a schema log checkpoint; the next one is tried after more commands"),
            }
            store.book().writing = false;
        }
    }

    async fn write_checkpoint(&self, job: Job) -> Result<(usize, usize, usize)> {
        let json = serde_json::to_string(&job.snapshot)
            .map_err(|e| Error::internal("cannot encode a checkpoint").with_source(e))?;
        let parts = pieces(&json, CHUNK_BYTES);
        let count = parts.len();
        let mut records = Vec::with_capacity(count + 1);
        for (index, data) in parts.into_iter().enumerate() {
            let value = CheckpointRecord::Chunk {
                as_of: job.as_of,
                index,
                count,
                data: data.to_string(),
            };
            records.push((chunk_key(job.as_of, index), Some(value)));
        }
        self.send_all(records).await?;
        let done = CheckpointRecord::Done {
            as_of: job.as_of,
            count,
            sha256: hex::encode(Sha256::digest(json.as_bytes())),
        };
        self.send_all(vec![(done_key(job.as_of), Some(done))])
            .await?;
        let obsolete: Vec<(String, Option<CheckpointRecord>)> = job
            .commands
            .into_iter()
            .chain(job.checkpoints)
            .map(|k| (k, None))
            .collect();
        let removed = obsolete.len();
        self.send_all(obsolete).await?;
        Ok((count, json.len(), removed))
    }

    /// Produce `records` (a `None` value: a tombstone) and wait for every
    /// acknowledgement.
    async fn send_all(&self, records: Vec<(String, Option<CheckpointRecord>)>) -> Result<()> {
        let payloads = records
            .iter()
            .map(|(_, v)| v.as_ref().map(serde_json::to_vec).transpose())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::internal("cannot encode a checkpoint").with_source(e))?;
        let mut deliveries = Vec::with_capacity(records.len());
        for ((key, _), payload) in records.iter().zip(&payloads) {
            let mut record = FutureRecord::to(&self.topic).partition(PARTITION).key(key);
            if let Some(p) = payload {
                record = record.payload(p);
            }
            deliveries.push(self.producer.send(record, WRITE_TIMEOUT));
        }
        for d in futures::future::join_all(deliveries).await {
            d.map_err(|(e, _)| {
                Error::transient(format!("cannot write a checkpoint to `{}`", self.topic))
                    .with_source(e)
            })?;
        }
        Ok(())
    }

    /// Records read and commands applied since start, and the checkpoint
    /// the state rests on (-1: none): what a start cost.
    pub fn startup_report(&self) -> (u64, u64, i64) {
        let book = self.book();
        (book.records_read, book.commands_applied, book.adopted)
    }

    /// A checkpoint record: a chunk is kept until its marker; a complete
    /// marker newer than the state's checkpoint replaces the state.
    fn apply_checkpoint_record(&self, offset: i64, key: &str, payload: Option<&[u8]>) {
        let Some(as_of) = as_of_of(key) else {
            tracing::error!(
                offset,
                key,
                "skipping a schema log record with a malformed checkpoint key"
            );
            return;
        };
        let mut book = self.book();
        let Some(payload) = payload else {
            if let Some(keys) = book.checkpoint_keys.get_mut(&as_of) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    book.checkpoint_keys.remove(&as_of);
                }
            }
            return;
        };
        book.checkpoint_keys
            .entry(as_of)
            .or_default()
            .push(key.to_string());
        match serde_json::from_slice::<CheckpointRecord>(payload) {
            Ok(CheckpointRecord::Chunk { index, data, .. }) => {
                if as_of > book.adopted {
                    book.chunks.entry(as_of).or_default().insert(index, data);
                }
            }
            Ok(CheckpointRecord::Done { count, sha256, .. }) => {
                if as_of <= book.adopted {
                    return;
                }
                let chunks = book.chunks.remove(&as_of).unwrap_or_default();
                let complete = (0..count).all(|i| chunks.contains_key(&i));
                let json: String = chunks.into_values().collect();
                if !complete || hex::encode(Sha256::digest(json.as_bytes())) != sha256 {
                    tracing::warn!(
                        offset,
                        as_of,
                        "skipping an incomplete schema log checkpoint"
                    );
                    return;
                }
                let rebuilt = serde_json::from_str::<Snapshot>(&json)
                    .map_err(|e| e.to_string())
                    .and_then(State::from_snapshot);
                let mut state = match rebuilt {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(offset, as_of, error = %e, "skipping a schema log checkpoint that does not load");
                        return;
                    }
                };
                book.since.retain(|(o, _)| *o > as_of);
                for (_, command) in &book.since {
                    let _ = state.apply(command);
                }
                *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
                book.adopted = as_of;
                book.chunks.retain(|&a, _| a > as_of);
                tracing::debug!(
                    offset,
                    as_of,
                    replayed = book.since.len(),
                    "schema log checkpoint taken"
                );
            }
            Err(e) => {
                tracing::error!(offset, error = %e, "skipping an undecodable schema log checkpoint record")
            }
        }
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
        self.book().records_read += 1;
        if key.starts_with(CHECKPOINT_PREFIX) {
            self.apply_checkpoint_record(offset, key, payload);
            self.next_offset.send_replace(offset + 1);
            return;
        }
        if payload.is_none() {
            // A command a checkpoint made obsolete.
            self.book().live_commands.remove(key);
            self.next_offset.send_replace(offset + 1);
            return;
        }
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
                let ours = waiter.is_some();
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
                let due = {
                    let mut book = self.book();
                    book.commands_applied += 1;
                    book.since.push((offset, record.command));
                    book.live_commands.insert(key.to_string(), offset);
                    book.due()
                };
                // The instance whose write reached the count writes it.
                if due && ours {
                    self.start_checkpoint(offset);
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
            None => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keys_carry_their_offset_and_sort_by_it() {
        assert_eq!(as_of_of(&chunk_key(42, 3)), Some(42));
        assert_eq!(as_of_of(&done_key(42)), Some(42));
        assert_eq!(as_of_of("checkpoint/x"), None);
        assert!(done_key(9) < done_key(10), "zero-padded");
    }

    #[test]
    fn pieces_cut_at_character_boundaries_and_join_back() {
        let text = "aé€𝄞".repeat(100);
        let parts = pieces(&text, 7);
        assert!(parts.iter().all(|p| p.len() <= 7 && !p.is_empty()));
        assert_eq!(parts.concat(), text);
        assert_eq!(pieces("", 7), [""], "an empty state is one empty chunk");
    }

    #[test]
    fn a_checkpoint_is_due_after_enough_commands_past_the_newest_known() {
        let command = Command::SetCompatibility {
            subject: None,
            level: None,
        };
        let mut book = Book {
            adopted: -1,
            started: -1,
            ..Book::default()
        };
        book.since = (0..CHECKPOINT_EVERY as i64 - 1)
            .map(|o| (o, command.clone()))
            .collect();
        assert!(!book.due());
        book.since.push((CHECKPOINT_EVERY as i64, command.clone()));
        assert!(book.due());
        book.started = CHECKPOINT_EVERY as i64;
        assert!(!book.due(), "one started at the last command covers them");
        book.started = -1;
        book.writing = true;
        assert!(!book.due(), "one at a time");
    }
}
