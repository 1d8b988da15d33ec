//! The producing side of every source and processor: one publisher.
//!
//! [`Publisher::publish`] encodes a change in the Confluent wire format
//! (its key and value schemas registered once per table shape and topic),
//! sets the change's headers (the unchanged columns), hands the record to
//! the producer with back-pressure (a full queue waits instead of failing)
//! and returns a [`Pending`] delivery. [`Publisher::publish_truncate`] sends a
//! TRUNCATE to every partition of the topic, so that in each it follows every
//! earlier change of that partition's keys. [`Publisher::acknowledged`] waits
//! for deliveries in the order they were published.
//!
//! # Guarantee
//! Publishing is at least once: a caller stores its own progress (a cursor,
//! a replication slot position, consumed offsets) only after
//! [`Publisher::acknowledged`] returned for every record that progress
//! covers, so nothing is lost; what is published again after a crash carries
//! the same identity (source, table, key and position), which every syncline sink uses to
//! apply it once. The producer is idempotent (no duplicates or reordering
//! from its own retries) unless a transactional producer is given.
//!
//! Errors keep their kind: an incompatible schema is `Config` (the caller
//! stops before anything encoded with it is written), a registry away is
//! `Transient`, a record the broker refuses as too large is `Data`.

use crate::events::Events;
use crate::produce;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use syncline_core::codec::Encoder;
use syncline_core::runtime::Shutdown;
use syncline_core::{ChangeEvent, Result, TableSchema};

/// A record handed to the producer, not yet acknowledged: a future of the
/// broker's answer, (partition, offset) or the error classified by the
/// Kafka table (a record too large is `Data`, a broker away `Transient`).
pub struct Pending(DeliveryFuture);

impl std::future::Future for Pending {
    type Output = Result<(i32, i64)>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| match answer {
                Ok(Ok(d)) => Ok((d.partition, d.offset)),
                Ok(Err((e, _))) => Err(syncline_core::error::kafka::kafka_error(
                    e,
                    "the broker did not acknowledge a record",
                )),
                Err(_) => Err(syncline_core::Error::transient(
                    "the producer dropped a record",
                )),
            })
    }
}

/// Wait for every one of `pending`, in order.
pub async fn all(pending: Vec<Pending>) -> Result<Vec<(i32, i64)>> {
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        out.push(p.await?);
    }
    Ok(out)
}

/// A change encoded for its topic, not produced yet ([`Publisher::encode`]).
pub struct Encoded {
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    unchanged: Vec<String>,
}

pub struct Publisher {
    encoder: Encoder,
    producer: FutureProducer,
    events: Option<Events>,
}

impl Publisher {
    pub fn new(encoder: Encoder, producer: FutureProducer) -> Self {
        Self {
            encoder,
            producer,
            events: None,
        }
    }

    /// Count acknowledged records as this component's `records_out`.
    pub fn counting(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Publish with a new producer from now on (after a broker failure left
    /// the old one fenced or fatal); the schema registrations are kept.
    pub fn replace_producer(&mut self, producer: FutureProducer) {
        self.producer = producer;
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Register `table`'s schemas for `topic` now (once per shape), so an
    /// incompatible change stops the caller before anything is produced.
    pub async fn prepare(&self, topic: &str, table: &TableSchema) -> Result<()> {
        self.encoder.prepare(topic, table).await
    }

    /// Encode `event` with `table`'s shape and hand it to the producer.
    pub async fn publish(
        &self,
        topic: &str,
        table: &TableSchema,
        event: &ChangeEvent,
    ) -> Result<Pending> {
        let encoded = self.encode(topic, table, event).await?;
        self.send(&encoded)
    }

    /// Encode `event` for `topic` without producing it: a stage that must
    /// not produce part of a batch encodes the whole batch first, so that a
    /// record that cannot be encoded fails before anything is produced.
    pub async fn encode(
        &self,
        topic: &str,
        table: &TableSchema,
        event: &ChangeEvent,
    ) -> Result<Encoded> {
        let (key, value) = self.encoder.encode(topic, table, event).await?;
        Ok(Encoded {
            topic: topic.to_string(),
            key,
            value,
            unchanged: event.unchanged.clone(),
        })
    }

    /// Hand an encoded change to the producer.
    pub fn send(&self, e: &Encoded) -> Result<Pending> {
        let mut record = FutureRecord::to(&e.topic).key(&e.key).payload(&e.value);
        if let Some(h) = syncline_core::kafka::unchanged_header(&e.unchanged) {
            record = record.headers(h);
        }
        Ok(Pending(produce::send(&self.producer, record)?))
    }

    /// A TRUNCATE, keyless, to every partition of `topic`.
    pub async fn publish_truncate(
        &self,
        topic: &str,
        table: &TableSchema,
        event: &ChangeEvent,
    ) -> Result<Vec<Pending>> {
        let value = self.encoder.encode_truncate(topic, table, event).await?;
        Ok(produce::broadcast(&self.producer, topic, &value)
            .await?
            .into_iter()
            .map(Pending)
            .collect())
    }

    /// Wait until the broker has every one of `pending`, in order; each
    /// one's (partition, offset). `None`: shutdown came first.
    pub async fn acknowledged(
        &self,
        shutdown: &Shutdown,
        pending: Vec<Pending>,
    ) -> Result<Option<Vec<(i32, i64)>>> {
        let n = pending.len();
        let acked =
            produce::acknowledged(shutdown, pending.into_iter().map(|p| p.0).collect()).await?;
        if acked.is_some() {
            if let Some(e) = &self.events {
                e.records_out(n);
            }
        }
        Ok(acked)
    }
}

impl From<DeliveryFuture> for Pending {
    fn from(f: DeliveryFuture) -> Self {
        Pending(f)
    }
}
