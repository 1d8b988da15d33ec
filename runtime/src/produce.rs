//! Producing with back-pressure and waiting for the broker, for every stage.

use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;
use syncline_core::error::kafka::kafka_error;
use syncline_core::runtime::Shutdown;
use syncline_core::{Error, Result};

/// Enqueue a record; when the producer's queue is full, wait for it to
/// drain (back-pressure instead of an error).
pub fn send<K, P>(
    producer: &FutureProducer,
    record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    enqueue(producer, record).map_err(|e| kafka_error(e, "cannot enqueue a record"))
}

/// [`send`] with librdkafka's own error, for a caller that handles one
/// code itself (a record larger than `message.max.bytes`).
pub fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> std::result::Result<DeliveryFuture, rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(10));
                record = r;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Wait until the broker has acknowledged every delivery, in order; each
/// one's (partition, offset). `None`: shutdown came first. A refusal is
/// classified by the Kafka error table (a record too large is `Data`).
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
                return Err(kafka_error(e, "the broker did not acknowledge a record"))
            }
            Err(_) => return Err(Error::transient("the producer dropped a record")),
        }
    }
    Ok(Some(out))
}

/// Send `value`, keyless, to every partition of `topic`: a TRUNCATE must
/// follow every earlier change of every key, and a key's changes live in one
/// partition (see `syncline_core::kafka::partitions_of`).
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
