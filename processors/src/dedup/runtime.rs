//! The running `dedup` processor.
//!
//! Two stages of the connector runtime (`syncline_runtime::consume`), each a
//! member of its own consumer group, so that N instances split both; the
//! runtime consumes, batches, decodes, dead-letters, retries and rebalances
//! (eager or cooperative), and the stages say what is particular to dedup:
//! - **repartition** (only when `by` is not `identity`, or several topics are
//!   read): every change goes, unchanged, to the repartition topic keyed by
//!   its partition key (the original key rides along in the `syncline.key`
//!   header): duplicates meet in one partition, in the order that topic
//!   fixes once and for all, and for `identity` and `content` all changes
//!   of a row go through one partition, so they leave in their order
//!   ([`DedupKey::partition_key`]). The dedup stage computes the dedup key
//!   from the change itself.
//! - **dedup**: reads one topic (the repartition topic, or the only input)
//!   and keeps, per partition, the set of keys seen in RocksDB
//!   ([`super::store`]), backed up to the changelog ([`super::changelog`]).
//!
//! # Guarantee and commit order
//! For each batch the dedup stage consumed, in this order (records that
//! cannot be decoded or keyed were dead-lettered by the runtime, and
//! acknowledged, before [`Stage::write`] is called):
//! 1. decide each record against the state as of the batch's start plus the
//!    batch's own earlier records (a key's first appearance passes, later
//!    ones within the TTL are dropped); encode every output (one that cannot
//!    be encoded refuses the batch before anything is produced, and the
//!    runtime splits the batch to dead-letter that record alone), then hand
//!    them to the idempotent producer;
//! 2. wait until the broker has acknowledged all of them;
//! 3. produce the batch's state changes to the changelog, each partition's
//!    ending with its `next input offset` record, and wait for those acks;
//! 4. write one RocksDB `WriteBatch` per partition: the state changes, the
//!    next input offset and stream time, and the changelog offset reached;
//! 5. the runtime commits the input offsets to Kafka (advisory only: for lag
//!    tools; [`OffsetsHome::Stage`]).
//!
//! Without transactions, the wait of step 3 and step 4 run one batch late
//! ([`Tail`]): the next batch is consumed, decided (against the store plus
//! this batch's keys, so the same decisions) and published while this
//! batch's changelog records travel, and its write finishes this batch's
//! steps 3-4 before it sends its own changelog records. The order above
//! holds for every batch.
//!
//! On assignment ([`Stage::assigned`]) a partition restores its state from
//! the changelog (from where the local copy stopped, or from the start when
//! it is missing) and resumes at the input offset stored *with the state*,
//! never at Kafka's.
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
//! With `kafka.exactly_once: transactions` ([`crate::transaction::Transactional`]),
//! steps 1-3 are one Kafka transaction that also carries the input offsets
//! (step 5 becomes part of it), committed before step 4: outputs, changelog
//! records and offsets count together or not at all (dead letters go through
//! the runtime's own producer, outside it: at least once), so
//! a `read_committed` consumer sees each passed change once, and a stale
//! instance is fenced. On assignment the runtime fetches the committed
//! offsets first with `require_stable` ([`Stage::transactional`]), which
//! waits until a transaction still open on the partition has ended; the
//! changelog is then restored up to its last stable offset.
//! A crash after the commit and before step 4 is repaired by that restore.
//! The repartition stage commits each batch in a transaction of its own.
//!
//! Poison: a record that cannot be decoded, whose dedup key cannot be made
//! (a `fields` column missing), or whose output cannot be encoded goes to
//! the dead-letter topic with the reason and its origin (the runtime's
//! isolation); the rest of its batch is decided and published in order.

use super::changelog;
use super::key::{DedupKey, Key};
use super::store::{PartitionCommit, Store};
use crate::metrics::ProcessorMetrics;
use crate::output_error;
use crate::transaction::{in_transaction, Transactional};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncline_core::change::{ORIGINAL_KEY_HEADER, UNCHANGED_HEADER};
use syncline_core::codec::{Decoded, Encoder};
use syncline_core::error::{Context, ErrorKind};
use syncline_core::kafka::{ExactlyOnce, KafkaConfig};
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::schema::avro_name;
use syncline_core::{ChangeEvent, Error, Op, Result, TableSchema};
use syncline_runtime::consume::{self, ConsumeSettings};
use syncline_runtime::produce;
use syncline_runtime::publish::{Pending, Publisher};
use syncline_runtime::record::Origin;
use syncline_runtime::{BatchSettings, Commit, OffsetsHome, Record, Stage, TopicPartition};

/// Most expired entries removed per partition and batch (the rest go in
/// the next batches), so that one sweep never stalls the stream.
const SWEEP_LIMIT: usize = 10_000;

/// Longest wait for the last batch's state when partitions are revoked or
/// the processor stops ([`Tail`]).
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

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
    pub batch: BatchSettings,
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

    /// Run both stages until `shutdown` or until one fails for good (which
    /// stops the other).
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let kafka = &self.ctx.kafka;
        kafka.ensure_topic(&s.to, kafka.partitions, false).await?;
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
        let store = Store::open(&s.state_dir)?;
        let metrics = ProcessorMetrics::new(&self.ctx);
        tracing::info!(processor = %self.ctx.component, group = %s.group_id, from = ?s.from, to = %s.to, by = ?s.key, ttl = ?s.ttl, state = %s.state_dir.display(), "dedup processor started");

        let transactions = kafka.exactly_once == ExactlyOnce::Transactions;
        let stop = shutdown.child_token();
        let repartition = match &s.repartition_topic {
            None => None,
            Some(topic) => {
                let txn = match transactions {
                    true => Some(Transactional::new(&self.ctx, ".repartition").await?),
                    false => None,
                };
                let stage = Repartition {
                    key: s.key.clone(),
                    topic: topic.clone(),
                    merged: s.from.len() > 1,
                    producer: match &txn {
                        Some(t) => t.producer().clone(),
                        None => kafka.producer()?,
                    },
                    txn,
                    shutdown: stop.clone(),
                };
                let consume = ConsumeSettings {
                    kind: "dedup.repartition",
                    group_id: format!("{}.repartition", s.group_id),
                    topics: s.from.clone(),
                    batch: s.batch.clone(),
                    dead_letter_topic: s.dead_letter_topic.clone(),
                };
                let (ctx, stop) = (self.ctx.clone(), stop.clone());
                Some(tokio::spawn(async move {
                    let r = consume::run(&ctx, consume, stage, stop.clone()).await;
                    stop.cancel();
                    r
                }))
            }
        };
        let txn = match transactions {
            true => Some(Transactional::new(&self.ctx, "").await?),
            false => None,
        };
        let producer = match &txn {
            Some(t) => t.producer().clone(),
            None => kafka.producer()?,
        };
        let stage = Dedup {
            settings: s.clone(),
            component: self.ctx.component.clone(),
            kafka: kafka.clone(),
            namespace: format!("syncline.{}", avro_name(&self.ctx.component)),
            publisher: Publisher::new(Encoder::new(&self.ctx.registry)?, producer),
            txn,
            store,
            schemas: HashMap::new(),
            metrics,
            shutdown: stop.clone(),
            last_size: Instant::now() - Duration::from_secs(60),
            tail: None,
        };
        let consume = ConsumeSettings {
            kind: "dedup",
            group_id: s.group_id.clone(),
            topics: vec![input],
            batch: s.batch.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
        };
        let dedup_result = consume::run(&self.ctx, consume, stage, stop.clone()).await;
        stop.cancel();
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

/// The first stage: re-key every change by its partition key
/// ([`DedupKey::partition_key`]: duplicates meet, a row's changes keep their
/// order). Stateless, at
/// least once (the runtime commits the offsets after the broker
/// acknowledged the batch; with transactions, in the batch's transaction);
/// a replayed record has the same dedup key, so the dedup stage drops it.
struct Repartition {
    key: DedupKey,
    topic: String,
    /// Several input topics merge into one output.
    merged: bool,
    producer: FutureProducer,
    txn: Option<Transactional>,
    shutdown: Shutdown,
}

/// A record re-keyed by its partition key (`None`: a TRUNCATE, to every partition).
struct Rekeyed {
    key: Option<Key>,
    record: Record,
}

impl Stage for Repartition {
    type Item = Rekeyed;

    fn offsets_home(&self) -> OffsetsHome {
        OffsetsHome::Kafka
    }

    fn transactional(&self) -> bool {
        self.txn.is_some()
    }

    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Rekeyed>> {
        let key = match decoded.event.op {
            Op::Truncate if self.merged => return Err(crate::merged_truncate()),
            Op::Truncate => None,
            _ => Some(
                self.key
                    .partition_key(&decoded.event)
                    .map_err(Error::data)?,
            ),
        };
        Ok(Some(Rekeyed {
            key,
            record: record.clone(),
        }))
    }

    async fn write(&mut self, items: &[Rekeyed], commit: &Commit<'_>) -> Result<usize> {
        in_transaction(self.txn.as_ref(), commit, self.rekey(items)).await
    }
}

impl Repartition {
    /// Produce `items` to the repartition topic, unchanged but for the key,
    /// and wait for the broker.
    async fn rekey(&self, items: &[Rekeyed]) -> Result<usize> {
        let mut pending = Vec::with_capacity(items.len());
        for it in items {
            let value = it.record.value.as_deref().unwrap_or_default();
            let Some(key) = &it.key else {
                pending.extend(produce::broadcast(&self.producer, &self.topic, value).await?);
                continue;
            };
            // The original key, and the unchanged columns, ride along.
            let mut headers = OwnedHeaders::new();
            if let Some(k) = &it.record.key {
                headers = headers.insert(Header {
                    key: ORIGINAL_KEY_HEADER,
                    value: Some(&k[..]),
                });
            }
            if let Some(u) = it.record.header(UNCHANGED_HEADER) {
                headers = headers.insert(Header {
                    key: UNCHANGED_HEADER,
                    value: Some(u),
                });
            }
            let record = FutureRecord::to(&self.topic)
                .key(&key[..])
                .payload(value)
                .headers(headers);
            pending.push(produce::send(&self.producer, record)?);
        }
        match produce::acknowledged(&self.shutdown, pending).await? {
            Some(_) => Ok(items.len()),
            None => Err(Error::transient("shut down while publishing")),
        }
    }
}

/// The dedup stage: decides, publishes what passes, and stores its state
/// with the input offsets (see the module's commit order).
struct Dedup {
    settings: Settings,
    component: String,
    kafka: KafkaConfig,
    namespace: String,
    publisher: Publisher,
    txn: Option<Transactional>,
    store: Store,
    /// Output table shape per input value schema id.
    schemas: HashMap<u32, Arc<TableSchema>>,
    metrics: ProcessorMetrics,
    shutdown: Shutdown,
    last_size: Instant,
    /// The last batch's step 3 in flight (never with transactions).
    tail: Option<Tail>,
}

/// A change ready to decide: its partition, dedup key (`None`: a TRUNCATE,
/// never deduplicated, since applying it twice is harmless) and output shape.
struct Candidate {
    partition: i32,
    key: Option<Key>,
    table: Arc<TableSchema>,
    event: ChangeEvent,
    at: Origin,
}

/// One partition's decisions within a write.
struct PartitionBatch {
    stream_time: i64,
    /// Keys passed earlier in this write (not in the store yet). Keys are
    /// SHA-256 digests: a fast hasher is enough.
    overlay: HashMap<Key, i64, foldhash::fast::RandomState>,
    commit: PartitionCommit,
    /// The next input offset the store holds.
    stored_next: Option<i64>,
}

impl Stage for Dedup {
    type Item = Candidate;

    fn offsets_home(&self) -> OffsetsHome {
        OffsetsHome::Stage
    }

    fn transactional(&self) -> bool {
        self.txn.is_some()
    }

    /// Restore each partition's state from the changelog; resume at the
    /// input offset stored with it.
    async fn assigned(&mut self, parts: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>> {
        self.finish_tail(&self.shutdown.clone()).await?;
        let mut out = HashMap::new();
        for (topic, partition) in parts {
            changelog::restore(
                &self.kafka,
                &self.settings.changelog_topic,
                *partition,
                &self.store,
                self.settings.ttl.is_some(),
                |done, remaining| {
                    self.metrics.restored.absolute(done);
                    self.metrics.restore_remaining.set(remaining as f64);
                },
            )?;
            if let Some(o) = self.store.meta(*partition)?.next_input {
                out.insert((topic.clone(), *partition), o);
            }
        }
        tracing::info!(processor = %self.component, partitions = ?parts.iter().map(|p| p.1).collect::<Vec<_>>(),
            "state restored; resuming at the offsets stored with it");
        Ok(out)
    }

    /// Finish the last batch's state (step 4) before its partitions move,
    /// so that their next owner restores it.
    async fn revoked(&mut self, _parts: &[TopicPartition]) {
        self.finish_tail_retrying("partitions revoked").await;
    }

    async fn close(&mut self) -> Result<()> {
        self.finish_tail_retrying("shutting down").await;
        Ok(())
    }

    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Candidate>> {
        let table = self.output_schema(&decoded);
        let key = match decoded.event.op {
            Op::Truncate => None,
            _ => Some(self.settings.key.of(&decoded.event).map_err(Error::data)?),
        };
        Ok(Some(Candidate {
            partition: record.partition,
            key,
            table,
            event: decoded.event,
            at: record.origin(),
        }))
    }

    async fn write(&mut self, items: &[Candidate], commit: &Commit<'_>) -> Result<usize> {
        let mut parts = self.partitions(commit)?;
        let (passed, dropped) = self.decide(items, &mut parts)?;
        // Everything is encoded before anything is produced.
        let to = self.settings.to.clone();
        let mut encoded = Vec::with_capacity(passed.len());
        for c in &passed {
            if c.key.is_some() {
                encoded.push(
                    self.publisher
                        .encode(&to, &c.table, &c.event)
                        .await
                        .map_err(|e| output_error(e, &c.at, &to))?,
                );
            }
        }
        if self.txn.is_some() {
            // Steps 1-3 in one transaction, then 4.
            let work = async {
                self.publish(&passed, encoded).await?;
                let records = self.changelog_records(&mut parts)?;
                let sent = self.send_changelog(&records)?;
                let Some(acks) = produce::acknowledged(&self.shutdown, sent).await? else {
                    return Err(Error::transient("shut down while storing the state"));
                };
                note_changelog_offsets(&mut parts, &acks);
                Ok(())
            };
            in_transaction(self.txn.as_ref(), commit, work).await?;
            self.store_state(&parts)?;
        } else {
            // 2, then the last batch's 3 and 4, then this batch's 3
            // without waiting (see [`Tail`]).
            self.publish(&passed, encoded).await?;
            self.finish_tail(&self.shutdown.clone()).await?;
            let records = self.changelog_records(&mut parts)?;
            let sent = self.send_changelog(&records)?;
            self.tail = Some(Tail {
                parts,
                records,
                sent,
            });
        }
        self.metrics.deduplicated.increment(dropped);
        if self.last_size.elapsed() > Duration::from_secs(1) {
            let (keys, bytes) = self.store.size();
            self.metrics.state_keys.set(keys as f64);
            self.metrics.state_bytes.set(bytes as f64);
            self.last_size = Instant::now();
        }
        Ok(passed.len())
    }
}

/// The last batch's step 3 in flight: its changelog records were sent
/// (after its outputs were acknowledged); the next write waits for their
/// acknowledgement and does step 4 (after that write's own outputs are
/// acknowledged, before its own changelog records are sent). So the
/// changelog round trip overlaps the next batch's consuming, decoding and
/// deciding, and one batch's changelog records always follow the last
/// one's. The next batch is decided against the store plus this batch's
/// keys and stream time ([`Dedup::partitions`], [`Dedup::decide`]): the
/// same decisions as after step 4.
///
/// A crash with a tail in flight is a crash during step 3 (see the module
/// doc): nothing more is needed for the guarantee. A revocation and a
/// shutdown still finish the tail ([`Stage::revoked`], [`Stage::close`]),
/// so that the partition's next owner, or the next start, does not consume
/// the batch again and repeat its outputs.
struct Tail {
    parts: BTreeMap<i32, PartitionBatch>,
    /// The changelog records, kept to send again if the broker failed them.
    records: Vec<(i32, changelog::Encoded)>,
    /// Their deliveries; empty once a failed attempt consumed them.
    sent: Vec<rdkafka::producer::DeliveryFuture>,
}

/// Note the changelog offsets each partition reached.
fn note_changelog_offsets(parts: &mut BTreeMap<i32, PartitionBatch>, acks: &[(i32, i64)]) {
    for &(partition, offset) in acks {
        if let Some(pb) = parts.get_mut(&partition) {
            pb.commit.next_changelog = pb.commit.next_changelog.max(offset + 1);
        }
    }
}

impl Dedup {
    /// The partitions this write covers (every partition of the input whose
    /// offset it stores), with their state's stream time: the stored one,
    /// or the one the batch in flight brings it to ([`Tail`]).
    fn partitions(&self, commit: &Commit<'_>) -> Result<BTreeMap<i32, PartitionBatch>> {
        let mut parts = BTreeMap::new();
        for ((_, partition), &next) in commit.next() {
            let (stream_time, stored_next) =
                match self.tail.as_ref().and_then(|t| t.parts.get(partition)) {
                    Some(pb) => (pb.stream_time, Some(pb.commit.next_input)),
                    None => {
                        let meta = self.store.meta(*partition)?;
                        (meta.stream_time, meta.next_input)
                    }
                };
            parts.insert(
                *partition,
                PartitionBatch {
                    stream_time,
                    overlay: HashMap::default(),
                    commit: PartitionCommit {
                        next_input: next,
                        stream_time,
                        ..Default::default()
                    },
                    stored_next,
                },
            );
        }
        Ok(parts)
    }

    /// Step 1: which of `items` pass (in order), and how many were dropped.
    fn decide<'a>(
        &self,
        items: &'a [Candidate],
        parts: &mut BTreeMap<i32, PartitionBatch>,
    ) -> Result<(Vec<&'a Candidate>, u64)> {
        let ttl_us = self.settings.ttl.map(|t| t.as_micros() as i64);
        // The state as of the batch's start, for every key the batch has:
        // the batch in flight's keys, else the store's.
        let stored = self.store.seen_many(
            items
                .iter()
                .filter_map(|c| Some((c.partition, c.key.as_ref()?))),
        )?;
        let in_flight = |partition: i32, key: &Key| {
            let pb = self.tail.as_ref()?.parts.get(&partition)?;
            pb.overlay.get(key).copied()
        };
        let mut stored = stored.into_iter();
        let mut passed = Vec::with_capacity(items.len());
        let mut dropped = 0;
        for c in items {
            let Some(key) = c.key else {
                passed.push(c);
                continue;
            };
            let before = stored.next().expect("one lookup per keyed candidate");
            let pb = parts.get_mut(&c.partition).ok_or_else(|| {
                Error::internal(format!(
                    "the record at {} is not covered by the offsets of its write",
                    c.at
                ))
            })?;
            let ts = c.event.source.ts_us;
            pb.stream_time = pb.stream_time.max(ts);
            let seen = match pb.overlay.get(&key) {
                Some(t) => Some(*t),
                None => in_flight(c.partition, &key).or(before),
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
            passed.push(c);
        }
        Ok((passed, dropped))
    }

    /// Step 2: produce what passed and wait for it.
    async fn publish(
        &self,
        passed: &[&Candidate],
        encoded: Vec<syncline_runtime::publish::Encoded>,
    ) -> Result<()> {
        let to = &self.settings.to;
        let mut encoded = encoded.iter();
        let mut pending: Vec<Pending> = Vec::with_capacity(passed.len());
        for c in passed {
            if c.key.is_none() {
                pending.extend(
                    self.publisher
                        .publish_truncate(to, &c.table, &c.event)
                        .await
                        .map_err(|e| output_error(e, &c.at, to))?,
                );
                continue;
            }
            let e = encoded
                .next()
                .expect("one encoded output per passed change");
            pending.push(self.publisher.send(e)?);
        }
        // The outputs are safe before any state says they were sent.
        match self.publisher.acknowledged(&self.shutdown, pending).await? {
            Some(_) => Ok(()),
            None => Err(Error::transient("shut down while publishing")),
        }
    }

    /// Step 3's records: the state changes and the offsets they cover, per
    /// partition (the TTL's expired entries read from the store, which
    /// holds every earlier batch by now).
    fn changelog_records(
        &self,
        parts: &mut BTreeMap<i32, PartitionBatch>,
    ) -> Result<Vec<(i32, changelog::Encoded)>> {
        let ttl_us = self.settings.ttl.map(|t| t.as_micros() as i64);
        let mut records: Vec<(i32, changelog::Encoded)> = Vec::new();
        for (&partition, pb) in parts.iter_mut() {
            if let Some(ttl) = ttl_us {
                let cutoff = pb.stream_time.saturating_sub(ttl).saturating_add(1);
                pb.commit.expired = self
                    .store
                    .older_than(partition, cutoff, SWEEP_LIMIT)?
                    .into_iter()
                    .filter(|(k, _)| !pb.overlay.contains_key(k))
                    .collect();
            }
            let unchanged = pb.commit.puts.is_empty()
                && pb.commit.expired.is_empty()
                && pb.stream_time == pb.commit.stream_time
                && pb.stored_next == Some(pb.commit.next_input);
            pb.commit.stream_time = pb.stream_time;
            if unchanged {
                continue;
            }
            for (key, _) in &pb.commit.expired {
                records.push((partition, changelog::Record::Expired { key: *key }.encode()));
            }
            for (key, ts, _) in &pb.commit.puts {
                records.push((
                    partition,
                    changelog::Record::Seen { key: *key, ts: *ts }.encode(),
                ));
            }
            records.push((
                partition,
                changelog::Record::Offsets {
                    next_input: pb.commit.next_input,
                    stream_time: pb.stream_time,
                }
                .encode(),
            ));
        }
        Ok(records)
    }

    /// Step 3: hand the changelog records to the producer.
    fn send_changelog(
        &self,
        records: &[(i32, changelog::Encoded)],
    ) -> Result<Vec<rdkafka::producer::DeliveryFuture>> {
        let producer = self.publisher.producer();
        records
            .iter()
            .map(|(partition, encoded)| {
                produce::send(
                    producer,
                    changelog::Record::to_kafka(
                        &self.settings.changelog_topic,
                        *partition,
                        encoded,
                    ),
                )
            })
            .collect()
    }

    /// Step 4: state and offsets, one write per partition.
    fn store_state(&self, parts: &BTreeMap<i32, PartitionBatch>) -> Result<()> {
        let ttl = self.settings.ttl.is_some();
        for (&partition, pb) in parts {
            // (a partition with nothing new wrote no changelog record)
            if pb.commit.next_changelog > 0 {
                self.store.commit(partition, &pb.commit, ttl)?;
            }
        }
        Ok(())
    }

    /// Wait for the batch in flight's changelog records (sending them again
    /// if the broker failed them) and store its state ([`Tail`]).
    async fn finish_tail(&mut self, stop: &Shutdown) -> Result<()> {
        let Some(mut tail) = self.tail.take() else {
            return Ok(());
        };
        let result = self.store_tail(&mut tail, stop).await;
        if result.is_err() {
            self.tail = Some(tail);
        }
        result
    }

    async fn store_tail(&self, tail: &mut Tail, stop: &Shutdown) -> Result<()> {
        if tail.sent.is_empty() && !tail.records.is_empty() {
            tail.sent = self.send_changelog(&tail.records)?;
        }
        let sent = std::mem::take(&mut tail.sent);
        let Some(acks) = produce::acknowledged(stop, sent).await? else {
            return Err(Error::transient("shut down while storing the state"));
        };
        note_changelog_offsets(&mut tail.parts, &acks);
        self.store_state(&tail.parts)
    }

    /// [`Self::finish_tail`], retried with backoff until it succeeds, for at
    /// most [`CLOSE_LIMIT`] (also when the processor is shutting down: its
    /// outputs are acknowledged, storing the state spares their repetition).
    /// Given up, the batch is consumed again on the next start, and its
    /// repeated outputs have equal identities.
    async fn finish_tail_retrying(&mut self, why: &str) {
        let stop = Shutdown::new();
        let deadline = Instant::now() + CLOSE_LIMIT;
        let mut backoff = syncline_runtime::backoff::Backoff::default();
        let timer = stop.clone();
        let timeout = tokio::spawn(async move {
            tokio::time::sleep(CLOSE_LIMIT).await;
            timer.cancel();
        });
        while self.tail.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.finish_tail(&stop).await {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline || !e.is_transient() => {
                    tracing::warn!(processor = %self.component, error = %e, "{why}: the last batch's state is not stored; its input is consumed again");
                    self.tail = None;
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay().min(left);
                    tracing::warn!(processor = %self.component, error = %e, attempt = backoff.attempts(), "{why}: cannot store the last batch's state yet; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        timeout.abort();
    }

    /// The output schema of records with `decoded`'s shape.
    fn output_schema(&mut self, decoded: &Decoded) -> Arc<TableSchema> {
        if let Some(t) = self.schemas.get(&decoded.value_schema_id) {
            return t.clone();
        }
        let t = Arc::new(TableSchema {
            namespace: self.namespace.clone(),
            name: avro_name(&self.settings.to),
            columns: decoded.columns.as_ref().clone(),
            primary_key: decoded.key_columns.as_ref().clone(),
        });
        // A TRUNCATE has no key to learn the key columns from: not cached.
        if decoded.event.op != Op::Truncate {
            self.schemas.insert(decoded.value_schema_id, t.clone());
        }
        t
    }
}
