//! The poison corpus: 35 kinds of bad record mixed into a stream of good
//! ones, on real parts (Apache Kafka, the `syncline registry`, Postgres),
//! through `syncline run`. Bad frames (wrong magic byte, truncated, unknown
//! schema id, trailing bytes), hostile writer schemas (recursive, deeply
//! nested, an array or map of a billion items, a string of a terabyte,
//! absurd decimal scale), records that are not changes, and changes whose
//! values the target refuses (NUL in text and jsonb, invalid uuid and
//! numeric text, a value too wide or out of range, a CHECK violation, a key
//! that is not the target's primary key, a column named like the sink's
//! own). Every good record must land exactly once, every poison record must
//! be in a dead-letter topic with a reason, and no process may die.
//!
//! The corpus runs three ways: into the sink directly, through `rules`, and
//! through `dedup`. A record the first stage cannot decode is dead-lettered
//! there; a value only the target refuses passes the processor and is
//! dead-lettered by the sink, its origin then the processor's output. Each
//! dead letter is told apart by its origin (input offset) or, downstream, by
//! the row id its change carries.

mod support;

use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{PgDb, Stack, SynclineRun, TempDir};
use syncline_core::codec::{Decoder, Encoder};
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::{RegistryClient, RegistryConfig};
use syncline_core::value::decimal_from_text;
use syncline_core::{ChangeEvent, Column, ColumnType, Op, Position, SourceInfo, TableSchema};

const INPUT: &str = "poison.in";
const GOOD: i64 = 60;

fn col(name: &str, ty: ColumnType, nullable: bool, sql_type: &str) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable,
        sql_type: sql_type.into(),
    }
}

/// The source shape: every column a poison value can hide in.
fn items() -> TableSchema {
    TableSchema {
        namespace: "syncline.test".into(),
        name: "items".into(),
        columns: vec![
            col("id", ColumnType::Long, false, "int8"),
            col("note", ColumnType::Text, true, "text"),
            col("u", ColumnType::Uuid, true, "uuid"),
            col("num", ColumnType::NumericText, true, "numeric"),
            col(
                "dec",
                ColumnType::Decimal {
                    precision: 5,
                    scale: 2,
                },
                true,
                "numeric(5,2)",
            ),
            col("j", ColumnType::Json, true, "jsonb"),
            col("w", ColumnType::Text, true, "varchar(3)"),
            col("c", ColumnType::Long, true, "int8"),
            col("i", ColumnType::Long, true, "int8"),
            col("ts", ColumnType::TimestampTz, true, "timestamptz"),
            col("d", ColumnType::Date, true, "date"),
        ],
        primary_key: vec!["id".into()],
    }
}

/// The target, created by the test with stricter types than the source's.
const TARGET_DDL: &str = "CREATE TABLE poison_items (
    id bigint PRIMARY KEY, note text, u uuid, num numeric, dec numeric(5,2),
    j jsonb, w varchar(3), c bigint CHECK (c >= 0), i integer,
    ts timestamptz, d date)";

fn good_row(id: i64) -> Vec<(String, Value)> {
    vec![
        ("id".into(), Value::Long(id)),
        ("note".into(), Value::String(format!("good {id}"))),
        (
            "u".into(),
            Value::Uuid(uuid::Uuid::from_u128(0x1234_0000 + id as u128)),
        ),
        ("num".into(), Value::String("1.5".into())),
        ("dec".into(), decimal_from_text("1.25", 2).unwrap()),
        ("j".into(), Value::String(r#"{"ok": true}"#.into())),
        ("w".into(), Value::String("abc".into())),
        ("c".into(), Value::Long(1)),
        ("i".into(), Value::Long(7)),
        ("ts".into(), Value::TimestampMicros(1_700_000_000_000_000)),
        ("d".into(), Value::Date(19_000)),
    ]
}

fn change(op: Op, id: i64, after: Option<Vec<(String, Value)>>) -> ChangeEvent {
    ChangeEvent {
        op,
        key: vec![("id".into(), Value::Long(id))],
        before: None,
        after,
        source: SourceInfo {
            connector: "test".into(),
            name: "src".into(),
            db: "db".into(),
            table: "items".into(),
            position: Position::builder().i64(id).build(),
            position_text: id.to_string(),
            ts_us: 1_700_000_000_000_000 + id,
        },
        unchanged: Vec::new(),
    }
}

/// `good_row(id)` with one column replaced.
fn with(id: i64, column: &str, v: Value) -> ChangeEvent {
    let mut row = good_row(id);
    for (n, old) in row.iter_mut() {
        if n == column {
            *old = v.clone();
        }
    }
    change(Op::Insert, id, Some(row))
}

/// Avro's zig-zag varint.
fn varint(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return out;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// One record to produce: key, value, whether it is poison (its kind), and
/// the row id its change carries.
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    poison: Option<&'static str>,
    id: i64,
}

struct Corpus {
    encoder: Encoder,
    registry: RegistryClient,
}

impl Corpus {
    async fn encode(
        &self,
        topic: &str,
        table: &TableSchema,
        ev: &ChangeEvent,
    ) -> (Vec<u8>, Vec<u8>) {
        self.encoder
            .encode(topic, table, ev)
            .await
            .unwrap_or_else(|e| panic!("cannot encode {ev:?}: {e}"))
    }

    /// Register a hostile writer schema under a subject of its own.
    async fn hostile(&self, n: usize, schema: &str) -> u32 {
        self.registry
            .register(&format!("poison-hostile-{n}-value"), schema)
            .await
            .unwrap_or_else(|e| panic!("the registry refused hostile schema {n}: {e}"))
    }

    async fn good(&self, id: i64) -> Rec {
        let (k, v) = self
            .encode(INPUT, &items(), &change(Op::Insert, id, Some(good_row(id))))
            .await;
        Rec {
            key: Some(k),
            value: Some(v),
            poison: None,
            id,
        }
    }

    /// Every poison kind, each keyed (where a key can be framed) by its own id.
    async fn poison(&self) -> Vec<Rec> {
        let mut out = Vec::new();
        let mut id = 1000;
        // A good record's key and value, with a fresh id.
        macro_rules! next_key {
            ($c:expr) => {{
                id += 1;
                $c.encode(INPUT, &items(), &change(Op::Insert, id, Some(good_row(id))))
                    .await
            }};
        }
        // Frames.
        let (k, v) = next_key!(self);
        let mut wrong_magic = v.clone();
        wrong_magic[0] = 1;
        out.push(rec(id, k, wrong_magic, "wrong magic byte"));
        let (k, _) = next_key!(self);
        out.push(rec(id, k, vec![0, 0, 0], "truncated header"));
        let (k, _) = next_key!(self);
        out.push(rec(id, k, frame(0x7fff_fff0, &[2]), "unknown schema id"));
        let (k, _) = next_key!(self);
        out.push(rec(id, k, Vec::new(), "empty value"));
        let (k, _) = next_key!(self);
        out.push(Rec {
            key: Some(k),
            value: None,
            poison: Some("null value"),
            id,
        });
        let (k, v) = next_key!(self);
        out.push(rec(id, k, v[..v.len() / 2].to_vec(), "truncated body"));
        let (k, mut v) = next_key!(self);
        v.extend_from_slice(&[0, 0, 0]);
        out.push(rec(id, k, v, "trailing bytes"));
        let (_, v) = next_key!(self);
        out.push(Rec {
            key: Some(b"not avro at all".to_vec()),
            value: Some(v),
            poison: Some("key not avro"),
            id,
        });
        let (_, v) = next_key!(self);
        out.push(Rec {
            key: None,
            value: Some(v),
            poison: Some("no key"),
            id,
        });
        out.push(Rec {
            key: Some(b"x".to_vec()),
            value: Some(b"plain text".to_vec()),
            poison: Some("not a frame"),
            id: 0,
        });

        // Hostile writer schemas, and hostile bodies under sane ones.
        let hostile: Vec<(&'static str, String, Vec<u8>)> = vec![
            (
                "recursive schema",
                r#"{"type":"record","name":"R","fields":[{"name":"next","type":["null","R"]}]}"#.into(),
                std::iter::repeat_n(2u8, 200_000).chain([0]).collect(),
            ),
            ("deeply nested schema", nested(40), vec![0]),
            (
                "absurd decimal scale",
                r#"{"type":"bytes","logicalType":"decimal","precision":4000000000,"scale":4000000000}"#.into(),
                [varint(1), vec![1]].concat(),
            ),
            (
                "not a change envelope",
                r#""string""#.into(),
                [varint(2), b"hi".to_vec()].concat(),
            ),
        ];
        for (n, (kind, schema, body)) in hostile.into_iter().enumerate() {
            let sid = self.hostile(n, &schema).await;
            let (k, _) = next_key!(self);
            out.push(rec(id, k, frame(sid, &body), kind));
        }
        // A change envelope whose row's first column is `first`: the body
        // is `op` (INSERT), `before` (the row branch), then that column's
        // bytes, which are hostile.
        let bodies: Vec<(&'static str, ColumnType, bool, Vec<u8>)> = vec![
            (
                "array of a billion items",
                ColumnType::Array(Box::new(ColumnType::Long)),
                false,
                varint(1_000_000_000),
            ),
            (
                "array with a negative block of a billion",
                ColumnType::Array(Box::new(ColumnType::Long)),
                false,
                [varint(-1_000_000_000), varint(8)].concat(),
            ),
            (
                "string of a terabyte",
                ColumnType::Text,
                false,
                varint(1_000_000_000_000),
            ),
            (
                "bytes of a terabyte",
                ColumnType::Bytes,
                false,
                varint(1_000_000_000_000),
            ),
            ("negative length", ColumnType::Bytes, false, varint(-5)),
            (
                "non-UTF-8 string",
                ColumnType::Text,
                false,
                [varint(2), vec![0xff, 0xfe]].concat(),
            ),
            ("bad union index", ColumnType::Text, true, varint(7)),
        ];
        for (n, (kind, ty, nullable, hostile)) in bodies.into_iter().enumerate() {
            let mut table = items();
            table.columns.insert(0, col("first", ty, nullable, ""));
            let sid = self
                .hostile(100 + n, &table.value_schema_json().to_string())
                .await;
            let body = [varint(0), varint(1), hostile].concat();
            let (k, _) = next_key!(self);
            out.push(rec(id, k, frame(sid, &body), kind));
        }
        let (k, v) = next_key!(self);
        let mut bad_op = v[..5].to_vec();
        bad_op.extend(varint(42));
        out.push(rec(id, k, bad_op, "op outside the enum"));

        // Changes the target refuses.
        let refused: Vec<(&'static str, &'static str, Value)> = vec![
            ("NUL in text", "note", Value::String("a\0b".into())),
            (
                "NUL in jsonb",
                "j",
                Value::String(r#"{"a": "\u0000"}"#.into()),
            ),
            ("invalid numeric text", "num", Value::String("abc".into())),
            (
                "numeric overflow",
                "dec",
                decimal_from_text("12345.67", 2).unwrap(),
            ),
            (
                "too wide for varchar(3)",
                "w",
                Value::String("abcdef".into()),
            ),
            ("CHECK violation", "c", Value::Long(-1)),
            ("integer out of range", "i", Value::Long(3_000_000_000)),
            ("invalid json", "j", Value::String("{not json".into())),
            // (one short of the extremes: those are Postgres's infinities,
            // which land; see docs/types.md)
            (
                "timestamp out of range",
                "ts",
                Value::TimestampMicros(i64::MAX - 1),
            ),
            ("date out of range", "d", Value::Date(i32::MAX - 1)),
        ];
        for (kind, column, v) in refused {
            id += 1;
            let (k, v) = self.encode(INPUT, &items(), &with(id, column, v)).await;
            out.push(rec(id, k, v, kind));
        }
        id += 1;
        let (k, v) = self
            .encode(INPUT, &items(), &change(Op::Update, id, None))
            .await;
        out.push(rec(id, k, v, "update without a row"));

        // Shapes that do not fit the target (registered under other topics).
        let mut text_uuid = items();
        text_uuid.columns[2].ty = ColumnType::Text;
        text_uuid.columns[2].sql_type = "text".into();
        id += 1;
        let ev = with(id, "u", Value::String("not-a-uuid".into()));
        let (k, v) = self.encode("poison.other.uuid", &text_uuid, &ev).await;
        out.push(rec(id, k, v, "invalid uuid text"));

        let mut own = items();
        own.columns
            .push(col("_syncline_position", ColumnType::Text, true, "text"));
        id += 1;
        let mut ev = change(Op::Insert, id, Some(good_row(id)));
        ev.after
            .as_mut()
            .unwrap()
            .push(("_syncline_position".into(), Value::String("x".into())));
        let (k, v) = self.encode("poison.other.own", &own, &ev).await;
        out.push(rec(id, k, v, "column named like the sink's own"));

        let mut by_note = items();
        by_note.columns[1].nullable = false;
        by_note.primary_key = vec!["note".into()];
        id += 1;
        let mut ev = change(Op::Insert, id, Some(good_row(id)));
        ev.key = vec![("note".into(), Value::String(format!("good {id}")))];
        let (k, v) = self.encode("poison.other.key", &by_note, &ev).await;
        out.push(rec(id, k, v, "key is not the target's primary key"));
        out
    }
}

fn rec(id: i64, key: Vec<u8>, value: Vec<u8>, kind: &'static str) -> Rec {
    Rec {
        key: Some(key),
        value: Some(value),
        poison: Some(kind),
        id,
    }
}

/// A record schema nested `depth` levels deep (not recursive).
fn nested(depth: usize) -> String {
    let mut s = r#"{"type":"record","name":"L0","fields":[]}"#.to_string();
    for i in 1..depth {
        s = format!(r#"{{"type":"record","name":"L{i}","fields":[{{"name":"f","type":{s}}}]}}"#);
    }
    s
}

/// A record read back: key, value and headers.
type Read = (Vec<u8>, Vec<u8>, BTreeMap<String, String>);

/// Every record in `topic` with its headers.
fn read_all(bootstrap: &str, topic: &str) -> Vec<Read> {
    let reader: BaseConsumer = KafkaConfig::new(bootstrap)
        .reader_config()
        .create()
        .unwrap();
    let md = reader
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (_, hi) = reader
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        if hi > 0 {
            ends.insert(p.id(), hi);
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .unwrap();
        }
    }
    if ends.is_empty() {
        return Vec::new();
    }
    reader.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && Instant::now() < deadline {
        let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
            ends.remove(&m.partition());
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            m.key().unwrap_or_default().to_vec(),
            m.payload().unwrap_or_default().to_vec(),
            headers,
        ));
    }
    out
}

/// A poison record as produced: its kind and the row id its change carries.
type Poison = (&'static str, i64);

/// Good and poison records interleaved (but for the kinds `skip` names);
/// the poison records by input offset.
async fn produce(stack: &Stack, skip: &[&str]) -> BTreeMap<i64, Poison> {
    let kafka = KafkaConfig::new(stack.bootstrap());
    kafka.ensure_topic(INPUT, 1, false).await.unwrap();
    let registry = RegistryConfig::new(stack.registry_url());
    let corpus = Corpus {
        encoder: Encoder::new(&registry).unwrap(),
        registry: RegistryClient::new(&registry).unwrap(),
    };
    let mut poison = corpus.poison().await;
    assert!(poison.len() >= 30, "{} kinds", poison.len());
    poison.retain(|p| !skip.contains(&p.poison.unwrap_or_default()));
    let mut records = Vec::new();
    let mut good = 1..=GOOD;
    for p in poison {
        for _ in 0..2 {
            if let Some(id) = good.next() {
                records.push(corpus.good(id).await);
            }
        }
        records.push(p);
    }
    for id in good {
        records.push(corpus.good(id).await);
    }
    let producer: FutureProducer = kafka.producer().unwrap();
    let mut offsets = BTreeMap::new();
    for r in &records {
        let mut record = FutureRecord::<[u8], [u8]>::to(INPUT);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        let offset = producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"))
            .offset;
        if let Some(kind) = r.poison {
            offsets.insert(offset, (kind, r.id));
        }
    }
    offsets
}

/// What stands between the corpus and the sink.
#[derive(Clone, Copy, Debug)]
enum Between {
    Nothing,
    Rules,
    Dedup,
}

impl Between {
    /// The pipeline's processor section and the topic the sink reads.
    fn processors(self) -> (&'static str, &'static str) {
        match self {
            Between::Nothing => ("", INPUT),
            // A step that touches every change: each is decoded, compiled
            // for, transformed and encoded again.
            Between::Rules => (
                r#"processors:
  shape:
    type: rules
    from: [poison.in]
    to: poison.out
    batch_size: 40
    steps:
      - set: { note: "row.note" }
"#,
                "poison.out",
            ),
            Between::Dedup => (
                r#"processors:
  once:
    type: dedup
    from: [poison.in]
    to: poison.out
    batch_size: 40
"#,
                "poison.out",
            ),
        }
    }

    /// Kinds that are not poison for this arrangement. A processor
    /// publishes every input shape to one output topic, so a change whose
    /// key has other columns is a key schema the registry refuses for that
    /// topic: by design that stops the pipeline (an incompatible schema is
    /// the operator's to resolve, never a stream diverted record by record
    /// into the dead-letter topic; tests/processors.rs has that case).
    fn not_poison(self) -> &'static [&'static str] {
        match self {
            Between::Nothing => &[],
            Between::Rules | Between::Dedup => &["key is not the target's primary key"],
        }
    }

    /// The dead-letter topics of the pipeline's components.
    fn dead_letter_topics(self) -> Vec<&'static str> {
        match self {
            Between::Nothing => vec!["poison.target.dead"],
            Between::Rules => vec!["poison.shape.dead", "poison.target.dead"],
            Between::Dedup => vec!["poison.once.dead", "poison.target.dead"],
        }
    }
}

/// The row id of the change a dead letter holds (decoded through the
/// registry), for dead letters whose origin is not the corpus's topic.
async fn row_id(decoder: &Decoder, key: &[u8], value: &[u8]) -> Option<i64> {
    let d = decoder.decode(Some(key), Some(value)).await.ok()?;
    let id_of = |row: &[(String, Value)]| {
        row.iter()
            .find(|(n, _)| n == "id")
            .and_then(|(_, v)| match v {
                Value::Long(i) => Some(*i),
                _ => None,
            })
    };
    id_of(&d.event.key).or_else(|| d.event.after.as_deref().and_then(id_of))
}

async fn corpus_through(between: Between) {
    let stack = Stack::start();
    let db = PgDb::create("poison").await;
    let dir = TempDir::new("poison");
    db.client().await.batch_execute(TARGET_DDL).await.unwrap();
    let poison = produce(&stack, between.not_poison()).await;
    let (processors, sink_input) = between.processors();

    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: poison
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 1
registry:
  url: {registry}
external_topics: [{INPUT}]
{processors}sinks:
  target:
    type: postgres
    connection: {target}
    topics: [{sink_input}]
    tables: {{ {sink_input}: poison_items }}
    on_type_change: keep
    batch_size: 40
"#,
            bootstrap = stack.bootstrap(),
            registry = stack.registry_url(),
            target = db.url(),
        ),
    )
    .unwrap();
    let mut run = SynclineRun::start_with_args(
        &pipeline,
        &["--state-dir", dir.path().join("state").to_str().unwrap()],
    );
    let c = db.client().await;
    let decoder = Decoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let by_id: BTreeMap<i64, &'static str> = poison.values().map(|(k, id)| (*id, *k)).collect();
    let want: BTreeMap<i64, String> = (1..=GOOD).map(|id| (id, format!("good {id}"))).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    // Wait until every good row landed and every poison record is found.
    let (rows, found) = loop {
        let rows: BTreeMap<i64, String> = c
            .query("SELECT id, note FROM poison_items", &[])
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        // Poison kind -> the reason it was dead-lettered with; and any
        // dead letter that is not poison.
        let mut found: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut extra = Vec::new();
        for topic in between.dead_letter_topics() {
            for (key, value, h) in read_all(&stack.bootstrap(), topic) {
                let reason = h.get("syncline.reason").cloned().unwrap_or_default();
                assert!(
                    !reason.is_empty(),
                    "a dead letter without a reason in {topic}"
                );
                let origin = h.get("syncline.topic").cloned().unwrap_or_default();
                let kind = if origin == INPUT {
                    let offset: i64 = h["syncline.offset"].parse().unwrap();
                    poison.get(&offset).map(|(k, _)| *k)
                } else {
                    row_id(&decoder, &key, &value)
                        .await
                        .and_then(|id| by_id.get(&id).copied())
                };
                match kind {
                    Some(k) => {
                        let again = found.insert(k, reason).is_some();
                        assert!(!again, "`{k}` dead-lettered twice:\n{}", run.log());
                    }
                    None => {
                        extra.push(format!("{origin}@{:?}: {reason}", h.get("syncline.offset")))
                    }
                }
            }
        }
        assert!(
            extra.is_empty(),
            "records that are not poison were dead-lettered: {extra:#?}\n{}",
            run.log()
        );
        if rows == want && found.len() == poison.len() {
            break (rows, found);
        }
        assert!(run.exit_code().is_none(), "syncline exited:\n{}", run.log());
        if Instant::now() > deadline {
            let missing: Vec<_> = poison
                .values()
                .filter(|(k, _)| !found.contains_key(k))
                .collect();
            panic!(
                "through {between:?}: {} of {GOOD} good rows, poison not dead-lettered: {missing:?}\n{}",
                rows.len(),
                run.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(rows, want, "every good record landed, and nothing else did");
    for (kind, reason) in &found {
        println!("{kind:40} -> {reason}");
    }
    assert!(run.exit_code().is_none(), "syncline exited:\n{}", run.log());
    run.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_good_record_lands_once_and_every_poison_record_is_dead_lettered() {
    corpus_through(Between::Nothing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_through_rules_loses_nothing_and_stops_nothing() {
    corpus_through(Between::Rules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_through_dedup_loses_nothing_and_stops_nothing() {
    corpus_through(Between::Dedup).await;
}
