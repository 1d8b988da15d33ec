//! When a batch closes: by count, by bytes, when the input goes idle, or at
//! the longest wait (see the `consume` module doc).

use crate::record::{Record, TopicPartition};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How a stage batches (its `batch_*` settings).
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Most records in one batch.
    pub max_records: usize,
    /// Most bytes (keys, values, headers) in one batch; a single larger
    /// record still makes a batch of its own.
    pub max_bytes: usize,
    /// A batch closes when no record arrived for this long.
    pub linger: Duration,
    /// A batch closes at the latest this long after its first record.
    pub max_wait: Duration,
}

impl BatchSettings {
    /// Defaults: 1,000 records, 16 MiB, 5 ms idle, 200 ms at most.
    pub fn with_max_records(max_records: usize) -> Self {
        Self {
            max_records,
            ..Self::default()
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_records: 1000,
            max_bytes: 16 << 20,
            linger: Duration::from_millis(5),
            max_wait: Duration::from_millis(200),
        }
    }
}

/// The batch being filled.
pub(crate) struct Batch {
    settings: BatchSettings,
    records: Vec<Record>,
    bytes: usize,
    started: Instant,
}

impl Batch {
    pub fn new(settings: BatchSettings) -> Self {
        Self {
            records: Vec::with_capacity(settings.max_records.min(100_000)),
            settings,
            bytes: 0,
            started: Instant::now(),
        }
    }

    /// How long the next poll may wait: `idle` while empty, else until the
    /// batch closes for idleness or age.
    pub fn wait(&self, idle: Duration) -> Duration {
        if self.records.is_empty() {
            return idle;
        }
        let left =
            (self.started + self.settings.max_wait).saturating_duration_since(Instant::now());
        self.settings.linger.min(left)
    }

    pub fn push(&mut self, r: Record) {
        if self.records.is_empty() {
            self.started = Instant::now();
        }
        self.bytes += r.size();
        self.records.push(r);
    }

    /// Drop the records of partitions that were revoked or re-assigned:
    /// the consumer restarts those at the stored offsets, so keeping them
    /// would write them out of order with the re-read.
    pub fn discard(&mut self, reset: &HashSet<TopicPartition>) {
        if reset.is_empty() || self.records.is_empty() {
            return;
        }
        self.records.retain(|r| {
            !reset
                .iter()
                .any(|(t, p)| *p == r.partition && **t == *r.topic)
        });
        self.bytes = self.records.iter().map(Record::size).sum();
    }

    /// Whether the batch should be written now; `idle`: the last poll
    /// returned nothing within [`Self::wait`].
    pub fn ready(&self, idle: bool) -> bool {
        !self.records.is_empty()
            && (idle
                || self.records.len() >= self.settings.max_records
                || self.bytes >= self.settings.max_bytes
                || self.started.elapsed() >= self.settings.max_wait)
    }

    /// The batch's records and when its first one came; the batch is empty after.
    pub fn take(&mut self) -> (Vec<Record>, Instant) {
        self.bytes = 0;
        let cap = self.records.capacity();
        (
            std::mem::replace(&mut self.records, Vec::with_capacity(cap)),
            self.started,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::test_record;

    fn settings() -> BatchSettings {
        BatchSettings {
            max_records: 3,
            max_bytes: 10,
            linger: Duration::from_millis(5),
            max_wait: Duration::from_secs(3600),
        }
    }

    #[test]
    fn closes_by_count() {
        let mut b = Batch::new(settings());
        for o in 0..2 {
            b.push(test_record("a", 0, o));
        }
        assert!(!b.ready(false));
        b.push(test_record("a", 0, 2));
        assert!(b.ready(false));
        let (records, _) = b.take();
        assert_eq!(records.len(), 3);
        assert!(!b.ready(true), "an empty batch is never ready");
    }

    #[test]
    fn closes_by_bytes_and_when_idle() {
        let mut b = Batch::new(settings());
        let mut r = test_record("a", 0, 0);
        r.value = Some(vec![0; 11]);
        b.push(r);
        assert!(b.ready(false), "11 bytes > 10");
        b.take();
        b.push(test_record("a", 0, 1));
        assert!(!b.ready(false));
        assert!(b.ready(true), "the input went idle");
        assert!(b.wait(Duration::from_millis(100)) <= Duration::from_millis(5));
    }

    #[test]
    fn closes_at_the_longest_wait() {
        let mut b = Batch::new(BatchSettings {
            max_wait: Duration::ZERO,
            ..settings()
        });
        b.push(test_record("a", 0, 0));
        assert!(b.ready(false));
        assert_eq!(b.wait(Duration::from_millis(100)), Duration::ZERO);
    }

    #[test]
    fn a_rebalance_drops_only_the_reset_partitions_records() {
        let mut b = Batch::new(BatchSettings {
            max_records: 100,
            ..settings()
        });
        for (t, p, o) in [("a", 0, 1), ("a", 1, 1), ("b", 0, 1), ("a", 0, 2)] {
            b.push(test_record(t, p, o));
        }
        b.discard(&HashSet::from([("a".to_string(), 0)]));
        let (left, _) = b.take();
        let left: Vec<_> = left
            .iter()
            .map(|r| (r.topic.to_string(), r.partition, r.offset))
            .collect();
        assert_eq!(left, [("a".to_string(), 1, 1), ("b".to_string(), 0, 1)]);
    }
}
