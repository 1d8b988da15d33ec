//! The running `dedup` processor.
//!
//! Two stages, each a member of its own consumer group, so that N instances
//! split both:
//! - **repartition** (only when `by` is not `identity`, or several topics are
//!   read): every change goes, unchanged, to the repartition topic with its
//!   dedup key as Kafka key (the original key rides along in the
//!   `syncline.key` header). Equal keys meet in one partition, in the order
//!   that topic fixes once and for all.
//! - **dedup**: reads one topic (the repartition topic, or the only input)
//!   and keeps, per partition, the set of keys seen in RocksDB
//!   ([`super::store`]), backed up to the changelog ([`super::changelog`]).
//!
//! # Guarantee and commit order
//! For each batch the dedup stage consumed, in this order:
//! 1. decide each record against the state as of the batch's start plus the
//!    batch's own earlier records (a key's first appearance passes, later
//!    ones within the TTL are dropped); hand every output and dead letter to
//!    the idempotent producer;
//! 2. wait until the broker has acknowledged all of them;
//! 3. produce the batch's state changes to the changelog, each partition's
//!    ending with its `next input offset` record, and wait for those acks;
//! 4. write one RocksDB `WriteBatch` per partition: the state changes, the
//!    next input offset and stream time, and the changelog offset reached;
//! 5. commit the input offsets to Kafka (advisory only: for lag tools).
//!
//! On assignment a partition restores its state from the changelog (from
//! where the local copy stopped, or from the start when it is missing) and
//! resumes at the input offset stored *with the state*, never at Kafka's.
//!
//! A crash before 3 replays the batch against the same state: the same
//! decisions, the same outputs, equal identities (syncline sinks drop them).
//! A crash during 3 leaves a prefix of the batch's state in the changelog
//! with the older offset; the replay then drops records whose first passage
//! is already in the output topic (step 2 came first), and decides the rest
//! as before. A crash after 3 is restored from the changelog. Decisions use
//! the changes' own time (`source.ts_us`, as stream time per partition),
//! never the clock, so a TTL decides the same way on replay. Nothing is
//! lost: no offset is stored before the outputs it covers are acknowledged.
//!
//! Not covered by default: two live instances owning one partition at once
//! (a member that lost its session but still runs) can both pass a key.
//!
//! With `kafka.exactly_once: transactions` ([`crate::io::Transactional`]),
//! steps 1-3 are one Kafka transaction that also carries the input offsets
//! (step 5 becomes part of it), committed before step 4: outputs, dead
//! letters, changelog records and offsets count together or not at all, so
//! a `read_committed` consumer sees each passed change once, and a stale
//! instance is fenced. On assignment the committed offsets are fetched
//! first with `require_stable` (librdkafka does so for `read_committed`
//! consumers), which waits until a transaction still open on the partition
//! has ended; the changelog is then restored up to its last stable offset.
//! A crash after the commit and before step 4 is repaired by that restore.
//! The repartition stage commits each batch in a transaction of its own.

use super::changelog::{self, Record};
use super::key::{DedupKey, Key};
use super::store::{PartitionCommit, Store};
use crate::io::{self, retry, Raw, Transactional, ORIGINAL_KEY_HEADER};
use crate::metrics::ProcessorMetrics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use syncline_core::codec::{Decoded, Decoder, Encoder};
use syncline_core::error::{Context, ErrorKind};
use syncline_core::kafka::{DeadLetter, ExactlyOnce, KafkaConfig};
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::schema::avro_name;
use syncline_core::{Error, Op, Result, TableSchema};
use tokio::runtime::Handle;

const POLL_SLICE: Duration = Duration::from_millis(100);
/// Most expired entries removed per partition and batch (the rest go in
/// the next batches), so that one sweep never stalls the stream.
const SWEEP_LIMIT: usize = 10_000;

/// The typed settings the running processor gets.
#[derive(Debug, Clone)]
pub struct Settings {
    pub group_id: String,
    pub from: Vec<String>,
    pub to: String,
    pub key: DedupKey,
    pub ttl: Option<Duration>,
    pub changelog_topic: String,
    /// Set when changes go through the repartition topic first.
    pub repartition_topic: Option<String>,
    pub dead_letter_topic: String,
    pub state_dir: PathBuf,
    pub batch_size: usize,
    pub batch_timeout: Duration,
}

pub struct DedupProcessor {
    settings: Settings,
    ctx: ComponentContext,
}

impl DedupProcessor {
    pub(crate) fn new(settings: Settings, ctx: ComponentContext) -> Result<Self> {
        Ok(Self { settings, ctx })
    }

    /// The topic the dedup stage reads.
    fn dedup_input(&self) -> &str {
        self.settings
            .repartition_topic
            .as_deref()
            .unwrap_or(&self.settings.from[0])
    }

    /// Run both stages until `shutdown` or until one fails for good.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let kafka = &self.ctx.kafka;
        for t in [&s.to, &s.dead_letter_topic] {
            kafka.ensure_topic(t, kafka.partitions, false).await?;
        }
        if let Some(t) = &s.repartition_topic {
            kafka.ensure_topic(t, kafka.partitions, false).await?;
        }
        let input = self.dedup_input().to_string();
        let partitions = partition_count(kafka, &input)?.ok_or_else(|| {
            Error::transient(format!(
                "topic `{input}` does not exist yet; waiting for it"
            ))
        })?;
        kafka
            .ensure_topic(&s.changelog_topic, partitions, true)
            .await?;
        match partition_count(kafka, &s.changelog_topic)? {
            Some(n) if n != partitions => {
                return Err(Error::config(format!(
                    "changelog `{}` has {n} partitions but `{input}` has {partitions}: the state of input partition p lives in changelog partition p; recreate the changelog with {partitions} partitions",
                    s.changelog_topic
                )))
            }
            _ => {}
        }
        let store = Arc::new(Store::open(&s.state_dir)?);
        let metrics = ProcessorMetrics::new(&self.ctx);
        tracing::info!(processor = %self.ctx.component, group = %s.group_id, from = ?s.from, to = %s.to, by = ?s.key, ttl = ?s.ttl, state = %s.state_dir.display(), "dedup processor started");

        let transactions = kafka.exactly_once == ExactlyOnce::Transactions;
        let repartition_txn = match (&s.repartition_topic, transactions) {
            (Some(_), true) => Some(Transactional::new(&self.ctx, ".repartition").await?),
            _ => None,
        };
        let txn = match transactions {
            true => Some(Transactional::new(&self.ctx, "").await?),
            false => None,
        };
        let stop = shutdown.child_token();
        let repartition = s.repartition_topic.clone().map(|topic| {
            let stage = Repartition {
                settings: s.clone(),
                ctx: self.ctx.clone(),
                topic,
                metrics: metrics.clone(),
                txn: repartition_txn,
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let r = stage.run(&stop).await;
                stop.cancel();
                r
            })
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = Handle::current();
        let stage = DedupStage {
            settings: s.clone(),
            ctx: self.ctx.clone(),
            input,
            store,
            metrics,
            txn,
        };
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("dedup-{}", self.ctx.component))
            .spawn(move || {
                let r = stage.run_blocking(handle, &thread_stop);
                thread_stop.cancel();
                let _ = tx.send(r);
            })
            .context(ErrorKind::Internal, || {
                "cannot start the dedup thread".into()
            })?;
        let dedup_result = rx
            .await
            .unwrap_or_else(|_| Err(Error::internal("the dedup thread panicked")));
        let repartition_result = match repartition {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(Error::internal(format!(
                    "the repartition stage panicked: {e}"
                )))
            }),
            None => Ok(()),
        };
        let result = dedup_result.and(repartition_result);
        match &result {
            Ok(()) => tracing::info!(processor = %self.ctx.component, "dedup processor stopped"),
            Err(e) => {
                tracing::error!(processor = %self.ctx.component, error = %e, "dedup processor failed")
            }
        }
        result
    }
}

/// Partitions of `topic`, or `None` when it does not exist.
fn partition_count(kafka: &KafkaConfig, topic: &str) -> Result<Option<i32>> {
    let consumer: BaseConsumer = kafka
        .reader_config()
        .create()
        .context(ErrorKind::Config, || "cannot create Kafka consumer".into())?;
    let parts = syncline_core::kafka::topic_partitions(consumer.client(), topic)?;
    Ok((!parts.is_empty()).then_some(parts.len() as i32))
}

/// Send `r` to the dead-letter topic with `reason` (acknowledged with the batch).
fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    component: &str,
    r: &Raw,
    reason: &str,
) -> Result<DeliveryFuture> {
    tracing::warn!(processor = %component, dead_letter_topic = %topic, reason, "record dead-lettered");
    io::send(
        producer,
        DeadLetter {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            reason,
        }
        .record(topic),
    )
}

/// The first stage: re-key every change by its dedup key. Stateless, at
/// least once (offsets committed after the broker acknowledged the batch);
/// a replayed record has the same dedup key, so the dedup stage drops it.
struct Repartition {
    settings: Settings,
    ctx: ComponentContext,
    topic: String,
    metrics: ProcessorMetrics,
    txn: Option<Transactional>,
}

impl Repartition {
    async fn run(&self, stop: &Shutdown) -> Result<()> {
        let s = &self.settings;
        let component = &self.ctx.component;
        let consumer: StreamConsumer = self.ctx.kafka.subscribed(
            &format!("{}.repartition", s.group_id),
            &s.from,
            rdkafka::consumer::DefaultConsumerContext,
        )?;
        let decoder = self.ctx.decoder()?;
        let producer = match &self.txn {
            Some(t) => t.producer().clone(),
            None => self.ctx.kafka.producer()?,
        };
        while !stop.is_cancelled() {
            let Some(batch) =
                io::collect_batch(&consumer, stop, component, s.batch_size, s.batch_timeout)
                    .await?
            else {
                return Ok(());
            };
            if batch.is_empty() {
                continue;
            }
            self.metrics.records_in.increment(batch.len() as u64);
            if let Some(txn) = &self.txn {
                txn.begin()?;
            }
            let published = self.publish(&batch, &decoder, &producer, stop).await;
            if !matches!(published, Ok(Some(()))) {
                if let Some(txn) = &self.txn {
                    txn.abort_blocking();
                }
                return published.map(|_| ());
            }
            let next = io::next_offsets(
                batch
                    .iter()
                    .map(|r| (r.topic.as_str(), r.partition, r.offset)),
            );
            if let Some(txn) = &self.txn {
                let group = io::group_metadata(&consumer)?;
                txn.commit(io::offset_list(&next)?, group).await?;
            } else if let Err(e) = consumer.commit(&io::offset_list(&next)?, CommitMode::Sync) {
                tracing::warn!(processor = %component, error = %e, "cannot commit repartition offsets; those records will be re-keyed again (the dedup stage drops the copies)");
            }
        }
        Ok(())
    }

    /// Re-key `batch` to the repartition topic and wait for the broker's
    /// acknowledgements. `None`: shutdown came first.
    async fn publish(
        &self,
        batch: &[Raw],
        decoder: &Decoder,
        producer: &FutureProducer,
        stop: &Shutdown,
    ) -> Result<Option<()>> {
        let s = &self.settings;
        let component = &self.ctx.component;
        let mut pending = Vec::with_capacity(batch.len());
        for r in batch {
            let decoded = retry(stop, component, "schema registry unavailable", || {
                decoder.decode(r.key.as_deref(), r.value.as_deref())
            })
            .await;
            let key = match decoded {
                Ok(None) => return Ok(None),
                Ok(Some(d)) if d.event.op == Op::Truncate && s.from.len() > 1 => Err(
                    "a TRUNCATE of one of several input topics merged into one output; applying it \
                     would empty the rows of the others too, so it is not forwarded"
                        .to_string(),
                ),
                Ok(Some(d)) if d.event.op == Op::Truncate => {
                    // Every key's partition must see it (see io::broadcast).
                    let value = r.value.as_deref().unwrap_or_default();
                    pending.extend(io::broadcast(producer, &self.topic, value).await?);
                    continue;
                }
                Ok(Some(d)) => s.key.of(&d.event),
                Err(e) if e.kind() == ErrorKind::Data => Err(format!("cannot decode: {e}")),
                Err(e) => return Err(e),
            };
            match key {
                Ok(key) => {
                    let mut record = FutureRecord::to(&self.topic).key(&key[..]);
                    if let Some(v) = &r.value {
                        record = record.payload(&v[..]);
                    }
                    // The original key, and the unchanged columns, ride along.
                    let mut headers = OwnedHeaders::new();
                    if let Some(k) = &r.key {
                        headers = headers.insert(Header {
                            key: ORIGINAL_KEY_HEADER,
                            value: Some(&k[..]),
                        });
                    }
                    if let Some(u) = &r.unchanged {
                        headers = headers.insert(Header {
                            key: syncline_core::change::UNCHANGED_HEADER,
                            value: Some(&u[..]),
                        });
                    }
                    record = record.headers(headers);
                    pending.push(io::send(producer, record)?);
                }
                Err(reason) => {
                    let reason = format!("the record at {}: {reason}", r.at());
                    pending.push(dead_letter(
                        producer,
                        &s.dead_letter_topic,
                        component,
                        r,
                        &reason,
                    )?);
                    self.metrics.dead_lettered.increment(1);
                }
            }
        }
        Ok(io::acknowledged(stop, pending).await?.map(|_| ()))
    }
}

/// What the rebalance callback leaves for the loop.
#[derive(Default)]
struct RebalanceNews {
    reset: HashSet<i32>,
    error: Option<Error>,
}

/// The dedup stage's consumer context: on assignment, restore each
/// partition's state and start it at the offset stored with that state.
struct DedupContext {
    kafka: KafkaConfig,
    group: String,
    changelog: String,
    store: Arc<Store>,
    ttl: bool,
    /// With transactions, assignment first waits for open ones (see the module doc).
    transactional: bool,
    metrics: ProcessorMetrics,
    news: Mutex<RebalanceNews>,
}

impl ClientContext for DedupContext {}

impl ConsumerContext for DedupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.news
            .lock()
            .expect("rebalance news poisoned")
            .reset
            .extend(parts.iter().map(|(_, p)| *p));
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                match self
                    .await_stable(consumer, tpl)
                    .and_then(|()| self.restore_all(&parts))
                {
                    Ok(offsets) => {
                        for ((topic, partition), offset) in parts.iter().zip(offsets) {
                            let _ = tpl.set_partition_offset(topic, *partition, offset);
                        }
                        tracing::info!(group = %self.group, partitions = ?parts.iter().map(|p| p.1).collect::<Vec<_>>(), "assigned; state restored, resuming from the offsets stored with it");
                        consumer.assign(tpl)
                    }
                    Err(e) => {
                        self.news.lock().expect("rebalance news poisoned").error = Some(e);
                        consumer.unassign()
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(group = %self.group, partitions = parts.len(), "partitions revoked");
                consumer.unassign()
            }
            other => {
                tracing::warn!(group = %self.group, error = ?other, "rebalance error; dropping the assignment");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(group = %self.group, error = %e, "cannot apply the partition assignment");
        }
    }
}

impl DedupContext {
    /// With transactions: fetch the group's committed offsets of the
    /// assigned partitions. The consumer is `read_committed`, so librdkafka
    /// asks with `require_stable` and the answer waits until a transaction
    /// still open on them (a stale instance's, or this one's before a
    /// crash) has committed or aborted; the changelog restored next then
    /// holds everything that transaction committed.
    fn await_stable(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) -> Result<()> {
        if !self.transactional {
            return Ok(());
        }
        consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(120))
            .map(|_| ())
            .context(ErrorKind::Transient, || {
                "cannot read the committed offsets of the assigned partitions".into()
            })
    }

    /// Restore every assigned partition; the offset each starts at.
    fn restore_all(&self, parts: &[(String, i32)]) -> Result<Vec<Offset>> {
        let mut out = Vec::with_capacity(parts.len());
        for (_, partition) in parts {
            changelog::restore(
                &self.kafka,
                &self.changelog,
                *partition,
                &self.store,
                self.ttl,
                |done, remaining| {
                    self.metrics.restored.absolute(done);
                    self.metrics.restore_remaining.set(remaining as f64);
                },
            )?;
            let meta = self.store.meta(*partition)?;
            out.push(match meta.next_input {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            });
        }
        Ok(out)
    }
}

struct DedupStage {
    settings: Settings,
    ctx: ComponentContext,
    input: String,
    store: Arc<Store>,
    metrics: ProcessorMetrics,
    txn: Option<Transactional>,
}

/// One partition's decisions within a batch.
struct PartitionBatch {
    stream_time: i64,
    /// Keys passed earlier in this batch (not in the store yet).
    overlay: HashMap<Key, i64>,
    commit: PartitionCommit,
}

impl DedupStage {
    fn run_blocking(self, handle: Handle, stop: &Shutdown) -> Result<()> {
        let s = &self.settings;
        let context = DedupContext {
            kafka: self.ctx.kafka.clone(),
            group: s.group_id.clone(),
            changelog: s.changelog_topic.clone(),
            store: self.store.clone(),
            ttl: s.ttl.is_some(),
            transactional: self.txn.is_some(),
            metrics: self.metrics.clone(),
            news: Mutex::new(RebalanceNews::default()),
        };
        let consumer: BaseConsumer<DedupContext> =
            self.ctx
                .kafka
                .subscribed(&s.group_id, std::slice::from_ref(&self.input), context)?;
        let mut lp = Loop {
            stage: &self,
            consumer: &consumer,
            decoder: self.ctx.decoder()?,
            encoder: Encoder::new(&self.ctx.registry)?,
            producer: match &self.txn {
                Some(t) => t.producer().clone(),
                None => self.ctx.kafka.producer()?,
            },
            schemas: HashMap::new(),
            handle,
            stop,
            last_size: Instant::now() - Duration::from_secs(60),
        };
        lp.run()
    }
}

struct Loop<'a> {
    stage: &'a DedupStage,
    consumer: &'a BaseConsumer<DedupContext>,
    decoder: Decoder,
    encoder: Encoder,
    producer: FutureProducer,
    /// Output table shape per input value schema id.
    schemas: HashMap<u32, Arc<TableSchema>>,
    handle: Handle,
    stop: &'a Shutdown,
    last_size: Instant,
}

impl Loop<'_> {
    fn run(&mut self) -> Result<()> {
        let s = &self.stage.settings;
        let mut pending: Vec<Raw> = Vec::with_capacity(s.batch_size);
        let mut batch_started = Instant::now();
        while !self.stop.is_cancelled() {
            let wait = if pending.is_empty() {
                POLL_SLICE
            } else {
                (batch_started + s.batch_timeout)
                    .saturating_duration_since(Instant::now())
                    .min(POLL_SLICE)
            };
            let polled = self.consumer.poll(wait);
            {
                // Records polled for partitions revoked or re-assigned since
                // are dropped: they are read again from the stored offsets.
                let mut news = self
                    .consumer
                    .context()
                    .news
                    .lock()
                    .expect("rebalance news poisoned");
                if let Some(e) = news.error.take() {
                    return Err(e);
                }
                let reset = std::mem::take(&mut news.reset);
                if !reset.is_empty() {
                    pending.retain(|r| !reset.contains(&r.partition));
                }
            }
            match polled {
                None => {}
                Some(Ok(m)) => {
                    if pending.is_empty() {
                        batch_started = Instant::now();
                    }
                    pending.push(Raw::from_message(&m));
                }
                Some(Err(e)) => {
                    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) {
                        return Err(Error::transient("the Kafka consumer failed").with_source(e));
                    }
                    tracing::warn!(processor = %self.stage.ctx.component, error = %e, "Kafka consumer error");
                }
            }
            let full = pending.len() >= s.batch_size;
            let due = !pending.is_empty() && batch_started.elapsed() >= s.batch_timeout;
            if full || due {
                if self.flush_batch(&pending)?.is_none() {
                    return Ok(());
                }
                pending.clear();
            }
        }
        Ok(())
    }

    /// [`Self::flush`], in a transaction of its own when transactions are
    /// on: anything but a complete flush aborts it.
    fn flush_batch(&mut self, batch: &[Raw]) -> Result<Option<()>> {
        let stage = self.stage;
        let Some(txn) = &stage.txn else {
            return self.flush(batch);
        };
        txn.begin()?;
        let flushed = self.flush(batch);
        if !matches!(flushed, Ok(Some(()))) {
            txn.abort_blocking();
        }
        flushed
    }

    /// Decide, publish and commit one batch (see the module's commit order).
    /// `None`: shutdown came first and nothing of the batch was stored.
    fn flush(&mut self, batch: &[Raw]) -> Result<Option<()>> {
        let s = &self.stage.settings;
        let store = &self.stage.store;
        let component = self.stage.ctx.component.as_str();
        let ttl_us = s.ttl.map(|t| t.as_micros() as i64);
        if s.repartition_topic.is_none() {
            // (with a repartition stage, that stage counts the records in)
            self.stage.metrics.records_in.increment(batch.len() as u64);
        }
        let mut parts: BTreeMap<i32, PartitionBatch> = BTreeMap::new();
        let mut deliveries = Vec::with_capacity(batch.len());
        let (mut passed, mut dropped, mut dead) = (0u64, 0u64, 0u64);
        for r in batch {
            let pb = match parts.entry(r.partition) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(PartitionBatch {
                    stream_time: store.meta(r.partition)?.stream_time,
                    overlay: HashMap::new(),
                    commit: PartitionCommit::default(),
                }),
            };
            pb.commit.next_input = r.offset + 1;
            // Through the repartition topic, the change's own key rides in a header.
            let change_key = if s.repartition_topic.is_some() {
                r.original_key.as_deref()
            } else {
                r.key.as_deref()
            };
            let decoded = self.handle.block_on(retry(
                self.stop,
                component,
                "schema registry unavailable",
                || self.decoder.decode(change_key, r.value.as_deref()),
            ));
            let decoded = match decoded {
                Ok(Some(mut d)) => {
                    d.event.unchanged = r.unchanged_columns();
                    Ok(d)
                }
                Ok(None) => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Data => Err(format!("cannot decode: {e}")),
                Err(e) => return Err(e),
            };
            // A TRUNCATE is not deduplicated: applying it twice is harmless.
            if let Ok(d) = &decoded {
                if d.event.op == Op::Truncate {
                    deliveries.extend(self.publish_truncate(r, d)?);
                    passed += 1;
                    continue;
                }
            }
            let keyed = decoded.and_then(|d| {
                let key = if s.repartition_topic.is_some() {
                    r.key
                        .as_deref()
                        .and_then(|k| Key::try_from(k).ok())
                        .ok_or_else(|| {
                            "a repartition record's key is not a 32-byte dedup key".to_string()
                        })
                } else {
                    s.key.of(&d.event)
                };
                key.map(|k| (d, k))
            });
            let (decoded, key) = match keyed {
                Ok(dk) => dk,
                Err(reason) => {
                    let reason = format!("the record at {}: {reason}", r.at());
                    deliveries.push(dead_letter(
                        &self.producer,
                        &s.dead_letter_topic,
                        component,
                        r,
                        &reason,
                    )?);
                    dead += 1;
                    continue;
                }
            };
            let ts = decoded.event.source.ts_us;
            pb.stream_time = pb.stream_time.max(ts);
            let seen = match pb.overlay.get(&key) {
                Some(t) => Some(*t),
                None => store.seen(r.partition, &key)?,
            };
            let duplicate = match (seen, ttl_us) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(first), Some(ttl)) => first > pb.stream_time.saturating_sub(ttl),
            };
            if duplicate {
                dropped += 1;
                continue;
            }
            pb.overlay.insert(key, ts);
            pb.commit.puts.push((key, ts, seen));
            deliveries.push(self.publish(r, &decoded)?);
            passed += 1;
        }
        // 2: the outputs are safe before any state says they were sent.
        let Some(_) = self
            .handle
            .block_on(io::acknowledged(self.stop, deliveries))?
        else {
            return Ok(None);
        };
        let started = Instant::now();
        // 3: the state changes and the offsets they cover, to the changelog.
        let mut records: Vec<(i32, changelog::Encoded)> = Vec::new();
        for (&partition, pb) in parts.iter_mut() {
            if let Some(ttl) = ttl_us {
                let cutoff = pb.stream_time.saturating_sub(ttl).saturating_add(1);
                pb.commit.expired = store
                    .older_than(partition, cutoff, SWEEP_LIMIT)?
                    .into_iter()
                    .filter(|(k, _)| !pb.overlay.contains_key(k))
                    .collect();
            }
            pb.commit.stream_time = pb.stream_time;
            for (key, _) in &pb.commit.expired {
                records.push((partition, Record::Expired { key: *key }.encode()));
            }
            for (key, ts, _) in &pb.commit.puts {
                records.push((partition, Record::Seen { key: *key, ts: *ts }.encode()));
            }
            records.push((
                partition,
                Record::Offsets {
                    next_input: pb.commit.next_input,
                    stream_time: pb.stream_time,
                }
                .encode(),
            ));
        }
        let mut sent = Vec::with_capacity(records.len());
        for (partition, encoded) in &records {
            sent.push(io::send(
                &self.producer,
                Record::to_kafka(&s.changelog_topic, *partition, encoded),
            )?);
        }
        let Some(acks) = self.handle.block_on(io::acknowledged(self.stop, sent))? else {
            return Ok(None);
        };
        for (partition, offset) in acks {
            if let Some(pb) = parts.get_mut(&partition) {
                pb.commit.next_changelog = pb.commit.next_changelog.max(offset + 1);
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (&partition, pb) in &parts {
            let _ = tpl.add_partition_offset(
                &self.stage.input,
                partition,
                Offset::Offset(pb.commit.next_input),
            );
        }
        // With transactions: outputs, changelog and offsets commit now, as one.
        if let Some(txn) = &self.stage.txn {
            let group = io::group_metadata(self.consumer)?;
            txn.commit_blocking(&tpl, &group)?;
        }
        // 4: state and offsets, one write per partition.
        let ttl = s.ttl.is_some();
        for (&partition, pb) in &parts {
            store.commit(partition, &pb.commit, ttl)?;
        }
        // 5: advisory (part of the transaction when there is one).
        if self.stage.txn.is_none() {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(processor = %component, error = %e, "cannot commit advisory offsets");
            }
        }
        let m = &self.stage.metrics;
        m.commit_seconds.record(started.elapsed().as_secs_f64());
        m.records_out.increment(passed);
        m.deduplicated.increment(dropped);
        m.dead_lettered.increment(dead);
        if self.last_size.elapsed() > Duration::from_secs(1) {
            let (keys, bytes) = store.size();
            m.state_keys.set(keys as f64);
            m.state_bytes.set(bytes as f64);
            self.last_size = Instant::now();
        }
        tracing::debug!(processor = %component, records = batch.len(), passed, deduplicated = dropped, dead_lettered = dead, "batch committed");
        Ok(Some(()))
    }

    /// The output schema of records with `decoded`'s shape.
    fn output_schema(&mut self, decoded: &Decoded) -> Arc<TableSchema> {
        if let Some(t) = self.schemas.get(&decoded.value_schema_id) {
            return t.clone();
        }
        let t = Arc::new(TableSchema {
            namespace: format!("syncline.{}", avro_name(&self.stage.ctx.component)),
            name: avro_name(&self.stage.settings.to),
            columns: decoded.columns.as_ref().clone(),
            primary_key: decoded.key_columns.as_ref().clone(),
        });
        // A TRUNCATE has no key to learn the key columns from: not cached.
        if decoded.event.op != Op::Truncate {
            self.schemas.insert(decoded.value_schema_id, t.clone());
        }
        t
    }

    /// Publish a TRUNCATE to every partition of the output.
    fn publish_truncate(&mut self, r: &Raw, decoded: &Decoded) -> Result<Vec<DeliveryFuture>> {
        let table = self.output_schema(decoded);
        let to = &self.stage.settings.to;
        let sent = self.handle.block_on(retry(
            self.stop,
            &self.stage.ctx.component,
            "cannot publish a TRUNCATE",
            || async {
                let value = self
                    .encoder
                    .encode_truncate(to, &table, &decoded.event)
                    .await?;
                io::broadcast(&self.producer, to, &value).await
            },
        ));
        match sent {
            Ok(Some(sent)) => Ok(sent),
            Ok(None) => Err(Error::transient("shut down while publishing")),
            Err(e) => Err(Error::new(
                e.kind(),
                format!("cannot publish the record at {} to `{to}`", r.at()),
            )
            .with_source(e)),
        }
    }

    /// Produce a change that is not a duplicate to the output topic, keyed
    /// by its row key, identity unchanged.
    fn publish(&mut self, r: &Raw, decoded: &Decoded) -> Result<DeliveryFuture> {
        let table = self.output_schema(decoded);
        let s = &self.stage.settings;
        let encoded = self
            .handle
            .block_on(retry(
                self.stop,
                &self.stage.ctx.component,
                "schema registry unavailable",
                || self.encoder.encode(&s.to, &table, &decoded.event),
            ))
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("cannot publish the record at {} to `{}`", r.at(), s.to),
                )
                .with_source(e)
            })?;
        let Some((key, value)) = encoded else {
            return Err(Error::transient("shut down while publishing"));
        };
        let mut record = FutureRecord::to(&s.to).key(&key).payload(&value);
        if let Some(h) = syncline_core::kafka::change_headers(&decoded.event) {
            record = record.headers(h);
        }
        io::send(&self.producer, record)
    }
}
