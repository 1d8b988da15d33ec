//! The dead-letter topic of a stage: where a record goes that the stage
//! gives up on (it cannot be decoded, a step fails on it, the target refuses
//! it), unchanged, with the reason and its origin in headers
//! ([`syncline_core::kafka::DeadLetter`]: one format for every stage, so one
//! tool can list and replay any stage's dead letters).
//!
//! # Guarantee
//! A dead letter is acknowledged by the broker before the offset that moves
//! past its record is stored (the runtime awaits [`DeadLetters::flush`]
//! before writing the batch), so a poison record is never lost: after a
//! crash in between it is dead-lettered again, with equal headers (at least
//! once; its origin headers identify the copies).

use crate::events::Events;
use crate::record::Record;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use syncline_core::kafka::DeadLetter;
use syncline_core::runtime::Shutdown;
use syncline_core::Result;

/// Longest reason kept in a dead letter's `syncline.reason` header.
pub const MAX_REASON_BYTES: usize = 4096;

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    pending: Vec<DeliveryFuture>,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self {
            producer,
            topic,
            pending: Vec::new(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hand `record` to the producer with `reason` (acknowledged by
    /// [`Self::flush`]). The reason is cut at [`MAX_REASON_BYTES`], so that
    /// a dead letter is never much larger than the record it keeps.
    pub fn send(&mut self, record: &Record, reason: &str, events: &Events) -> Result<()> {
        let reason = truncated(reason, MAX_REASON_BYTES);
        let origin = record.origin();
        events.dead_lettered(&origin, &self.topic, reason);
        let letter = DeadLetter {
            topic: &record.topic,
            partition: record.partition,
            offset: record.offset,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &record.headers,
            reason,
        };
        let delivery = crate::produce::send(&self.producer, letter.record(&self.topic))?;
        self.pending.push(delivery);
        Ok(())
    }

    /// Wait until the broker has every dead letter sent so far. `Ok(false)`:
    /// shutdown came first.
    pub async fn flush(&mut self, shutdown: &Shutdown) -> Result<bool> {
        let pending = std::mem::take(&mut self.pending);
        Ok(crate::produce::acknowledged(shutdown, pending)
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncated("abc", 10), "abc");
        assert_eq!(truncated("abc", 2), "ab");
        assert_eq!(truncated("aé", 2), "a", "é is two bytes");
    }
}
