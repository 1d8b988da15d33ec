//! `make bench` (part 2): the `postgres_cdc` source on this machine, beside
//! the raw limits it passes through, on real parts (a throwaway Postgres
//! server with wal_level=logical, the nisshi broker, `syncline registry`,
//! the machine's Postgres as sink target). Prints figures; asserts nothing.
//!
//! - raw producer: plain librdkafka writing records of the size CDC writes;
//! - raw decoding: `pg_logical_slot_get_binary_changes` (pgoutput) returning
//!   the same changes;
//! - CDC capture: changes committed -> acknowledged records in Kafka (events/s);
//! - snapshot: rows/s beside `COPY (SELECT ...) TO STDOUT` of the same table;
//! - end to end latency, source commit -> target row, at a fixed rate (p50/p99).

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use std::time::{Duration, Instant};
use support::pg_server::PgServer;
use support::{pg_connect, raw_producer, topic_records, PgDb, Stack, SynclineRun, TempDir};

const ROWS: i64 = 100_000;
const TABLE: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2), \
     qty integer, at timestamptz NOT NULL DEFAULT clock_timestamp());";

fn fill(from: i64, n: i64) -> String {
    format!(
        "INSERT INTO items SELECT g, 'item number ' || g, g / 100.0, g % 1000, clock_timestamp() FROM generate_series({from}, {}) g",
        from + n - 1
    )
}

async fn timed<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "bench stage took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn rate(n: i64, d: Duration, unit: &str) -> String {
    format!(
        "{:>9.0} {unit}/s  ({n} in {:.2}s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

fn pipeline(
    stack: &Stack,
    name: &str,
    source: &str,
    target: &str,
    snapshot: &str,
    topic: &str,
    parallelism: usize,
) -> String {
    format!(
        "name: {name}\nkafka: {{ bootstrap_servers: '{}', partitions: 3 }}\nregistry: {{ url: '{}' }}\n\
         sources:\n  src:\n    type: postgres_cdc\n    connection: {source}\n    snapshot: {snapshot}\n    snapshot_chunk_size: 10000\n    snapshot_parallelism: {parallelism}\n\
         \x20   tables:\n      - {{ table: public.items, topic: {topic} }}\n\
         sinks:\n  dst:\n    type: postgres\n    connection: {target}\n    topics: [{topic}]\n    tables: {{ {topic}: items }}\n    batch_size: 2000\n    batch_timeout_ms: 20\n",
        stack.bootstrap(),
        stack.registry_url(),
    )
}

async fn wait_log(run: &SynclineRun, what: &str) {
    timed(|| {
        let log = run.log();
        async move { log.contains(what) }
    })
    .await;
}

#[tokio::main]
async fn main() {
    let stack = Stack::start();
    let pg = PgServer::start(&["max_wal_size=1GB"]);
    println!("syncline cdc bench: {ROWS} rows, broker nisshi on loopback, Postgres (wal_level=logical) on loopback");

    // 1. raw producer, records of the size postgres_cdc writes (~110 bytes)
    let elapsed = raw_producer(&stack.bootstrap(), ROWS, 110).await;
    println!(
        "raw librdkafka producer          {}",
        rate(ROWS, elapsed, "records")
    );

    // 2. raw logical decoding of the same changes (100 transactions of 1000 inserts)
    let raw_url = pg.create_db("rawdec").await;
    let raw = pg_connect(&raw_url).await;
    raw.batch_execute(TABLE).await.unwrap();
    // Two calls: a slot cannot be created in a transaction that wrote.
    raw.batch_execute("CREATE PUBLICATION bench_pub FOR TABLE items")
        .await
        .unwrap();
    raw.batch_execute("SELECT pg_create_logical_replication_slot('bench_raw', 'pgoutput')")
        .await
        .unwrap();
    for i in 0..100 {
        raw.batch_execute(&fill(1 + i * 1000, 1000)).await.unwrap();
    }
    let start = Instant::now();
    let n: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_logical_slot_get_binary_changes('bench_raw', NULL, NULL, 'proto_version', '1', 'publication_names', 'bench_pub') \
             WHERE get_byte(data, 0) = ascii('I')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    println!(
        "raw pg_logical_slot_get_binary_changes {}",
        rate(n, start.elapsed(), "changes")
    );

    // 3. CDC capture: the same changes through the source (streaming only)
    let cap_url = pg.create_db("capture").await;
    let cap = pg_connect(&cap_url).await;
    cap.batch_execute(TABLE).await.unwrap();
    let dir = TempDir::new("bench-cdc");
    let target = PgDb::create("bench_cdc_dst").await;
    let file = dir.path().join("capture.yaml");
    std::fs::write(
        &file,
        pipeline(
            &stack,
            "bench-cap",
            &cap_url,
            &target.url(),
            "never",
            "bench.cap",
            4,
        ),
    )
    .unwrap();
    let mut src = SynclineRun::start_with_args(&file, &["--component", "src"]);
    wait_log(&src, "postgres_cdc: streaming").await;
    let bootstrap = stack.bootstrap();
    let start = Instant::now();
    for i in 0..100 {
        cap.batch_execute(&fill(1 + i * 1000, 1000)).await.unwrap();
    }
    let commit = start.elapsed();
    timed(|| {
        let b = bootstrap.clone();
        async move { topic_records(&b, "bench.cap") >= ROWS }
    })
    .await;
    println!(
        "CDC capture commit -> Kafka ack  {}  (writes took {:.2}s)",
        rate(ROWS, start.elapsed(), "events"),
        commit.as_secs_f64()
    );
    src.kill9();

    // 4. snapshot beside raw COPY of the same table
    let snap_url = pg.create_db("snap").await;
    let snap = pg_connect(&snap_url).await;
    snap.batch_execute(&format!("{TABLE}{}", fill(1, ROWS)))
        .await
        .unwrap();
    let start = Instant::now();
    let copy = snap
        .copy_out("COPY (SELECT id::text, name::text, amount::text, qty::text, at::text FROM items) TO STDOUT")
        .await
        .unwrap();
    futures::pin_mut!(copy);
    let mut bytes = 0usize;
    while let Some(chunk) = copy.next().await {
        bytes += chunk.unwrap().len();
    }
    println!(
        "raw COPY ... TO STDOUT           {}  ({bytes} bytes)",
        rate(ROWS, start.elapsed(), "rows")
    );
    for parallelism in [1, 4] {
        let file = dir.path().join(format!("snap{parallelism}.yaml"));
        let topic = format!("bench.snap{parallelism}");
        std::fs::write(
            &file,
            pipeline(
                &stack,
                &format!("bench-snap{parallelism}"),
                &snap_url,
                &target.url(),
                "initial",
                &topic,
                parallelism,
            ),
        )
        .unwrap();
        let start = Instant::now();
        let mut src = SynclineRun::start_with_args(&file, &["--component", "src"]);
        timed(|| {
            let (b, topic) = (bootstrap.clone(), topic.clone());
            async move { topic_records(&b, &topic) >= ROWS }
        })
        .await;
        println!(
            "CDC snapshot -> Kafka ack, {parallelism} at once  {}  (includes start-up)",
            rate(ROWS, start.elapsed(), "rows")
        );
        src.kill9();
    }

    // 5. end-to-end latency at a fixed rate: 200 rows/s for 15 s, one row per transaction
    let lat_url = pg.create_db("latency").await;
    let lat = pg_connect(&lat_url).await;
    lat.batch_execute(TABLE).await.unwrap();
    let target = PgDb::create("bench_cdc_lat").await;
    let file = dir.path().join("latency.yaml");
    std::fs::write(
        &file,
        pipeline(
            &stack,
            "bench-lat",
            &lat_url,
            &target.url(),
            "never",
            "bench.lat",
            4,
        ),
    )
    .unwrap();
    let mut both = SynclineRun::start(&file);
    wait_log(&both, "postgres_cdc: streaming").await;
    let tgt = target.client().await;
    let total = 3000i64;
    let writer = tokio::spawn(async move {
        let mut committed = Vec::with_capacity(total as usize);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for id in 1..=total {
            tick.tick().await;
            lat.batch_execute(&fill(id, 1)).await.unwrap();
            committed.push(Instant::now());
        }
        committed
    });
    let mut seen: Vec<Option<Instant>> = vec![None; total as usize + 1];
    let mut last = 0i64;
    while last < total {
        if let Ok(rows) = tgt
            .query("SELECT id FROM items WHERE id > $1 ORDER BY id", &[&last])
            .await
        {
            let now = Instant::now();
            for r in rows {
                let id: i64 = r.get(0);
                if seen[id as usize].is_none() {
                    seen[id as usize] = Some(now);
                }
                last = last.max(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let committed = writer.await.unwrap();
    let mut lats: Vec<f64> = (1..=total as usize)
        .filter_map(|id| {
            seen[id].map(|s| s.saturating_duration_since(committed[id - 1]).as_secs_f64() * 1000.0)
        })
        .collect();
    lats.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lats[((lats.len() as f64 * p) as usize).min(lats.len() - 1)];
    println!(
        "end to end commit -> target row  p50 {:.1} ms  p99 {:.1} ms  ({} rows at 200/s, sink batch_timeout 20 ms)",
        pct(0.50),
        pct(0.99),
        lats.len()
    );
    both.kill9();
}
