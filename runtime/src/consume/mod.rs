//! The consuming side of every sink and processor: one loop, written once.
//!
//! A stage implements [`Stage`]; [`run`] owns everything else:
//!
//! 1. **Two threads.** A `BaseConsumer` member of the stage's group polls
//!    on a dedicated thread (never a runtime worker), which also batches and
//!    decodes; a writer thread prepares and writes each batch while the
//!    consumer thread polls and decodes the next one (one batch ahead, no
//!    more). The stage's async calls run on the pipeline's runtime through
//!    its handle. The writer holds the stage for the whole of a batch, and
//!    the rebalance callback takes it too: a rebalance never lands inside a
//!    batch, and a batch decoded before a rebalance loses the records of
//!    the partitions it moved (they are read again from the stored offsets).
//! 2. **Rebalancing** (`rebalance.rs`), eager or cooperative as
//!    `partition.assignment.strategy` in `kafka.properties` says: each
//!    assigned partition starts at the offset the stage stored
//!    ([`Stage::assigned`]) or at the group's committed offset
//!    ([`OffsetsHome`]).
//! 3. **Batching.** A batch closes at `max_records` records, at `max_bytes`
//!    bytes, when the input is idle for `linger` (no record arrived in that
//!    time: nothing is gained by waiting), or `max_wait` after its first
//!    record, whichever comes first. Under load batches fill; at a trickle
//!    each change is written within `linger` of its arrival.
//! 4. **Decoding** every record through the registry within the pipeline's
//!    `limits:`, the unchanged-columns header read into the change.
//! 5. **Poison isolation.** A record that cannot be decoded, or that
//!    [`Stage::prepare`] refuses (`Data`) or panics on, goes to the
//!    dead-letter topic.
//!    When [`Stage::write`] refuses a batch as `Data` (the target refused a
//!    value), the batch is split in halves and each half written on its own,
//!    down to the one refused record, which is dead-lettered: the rest of the
//!    batch lands, in order, and only that record is set aside.
//! 6. **Retries** of transient errors, with the one backoff policy
//!    ([`crate::backoff`]), the same batch again.
//! 7. **Offsets**: the offsets that follow a batch are given to
//!    [`Stage::write`] with it (the stage stores them atomically with its
//!    effects), or committed to Kafka by the runtime after it
//!    ([`OffsetsHome::Kafka`]).
//! 8. **Graceful shutdown**: on the signal, the loop stops between polls or
//!    between retries; what was polled but not written is read again on the
//!    next start from the stored offsets.
//!
//! # Guarantee
//! No offset moves past a record before that record's effect is written
//! (in the same atomic write, for [`OffsetsHome::Stage`]) or its dead letter
//! is acknowledged by the broker. So nothing is lost, whatever moment the
//! process is killed at; what is repeated after a crash has the same
//! identity, and the stage's writes are idempotent by position.
//! Per-partition order is kept: items reach [`Stage::write`] in offset
//! order, and a split batch is written prefix first.

mod batch;
mod rebalance;

pub use batch::BatchSettings;

use crate::backoff::Backoff;
use crate::dead_letter::DeadLetters;
use crate::events::Events;
use crate::record::{next_offsets, offset_list, Offsets, Record, TopicPartition};
use batch::Batch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerGroupMetadata};
use rebalance::{News, StageContext};
use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use syncline_core::codec::{Decoded, Decoder};
use syncline_core::error::{Context, ErrorKind};
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};
use tokio::runtime::Handle;

/// Where a stage keeps the offsets that say how far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetsHome {
    /// With its effects (the target database, a state store): the stage
    /// stores [`Commit::next`] in the same atomic write as the batch and
    /// returns them from [`Stage::assigned`]. Kafka gets them afterwards,
    /// best-effort, only so lag tools show progress; they are never read back.
    Stage,
    /// The consumer group's committed offsets in Kafka: the runtime commits
    /// them after each written batch (at least once: the stage's effects
    /// must be idempotent, as identities make them), unless the stage sends
    /// them in its own Kafka transaction ([`Stage::transactional`]).
    Kafka,
}

/// What [`Stage::write`] gets beside its items.
pub struct Commit<'a> {
    next: &'a Offsets,
    group: Option<ConsumerGroupMetadata>,
}

impl Commit<'_> {
    /// Per partition, the offset after the last record this write covers
    /// (records dead-lettered or skipped included).
    pub fn next(&self) -> &Offsets {
        self.next
    }

    /// The consumer's group metadata, for `send_offsets_to_transaction`: it
    /// carries the group generation that fences a member that lost its
    /// partitions.
    pub fn group_metadata(&self) -> Result<&ConsumerGroupMetadata> {
        self.group
            .as_ref()
            .ok_or_else(|| Error::transient("the consumer has no group metadata yet"))
    }
}

/// What a sink or processor implements to run on the consuming side.
///
/// Dead letters are produced by the runtime's own (idempotent, not
/// transactional) producer, acknowledged before the offsets past them are
/// stored: at least once, also for a stage with Kafka transactions.
///
/// The runtime calls every method from its own threads (the consumer
/// thread for rebalances, the writer thread for batches), one at a time.
/// Errors are told apart by kind: `Transient` is retried (the same call
/// again, after a backoff, or after the error's
/// [`retry_after`](syncline_core::Error::retry_after) when that is longer:
/// a server's `Retry-After`), `Data` sets the record aside in the dead-letter
/// topic, anything else stops the component with that error.
pub trait Stage: Send + 'static {
    /// One record, ready to write (decoded, checked, mapped).
    type Item: Send;

    /// Where this stage's offsets live.
    fn offsets_home(&self) -> OffsetsHome;

    /// The stage writes in Kafka transactions that carry the input offsets
    /// (`send_offsets_to_transaction` with [`Commit::group_metadata`]): the
    /// runtime then commits no offsets to Kafka itself, and on assignment
    /// first waits until no transaction is open on the partitions (a
    /// `read_committed` offset fetch, which librdkafka sends with
    /// `require_stable`), so that [`Self::assigned`] sees what the last
    /// transaction committed.
    fn transactional(&self) -> bool {
        false
    }

    /// Partitions were assigned: return the offsets stored for them (next
    /// record to read; a partition without one is read from its beginning)
    /// and prepare any per-partition state (restore it). Called before any
    /// record of them is given. With [`OffsetsHome::Kafka`] the map is not
    /// used; the default loads nothing.
    fn assigned(
        &mut self,
        _partitions: &[TopicPartition],
    ) -> impl Future<Output = Result<HashMap<TopicPartition, i64>>> {
        // (a stage whose offsets live in Kafka has nothing to load)
        async { Ok(HashMap::new()) }
    }

    /// Partitions were revoked: finish what is in flight for them (their
    /// next owner starts from what is stored) and forget their
    /// per-partition state. The group waits for this call: keep it short.
    fn revoked(&mut self, _partitions: &[TopicPartition]) -> impl Future<Output = ()> {
        async {}
    }

    /// The component stops (shutdown, or an error that stopped the loop):
    /// finish what a [`Self::write`] that returned left in flight, if the
    /// stage keeps anything in flight. Errors are logged; what is not
    /// finished must be safe to redo from the stored offsets.
    fn close(&mut self) -> impl Future<Output = Result<()>> {
        async { Ok(()) }
    }

    /// Turn one decoded record into an item, without I/O (what needs I/O
    /// belongs in [`Self::write`]). `Ok(None)`: nothing to write for it (its
    /// offset is still stored with the batch). `Data`: this record goes to
    /// the dead-letter topic with the error as reason; any other error
    /// stops the component.
    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Self::Item>>;

    /// Write `items` and store `commit.next()` in one atomic step (with
    /// [`OffsetsHome::Stage`]), all or nothing: on any error nothing of the
    /// call may remain, because the runtime calls again with the same items
    /// (transient), or with parts of them (`Data`, to find the refused
    /// record). `items` may be empty: store the offsets only. Returns the
    /// number of effects (rows, output records), for the counters.
    fn write(
        &mut self,
        items: &[Self::Item],
        commit: &Commit<'_>,
    ) -> impl Future<Output = Result<usize>>;
}

/// How a stage consumes.
#[derive(Debug, Clone)]
pub struct ConsumeSettings {
    /// The stage's type, for logs and metrics (`postgres`, `rules`, ...).
    pub kind: &'static str,
    pub group_id: String,
    pub topics: Vec<String>,
    pub batch: BatchSettings,
    pub dead_letter_topic: String,
}

/// Run `stage` until `shutdown`, or until an error that retrying cannot fix.
///
/// Needs a multi-thread runtime: the consumer thread blocks on it
/// (`Handle::block_on`) for the stage's calls.
pub async fn run<S: Stage>(
    ctx: &ComponentContext,
    settings: ConsumeSettings,
    stage: S,
    shutdown: Shutdown,
) -> Result<()> {
    let kafka = &ctx.kafka;
    kafka
        .ensure_topic(&settings.dead_letter_topic, kafka.partitions, false)
        .await?;
    let dead = DeadLetters::new(kafka.producer()?, settings.dead_letter_topic.clone());
    let decoder = ctx.decoder()?;
    let events = Events::new(ctx, settings.kind);
    let home = stage.offsets_home();
    let transactional = stage.transactional();
    let context = StageContext {
        stage: Mutex::new(stage),
        home,
        transactional,
        handle: Handle::current(),
        shutdown: shutdown.clone(),
        events: events.clone(),
        group: settings.group_id.clone(),
        news: Mutex::new(News::default()),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let component = ctx.component.clone();
    let kafka = kafka.clone();
    std::thread::Builder::new()
        .name(format!("{}-{}", settings.kind, ctx.component))
        .spawn(move || {
            let result = (|| {
                let consumer: BaseConsumer<StageContext<S>> =
                    kafka.subscribed(
                    &settings.group_id,
                    &settings.topics,
                    context,
                    Some(STATS_INTERVAL_MS),
                )?;
                tracing::info!(component = %component, r#type = settings.kind, group = %settings.group_id,
                    topics = ?settings.topics, "consuming");
                events.status().running();
                // The consumer thread polls and decodes; the writer writes
                // the batch before, at the same time.
                let stop = shutdown.child_token();
                let (to_writer, from_poller) = std::sync::mpsc::sync_channel(0);
                let writer_events = events.clone();
                let result = std::thread::scope(|scope| {
                    let writer = std::thread::Builder::new()
                        .name(format!("{}-{}-w", settings.kind, component))
                        .spawn_scoped(scope, || {
                            let written = Writer {
                                consumer: &consumer,
                                dead,
                                events: writer_events,
                                home,
                                transactional,
                                handle: consumer.context().handle.clone(),
                                shutdown: &shutdown,
                            }
                            .run(from_poller);
                            stop.cancel();
                            written
                        })
                        .context(ErrorKind::Internal, || {
                            "cannot start the writer thread".into()
                        })?;
                    let polled = Poller {
                        settings: &settings,
                        consumer: &consumer,
                        decoder,
                        events,
                        handle: consumer.context().handle.clone(),
                        stop: &stop,
                    }
                    .run(to_writer);
                    let written = writer.join().unwrap_or_else(|panic| {
                        Err(Error::internal(format!(
                            "the writer thread panicked: {}",
                            panic_text(&panic)
                        )))
                    });
                    written.and(polled)
                });
                let closed = {
                    let context = consumer.context();
                    let mut stage = rebalance::lock(&context.stage);
                    context.handle.block_on(stage.close())
                };
                if let Err(e) = closed {
                    tracing::warn!(component = %component, error = %e, "the stage did not close cleanly");
                }
                result
            })();
            let _ = tx.send(result);
        })
        .context(ErrorKind::Internal, || {
            "cannot start the consumer thread".into()
        })?;
    rx.await
        .unwrap_or_else(|_| Err(Error::internal("the consumer thread panicked")))
}

/// The message of a caught panic.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// How often librdkafka reports each partition's end offset (for the lag
/// the management API shows).
const STATS_INTERVAL_MS: u32 = 5000;

/// Longest wait between two checks of the shutdown signal while polling
/// or waiting to retry.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Longest wait a stage's error may ask for before a retry
/// ([`syncline_core::Error::retry_after`]): a `Retry-After` of a day is
/// taken as five minutes, and the retry after that asks again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// One record as decoded: the change, or why it is poison.
type Decoding = std::result::Result<Decoded, String>;

/// A batch polled and decoded, on its way to the writer.
struct Polled {
    records: Vec<Record>,
    decoded: Vec<Decoding>,
    started: Instant,
    /// [`News::generation`] when it was handed over: the writer drops the
    /// records of partitions reset after that.
    generation: u64,
}

/// The consumer thread: polls (serving rebalances), batches and decodes,
/// and hands each batch to the writer while the writer writes the last.
struct Poller<'a, S: Stage> {
    settings: &'a ConsumeSettings,
    consumer: &'a BaseConsumer<StageContext<S>>,
    decoder: Decoder,
    events: Events,
    handle: Handle,
    /// Cancelled on shutdown, and when the writer stops.
    stop: &'a Shutdown,
}

impl<S: Stage> Poller<'_, S> {
    fn run(&mut self, to_writer: SyncSender<Polled>) -> Result<()> {
        let mut batch = Batch::new(self.settings.batch.clone());
        while !self.stop.is_cancelled() {
            let wait = batch.wait(POLL_SLICE);
            let polled_at = Instant::now();
            let polled = self.consumer.poll(wait);
            // The rebalance callback ran inside poll, before the record it
            // returns (which already belongs to the new assignment).
            {
                let mut news = rebalance::lock(&self.consumer.context().news);
                if let Some(e) = news.error.take() {
                    return Err(e);
                }
                batch.discard(&std::mem::take(&mut news.reset));
            }
            let idle = match polled {
                // `poll` also returns `None` early after serving a rebalance
                // or an offset-commit answer: idle only after the full wait.
                None => polled_at.elapsed() >= wait,
                Some(Ok(m)) => {
                    batch.push(Record::from_message(&m));
                    false
                }
                Some(Err(e)) => {
                    let e =
                        syncline_core::error::kafka::kafka_error(e, "the Kafka consumer failed");
                    if !e.is_transient() {
                        return Err(e);
                    }
                    tracing::warn!(component = %self.events.component(), error = %e, "Kafka consumer error");
                    false
                }
            };
            if batch.ready(idle) {
                let (records, started) = batch.take();
                let mut decoded = Vec::with_capacity(records.len());
                for r in &records {
                    let Some(d) = self.decode(r)? else {
                        return Ok(());
                    };
                    decoded.push(d);
                }
                // (no rebalance runs between the last poll and here)
                let generation = rebalance::lock(&self.consumer.context().news).generation;
                let batch = Polled {
                    records,
                    decoded,
                    started,
                    generation,
                };
                if to_writer.send(batch).is_err() {
                    // The writer stopped; its result says why.
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Decode `r` (retrying while the registry is away). `Ok(Some(Err))`:
    /// a poison record, with the reason. `None`: shutdown came first.
    fn decode(&self, r: &Record) -> Result<Option<Decoding>> {
        let mut backoff = Backoff::default();
        loop {
            let decoded = self
                .handle
                .block_on(self.decoder.decode(r.change_key(), r.value.as_deref()));
            match decoded {
                Ok(mut d) => {
                    d.event.unchanged = syncline_core::change::unchanged_columns(
                        r.header(syncline_core::change::UNCHANGED_HEADER),
                    );
                    return Ok(Some(Ok(d)));
                }
                Err(e) if e.is_transient() => {
                    if self.stop.is_cancelled() {
                        return Ok(None);
                    }
                    let delay = backoff.next_delay();
                    self.events
                        .retrying("cannot decode a record", &e, backoff.attempts(), delay);
                    std::thread::sleep(delay);
                }
                Err(e) if e.kind() == ErrorKind::Data => {
                    return Ok(Some(Err(format!(
                        "cannot decode the record at {}: {e}",
                        r.origin()
                    ))))
                }
                Err(e) => {
                    return Err(Error::new(
                        e.kind(),
                        format!("cannot decode the record at {}", r.origin()),
                    )
                    .with_source(e))
                }
            }
        }
    }
}

/// The writer thread: for each decoded batch, under the stage's lock (so no
/// rebalance callback runs in between), prepares, dead-letters, writes and
/// commits.
struct Writer<'a, S: Stage> {
    consumer: &'a BaseConsumer<StageContext<S>>,
    dead: DeadLetters,
    events: Events,
    home: OffsetsHome,
    transactional: bool,
    handle: Handle,
    shutdown: &'a Shutdown,
}

/// A batch being written: its records, the items made of them, and the
/// index of each item's record.
struct Prepared<I> {
    records: Vec<Record>,
    items: Vec<I>,
    index: Vec<usize>,
}

impl<S: Stage> Writer<'_, S> {
    fn run(&mut self, from_poller: Receiver<Polled>) -> Result<()> {
        for polled in from_poller {
            if !self.flush(polled)? {
                break;
            }
        }
        Ok(())
    }

    /// Prepare and write one batch. `false`: shutdown came first and
    /// nothing more of the batch was stored.
    fn flush(&mut self, polled: Polled) -> Result<bool> {
        let context = self.consumer.context();
        let mut stage = rebalance::lock(&context.stage);
        // Partitions revoked or re-assigned since the batch was handed over
        // start again at their stored offsets: their records are dropped.
        let (records, decoded) = {
            let news = rebalance::lock(&context.news);
            let current = |r: &Record| {
                news.last_reset
                    .get(&(r.topic.to_string(), r.partition))
                    .is_none_or(|&g| g <= polled.generation)
            };
            match polled.records.iter().all(current) {
                true => (polled.records, polled.decoded),
                false => polled
                    .records
                    .into_iter()
                    .zip(polled.decoded)
                    .filter(|(r, _)| current(r))
                    .unzip(),
            }
        };
        if records.is_empty() {
            return Ok(true);
        }
        self.events.records_in(records.len());
        // The newest change's time at its source, for end-to-end latency.
        let newest_us = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().map(|d| d.event.source.ts_us))
            .max();
        let Some(prepared) = self.prepare(&mut stage, records, decoded)? else {
            return Ok(false);
        };
        // Dead letters are safe before any offset moves past their records.
        if !self
            .handle
            .clone()
            .block_on(self.dead.flush(self.shutdown))?
        {
            return Ok(false);
        }
        let writing = Instant::now();
        let Some(written) = self.land(&mut stage, &prepared, 0, prepared.items.len())? else {
            return Ok(false);
        };
        let next = next_offsets(&prepared.records);
        match self.home {
            // Sent in the stage's transaction.
            _ if self.transactional => {}
            OffsetsHome::Stage => {
                if let Err(e) = self.consumer.commit(&offset_list(&next), CommitMode::Async) {
                    tracing::debug!(component = %self.events.component(), error = %e, "best-effort Kafka offset commit failed");
                }
            }
            OffsetsHome::Kafka => {
                // A failure repeats the batch after a restart: at least once.
                if let Err(e) = self.consumer.commit(&offset_list(&next), CommitMode::Sync) {
                    tracing::warn!(component = %self.events.component(), error = %e, "cannot commit consumed offsets; those records are read again");
                }
            }
        }
        self.events.batch_done(
            prepared.records.len(),
            written,
            polled.started.elapsed(),
            writing.elapsed(),
        );
        let status = self.events.status();
        status.positions(&next);
        if let Some(us) = newest_us.filter(|&us| us > 0) {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            status.end_to_end((now_us - us) as f64 / 1000.0);
        }
        Ok(true)
    }

    /// Hand every decoded record to the stage; dead-letter what either
    /// refuses. `None`: shutdown came first.
    fn prepare(
        &mut self,
        stage: &mut S,
        records: Vec<Record>,
        decoded: Vec<Decoding>,
    ) -> Result<Option<Prepared<S::Item>>> {
        let mut items = Vec::with_capacity(records.len());
        let mut index = Vec::with_capacity(records.len());
        for (i, (r, decoded)) in records.iter().zip(decoded).enumerate() {
            let decoded = match decoded {
                Ok(d) => d,
                Err(reason) => {
                    self.dead.send(r, &reason, &self.events)?;
                    continue;
                }
            };
            // A stage that panics on one record (a bug that record
            // reveals) sets that record aside instead of stopping.
            let item = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                stage.prepare(r, decoded)
            }))
            .unwrap_or_else(|panic| {
                Err(Error::data(format!(
                    "the stage failed on it (a bug; please report it): {}",
                    panic_text(&panic)
                )))
            });
            match item {
                Ok(Some(item)) => {
                    items.push(item);
                    index.push(i);
                }
                Ok(None) => self.events.skipped(1),
                Err(e) if e.kind() == ErrorKind::Data => {
                    let reason = format!("the record at {}: {e}", r.origin());
                    self.dead.send(r, &reason, &self.events)?;
                }
                Err(e) => {
                    return Err(Error::new(
                        e.kind(),
                        format!("cannot prepare the record at {}", r.origin()),
                    )
                    .with_source(e))
                }
            }
        }
        Ok(Some(Prepared {
            records,
            items,
            index,
        }))
    }

    /// Call the stage until it succeeds or fails for good; transient errors
    /// are retried with backoff. `Ok(Some(Err))`: a `Data` error, for the
    /// caller to isolate. `None`: shutdown came first.
    fn retrying<T>(
        &self,
        stage: &mut S,
        what: &str,
        mut f: impl AsyncFnMut(&mut S) -> Result<T>,
    ) -> Result<Option<Result<T>>> {
        let mut backoff = Backoff::default();
        loop {
            match self.handle.block_on(f(stage)) {
                Ok(v) => return Ok(Some(Ok(v))),
                Err(e) if e.kind() == ErrorKind::Data => return Ok(Some(Err(e))),
                Err(e) if e.is_transient() && !e.restarts_component() => {
                    if self.shutdown.is_cancelled() {
                        return Ok(None);
                    }
                    // The other side's `Retry-After`, if longer (bounded).
                    let delay = backoff
                        .next_delay()
                        .max(e.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER));
                    self.events.retrying(what, &e, backoff.attempts(), delay);
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if self.shutdown.is_cancelled() {
                            return Ok(None);
                        }
                        std::thread::sleep(
                            until
                                .saturating_duration_since(Instant::now())
                                .min(POLL_SLICE),
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Write items `lo..hi` with the offsets that follow them; on `Data`,
    /// split (see the module doc). The effects written; `None`: shutdown.
    fn land(
        &mut self,
        stage: &mut S,
        p: &Prepared<S::Item>,
        lo: usize,
        hi: usize,
    ) -> Result<Option<usize>> {
        // The write covers every record before the next item's (the
        // dead-lettered and skipped ones too), the whole batch at the end.
        let end = p.index.get(hi).map_or(p.records.len(), |i| *i);
        let next = next_offsets(&p.records[..end]);
        let written = self.write(stage, &p.items[lo..hi], &next)?;
        match written {
            None => Ok(None),
            Some(Ok(n)) => Ok(Some(n)),
            Some(Err(e)) if hi - lo > 1 => {
                tracing::info!(component = %self.events.component(), records = hi - lo, error = %e,
                    "the target refused a batch; splitting it to find the refused records");
                let mid = lo + (hi - lo) / 2;
                let Some(a) = self.land(stage, p, lo, mid)? else {
                    return Ok(None);
                };
                let Some(b) = self.land(stage, p, mid, hi)? else {
                    return Ok(None);
                };
                Ok(Some(a + b))
            }
            Some(Err(e)) if hi > lo => {
                let record = &p.records[p.index[lo]];
                let reason = format!("the target refused the record at {}: {e}", record.origin());
                self.dead.send(record, &reason, &self.events)?;
                if !self
                    .handle
                    .clone()
                    .block_on(self.dead.flush(self.shutdown))?
                {
                    return Ok(None);
                }
                // Store the offsets past it, without it.
                match self.write(stage, &[], &next)? {
                    None => Ok(None),
                    Some(Ok(n)) => Ok(Some(n)),
                    Some(Err(e)) => Err(e),
                }
            }
            Some(Err(e)) => Err(Error::new(
                e.kind(),
                "the target refused to store the consumed offsets",
            )
            .with_source(e)),
        }
    }

    fn write(
        &mut self,
        stage: &mut S,
        items: &[S::Item],
        next: &Offsets,
    ) -> Result<Option<Result<usize>>> {
        let group = match self.transactional {
            true => self.consumer.group_metadata(),
            false => None,
        };
        let commit = Commit { next, group };
        self.retrying(stage, "cannot write a batch", async |stage| {
            stage.write(items, &commit).await
        })
    }
}
