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
//!
//! # Records too large for the broker
//! A source's publisher ([`Publisher::for_source`]) sends a record larger
//! than the producer's `message.max.bytes` (librdkafka checks it before
//! anything is sent; 1,000,000 bytes unless `kafka.properties` says
//! otherwise) to the source's dead-letter topic instead: the record's key,
//! no value (it is the part too large), and a reason with the size and the
//! topic it was for. Its [`Pending`] is the dead letter's delivery, so the
//! source records its progress past the row only once the dead letter is
//! acknowledged, and moves on; before, the source retried the row forever
//! while a replication slot kept WAL. A topic whose own `max.message.bytes`
//! is below the producer's limit refuses batches at the broker, which can
//! hold records of any size: that stops the source with a `Config` error
//! saying to lower `message.max.bytes`, rather than dead-lettering records
//! that would fit.

use crate::events::Events;
use crate::produce;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use syncline_core::codec::Encoder;
use syncline_core::kafka::DeadLetter;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{ChangeEvent, Error, Result, TableSchema};

/// A record handed to the producer, not yet acknowledged: a future of the
/// broker's answer, (partition, offset) or the error classified by the
/// Kafka table (a record too large is `Data`, a broker away `Transient`).
/// A published change counts as its component's `records_out` when the
/// broker acknowledges it, however the source awaits it.
pub struct Pending(DeliveryFuture, Option<Arc<Events>>);

impl std::future::Future for Pending {
    type Output = Result<(i32, i64)>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let answer = std::pin::Pin::new(&mut self.0).poll(cx);
        let counted = if answer.is_ready() {
            self.1.take()
        } else {
            None
        };
        answer.map(|answer| match answer {
            Ok(Ok(d)) => {
                if let Some(events) = counted {
                    events.records_out(1);
                }
                Ok((d.partition, d.offset))
            }
            Ok(Err((e, m)))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                Err(Error::config(format!(
                    "the broker refused records for `{}` as too large: the topic's \
                         `max.message.bytes` is below the producer's `message.max.bytes` \
                         (1000000 unless set); set `kafka.properties.message.max.bytes` to at \
                         most the topic's limit, and a record above it goes to the dead-letter \
                         topic instead",
                    m.topic()
                )))
            }
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
    /// Shared by every pending record it counts (one pointer each).
    events: Option<Arc<Events>>,
    /// Where a record too large for the producer goes (sources only).
    dead_letter_topic: Option<String>,
}

impl Publisher {
    pub fn new(encoder: Encoder, producer: FutureProducer) -> Self {
        Self {
            encoder,
            producer,
            events: None,
            dead_letter_topic: None,
        }
    }

    /// The publisher of a source: a record too large for the broker goes
    /// to `dead_letter_topic` (default `<pipeline>.<source>.dead`, created
    /// here if missing) with the reason (see the module docs).
    pub async fn for_source(
        ctx: &ComponentContext,
        kind: &'static str,
        encoder: Encoder,
        producer: FutureProducer,
        dead_letter_topic: Option<&str>,
    ) -> Result<Self> {
        let topic = dead_letter_topic
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}.{}.dead", ctx.pipeline, ctx.component));
        ctx.kafka
            .ensure_topic(&topic, ctx.kafka.partitions, false)
            .await?;
        Ok(Self {
            encoder,
            producer,
            events: Some(Arc::new(Events::new(ctx, kind))),
            dead_letter_topic: Some(topic),
        })
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

    /// Hand an encoded change to the producer; one too large for it to the
    /// dead-letter topic, when there is one (see the module docs).
    pub fn send(&self, e: &Encoded) -> Result<Pending> {
        let mut record = FutureRecord::to(&e.topic).key(&e.key).payload(&e.value);
        if let Some(h) = syncline_core::kafka::unchanged_header(&e.unchanged) {
            record = record.headers(h);
        }
        match produce::enqueue(&self.producer, record) {
            Ok(delivery) => Ok(Pending(delivery, self.events.clone())),
            Err(err) => match &self.dead_letter_topic {
                Some(dead)
                    if err.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
                {
                    self.divert(dead, e)
                }
                _ => Err(syncline_core::error::kafka::kafka_error(
                    err,
                    "cannot enqueue a record",
                )),
            },
        }
    }

    /// `e` as a dead letter: its key, no value, the reason.
    fn divert(&self, dead: &str, e: &Encoded) -> Result<Pending> {
        let reason = format!(
            "the record for `{}` is {} bytes (key {}, value {}), more than the producer's \
             `message.max.bytes` lets through (1000000 unless `kafka.properties` sets it); \
             its value is not kept here, the row is identified by this dead letter's key",
            e.topic,
            e.key.len() + e.value.len(),
            e.key.len(),
            e.value.len()
        );
        self.send_dead_letter(dead, &e.topic, Some(&e.key), None, &reason)
    }

    /// A record a source read but cannot publish (a value that fits no
    /// column): to the dead-letter topic, with `value` in the source's own
    /// form (an API record's JSON) and the reason; acknowledged like a
    /// record, so the source moves past it only once the broker has it.
    pub fn dead_letter(
        &self,
        topic_for: &str,
        key: Option<&[u8]>,
        value: &[u8],
        reason: &str,
    ) -> Result<Pending> {
        let dead = self.dead_letter_topic.as_deref().ok_or_else(|| {
            Error::internal("a dead letter from a publisher without a dead-letter topic")
        })?;
        self.send_dead_letter(dead, topic_for, key, Some(value), reason)
    }

    fn send_dead_letter(
        &self,
        dead: &str,
        topic_for: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        reason: &str,
    ) -> Result<Pending> {
        let reason = crate::dead_letter::truncated(reason, crate::dead_letter::MAX_REASON_BYTES);
        if let Some(events) = &self.events {
            events.dead_lettered(&format!("`{topic_for}` (not produced)"), dead, reason);
        }
        let letter = DeadLetter {
            topic: topic_for,
            partition: -1,
            offset: -1,
            key,
            value,
            headers: &[],
            reason,
        };
        Ok(Pending(
            produce::send(&self.producer, letter.record(dead))?,
            None,
        ))
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
            .map(|d| Pending(d, None))
            .collect())
    }

    /// Wait until the broker has every one of `pending`, in order; each
    /// one's (partition, offset). `None`: shutdown came first.
    pub async fn acknowledged(
        &self,
        shutdown: &Shutdown,
        pending: Vec<Pending>,
    ) -> Result<Option<Vec<(i32, i64)>>> {
        let counted: usize = pending.iter().filter(|p| p.1.is_some()).count();
        let acked =
            produce::acknowledged(shutdown, pending.into_iter().map(|p| p.0).collect()).await?;
        if acked.is_some() && counted > 0 {
            if let Some(e) = &self.events {
                e.records_out(counted);
            }
        }
        Ok(acked)
    }
}

impl From<DeliveryFuture> for Pending {
    fn from(f: DeliveryFuture) -> Self {
        Pending(f, None)
    }
}
