//! The running `rules` processor: consume the input topics in a consumer
//! group, apply the compiled steps to each change, produce the outputs.
//!
//! # Guarantee and commit order
//! At least once, with stable identity. For each batch of consumed records:
//! 1. every output (and every dead-lettered record) is handed to an
//!    idempotent producer, in input order;
//! 2. the processor waits until the broker has acknowledged every one of them;
//! 3. only then are the batch's input offsets committed to Kafka.
//!
//! A crash between 1 and 3 replays the batch from the last committed
//! offsets. Rules are a pure function of the change and every output keeps
//! the input's `source.name` and `source.position`, so a replayed output is
//! equal to the first one, identity included: syncline sinks drop it, and the
//! result at the target is exactly once. Other consumers of the output topic
//! can see such duplicates (see processors/README.md). Nothing is lost: an
//! offset is never committed before its outputs are safe on the broker.
//!
//! With `kafka.exactly_once: transactions`, steps 1-3 are also one Kafka
//! transaction ([`crate::io::Transactional`]): the batch's outputs, dead
//! letters and input offsets commit together or not at all, so a
//! `read_committed` consumer of the outputs sees each change once, and an
//! instance that lost its partitions cannot commit.

use super::{CompiledRules, Outcome, StepConfig};
use crate::io::{self, retry, Raw, Transactional};
use crate::metrics::ProcessorMetrics;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncline_core::codec::{Decoded, Decoder, Encoder};
use syncline_core::error::ErrorKind;
use syncline_core::kafka::{DeadLetter, ExactlyOnce};
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::schema::avro_name;
use syncline_core::{Error, Op, Result, TableSchema};

/// The typed settings the running processor gets (no raw user words).
#[derive(Debug, Clone)]
pub struct Settings {
    pub group_id: String,
    pub dead_letter_topic: String,
    pub from: Vec<String>,
    pub to: String,
    pub steps: Vec<StepConfig>,
    pub batch_size: usize,
    pub batch_timeout: Duration,
}

/// A built `rules` processor, ready to run.
pub struct RulesProcessor {
    settings: Settings,
    ctx: ComponentContext,
}

impl RulesProcessor {
    pub(crate) fn new(settings: Settings, ctx: ComponentContext) -> Result<Self> {
        Ok(Self { settings, ctx })
    }

    /// Consume until `shutdown`, or until an error that retrying cannot fix.
    /// A batch not fully acknowledged at shutdown is not committed: it is
    /// read again on the next start.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let kafka = &self.ctx.kafka;
        let mut outputs = outputs(s);
        outputs.push(s.dead_letter_topic.clone());
        for t in &outputs {
            kafka.ensure_topic(t, kafka.partitions, false).await?;
        }
        let consumer: StreamConsumer = kafka.subscribed(
            &s.group_id,
            &s.from,
            rdkafka::consumer::DefaultConsumerContext,
        )?;
        let txn = match kafka.exactly_once {
            ExactlyOnce::Identity => None,
            ExactlyOnce::Transactions => Some(Transactional::new(&self.ctx, "").await?),
        };
        let producer = match &txn {
            Some(t) => t.producer().clone(),
            None => kafka.producer()?,
        };
        let mut lp = Loop {
            settings: s,
            component: &self.ctx.component,
            namespace: format!("syncline.{}", avro_name(&self.ctx.component)),
            decoder: self.ctx.decoder()?,
            encoder: Encoder::new(&self.ctx.registry)?,
            producer,
            txn,
            compiled: HashMap::new(),
            shutdown: &shutdown,
            metrics: ProcessorMetrics::new(&self.ctx),
        };
        tracing::info!(processor = %self.ctx.component, group = %s.group_id, from = ?s.from, to = %s.to, "rules processor started");
        let result = lp.run(&consumer).await;
        match &result {
            Ok(()) => tracing::info!(processor = %self.ctx.component, "rules processor stopped"),
            Err(e) => {
                tracing::error!(processor = %self.ctx.component, error = %e, "rules processor failed")
            }
        }
        result
    }
}

/// The topics changes may go to: `to` and every route's topic, each once.
fn outputs(s: &Settings) -> Vec<String> {
    output_topics(&s.to, &s.steps)
}

/// `to` and the topic of every `route` in `steps`, each once.
pub(crate) fn output_topics(to: &str, steps: &[StepConfig]) -> Vec<String> {
    let mut out = vec![to.to_string()];
    for step in steps {
        if let StepConfig::Route(rules) = step {
            for r in rules {
                if !out.contains(&r.topic) {
                    out.push(r.topic.clone());
                }
            }
        }
    }
    out
}

struct Loop<'a> {
    settings: &'a Settings,
    component: &'a str,
    namespace: String,
    decoder: Decoder,
    encoder: Encoder,
    producer: FutureProducer,
    /// Set with `kafka.exactly_once: transactions` (`producer` is its producer).
    txn: Option<Transactional>,
    /// Compiled steps per input value schema id: a new id (the input's shape
    /// changed) compiles the steps again.
    compiled: HashMap<u32, Arc<CompiledRules>>,
    shutdown: &'a Shutdown,
    metrics: ProcessorMetrics,
}

impl Loop<'_> {
    async fn run(&mut self, consumer: &StreamConsumer) -> Result<()> {
        let s = self.settings;
        while !self.shutdown.is_cancelled() {
            let Some(batch) = io::collect_batch(
                consumer,
                self.shutdown,
                self.component,
                s.batch_size,
                s.batch_timeout,
            )
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
            let processed = self.process(&batch).await;
            if !matches!(processed, Ok(Some(()))) {
                // Shutdown or a failure in the middle of the batch: nothing
                // of it may count.
                if let Some(txn) = &self.txn {
                    txn.abort_blocking();
                }
                return processed.map(|_| ());
            }
            let started = Instant::now();
            let next = io::next_offsets(
                batch
                    .iter()
                    .map(|r| (r.topic.as_str(), r.partition, r.offset)),
            );
            if let Some(txn) = &self.txn {
                let group = io::group_metadata(consumer)?;
                txn.commit(io::offset_list(&next)?, group).await?;
            } else if let Err(e) = consumer.commit(&io::offset_list(&next)?, CommitMode::Sync) {
                // A failed commit (e.g. the partition moved to another
                // member) only means those records are read again: their
                // outputs are replays with equal identity.
                tracing::warn!(processor = %self.component, error = %e, "cannot commit input offsets; they will be read again");
            }
            self.metrics
                .commit_seconds
                .record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Produce the outputs of `batch` and wait until the broker has every
    /// one. `None`: shutdown came first (nothing may be committed).
    async fn process(&mut self, batch: &[Raw]) -> Result<Option<()>> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(batch.len());
        let (mut emitted, mut filtered, mut dead) = (0usize, 0usize, 0usize);
        for r in batch {
            let at = r.at();
            let decoded = retry(
                self.shutdown,
                self.component,
                "schema registry unavailable",
                || self.decoder.decode(r.key.as_deref(), r.value.as_deref()),
            )
            .await;
            let decoded = match decoded {
                Ok(Some(d)) => d,
                Ok(None) => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Data => {
                    let reason = format!("cannot decode the record at {at}: {e}");
                    pending.push(self.dead_letter(r, &reason)?);
                    dead += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let rules = match self.rules_for(&decoded, &r.topic) {
                Ok(rules) => rules,
                // Steps that name `key.*` cannot compile without the key
                // columns, which a keyless TRUNCATE does not carry.
                Err(e) if decoded.event.op == Op::Truncate => {
                    let reason =
                        format!("a TRUNCATE at {at} came before any row of its shape, and {e}");
                    pending.push(self.dead_letter(r, &reason)?);
                    dead += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match rules.apply(&decoded.event) {
                Outcome::Filtered => filtered += 1,
                Outcome::Failed { reason } => {
                    let reason = format!("the steps failed on the record at {at}: {reason}");
                    pending.push(self.dead_letter(r, &reason)?);
                    dead += 1;
                }
                Outcome::Emit { event, .. } if event.op == Op::Truncate => {
                    if self.settings.from.len() > 1 {
                        let reason = format!(
                            "the record at {at} is a TRUNCATE of one of several input topics merged into one \
                             output; applying it would empty the rows of the others too, so it is not forwarded"
                        );
                        pending.push(self.dead_letter(r, &reason)?);
                        dead += 1;
                        continue;
                    }
                    // Every output may hold rows of the truncated table.
                    for topic in outputs(self.settings) {
                        let sent = retry(
                            self.shutdown,
                            self.component,
                            "cannot publish a TRUNCATE",
                            || async {
                                let value = self
                                    .encoder
                                    .encode_truncate(&topic, rules.output_schema(), &event)
                                    .await?;
                                io::broadcast(&self.producer, &topic, &value).await
                            },
                        )
                        .await?;
                        let Some(sent) = sent else {
                            return Ok(None);
                        };
                        pending.extend(sent);
                    }
                    emitted += 1;
                }
                Outcome::Emit { topic, event } => {
                    let topic = topic.as_deref().unwrap_or(&self.settings.to);
                    let schema = rules.output_schema();
                    // Registers the output schemas once per shape: an
                    // incompatible one is a Data error, before anything is produced.
                    let encoded = retry(
                        self.shutdown,
                        self.component,
                        "schema registry unavailable",
                        || self.encoder.encode(topic, schema, &event),
                    )
                    .await
                    .map_err(|e| {
                        Error::new(
                            e.kind(),
                            format!("cannot publish the output of the record at {at} to `{topic}`"),
                        )
                        .with_source(e)
                    })?;
                    let Some((key, value)) = encoded else {
                        return Ok(None);
                    };
                    pending.push(self.send(FutureRecord::to(topic).key(&key).payload(&value))?);
                    emitted += 1;
                }
            }
        }
        if io::acknowledged(self.shutdown, pending).await?.is_none() {
            return Ok(None);
        }
        self.metrics.records_out.increment(emitted as u64);
        self.metrics.filtered.increment(filtered as u64);
        self.metrics.dead_lettered.increment(dead as u64);
        tracing::debug!(processor = %self.component, records = batch.len(), emitted, filtered, dead_lettered = dead, "batch published");
        Ok(Some(()))
    }

    /// The steps compiled for this record's input shape (compiled on first sight).
    fn rules_for(&mut self, d: &Decoded, topic: &str) -> Result<Arc<CompiledRules>> {
        if let Some(r) = self.compiled.get(&d.value_schema_id) {
            return Ok(r.clone());
        }
        let input = TableSchema {
            namespace: self.namespace.clone(),
            name: avro_name(topic),
            columns: d.columns.as_ref().clone(),
            primary_key: d.key_columns.as_ref().clone(),
        };
        let rules = CompiledRules::compile(&self.settings.steps, &input).map_err(|issues| {
            let text: Vec<String> = issues
                .iter()
                .map(|i| {
                    format!(
                        "steps{}: {}",
                        if i.path.is_empty() {
                            String::new()
                        } else {
                            format!(".{}", i.path)
                        },
                        i.message
                    )
                })
                .collect();
            Error::config(format!(
                "the steps do not fit the records of `{topic}` (value schema id {}): {}",
                d.value_schema_id,
                text.join("; ")
            ))
        })?;
        let rules = Arc::new(rules);
        // A TRUNCATE carries no key to learn the key columns from: its
        // compilation serves it alone (its value schema is the same).
        if d.event.op != Op::Truncate {
            self.compiled.insert(d.value_schema_id, rules.clone());
        }
        Ok(rules)
    }

    /// Send a record to the dead-letter topic, unchanged, with the reason
    /// and where it came from. Acknowledged with the rest of the batch.
    fn dead_letter(&self, r: &Raw, reason: &str) -> Result<DeliveryFuture> {
        let record = DeadLetter {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            reason,
        }
        .record(&self.settings.dead_letter_topic);
        tracing::warn!(processor = %self.component, dead_letter_topic = %self.settings.dead_letter_topic, reason, "record dead-lettered");
        self.send(record)
    }

    fn send<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
        &self,
        record: FutureRecord<'_, K, P>,
    ) -> Result<DeliveryFuture> {
        io::send(&self.producer, record)
    }
}
