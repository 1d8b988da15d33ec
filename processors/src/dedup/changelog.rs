//! The changelog: a compacted topic with one partition per input partition,
//! holding every change of the dedup state and the input offsets it covers.
//! Compaction keeps the newest record per Kafka key, so the topic stays as
//! small as the state itself (expired keys leave tombstones, which
//! compaction removes in turn).
//!
//! | Kafka key          | value                                 | meaning                  |
//! |--------------------|---------------------------------------|--------------------------|
//! | `k` + dedup key    | `ts_us` (8 bytes)                     | key seen at that time    |
//! | `k` + dedup key    | none (tombstone)                      | key expired (TTL)        |
//! | `o`                | `next input offset`, `stream time`    | what the state covers    |

use super::key::Key;
use super::store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use syncline_core::error::{Context, ErrorKind};
use syncline_core::kafka::{EndOfTopicContext, KafkaConfig};
use syncline_core::{Error, Result};

const OFFSETS_KEY: &[u8] = b"o";

/// A changelog record as Kafka key and value (none: a tombstone).
pub type Encoded = (Vec<u8>, Option<Vec<u8>>);

pub use super::store::Entry as Record;

impl Record {
    pub fn encode(&self) -> Encoded {
        match self {
            Record::Seen { key, ts } => {
                ([b"k", &key[..]].concat(), Some(ts.to_be_bytes().to_vec()))
            }
            Record::Expired { key } => ([b"k", &key[..]].concat(), None),
            Record::Offsets {
                next_input,
                stream_time,
            } => (
                OFFSETS_KEY.to_vec(),
                Some([next_input.to_be_bytes(), stream_time.to_be_bytes()].concat()),
            ),
        }
    }

    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Record> {
        let bad = || Error::data("the changelog holds a record syncline did not write");
        let key = key.ok_or_else(bad)?;
        let i64_at = |v: &[u8], at: usize| -> Result<i64> {
            Ok(i64::from_be_bytes(
                v.get(at..at + 8).ok_or_else(bad)?.try_into().expect("8"),
            ))
        };
        if key == OFFSETS_KEY {
            let v = value.ok_or_else(bad)?;
            return Ok(Record::Offsets {
                next_input: i64_at(v, 0)?,
                stream_time: i64_at(v, 8)?,
            });
        }
        match (key.split_first(), value) {
            (Some((b'k', k)), v) if k.len() == 32 => {
                let key: Key = k.try_into().expect("32 bytes");
                Ok(match v {
                    Some(v) => Record::Seen {
                        key,
                        ts: i64_at(v, 0)?,
                    },
                    None => Record::Expired { key },
                })
            }
            _ => Err(bad()),
        }
    }

    /// The record to produce to changelog `partition`.
    pub fn to_kafka<'a>(
        topic: &'a str,
        partition: i32,
        encoded: &'a Encoded,
    ) -> FutureRecord<'a, [u8], [u8]> {
        let r = FutureRecord::to(topic)
            .partition(partition)
            .key(&encoded.0[..]);
        match &encoded.1 {
            Some(v) => r.payload(&v[..]),
            None => r,
        }
    }
}

/// Bring the local state of `partition` up to the end of its changelog:
/// from where the local copy stopped, or from the beginning when there is
/// no local copy or it is ahead of the topic (the topic was recreated).
/// `progress(done, remaining)` is called as records are applied.
pub fn restore(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    store: &Store,
    ttl: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64> {
    let consumer: BaseConsumer<EndOfTopicContext> = kafka
        .reader_config()
        .create_with_context(EndOfTopicContext)
        .context(ErrorKind::Config, || "cannot create Kafka consumer".into())?;
    let (lo, hi) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .context(ErrorKind::Transient, || {
            format!("cannot read the offsets of changelog `{topic}`")
        })?;
    let local = store.meta(partition)?.next_changelog;
    let from = match local {
        Some(next) if next <= hi => next.max(lo),
        Some(next) => {
            tracing::warn!(changelog = %topic, partition, local = next, end = hi, "local state is ahead of its changelog (was the topic recreated?); restoring from the changelog alone");
            store.clear(partition)?;
            lo
        }
        None => {
            store.clear(partition)?;
            lo
        }
    };
    if from >= hi {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| Error::internal("bad partition list").with_source(e))?;
    consumer.assign(&tpl).context(ErrorKind::Transient, || {
        format!("cannot read changelog `{topic}`")
    })?;
    let total = (hi - from) as u64;
    let started = Instant::now();
    let mut chunk = Vec::with_capacity(10_000);
    let mut applied = 0u64;
    let mut last_offset = from - 1;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_log = Instant::now();
    while last_offset + 1 < hi {
        if Instant::now() > deadline {
            return Err(Error::transient(format!(
                "timed out restoring from changelog `{topic}`"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                return Err(
                    Error::transient(format!("cannot read changelog `{topic}`")).with_source(e)
                )
            }
            Some(Ok(m)) => {
                last_offset = m.offset();
                chunk.push(Record::decode(m.key(), m.payload()).map_err(|e| {
                    Error::new(
                        ErrorKind::Data,
                        format!("changelog `{topic}`[{partition}]@{}: {e}", m.offset()),
                    )
                })?);
                if chunk.len() >= 10_000 {
                    store.apply_changelog(partition, &chunk, last_offset + 1, ttl)?;
                    applied += chunk.len() as u64;
                    chunk.clear();
                    progress(applied, (hi - last_offset - 1) as u64);
                    if last_log.elapsed() > Duration::from_secs(5) {
                        tracing::info!(changelog = %topic, partition, restored = applied, remaining = hi - last_offset - 1, "restoring state");
                        last_log = Instant::now();
                    }
                }
            }
        }
    }
    applied += chunk.len() as u64;
    store.apply_changelog(partition, &chunk, hi.max(last_offset + 1), ttl)?;
    progress(applied, 0);
    tracing::info!(changelog = %topic, partition, records = applied, of = total, ms = started.elapsed().as_millis() as u64, "state restored");
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for r in [
            Record::Seen {
                key: [3; 32],
                ts: -42,
            },
            Record::Expired { key: [4; 32] },
            Record::Offsets {
                next_input: 17,
                stream_time: 99,
            },
        ] {
            let (k, v) = r.encode();
            assert_eq!(Record::decode(Some(&k), v.as_deref()).unwrap(), r);
        }
        assert!(Record::decode(Some(b"zz"), Some(b"x")).is_err());
        assert!(Record::decode(None, None).is_err());
    }
}
