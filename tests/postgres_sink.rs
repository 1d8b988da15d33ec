//! The postgres sink against a real Apache Kafka broker, the real `syncline
//! registry` and the machine's Postgres. Records are produced with the
//! registry codec's `Encoder` and a real producer; every check reads the
//! target database back and compares it with what was produced.

mod support;

use apache_avro::types::Value;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{wait_until, PgDb, Rng, Stack, SynclineRun, TempDir};
use syncline_core::codec::Encoder;
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::schema::nullable_value;
use syncline_core::value::decimal_from_text;
use syncline_core::{ChangeEvent, Column, ColumnType, Op, Position, SourceInfo, TableSchema};
use syncline_sinks::postgres::PostgresSinkConfig;

const WAIT: Duration = Duration::from_secs(180);

// ---- producing change records ----

struct Producer {
    kafka: KafkaConfig,
    encoder: Encoder,
    producer: FutureProducer,
}

impl Producer {
    fn new(stack: &Stack) -> Self {
        let kafka = KafkaConfig::new(stack.bootstrap());
        let encoder = Encoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
        let producer = kafka.producer().unwrap();
        Self {
            kafka,
            encoder,
            producer,
        }
    }

    async fn topic(&self, name: &str, partitions: i32) {
        self.kafka
            .ensure_topic(name, partitions, false)
            .await
            .unwrap();
    }

    async fn send(&self, topic: &str, table: &TableSchema, events: &[ChangeEvent]) {
        for chunk in events.chunks(5000) {
            let mut encoded = Vec::with_capacity(chunk.len());
            for e in chunk {
                encoded.push(self.encoder.encode(topic, table, e).await.unwrap());
            }
            let sends = encoded.iter().map(|(k, v)| {
                self.producer.send(
                    FutureRecord::to(topic).key(k).payload(v),
                    Duration::from_secs(60),
                )
            });
            for r in futures::future::join_all(sends).await {
                r.unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
            }
        }
    }

    async fn send_raw(&self, topic: &str, key: &[u8], value: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
    }
}

fn col(name: &str, ty: ColumnType, nullable: bool, sql_type: &str) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable,
        sql_type: sql_type.into(),
    }
}

/// `id bigint` key, `v text`: the shape of the replay, kill and group tests.
fn items_table() -> TableSchema {
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

fn change(op: Op, pos: i64, id: i64, after: Option<Vec<(String, Value)>>) -> ChangeEvent {
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

fn upsert(pos: i64, id: i64, v: &str) -> ChangeEvent {
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

fn delete(pos: i64, id: i64) -> ChangeEvent {
    change(Op::Delete, pos, id, None)
}

/// What the target must hold after applying `events` in position order.
fn expected(events: &[ChangeEvent]) -> BTreeMap<i64, String> {
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

// ---- the sink, in this process or as `syncline run` ----

fn ctx(stack: &Stack, component: &str) -> ComponentContext {
    ComponentContext {
        pipeline: "test".into(),
        component: component.into(),
        kafka: KafkaConfig::new(stack.bootstrap()),
        registry: RegistryConfig::new(stack.registry_url()),
        state_dir: std::env::temp_dir(),
        limits: Default::default(),
    }
}

fn sink_config(yaml: &str) -> PostgresSinkConfig {
    let cfg: PostgresSinkConfig =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test config: {e}\n{yaml}"));
    assert_eq!(cfg.check(), [], "{yaml}");
    cfg
}

struct RunningSink {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<syncline_core::Result<()>>,
}

async fn start_sink(stack: &Stack, cfg: &PostgresSinkConfig) -> RunningSink {
    let sink = cfg
        .build(ctx(stack, "warehouse"))
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}"));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(sink.run(shutdown.clone()));
    RunningSink { shutdown, task }
}

impl RunningSink {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The group of a sink named `warehouse` in pipeline `pipeline`.
fn group(pipeline: &str) -> String {
    format!("syncline.{pipeline}.warehouse")
}

/// Records whose effect is committed: the sum of the stored next offsets.
async fn consumed(db: &tokio_postgres::Client, group: &str) -> i64 {
    db.query_one(
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM syncline_offsets WHERE group_id = $1",
        &[&group],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or(0)
}

async fn wait_consumed(db: &tokio_postgres::Client, group: &str, n: i64, what: &str) {
    wait_until(WAIT, &format!("{what}: {n} records committed"), || async {
        consumed(db, group).await >= n
    })
    .await;
    assert_eq!(
        consumed(db, group).await,
        n,
        "{what}: more offsets than records"
    );
}

async fn rows(db: &tokio_postgres::Client, table: &str) -> BTreeMap<i64, String> {
    db.query(&format!("SELECT id, v FROM {table}"), &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn pipeline_file(
    dir: &TempDir,
    stack: &Stack,
    db: &PgDb,
    name: &str,
    topic: &str,
    batch_size: usize,
) -> std::path::PathBuf {
    pipeline_file_with(dir, stack, db, name, topic, batch_size, "")
}

/// [`pipeline_file`] with more librdkafka properties (YAML lines under `kafka.properties`).
fn pipeline_file_with(
    dir: &TempDir,
    stack: &Stack,
    db: &PgDb,
    name: &str,
    topic: &str,
    batch_size: usize,
    properties: &str,
) -> std::path::PathBuf {
    let path = dir.path().join(format!("{name}.yaml"));
    let yaml = format!(
        "name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  properties:
    session.timeout.ms: \"6000\"
    heartbeat.interval.ms: \"500\"
{properties}registry:
  url: {registry}
external_topics: [{topic}]
sinks:
  warehouse:
    type: postgres
    connection: {url}
    topics: [{topic}]
    tables: {{ {topic}: items }}
    batch_size: {batch_size}
    batch_timeout_ms: 100
",
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        url = db.url(),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Wait until the committed count satisfies `cond`, failing fast (with the
/// log) if `syncline run` exits.
async fn wait_progress(
    run: &mut SynclineRun,
    c: &tokio_postgres::Client,
    g: &str,
    what: &str,
    cond: impl Fn(i64) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = consumed(c, g).await;
        if cond(n) {
            return;
        }
        assert!(
            run.exit_code().is_none(),
            "syncline run exited while waiting for {what}:\n{}",
            run.log()
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({n} committed):\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` changes over `keys` keys with increasing positions: inserts, updates,
/// deletes (and re-inserts after them), then a replay of a middle stretch
/// with the same identities, as a source would send after its own crash.
fn workload(n: i64, keys: i64) -> Vec<ChangeEvent> {
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

// ---- tests ----

/// Every mapped type, with extreme values and with NULLs, lands exactly,
/// in a table the sink created from the registered schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_exactly_in_a_table_created_from_the_schema() {
    let stack = Stack::start();
    let db = PgDb::create("sink_types").await;
    let p = Producer::new(&stack);
    p.topic("types.all", 1).await;

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
    p.send(
        "types.all",
        &table,
        &[ev(1, 1, full), ev(2, 2, nulls), ev(3, 3, specials)],
    )
    .await;

    let cfg = sink_config(&format!("connection: {}\ntopics: [types.all]\n", db.url()));
    let sink = start_sink(&stack, &cfg).await;
    let c = db.client().await;
    wait_consumed(&c, &group("test"), 3, "all types").await;
    sink.stop().await;

    // The table, as created from the registered schema.
    let types: BTreeMap<String, (String, bool)> = c
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
             WHERE attrelid = 'public.types_all'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let want = [
        ("id", "bigint", true),
        ("i", "integer", false),
        ("l", "bigint", false),
        ("d", "numeric(12,3)", false),
        ("nt", "numeric", false),
        ("f", "real", false),
        ("db", "double precision", false),
        ("t", "text", false),
        ("b", "boolean", false),
        ("dt", "date", false),
        ("tm", "time without time zone", false),
        ("ts", "timestamp without time zone", false),
        ("tz", "timestamp with time zone", false),
        ("u", "uuid", false),
        ("js", "jsonb", false),
        ("jn", "json", false),
        ("by", "bytea", false),
        ("ai", "integer[]", false),
        ("at", "text[]", false),
        ("ad", "numeric(5,2)[]", false),
        ("Mixed Case", "text", true),
        ("_syncline_source", "text", true),
        ("_syncline_position", "bytea", true),
    ];
    let want: BTreeMap<String, (String, bool)> = want
        .iter()
        .map(|(n, t, nn)| (n.to_string(), (t.to_string(), *nn)))
        .collect();
    assert_eq!(types, want);
    let pk: Vec<String> = c
        .query_one(
            "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = 'public.types_all'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, ["id"]);

    // Every value, compared exactly (timestamps as exact epoch microseconds).
    let q = "SELECT i, l, d::text, nt::text, f, db, t, b, dt - date '1970-01-01',
                    (extract(epoch FROM tm) * 1000000)::bigint, (extract(epoch FROM ts) * 1000000)::bigint,
                    (extract(epoch FROM tz) * 1000000)::bigint, u, js, jn::text, by, ai, at, ad::text[],
                    \"Mixed Case\", _syncline_source, _syncline_position
             FROM types_all WHERE id = $1";
    let r = c.query_one(q, &[&1i64]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), i32::MIN);
    assert_eq!(r.get::<_, i64>(1), i64::MAX);
    assert_eq!(r.get::<_, String>(2), "-123456789.125");
    assert_eq!(
        r.get::<_, String>(3),
        "3.14159265358979323846264338327950288419716939937510"
    );
    assert_eq!(r.get::<_, f32>(4).to_bits(), 1.1f32.to_bits());
    assert_eq!(r.get::<_, f64>(5).to_bits(), (0.1f64 + 0.2).to_bits());
    assert_eq!(r.get::<_, String>(6), text);
    assert!(r.get::<_, bool>(7));
    assert_eq!(r.get::<_, i32>(8), -719_163);
    assert_eq!(r.get::<_, i64>(9), 86_399_999_999);
    assert_eq!(r.get::<_, i64>(10), -62_135_596_800_000_001);
    assert_eq!(r.get::<_, i64>(11), 253_402_300_799_999_999);
    assert_eq!(r.get::<_, uuid::Uuid>(12).to_string(), uuid);
    assert_eq!(
        r.get::<_, serde_json::Value>(13),
        serde_json::from_str::<serde_json::Value>(jsonb).unwrap()
    );
    assert_eq!(r.get::<_, String>(14), json, "json keeps the exact text");
    assert_eq!(r.get::<_, Vec<u8>>(15), all_bytes);
    assert_eq!(
        r.get::<_, Vec<Option<i32>>>(16),
        [Some(1), None, Some(i32::MIN)]
    );
    assert_eq!(
        r.get::<_, Vec<Option<String>>>(17),
        [
            Some("a,b".into()),
            None,
            Some("\"q\" {x}".into()),
            Some(String::new()),
            Some("NULL".into())
        ]
    );
    assert_eq!(
        r.get::<_, Vec<Option<String>>>(18),
        [Some("1.50".into()), None, Some("-999.99".into())]
    );
    assert_eq!(r.get::<_, String>(19), "x");
    assert_eq!(r.get::<_, String>(20), "src");
    assert_eq!(
        r.get::<_, Vec<u8>>(21),
        Position::builder().i64(1).build().into_bytes()
    );

    let r = c.query_one(q, &[&2i64]).await.unwrap();
    for i in 0..19 {
        let is_null = match i {
            0 | 8 => r.get::<_, Option<i32>>(i).is_none(),
            1 | 9 | 10 | 11 => r.get::<_, Option<i64>>(i).is_none(),
            4 => r.get::<_, Option<f32>>(i).is_none(),
            5 => r.get::<_, Option<f64>>(i).is_none(),
            7 => r.get::<_, Option<bool>>(i).is_none(),
            12 => r.get::<_, Option<uuid::Uuid>>(i).is_none(),
            13 => r.get::<_, Option<serde_json::Value>>(i).is_none(),
            15 => r.get::<_, Option<Vec<u8>>>(i).is_none(),
            16 => r.get::<_, Option<Vec<Option<i32>>>>(i).is_none(),
            17 | 18 => r.get::<_, Option<Vec<Option<String>>>>(i).is_none(),
            _ => r.get::<_, Option<String>>(i).is_none(),
        };
        assert!(is_null, "column {i} of the all-NULL row is not NULL");
    }
    assert_eq!(r.get::<_, String>(19), "", "an empty string is not NULL");

    let r = c.query_one(q, &[&3i64]).await.unwrap();
    assert_eq!(r.get::<_, f32>(4), f32::INFINITY);
    assert!(r.get::<_, f64>(5).is_nan());
    assert_eq!(r.get::<_, Vec<Option<i32>>>(16), Vec::<Option<i32>>::new());
}

/// Upserts, deletes, and replays of older changes (same identities): the
/// replay changes nothing and an older insert never resurrects a deleted row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_deletes_and_replays_apply_only_newer_changes() {
    let stack = Stack::start();
    let db = PgDb::create("sink_replay").await;
    let p = Producer::new(&stack);
    let table = items_table();
    p.topic("replay.items", 1).await;
    let cfg = sink_config(&format!(
        "connection: {}\ntopics: [replay.items]\ntables: {{ replay.items: items }}\nbatch_size: 2\n",
        db.url()
    ));
    let sink = start_sink(&stack, &cfg).await;
    let c = db.client().await;
    let g = group("test");

    let first = [
        upsert(1, 1, "a"),
        upsert(2, 1, "b"),
        upsert(3, 2, "c"),
        delete(4, 2),
        upsert(5, 3, "d"),
    ];
    p.send("replay.items", &table, &first).await;
    wait_consumed(&c, &g, 5, "first changes").await;
    assert_eq!(
        rows(&c, "items").await,
        BTreeMap::from([(1, "b".into()), (3, "d".into())])
    );
    let tombstones: i64 = c
        .query_one("SELECT count(*) FROM syncline_tombstones", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tombstones, 1);

    // A source replays everything after a crash (same identities), in
    // batches of two so that old changes meet new rows across batches.
    p.send("replay.items", &table, &first).await;
    // And older versions arrive late: an insert of the deleted key, an old
    // update of a live key.
    p.send(
        "replay.items",
        &table,
        &[upsert(3, 2, "resurrected?"), upsert(1, 1, "a-old")],
    )
    .await;
    wait_consumed(&c, &g, 12, "replays").await;
    assert_eq!(
        rows(&c, "items").await,
        BTreeMap::from([(1, "b".into()), (3, "d".into())])
    );

    // A newer change of the deleted key applies, and its tombstone goes.
    p.send(
        "replay.items",
        &table,
        &[upsert(6, 2, "back"), delete(7, 3), upsert(8, 1, "e")],
    )
    .await;
    wait_consumed(&c, &g, 15, "newer changes").await;
    assert_eq!(
        rows(&c, "items").await,
        BTreeMap::from([(1, "e".into()), (2, "back".into())])
    );
    let tomb: Vec<Vec<u8>> = c
        .query("SELECT position FROM syncline_tombstones", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tomb,
        [Position::builder().i64(7).build().into_bytes()],
        "only key 3's tombstone is left"
    );
    sink.stop().await;

    // A restart resumes from the stored offsets: nothing is applied twice,
    // and new changes still land.
    let sink = start_sink(&stack, &cfg).await;
    p.send("replay.items", &table, &[upsert(9, 4, "f")]).await;
    wait_consumed(&c, &g, 16, "after restart").await;
    assert_eq!(
        rows(&c, "items").await,
        BTreeMap::from([(1, "e".into()), (2, "back".into()), (4, "f".into())])
    );
    sink.stop().await;
}

/// A schema that gains a column: the sink adds it (nullable) to the table
/// it created, and rows of both shapes land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_at_the_source_is_added_to_the_table() {
    let stack = Stack::start();
    let db = PgDb::create("sink_evolve").await;
    let p = Producer::new(&stack);
    p.topic("evolve.items", 1).await;
    p.send("evolve.items", &items_table(), &[upsert(1, 1, "a")])
        .await;
    let cfg = sink_config(&format!(
        "connection: {}\ntopics: [evolve.items]\ntables: {{ evolve.items: items }}\n",
        db.url()
    ));
    let sink = start_sink(&stack, &cfg).await;
    let c = db.client().await;
    wait_consumed(&c, &group("test"), 1, "first shape").await;

    let mut wider = items_table();
    wider.columns.push(col(
        "amount",
        ColumnType::Decimal {
            precision: 10,
            scale: 2,
        },
        true,
        "numeric(10,2)",
    ));
    let with_amount = |pos, id: i64, v: &str, amount: &str| {
        let after = vec![
            ("id".to_string(), Value::Long(id)),
            ("v".into(), Value::String(v.into())),
            ("amount".into(), decimal_from_text(amount, 2).unwrap()),
        ];
        change(Op::Update, pos, id, Some(after))
    };
    p.send(
        "evolve.items",
        &wider,
        &[
            with_amount(2, 1, "b", "12.5"),
            with_amount(3, 2, "c", "-0.01"),
        ],
    )
    .await;
    wait_consumed(&c, &group("test"), 3, "second shape").await;
    sink.stop().await;

    let ty: (String, bool) = c
        .query_one(
            "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
             WHERE attrelid = 'public.items'::regclass AND attname = 'amount'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(ty, ("numeric(10,2)".to_string(), false));
    let got: Vec<(i64, String, Option<String>)> = c
        .query("SELECT id, v, amount::text FROM items ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            (1, "b".into(), Some("12.50".into())),
            (2, "c".into(), Some("-0.01".into()))
        ]
    );
}

/// The registry is down when the sink needs a schema: the sink waits and
/// retries, and finishes once the registry is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_waited_out() {
    let mut stack = Stack::start();
    let db = PgDb::create("sink_registry").await;
    let p = Producer::new(&stack);
    p.topic("outage.items", 1).await;
    p.send(
        "outage.items",
        &items_table(),
        &[upsert(1, 1, "a"), upsert(2, 2, "b")],
    )
    .await;
    stack.registry.kill9();
    let cfg = sink_config(&format!(
        "connection: {}\ntopics: [outage.items]\n",
        db.url()
    ));
    let sink = start_sink(&stack, &cfg).await;
    let c = db.client().await;
    tokio::time::sleep(Duration::from_secs(8)).await; // past the group join (3 s) and several retries
    assert_eq!(
        consumed(&c, &group("test")).await,
        0,
        "nothing can be decoded without the registry"
    );
    assert!(
        !sink.task.is_finished(),
        "the sink gave up while the registry was away"
    );
    stack.registry.restart();
    wait_consumed(&c, &group("test"), 2, "after the registry came back").await;
    assert_eq!(
        rows(&c, "outage_items").await,
        BTreeMap::from([(1, "a".into()), (2, "b".into())])
    );
    sink.stop().await;
}

/// Without `dead_letter_topic`, a poison record goes to the default one
/// (`<pipeline>.<sink>.dead`) and the sink goes on: nothing stops, the
/// records around it land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_the_default_dead_letter_topic() {
    let stack = Stack::start();
    let db = PgDb::create("sink_poison").await;
    let p = Producer::new(&stack);
    p.topic("poison.items", 1).await;
    p.send("poison.items", &items_table(), &[upsert(1, 1, "a")])
        .await;
    p.send_raw("poison.items", b"not avro", b"not avro either")
        .await;
    p.send("poison.items", &items_table(), &[upsert(2, 2, "b")])
        .await;
    let cfg = sink_config(&format!(
        "connection: {}\ntopics: [poison.items]\nbatch_size: 1\n",
        db.url()
    ));
    let sink = start_sink(&stack, &cfg).await;
    let c = db.client().await;
    wait_consumed(&c, &group("test"), 3, "records around the poison one").await;
    assert_eq!(
        rows(&c, "poison_items").await,
        BTreeMap::from([(1, "a".into()), (2, "b".into())])
    );
    sink.stop().await;
    let m = first_dead_letter(&stack, "test.warehouse.dead");
    assert_eq!(rdkafka::message::Message::key(&m), Some(&b"not avro"[..]));
}

/// The value of header `name` of `m` ("" when it has none).
fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    use rdkafka::message::{Headers, Message};
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// The first record of `topic` (waits for it).
fn first_dead_letter(stack: &Stack, topic: &str) -> rdkafka::message::OwnedMessage {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = KafkaConfig::new(stack.bootstrap())
        .reader_config()
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing in the dead-letter topic `{topic}`"
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            return m.detach();
        }
    }
}

/// With `dead_letter_topic`, a poison record goes there unchanged with the
/// reason and its origin in headers, and the sink goes on: the records
/// around it are applied and every offset is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_with_its_reason() {
    use rdkafka::message::Message;
    let stack = Stack::start();
    let db = PgDb::create("sink_dlq").await;
    let p = Producer::new(&stack);
    p.topic("dlq.items", 1).await;
    p.send("dlq.items", &items_table(), &[upsert(1, 1, "a")])
        .await;
    p.send_raw("dlq.items", b"not avro", b"not avro either")
        .await;
    p.send("dlq.items", &items_table(), &[upsert(2, 2, "b")])
        .await;
    let cfg = sink_config(&format!(
        "connection: {}\ntopics: [dlq.items]\nbatch_size: 2\ndead_letter_topic: dlq.items.dead\n",
        db.url()
    ));
    let sink = start_sink(&stack, &cfg).await;
    let c = db.client().await;
    wait_consumed(&c, &group("test"), 3, "records around the poison one").await;
    assert_eq!(
        rows(&c, "dlq_items").await,
        BTreeMap::from([(1, "a".into()), (2, "b".into())])
    );
    sink.stop().await;

    let m = first_dead_letter(&stack, "dlq.items.dead");
    assert_eq!(m.key(), Some(&b"not avro"[..]));
    assert_eq!(m.payload(), Some(&b"not avro either"[..]));
    assert_eq!(header(&m, "syncline.topic"), "dlq.items");
    assert_eq!(header(&m, "syncline.partition"), "0");
    assert_eq!(header(&m, "syncline.offset"), "1");
    assert!(header(&m, "syncline.reason").contains("Confluent wire format"));
}

/// A record the target refuses (a decimal too wide for its column), inside a
/// batch of several, goes to the dead-letter topic with the database's
/// reason and its origin; the rest of its batch lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_fit_its_column_is_named() {
    let stack = Stack::start();
    let db = PgDb::create("sink_fit").await;
    let p = Producer::new(&stack);
    p.topic("fit.prices", 1).await;
    let table = TableSchema {
        namespace: "syncline.test".into(),
        name: "prices".into(),
        columns: vec![
            col("id", ColumnType::Long, false, "int8"),
            col(
                "price",
                ColumnType::Decimal {
                    precision: 5,
                    scale: 2,
                },
                false,
                "numeric(5,2)",
            ),
        ],
        primary_key: vec!["id".into()],
    };
    let price = |pos, id: i64, amount: &str| {
        let after = vec![
            ("id".to_string(), Value::Long(id)),
            ("price".into(), decimal_from_text(amount, 2).unwrap()),
        ];
        change(Op::Insert, pos, id, Some(after))
    };
    // Avro does not enforce the precision; Postgres does.
    p.send(
        "fit.prices",
        &table,
        &[
            price(1, 1, "999.99"),
            price(2, 2, "12345.67"),
            price(3, 3, "1.00"),
        ],
    )
    .await;
    let cfg = sink_config(&format!(
        "connection: {}\ntopics: [fit.prices]\nbatch_timeout_ms: 2000\nbatch_linger_ms: 1000\n",
        db.url()
    ));
    let sink = start_sink(&stack, &cfg).await;
    let c = db.client().await;
    wait_consumed(&c, &group("test"), 3, "the batch around the refused record").await;
    let prices: Vec<(i64, String)> = c
        .query("SELECT id, price::text FROM fit_prices ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(prices, [(1, "999.99".to_string()), (3, "1.00".to_string())]);
    sink.stop().await;
    let m = first_dead_letter(&stack, "test.warehouse.dead");
    assert_eq!(header(&m, "syncline.offset"), "1");
    let reason = header(&m, "syncline.reason");
    assert!(
        reason.contains("topic `fit.prices` partition 0 offset 1"),
        "{reason}"
    );
    assert!(reason.contains("numeric field overflow"), "{reason}");
}

/// `syncline run` with only this sink, killed with SIGKILL at random moments
/// while it writes large batches; after the last restart the target holds
/// exactly what was produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_writing_large_batches_loses_and_duplicates_nothing() {
    let stack = Stack::start();
    let db = PgDb::create("sink_kill").await;
    let dir = TempDir::new("sink-kill");
    let p = Producer::new(&stack);
    p.topic("kill.items", 3).await;
    let events = workload(50_000, 20_000);
    p.send("kill.items", &items_table(), &events).await;
    let total = events.len() as i64;

    let pipeline = pipeline_file(&dir, &stack, &db, "kill", "kill.items", 5000);
    let c = db.client().await;
    let g = group("kill");
    let mut rng = Rng::from_time();
    let mut run = SynclineRun::start(&pipeline);
    let mut kills = 0;
    for _ in 0..5 {
        // Wait for writing to be under way, then kill at a random moment
        // inside the next batches.
        let before = consumed(&c, &g).await;
        if before >= total {
            break;
        }
        wait_progress(&mut run, &c, &g, "progress", |n| n > before).await;
        tokio::time::sleep(Duration::from_millis(rng.below(700))).await;
        run.kill9();
        kills += 1;
        println!("killed at {} of {total} committed", consumed(&c, &g).await);
        run.restart();
    }
    wait_progress(&mut run, &c, &g, "every record committed", |n| n >= total).await;
    assert_eq!(consumed(&c, &g).await, total, "{}", run.log());
    assert!(
        kills >= 2,
        "the sink finished before it could be killed twice; make the workload larger"
    );
    let want = expected(&events);
    let have = rows(&c, "items").await;
    assert_eq!(have.len(), want.len(), "row count");
    assert!(have == want, "rows differ from what was produced");
    let log = run.log();
    assert!(!log.contains("postgres sink failed"), "{log}");
}

/// Two `syncline run` instances in one group share the partitions; one is
/// killed midway and the other takes its partitions over from the stored
/// offsets. The result is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_partitions_and_take_over_exactly() {
    let stack = Stack::start();
    let db = PgDb::create("sink_group").await;
    let dir = TempDir::new("sink-group");
    let p = Producer::new(&stack);
    p.topic("group.items", 4).await;
    let pipeline = pipeline_file(&dir, &stack, &db, "group", "group.items", 1000);
    let mut a = SynclineRun::start(&pipeline);
    let mut b = SynclineRun::start(&pipeline);
    let last_assignment = |log: &str| {
        log.lines()
            .rfind(|l| l.contains("partitions assigned"))
            .map(|l| l.matches("group.items[").count())
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let held = (last_assignment(&a.log()), last_assignment(&b.log()));
        if matches!(held, (Some(x), Some(y)) if x > 0 && y > 0 && x + y == 4) {
            break;
        }
        let logs = format!("A:\n{}\nB:\n{}", a.log(), b.log());
        assert!(
            a.exit_code().is_none() && b.exit_code().is_none(),
            "an instance exited:\n{logs}"
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for both instances to hold partitions:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let events = workload(30_000, 10_000);
    p.send("group.items", &items_table(), &events).await;
    let total = events.len() as i64;
    let c = db.client().await;
    let g = group("group");
    wait_progress(&mut b, &c, &g, "a tenth committed", |n| n > total / 10).await;
    a.kill9();
    let deadline = Instant::now() + WAIT;
    while last_assignment(&b.log()) != Some(4) {
        assert!(b.exit_code().is_none(), "B exited:\n{}", b.log());
        assert!(
            Instant::now() < deadline,
            "B did not take every partition over:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_progress(&mut b, &c, &g, "every record committed", |n| n >= total).await;
    assert_eq!(consumed(&c, &g).await, total, "{}", b.log());
    let have = rows(&c, "items").await;
    assert!(
        have == expected(&events),
        "rows differ from what was produced"
    );
}

/// Three instances with the cooperative protocol (`cooperative-sticky`):
/// they join one by one while records flow, and two of them are killed
/// with SIGKILL and come back, so partitions move incrementally many times.
/// The target is still exact: nothing lost, nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cooperative_instances_joining_and_killed_stay_exact() {
    let stack = Stack::start();
    let db = PgDb::create("sink_coop").await;
    let dir = TempDir::new("sink-coop");
    let p = Producer::new(&stack);
    p.topic("coop.items", 6).await;
    let pipeline = pipeline_file_with(
        &dir,
        &stack,
        &db,
        "coop",
        "coop.items",
        500,
        "    partition.assignment.strategy: cooperative-sticky\n",
    );
    let events = workload(45_000, 9_000);
    let chunks: Vec<&[ChangeEvent]> = events.chunks(events.len() / 5 + 1).collect();
    let c = db.client().await;
    let g = group("coop");
    let mut a = SynclineRun::start(&pipeline);
    p.send("coop.items", &items_table(), chunks[0]).await;
    wait_progress(&mut a, &c, &g, "A under way", |n| n > 0).await;
    let mut b = SynclineRun::start(&pipeline);
    p.send("coop.items", &items_table(), chunks[1]).await;
    let mut cc = SynclineRun::start(&pipeline);
    p.send("coop.items", &items_table(), chunks[2]).await;
    b.kill9();
    p.send("coop.items", &items_table(), chunks[3]).await;
    b.restart();
    cc.kill9();
    for chunk in &chunks[4..] {
        p.send("coop.items", &items_table(), chunk).await;
    }
    cc.restart();
    let total = events.len() as i64;
    wait_progress(&mut a, &c, &g, "every record committed", |n| n >= total).await;
    let logs = format!("A:\n{}\nB:\n{}\nC:\n{}", a.log(), b.log(), cc.log());
    assert_eq!(consumed(&c, &g).await, total, "{logs}");
    assert!(
        logs.contains("cooperative=true"),
        "the cooperative protocol was not in use:\n{logs}"
    );
    let have = rows(&c, "items").await;
    let want = expected(&events);
    assert_eq!(have.len(), want.len(), "row count");
    assert!(have == want, "rows differ from what was produced");
    for (name, run) in [("A", &mut a), ("B", &mut b), ("C", &mut cc)] {
        assert!(run.exit_code().is_none(), "{name} exited:\n{}", run.log());
    }
}
