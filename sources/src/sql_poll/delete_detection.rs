//! Hard deletes, found by comparing keys: a polling source never sees a
//! deleted row, so it periodically scans the keys present in the table and
//! publishes a `DELETE` for every key it has published (and not deleted)
//! that is gone.
//!
//! The published keys (key -> position of its last change) are rebuilt on
//! start by reading the source's own output topic to its end, so a delete
//! that happened while the source was down, or whose `DELETE` was not
//! acknowledged before a crash, is still found (with the same position, as
//! that derives from the last published position).
//!
//! Cost: memory for every live key (its values and position, ~100 bytes
//! plus the key), and a start-up time proportional to everything ever
//! written to the topic (it is not compacted). A rocksdb-backed state store
//! will replace the in-memory map and the re-read.

use super::cursor::encode_key;
use apache_avro::types::Value;
use std::collections::{HashMap, HashSet};
use syncline_core::codec::Decoder;
use syncline_core::kafka::{read_topic_to_end, KafkaConfig};
use syncline_core::registry::RegistryConfig;
use syncline_core::{Error, Op, Position, Result};

/// A key this source has published, with the position of its last change.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub key: Vec<(String, Value)>,
    pub position: Position,
}

/// Keys published and not deleted, by their encoded values ([`encode_key`]).
#[derive(Debug, Default)]
pub struct PublishedKeys {
    keys: HashMap<Vec<u8>, Published>,
}

impl PublishedKeys {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn contains(&self, encoded: &[u8]) -> bool {
        self.keys.contains_key(encoded)
    }

    /// A change of `key` at `position` was acknowledged by the broker.
    pub fn published(&mut self, key: Vec<(String, Value)>, position: Position) {
        self.keys
            .insert(encode_key(&key), Published { key, position });
    }

    /// The `DELETE` of `encoded` was acknowledged by the broker.
    pub fn deleted(&mut self, encoded: &[u8]) {
        self.keys.remove(encoded);
    }

    /// Published keys absent from `present` (encoded keys seen by a scan),
    /// in a stable order.
    pub fn vanished(&self, present: &HashSet<Vec<u8>>) -> Vec<(Vec<u8>, Published)> {
        let mut gone: Vec<_> = self
            .keys
            .iter()
            .filter(|(k, _)| !present.contains(*k))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        gone
    }
}

/// Folds the changes read back from the topic, in any order and with
/// replays: for each key the change with the greatest position wins.
#[derive(Default)]
pub struct Rebuild {
    last: HashMap<Vec<u8>, (Published, bool)>,
}

impl Rebuild {
    pub fn apply(&mut self, key: Vec<(String, Value)>, position: Position, op: Op) {
        let encoded = encode_key(&key);
        let deleted = op.removes_row();
        match self.last.get(&encoded) {
            Some((p, _)) if p.position >= position => {}
            _ => {
                self.last
                    .insert(encoded, (Published { key, position }, deleted));
            }
        }
    }

    pub fn finish(self) -> PublishedKeys {
        PublishedKeys {
            keys: self
                .last
                .into_iter()
                .filter(|(_, (_, deleted))| !deleted)
                .map(|(k, (p, _))| (k, p))
                .collect(),
        }
    }
}

/// Read `topic` to its end and keep the keys `source`/`table` published.
pub async fn rebuild(
    kafka: &KafkaConfig,
    registry: &RegistryConfig,
    topic: &str,
    source: &str,
    table: &str,
) -> Result<PublishedKeys> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Option<Vec<u8>>, Option<Vec<u8>>)>(1_024);
    let (kafka, topic_owned) = (kafka.clone(), topic.to_string());
    let reader = tokio::task::spawn_blocking(move || {
        read_topic_to_end(&kafka, &topic_owned, |_, _, k, v| {
            // the receiver only goes away on error, which is reported below
            let _ = tx.blocking_send((k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)));
        })
    });
    let decoder = Decoder::new(registry)?;
    let mut fold = Rebuild::default();
    let mut foreign = 0u64;
    while let Some((k, v)) = rx.recv().await {
        let decoded = decoder
            .decode(k.as_deref(), v.as_deref())
            .await
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("cannot rebuild the published keys of `{table}` from `{topic}`: {e}"),
                )
            })?;
        let ev = decoded.event;
        if ev.source.name != source || ev.source.table != table {
            foreign += 1;
            continue;
        }
        fold.apply(ev.key, ev.source.position, ev.op);
    }
    reader
        .await
        .map_err(|e| Error::internal("topic reader failed").with_source(e))??;
    if foreign > 0 {
        tracing::warn!(
            topic,
            foreign,
            "sql_poll: the topic holds records of other sources; they were ignored"
        );
    }
    Ok(fold.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: i64) -> Vec<(String, Value)> {
        vec![("id".into(), Value::Long(id))]
    }
    fn p(b: u8) -> Position {
        Position::from_bytes(vec![b])
    }

    #[test]
    fn the_greatest_position_wins_whatever_the_order() {
        let mut r = Rebuild::default();
        r.apply(k(1), p(5), Op::Upsert);
        r.apply(k(1), p(6), Op::Delete);
        r.apply(k(1), p(5), Op::Upsert); // a replay after the delete
        r.apply(k(2), p(3), Op::Upsert);
        r.apply(k(2), p(9), Op::Upsert);
        r.apply(k(3), p(1), Op::Delete);
        r.apply(k(3), p(2), Op::Upsert); // re-inserted after its delete
        let keys = r.finish();
        assert_eq!(keys.len(), 2);
        assert!(!keys.contains(&encode_key(&k(1))));
        assert_eq!(keys.keys[&encode_key(&k(2))].position, p(9));
        assert!(keys.contains(&encode_key(&k(3))));
    }

    #[test]
    fn vanished_keys_are_those_not_seen_by_the_scan() {
        let mut keys = PublishedKeys::default();
        keys.published(k(1), p(1));
        keys.published(k(2), p(2));
        keys.published(k(3), p(3));
        let present: HashSet<Vec<u8>> = [encode_key(&k(2))].into_iter().collect();
        let gone: Vec<i64> = keys
            .vanished(&present)
            .into_iter()
            .map(|(_, p)| match p.key[0].1 {
                Value::Long(i) => i,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(gone, vec![1, 3]);
        keys.deleted(&encode_key(&k(1)));
        assert_eq!(keys.len(), 2);
    }
}
