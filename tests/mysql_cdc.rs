//! The `mysql_cdc` source end to end, on real parts: a throwaway MariaDB
//! server with the binlog settings it needs (tests/support/my_server.rs),
//! the real broker and `syncline registry`, and the `postgres` sink writing
//! into a database of the machine's Postgres. Targets must equal sources
//! row by row.

mod support;

use mysql_async::prelude::Queryable;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::my_server::MyServer;
use support::{wait_until, PgDb, Rng, Stack, SynclineRun, TempDir};

/// The binlog as mysql_cdc needs it.
fn binlog_options() -> Vec<String> {
    [
        "--log-bin=mariadb-bin",
        "--server-id=1",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A compared table: its name, one text per row in MariaDB and in Postgres
/// (the same text for the same row), and its key as text on both sides.
struct Compared {
    table: &'static str,
    my_row: &'static str,
    pg_row: &'static str,
    my_key: &'static str,
    pg_key: &'static str,
}

const TABLES: &[Compared] = &[
    Compared {
        table: "accounts",
        my_row: "CONCAT_WS('|', id, balance, name, COALESCE(note, '-'), COALESCE(price, '-'), flag + 0, kind, COALESCE(tags, '-'), DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(born, '%Y-%m-%d'))",
        pg_row: "concat_ws('|', id, balance, name, COALESCE(note, '-'), COALESCE(price::text, '-'), CASE WHEN flag THEN 1 ELSE 0 END, kind, COALESCE(tags, '-'), to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS.US'), to_char(born, 'YYYY-MM-DD'))",
        my_key: "CAST(id AS CHAR)",
        pg_key: "id::text",
    },
    Compared {
        table: "orders",
        my_row: "CONCAT_WS('|', id, account_id, amount, status, COALESCE(DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), '-'), HEX(code))",
        pg_row: "concat_ws('|', id, account_id, amount, status, COALESCE(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '-'), upper(encode(code, 'hex')))",
        my_key: "CAST(id AS CHAR)",
        pg_key: "id::text",
    },
    Compared {
        table: "lines",
        my_row: "CONCAT_WS('|', order_id, line, qty, COALESCE(sku, '-'))",
        pg_row: "concat_ws('|', order_id, line, qty, COALESCE(sku, '-'))",
        my_key: "CONCAT(order_id, '/', line)",
        pg_key: "order_id || '/' || line",
    },
    Compared {
        table: "events",
        my_row: "CONCAT_WS('|', event_id, account_id, what)",
        pg_row: "concat_ws('|', event_id, account_id, what)",
        my_key: "CAST(event_id AS CHAR)",
        pg_key: "event_id::text",
    },
];

const SOURCE_DDL: &[&str] = &[
    // utf8mb4, with one latin1 column (older servers' default): the binlog
    // carries its bytes in latin1
    "CREATE DATABASE shop CHARACTER SET utf8mb4",
    "CREATE TABLE shop.accounts (id bigint AUTO_INCREMENT PRIMARY KEY, balance int NOT NULL, name varchar(40) NOT NULL, \
     note text CHARACTER SET latin1, price decimal(12,2), flag bit(1) NOT NULL DEFAULT b'0', kind enum('basic','gold','platinum') NOT NULL DEFAULT 'basic', \
     tags set('a','b','c'), updated_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), born date) ENGINE=InnoDB",
    "CREATE TABLE shop.orders (id bigint PRIMARY KEY, account_id bigint, amount decimal(12,2), status varchar(20), \
     at timestamp(6) NULL, code binary(4)) ENGINE=InnoDB",
    "CREATE TABLE shop.lines (order_id bigint, line int, qty int, sku varchar(30), PRIMARY KEY (order_id, line)) ENGINE=InnoDB",
    // no primary key: the pipeline names the key
    "CREATE TABLE shop.events (event_id bigint NOT NULL, account_id bigint, what varchar(20), UNIQUE KEY (event_id)) ENGINE=InnoDB",
    "CREATE TABLE shop.noise (id bigint AUTO_INCREMENT PRIMARY KEY, payload text) ENGINE=InnoDB",
    "SET SESSION max_recursive_iterations = 100000",
    "INSERT INTO shop.accounts (balance, name, note, price, flag, kind, tags, updated_at, born) \
     WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 30000) \
     SELECT n % 1000, CONCAT('name ', n), IF(n % 5 = 0, NULL, CONCAT('note '' ', n, ' ünï')), n / 7, n % 2, \
            ELT(1 + n % 3, 'basic', 'gold', 'platinum'), IF(n % 4 = 0, NULL, ELT(1 + n % 3, 'a', 'a,c', 'b')), \
            TIMESTAMP '2024-01-01 00:00:00' + INTERVAL n SECOND + INTERVAL n MICROSECOND, DATE '1950-01-01' + INTERVAL n DAY FROM g",
    "INSERT INTO shop.orders WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 15000) \
     SELECT n, n % 30000 + 1, n / 3, 'new', TIMESTAMP '2024-01-01 00:00:00' + INTERVAL n SECOND, UNHEX(LPAD(HEX(n % 256), 2, '0')) FROM g",
    "INSERT INTO shop.lines WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 14999) \
     SELECT n DIV 3 + 1, n % 3, n % 17, CONCAT('sku-', n) FROM g",
    "INSERT INTO shop.events WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000) \
     SELECT n, n % 30000 + 1, 'seed' FROM g",
];

async fn my_conn(url: &str) -> mysql_async::Conn {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    c
}

/// Every row of `t` as text by key, in MariaDB.
async fn my_rows(url: &str, t: &Compared) -> BTreeMap<String, String> {
    let mut c = my_conn(url).await;
    let rows: Vec<(String, String)> = c
        .query(format!(
            "SELECT {}, {} FROM shop.{}",
            t.my_key, t.my_row, t.table
        ))
        .await
        .unwrap();
    let _ = c.disconnect().await;
    rows.into_iter().collect()
}

/// Every row of `t` as text by key, in Postgres (empty when not there yet).
async fn pg_rows(url: &str, t: &Compared) -> BTreeMap<String, String> {
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return BTreeMap::new();
    };
    tokio::spawn(conn);
    let sql = format!("SELECT {}, {} FROM {}", t.pg_key, t.pg_row, t.table);
    client
        .query(&sql, &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// Wait until every table of the target equals the source row by row.
async fn wait_equal(source: &str, target: &str, what: &str, runs: &[&SynclineRun]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let mut differ = Vec::new();
        for t in TABLES {
            let (s, d) = (my_rows(source, t).await, pg_rows(target, t).await);
            if s != d {
                let keys: BTreeSet<&String> = s.keys().chain(d.keys()).collect();
                let diff: Vec<String> = keys
                    .into_iter()
                    .filter(|k| s.get(*k) != d.get(*k))
                    .take(5)
                    .map(|k| {
                        format!(
                            "  {} {k}: source {:?} target {:?}",
                            t.table,
                            s.get(k),
                            d.get(k)
                        )
                    })
                    .collect();
                differ.push(format!(
                    "{}: source {} rows, target {} rows\n{}",
                    t.table,
                    s.len(),
                    d.len(),
                    diff.join("\n")
                ));
            }
        }
        if differ.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            support::panic_with_logs(
                &format!(
                    "{what}: target never equalled source\n{}",
                    differ.join("\n")
                ),
                runs,
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

fn pipeline_yaml(stack: &Stack, name: &str, source: &str, target: &str) -> String {
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 3
registry:
  url: {registry}
sources:
  cdc:
    type: mysql_cdc
    connection: {source}
    snapshot_chunk_size: 1000
    heartbeat_interval_ms: 500
    tables:
      - {{ table: shop.accounts, topic: my.accounts }}
      - {{ table: shop.orders, topic: my.orders }}
      - {{ table: "shop.lines", topic: my.lines }}
      - {{ table: shop.events, topic: my.events, key: [event_id] }}
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [my.accounts, my.orders, my.lines, my.events]
    tables: {{ my.accounts: accounts, my.orders: orders, my.lines: lines, my.events: events }}
    batch_size: 500
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
    )
}

fn pipeline_in(name: &str, yaml: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, yaml).unwrap();
    (dir, file)
}

/// Random transactions on the four tables (inserts, updates, deletes, key
/// changes, several tables in one transaction, uncaptured noise) until
/// `stop`. Returns the number of transactions.
fn workload(url: String, mut rng: Rng, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut c = my_conn(&url).await;
        let mut n = 0u64;
        let mut next_order = 1_000_000i64;
        let mut next_event = 1_000_000i64;
        while !stop.load(Ordering::SeqCst) {
            let a = 1 + rng.below(32_000) as i64;
            let o = 1 + rng.below(16_000) as i64;
            let e = 1 + rng.below(5_500) as i64;
            let statements: Vec<String> = match rng.below(12) {
                0 => vec!["INSERT INTO shop.accounts (balance, name, tags, born) VALUES (1, 'new 1', 'a,b', '2001-02-03'), (2, 'new 2', NULL, NULL), (3, 'new 3', 'c', '1999-12-31')".into()],
                1 | 2 => vec![format!("UPDATE shop.accounts SET balance = balance + 1, note = CONCAT('upd ', balance), price = price + 1, flag = 1 - flag, kind = 'gold', tags = 'b,c', updated_at = NOW(6) WHERE id = {a}")],
                3 => vec![format!("DELETE FROM shop.accounts WHERE id = {a}")],
                4 => {
                    next_order += 1;
                    vec![
                        "START TRANSACTION".into(),
                        format!("INSERT INTO shop.orders VALUES ({next_order}, {a}, 9.99, 'open', NOW(6), X'0102')"),
                        format!("INSERT INTO shop.lines VALUES ({next_order}, 0, 1, 'sku'), ({next_order}, 1, 2, NULL)"),
                        format!("UPDATE shop.accounts SET balance = balance - 1 WHERE id = {a}"),
                        "COMMIT".into(),
                    ]
                }
                5 => vec![format!("UPDATE shop.orders SET status = 'paid', amount = amount * 2, at = NULL WHERE id BETWEEN {o} AND {o} + 5")],
                6 => vec![
                    "START TRANSACTION".into(),
                    format!("DELETE FROM shop.lines WHERE order_id = {o}"),
                    format!("DELETE FROM shop.orders WHERE id = {o}"),
                    "COMMIT".into(),
                ],
                7 => {
                    // a primary-key change
                    next_order += 1;
                    vec![format!("UPDATE shop.orders SET id = {next_order} WHERE id = {o}")]
                }
                8 => vec![format!("UPDATE shop.lines SET qty = qty + 1, sku = NULL WHERE order_id = {o}")],
                9 => {
                    next_event += 1;
                    vec![format!("INSERT INTO shop.events VALUES ({next_event}, {a}, 'signup')")]
                }
                10 => vec![
                    format!("UPDATE shop.events SET what = 'seen' WHERE event_id = {e}"),
                    format!("DELETE FROM shop.events WHERE event_id = {}", e + 1),
                ],
                _ => vec!["INSERT INTO shop.noise (payload) VALUES (REPEAT('x', 100))".into()],
            };
            let mut failed = false;
            for s in &statements {
                if c.query_drop(s).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed {
                let _ = c.query_drop("ROLLBACK").await;
            }
            n += 1;
            if n.is_multiple_of(20) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        n
    })
}

/// `syncline snapshot FILE --source cdc --from-scratch` (with the source
/// stopped), which must succeed: its output.
fn from_scratch(file: &std::path::Path) -> String {
    let (code, out, err) = support::syncline_cli(
        &[
            "snapshot",
            file.to_str().unwrap(),
            "--source",
            "cdc",
            "--from-scratch",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    out
}

/// Wait until `run`'s log contains `pattern` at least `n` times; on timeout,
/// fail with the log's end.
async fn wait_log(run: &SynclineRun, pattern: &str, n: usize, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while run.log().matches(pattern).count() < n {
        if std::time::Instant::now() > deadline || run.log().contains("pipeline stopped") {
            let log = run.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "timed out after {secs}s waiting for `{pattern}` in the log; its end (newest first):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run_component(file: &std::path::Path, component: &str) -> SynclineRun {
    SynclineRun::start_with_args(file, &["--component", component])
}

async fn source_with_data(name: &str) -> (MyServer, String) {
    let server = MyServer::start(&binlog_options()).await;
    let url = server.root_url();
    let mut c = mysql_async::Conn::from_url(url.clone()).await.unwrap();
    for s in SOURCE_DDL {
        c.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let _ = c.disconnect().await;
    eprintln!("{name}: MariaDB on {url}");
    (server, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_binlog_under_concurrent_writes_survive_kill9_and_converge() {
    let stack = Stack::start();
    let (_server, source) = source_with_data("mysql-cdc-e2e").await;
    let target = PgDb::create("mycdc_dst").await;
    let (_dir, file) = pipeline_in(
        "mysql-cdc-e2e",
        &pipeline_yaml(&stack, "mysql-cdc-e2e", &source, &target.url()),
    );
    let mut rng = Rng::from_time();
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(source.clone(), rng.clone(), stop.clone());
    let mut source_run = run_component(&file, "cdc");
    wait_log(&source_run, "mysql_cdc: snapshot started", 1, 120).await;
    let sink_run = run_component(&file, "warehouse");

    // kill -9 during the snapshot, at random points
    let mut snapshot_kills = 0;
    for _ in 0..3 {
        let seen = source_run
            .log()
            .matches("mysql_cdc: snapshot started")
            .count();
        wait_until(Duration::from_secs(120), "a snapshot (re)start", || {
            let log = source_run.log();
            async move {
                log.matches("mysql_cdc: snapshot started").count() >= seen.max(1)
                    || log.contains("mysql_cdc: snapshot finished")
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        if !source_run.log().contains("mysql_cdc: snapshot finished") {
            snapshot_kills += 1;
        }
        source_run.restart();
    }
    assert!(snapshot_kills >= 1, "no kill landed during the snapshot");
    wait_log(&source_run, "mysql_cdc: snapshot finished", 1, 300).await;
    // kill -9 while streaming, at random points
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2000))).await;
        source_run.restart();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let txs = load.await.unwrap();
    eprintln!("workload: {txs} transactions; {snapshot_kills} kills during the snapshot, 3 while streaming");
    wait_equal(
        &source,
        &target.url(),
        "after kill -9 during snapshot and streaming",
        &[&source_run, &sink_run],
    )
    .await;
    let log = source_run.log();
    assert!(
        !log.contains("dead-letter"),
        "no change should have been dead-lettered:\n{}",
        log.lines()
            .filter(|l| l.contains("dead-letter"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A pipeline capturing `shop.items` only, to `my.items` -> table `items`.
fn items_pipeline(stack: &Stack, name: &str, source: &str, target: &str) -> String {
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 2
registry:
  url: {registry}
sources:
  cdc:
    type: mysql_cdc
    connection: {source}
    heartbeat_interval_ms: 500
    tables:
      - {{ table: shop.items, topic: my.items }}
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [my.items]
    tables: {{ my.items: items }}
    batch_size: 100
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
    )
}

/// A broker and registry, a MariaDB server started with `options` on which
/// `statements` ran, a target database, and an `items` pipeline file.
struct Items {
    stack: Stack,
    _server: MyServer,
    source: String,
    target: PgDb,
    _dir: TempDir,
    file: std::path::PathBuf,
}

async fn items_setup(name: &str, options: &[String], statements: &[&str]) -> Items {
    let stack = Stack::start();
    let server = MyServer::start(options).await;
    let source = server.root_url();
    exec_all(&source, statements).await;
    let target = PgDb::create(&name.replace('-', "_")).await;
    let (dir, file) = pipeline_in(name, &items_pipeline(&stack, name, &source, &target.url()));
    Items {
        stack,
        _server: server,
        source,
        target,
        _dir: dir,
        file,
    }
}

async fn exec_all(url: &str, statements: &[&str]) {
    let mut c = my_conn(url).await;
    for s in statements {
        c.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let _ = c.disconnect().await;
}

/// `items` rows as `id|<cols>` in MariaDB and in Postgres, until equal.
async fn wait_items_equal(source: &str, target: &str, cols: &[&str], runs: &[&SynclineRun]) {
    let my = format!(
        "CONCAT_WS('|', {})",
        cols.iter()
            .map(|c| format!("COALESCE({c}, '-')"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pg = format!(
        "concat_ws('|', {})",
        cols.iter()
            .map(|c| format!("COALESCE({c}::text, '-')"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let t = Compared {
        table: "items",
        my_row: Box::leak(my.into_boxed_str()),
        pg_row: Box::leak(pg.into_boxed_str()),
        my_key: "CAST(id AS CHAR)",
        pg_key: "id::text",
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (s, d) = (my_rows(source, &t).await, pg_rows(target, &t).await);
        if s == d && !s.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            support::panic_with_logs(
                &format!("items never equal on {cols:?}:\nsource {s:?}\ntarget {d:?}"),
                runs,
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn registry_versions(registry: &str, subject: &str) -> Vec<i64> {
    reqwest::get(format!("{registry}/subjects/{subject}/versions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_while_streaming_adds_drops_and_widens_columns_as_new_schema_versions() {
    let Items {
        stack,
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-ddl",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int, label varchar(10))",
            "INSERT INTO shop.items VALUES (1, 10, 'one'), (2, 20, 'two')",
        ],
    )
    .await;
    let run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    exec_all(source, &["INSERT INTO shop.items VALUES (3, 30, 'three')"]).await;
    wait_items_equal(source, &target.url(), &["id", "qty", "label"], &[&run]).await;
    let subject = "my.items-value";
    let v1 = registry_versions(&stack.registry_url(), subject)
        .await
        .len();

    // add a column, widen one past what its old type holds, drop one:
    // each a new schema version, the target following
    let steps: [(&str, &[&str], &[&str]); 3] = [
        (
            "adding a column",
            &[
                "ALTER TABLE shop.items ADD COLUMN color varchar(20)",
                "INSERT INTO shop.items VALUES (4, 40, 'four', 'red')",
                "UPDATE shop.items SET color = 'blue' WHERE id = 1",
            ],
            &["id", "qty", "label", "color"],
        ),
        (
            "widening a column",
            &[
                "ALTER TABLE shop.items MODIFY qty bigint",
                "UPDATE shop.items SET qty = 5000000000 WHERE id = 2",
            ],
            &["id", "qty", "label", "color"],
        ),
        (
            "dropping a column",
            &[
                "ALTER TABLE shop.items DROP COLUMN label",
                "INSERT INTO shop.items VALUES (5, 50, 'green')",
                "DELETE FROM shop.items WHERE id = 3",
            ],
            &["id", "qty", "color"],
        ),
    ];
    let mut versions = v1;
    for (what, statements, cols) in steps {
        exec_all(source, statements).await;
        wait_items_equal(source, &target.url(), cols, &[&run]).await;
        let now = registry_versions(&stack.registry_url(), subject)
            .await
            .len();
        assert!(
            now > versions,
            "{what} registers a new version ({versions} -> {now})"
        );
        versions = now;
    }
    // kill -9, then a replay of events from before every DDL
    let mut run = run;
    run.restart();
    exec_all(source, &["UPDATE shop.items SET qty = qty + 1"]).await;
    wait_items_equal(source, &target.url(), &["id", "qty", "color"], &[&run]).await;
    assert!(
        !run.log().contains("dead-letter topic") && !run.log().contains("component stopped"),
        "{}",
        run.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purged_binlog_position_stops_the_source_saying_how_to_recover_and_from_scratch_recovers()
{
    let Items {
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-purged",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int)",
            "INSERT INTO shop.items VALUES (1, 10), (2, 20)",
        ],
    )
    .await;
    let mut run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run]).await;
    run.kill9();
    // changes the stopped source never read, then their binlog is purged
    exec_all(
        source,
        &[
            "INSERT INTO shop.items VALUES (3, 30)",
            "UPDATE shop.items SET qty = 11 WHERE id = 1",
            "FLUSH BINARY LOGS",
            "FLUSH BINARY LOGS",
        ],
    )
    .await;
    let mut c = my_conn(source).await;
    // the server keeps a file a replica's dump thread still reads: wait
    // until it has noticed the killed source's connection is gone
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let dumps: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            .await
            .unwrap();
        if dumps == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dump thread stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let current: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let current: String = current.get(0).unwrap();
    // (a file stays until InnoDB has written its checkpoint: try again)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        c.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
            .await
            .unwrap();
        let files: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.unwrap();
        let files: Vec<String> = files.iter().map(|r| r.get(0).unwrap()).collect();
        if files == vec![current.clone()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the purge left {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = c.disconnect().await;

    let mut stopped = SynclineRun::start(file);
    wait_log(&stopped, "no longer holds", 1, 60).await;
    let log = stopped.log();
    assert!(
        log.contains("--from-scratch") && log.contains("mariadb-bin.000001"),
        "the error names the position and the way out:\n{log}"
    );
    stopped.kill9();
    let out = from_scratch(file);
    assert!(out.contains("forgot its binlog position"), "{out}");
    let again = SynclineRun::start(file);
    wait_log(&again, "mysql_cdc: snapshot finished", 1, 120).await;
    exec_all(source, &["INSERT INTO shop.items VALUES (4, 40)"]).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&again]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resnapshot_asked_for_while_streaming_repairs_a_damaged_target_and_survives_kill9() {
    let stack = Stack::start();
    let (_server, source) = source_with_data("mysql-cdc-resnapshot").await;
    let target = PgDb::create("mycdc_resnap").await;
    let (_dir, file) = pipeline_in(
        "mysql-cdc-resnapshot",
        &pipeline_yaml(&stack, "mysql-cdc-resnapshot", &source, &target.url()),
    );
    let mut run = SynclineRun::start(&file);
    wait_log(&run, "mysql_cdc: streaming", 1, 180).await;
    wait_equal(&source, &target.url(), "after the first snapshot", &[&run]).await;
    // the target is damaged behind syncline's back
    let pg = support::pg_connect(&target.url()).await;
    pg.batch_execute(
        "DELETE FROM accounts WHERE id % 10 = 0; UPDATE accounts SET name = 'damaged' WHERE id % 7 = 0",
    )
    .await
    .unwrap();
    let bad = std::process::Command::new(support::syncline_bin())
        .args(["snapshot"])
        .arg(&file)
        .args(["--source", "cdc", "--table", "shop.nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("`shop.nope` is not a table captured") && err.contains("shop.accounts"),
        "{err}"
    );
    let rng = Rng::from_time();
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(source.clone(), rng, stop.clone());
    let out = std::process::Command::new(support::syncline_bin())
        .args(["snapshot"])
        .arg(&file)
        .args(["--source", "cdc", "--table", "shop.acc*"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-snapshot of shop.accounts requested"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_log(&run, "mysql_cdc: streaming paused for a re-snapshot", 1, 60).await;
    // kill -9 during the re-snapshot: the restarted source finishes it
    wait_log(&run, "mysql_cdc: snapshot started", 2, 60).await;
    run.restart();
    wait_log(&run, "mysql_cdc: snapshot finished", 2, 180).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    wait_equal(&source, &target.url(), "after the re-snapshot", &[&run]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_settings_and_unreadable_columns_are_refused_and_a_bad_value_is_dead_lettered() {
    let mut opts = binlog_options();
    opts.retain(|o| !o.starts_with("--binlog-format"));
    opts.push("--binlog-format=STATEMENT".into());
    let Items {
        stack,
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-bad",
        &opts,
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int, took time)",
        ],
    )
    .await;
    let mut run = SynclineRun::start(file);
    wait_log(&run, "component stopped", 1, 60).await;
    assert!(
        run.log().contains(
            "binlog_format = STATEMENT; mysql_cdc needs ROW: SET GLOBAL binlog_format = 'ROW'"
        ),
        "{}",
        run.log()
    );
    run.kill9();
    exec_all(
        source,
        &[
            "SET GLOBAL binlog_format = 'ROW'",
            "CREATE TABLE shop.odd (id int PRIMARY KEY, v varchar(10) CHARACTER SET sjis)",
        ],
    )
    .await;
    let odd = items_pipeline(stack, "mysql-cdc-bad2", source, &target.url())
        .replace("table: shop.items", "table: shop.odd");
    let (_dir2, odd_file) = pipeline_in("mysql-cdc-bad2", &odd);
    let mut odd_run = SynclineRun::start(&odd_file);
    wait_log(&odd_run, "component stopped", 1, 60).await;
    assert!(
        odd_run
            .log()
            .contains("column `v` of `shop.odd` is in character set `sjis`"),
        "{}",
        odd_run.log()
    );
    odd_run.kill9();

    // a TIME beyond 24 hours has no Avro time: dead-lettered with the reason, the rest lands
    let run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    exec_all(
        source,
        &[
            "INSERT INTO shop.items VALUES (1, 1, '01:02:03')",
            "INSERT INTO shop.items VALUES (2, 2, '30:00:00')",
            "INSERT INTO shop.items VALUES (3, 3, '23:59:59')",
        ],
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "rows 1 and 3 at the target",
        || {
            let url = target.url();
            async move {
                let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return false;
                };
                tokio::spawn(conn);
                c.query_one("SELECT count(*) FROM items WHERE id IN (1, 3)", &[])
                    .await
                    .map(|r| r.get::<_, i64>(0) == 2)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    let dead = support::records(&stack.bootstrap(), "mysql-cdc-bad.cdc.dead", 1);
    let reason = support::header(&dead[0], "syncline.reason");
    assert!(
        reason.contains("column `took` of `shop.items`") && reason.contains("30:00:00"),
        "{reason}"
    );
    let pg = support::pg_connect(&target.url()).await;
    let n: i64 = pg
        .query_one("SELECT count(*) FROM items WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the row with the bad value is not at the target");
}

/// The source's stored binlog position (file, offset), if any.
fn stored_position(bootstrap: &str, pipeline: &str) -> Option<(String, u64)> {
    let kafka = syncline_core::kafka::KafkaConfig::new(bootstrap);
    let key = format!("{pipeline}/cdc/binlog/position");
    let mut latest = None;
    syncline_core::kafka::read_topic_to_end(&kafka, "_syncline_cursors", |_, _, k, v| {
        if k == Some(key.as_bytes()) {
            latest = v.map(|v| serde_json::from_slice::<serde_json::Value>(v).unwrap());
        }
    })
    .unwrap();
    let v = latest?;
    Some((v["file"].as_str()?.to_string(), v["pos"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_captured_table_on_a_busy_server_keeps_the_stored_position_moving() {
    let Items {
        stack,
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-idle",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int)",
            "CREATE TABLE shop.noise (id int AUTO_INCREMENT PRIMARY KEY, payload text)",
            "INSERT INTO shop.items VALUES (1, 1)",
        ],
    )
    .await;
    let mut run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    let started = stored_position(&stack.bootstrap(), "mysql-cdc-idle").expect("a stored position");
    // only the uncaptured table changes, across a binlog rotation
    let mut c = my_conn(source).await;
    for i in 0..500 {
        c.query_drop("INSERT INTO shop.noise (payload) VALUES (REPEAT('x', 200))")
            .await
            .unwrap();
        if i == 250 {
            c.query_drop("FLUSH BINARY LOGS").await.unwrap();
        }
    }
    let end: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let end: (String, u64) = (end.get(0).unwrap(), end.get(1).unwrap());
    let _ = c.disconnect().await;
    let bootstrap = stack.bootstrap();
    wait_until(
        Duration::from_secs(60),
        "the stored position to reach the binlog's end",
        || {
            let at = stored_position(&bootstrap, "mysql-cdc-idle");
            let end = end.clone();
            async move { at.is_some_and(|a| a == end) }
        },
    )
    .await;
    assert_ne!(started, end);
    // a restart resumes there, with nothing republished
    let before = support::topic_records(&stack.bootstrap(), "my.items");
    run.restart();
    wait_log(&run, "mysql_cdc: streaming", 2, 120).await;
    assert!(
        run.log().contains(&format!("from={}:{}", end.0, end.1)),
        "{}",
        run.log()
    );
    exec_all(source, &["INSERT INTO shop.items VALUES (2, 2)"]).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run]).await;
    assert_eq!(
        support::topic_records(&stack.bootstrap(), "my.items"),
        before + 1,
        "only the new row was published after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_gone_silent_behind_an_open_connection_is_left_and_reconnected() {
    let Items {
        _server: server,
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-silent",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int)",
            "INSERT INTO shop.items VALUES (1, 1)",
        ],
    )
    .await;
    let run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run]).await;
    // the server answers nothing, not even heartbeats, but its end of the
    // connection stays open: only the idle timeout (3 x 500 ms + 5 s) notices
    server.freeze(true);
    let silent = std::time::Instant::now();
    wait_log(&run, "sent nothing for", 1, 60).await;
    // (counted from the last heartbeat, at most 500 ms before the freeze)
    assert!(
        silent.elapsed() >= Duration::from_secs(6),
        "left after {:?}, before the idle timeout",
        silent.elapsed()
    );
    server.freeze(false);
    wait_log(&run, "mysql_cdc: streaming", 2, 120).await;
    exec_all(source, &["INSERT INTO shop.items VALUES (2, 2)"]).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run]).await;
}

/// Wait until the stored binlog position is past every transaction in the
/// binlog: in its last file, with nothing after it but the
/// `Binlog_checkpoint` events MariaDB writes on its own a while after a
/// rotation.
async fn wait_stored_at_binlog_end(stack: &Stack, source: &str, pipeline: &str, what: &str) {
    let bootstrap = stack.bootstrap();
    wait_until(Duration::from_secs(60), what, || {
        let at = stored_position(&bootstrap, pipeline);
        async move {
            let Some((file, pos)) = at else { return false };
            let mut c = my_conn(source).await;
            let last: mysql_async::Row =
                c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
            let last: String = last.get(0).unwrap();
            let after: Vec<mysql_async::Row> = c
                .query(format!("SHOW BINLOG EVENTS IN '{file}' FROM {pos}"))
                .await
                .unwrap_or_default();
            let _ = c.disconnect().await;
            file == last
                && after
                    .iter()
                    .all(|e| e.get::<String, _>(2).as_deref() == Some("Binlog_checkpoint"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_ended_by_xa_prepare_xa_commit_or_rollback_move_the_stored_position_past_them() {
    let Items {
        stack,
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-groups",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int)",
            "CREATE TABLE shop.log (id int) ENGINE=MyISAM",
            "INSERT INTO shop.items VALUES (1, 1)",
        ],
    )
    .await;
    // the sink on its own, so that restarting the source leaves it alone
    let mut run = run_component(file, "cdc");
    let sink = run_component(file, "warehouse");
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run, &sink]).await;
    // an XA transaction: its rows are a group ended by XA PREPARE (event
    // 38), its XA COMMIT a group of its own with no COMMIT or XID
    exec_all(
        source,
        &[
            "XA START 'a'",
            "INSERT INTO shop.items VALUES (2, 2)",
            "XA END 'a'",
            "XA PREPARE 'a'",
            "XA COMMIT 'a'",
        ],
    )
    .await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run, &sink]).await;
    wait_stored_at_binlog_end(
        stack,
        source,
        "mysql-cdc-groups",
        "the position past XA COMMIT",
    )
    .await;
    // a group ended by ROLLBACK: a non-transactional write kept, written
    // in statement format
    exec_all(
        source,
        &[
            "SET SESSION binlog_format = 'STATEMENT'",
            "START TRANSACTION",
            "INSERT INTO shop.items VALUES (3, 3)",
            "INSERT INTO shop.log VALUES (1)",
            "ROLLBACK",
        ],
    )
    .await;
    wait_stored_at_binlog_end(
        stack,
        source,
        "mysql-cdc-groups",
        "the position past ROLLBACK",
    )
    .await;
    // a restart resumes there: nothing is published again
    let before = support::topic_records(&stack.bootstrap(), "my.items");
    run.restart();
    wait_log(&run, "mysql_cdc: streaming", 2, 120).await;
    exec_all(source, &["INSERT INTO shop.items VALUES (4, 4)"]).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run, &sink]).await;
    assert_eq!(
        support::topic_records(&stack.bootstrap(), "my.items"),
        before + 1,
        "only the new row was published after the restart"
    );
}

/// Store `position` (JSON) as the source's binlog position, as if it had
/// stored it.
async fn store_position(bootstrap: &str, pipeline: &str, position: serde_json::Value) {
    let kafka = syncline_core::kafka::KafkaConfig::new(bootstrap);
    let producer = kafka.producer().unwrap();
    syncline_sources::state::JsonState::<serde_json::Value>::new(
        kafka,
        format!("{pipeline}/cdc/binlog/"),
        "binlog position",
    )
    .store(&producer, "position", Some(&position))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_position_inside_an_event_is_reported_as_the_server_says_not_as_purged() {
    let Items {
        stack,
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-badpos",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int)",
            "INSERT INTO shop.items VALUES (1, 1)",
        ],
    )
    .await;
    let mut run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    exec_all(source, &["INSERT INTO shop.items VALUES (2, 2)"]).await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run]).await;
    wait_stored_at_binlog_end(stack, source, "mysql-cdc-badpos", "the position stored").await;
    run.kill9();
    // a position 10 bytes into the next transaction's first event, in a
    // file the server still has (the server's words for it depend on the
    // bytes found there)
    exec_all(source, &["INSERT INTO shop.items VALUES (3, 3)"]).await;
    let (file_name, pos) = stored_position(&stack.bootstrap(), "mysql-cdc-badpos").unwrap();
    store_position(
        &stack.bootstrap(),
        "mysql-cdc-badpos",
        serde_json::json!({ "file": file_name, "pos": pos + 10 }),
    )
    .await;
    let stopped = SynclineRun::start(file);
    wait_log(&stopped, "component stopped", 1, 60).await;
    let log = stopped.log();
    assert!(
        log.contains("the server says:")
            && log.contains("not where an event starts")
            && log.contains("--from-scratch"),
        "the server's reason and the way out:\n{log}"
    );
    assert!(
        !log.contains("no longer holds"),
        "a file the server has is not purged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_that_keeps_names_and_types_is_noticed_charset_unsigned_and_enum_labels() {
    let Items {
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-ddl-meta",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int, label varchar(20) CHARACTER SET latin1, kind enum('a','b'))",
            "INSERT INTO shop.items VALUES (1, 1, 'é', 'a')",
        ],
    )
    .await;
    let cols = ["id", "qty", "label", "kind"];
    let run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    exec_all(source, &["INSERT INTO shop.items VALUES (2, 2, 'ü', 'b')"]).await;
    wait_items_equal(source, &target.url(), &cols, &[&run]).await;
    // each keeps the columns' names and binlog types: only the TABLE_MAP's
    // metadata tells the stream the table changed
    let steps: [(&str, &[&str]); 3] = [
        (
            "a character-set conversion",
            &[
                "ALTER TABLE shop.items CONVERT TO CHARACTER SET utf8mb4",
                "INSERT INTO shop.items VALUES (3, 3, 'ü€✓ 日本', 'a')",
            ],
        ),
        (
            "a switch to unsigned",
            &[
                "ALTER TABLE shop.items MODIFY qty int unsigned",
                "INSERT INTO shop.items VALUES (4, 4000000000, 'big', 'b')",
            ],
        ),
        (
            "new enum labels",
            &[
                "ALTER TABLE shop.items MODIFY kind enum('a','b','c')",
                "INSERT INTO shop.items VALUES (5, 5, 'new label', 'c')",
                "UPDATE shop.items SET kind = 'c' WHERE id = 1",
            ],
        ),
    ];
    for (what, statements) in steps {
        exec_all(source, statements).await;
        eprintln!("after {what}");
        wait_items_equal(source, &target.url(), &cols, &[&run]).await;
    }
    assert!(
        !run.log().contains("dead-letter topic") && !run.log().contains("component stopped"),
        "{}",
        run.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn year_zero_an_old_format_timestamp_and_json_are_equal_from_snapshot_and_stream() {
    let Items {
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-values",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            // a timestamp in the old format (binlog type 7, as older servers wrote it)
            "SET GLOBAL mysql56_temporal_format = OFF",
            "CREATE TABLE shop.items (id int PRIMARY KEY, y year, ts timestamp NULL, j json)",
            "SET GLOBAL mysql56_temporal_format = ON",
            "INSERT INTO shop.items VALUES (1, 0000, '2024-01-02 03:04:05', '{\"b\": [1, 2.5], \"a\": \"x\"}'), \
             (2, 1901, '1970-01-01 00:00:01', NULL), (3, 2155, NULL, '[]')",
        ],
    )
    .await;
    let mut c = my_conn(source).await;
    let ts_type: String = c
        .query_first("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_NAME = 'items' AND COLUMN_NAME = 'ts'")
        .await
        .unwrap()
        .unwrap();
    let _ = c.disconnect().await;
    assert!(ts_type.contains("mariadb-5.3"), "{ts_type}");
    let run = SynclineRun::start(file);
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    // the same values again, streamed
    exec_all(
        source,
        &["INSERT INTO shop.items SELECT id + 100, y, ts, j FROM shop.items"],
    )
    .await;
    let pg = support::pg_connect(&target.url()).await;
    wait_until(Duration::from_secs(60), "six rows at the target", || {
        let pg = &pg;
        async move {
            pg.query_one("SELECT count(*) FROM items", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 6)
        }
    })
    .await;
    let rows: BTreeMap<i32, String> = pg
        .query(
            "SELECT id, concat_ws('|', y, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), j) FROM items",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for k in 1..=3 {
        assert_eq!(
            rows.get(&k),
            rows.get(&(k + 100)),
            "row {k} from the snapshot and {} from the stream",
            k + 100
        );
    }
    assert_eq!(
        rows[&1], "0|2024-01-02 03:04:05|{\"b\": [1, 2.5], \"a\": \"x\"}",
        "year 0000 is 0; MariaDB's JSON is its text, unchanged"
    );
    assert_eq!(rows[&2], "1901|1970-01-01 00:00:01");
    assert!(!run.log().contains("dead-letter topic"), "{}", run.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_chunks_of_enum_set_bit_float_decimal_and_bigint_keys_skip_and_repeat_nothing() {
    let stack = Stack::start();
    let server = MyServer::start(&binlog_options()).await;
    let source = server.root_url();
    // each key sorts in an order its text does not: an enum by its labels'
    // order, a set by its bit mask, a float is no double, decimals and
    // bigints past 2^53 lose digits as doubles
    let tables: [(&str, &str, &str); 6] = [
        (
            "k_enum",
            "k enum('zeta','alpha','mid','beta','omega') PRIMARY KEY",
            "('zeta', 1), ('alpha', 2), ('mid', 3), ('beta', 4), ('omega', 5)",
        ),
        (
            "k_set",
            "k set('c','a','b') PRIMARY KEY",
            "('c', 1), ('a', 2), ('c,a', 3), ('b', 4), ('c,b', 5), ('a,b', 6), ('c,a,b', 7)",
        ),
        (
            "k_bit",
            "k bit(12) PRIMARY KEY",
            "(b'1', 1), (b'10', 2), (b'11111111', 3), (b'100000000', 4), (b'111111111111', 5)",
        ),
        (
            "k_float",
            "k float, n int, PRIMARY KEY (k, n)",
            "(0.1, 1, 1), (0.1, 2, 2), (0.1, 3, 3), (0.2, 1, 4), (0.3, 1, 5), (0.3, 2, 6), (1e20, 1, 7)",
        ),
        (
            "k_dec",
            "k decimal(65,30) PRIMARY KEY",
            "(1.000000000000000000000000000001, 1), (1.000000000000000000000000000002, 2), \
             (1.000000000000000000000000000003, 3), (1.000000000000000000000000000004, 4), (2, 5)",
        ),
        (
            "k_big",
            "k bigint PRIMARY KEY",
            "(9007199254740992, 1), (9007199254740993, 2), (9007199254740994, 3), (9007199254740995, 4), \
             (9223372036854775807, 5)",
        ),
    ];
    let mut statements = vec!["CREATE DATABASE shop CHARACTER SET utf8mb4".to_string()];
    for (name, key, rows) in &tables {
        let cols = if *name == "k_float" {
            "(k, n, v)"
        } else {
            "(k, v)"
        };
        statements.push(format!("CREATE TABLE shop.{name} ({key}, v int NOT NULL)"));
        statements.push(format!("INSERT INTO shop.{name} {cols} VALUES {rows}"));
    }
    exec_all(
        &source,
        &statements.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let target = PgDb::create("mycdc_keys").await;
    let entries: String = tables
        .iter()
        .map(|(n, ..)| format!("      - {{ table: shop.{n}, topic: my.{n} }}\n"))
        .collect();
    let topics: Vec<String> = tables.iter().map(|(n, ..)| format!("my.{n}")).collect();
    let mapping: Vec<String> = tables
        .iter()
        .map(|(n, ..)| format!("my.{n}: {n}"))
        .collect();
    let yaml = format!(
        r#"name: mysql-cdc-keys
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 2
registry:
  url: {registry}
sources:
  cdc:
    type: mysql_cdc
    connection: {source}
    snapshot_chunk_size: 2
    tables:
{entries}sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [{topics}]
    tables: {{ {mapping} }}
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        target = target.url(),
        topics = topics.join(", "),
        mapping = mapping.join(", "),
    );
    let (_dir, file) = pipeline_in("mysql-cdc-keys", &yaml);
    let run = SynclineRun::start(&file);
    wait_log(&run, "mysql_cdc: snapshot finished", 1, 120).await;
    let pg = support::pg_connect(&target.url()).await;
    for (name, _, rows) in &tables {
        let n = rows.matches('(').count();
        // every row once: no chunk skipped a row, none read one twice
        assert_eq!(
            support::topic_records(&stack.bootstrap(), &format!("my.{name}")),
            n as i64,
            "records of {name}"
        );
        let expected: Vec<i32> = (1..=n as i32).collect();
        wait_until(
            Duration::from_secs(60),
            &format!("{name} at the target"),
            || {
                let pg = &pg;
                let expected = expected.clone();
                async move {
                    pg.query(&format!("SELECT v FROM {name} ORDER BY v"), &[])
                        .await
                        .is_ok_and(|r| {
                            r.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>() == expected
                        })
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_reset_master_and_from_scratch_new_changes_win_over_the_old_lineage() {
    let Items {
        stack,
        source,
        target,
        file,
        ..
    } = &items_setup(
        "mysql-cdc-epoch",
        &binlog_options(),
        &[
            "CREATE DATABASE shop CHARACTER SET utf8mb4",
            "CREATE TABLE shop.items (id int PRIMARY KEY, qty int)",
            "INSERT INTO shop.items VALUES (1, 1), (2, 2), (3, 3)",
        ],
    )
    .await;
    // the sink on its own, so that restarting the source leaves it alone
    let mut run = run_component(file, "cdc");
    let sink = run_component(file, "warehouse");
    wait_log(&run, "mysql_cdc: streaming", 1, 120).await;
    // the target's rows hold positions in binlog file 4
    exec_all(
        source,
        &[
            "FLUSH BINARY LOGS",
            "FLUSH BINARY LOGS",
            "FLUSH BINARY LOGS",
            "UPDATE shop.items SET qty = qty + 10",
        ],
    )
    .await;
    wait_items_equal(source, &target.url(), &["id", "qty"], &[&run, &sink]).await;
    wait_stored_at_binlog_end(stack, source, "mysql-cdc-epoch", "the position in file 4").await;
    run.kill9();
    // the binlog starts again at file 1, with changes the source never saw
    exec_all(
        source,
        &[
            "RESET MASTER",
            "UPDATE shop.items SET qty = qty + 100 WHERE id = 1",
            "DELETE FROM shop.items WHERE id = 2",
            "INSERT INTO shop.items VALUES (4, 4)",
        ],
    )
    .await;
    let mut stopped = run_component(file, "cdc");
    wait_log(&stopped, "no longer holds", 1, 60).await;
    stopped.kill9();
    from_scratch(file);
    let again = run_component(file, "cdc");
    wait_log(&again, "mysql_cdc: streaming", 1, 120).await;
    // the snapshot's rows and the changes after it (positions in file 1)
    // land over rows that hold positions in file 4; the row deleted while
    // the source was away stays (the snapshot does not see it)
    exec_all(
        source,
        &[
            "UPDATE shop.items SET qty = qty + 1000 WHERE id = 3",
            "INSERT INTO shop.items VALUES (5, 5)",
        ],
    )
    .await;
    let pg = support::pg_connect(&target.url()).await;
    let want: Vec<(i32, i32)> = vec![(1, 111), (2, 12), (3, 1013), (4, 4), (5, 5)];
    wait_until(
        Duration::from_secs(120),
        "the new lineage at the target",
        || {
            let pg = &pg;
            let want = want.clone();
            async move {
                pg.query("SELECT id, qty FROM items ORDER BY id", &[])
                    .await
                    .is_ok_and(|r| {
                        r.iter()
                            .map(|r| (r.get(0), r.get(1)))
                            .collect::<Vec<(i32, i32)>>()
                            == want
                    })
            }
        },
    )
    .await;
    assert!(
        again.log().contains("a new epoch of positions"),
        "{}",
        again.log()
    );
}
