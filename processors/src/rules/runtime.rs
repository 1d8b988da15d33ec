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

use super::{CompiledRules, Outcome, StepConfig};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use syncline_core::codec::{Decoded, Decoder, Encoder};
use syncline_core::error::ErrorKind;
use syncline_core::kafka::DeadLetter;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::schema::avro_name;
use syncline_core::{Error, Result, TableSchema};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

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

/// A record as consumed, owned so that it outlives the poll.
struct Raw {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// The offsets to commit once a batch's outputs are acknowledged: per
/// partition, one past the last record consumed.
fn next_offsets<'a>(
    records: impl Iterator<Item = (&'a str, i32, i64)>,
) -> BTreeMap<(String, i32), i64> {
    let mut next = BTreeMap::new();
    for (topic, partition, offset) in records {
        let e = next
            .entry((topic.to_string(), partition))
            .or_insert(offset + 1);
        *e = (*e).max(offset + 1);
    }
    next
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
        let mut outputs = vec![s.to.clone()];
        for step in &s.steps {
            if let StepConfig::Route(rules) = step {
                outputs.extend(rules.iter().map(|r| r.topic.clone()));
            }
        }
        outputs.push(s.dead_letter_topic.clone());
        for t in &outputs {
            kafka.ensure_topic(t, kafka.partitions, false).await?;
        }
        let consumer: StreamConsumer = kafka.subscribed(
            &s.group_id,
            &s.from,
            rdkafka::consumer::DefaultConsumerContext,
        )?;
        let mut lp = Loop {
            settings: s,
            component: &self.ctx.component,
            namespace: format!("syncline.{}", avro_name(&self.ctx.component)),
            decoder: Decoder::new(&self.ctx.registry)?,
            encoder: Encoder::new(&self.ctx.registry)?,
            producer: kafka.producer()?,
            compiled: HashMap::new(),
            shutdown: &shutdown,
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

struct Loop<'a> {
    settings: &'a Settings,
    component: &'a str,
    namespace: String,
    decoder: Decoder,
    encoder: Encoder,
    producer: FutureProducer,
    /// Compiled steps per input value schema id: a new id (the input's shape
    /// changed) compiles the steps again.
    compiled: HashMap<u32, Arc<CompiledRules>>,
    shutdown: &'a Shutdown,
}

impl Loop<'_> {
    async fn run(&mut self, consumer: &StreamConsumer) -> Result<()> {
        let mut batch: Vec<Raw> = Vec::with_capacity(self.settings.batch_size);
        while !self.shutdown.is_cancelled() {
            batch.clear();
            let deadline = tokio::time::Instant::now() + self.settings.batch_timeout;
            while batch.len() < self.settings.batch_size {
                let wait = if batch.is_empty() {
                    Duration::from_millis(100)
                } else {
                    deadline.saturating_duration_since(tokio::time::Instant::now())
                };
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {
                        if !batch.is_empty() { break; }
                    }
                    m = consumer.recv() => match m {
                        Ok(m) => batch.push(Raw {
                            topic: m.topic().to_string(),
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            value: m.payload().map(<[u8]>::to_vec),
                        }),
                        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) => {
                            return Err(Error::transient("the Kafka consumer failed").with_source(e));
                        }
                        Err(e) => tracing::warn!(processor = %self.component, error = %e, "Kafka consumer error"),
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let Some(()) = self.process(&batch).await? else {
                return Ok(());
            };
            let next = next_offsets(
                batch
                    .iter()
                    .map(|r| (r.topic.as_str(), r.partition, r.offset)),
            );
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &next {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| Error::internal("bad partition list").with_source(e))?;
            }
            // A failed commit (e.g. the partition moved to another member)
            // only means those records are read again: their outputs are
            // replays with equal identity.
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(processor = %self.component, error = %e, "cannot commit input offsets; they will be read again");
            }
        }
        Ok(())
    }

    /// Produce the outputs of `batch` and wait until the broker has every
    /// one. `None`: shutdown came first (nothing may be committed).
    async fn process(&mut self, batch: &[Raw]) -> Result<Option<()>> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(batch.len());
        let (mut emitted, mut filtered, mut dead) = (0usize, 0usize, 0usize);
        for r in batch {
            let at = format!("{}[{}]@{}", r.topic, r.partition, r.offset);
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
            let rules = self.rules_for(&decoded, &r.topic)?;
            match rules.apply(&decoded.event) {
                Outcome::Filtered => filtered += 1,
                Outcome::Failed { reason } => {
                    let reason = format!("the steps failed on the record at {at}: {reason}");
                    pending.push(self.dead_letter(r, &reason)?);
                    dead += 1;
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
        for delivery in pending {
            let acked = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(None),
                d = delivery => d,
            };
            match acked {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(
                        Error::transient("the broker did not acknowledge an output").with_source(e)
                    )
                }
                Err(_) => return Err(Error::transient("the producer dropped an output")),
            }
        }
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
        self.compiled.insert(d.value_schema_id, rules.clone());
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

    /// Enqueue a record; when the producer's queue is full, wait for it to drain.
    fn send<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
        &self,
        mut record: FutureRecord<'_, K, P>,
    ) -> Result<DeliveryFuture> {
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    self.producer.poll(Duration::from_millis(50));
                    record = r;
                }
                Err((e, _)) => {
                    return Err(Error::transient("cannot enqueue an output").with_source(e))
                }
            }
        }
    }
}

/// Run `f` until it succeeds or fails for good; transient errors are retried
/// with backoff. `None`: shutdown came first.
async fn retry<T, F, Fut>(
    shutdown: &Shutdown,
    component: &str,
    what: &str,
    mut f: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.is_transient() => {
                tracing::warn!(processor = %component, error = %e, retry_in_ms = delay.as_millis() as u64, "{what}; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_one_past_the_last_record_of_each_partition() {
        let next = next_offsets(
            [
                ("a", 0, 5),
                ("a", 1, 2),
                ("a", 0, 7),
                ("b", 0, 0),
                ("a", 0, 6),
            ]
            .into_iter(),
        );
        let got: Vec<_> = next.into_iter().collect();
        assert_eq!(
            got,
            [
                (("a".to_string(), 0), 8),
                (("a".to_string(), 1), 3),
                (("b".to_string(), 0), 1)
            ]
        );
    }
}
