//! `make bench`: throughput of syncline's stages on this machine, beside the
//! limit they pass through, on real parts (Apache Kafka broker, `syncline
//! registry`, the machine's Postgres). Prints figures; asserts nothing.
//!
//! - raw producer: a plain librdkafka producer writing records of the same
//!   size to the same broker (the broker's limit for the stages below);
//! - source: `sql_poll` publishing a 1M-row Postgres table (rows/s;
//!   `SYNCLINE_BENCH_ROWS` sets another count, for this and the next rows;
//!   with fewer rows start-up weighs on every figure, and the plain
//!   consumer reads a topic that fits in one fetch);
//! - sink: the `postgres` sink applying 1M change records (rows/s),
//!   beside a plain librdkafka consumer reading the same topic (the read
//!   limit), `COPY ... FROM STDIN` of the same rows into the same Postgres
//!   (the write limit), and Debezium's JDBC sink on Kafka Connect applying
//!   the same rows as Debezium change events (upsert by key);
//! - sink: the `sqlite` sink applying the same records into a SQLite file
//!   (rows/s), beside one transaction of prepared inserts of the same rows
//!   into a fresh file (SQLite's write limit) and the same plain consumer;
//! - sink: the `mysql` sink applying the same records into MariaDB (rows/s),
//!   beside multi-row `INSERT`s (1000 rows each, one transaction) of the
//!   same rows into a fresh table (MariaDB's write limit here);
//! - sink: the `http` sink delivering the same records to a null receiver
//!   on loopback (answers 200 at once), beside a plain HTTP client posting
//!   bodies of the same changes (1000 per request) to it;
//! - end to end: source table -> target table, both running.

#[path = "peers/driver.rs"]
mod peers;
#[path = "../tests/support/mod.rs"]
mod support;

use futures::SinkExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::{Duration, Instant};
use support::target::MyDb;
use support::{raw_producer, topic_records, PgDb, Stack, SynclineRun, TempDir};
use syncline_core::kafka::KafkaConfig;

/// Rows of the table and records of the topic: `SYNCLINE_BENCH_ROWS`, or 1M.
static ROWS: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
    std::env::var("SYNCLINE_BENCH_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
});

const TABLE: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2), \
     qty integer, at timestamptz NOT NULL DEFAULT clock_timestamp());";

fn fill(n: i64) -> String {
    format!(
        "INSERT INTO items SELECT g, 'item number ' || g, g / 100.0, g % 1000, clock_timestamp() FROM generate_series(1, {n}) g"
    )
}

/// `extra`: more sinks (YAML, indented as entries of `sinks:`).
fn pipeline(stack: &Stack, name: &str, source: &PgDb, target: &PgDb, extra: &str) -> String {
    format!(
        "name: {name}\nkafka: {{ bootstrap_servers: '{}', partitions: 3 }}\nregistry: {{ url: '{}' }}\n\
         sources:\n  src:\n    type: sql_poll\n    connection: {}\n    schedule: {{ interval_ms: 100 }}\n    batch_size: 10000\n\
         \x20   tables:\n      - table: public.items\n        topic: bench.items\n        mode: incrementing\n        incrementing_column: id\n\
         sinks:\n  dst:\n    type: postgres\n    connection: {}\n    topics: [bench.items]\n    tables: {{ bench.items: items }}\n    batch_size: 5000\n{extra}",
        stack.bootstrap(),
        stack.registry_url(),
        source.url(),
        target.url()
    )
}

/// Counts the rows of `db.items` while a stage writes them, as cheaply as a
/// count can be: one connection for every poll (not a new backend each
/// time), no parallel workers (polls are spaced by [`landing`]).
struct Counter {
    client: tokio_postgres::Client,
}

impl Counter {
    async fn new(db: &PgDb) -> Counter {
        let client = db.client().await;
        client
            .batch_execute("SET max_parallel_workers_per_gather = 0")
            .await
            .unwrap();
        Counter { client }
    }

    async fn count(&self) -> i64 {
        self.client
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0)
    }
}

async fn timed<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "bench stage took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn rate(n: i64, d: Duration) -> String {
    format!(
        "{:>9.0} rows/s  ({n} rows in {:.2}s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

/// A plain consumer (no group, no decoding) reading `n` records of `topic`
/// from the beginning: how fast Kafka hands the sink its input.
fn plain_consumer(bootstrap: &str, topic: &str, n: i64) -> Duration {
    let mut config = KafkaConfig::new(bootstrap).reader_config();
    config.set("enable.partition.eof", "false");
    let c: BaseConsumer = config.create().unwrap();
    let parts = syncline_core::kafka::topic_partitions(c.client(), topic).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    let start = Instant::now();
    c.assign(&tpl).unwrap();
    let mut got = 0;
    while got < n {
        if let Some(m) = c.poll(Duration::from_secs(1)) {
            m.unwrap();
            got += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "plain consumer stalled"
        );
    }
    start.elapsed()
}

/// `COPY items FROM STDIN` of the bench's rows into a fresh table of `db`.
async fn copy_in(db: &PgDb) -> Duration {
    let c = db.client().await;
    c.batch_execute(TABLE).await.unwrap();
    let mut text = String::new();
    for g in 1..=*ROWS {
        text.push_str(&format!(
            "{g}\titem number {g}\t{}.{:02}\t{}\t2026-01-01 00:00:00+00\n",
            g / 100,
            g % 100,
            g % 1000
        ));
    }
    let start = Instant::now();
    let sink = c.copy_in("COPY items FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(text)).await.unwrap();
    sink.finish().await.unwrap();
    start.elapsed()
}

/// Debezium's JDBC sink applying the rows of `source`: Debezium's source
/// connector first writes them as change events (a snapshot; not timed),
/// then the sink's worker is timed from its start until the target has them.
async fn jdbc_sink(
    p: &peers::Peers,
    stack: &Stack,
    source: &PgDb,
    dir: &std::path::Path,
) -> (Duration, Duration) {
    let dir = dir.join("connect");
    let bootstrap = stack.bootstrap();
    let prefix = "dbz.bench";
    let topic = format!("{prefix}.public.items");
    let mut src = p.connect(
        &bootstrap,
        &dir,
        "dbz-source",
        &peers::debezium_postgres(&source.url(), "items", prefix, "initial"),
    );
    timed(|| {
        let (b, t) = (bootstrap.clone(), topic.clone());
        async move { topic_records(&b, &t) >= *ROWS }
    })
    .await;
    src.assert_not_failed().await;
    src.stop();
    let slot = prefix.replace('.', "_");
    source
        .client()
        .await
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}_slot')"))
        .await
        .unwrap();
    let target = PgDb::create("bench_jdbc").await;
    let mut sink = p.connect(
        &bootstrap,
        &dir,
        "dbz-jdbc-sink",
        &peers::debezium_jdbc_sink(&target.url(), &topic, "items"),
    );
    let took = rows_landing(&target).await;
    sink.assert_not_failed().await;
    sink.stop();
    took
}

/// A plain HTTP client posting the bench's rows as changes, 1000 per
/// request, one request at a time, to `null` (the bodies are built first).
async fn http_posts(null: &support::receiver::Receiver) -> Duration {
    let client = reqwest::Client::new();
    let mut bodies = Vec::new();
    let mut g = 1;
    while g <= *ROWS {
        let changes: Vec<serde_json::Value> = (g..(g + 1000).min(*ROWS + 1))
            .map(|i| {
                serde_json::json!({
                    "id": format!("src/{i:016x}"), "op": "READ", "key": {"id": i}, "before": null,
                    "after": {"id": i, "name": format!("item number {i}"),
                              "amount": format!("{}.{:02}", i / 100, i % 100), "qty": i % 1000,
                              "at": "2026-01-01 00:00:00.000000+00"},
                    "unchanged": [], "source": {"connector": "sql_poll", "name": "src", "db": "bench",
                    "table": "public.items", "position": i.to_string(), "ts_us": 0},
                    "schema": {"value_schema_id": 1}, "topic": "bench.items", "partition": 0, "offset": i
                })
            })
            .collect();
        g += changes.len() as i64;
        bodies.push(serde_json::to_vec(&serde_json::json!({ "changes": changes })).unwrap());
    }
    let start = Instant::now();
    for body in bodies {
        let r = client
            .post(null.url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    start.elapsed()
}

/// Multi-row `INSERT`s (1000 rows per statement) of the bench's rows into a
/// fresh MariaDB table, in one transaction.
async fn mysql_inserts(db: &MyDb) -> Duration {
    use mysql_async::prelude::Queryable;
    let mut c = db.conn().await;
    c.query_drop(
        "CREATE TABLE items (id bigint PRIMARY KEY, name longtext NOT NULL, amount decimal(12,2), \
         qty int, at datetime(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    let mut g = 1;
    while g <= *ROWS {
        let rows: Vec<String> = (g..(g + 1000).min(*ROWS + 1))
            .map(|i| {
                format!(
                    "({i}, 'item number {i}', {}.{:02}, {}, '2026-01-01 00:00:00')",
                    i / 100,
                    i % 100,
                    i % 1000
                )
            })
            .collect();
        g += rows.len() as i64;
        tx.query_drop(format!("INSERT INTO items VALUES {}", rows.join(", ")))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    start.elapsed()
}

/// From now until MariaDB's `items` holds every row, and from its first row
/// to its last.
async fn mysql_rows_landing(db: &MyDb) -> (Duration, Duration) {
    use mysql_async::prelude::Queryable;
    let c = tokio::sync::Mutex::new(db.conn().await);
    landing(|| async {
        let n: Option<i64> = c
            .lock()
            .await
            .query_first("SELECT count(*) FROM items")
            .await
            .ok()
            .flatten();
        n.unwrap_or(0)
    })
    .await
}

/// One transaction of prepared inserts of the bench's rows into a fresh
/// SQLite file (WAL, `synchronous = NORMAL`, as the sink runs it).
fn sqlite_inserts(path: &std::path::Path) -> Duration {
    let mut c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount TEXT, qty INTEGER, at TIMESTAMPTZ NOT NULL);",
    )
    .unwrap();
    let start = Instant::now();
    let tx = c.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        for g in 1..=*ROWS {
            stmt.execute(rusqlite::params![
                g,
                format!("item number {g}"),
                format!("{}.{:02}", g / 100, g % 100),
                g % 1000,
                "2026-01-01 00:00:00.000000+00:00"
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    start.elapsed()
}

/// From now until the SQLite file's `items` holds every row, and from its
/// first row to its last.
async fn sqlite_rows_landing(path: &std::path::Path) -> (Duration, Duration) {
    landing(|| async {
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM items", [], |r| r.get(0)))
            .unwrap_or(0)
    })
    .await
}

/// From now until `count` reaches the bench's rows, and from its first row
/// to its last. Polls are spaced by 1/50 of the time waited so far (at least
/// 20 ms): the stage under test gets the machine, a figure is at most 2% late.
async fn landing<F: std::future::Future<Output = i64>>(
    mut count: impl FnMut() -> F,
) -> (Duration, Duration) {
    let start = Instant::now();
    let mut first = None;
    loop {
        let n = count().await;
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= *ROWS {
            let now = Instant::now();
            return (now - start, now - first.unwrap_or(now));
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{n} of {} rows after 10 minutes",
            *ROWS
        );
        let wait = (start.elapsed() / 50).max(Duration::from_millis(20));
        tokio::time::sleep(wait).await;
    }
}

/// From now until `db.items` holds every row, and from its first row to its last.
async fn rows_landing(db: &PgDb) -> (Duration, Duration) {
    let counter = Counter::new(db).await;
    landing(|| counter.count()).await
}

#[tokio::main]
async fn main() {
    let stack = Stack::start();
    println!(
        "syncline bench: {} rows, Apache Kafka 4.1.1 on loopback, Postgres 127.0.0.1:5432",
        *ROWS
    );

    // The limit: a plain librdkafka producer, records of the size syncline writes (~90 bytes).
    let elapsed = raw_producer(&stack.bootstrap(), *ROWS, 90).await;
    println!("raw librdkafka producer  {}", rate(*ROWS, elapsed));

    // Source alone, then sink alone (on the records the source wrote), then both.
    let (source, target) = (
        PgDb::create("bench_src").await,
        PgDb::create("bench_dst").await,
    );
    source
        .client()
        .await
        .batch_execute(&format!("{TABLE}{}", fill(*ROWS)))
        .await
        .unwrap();
    let dir = TempDir::new("bench");
    let file = dir.path().join("pipeline.yaml");
    let replica = dir.path().join("replica.db");
    let maria = MyDb::create("bench").await;
    let null = support::receiver::Receiver::null().await;
    let sqlite_sink = format!(
        "  replica:\n    type: sqlite\n    path: {}\n    topics: [bench.items]\n    tables: {{ bench.items: items }}\n    batch_size: 5000\n\
         \x20 maria:\n    type: mysql\n    connection: {}\n    topics: [bench.items]\n    tables: {{ bench.items: items }}\n    batch_size: 5000\n",
        replica.display(),
        maria.url()
    ) + &format!(
        "  hook:\n    type: http\n    url: {}\n    topics: [bench.items]\n    batch_size: 1000\n    batch_max_bytes: 4194304\n",
        null.url()
    );
    std::fs::write(
        &file,
        pipeline(&stack, "bench", &source, &target, &sqlite_sink),
    )
    .unwrap();

    let bootstrap = stack.bootstrap();
    let mut src = SynclineRun::start_with_args(&file, &["--component", "src"]);
    let d = timed(|| {
        let b = bootstrap.clone();
        async move { topic_records(&b, "bench.items") >= *ROWS }
    })
    .await;
    println!(
        "source sql_poll -> Kafka {}  (includes start-up)",
        rate(*ROWS, d)
    );
    src.kill9();

    let read = plain_consumer(&bootstrap, "bench.items", *ROWS);
    println!(
        "plain librdkafka consumer of the topic {}",
        rate(*ROWS, read)
    );
    let copy = copy_in(&PgDb::create("bench_copy").await).await;
    println!(
        "Postgres COPY FROM STDIN of the rows   {}",
        rate(*ROWS, copy)
    );
    let mut sink = SynclineRun::start_with_args(&file, &["--component", "dst"]);
    let (d, d_rows) = rows_landing(&target).await;
    println!(
        "sink Kafka -> postgres    {}  (includes start-up); first to last row {:.0} rows/s",
        rate(*ROWS, d),
        *ROWS as f64 / d_rows.as_secs_f64()
    );
    sink.kill9();
    let ratio = |what: &str, other: Duration, mine: Duration| {
        println!(
            "  postgres sink / {what} = {:.2} (rows/s)",
            other.as_secs_f64() / mine.as_secs_f64()
        )
    };
    ratio("plain consumer", read, d);
    ratio("COPY", copy, d);
    let of_limit = read.as_secs_f64() / d.as_secs_f64();
    println!(
        "  goal: the sink at >= 0.80 of a plain consumer of the topic: {of_limit:.2} ({}); the target's own write limit (COPY) is {:.2} of that consumer",
        if of_limit >= 0.8 { "met" } else { "NOT met" },
        read.as_secs_f64() / copy.as_secs_f64()
    );

    // The sqlite sink on the same topic, beside SQLite's own write limit.
    let raw_sqlite = sqlite_inserts(&dir.path().join("raw.db"));
    println!(
        "SQLite one transaction of prepared inserts {}",
        rate(*ROWS, raw_sqlite)
    );
    let mut sink = SynclineRun::start_with_args(&file, &["--component", "replica"]);
    let (d_sqlite, d_sqlite_rows) = sqlite_rows_landing(&replica).await;
    println!(
        "sink Kafka -> sqlite      {}  (includes start-up); first to last row {:.0} rows/s",
        rate(*ROWS, d_sqlite),
        *ROWS as f64 / d_sqlite_rows.as_secs_f64()
    );
    sink.kill9();
    for (what, other) in [
        ("plain consumer", read),
        ("SQLite prepared inserts", raw_sqlite),
    ] {
        println!(
            "  sqlite sink / {what} = {:.2} (rows/s)",
            other.as_secs_f64() / d_sqlite.as_secs_f64()
        );
    }

    // The mysql sink on the same topic, beside MariaDB's multi-row inserts.
    let raw_maria = mysql_inserts(&MyDb::create("bench_raw").await).await;
    println!(
        "MariaDB multi-row INSERT (1000 rows each) {}",
        rate(*ROWS, raw_maria)
    );
    let mut sink = SynclineRun::start_with_args(&file, &["--component", "maria"]);
    let (d_maria, d_maria_rows) = mysql_rows_landing(&maria).await;
    println!(
        "sink Kafka -> mysql (MariaDB) {}  (includes start-up); first to last row {:.0} rows/s",
        rate(*ROWS, d_maria),
        *ROWS as f64 / d_maria_rows.as_secs_f64()
    );
    sink.kill9();
    for (what, other) in [
        ("plain consumer", read),
        ("MariaDB multi-row INSERT", raw_maria),
    ] {
        println!(
            "  mysql sink / {what} = {:.2} (rows/s)",
            other.as_secs_f64() / d_maria.as_secs_f64()
        );
    }

    // The http sink on the same topic, beside a plain client posting to the
    // same null receiver.
    let raw_http = http_posts(&null).await;
    println!(
        "plain HTTP POSTs of the same changes (1000 per request) {}",
        rate(*ROWS, raw_http)
    );
    let counted = null.changes();
    let mut sink = SynclineRun::start_with_args(&file, &["--component", "hook"]);
    let (d_http, d_http_changes) = landing(|| async { (null.changes() - counted) as i64 }).await;
    println!(
        "sink Kafka -> http (null receiver) {}  (includes start-up); first to last change {:.0} changes/s",
        rate(*ROWS, d_http),
        *ROWS as f64 / d_http_changes.as_secs_f64()
    );
    sink.kill9();
    for (what, other) in [("plain consumer", read), ("plain HTTP POSTs", raw_http)] {
        println!(
            "  http sink / {what} = {:.2} (rows/s)",
            other.as_secs_f64() / d_http.as_secs_f64()
        );
    }

    match peers::Peers::installed() {
        Ok(p) => {
            let (jdbc, jdbc_rows) = jdbc_sink(&p, &stack, &source, dir.path()).await;
            println!(
                "Debezium JDBC sink 3.6.0 -> postgres  {}  (includes start-up; Debezium JSON events of the same rows); first to last row {:.0} rows/s",
                rate(*ROWS, jdbc),
                *ROWS as f64 / jdbc_rows.as_secs_f64()
            );
            ratio("Debezium JDBC sink, start-up included", jdbc, d);
            ratio("Debezium JDBC sink, first to last row", jdbc_rows, d_rows);
        }
        Err(why) => println!("Debezium JDBC sink: not run: {why}"),
    }

    let (source2, target2) = (
        PgDb::create("bench_src2").await,
        PgDb::create("bench_dst2").await,
    );
    source2
        .client()
        .await
        .batch_execute(&format!("{TABLE}{}", fill(*ROWS)))
        .await
        .unwrap();
    let file2 = dir.path().join("pipeline2.yaml");
    std::fs::write(
        &file2,
        pipeline(&stack, "bench-e2e", &source2, &target2, "").replace("bench.items", "bench.e2e"),
    )
    .unwrap();
    let mut both = SynclineRun::start(&file2);
    let (d, _) = rows_landing(&target2).await;
    println!(
        "end to end table -> table {}  (includes start-up)",
        rate(*ROWS, d)
    );
    both.kill9();
}
