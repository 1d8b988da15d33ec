//! A pipeline's dead letters: list them with their reasons and origins, and
//! replay chosen ones into the topics they came from. One library for the
//! management API (`/api/v1/dead-letters`) and `syncline dlq`.
//!
//! Every stage writes dead letters in one format
//! ([`syncline_core::kafka::DeadLetter`]): the record unchanged (key, value,
//! headers) plus `syncline.reason`, `syncline.topic`, `syncline.partition`
//! and `syncline.offset` headers. A source's dead letter of a row it could
//! not publish has no origin offset (partition -1) and, when the row was too
//! large, no value: those are listed but cannot be replayed.
//!
//! # Replay, exactly once in effect
//! A replayed dead letter is its record (key, value and headers, without
//! the dead-letter headers, with `syncline.replayed-from`) produced again to
//! its original topic and partition; once the broker has acknowledged it, a
//! marker keyed by the dead letter (`<pipeline>/dead-letters/<topic>/<partition>/<offset>`
//! in `_syncline_cursors`) records the replay, and a later replay skips a
//! marked dead letter unless forced. A crash between the two sends it again
//! on the next replay, which changes nothing downstream: the record carries
//! its change's identity (source, table, key, position), a sink applies a
//! change only if it is newer than what the target row holds, and a
//! processor's output keeps its input's identity. For the same reason a
//! replayed change older than what the target already holds for its key is
//! dropped, as any older change is.
//!
//! Every other consumer of the original topic sees the replayed record too;
//! for them it is a change they already applied (dropped by position) or,
//! for a record no one could decode, the same poison again.

use chrono::{DateTime, TimeZone, Utc};
use futures::future::try_join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use syncline_core::error::{Context, ErrorKind};
use syncline_core::kafka::KafkaConfig;
use syncline_core::{Error, Result};
use syncline_sources::state::JsonState;

/// The header that marks a replayed record: `<dead-letter topic>/<partition>/<offset>`.
pub const REPLAYED_FROM_HEADER: &str = "syncline.replayed-from";
/// Longest a listing reads before it answers with what it has.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Dead letters replayed per round trip to the broker.
const REPLAY_CHUNK: usize = 500;

/// Which dead letters: every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The topic the record was for (its origin).
    pub topic: Option<String>,
    /// Reason contains this text.
    pub reason: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub partition: Option<i32>,
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
}

/// Where a dead letter's record came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A replay already done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replayed {
    pub at: DateTime<Utc>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One dead letter.
#[derive(Debug, Clone)]
pub struct Letter {
    /// The component whose dead-letter topic holds it.
    pub component: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<DateTime<Utc>>,
    pub reason: String,
    /// The topic the record was for; `None` when the dead letter names none.
    pub origin_topic: Option<String>,
    /// Where in it, when it was consumed from there.
    pub origin: Option<Origin>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The record's own headers (the dead-letter headers removed).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub replayed: Option<Replayed>,
}

impl Letter {
    /// It has a value and a place to go back to.
    pub fn replayable(&self) -> bool {
        self.value.is_some() && self.origin.is_some()
    }

    fn marker_name(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    fn matches(&self, f: &Filter) -> bool {
        f.topic
            .as_deref()
            .is_none_or(|t| self.origin_topic.as_deref() == Some(t))
            && f.reason.as_deref().is_none_or(|r| self.reason.contains(r))
            && f.since
                .is_none_or(|s| self.timestamp.is_some_and(|t| t >= s))
            && f.until
                .is_none_or(|u| self.timestamp.is_some_and(|t| t < u))
    }
}

/// One component's dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetterTopic {
    pub component: String,
    pub topic: String,
}

/// The replay markers of `pipeline`.
fn markers(kafka: &KafkaConfig, pipeline: &str) -> JsonState<Replayed> {
    JsonState::new(
        kafka.clone(),
        format!("{pipeline}/dead-letters/"),
        "dead-letter replay",
    )
}

/// The dead letters of `topics` that match `filter`, oldest first (by
/// timestamp, then partition and offset), at most `limit`; `true` when more
/// matched.
pub async fn list(
    kafka: &KafkaConfig,
    pipeline: &str,
    topics: &[DeadLetterTopic],
    filter: &Filter,
    limit: usize,
) -> Result<(Vec<Letter>, bool)> {
    let mut letters = Vec::new();
    for t in topics {
        let (kafka, t, filter) = (kafka.clone(), t.clone(), filter.clone());
        let read = tokio::task::spawn_blocking(move || read(&kafka, &t, &filter, limit + 1))
            .await
            .map_err(|e| Error::internal("the dead-letter reader failed").with_source(e))??;
        letters.extend(read);
    }
    letters.sort_by(|a, b| {
        (a.timestamp, &a.topic, a.partition, a.offset).cmp(&(
            b.timestamp,
            &b.topic,
            b.partition,
            b.offset,
        ))
    });
    let truncated = letters.len() > limit;
    letters.truncate(limit);
    // (the markers are in the state topic every source shares: read only
    // when there is something to mark)
    if letters.is_empty() {
        return Ok((letters, truncated));
    }
    let replayed = markers(kafka, pipeline).restore().await?;
    for l in &mut letters {
        l.replayed = replayed.get(&l.marker_name()).cloned();
    }
    Ok((letters, truncated))
}

/// Read `t`'s dead letters that match `filter`, at most `cap` per partition.
fn read(
    kafka: &KafkaConfig,
    t: &DeadLetterTopic,
    filter: &Filter,
    cap: usize,
) -> Result<Vec<Letter>> {
    let consumer: BaseConsumer = kafka
        .reader_config()
        .set("enable.partition.eof", "false")
        .create()
        .context(ErrorKind::Config, || {
            "cannot create a Kafka consumer".into()
        })?;
    let topic = t.topic.as_str();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .context(ErrorKind::Transient, || {
            format!("cannot read the metadata of `{topic}`")
        })?;
    let Some(meta) = md
        .topics()
        .iter()
        .find(|m| m.name() == topic && m.error().is_none())
    else {
        return Ok(Vec::new());
    };
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in meta.partitions() {
        let id = p.id();
        if filter.partition.is_some_and(|want| want != id) {
            continue;
        }
        let (lo, hi) = consumer
            .fetch_watermarks(topic, id, Duration::from_secs(30))
            .context(ErrorKind::Transient, || {
                format!("cannot read the offsets of `{topic}`")
            })?;
        let mut start = lo.max(filter.from_offset.unwrap_or(0));
        let end = hi.min(filter.to_offset.map_or(i64::MAX, |o| o.saturating_add(1)));
        if let Some(since) = filter.since {
            start = start.max(offset_at(&consumer, topic, id, since, hi)?);
        }
        if start < end {
            ends.insert(id, end);
            tpl.add_partition_offset(topic, id, Offset::Offset(start))
                .map_err(|e| Error::internal("bad partition list").with_source(e))?;
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&tpl)
        .context(ErrorKind::Transient, || format!("cannot read `{topic}`"))?;
    let mut found: HashMap<i32, Vec<Letter>> = HashMap::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::transient(format!(
                "reading the dead letters of `{topic}` took more than {} s",
                READ_TIMEOUT.as_secs()
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.context(ErrorKind::Transient, || format!("cannot read `{topic}`"))?;
        let (p, o) = (m.partition(), m.offset());
        let Some(&end) = ends.get(&p) else { continue };
        if o >= end {
            ends.remove(&p);
            continue;
        }
        if o + 1 >= end {
            ends.remove(&p);
        }
        let letter = letter_of(&t.component, &m);
        let bucket = found.entry(p).or_default();
        if bucket.len() < cap && letter.matches(filter) {
            bucket.push(letter);
            if bucket.len() >= cap {
                ends.remove(&p);
            }
        }
    }
    Ok(found.into_values().flatten().collect())
}

/// The first offset of `partition` at or after `at` (`hi` if none).
fn offset_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    at: DateTime<Utc>,
    hi: i64,
) -> Result<i64> {
    // Kafka's timestamps start at the epoch: earlier means from the start.
    let millis = at.timestamp_millis().max(0);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(millis))
        .map_err(|e| Error::internal("bad partition list").with_source(e))?;
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(30))
        .context(ErrorKind::Transient, || {
            format!("cannot look up offsets of `{topic}` by time")
        })?;
    Ok(found
        .elements()
        .first()
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(hi))
}

fn letter_of<M: Message>(component: &str, m: &M) -> Letter {
    let mut headers = Vec::new();
    let (mut reason, mut origin_topic, mut partition, mut offset) =
        (String::new(), None, None, None);
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            let text = || h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            match h.key {
                "syncline.reason" => reason = text().unwrap_or_default(),
                "syncline.topic" => origin_topic = text(),
                "syncline.partition" => partition = text().and_then(|t| t.parse::<i32>().ok()),
                "syncline.offset" => offset = text().and_then(|t| t.parse::<i64>().ok()),
                k => headers.push((k.to_string(), h.value.map(<[u8]>::to_vec))),
            }
        }
    }
    let origin = match (&origin_topic, partition, offset) {
        (Some(t), Some(p), Some(o)) if p >= 0 && o >= 0 => Some(Origin {
            topic: t.clone(),
            partition: p,
            offset: o,
        }),
        _ => None,
    };
    Letter {
        component: component.to_string(),
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m
            .timestamp()
            .to_millis()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        reason,
        origin_topic,
        origin,
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
        replayed: None,
    }
}

/// A decoder for showing keys; none if the registry settings cannot make
/// one (the keys are then shown as bytes).
pub fn key_decoder(
    pipeline: &crate::pipeline::config::PipelineConfig,
) -> Option<syncline_core::codec::Decoder> {
    syncline_core::codec::Decoder::with_limits(&pipeline.registry, pipeline.limits.clone()).ok()
}

/// The key of `l` for people: its columns, decoded through the registry
/// when the record decodes, else its bytes as text (or hex when they are
/// not text).
pub async fn key_json(
    decoder: Option<&syncline_core::codec::Decoder>,
    l: &Letter,
) -> Option<serde_json::Value> {
    let key = l.key.as_deref()?;
    if let Some(d) = decoder {
        if let Ok(decoded) = d.decode(Some(key), l.value.as_deref()).await {
            let mut object = serde_json::Map::new();
            for (name, value) in decoded.event.key {
                let json = serde_json::Value::try_from(value)
                    .unwrap_or_else(|e| serde_json::Value::String(format!("({e})")));
                object.insert(name, json);
            }
            return Some(serde_json::Value::Object(object));
        }
    }
    Some(serde_json::Value::String(match std::str::from_utf8(key) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => format!("0x{}", hex::encode(key)),
    }))
}

/// The dead-letter topic of every component of `pipeline` (`only`: of that one).
pub fn topics_of(
    pipeline: &crate::pipeline::config::PipelineConfig,
    only: Option<&str>,
) -> Vec<DeadLetterTopic> {
    crate::pipeline::supervise::components(pipeline)
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name))
        .map(|(name, c)| DeadLetterTopic {
            topic: c.dead_letter_topic(&pipeline.name, &name),
            component: name,
        })
        .collect()
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub dry_run: bool,
    /// The dead letters sent back (or that would be), with their markers.
    pub replayed: Vec<Letter>,
    pub already_replayed: Vec<Letter>,
    pub not_replayable: Vec<Letter>,
}

/// Send `letters` back to their origins (see the module docs): those not
/// replayable are skipped, and those replayed before unless `force`.
/// `progress(done, total)` is called after each chunk.
pub async fn replay(
    kafka: &KafkaConfig,
    pipeline: &str,
    letters: Vec<Letter>,
    dry_run: bool,
    force: bool,
    progress: impl Fn(usize, usize),
) -> Result<Outcome> {
    let mut out = Outcome {
        dry_run,
        ..Outcome::default()
    };
    let mut to_send = Vec::new();
    for l in letters {
        if !l.replayable() {
            out.not_replayable.push(l);
        } else if l.replayed.is_some() && !force {
            out.already_replayed.push(l);
        } else {
            to_send.push(l);
        }
    }
    if dry_run || to_send.is_empty() {
        out.replayed = to_send;
        return Ok(out);
    }
    let producer = kafka.producer()?;
    let markers = markers(kafka, pipeline);
    let total = to_send.len();
    for chunk in to_send.chunks_mut(REPLAY_CHUNK) {
        let deliveries = chunk
            .iter()
            .map(|l| {
                let origin = l.origin.as_ref().expect("replayable");
                let mut headers = OwnedHeaders::new();
                for (k, v) in &l.headers {
                    if k == REPLAYED_FROM_HEADER
                        || syncline_core::kafka::DEAD_LETTER_HEADERS.contains(&k.as_str())
                    {
                        continue;
                    }
                    headers = headers.insert(Header {
                        key: k,
                        value: v.as_deref(),
                    });
                }
                let from = l.marker_name();
                headers = headers.insert(Header {
                    key: REPLAYED_FROM_HEADER,
                    value: Some(from.as_bytes()),
                });
                let mut record = FutureRecord::<[u8], [u8]>::to(&origin.topic)
                    .partition(origin.partition)
                    .headers(headers);
                if let Some(k) = &l.key {
                    record = record.key(k);
                }
                if let Some(v) = &l.value {
                    record = record.payload(v);
                }
                syncline_runtime::produce::send(&producer, record)
            })
            .collect::<Result<Vec<_>>>()?;
        let acked = try_join_all(deliveries.into_iter().map(|d| async move {
            match d.await {
                Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
                Ok(Err((e, _))) => Err(syncline_core::error::kafka::kafka_error(
                    e,
                    "the broker refused a replayed dead letter",
                )),
                Err(_) => Err(Error::transient(
                    "a replayed dead letter was not acknowledged",
                )),
            }
        }))
        .await?;
        let now = Utc::now();
        for (l, (partition, offset)) in chunk.iter_mut().zip(acked) {
            let origin = l.origin.as_ref().expect("replayable");
            l.replayed = Some(Replayed {
                at: now,
                topic: origin.topic.clone(),
                partition,
                offset,
            });
        }
        try_join_all(chunk.iter().map(|l| {
            let (markers, producer) = (&markers, &producer);
            async move {
                markers
                    .store(producer, &l.marker_name(), l.replayed.as_ref())
                    .await
            }
        }))
        .await?;
        progress(out.replayed.len() + chunk.len(), total);
        out.replayed.extend(chunk.iter().cloned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: &str, ts_ms: i64) -> Letter {
        Letter {
            component: "c".into(),
            topic: "p.c.dead".into(),
            partition: 0,
            offset: 7,
            timestamp: Utc.timestamp_millis_opt(ts_ms).single(),
            reason: reason.into(),
            origin_topic: Some("t".into()),
            origin: Some(Origin {
                topic: "t".into(),
                partition: 1,
                offset: 3,
            }),
            key: None,
            value: Some(vec![1]),
            headers: vec![],
            replayed: None,
        }
    }

    #[test]
    fn filters_by_reason_and_time_window() {
        let l = letter("duplicate key value violates", 10_000);
        let at = |ms| Utc.timestamp_millis_opt(ms).single();
        assert!(l.matches(&Filter::default()));
        assert!(l.matches(&Filter {
            reason: Some("duplicate key".into()),
            since: at(10_000),
            until: at(10_001),
            ..Filter::default()
        }));
        assert!(!l.matches(&Filter {
            reason: Some("overflow".into()),
            ..Filter::default()
        }));
        assert!(l.matches(&Filter {
            topic: Some("t".into()),
            ..Filter::default()
        }));
        assert!(
            !l.matches(&Filter {
                topic: Some("other".into()),
                ..Filter::default()
            }),
            "the topic the record was for"
        );
        assert!(
            !l.matches(&Filter {
                until: at(10_000),
                ..Filter::default()
            }),
            "until is exclusive"
        );
        assert!(!l.matches(&Filter {
            since: at(10_001),
            ..Filter::default()
        }));
    }

    #[tokio::test]
    async fn a_dry_run_sorts_without_sending_and_force_takes_replayed_ones() {
        let mut replayed = letter("x", 1);
        replayed.replayed = Some(Replayed {
            at: Utc::now(),
            topic: "t".into(),
            partition: 1,
            offset: 9,
        });
        let mut no_value = letter("too large", 1);
        no_value.value = None;
        let letters = vec![letter("a", 1), replayed, no_value];
        // No broker at this address: a dry run must not need one.
        let kafka = KafkaConfig::new("127.0.0.1:1");
        let out = replay(&kafka, "p", letters.clone(), true, false, |_, _| {})
            .await
            .unwrap();
        assert_eq!(
            (
                out.replayed.len(),
                out.already_replayed.len(),
                out.not_replayable.len()
            ),
            (1, 1, 1)
        );
        let out = replay(&kafka, "p", letters, true, true, |_, _| {})
            .await
            .unwrap();
        assert_eq!((out.replayed.len(), out.not_replayable.len()), (2, 1));
    }
}
