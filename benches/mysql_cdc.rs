//! `make bench` (MariaDB change-data-capture): the `mysql_cdc` source beside
//! the raw limits it passes through, in the same run, on the same Apache
//! Kafka broker, the same throwaway MariaDB server (ROW binlog, FULL row
//! image and metadata) and the same rows. Prints figures and ratios;
//! asserts nothing but the counts.
//!
//! - raw producer: plain librdkafka writing records of the size CDC writes;
//! - raw binlog reading: `mysql_async`'s binlog stream from the same
//!   position, every row of every row event decoded, no publishing;
//! - streaming capture: 500 transactions of 1,000 inserts written while the
//!   source was stopped, then the source started: start-up -> every record
//!   acknowledged in Kafka (events/s);
//! - snapshot: the same 500,000 rows read by a new source (consistent
//!   snapshot, chunks of 10,000), beside a plain `SELECT *` of the table
//!   through the same driver.

#[path = "shared/measure.rs"]
mod measure;
#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use measure::{fill_times, per_s, rate, wait_log};
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use std::time::Instant;
use support::my_server::MyServer;
use support::{raw_producer, PgDb, Stack, SynclineRun, TempDir};

const ROWS: i64 = 500_000;
/// Rows per transaction of the streaming run.
const TX_ROWS: i64 = 1_000;

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
         sources:\n  src:\n    type: mysql_cdc\n    connection: {source}\n    snapshot: {snapshot}\n    snapshot_chunk_size: 10000\n\
         \x20   tables:\n      - {{ table: bench.items, topic: {topic} }}\n\
         sinks:\n  dst:\n    type: postgres\n    connection: {target}\n    topics: [{topic}]\n    tables: {{ {topic}: items }}\n",
        stack.bootstrap(),
        stack.registry_url(),
    )
}

#[tokio::main]
async fn main() {
    let stack = Stack::start();
    let server = MyServer::start(
        &[
            "--log-bin=mariadb-bin",
            "--server-id=1",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            "--innodb-flush-log-at-trx-commit=1",
            "--sync-binlog=1",
        ]
        .map(String::from),
    )
    .await;
    let url = server.root_url();
    println!(
        "syncline mysql_cdc bench: {ROWS} rows ({TX_ROWS} a transaction), Apache Kafka 4.1.1 (one broker) and MariaDB (ROW binlog, FULL image and metadata, sync_binlog=1) on loopback"
    );
    let dir = TempDir::new("bench-mysql-cdc");
    let bootstrap = stack.bootstrap();
    let target = PgDb::create("bench_mycdc_dst").await;
    let mut c = mysql_async::Conn::from_url(url.clone()).await.unwrap();
    c.query_drop("CREATE DATABASE bench CHARACTER SET utf8mb4")
        .await
        .unwrap();
    c.query_drop(
        "CREATE TABLE bench.items (id bigint PRIMARY KEY, name varchar(100) NOT NULL, amount decimal(12,2), \
         qty int, at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
    )
    .await
    .unwrap();
    c.query_drop("SET SESSION max_recursive_iterations = 1000000")
        .await
        .unwrap();

    // 1. raw producer, records of the size mysql_cdc writes (~110 bytes)
    let elapsed = raw_producer(&bootstrap, ROWS, 110).await;
    let producer = per_s(ROWS, elapsed);
    println!(
        "raw librdkafka producer                       {}",
        rate(ROWS, elapsed, "records")
    );

    // the source starts at the binlog's end, then stops; the rows are
    // written while it is away
    let file = dir.path().join("stream.yaml");
    std::fs::write(
        &file,
        pipeline(
            &stack,
            "bench-mycdc",
            &url,
            &target.url(),
            "never",
            "bench.my",
        ),
    )
    .unwrap();
    let mut run = SynclineRun::start_with_args(&file, &["--component", "src"]);
    wait_log(&run, "mysql_cdc: streaming").await;
    run.kill9();
    let start_at: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let (start_file, start_pos): (String, u64) =
        (start_at.get(0).unwrap(), start_at.get(1).unwrap());
    for i in 0..ROWS / TX_ROWS {
        c.query_drop(format!(
            "INSERT INTO bench.items (id, name, amount, qty) WITH RECURSIVE g(n) AS (SELECT {} UNION ALL SELECT n + 1 FROM g WHERE n < {}) \
             SELECT n, CONCAT('item number ', n), n / 100, n % 1000 FROM g",
            1 + i * TX_ROWS,
            (i + 1) * TX_ROWS
        ))
        .await
        .unwrap();
    }

    // 2. raw binlog reading from the same position
    let reader = mysql_async::Conn::from_url(url.clone()).await.unwrap();
    let started = Instant::now();
    let mut stream = reader
        .get_binlog_stream(
            mysql_async::BinlogStreamRequest::new(4242)
                .with_filename(start_file.as_bytes())
                .with_pos(start_pos),
        )
        .await
        .unwrap();
    let mut rows = 0i64;
    while rows < ROWS {
        let ev = stream.next().await.unwrap().unwrap();
        if let Ok(Some(EventData::RowsEvent(r))) = ev.read_data() {
            let tme = stream.get_tme(r.table_id()).unwrap();
            for row in r.rows(tme) {
                row.unwrap();
                rows += 1;
            }
        }
    }
    let raw = started.elapsed();
    let raw_rate = per_s(rows, raw);
    println!(
        "raw binlog reading (mysql_async, rows decoded) {}",
        rate(rows, raw, "rows")
    );
    drop(stream);

    // 3. streaming capture: the source started again reads them all
    let run = SynclineRun::start_with_args(&file, &["--component", "src"]);
    let (total, first_to_last) = fill_times(&bootstrap, "bench.my", ROWS).await;
    let stream_rate = per_s(ROWS, first_to_last);
    println!(
        "mysql_cdc streaming (start-up included)       {} (first to last record: {:.0} events/s)",
        rate(ROWS, total, "events"),
        stream_rate
    );
    println!(
        "  syncline (first to last) / raw binlog reading = {:.2}x, / raw producer = {:.2}x",
        stream_rate / raw_rate,
        stream_rate / producer
    );
    drop(run);

    // 4. snapshot of the same rows, beside a plain SELECT through the same driver
    let started = Instant::now();
    let all: Vec<mysql_async::Row> = c.query("SELECT * FROM bench.items").await.unwrap();
    let select = started.elapsed();
    println!(
        "plain SELECT * (mysql_async)                  {}",
        rate(all.len() as i64, select, "rows")
    );
    let file = dir.path().join("snapshot.yaml");
    std::fs::write(
        &file,
        pipeline(
            &stack,
            "bench-mycdc-snap",
            &url,
            &target.url(),
            "initial",
            "bench.mysnap",
        ),
    )
    .unwrap();
    let run = SynclineRun::start_with_args(&file, &["--component", "src"]);
    let (total, first_to_last) = fill_times(&bootstrap, "bench.mysnap", ROWS).await;
    println!(
        "mysql_cdc snapshot                            {} (first to last record: {:.0} rows/s)",
        rate(ROWS, total, "rows"),
        per_s(ROWS, first_to_last)
    );
    println!(
        "  syncline snapshot / plain SELECT = {:.2}x",
        per_s(ROWS, first_to_last) / per_s(all.len() as i64, select)
    );
    drop(run);
}
