//! Kafka plumbing every processor stage shares: owned records, batching a
//! consumer, producing with back-pressure, waiting for the broker's
//! acknowledgements, retrying the registry.

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use syncline_core::runtime::Shutdown;
use syncline_core::{Error, Result};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
}

/// The header that carries a record's original Kafka key through a
/// repartition topic.
pub const ORIGINAL_KEY_HEADER: &str = "syncline.key";

impl Raw {
    pub fn from_message<M: Message>(m: &M) -> Raw {
        let original_key = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == ORIGINAL_KEY_HEADER)
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        });
        Raw {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            original_key,
        }
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
    let mut tpl = rdkafka::TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
            .map_err(|e| Error::internal("bad partition list").with_source(e))?;
    }
    Ok(tpl)
}

/// Enqueue a record; when the producer's queue is full, wait for it to drain.
pub fn send<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(50));
                record = r;
            }
            Err((e, _)) => return Err(Error::transient("cannot enqueue an output").with_source(e)),
        }
    }
}

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

/// Wait until the broker has acknowledged every delivery, in order.
/// Returns each one's (partition, offset); `None`: shutdown came first.
pub async fn acknowledged(
    shutdown: &Shutdown,
    pending: Vec<DeliveryFuture>,
) -> Result<Option<Vec<(i32, i64)>>> {
    let mut out = Vec::with_capacity(pending.len());
    for delivery in pending {
        let acked = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            d = delivery => d,
        };
        match acked {
            Ok(Ok(d)) => out.push((d.partition, d.offset)),
            Ok(Err((e, _))) => {
                return Err(
                    Error::transient("the broker did not acknowledge a record").with_source(e)
                )
            }
            Err(_) => return Err(Error::transient("the producer dropped a record")),
        }
    }
    Ok(Some(out))
}

/// Run `f` until it succeeds or fails for good; transient errors are retried
/// with backoff. `None`: shutdown came first.
pub async fn retry<T, F, Fut>(
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
