//! `make bench`: throughput of syncline's stages on this machine, beside the
//! limit they pass through, on real parts (nisshi broker, `syncline
//! registry`, the machine's Postgres). Prints figures; asserts nothing.
//!
//! - raw producer: a plain librdkafka producer writing records of the same
//!   size to the same broker (the broker's limit for the stages below);
//! - source: `sql_poll` publishing a 100k-row Postgres table (rows/s);
//! - sink: the `postgres` sink applying 100k change records (rows/s);
//! - end to end: source table -> target table, both running.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::{raw_producer, topic_records, PgDb, Stack, SynclineRun, TempDir};

const ROWS: i64 = 100_000;

const TABLE: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2), \
     qty integer, at timestamptz NOT NULL DEFAULT clock_timestamp());";

fn fill(n: i64) -> String {
    format!(
        "INSERT INTO items SELECT g, 'item number ' || g, g / 100.0, g % 1000, clock_timestamp() FROM generate_series(1, {n}) g"
    )
}

fn pipeline(stack: &Stack, name: &str, source: &PgDb, target: &PgDb) -> String {
    format!(
        "name: {name}\nkafka: {{ bootstrap_servers: '{}', partitions: 3 }}\nregistry: {{ url: '{}' }}\n\
         sources:\n  src:\n    type: sql_poll\n    connection: {}\n    schedule: {{ interval_ms: 100 }}\n    batch_size: 10000\n\
         \x20   tables:\n      - table: public.items\n        topic: bench.items\n        mode: incrementing\n        incrementing_column: id\n\
         sinks:\n  dst:\n    type: postgres\n    connection: {}\n    topics: [bench.items]\n    tables: {{ bench.items: items }}\n    batch_size: 5000\n",
        stack.bootstrap(),
        stack.registry_url(),
        source.url(),
        target.url()
    )
}

async fn count(db: &PgDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
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

#[tokio::main]
async fn main() {
    let stack = Stack::start();
    println!(
        "syncline bench: {ROWS} rows, broker nisshi 0.8.1 on loopback, Postgres 127.0.0.1:5432"
    );

    // The limit: a plain librdkafka producer, records of the size syncline writes (~90 bytes).
    let elapsed = raw_producer(&stack.bootstrap(), ROWS, 90).await;
    println!("raw librdkafka producer  {}", rate(ROWS, elapsed));

    // Source alone, then sink alone (on the records the source wrote), then both.
    let (source, target) = (
        PgDb::create("bench_src").await,
        PgDb::create("bench_dst").await,
    );
    source
        .client()
        .await
        .batch_execute(&format!("{TABLE}{}", fill(ROWS)))
        .await
        .unwrap();
    let dir = TempDir::new("bench");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, pipeline(&stack, "bench", &source, &target)).unwrap();

    let bootstrap = stack.bootstrap();
    let mut src = SynclineRun::start_with_args(&file, &["--component", "src"]);
    let d = timed(|| {
        let b = bootstrap.clone();
        async move { topic_records(&b, "bench.items") >= ROWS }
    })
    .await;
    println!(
        "source sql_poll -> Kafka {}  (includes start-up)",
        rate(ROWS, d)
    );
    src.kill9();

    let mut sink = SynclineRun::start_with_args(&file, &["--component", "dst"]);
    let d = timed(|| async { count(&target).await >= ROWS }).await;
    println!(
        "sink Kafka -> postgres    {}  (includes start-up)",
        rate(ROWS, d)
    );
    sink.kill9();

    let (source2, target2) = (
        PgDb::create("bench_src2").await,
        PgDb::create("bench_dst2").await,
    );
    source2
        .client()
        .await
        .batch_execute(&format!("{TABLE}{}", fill(ROWS)))
        .await
        .unwrap();
    let file2 = dir.path().join("pipeline2.yaml");
    std::fs::write(
        &file2,
        pipeline(&stack, "bench-e2e", &source2, &target2).replace("bench.items", "bench.e2e"),
    )
    .unwrap();
    let mut both = SynclineRun::start(&file2);
    let d = timed(|| async { count(&target2).await >= ROWS }).await;
    println!(
        "end to end table -> table {}  (includes start-up)",
        rate(ROWS, d)
    );
    both.kill9();
}
