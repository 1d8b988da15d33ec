//! What only the postgres sink has (its type mapping, the values Postgres
//! refuses), against a real Apache Kafka broker, the real `syncline
//! registry` and the machine's Postgres. Records are produced with the
//! registry codec's `Encoder` and a real producer; every check reads the
//! target database back and compares it with what was produced. The
//! scenarios every database sink shares (replays, kill -9, groups, schema
//! evolution, dead letters, a registry outage) are in `sinks.rs`.

mod support;

use apache_avro::types::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::changes::{all_types, change, col, AllTypes, Producer};
use support::{wait_until, PgDb, Stack};
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::value::decimal_from_text;
use syncline_core::{ColumnType, Op, Position, TableSchema};
use syncline_sinks::postgres::PostgresSinkConfig;

const WAIT: Duration = Duration::from_secs(180);

// ---- the sink, in this process or as `syncline run` ----

fn ctx(stack: &Stack, component: &str) -> ComponentContext {
    ComponentContext {
        pipeline: "test".into(),
        component: component.into(),
        kafka: KafkaConfig::new(stack.bootstrap()),
        registry: RegistryConfig::new(stack.registry_url()),
        state_dir: std::env::temp_dir(),
        limits: Default::default(),
        status: Default::default(),
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

// ---- tests ----

/// Every mapped type, with extreme values and with NULLs, lands exactly,
/// in a table the sink created from the registered schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_exactly_in_a_table_created_from_the_schema() {
    let stack = Stack::start();
    let db = PgDb::create("sink_types").await;
    let p = Producer::new(&stack);
    p.topic("types.all", 1).await;

    let AllTypes {
        table,
        events,
        uuid,
        jsonb,
        json,
        text,
        all_bytes,
    } = all_types();
    p.send("types.all", &table, &events).await;

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
    let m = support::first_record(&stack.bootstrap(), "test.warehouse.dead");
    assert_eq!(support::header(&m, "syncline.offset"), "1");
    let reason = support::header(&m, "syncline.reason");
    assert!(
        reason.contains("topic `fit.prices` partition 0 offset 1"),
        "{reason}"
    );
    assert!(reason.contains("numeric field overflow"), "{reason}");
}
