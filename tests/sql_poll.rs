//! The sql_poll source against a real Apache Kafka broker, the real `syncline
//! registry`, the machine's Postgres and SQLite files; every record is read
//! back with a real consumer and decoded with the registry's schemas.

mod support;

use apache_avro::types::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use support::{wait_until, PgDb, Stack, SynclineRun, TempDir};
use syncline_core::codec::{Decoded, Decoder};
use syncline_core::kafka::{read_topic_to_end, KafkaConfig};
use syncline_core::registry::RegistryConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{ColumnType, Op};
use syncline_sources::sql_poll::SqlPollConfig;

const WAIT: Duration = Duration::from_secs(90);

fn ctx(stack: &Stack, component: &str) -> ComponentContext {
    let mut kafka = KafkaConfig::new(stack.bootstrap());
    kafka.partitions = 2;
    ComponentContext {
        pipeline: "test".into(),
        component: component.into(),
        kafka,
        registry: RegistryConfig::new(stack.registry_url()),
        state_dir: std::env::temp_dir(),
        limits: Default::default(),
        status: Default::default(),
    }
}

fn config(yaml: &str) -> SqlPollConfig {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test config: {e}\n{yaml}"))
}

/// A running source: stop it with `stop` (graceful) or `abort` (dropped mid-work).
struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<syncline_core::Result<()>>,
}

async fn start(cfg: &SqlPollConfig, ctx: ComponentContext) -> Running {
    let source = cfg
        .build(ctx)
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}"));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(source.run(shutdown.clone()));
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
    async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Every record of `topic`, decoded, in offset order per partition. A
/// transient broker error (a partition's leader moving just after the
/// topic was made) is read again, up to 30 times.
async fn read_all(stack: &Stack, topic: &str) -> Vec<Decoded> {
    let mut attempts = 0;
    let raw = loop {
        let kafka = KafkaConfig::new(stack.bootstrap());
        let t = topic.to_string();
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            read_topic_to_end(&kafka, &t, |_, _, k, v| {
                out.push((k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)))
            })
            .map(|()| out)
        })
        .await
        .unwrap();
        match read {
            Ok(raw) => break raw,
            Err(e) if e.is_transient() && attempts < 30 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot read `{topic}`: {e}"),
        }
    };
    let decoder = Decoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let mut out = Vec::new();
    for (k, v) in raw {
        out.push(decoder.decode(k.as_deref(), v.as_deref()).await.unwrap());
    }
    out
}

async fn wait_records(
    stack: &Stack,
    topic: &str,
    what: &str,
    cond: impl Fn(&[Decoded]) -> bool,
) -> Vec<Decoded> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let last = read_all(stack, topic).await;
        if cond(&last) {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; have {} records: {:?}",
            last.len(),
            last.iter()
                .map(|d| (d.event.op, key_i64(d)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Union wrappers removed at every depth (array items are nullable unions).
fn norm(v: &Value) -> Value {
    match v {
        Value::Union(_, inner) => norm(inner),
        Value::Array(items) => Value::Array(items.iter().map(norm).collect()),
        other => other.clone(),
    }
}

fn field(d: &Decoded, name: &str) -> Value {
    let after = d.event.after.as_ref().expect("an upsert has `after`");
    norm(
        &after
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .1,
    )
}

fn key_i64(d: &Decoded) -> i64 {
    match norm(&d.event.key[0].1) {
        Value::Long(i) => i,
        Value::Int(i) => i64::from(i),
        other => panic!("unexpected key {other:?}"),
    }
}

fn ids(records: &[Decoded]) -> Vec<i64> {
    let mut v: Vec<i64> = records
        .iter()
        .filter(|d| d.event.op == Op::Upsert)
        .map(key_i64)
        .collect();
    v.sort();
    v
}

// ---- tracing capture: the fence test waits for the source's own log lines ----

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;
impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("syncline_sources=debug"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

/// Log lines of `source` containing `text`.
fn log_count(source: &str, text: &str) -> usize {
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    let tag = format!("source={source} ");
    log.lines()
        .filter(|l| l.contains(text) && l.contains(&tag))
        .count()
}

// ---- Postgres ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_type_round_trips_with_nulls() {
    let stack = Stack::start();
    let db = PgDb::create("sqlpoll_types").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE all_types (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            i2 int2, i4 int4, i8 int8, n numeric(12,3), nu numeric, r real, d double precision,
            t text, vc varchar(10), b bool, dt date, tm time, ts timestamp, tz timestamptz,
            u uuid, j json, jb jsonb, by bytea, ia int4[], ta text[], req text NOT NULL DEFAULT 'x');
         INSERT INTO all_types (i2, i4, i8, n, nu, r, d, t, vc, b, dt, tm, ts, tz, u, j, jb, by, ia, ta) VALUES
            (12, -7, 9000000000, 1234.5, 3.14159265358979323846264338, 1.5, 2.25, 'héllo', 'abc', true,
             '2024-02-29', '13:14:15.123456', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123456+02',
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\":  1}', '{\"b\": [1, 2]}', '\\x00ff10',
             '{1,NULL,3}', '{\"a\",\"b c\",NULL}');
         INSERT INTO all_types DEFAULT VALUES;",
    )
    .await
    .unwrap();
    let cfg = config(&format!(
        "connection: {}\nschedule: {{ interval_ms: 200 }}\ntables:\n  - {{ table: public.all_types, topic: pg.types, mode: incrementing }}\n",
        db.url()
    ));
    let run = start(&cfg, ctx(&stack, "types")).await;
    let recs = wait_records(&stack, "pg.types", "two rows", |r| r.len() >= 2).await;
    run.stop().await;
    assert_eq!(recs.len(), 2);
    let (full, nulls) = if key_i64(&recs[0]) == 1 {
        (&recs[0], &recs[1])
    } else {
        (&recs[1], &recs[0])
    };

    let day: i32 = 19_782; // 2024-02-29, days since 1970-01-01
    let local_us =
        i64::from(day) * 86_400_000_000 + (13 * 3600 + 14 * 60 + 15) * 1_000_000 + 123_456;
    let expected: Vec<(&str, Value)> = vec![
        ("id", Value::Long(1)),
        ("i2", Value::Int(12)),
        ("i4", Value::Int(-7)),
        ("i8", Value::Long(9_000_000_000)),
        (
            "n",
            syncline_core::value::decimal_from_text("1234.500", 3).unwrap(),
        ),
        ("nu", Value::String("3.14159265358979323846264338".into())),
        ("r", Value::Float(1.5)),
        ("d", Value::Double(2.25)),
        ("t", Value::String("héllo".into())),
        ("vc", Value::String("abc".into())),
        ("b", Value::Boolean(true)),
        ("dt", Value::Date(day)),
        (
            "tm",
            Value::TimeMicros((13 * 3600 + 14 * 60 + 15) * 1_000_000 + 123_456),
        ),
        ("ts", Value::LocalTimestampMicros(local_us)),
        (
            "tz",
            Value::TimestampMicros(local_us - 2 * 3600 * 1_000_000),
        ),
        (
            "u",
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap()),
        ),
        ("j", Value::String("{\"a\":  1}".into())),
        ("jb", Value::String("{\"b\": [1, 2]}".into())),
        ("by", Value::Bytes(vec![0x00, 0xff, 0x10])),
        (
            "ia",
            Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)]),
        ),
        (
            "ta",
            Value::Array(vec![
                Value::String("a".into()),
                Value::String("b c".into()),
                Value::Null,
            ]),
        ),
        ("req", Value::String("x".into())),
    ];
    for (name, want) in &expected {
        let got = field(full, name);
        match (want, &got) {
            (Value::Decimal(_), _) => assert_eq!(
                syncline_core::value::decimal_bytes(&got),
                syncline_core::value::decimal_bytes(want),
                "column {name}"
            ),
            _ => assert_eq!(&got, want, "column {name}"),
        }
    }
    for (name, _) in &expected {
        match *name {
            "id" => assert_eq!(field(nulls, name), Value::Long(2)),
            "req" => assert_eq!(field(nulls, name), Value::String("x".into())),
            _ => assert_eq!(
                field(nulls, name),
                Value::Null,
                "column {name} of the NULL row"
            ),
        }
    }
    // the registered schema carries the mapping
    let col = |n: &str| full.columns.iter().find(|c| c.name == n).unwrap().clone();
    assert_eq!(
        col("n").ty,
        ColumnType::Decimal {
            precision: 12,
            scale: 3
        }
    );
    assert_eq!(col("nu").ty, ColumnType::NumericText);
    assert_eq!(col("jb").ty, ColumnType::Json);
    assert_eq!(col("ia").ty, ColumnType::Array(Box::new(ColumnType::Int)));
    assert!(!col("id").nullable && !col("req").nullable && col("t").nullable);
    assert_eq!(full.key_columns.as_slice(), ["id".to_string()]);
    // identity and source info
    let s = &full.event.source;
    assert_eq!(
        (
            s.connector.as_str(),
            s.name.as_str(),
            s.table.as_str(),
            s.db.as_str()
        ),
        ("sql_poll", "types", "public.all_types", db.name())
    );
    assert!(s.position < nulls.event.source.position);
    assert_eq!(full.event.op, Op::Upsert);
}

/// The late-commit flaw of cursor polling, with ids: A takes id 2 and stays
/// open, B takes id 3 and commits. Without the fence the source would publish
/// 3, move its cursor to 3 and never see 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commit_is_not_skipped() {
    capture_logs();
    let stack = Stack::start();
    let db = PgDb::create("sqlpoll_late").await;
    let setup = db.client().await;
    setup.batch_execute("CREATE TABLE orders (id bigserial PRIMARY KEY, note text); INSERT INTO orders (note) VALUES ('first');").await.unwrap();
    let cfg = config(&format!(
        "connection: {}\nschedule: {{ interval_ms: 100 }}\ntables:\n  - {{ table: orders, topic: pg.late, mode: incrementing }}\n",
        db.url()
    ));
    let run = start(&cfg, ctx(&stack, "late")).await;
    wait_records(&stack, "pg.late", "row 1", |r| ids(r) == vec![1]).await;

    let mut a = db.client().await;
    let tx_a = a.transaction().await.unwrap();
    tx_a.execute(
        "INSERT INTO orders (note) VALUES ('A, committed late')",
        &[],
    )
    .await
    .unwrap();
    let b = db.client().await;
    b.execute(
        "INSERT INTO orders (note) VALUES ('B, committed first')",
        &[],
    )
    .await
    .unwrap();

    // let the source poll several times while A is open
    let before = log_count("late", "fence holds rows back");
    wait_until(
        WAIT,
        "5 polls held by the fence",
        // or until something beyond what is expected appears (the flaw, failing fast)
        || async {
            log_count("late", "fence holds rows back") >= before + 5
                || read_all(&stack, "pg.late").await.len() > 1
        },
    )
    .await;
    assert_eq!(
        ids(&read_all(&stack, "pg.late").await),
        vec![1],
        "B's row (id 3) must be held back while A (id 2) is open"
    );

    tx_a.commit().await.unwrap();
    let recs = wait_records(&stack, "pg.late", "rows 2 and 3", |r| ids(r).len() >= 3).await;
    run.stop().await;
    assert_eq!(ids(&recs), vec![1, 2, 3], "every row exactly once");
}

/// The same flaw with a transaction that has no transaction id yet when the
/// fence is taken (Postgres assigns xids at the first write): A begins and
/// reads, B writes a later timestamp and commits, then A writes `now()`,
/// which is A's start time, earlier than B's. A fence on xids alone misses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commit_without_xid_is_not_skipped() {
    capture_logs();
    let stack = Stack::start();
    let db = PgDb::create("sqlpoll_latets").await;
    let setup = db.client().await;
    setup
        .batch_execute("CREATE TABLE items (id bigserial PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now(), note text)")
        .await
        .unwrap();
    let cfg = config(&format!(
        "connection: {}\nschedule: {{ interval_ms: 100 }}\ntables:\n  - {{ table: items, topic: pg.latets, mode: timestamp, timestamp_column: updated_at }}\n",
        db.url()
    ));
    let run = start(&cfg, ctx(&stack, "latets")).await;
    let mut a = db.client().await;
    let tx_a = a.transaction().await.unwrap();
    tx_a.query_one("SELECT now()", &[]).await.unwrap(); // A has started, without an xid
    tokio::time::sleep(Duration::from_millis(20)).await; // B's now() must be later than A's
    setup
        .execute("INSERT INTO items (note) VALUES ('B')", &[])
        .await
        .unwrap();
    let before = log_count("latets", "fence holds rows back");
    wait_until(
        WAIT,
        "5 polls held by the fence",
        // or until something beyond what is expected appears (the flaw, failing fast)
        || async {
            log_count("latets", "fence holds rows back") >= before + 5
                || !read_all(&stack, "pg.latets").await.is_empty()
        },
    )
    .await;
    assert!(
        read_all(&stack, "pg.latets").await.is_empty(),
        "B must be held back while A is open"
    );
    tx_a.execute("INSERT INTO items (note) VALUES ('A')", &[])
        .await
        .unwrap();
    tx_a.commit().await.unwrap();
    let recs = wait_records(&stack, "pg.latets", "both rows", |r| r.len() >= 2).await;
    run.stop().await;
    let notes: Vec<Value> = recs.iter().map(|d| field(d, "note")).collect();
    assert_eq!(recs.len(), 2, "{notes:?}");
    let ts_of = |note: &str| match recs
        .iter()
        .find(|d| field(d, "note") == Value::String(note.into()))
        .map(|d| field(d, "updated_at"))
    {
        Some(Value::TimestampMicros(us)) => us,
        other => panic!("no timestamp for {note}: {other:?}"),
    };
    assert!(
        ts_of("A") < ts_of("B"),
        "A's row has the earlier timestamp (it was the one at risk)"
    );
}

/// Stop (drop the running source mid-work), insert more, start again:
/// nothing is lost, and nothing is published again beyond one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_stored_cursor() {
    let stack = Stack::start();
    let db = PgDb::create("sqlpoll_restart").await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int); INSERT INTO t (v) SELECT g FROM generate_series(1, 25) g;")
        .await
        .unwrap();
    let cfg = config(&format!(
        "connection: {}\nschedule: {{ interval_ms: 100 }}\nbatch_size: 10\ntables:\n  - {{ table: t, topic: pg.restart, mode: incrementing }}\n",
        db.url()
    ));
    let run = start(&cfg, ctx(&stack, "restart")).await;
    wait_records(&stack, "pg.restart", "25 rows", |r| r.len() >= 25).await;
    run.stop().await;
    c.batch_execute("INSERT INTO t (v) SELECT g FROM generate_series(26, 40) g")
        .await
        .unwrap();
    let run = start(&cfg, ctx(&stack, "restart")).await;
    // drop it while it works, then start once more
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.abort().await;
    c.batch_execute("INSERT INTO t (v) SELECT g FROM generate_series(41, 45) g")
        .await
        .unwrap();
    let run = start(&cfg, ctx(&stack, "restart")).await;
    let recs = wait_records(&stack, "pg.restart", "45 distinct rows", |r| {
        ids(r).into_iter().collect::<HashSet<_>>().len() >= 45
    })
    .await;
    run.stop().await;
    let distinct: HashSet<(String, Vec<u8>)> = recs
        .iter()
        .map(|d| {
            (
                d.event.source.name.clone(),
                d.event.source.position.as_bytes().to_vec(),
            )
        })
        .collect();
    assert_eq!(distinct.len(), 45, "one identity per row");
    assert!(
        recs.len() <= 45 + 10,
        "at most one batch (10) published again, got {} records",
        recs.len()
    );
    // a replayed row has the very same identity
    let mut by_id: BTreeMap<i64, HashSet<Vec<u8>>> = BTreeMap::new();
    for d in &recs {
        by_id
            .entry(key_i64(d))
            .or_default()
            .insert(d.event.source.position.as_bytes().to_vec());
    }
    assert!(by_id.values().all(|p| p.len() == 1));
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        (1..=45).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_detected_across_restarts() {
    let stack = Stack::start();
    let db = PgDb::create("sqlpoll_deletes").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE p (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, updated_at timestamp NOT NULL DEFAULT now(), v text);
         INSERT INTO p (v) SELECT 'v' || g FROM generate_series(1, 5) g;",
    )
    .await
    .unwrap();
    let cfg = config(&format!(
        "connection: {}\nschedule: {{ interval_ms: 100 }}\ntables:\n  - {{ table: p, topic: pg.deletes, mode: timestamp, timestamp_column: updated_at, detect_deletes: true, delete_scan_interval_ms: 200 }}\n",
        db.url()
    ));
    let deletes = |r: &[Decoded]| -> Vec<i64> {
        let mut v: Vec<i64> = r
            .iter()
            .filter(|d| d.event.op == Op::Delete)
            .map(key_i64)
            .collect();
        v.sort();
        v
    };
    let run = start(&cfg, ctx(&stack, "deletes")).await;
    wait_records(&stack, "pg.deletes", "5 rows", |r| r.len() >= 5).await;
    c.execute("DELETE FROM p WHERE id = 2", &[]).await.unwrap();
    wait_records(&stack, "pg.deletes", "the delete of 2", |r| {
        deletes(r) == vec![2]
    })
    .await;
    run.stop().await;

    // deleted while the source is down; and an update, so the last position of 3 is not its first
    c.execute("DELETE FROM p WHERE id = 4", &[]).await.unwrap();
    c.execute(
        "UPDATE p SET v = 'changed', updated_at = now() WHERE id = 3",
        &[],
    )
    .await
    .unwrap();
    let run = start(&cfg, ctx(&stack, "deletes")).await;
    wait_records(&stack, "pg.deletes", "the update of 3", |r| {
        r.iter().filter(|d| key_i64(d) == 3).count() >= 2
    })
    .await;
    c.execute("DELETE FROM p WHERE id = 3", &[]).await.unwrap();
    let recs = wait_records(&stack, "pg.deletes", "the deletes of 3 and 4", |r| {
        deletes(r) == vec![2, 3, 4]
    })
    .await;
    // one more scan cycle must not repeat any delete
    tokio::time::sleep(Duration::from_millis(600)).await;
    run.stop().await;
    let recs_after = read_all(&stack, "pg.deletes").await;
    assert_eq!(
        deletes(&recs_after),
        vec![2, 3, 4],
        "each delete exactly once"
    );
    for d in recs.iter().filter(|d| d.event.op == Op::Delete) {
        assert!(d.event.after.is_none());
        let last_upsert = recs
            .iter()
            .filter(|u| u.event.op == Op::Upsert && key_i64(u) == key_i64(d))
            .map(|u| u.event.source.position.clone())
            .max()
            .unwrap();
        assert!(
            d.event.source.position > last_upsert,
            "a delete sorts after the key's last change"
        );
    }
}

/// A query instead of a table: columns from a join, key and name given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_polled_like_a_table() {
    let stack = Stack::start();
    let db = PgDb::create("sqlpoll_query").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL);
         CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2));
         INSERT INTO customers VALUES (1, 'a@example.com'), (2, 'b@example.com');
         INSERT INTO orders (customer_id, total) VALUES (1, 10.5), (2, 99.99), (1, 0);",
    )
    .await
    .unwrap();
    let cfg = config(&format!(
        "connection: {}
schedule: {{ interval_ms: 100 }}
tables:
  - query: \"SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id;\"
    name: orders_with_email
    key: [id]
    topic: pg.query
    mode: incrementing
",
        db.url()
    ));
    let run = start(&cfg, ctx(&stack, "query")).await;
    wait_records(&stack, "pg.query", "3 rows", |r| r.len() >= 3).await;
    c.execute("INSERT INTO orders (customer_id, total) VALUES (2, 1)", &[])
        .await
        .unwrap();
    let recs = wait_records(&stack, "pg.query", "4 rows", |r| r.len() >= 4).await;
    run.stop().await;
    assert_eq!(ids(&recs), vec![1, 2, 3, 4]);
    let second = recs.iter().find(|d| key_i64(d) == 2).unwrap();
    assert_eq!(
        field(second, "email"),
        Value::String("b@example.com".into())
    );
    assert_eq!(second.event.source.table, "orders_with_email");
    let total = second.columns.iter().find(|c| c.name == "total").unwrap();
    assert_eq!(
        total.ty,
        ColumnType::Decimal {
            precision: 10,
            scale: 2
        }
    );
    assert!(total.nullable, "query columns are nullable");
}

/// `syncline run` killed with SIGKILL while it publishes, three times:
/// every row arrives, each with one identity, and each kill republishes at
/// most one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_publishing_loses_nothing() {
    let stack = Stack::start();
    let db = PgDb::create("sqlpoll_kill").await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text); INSERT INTO t (v) SELECT repeat('x', 200) FROM generate_series(1, 3000);")
        .await
        .unwrap();
    let dir = TempDir::new("sqlpoll-kill");
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: kill9
kafka: {{ bootstrap_servers: \"{}\", partitions: 2 }}
registry: {{ url: \"{}\" }}
sources:
  src:
    type: sql_poll
    connection: {}
    schedule: {{ interval_ms: 50 }}
    batch_size: 100
    tables:
      - {{ table: t, topic: kill.t, mode: incrementing }}
",
            stack.bootstrap(),
            stack.registry_url(),
            db.url()
        ),
    )
    .unwrap();
    let mut run = SynclineRun::start(&pipeline);
    let kills = 3;
    for k in 1..=kills {
        let at = 500 * k;
        wait_records(
            &stack,
            "kill.t",
            &format!("{at} records before kill {k}"),
            |r| r.len() >= at,
        )
        .await;
        run.restart(); // kill -9, start again
    }
    let recs = wait_records(&stack, "kill.t", "3000 distinct rows", |r| {
        ids(r).into_iter().collect::<HashSet<_>>().len() >= 3000
    })
    .await;
    run.kill9();
    eprintln!(
        "kill9 test: {} records for 3000 rows after {kills} kills",
        recs.len()
    );
    let identities: HashSet<Vec<u8>> = recs
        .iter()
        .map(|d| d.event.source.position.as_bytes().to_vec())
        .collect();
    assert_eq!(
        identities.len(),
        3000,
        "one identity per row; log:\n{}",
        run.log()
    );
    assert!(
        recs.len() <= 3000 + kills * 100,
        "each kill republishes at most one batch of 100: {} records",
        recs.len()
    );
}

/// The database connection is killed and the broker restarted (kill -9)
/// under a running source: it retries and catches up, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_database_and_broker_failures() {
    let mut stack = Stack::start();
    let db = PgDb::create("sqlpoll_recover").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE t (id bigserial PRIMARY KEY, v int); INSERT INTO t (v) VALUES (1);",
    )
    .await
    .unwrap();
    let cfg = config(&format!(
        "connection: {}\nschedule: {{ interval_ms: 100 }}\ntables:\n  - {{ table: t, topic: pg.recover, mode: incrementing }}\n",
        db.url()
    ));
    let run = start(&cfg, ctx(&stack, "recover")).await;
    wait_records(&stack, "pg.recover", "row 1", |r| r.len() == 1).await;

    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'syncline sql_poll recover'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the source's session is named after it");
    c.execute("INSERT INTO t (v) VALUES (2)", &[])
        .await
        .unwrap();
    wait_records(
        &stack,
        "pg.recover",
        "row 2 after the connection was killed",
        |r| ids(r).contains(&2),
    )
    .await;

    stack.broker.restart();
    c.execute("INSERT INTO t (v) VALUES (3)", &[])
        .await
        .unwrap();
    let recs = wait_records(
        &stack,
        "pg.recover",
        "row 3 after the broker restart",
        |r| ids(r).contains(&3),
    )
    .await;
    assert!(
        !run.task.is_finished(),
        "the source keeps running through transient failures"
    );
    run.stop().await;
    let distinct: HashSet<i64> = ids(&recs).into_iter().collect();
    assert_eq!(distinct, HashSet::from([1, 2, 3]));
}

// ---- SQLite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_by_incrementing_id_and_by_timestamp() {
    let stack = Stack::start();
    let dir = TempDir::new("sqlpoll-sqlite");
    let path = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, amount DECIMAL(10,2), ok BOOLEAN, day DATE, payload BLOB,
                              at TIME, u UUID, doc JSON, score REAL, big NUMERIC, seen TIMESTAMP, anything);
         CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(20),
                             updated_at DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f','now')));
         INSERT INTO events (kind, amount, ok, day, payload, at, u, doc, score, big, seen, anything) VALUES
             ('a', 12.5, 1, '2026-11-26', x'0102', '01:02:03.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1]}',
              0.25, 12345678901, '2026-11-26T10:00:00Z', 42),
             ('b', NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         INSERT INTO items (id, name, updated_at) VALUES (1, 'one', '2026-01-01 00:00:00.000'), (2, 'two', '2026-01-01 00:00:00.000');",
    )
    .unwrap();
    let cfg = config(&format!(
        "connection: sqlite://{}\nschedule: {{ interval_ms: 100 }}\ntables:
  - {{ table: events, topic: lite.events, mode: incrementing }}
  - {{ table: items, topic: lite.items, mode: timestamp, timestamp_column: updated_at }}\n",
        path.display()
    ));
    let run = start(&cfg, ctx(&stack, "lite")).await;
    let ev = wait_records(&stack, "lite.events", "2 events", |r| r.len() >= 2).await;
    let first = ev.iter().find(|d| key_i64(d) == 1).unwrap();
    assert_eq!(field(first, "kind"), Value::String("a".into()));
    assert_eq!(
        syncline_core::value::decimal_bytes(&field(first, "amount")),
        syncline_core::value::decimal_bytes(
            &syncline_core::value::decimal_from_text("12.50", 2).unwrap()
        )
    );
    assert_eq!(field(first, "ok"), Value::Boolean(true));
    assert_eq!(field(first, "day"), Value::Date(20_783));
    assert_eq!(field(first, "payload"), Value::Bytes(vec![1, 2]));
    assert_eq!(field(first, "at"), Value::TimeMicros(3_723_500_000));
    assert_eq!(
        field(first, "u"),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap())
    );
    assert_eq!(field(first, "doc"), Value::String("{\"k\": [1]}".into()));
    assert_eq!(field(first, "score"), Value::Double(0.25));
    assert_eq!(field(first, "big"), Value::String("12345678901".into()));
    assert_eq!(
        field(first, "seen"),
        Value::LocalTimestampMicros((20_783 * 86_400 + 36_000) * 1_000_000)
    );
    assert_eq!(field(first, "anything"), Value::String("42".into()));
    let ty = |n: &str| {
        first
            .columns
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .ty
            .clone()
    };
    assert_eq!(ty("doc"), ColumnType::Json);
    assert_eq!(ty("big"), ColumnType::NumericText);
    assert_eq!(
        ty("amount"),
        ColumnType::Decimal {
            precision: 10,
            scale: 2
        }
    );
    let second_row = ev.iter().find(|d| key_i64(d) == 2).unwrap();
    for n in [
        "amount", "day", "payload", "at", "u", "doc", "score", "big", "seen", "anything",
    ] {
        assert_eq!(
            field(second_row, n),
            Value::Null,
            "column {n} of the NULL row"
        );
    }
    let second = ev.iter().find(|d| key_i64(d) == 2).unwrap();
    assert_eq!(field(second, "amount"), Value::Null);
    assert_eq!(second.event.source.db, path.display().to_string());

    wait_records(&stack, "lite.items", "2 items", |r| r.len() >= 2).await;
    conn.execute_batch(
        "INSERT INTO events (kind) VALUES ('c');
         UPDATE items SET name = 'uno', updated_at = strftime('%Y-%m-%d %H:%M:%f','now') WHERE id = 1;
         INSERT INTO items (id, name) VALUES (3, 'three');",
    )
    .unwrap();
    let ev = wait_records(&stack, "lite.events", "3 events", |r| r.len() >= 3).await;
    assert_eq!(ids(&ev), vec![1, 2, 3]);
    let items = wait_records(&stack, "lite.items", "the update and the insert", |r| {
        r.len() >= 4
    })
    .await;
    run.stop().await;
    assert_eq!(ids(&items), vec![1, 1, 2, 3]);
    let ones: Vec<&Decoded> = items.iter().filter(|d| key_i64(d) == 1).collect();
    let (old, new) = if field(ones[0], "name") == Value::String("one".into()) {
        (ones[0], ones[1])
    } else {
        (ones[1], ones[0])
    };
    assert_eq!(field(new, "name"), Value::String("uno".into()));
    assert!(
        new.event.source.position > old.event.source.position,
        "an update has a greater position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedule_fires() {
    let stack = Stack::start();
    let dir = TempDir::new("sqlpoll-cron");
    let path = dir.path().join("cron.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a');",
    )
    .unwrap();
    let cfg = config(&format!(
        "connection: sqlite:{}\nschedule: {{ cron: \"* * * * * *\" }}\ntables:\n  - {{ table: t, topic: lite.cron, mode: incrementing }}\n",
        path.display()
    ));
    let run = start(&cfg, ctx(&stack, "cron")).await;
    wait_records(&stack, "lite.cron", "the first row", |r| r.len() == 1).await;
    conn.execute("INSERT INTO t (v) VALUES ('b')", []).unwrap();
    wait_records(
        &stack,
        "lite.cron",
        "the second row, at a later tick",
        |r| r.len() == 2,
    )
    .await;
    run.stop().await;
}

#[test]
fn check_reports_config_issues() {
    let cfg = config(
        "connection: postgres://u:secret@h/db
schedule: { cron: \"not cron\" }
tables:
  - { table: orders, topic: shop.orders, mode: timestamp }
  - { query: \"SELECT 1 AS id\", topic: shop.q, mode: incrementing }
",
    );
    let issues = cfg.check();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "schedule.cron",
            "tables[0].timestamp_column",
            "tables[1].name",
            "tables[1].key"
        ]
    );
    assert!(
        issues[1].message.contains("updated_at"),
        "the message says what is valid: {}",
        issues[1].message
    );
    let empty = config("connection: sqlite:x.db\ntables: []\n");
    assert_eq!(
        empty
            .check()
            .iter()
            .map(|i| i.path.as_str())
            .collect::<Vec<_>>(),
        ["tables"]
    );
    assert!(serde_yaml::from_str::<SqlPollConfig>(
        "connection: sqlite:x.db\ntables: []\ninterval_ms: 5\n"
    )
    .is_err());
}
