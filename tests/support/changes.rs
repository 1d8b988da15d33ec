//! Change records for the sink tests: the `items` shape (`id bigint` key,
//! `v text`), changes of it, a workload with replays, what the target must
//! hold after it, and a producer that encodes them through the registry.

use super::Stack;
use apache_avro::types::Value;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;
use syncline_core::codec::Encoder;
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::schema::nullable_value;
use syncline_core::value::decimal_from_text;
use syncline_core::{ChangeEvent, Column, ColumnType, Op, Position, SourceInfo, TableSchema};

pub struct Producer {
    kafka: KafkaConfig,
    encoder: Encoder,
    producer: FutureProducer,
}

impl Producer {
    pub fn new(stack: &Stack) -> Self {
        let kafka = KafkaConfig::new(stack.bootstrap());
        let encoder = Encoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
        let producer = kafka.producer().unwrap();
        Self {
            kafka,
            encoder,
            producer,
        }
    }

    pub async fn topic(&self, name: &str, partitions: i32) {
        self.kafka
            .ensure_topic(name, partitions, false)
            .await
            .unwrap();
    }

    pub async fn send(&self, topic: &str, table: &TableSchema, events: &[ChangeEvent]) {
        for chunk in events.chunks(5000) {
            let mut encoded = Vec::with_capacity(chunk.len());
            for e in chunk {
                encoded.push(self.encoder.encode(topic, table, e).await.unwrap());
            }
            // The unchanged columns travel in their header, as a source's
            // publisher writes it.
            let unchanged: Vec<String> = chunk.iter().map(|e| e.unchanged.join(",")).collect();
            let sends = encoded.iter().zip(&unchanged).map(|((k, v), unchanged)| {
                let mut record = FutureRecord::to(topic).key(k).payload(v);
                if !unchanged.is_empty() {
                    record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                        rdkafka::message::Header {
                            key: syncline_core::change::UNCHANGED_HEADER,
                            value: Some(unchanged.as_bytes()),
                        },
                    ));
                }
                self.producer.send(record, Duration::from_secs(60))
            });
            for r in futures::future::join_all(sends).await {
                r.unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
            }
        }
    }

    pub async fn send_raw(&self, topic: &str, key: &[u8], value: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
    }
}

pub fn col(name: &str, ty: ColumnType, nullable: bool, sql_type: &str) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable,
        sql_type: sql_type.into(),
    }
}

/// `id bigint` key, `v text`: the shape of the replay, kill and group tests.
pub fn items_table() -> TableSchema {
    TableSchema {
        namespace: "syncline.test".into(),
        name: "items".into(),
        columns: vec![
            col("id", ColumnType::Long, false, "int8"),
            col("v", ColumnType::Text, true, "text"),
        ],
        primary_key: vec!["id".into()],
    }
}

pub fn change(op: Op, pos: i64, id: i64, after: Option<Vec<(String, Value)>>) -> ChangeEvent {
    ChangeEvent {
        unchanged: Vec::new(),
        op,
        key: vec![("id".into(), Value::Long(id))],
        before: None,
        after,
        source: SourceInfo {
            connector: "test".into(),
            name: "src".into(),
            db: "db".into(),
            table: "items".into(),
            position: Position::builder().i64(pos).build(),
            position_text: pos.to_string(),
            ts_us: 0,
        },
    }
}

pub fn upsert(pos: i64, id: i64, v: &str) -> ChangeEvent {
    change(
        Op::Upsert,
        pos,
        id,
        Some(vec![
            ("id".into(), Value::Long(id)),
            ("v".into(), Value::String(v.into())),
        ]),
    )
}

pub fn delete(pos: i64, id: i64) -> ChangeEvent {
    change(Op::Delete, pos, id, None)
}

/// What the target must hold after applying `events` in position order.
pub fn expected(events: &[ChangeEvent]) -> BTreeMap<i64, String> {
    let mut newest: BTreeMap<i64, &ChangeEvent> = BTreeMap::new();
    for e in events {
        let Value::Long(id) = e.key[0].1 else {
            unreachable!()
        };
        if newest
            .get(&id)
            .is_none_or(|n| n.source.position < e.source.position)
        {
            newest.insert(id, e);
        }
    }
    newest
        .into_iter()
        .filter_map(|(id, e)| match &e.after.as_ref()?[1].1 {
            Value::String(v) => Some((id, v.clone())),
            _ => None,
        })
        .collect()
}

/// `n` changes over `keys` keys with increasing positions: inserts, updates,
/// deletes (and re-inserts after them), then a replay of a middle stretch
/// with the same identities, as a source would send after its own crash.
pub fn workload(n: i64, keys: i64) -> Vec<ChangeEvent> {
    let mut events: Vec<ChangeEvent> = (0..n)
        .map(|i| {
            if i >= keys && i % 7 == 0 {
                delete(i, i % keys)
            } else {
                upsert(i, i % keys, &format!("v{i}"))
            }
        })
        .collect();
    let replay: Vec<ChangeEvent> = events[(n / 5) as usize..(2 * n / 5) as usize].to_vec();
    events.extend(replay);
    events
}

/// One row of every mapped type with extreme values, one with NULLs in every
/// nullable column, and one with float specials (Infinity, NaN) and an empty
/// array; table `all_types` keyed by `id` (1, 2, 3), at positions 1..=3.
pub struct AllTypes {
    pub table: TableSchema,
    pub events: Vec<ChangeEvent>,
    pub uuid: &'static str,
    pub jsonb: &'static str,
    pub json: &'static str,
    pub text: &'static str,
    pub all_bytes: Vec<u8>,
}

pub fn all_types() -> AllTypes {
    let dec = |p, s| ColumnType::Decimal {
        precision: p,
        scale: s,
    };
    let arr = |t| ColumnType::Array(Box::new(t));
    let table = TableSchema {
        namespace: "syncline.test".into(),
        name: "all_types".into(),
        columns: vec![
            col("id", ColumnType::Long, false, "int8"),
            col("i", ColumnType::Int, true, "int4"),
            col("l", ColumnType::Long, true, "int8"),
            col("d", dec(12, 3), true, "numeric(12,3)"),
            col("nt", ColumnType::NumericText, true, "numeric"),
            col("f", ColumnType::Float, true, "float4"),
            col("db", ColumnType::Double, true, "float8"),
            col("t", ColumnType::Text, true, "text"),
            col("b", ColumnType::Bool, true, "bool"),
            col("dt", ColumnType::Date, true, "date"),
            col("tm", ColumnType::Time, true, "time"),
            col("ts", ColumnType::Timestamp, true, "timestamp"),
            col("tz", ColumnType::TimestampTz, true, "timestamptz"),
            col("u", ColumnType::Uuid, true, "uuid"),
            col("js", ColumnType::Json, true, "jsonb"),
            col("jn", ColumnType::Json, true, "json"),
            col("by", ColumnType::Bytes, true, "bytea"),
            col("ai", arr(ColumnType::Int), true, "_int4"),
            col("at", arr(ColumnType::Text), true, "_text"),
            col("ad", arr(dec(5, 2)), true, "_numeric"),
            col("Mixed Case", ColumnType::Text, false, "text"),
        ],
        primary_key: vec!["id".into()],
    };
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let jsonb = r#"{"b": [1, 2.5, "x"], "a": null, "n": {"deep": true}}"#;
    let json = r#"{"z": 1,   "a": 2, "z": 3}"#;
    let text = "tab\there, newline\nhere, \\backslash\\, \"quotes\", ünïcødé ✓, \\N";
    let all_bytes: Vec<u8> = (0..=255).collect();
    let items =
        |vals: Vec<Option<Value>>| Value::Array(vals.into_iter().map(nullable_value).collect());
    let full = vec![
        ("id".to_string(), Value::Long(1)),
        ("i".into(), Value::Int(i32::MIN)),
        ("l".into(), Value::Long(i64::MAX)),
        ("d".into(), decimal_from_text("-123456789.125", 3).unwrap()),
        (
            "nt".into(),
            Value::String("3.14159265358979323846264338327950288419716939937510".into()),
        ),
        ("f".into(), Value::Float(1.1)),
        ("db".into(), Value::Double(0.1 + 0.2)),
        ("t".into(), Value::String(text.into())),
        ("b".into(), Value::Boolean(true)),
        ("dt".into(), Value::Date(-719_163)), // 0001-12-31 BC
        ("tm".into(), Value::TimeMicros(86_399_999_999)),
        (
            "ts".into(),
            Value::LocalTimestampMicros(-62_135_596_800_000_001),
        ), // 1 µs before 0001-01-01
        ("tz".into(), Value::TimestampMicros(253_402_300_799_999_999)), // 9999-12-31 23:59:59.999999
        (
            "u".into(),
            Value::Uuid(apache_avro::Uuid::parse_str(uuid).unwrap()),
        ),
        ("js".into(), Value::String(jsonb.into())),
        ("jn".into(), Value::String(json.into())),
        ("by".into(), Value::Bytes(all_bytes.clone())),
        (
            "ai".into(),
            items(vec![Some(Value::Int(1)), None, Some(Value::Int(i32::MIN))]),
        ),
        (
            "at".into(),
            items(vec![
                Some(Value::String("a,b".into())),
                None,
                Some(Value::String("\"q\" {x}".into())),
                Some(Value::String(String::new())),
                Some(Value::String("NULL".into())),
            ]),
        ),
        (
            "ad".into(),
            items(vec![
                Some(decimal_from_text("1.5", 2).unwrap()),
                None,
                Some(decimal_from_text("-999.99", 2).unwrap()),
            ]),
        ),
        ("Mixed Case".into(), Value::String("x".into())),
    ];
    let nulls = vec![
        ("id".to_string(), Value::Long(2)),
        ("Mixed Case".into(), Value::String(String::new())),
    ];
    let specials = vec![
        ("id".to_string(), Value::Long(3)),
        ("f".into(), Value::Float(f32::INFINITY)),
        ("db".into(), Value::Double(f64::NAN)),
        ("ai".into(), items(vec![])),
        ("Mixed Case".into(), Value::String("y".into())),
    ];
    let key = |id| vec![("id".to_string(), Value::Long(id))];
    let ev = |pos, id, after| ChangeEvent {
        unchanged: Vec::new(),
        after: Some(after),
        key: key(id),
        ..change(Op::Insert, pos, id, None)
    };
    AllTypes {
        table,
        events: vec![ev(1, 1, full), ev(2, 2, nulls), ev(3, 3, specials)],
        uuid,
        jsonb,
        json,
        text,
        all_bytes,
    }
}
