//! Kafka plumbing of the `dedup` stages, which do not run on the connector
//! runtime yet: owned records, batching a consumer, broadcasting a
//! truncate, and Kafka transactions (shared with `rules`). Producing,
//! acknowledgements and retries are the runtime's (re-exported here).

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};

/// A record as consumed, owned so that it outlives the poll.
#[derive(Debug, Clone)]
pub struct Raw {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The `syncline.key` header: the original Kafka key of a record that
    /// went through a repartition topic (whose key is the dedup key).
    pub original_key: Option<Vec<u8>>,
    /// The `syncline.unchanged` header, as is: set into the decoded change.
    pub unchanged: Option<Vec<u8>>,
}

pub use syncline_core::change::ORIGINAL_KEY_HEADER;
use syncline_core::change::UNCHANGED_HEADER;

impl Raw {
    pub fn from_message<M: Message>(m: &M) -> Raw {
        let header = |name: &str| {
            m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value.map(<[u8]>::to_vec))
            })
        };
        let original_key = header(ORIGINAL_KEY_HEADER);
        let unchanged = header(UNCHANGED_HEADER);
        Raw {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            original_key,
            unchanged,
        }
    }

    /// The columns its `syncline.unchanged` header names.
    pub fn unchanged_columns(&self) -> Vec<String> {
        syncline_core::change::unchanged_columns(self.unchanged.as_deref())
    }

    /// `topic[partition]@offset`, for messages.
    pub fn at(&self) -> String {
        format!("{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

/// Fill a batch from `consumer`: up to `size` records, waiting at most
/// `timeout` after the first one. `None`: shutdown came first.
pub async fn collect_batch(
    consumer: &StreamConsumer,
    shutdown: &Shutdown,
    component: &str,
    size: usize,
    timeout: Duration,
) -> Result<Option<Vec<Raw>>> {
    let mut batch = Vec::with_capacity(size);
    let mut deadline = None;
    while batch.len() < size {
        let wait = match deadline {
            None => Duration::from_millis(100),
            Some(d) => {
                tokio::time::Instant::saturating_duration_since(&d, tokio::time::Instant::now())
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {
                if !batch.is_empty() { break; }
            }
            m = consumer.recv() => match m {
                Ok(m) => {
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + timeout);
                    }
                    batch.push(Raw::from_message(&m));
                }
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) => {
                    return Err(Error::transient("the Kafka consumer failed").with_source(e));
                }
                Err(e) => tracing::warn!(processor = %component, error = %e, "Kafka consumer error"),
            }
        }
    }
    Ok(Some(batch))
}

/// The offsets to commit once a batch's outputs are acknowledged: per
/// partition, one past the last record consumed.
pub fn next_offsets<'a>(
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

/// The partition list for committing `next` to Kafka.
pub fn offset_list(next: &BTreeMap<(String, i32), i64>) -> Result<rdkafka::TopicPartitionList> {
    Ok(syncline_runtime::record::offset_list(next))
}

pub use syncline_runtime::backoff::retry;
pub use syncline_runtime::produce::{acknowledged, send};

/// Send a TRUNCATE's value, keyless, to every partition of `topic` (see
/// `syncline_core::kafka::partitions_of` for why every partition).
pub async fn broadcast(
    producer: &FutureProducer,
    topic: &str,
    value: &[u8],
) -> Result<Vec<DeliveryFuture>> {
    let mut out = Vec::new();
    for p in syncline_core::kafka::partitions_of(producer, topic).await? {
        out.push(send(
            producer,
            FutureRecord::<(), [u8]>::to(topic)
                .partition(p)
                .payload(value),
        )?);
    }
    Ok(out)
}

/// Kafka transactions around each batch of a consume-transform-produce
/// stage (`kafka.exactly_once: transactions`).
///
/// # Guarantee
/// [`Transactional::commit`] makes the batch's records (outputs,
/// changelog records, and a stage's own dead letters: everything produced
/// with this producer since
/// [`Transactional::begin`]) and its consumer group's input offsets one
/// atomic step: a `read_committed` consumer sees all of them or none, and
/// the group resumes after them or before them. Stale instances are fenced
/// twice: creating the producer (`init_transactions` with the instance's
/// transactional id) aborts what an earlier run of the same instance left
/// open; and the offsets carry the consumer's group generation, so an
/// instance that lost its partitions to another while it still ran has its
/// commit refused instead of adding outputs the new owner produces too.
/// Any failure aborts the transaction and is returned as a transient error:
/// the component restarts with a new producer and reads the batch again
/// from the committed offsets.
pub struct Transactional {
    producer: FutureProducer,
    id: String,
    /// A transaction is open (begun, neither committed nor aborted).
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a transaction's commit or offsets may take before it is aborted.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

impl Transactional {
    /// A producer with the transactional id of this instance of `ctx`'s
    /// component (`suffix` tells apart several stages of one component).
    pub async fn new(ctx: &ComponentContext, suffix: &str) -> Result<Self> {
        let id = format!("{}{suffix}.{}", ctx.qualified_name(), instance_id(ctx)?);
        let (kafka, tid) = (ctx.kafka.clone(), id.clone());
        let producer = tokio::task::spawn_blocking(move || kafka.transactional_producer(&tid))
            .await
            .map_err(|e| Error::internal("transaction set-up task failed").with_source(e))??;
        tracing::info!(processor = %ctx.component, transactional_id = %id, "Kafka transactions on");
        Ok(Self {
            producer,
            id,
            open: Default::default(),
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Open the batch's transaction: what is produced from now on belongs to it.
    pub fn begin(&self) -> Result<()> {
        self.producer.begin_transaction().map_err(|e| {
            Error::transient(format!("cannot begin a transaction of `{}`", self.id))
                .with_source(e)
                .restarting_component()
        })?;
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Add the input offsets `next` (for `group`) to the transaction and
    /// commit it; on any failure abort it (see the type's guarantee).
    /// Blocks while the broker answers.
    pub fn commit_blocking(
        &self,
        next: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<()> {
        let result = self
            .producer
            .send_offsets_to_transaction(next, group, TXN_TIMEOUT)
            .and_then(|()| self.producer.commit_transaction(TXN_TIMEOUT));
        match result {
            Ok(()) => {
                self.open.store(false, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                self.abort_blocking();
                // The producer may be fenced or stuck mid-commit, and the
                // group generation stale: build the component again.
                Err(Error::transient(format!(
                    "the transaction of `{}` was aborted; its batch is read again",
                    self.id
                ))
                .with_source(e)
                .restarting_component())
            }
        }
    }

    /// [`Self::commit_blocking`] off the async runtime's threads.
    pub async fn commit(
        &self,
        next: rdkafka::TopicPartitionList,
        group: rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<()> {
        let this = Self {
            producer: self.producer.clone(),
            id: self.id.clone(),
            open: self.open.clone(),
        };
        tokio::task::spawn_blocking(move || this.commit_blocking(&next, &group))
            .await
            .map_err(|e| Error::internal("transaction commit task failed").with_source(e))?
    }

    /// Abort the open transaction, if one is (shutdown or a failure came in
    /// the middle of a batch).
    pub fn abort_blocking(&self) {
        if !self.open.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
            tracing::warn!(transactional_id = %self.id, error = %e, "cannot abort the open transaction; the broker aborts it at its timeout");
        }
    }
}

/// The group metadata a transaction's offsets are sent with (it carries
/// the group generation that fences a member that lost its partitions).
pub fn group_metadata<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl rdkafka::consumer::Consumer<C>,
) -> Result<rdkafka::consumer::ConsumerGroupMetadata> {
    consumer
        .group_metadata()
        .ok_or_else(|| Error::transient("the consumer has no group metadata for the transaction"))
}

/// This instance's id: kept in `<state_dir>/<pipeline>/<component>.instance`
/// (created with a random id on first start), so a restart of the same
/// instance reuses its transactional id and fences what it left behind,
/// while two instances (two state dirs) never fence each other.
fn instance_id(ctx: &ComponentContext) -> Result<String> {
    use syncline_core::error::{Context, ErrorKind};
    let dir = ctx.state_dir.join(&ctx.pipeline);
    let file = dir.join(format!("{}.instance", ctx.component));
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    std::fs::create_dir_all(&dir).context(ErrorKind::Config, || {
        format!("cannot create the state directory {}", dir.display())
    })?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = file.with_extension("instance.tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .context(ErrorKind::Config, || {
            format!("cannot write {}", file.display())
        })?;
    Ok(id)
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
