//! `make bench` (change-data-capture): the `postgres_cdc` source beside the
//! raw limits it passes through and beside Debezium's Postgres connector (on
//! Kafka Connect standalone), in the same run, on the same Apache Kafka
//! broker, the same throwaway Postgres server (wal_level=logical,
//! synchronous_commit=on as in production) and the same rows. Prints
//! figures and ratios; asserts nothing but the counts.
//!
//! - raw producer: plain librdkafka writing records of the size CDC writes;
//! - raw decoding: `pg_logical_slot_get_binary_changes` (pgoutput) returning
//!   the same changes;
//! - streaming capture: 100 transactions of 1,000 inserts committed ->
//!   acknowledged records in Kafka (events/s), syncline and Debezium;
//! - snapshot: rows/s beside `COPY (SELECT ...) TO STDOUT` of the same
//!   table, syncline and Debezium, start-up included and from the first
//!   record to the last;
//! - commit -> Kafka latency at a fixed rate (one row per transaction,
//!   1,000 rows/s for 10 s): p50/p99 until a consumer of the topic has the
//!   record, syncline and Debezium;
//! - end to end latency, source commit -> target row through
//!   postgres_cdc -> rules -> postgres sink with default batching, at
//!   200 rows/s (one per transaction) and at 5,000 rows/s (25 per
//!   transaction): p50/p99, beside the goal (p99 under 250 ms at 5,000/s).
//!
//! Debezium publishes JSON with inline schemas (Confluent's Avro converter
//! is not on Maven Central; see benches/peers/README.md), lz4-compressed
//! like syncline's records.

#[path = "shared/measure.rs"]
mod measure;
#[path = "peers/driver.rs"]
mod peers;
#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use measure::{fill_times, per_s, rate, timed, wait_log};
use peers::Peers;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::time::{Duration, Instant};
use support::pg_server::PgServer;
use support::{pg_connect, raw_producer, topic_records, PgDb, Stack, SynclineRun, TempDir};
use syncline_core::kafka::KafkaConfig;

const ROWS: i64 = 100_000;
const TABLE: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2), \
     qty integer, at timestamptz NOT NULL DEFAULT clock_timestamp());";
/// Rows per second and seconds of the commit -> Kafka latency runs.
const LATENCY_RATE: u64 = 1_000;
const LATENCY_SECONDS: u64 = 10;

fn fill(from: i64, n: i64) -> String {
    format!(
        "INSERT INTO items SELECT g, 'item number ' || g, g / 100.0, g % 1000, clock_timestamp() FROM generate_series({from}, {}) g",
        from + n - 1
    )
}

fn pipeline(
    stack: &Stack,
    name: &str,
    source: &str,
    target: &str,
    snapshot: &str,
    topic: &str,
) -> String {
    format!(
        "name: {name}\nkafka: {{ bootstrap_servers: '{}', partitions: 3 }}\nregistry: {{ url: '{}' }}\n\
         sources:\n  src:\n    type: postgres_cdc\n    connection: {source}\n    snapshot: {snapshot}\n    snapshot_chunk_size: 10000\n\
         \x20   tables:\n      - {{ table: public.items, topic: {topic} }}\n\
         sinks:\n  dst:\n    type: postgres\n    connection: {target}\n    topics: [{topic}]\n    tables: {{ {topic}: items }}\n    batch_size: 2000\n    batch_timeout_ms: 20\n",
        stack.bootstrap(),
        stack.registry_url(),
    )
}

/// p50 and p99 of `lats` (milliseconds).
fn percentiles(mut lats: Vec<f64>) -> (f64, f64) {
    lats.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lats[((lats.len() as f64 * p) as usize).min(lats.len() - 1)];
    (pct(0.50), pct(0.99))
}

/// Commit one row per transaction at [`LATENCY_RATE`] for
/// [`LATENCY_SECONDS`] into `items` of `db_url`, while a consumer of
/// `topic` (from its end) notes when each row's record arrives; `id_of`
/// reads the row id from a record's key and value. Returns the latencies in ms.
async fn commit_to_kafka(
    bootstrap: &str,
    topic: &str,
    db_url: &str,
    id_of: impl Fn(Vec<u8>, Vec<u8>) -> futures::future::BoxFuture<'static, Option<i64>>
        + Send
        + 'static,
) -> Vec<f64> {
    let total = (LATENCY_RATE * LATENCY_SECONDS) as usize;
    let mut config = KafkaConfig::new(bootstrap).reader_config();
    config
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "5")
        .set("auto.offset.reset", "latest");
    let consumer: StreamConsumer = config.create().unwrap();
    let parts = syncline_core::kafka::topic_partitions(consumer.client(), topic).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::End)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    // Let the consumer reach the partitions' ends before the first commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reader = tokio::spawn(async move {
        let mut seen: Vec<Option<Instant>> = vec![None; total + 1];
        let mut count = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while count < total && Instant::now() < deadline {
            let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
            else {
                continue;
            };
            let now = Instant::now();
            let (Some(key), Some(value)) = (m.key(), m.payload()) else {
                continue;
            };
            if let Some(id) = id_of(key.to_vec(), value.to_vec()).await {
                if let Some(slot @ None) = seen.get_mut(id as usize) {
                    *slot = Some(now);
                    count += 1;
                }
            }
        }
        seen
    });
    let db = pg_connect(db_url).await;
    let mut committed = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    for id in 1..=total as i64 {
        tick.tick().await;
        db.batch_execute(&fill(id, 1)).await.unwrap();
        committed.push(Instant::now());
    }
    let seen = reader.await.unwrap();
    (1..=total)
        .filter_map(|id| {
            seen[id].map(|s| s.saturating_duration_since(committed[id - 1]).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// The row id in a Debezium key (JsonConverter with schemas: `{"schema":…,"payload":{"id":N}}`).
fn debezium_id(key: Vec<u8>, _value: Vec<u8>) -> futures::future::BoxFuture<'static, Option<i64>> {
    let id = serde_json::from_slice::<serde_json::Value>(&key)
        .ok()
        .and_then(|v| v["payload"]["id"].as_i64());
    Box::pin(async move { id })
}

/// Pre-create Debezium's topic with syncline's partition count, so both
/// publish into 3 partitions and the latency consumer can assign it first.
async fn debezium_topic(bootstrap: &str, topic: &str) {
    KafkaConfig::new(bootstrap)
        .ensure_topic(topic, 3, false)
        .await
        .unwrap();
}

fn drop_slot_sql(prefix: &str) -> String {
    let p = prefix.replace(['.', '-'], "_");
    format!("SELECT pg_drop_replication_slot('{p}_slot') FROM pg_replication_slots WHERE slot_name = '{p}_slot'")
}

struct Peer<'a> {
    peers: &'a Result<Peers, String>,
    stack: &'a Stack,
    dir: std::path::PathBuf,
}

impl Peer<'_> {
    /// Debezium's connector on `db_url`, started; `None` (with the reason
    /// printed) when the peers cannot run here.
    fn debezium(&self, db_url: &str, prefix: &str, snapshot: &str) -> Option<peers::Connect> {
        match self.peers {
            Ok(p) => Some(p.connect(
                &self.stack.bootstrap(),
                &self.dir,
                prefix,
                &peers::debezium_postgres(db_url, "items", prefix, snapshot),
            )),
            Err(why) => {
                println!("Debezium: not run: {why}");
                None
            }
        }
    }
}

fn ratio(label: &str, syncline: f64, peer: Option<f64>) {
    if let Some(peer) = peer {
        println!(
            "  {label}: syncline / Debezium = {:.2}x",
            syncline / peer.max(1e-9)
        );
    }
}

#[tokio::main]
async fn main() {
    let stack = Stack::start();
    // Commits as a production server makes them (the throwaway server's
    // `synchronous_commit=off` would leave a commit unseen by the WAL
    // sender until the WAL writer's next round, up to 200 ms later, for
    // every contender alike).
    let pg = PgServer::start(&["max_wal_size=1GB", "synchronous_commit=on"]);
    let peers = Peers::installed();
    println!(
        "syncline cdc bench: {ROWS} rows, Apache Kafka 4.1.1 (one broker) and Postgres (wal_level=logical, synchronous_commit=on) on loopback; \
         Debezium {}",
        if peers.is_ok() { "3.6.1.Final on Kafka Connect 4.1.1 standalone" } else { "not installed" }
    );
    let dir = TempDir::new("bench-cdc");
    let peer = Peer {
        peers: &peers,
        stack: &stack,
        dir: dir.path().join("connect"),
    };
    let bootstrap = stack.bootstrap();
    let target = PgDb::create("bench_cdc_dst").await;

    // 1. raw producer, records of the size postgres_cdc writes (~110 bytes)
    let elapsed = raw_producer(&bootstrap, ROWS, 110).await;
    println!(
        "raw librdkafka producer                       {}",
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
        "raw pg_logical_slot_get_binary_changes        {}",
        rate(n, start.elapsed(), "changes")
    );
    raw.batch_execute("SELECT pg_drop_replication_slot('bench_raw')")
        .await
        .unwrap();

    // 3. streaming capture: the same changes through each (no snapshot)
    println!("streaming: 100 transactions of 1,000 inserts, commit -> acknowledged in Kafka");
    let cap_url = pg.create_db("capture").await;
    let cap = pg_connect(&cap_url).await;
    cap.batch_execute(TABLE).await.unwrap();
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
        ),
    )
    .unwrap();
    let mut src = SynclineRun::start_with_args(&file, &["--component", "src"]);
    wait_log(&src, "postgres_cdc: streaming").await;
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
    let syncline_stream = start.elapsed();
    println!(
        "  syncline postgres_cdc                       {}  (writes took {:.2}s)",
        rate(ROWS, syncline_stream, "events"),
        commit.as_secs_f64()
    );
    src.kill9();
    let debezium_stream = {
        let url = pg.create_db("capture_dbz").await;
        let db = pg_connect(&url).await;
        db.batch_execute(TABLE).await.unwrap();
        let topic = "dbz.cap.public.items";
        debezium_topic(&bootstrap, topic).await;
        match peer.debezium(&url, "dbz.cap", "no_data") {
            None => None,
            Some(mut connect) => {
                connect.wait_running().await;
                // Debezium starts streaming once its slot exists.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let start = Instant::now();
                for i in 0..100 {
                    db.batch_execute(&fill(1 + i * 1000, 1000)).await.unwrap();
                }
                let commit = start.elapsed();
                timed(|| {
                    let b = bootstrap.clone();
                    async move { topic_records(&b, topic) >= ROWS }
                })
                .await;
                let took = start.elapsed();
                println!(
                    "  Debezium Postgres connector                 {}  (writes took {:.2}s)",
                    rate(ROWS, took, "events"),
                    commit.as_secs_f64()
                );
                connect.assert_not_failed().await;
                connect.stop();
                db.batch_execute(&drop_slot_sql("dbz.cap")).await.unwrap();
                Some(took)
            }
        }
    };
    ratio(
        "streaming events/s",
        per_s(ROWS, syncline_stream),
        debezium_stream.map(|d| per_s(ROWS, d)),
    );

    // 4. snapshot beside raw COPY of the same table
    println!("snapshot of {ROWS} rows -> acknowledged in Kafka");
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
        "  raw COPY ... TO STDOUT                      {}  ({bytes} bytes)",
        rate(ROWS, start.elapsed(), "rows")
    );
    let file = dir.path().join("snap.yaml");
    std::fs::write(
        &file,
        pipeline(
            &stack,
            "bench-snap",
            &snap_url,
            &target.url(),
            "initial",
            "bench.snap",
        ),
    )
    .unwrap();
    let mut src = SynclineRun::start_with_args(&file, &["--component", "src"]);
    let (all, first_to_last) = fill_times(&bootstrap, "bench.snap", ROWS).await;
    println!(
        "  syncline postgres_cdc, start-up included    {}; first to last record {:.0} rows/s",
        rate(ROWS, all, "rows"),
        per_s(ROWS, first_to_last)
    );
    src.kill9();
    let syncline_snap = (all, first_to_last);
    let debezium_snap = match peer.debezium(&snap_url, "dbz.snap", "initial") {
        None => None,
        Some(mut connect) => {
            let (all, first_to_last) = fill_times(&bootstrap, "dbz.snap.public.items", ROWS).await;
            println!(
                "  Debezium, start-up included                 {}; first to last record {:.0} rows/s",
                rate(ROWS, all, "rows"),
                per_s(ROWS, first_to_last)
            );
            connect.assert_not_failed().await;
            connect.stop();
            snap.batch_execute(&drop_slot_sql("dbz.snap"))
                .await
                .unwrap();
            Some((all, first_to_last))
        }
    };
    ratio(
        "snapshot rows/s, start-up included",
        per_s(ROWS, syncline_snap.0),
        debezium_snap.map(|d| per_s(ROWS, d.0)),
    );
    ratio(
        "snapshot rows/s, first to last record",
        per_s(ROWS, syncline_snap.1),
        debezium_snap.map(|d| per_s(ROWS, d.1)),
    );

    // 5. commit -> Kafka latency at a fixed rate, one row per transaction
    println!(
        "commit -> record in Kafka, one row per transaction at {LATENCY_RATE} rows/s for {LATENCY_SECONDS} s"
    );
    let lat_url = pg.create_db("latency_kafka").await;
    pg_connect(&lat_url)
        .await
        .batch_execute(TABLE)
        .await
        .unwrap();
    let file = dir.path().join("latency-kafka.yaml");
    std::fs::write(
        &file,
        pipeline(
            &stack,
            "bench-latk",
            &lat_url,
            &target.url(),
            "never",
            "bench.latk",
        ),
    )
    .unwrap();
    let mut src = SynclineRun::start_with_args(&file, &["--component", "src"]);
    wait_log(&src, "postgres_cdc: streaming").await;
    let decoder = std::sync::Arc::new(
        syncline_core::codec::Decoder::new(&syncline_core::registry::RegistryConfig::new(
            stack.registry_url(),
        ))
        .unwrap(),
    );
    let lats = commit_to_kafka(&bootstrap, "bench.latk", &lat_url, move |key, value| {
        let decoder = decoder.clone();
        Box::pin(async move {
            let d = decoder.decode(Some(&key), Some(&value)).await.ok()?;
            match d.event.key.first()?.1 {
                apache_avro::types::Value::Long(id) => Some(id),
                _ => None,
            }
        })
    })
    .await;
    let syncline_lat = percentiles(lats);
    println!(
        "  syncline postgres_cdc                       p50 {:.1} ms  p99 {:.1} ms",
        syncline_lat.0, syncline_lat.1
    );
    src.kill9();
    let debezium_lat = {
        let url = pg.create_db("latency_dbz").await;
        let db = pg_connect(&url).await;
        db.batch_execute(TABLE).await.unwrap();
        let topic = "dbz.latk.public.items";
        debezium_topic(&bootstrap, topic).await;
        match peer.debezium(&url, "dbz.latk", "no_data") {
            None => None,
            Some(mut connect) => {
                connect.wait_running().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let lats = commit_to_kafka(&bootstrap, topic, &url, debezium_id).await;
                let got = lats.len();
                let p = percentiles(lats);
                println!(
                    "  Debezium Postgres connector                 p50 {:.1} ms  p99 {:.1} ms  ({got} rows seen)",
                    p.0, p.1
                );
                connect.assert_not_failed().await;
                connect.stop();
                db.batch_execute(&drop_slot_sql("dbz.latk")).await.unwrap();
                Some(p)
            }
        }
    };
    if let Some(d) = debezium_lat {
        println!(
            "  commit -> Kafka p50: syncline / Debezium = {:.2}x, p99: {:.2}x (lower is faster)",
            syncline_lat.0 / d.0.max(1e-9),
            syncline_lat.1 / d.1.max(1e-9)
        );
    }

    // 6. end-to-end latency, source commit -> target row, through
    // postgres_cdc -> rules -> postgres sink, every batching setting at its
    // default: at 200 rows/s (one row per transaction), and at the goal's
    // 5,000 rows/s (25 rows per transaction, 200 transactions/s).
    for (rows_per_tx, seconds, goal) in [(1, 15, false), (25, 10, true)] {
        let (p50, p99, n) = end_to_end(&stack, &pg, dir.path(), rows_per_tx, seconds).await;
        let rate = rows_per_tx * 200;
        let verdict = if goal {
            format!(
                "; goal p99 < 250 ms at 5,000 rows/s: {}",
                if p99 < 250.0 { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        };
        println!(
            "end to end commit -> target row, through rules  p50 {p50:.1} ms  p99 {p99:.1} ms  ({n} rows at {rate}/s, {rows_per_tx} per transaction){verdict}",
        );
    }
}

/// A pipeline postgres_cdc -> rules -> postgres sink with default batching.
fn latency_pipeline(stack: &Stack, name: &str, source: &str, target: &str) -> String {
    format!(
        "name: {name}\nkafka: {{ bootstrap_servers: '{}', partitions: 3 }}\nregistry: {{ url: '{}' }}\n\
         sources:\n  src:\n    type: postgres_cdc\n    connection: {source}\n    snapshot: never\n\
         \x20   tables:\n      - {{ table: public.items, topic: {name}.raw }}\n\
         processors:\n  shape:\n    type: rules\n    from: [{name}.raw]\n    to: {name}.shaped\n\
         \x20   steps:\n      - set: {{ name: \"row.name + '!'\" }}\n\
         sinks:\n  dst:\n    type: postgres\n    connection: {target}\n    topics: [{name}.shaped]\n    tables: {{ {name}.shaped: items }}\n",
        stack.bootstrap(),
        stack.registry_url(),
    )
}

/// Commit `rows_per_tx` rows per transaction, 200 transactions a second,
/// for `seconds`, into a captured table; note when each row appears in the
/// target (polled every 2 ms). Latencies from each row's commit: p50, p99
/// (ms) and how many rows were measured.
async fn end_to_end(
    stack: &Stack,
    pg: &PgServer,
    dir: &std::path::Path,
    rows_per_tx: i64,
    seconds: i64,
) -> (f64, f64, usize) {
    let name = format!("lat{rows_per_tx}");
    let url = pg.create_db(&format!("latency_{rows_per_tx}")).await;
    let source = pg_connect(&url).await;
    source.batch_execute(TABLE).await.unwrap();
    let target = PgDb::create(&format!("bench_cdc_lat_{rows_per_tx}")).await;
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, latency_pipeline(stack, &name, &url, &target.url())).unwrap();
    let mut both = SynclineRun::start(&file);
    wait_log(&both, "postgres_cdc: streaming").await;
    let tgt = target.client().await;
    // Let the processor and the sink join their groups before the clock starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let transactions = 200 * seconds;
    let total = transactions * rows_per_tx;
    let writer = tokio::spawn(async move {
        let mut committed = Vec::with_capacity(transactions as usize);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for t in 0..transactions {
            tick.tick().await;
            source
                .batch_execute(&fill(1 + t * rows_per_tx, rows_per_tx))
                .await
                .unwrap();
            committed.push(Instant::now());
        }
        committed
    });
    let mut seen: Vec<Option<Instant>> = vec![None; total as usize + 1];
    let mut count = 0i64;
    let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 120);
    while count < total && Instant::now() < deadline {
        if let Ok(rows) = tgt
            .query("SELECT id FROM items WHERE id > $1 ORDER BY id", &[&count])
            .await
        {
            let now = Instant::now();
            for r in rows {
                let id: i64 = r.get(0);
                if let Some(slot @ None) = seen.get_mut(id as usize) {
                    *slot = Some(now);
                }
            }
            while seen.get(count as usize + 1).is_some_and(Option::is_some) {
                count += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let committed = writer.await.unwrap();
    let lats: Vec<f64> = (1..=total as usize)
        .filter_map(|id| {
            let tx = (id - 1) / rows_per_tx as usize;
            seen[id].map(|s| s.saturating_duration_since(committed[tx]).as_secs_f64() * 1000.0)
        })
        .collect();
    both.kill9();
    let n = lats.len();
    assert_eq!(n as i64, total, "every row reached the target");
    let (p50, p99) = percentiles(lats);
    (p50, p99, n)
}
