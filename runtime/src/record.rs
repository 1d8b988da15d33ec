//! A consumed record, owned so that it outlives the poll, and the offsets
//! that follow a batch of them.

use rdkafka::message::{Headers, Message};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A topic partition.
pub type TopicPartition = (String, i32);

/// Per partition, the offset of the next record to consume: what a stage
/// stores after a batch, and where a partition resumes.
pub type Offsets = BTreeMap<TopicPartition, i64>;

/// A record as consumed.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Every header, in order (a header without a value has `None`).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn from_message<M: Message>(m: &M) -> Record {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: Arc::from(m.topic()),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The first header named `name` that has a value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, v)| k == name && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    }

    /// The key the change was published with: the Kafka key, or, for a
    /// record that went through a dedup repartition topic (whose Kafka key
    /// is the dedup key), the original key its header carries.
    pub fn change_key(&self) -> Option<&[u8]> {
        self.header(syncline_core::change::ORIGINAL_KEY_HEADER)
            .or(self.key.as_deref())
    }

    /// Bytes this record holds (key, value and headers), for batch limits.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }

    pub fn origin(&self) -> Origin {
        Origin {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Where a record was read from, for reasons and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic `{}` partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// The offsets to store after `records`: per partition, one past the
/// highest offset among them (whether or not that record changed anything).
pub fn next_offsets<'a>(records: impl IntoIterator<Item = &'a Record>) -> Offsets {
    let mut next = Offsets::new();
    for r in records {
        let e = next
            .entry((r.topic.to_string(), r.partition))
            .or_insert(r.offset + 1);
        *e = (*e).max(r.offset + 1);
    }
    next
}

/// The partition list for committing `next` to Kafka.
pub fn offset_list(next: &Offsets) -> rdkafka::TopicPartitionList {
    let mut tpl = rdkafka::TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        // Only fails for a negative offset, which `next_offsets` never makes.
        let _ = tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset));
    }
    tpl
}

#[cfg(test)]
pub(crate) fn test_record(topic: &str, partition: i32, offset: i64) -> Record {
    Record {
        topic: Arc::from(topic),
        partition,
        offset,
        key: None,
        value: None,
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_offset_is_one_past_the_highest_consumed() {
        let rs = [
            test_record("a", 0, 5),
            test_record("a", 0, 9),
            test_record("a", 1, 3),
            test_record("a", 0, 7),
        ];
        let next = next_offsets(&rs);
        assert_eq!(
            next,
            Offsets::from([(("a".into(), 0), 10), (("a".into(), 1), 4)])
        );
    }

    #[test]
    fn the_original_key_header_wins_over_the_kafka_key() {
        let mut r = test_record("a", 0, 0);
        r.key = Some(b"dedup-key".to_vec());
        assert_eq!(r.change_key(), Some(&b"dedup-key"[..]));
        r.headers.push((
            syncline_core::change::ORIGINAL_KEY_HEADER.into(),
            Some(b"row-key".to_vec()),
        ));
        assert_eq!(r.change_key(), Some(&b"row-key"[..]));
        assert_eq!(
            r.size(),
            9 + syncline_core::change::ORIGINAL_KEY_HEADER.len() + 7
        );
    }
}
