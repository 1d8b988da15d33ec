//! The `postgres_cdc` source end to end, on real parts: a throwaway Postgres
//! server with `wal_level = logical` (tests/support/pg_server.rs), the real
//! broker and `syncline registry`, and the `postgres` sink writing into a
//! database of the machine's Postgres. Targets must equal sources row by row.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::pg_server::PgServer;
use support::{pg_connect, wait_until, PgDb, Rng, Stack, SynclineRun, TempDir};

/// (table, compared columns, key order)
const TABLES: &[(&str, &str, &str)] = &[
    (
        "accounts",
        "id, balance, name, note, tags, price, updated_at",
        "id",
    ),
    ("orders", "id, account_id, amount, status, at", "id"),
    ("lines", "order_id, line, qty, sku", "order_id, line"),
];

const SOURCE_DDL: &str = r#"
CREATE TABLE accounts (id bigserial PRIMARY KEY, balance int NOT NULL, name text, note text,
  tags text[], price numeric(12,2), updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint, amount numeric(12,2),
  status varchar(20), at timestamp);
CREATE TABLE lines (order_id bigint, line int, qty int, sku text, PRIMARY KEY (order_id, line));
CREATE TABLE noise (id bigserial PRIMARY KEY, payload text);
INSERT INTO accounts (balance, name, note, tags, price)
  SELECT g % 1000, 'name ' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ''' || g || ' ünï' END,
         ARRAY['a' || g, NULL], (g / 7.0)::numeric(12,2)
  FROM generate_series(1, 30000) g;
INSERT INTO orders SELECT g, g % 30000 + 1, (g / 3.0)::numeric(12,2), 'new', timestamp '2024-01-01' + g * interval '1 second'
  FROM generate_series(1, 15000) g;
INSERT INTO lines SELECT g / 3 + 1, g % 3, g % 17, 'sku-' || g FROM generate_series(0, 14999) g;
"#;

/// A session that shows times in UTC (so both sides print them alike), or
/// None when the database cannot be reached.
async fn utc_session(url: &str) -> Option<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let _ = client.batch_execute("SET TimeZone = 'UTC'").await;
    Some(client)
}

/// Count and md5 of every compared column of every row, in key order.
async fn checksum(url: &str, table: &str, cols: &str, key: &str) -> String {
    let Some(client) = utc_session(url).await else {
        return "unreachable".into();
    };
    let sql = format!(
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '-') FROM (SELECT {cols} FROM {table}) t"
    );
    match client.query_one(&sql, &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "missing".into(),
    }
}

/// Every compared row as text, by key (for a failure's message).
async fn rows(url: &str, table: &str, cols: &str, key: &str) -> BTreeMap<String, String> {
    let Some(client) = utc_session(url).await else {
        return BTreeMap::new();
    };
    let sql = format!("SELECT ({key})::text, t::text FROM (SELECT {cols} FROM {table}) t");
    client
        .query(&sql, &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// The first rows in which `source` and `target` differ.
async fn row_diff(source: &str, target: &str, table: &str, cols: &str, key: &str) -> String {
    let (s, t) = (
        rows(source, table, cols, key).await,
        rows(target, table, cols, key).await,
    );
    let keys: BTreeSet<&String> = s.keys().chain(t.keys()).collect();
    keys.into_iter()
        .filter(|k| s.get(*k) != t.get(*k))
        .take(5)
        .map(|k| {
            format!(
                "  {table} {key}={k}: source {:?} target {:?}",
                s.get(k),
                t.get(k)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_equal(
    source: &str,
    target: &str,
    tables: &[(&str, &str, &str)],
    what: &str,
    runs: &[&SynclineRun],
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let mut differ = Vec::new();
        for (t, cols, key) in tables {
            let (s, d) = (
                checksum(source, t, cols, key).await,
                checksum(target, t, cols, key).await,
            );
            if s != d {
                differ.push(format!("{t}: source {s} target {d}"));
            }
        }
        if differ.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            for (t, cols, key) in tables {
                differ.push(row_diff(source, target, t, cols, key).await);
            }
            support::panic_with_logs(
                &format!(
                    "{what}: target never equalled source\n{}",
                    differ.join("\n")
                ),
                runs,
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pipeline_yaml(
    stack: &Stack,
    name: &str,
    source: &str,
    target: &str,
    extra_tables: &str,
) -> String {
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 3
registry:
  url: {registry}
sources:
  cdc:
    type: postgres_cdc
    connection: {source}
    snapshot_chunk_size: 1000
    snapshot_parallelism: 3
    heartbeat_interval_ms: 500
    tables:
      - {{ table: public.accounts, topic: cdc.accounts }}
      - {{ table: public.orders, topic: cdc.orders }}
      - {{ table: lines, topic: cdc.lines }}
{extra_tables}sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [cdc.accounts, cdc.orders, cdc.lines]
    tables: {{ cdc.accounts: accounts, cdc.orders: orders, cdc.lines: lines }}
    batch_size: 500
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
    )
}

/// pgbench-style random transactions on the three tables (inserts, updates,
/// deletes, key changes), until `stop`. Returns the number of transactions.
fn workload(url: String, mut rng: Rng, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let client = pg_connect(&url).await;
        let mut n = 0u64;
        let mut next_order = 1_000_000i64;
        while !stop.load(Ordering::SeqCst) {
            let a = 1 + rng.below(32_000) as i64;
            let o = 1 + rng.below(16_000) as i64;
            let sql = match rng.below(9) {
                0 => "INSERT INTO accounts (balance, name, tags) SELECT g, 'new ' || g, ARRAY['x'] FROM generate_series(1, 3) g".to_string(),
                1 | 2 => format!("UPDATE accounts SET balance = balance + 1, note = 'upd ' || balance, price = price + 1 WHERE id = {a}"),
                3 => format!("DELETE FROM accounts WHERE id = {a}"),
                4 => {
                    next_order += 1;
                    format!(
                        "BEGIN; INSERT INTO orders VALUES ({next_order}, {a}, 9.99, 'open', now()::timestamp); \
                         INSERT INTO lines VALUES ({next_order}, 0, 1, 'sku'), ({next_order}, 1, 2, NULL); \
                         UPDATE accounts SET balance = balance - 1 WHERE id = {a}; COMMIT"
                    )
                }
                5 => format!("UPDATE orders SET status = 'paid', amount = amount * 2 WHERE id BETWEEN {o} AND {o} + 5"),
                6 => format!("BEGIN; DELETE FROM lines WHERE order_id = {o}; DELETE FROM orders WHERE id = {o}; COMMIT"),
                7 => {
                    // a primary-key change
                    next_order += 1;
                    format!("UPDATE orders SET id = {next_order} WHERE id = {o}")
                }
                _ => format!("UPDATE lines SET qty = qty + 1, sku = NULL WHERE order_id = {o}"),
            };
            if client.batch_execute(&sql).await.is_err() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            n += 1;
            if n.is_multiple_of(20) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        n
    })
}

fn run_component(file: &std::path::Path, component: &str) -> SynclineRun {
    SynclineRun::start_with_args(file, &["--component", component])
}

/// The source (`cdc`) and the sink (`warehouse`) as two processes; the sink
/// starts once the source has created its topics (a sink subscribed before
/// its topics exist was seen to never fetch some partitions on nisshi).
async fn start_source_then_sink(file: &std::path::Path) -> (SynclineRun, SynclineRun) {
    let source = run_component(file, "cdc");
    wait_until(
        Duration::from_secs(120),
        "the source to create its topics",
        || {
            let log = source.log();
            async move {
                log.contains("postgres_cdc: snapshot of a table started")
                    || log.contains("postgres_cdc: streaming")
            }
        },
    )
    .await;
    let sink = run_component(file, "warehouse");
    (source, sink)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_stream_under_concurrent_writes_survive_kill9_and_converge() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("shop").await;
    let target = PgDb::create("cdc_dst").await;
    pg_connect(&source)
        .await
        .batch_execute(SOURCE_DDL)
        .await
        .unwrap();

    let (_dir, file) = pipeline_in(
        "cdc-e2e",
        &pipeline_yaml(&stack, "cdc-e2e", &source, &target.url(), ""),
    );
    let mut rng = Rng::from_time();
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(source.clone(), rng.clone(), stop.clone());
    let (mut source_run, sink_run) = start_source_then_sink(&file).await;

    // kill -9 during the snapshot: right after a chunk, and at random points
    let mut snapshot_kills = 0;
    for _ in 0..3 {
        wait_until(Duration::from_secs(120), "a snapshot chunk", || {
            let log = source_run.log();
            async move {
                log.matches("snapshot chunk published").count() > 0
                    || log.contains("snapshot finished")
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        if !source_run.log().contains("snapshot finished") {
            snapshot_kills += 1;
        }
        source_run.restart();
    }
    assert!(snapshot_kills >= 1, "no kill landed during the snapshot");
    wait_until(Duration::from_secs(180), "the snapshot to finish", || {
        let log = source_run.log();
        async move { log.contains("snapshot finished") }
    })
    .await;
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
        TABLES,
        "after kill -9 during snapshot and streaming",
        &[&source_run, &sink_run],
    )
    .await;
}

/// A pipeline of one source and one sink over the given `tables:` entries and sink topic map.
/// A source database with a captured table (one row) and an uncaptured
/// `noise` table, a target database, and a pipeline file syncing `captured`.
struct Captured {
    source: String,
    target: PgDb,
    src: tokio_postgres::Client,
    dir: TempDir,
    file: std::path::PathBuf,
}

async fn captured_and_noise(
    stack: &Stack,
    pg: &PgServer,
    name: &str,
    db: &str,
    target_db: &str,
) -> Captured {
    let source = pg.create_db(db).await;
    let target = PgDb::create(target_db).await;
    let src = pg_connect(&source).await;
    src.batch_execute(
        "CREATE TABLE captured (id int PRIMARY KEY, v text); INSERT INTO captured VALUES (1, 'a');
         CREATE TABLE noise (id bigserial PRIMARY KEY, payload text);",
    )
    .await
    .unwrap();
    let (dir, file) = pipeline_in(
        name,
        &small_pipeline(
            stack,
            name,
            &source,
            &target.url(),
            "      - { table: public.captured, topic: cdc.captured }\n",
            "    topics: [cdc.captured]\n    tables: { cdc.captured: captured }\n",
        ),
    );
    Captured {
        source,
        target,
        src,
        dir,
        file,
    }
}

fn small_pipeline(
    stack: &Stack,
    name: &str,
    source: &str,
    target: &str,
    source_tables: &str,
    sink: &str,
) -> String {
    small_pipeline_with(stack, name, source, target, source_tables, "", sink)
}

/// [`small_pipeline`] with `processors` (YAML lines under `processors:`).
/// A new directory named after `name` holding `yaml` as `pipeline.yaml`.
fn pipeline_in(name: &str, yaml: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, yaml).unwrap();
    (dir, file)
}

fn small_pipeline_with(
    stack: &Stack,
    name: &str,
    source: &str,
    target: &str,
    source_tables: &str,
    processors: &str,
    sink: &str,
) -> String {
    let processors = if processors.is_empty() {
        String::new()
    } else {
        format!("processors:\n{processors}")
    };
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 2
registry:
  url: {registry}
sources:
  cdc:
    type: postgres_cdc
    connection: {source}
    snapshot_chunk_size: 500
    snapshot_parallelism: 4
    heartbeat_interval_ms: 300
    tables:
{source_tables}{processors}sinks:
  warehouse:
    type: postgres
    connection: {target}
{sink}    batch_size: 200
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
    )
}

/// `docs.big`: ~100 kB of incompressible text per row, so it is stored out
/// of line (TOAST).
const DOCS_DDL: &str = r#"CREATE TABLE docs (id int PRIMARY KEY, big text, counter int, note text);
    INSERT INTO docs SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 3000) i), 0, 'n'
      FROM generate_series(1, 20) g;"#;

/// Updates that leave `big` unchanged (pgoutput sends it as "unchanged
/// TOAST"), several per row and batch, then one that changes it.
async fn update_docs_leaving_big_unchanged(src: &tokio_postgres::Client) {
    for round in 0..5 {
        src.batch_execute(&format!(
            "UPDATE docs SET counter = counter + 1, note = 'round {round}' WHERE id % 2 = {}",
            round % 2
        ))
        .await
        .unwrap();
        src.batch_execute("UPDATE docs SET counter = counter + 10 WHERE id <= 5")
            .await
            .unwrap();
    }
    src.batch_execute("UPDATE docs SET big = big || 'changed' WHERE id = 3; UPDATE docs SET counter = -1 WHERE id = 3")
        .await
        .unwrap();
}

async fn assert_no_null_big(target: &str) {
    let nulls: i64 = pg_connect(target)
        .await
        .query_one("SELECT count(*) FROM docs WHERE big IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0, "an unchanged TOAST value was written as null");
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_toast_values_and_tables_without_primary_key_reach_the_target() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("toast").await;
    let target = PgDb::create("cdc_toast").await;
    let src = pg_connect(&source).await;
    // `big`: ~100 kB of incompressible text, so it is stored out of line (TOAST)
    src.batch_execute(DOCS_DDL).await.unwrap();
    src.batch_execute(
        r#"CREATE TABLE events (ev_id int NOT NULL, kind text, payload text);
        ALTER TABLE events REPLICA IDENTITY FULL;
        INSERT INTO events SELECT g, 'k' || g % 3, 'p' || g FROM generate_series(1, 300) g;"#,
    )
    .await
    .unwrap();
    let (_dir, file) = pipeline_in("cdc-toast", &small_pipeline(
        &stack,
        "cdc-toast",
        &source,
        &target.url(),
        "      - { table: public.docs, topic: cdc.docs }\n      - { table: public.events, topic: cdc.events, key: [ev_id] }\n",
        "    topics: [cdc.docs, cdc.events]\n    tables: { cdc.docs: docs, cdc.events: events }\n",
    ));
    let (_source_run, run) = start_source_then_sink(&file).await;
    let tables: &[(&str, &str, &str)] = &[
        ("docs", "id, md5(big) AS big, counter, note", "id"),
        ("events", "ev_id, kind, payload", "ev_id"),
    ];
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the snapshot",
        &[&run],
    )
    .await;
    update_docs_leaving_big_unchanged(&src).await;
    src.batch_execute("INSERT INTO docs VALUES (100, repeat(md5('x'), 4000), 1, 'new'); UPDATE docs SET note = 'after insert' WHERE id = 100")
        .await
        .unwrap();
    // No primary key: updates, deletes and inserts identified by `ev_id`.
    src.batch_execute("UPDATE events SET payload = 'upd' WHERE ev_id % 7 = 0; DELETE FROM events WHERE ev_id % 11 = 0; INSERT INTO events VALUES (1000, 'late', NULL)")
        .await
        .unwrap();
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after updates that leave TOAST values unchanged",
        &[&run],
    )
    .await;
    assert_no_null_big(&target.url()).await;
}

/// Unchanged TOASTed values through a `rules` and a `dedup` processor on
/// the way to the sink: the fact that a column is unchanged travels with
/// the change through both (ChangeEvent::unchanged, the header on the
/// wire), so the target keeps the large value instead of the placeholder.
#[tokio::test(flavor = "multi_thread")]
async fn unchanged_toast_values_survive_rules_and_dedup_on_the_way() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("toast_proc").await;
    let target = PgDb::create("cdc_toast_proc").await;
    let src = pg_connect(&source).await;
    src.batch_execute(DOCS_DDL).await.unwrap();
    let (_dir, file) = pipeline_in(
        "cdc-toast-proc",
        &small_pipeline_with(
            &stack,
            "cdc-toast-proc",
            &source,
            &target.url(),
            "      - { table: public.docs, topic: cdc.docs }\n",
            r#"  shape:
    type: rules
    from: [cdc.docs]
    to: cdc.docs.shaped
    steps:
      - set: { origin: "'cdc'" }
  once:
    type: dedup
    from: [cdc.docs.shaped]
    to: cdc.docs.once
    by: content
"#,
            "    topics: [cdc.docs.once]\n    tables: { cdc.docs.once: docs }\n",
        ),
    );
    let run = SynclineRun::start(&file);
    let tables: &[(&str, &str, &str)] = &[("docs", "id, md5(big) AS big, counter, note", "id")];
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the snapshot",
        &[&run],
    )
    .await;
    update_docs_leaving_big_unchanged(&src).await;
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after updates that leave TOAST values unchanged, through rules and dedup",
        &[&run],
    )
    .await;
    assert_no_null_big(&target.url()).await;
}

/// Large rows that pile up in the replication socket while the process is
/// frozen (the server fills the TCP window, then waits) are all read once
/// it runs again: the reading that `sources/src/postgres_cdc/wire.rs`
/// does for large messages. (pg_walstream's own libpq stream stalled on a
/// large message under load, in the TOAST tests; this burst did not make
/// it stall in three tries, so that stall's proof is those tests on a
/// loaded machine, not this one.)
#[tokio::test(flavor = "multi_thread")]
async fn large_rows_piled_up_in_the_socket_are_all_read() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("piled").await;
    let target = PgDb::create("cdc_piled").await;
    let src = pg_connect(&source).await;
    src.batch_execute(
        "CREATE TABLE blobs (id int PRIMARY KEY, big text); INSERT INTO blobs VALUES (0, 'small')",
    )
    .await
    .unwrap();
    let (_dir, file) = pipeline_in(
        "cdc-piled",
        &small_pipeline_with(
            &stack,
            "cdc-piled",
            &source,
            &target.url(),
            "      - { table: public.blobs, topic: cdc.blobs }\n",
            "",
            "    topics: [cdc.blobs]\n    tables: { cdc.blobs: blobs }\n",
        ),
    );
    let run = SynclineRun::start(&file);
    let tables: &[(&str, &str, &str)] = &[("blobs", "id, md5(big) AS big", "id")];
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the snapshot",
        &[&run],
    )
    .await;
    run.freeze(true);
    // 40 rows of ~320 kB (incompressible, so pgoutput sends them whole),
    // one transaction each: far more than the socket buffers hold.
    for id in 1..=40 {
        src.batch_execute(&format!(
            "INSERT INTO blobs SELECT {id}, string_agg(md5({id}::text || i::text), '') FROM generate_series(1, 10000) i"
        ))
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.freeze(false);
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the frozen burst",
        &[&run],
    )
    .await;
}

/// A pipeline reading the same tables two ways: `cdc` (postgres_cdc) and
/// `poll` (sql_poll by `id`), each table `t` of `cdc` to target table `t`,
/// each table `t` of `poll` (a copy of the data) to `t_polled`.
fn cdc_and_poll_pipeline(
    stack: &Stack,
    name: &str,
    source: &str,
    target: &str,
    tables: &[&str],
) -> String {
    let mut cdc = String::new();
    let mut poll = String::new();
    let mut topics = Vec::new();
    let mut map = Vec::new();
    for t in tables {
        cdc.push_str(&format!(
            "      - {{ table: public.{t}, topic: cdc.{t} }}\n"
        ));
        poll.push_str(&format!(
            "      - {{ table: public.{t}_polled, topic: poll.{t}, mode: incrementing, incrementing_column: id }}\n"
        ));
        topics.push(format!("cdc.{t}, poll.{t}"));
        map.push(format!("cdc.{t}: {t}, poll.{t}: {t}_polled"));
    }
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 2
registry:
  url: {registry}
sources:
  cdc:
    type: postgres_cdc
    connection: {source}
    heartbeat_interval_ms: 300
    tables:
{cdc}  poll:
    type: sql_poll
    connection: {source}
    schedule: {{ interval_ms: 300 }}
    tables:
{poll}sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [{topics}]
    tables: {{ {map} }}
    batch_size: 200
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        topics = topics.join(", "),
        map = map.join(", "),
    )
}

/// Values Postgres holds beyond the everyday range: `infinity` and
/// `-infinity` dates and timestamps, dates and timestamps BC, years after
/// 9999, `24:00:00`, `NaN` in a `numeric(p,s)`, and `char(n)` values with
/// their trailing blanks. They reach a Postgres target exactly, from the
/// snapshot, from the stream and from `sql_poll` alike, into columns of the
/// source's types. Before, the first of the dates stopped either source for
/// good, NaN stopped them too, and a `char(n)` lost its blanks when the row
/// came from the snapshot or from sql_poll but kept them from the stream.
#[tokio::test(flavor = "multi_thread")]
async fn every_special_value_round_trips_from_the_snapshot_the_stream_and_sql_poll() {
    const COLUMNS: [(&str, &str); 8] = [
        ("d", "date"),
        ("ts", "timestamp without time zone"),
        ("tstz", "timestamp with time zone"),
        ("t", "time without time zone"),
        ("n", "numeric(10,2)"),
        ("c", "character(5)"),
        ("ca", "character(3)[]"),
        ("v", "character varying(6)"),
    ];
    const ROWS: &str = "(1, 'infinity', 'infinity', 'infinity', '24:00:00', 'NaN', 'ab', '{a,bc}', 'x  '),
        (2, '-infinity', '-infinity', '-infinity', '00:00:00', '-99999999.99', '', '{\"\"}', ''),
        (3, '0044-03-15 BC', '0044-03-15 12:30:00.5 BC', '4713-01-01 00:00:00+00 BC', '23:59:59.999999', '0.01', 'abcde', NULL, 'abcdef'),
        (4, '10000-01-01', '12345-06-07 08:09:10.123456', '99999-12-31 23:59:59.999999+05:30', '12:00:00', '99999999.99', ' a', '{\" a\",NULL}', ' a'),
        (5, '2024-02-29', '2024-02-29 00:00:00', '2024-02-29 23:00:00-03', NULL, NULL, NULL, NULL, NULL)";
    let names: Vec<&str> = COLUMNS.iter().map(|(c, _)| *c).collect();
    let casts: Vec<String> = COLUMNS.iter().map(|(c, t)| format!("{c}::{t}")).collect();
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("special").await;
    let target = PgDb::create("cdc_special").await;
    let src = pg_connect(&source).await;
    let ddl: Vec<String> = COLUMNS.iter().map(|(c, t)| format!("{c} {t}")).collect();
    for table in ["special", "special_polled"] {
        src.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, {}); INSERT INTO {table} VALUES {ROWS}",
            ddl.join(", ")
        ))
        .await
        .unwrap();
    }
    let (_dir, file) = pipeline_in(
        "cdc-special",
        &cdc_and_poll_pipeline(&stack, "cdc-special", &source, &target.url(), &["special"]),
    );
    let run = SynclineRun::start(&file);
    let cols = format!("id, {}", names.join(", "));
    let tables: &[(&str, &str, &str)] =
        &[("special", &cols, "id"), ("special_polled", &cols, "id")];
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the snapshot and the first poll",
        &[&run],
    )
    .await;
    // The same values again through the stream (new rows, and updates of
    // the snapshot's rows that turn them around) and through later polls.
    let sets: Vec<String> = names.iter().map(|c| format!("{c} = o.{c}")).collect();
    src.batch_execute(&format!(
        "INSERT INTO special SELECT id + 10, {casts} FROM (VALUES {ROWS}) v(id, {names});
         INSERT INTO special_polled SELECT id + 10, {casts} FROM (VALUES {ROWS}) v(id, {names});
         UPDATE special s SET {sets} FROM special o WHERE o.id = 6 - s.id AND s.id <= 5",
        casts = casts.join(", "),
        names = names.join(", "),
        sets = sets.join(", "),
    ))
    .await
    .unwrap();
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the stream and later polls",
        &[&run],
    )
    .await;
    let tgt = pg_connect(&target.url()).await;
    for table in ["special", "special_polled"] {
        for (column, ty) in COLUMNS {
            let declared: String = tgt
                .query_one(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                     WHERE attrelid = $1::text::regclass AND attname = $2",
                    &[&format!("public.{table}"), &column],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                declared, ty,
                "the target's `{table}.{column}` keeps the source's type"
            );
        }
    }
    // The blanks themselves, not only equal text: `ab` in a char(5) is
    // five characters long at the target, from every path (row 5 holds
    // row 1's values after the update).
    let padded: Vec<i32> = tgt
        .query(
            "SELECT length(textin(bpcharout(c))) FROM special WHERE id IN (5, 11) \
             UNION ALL SELECT length(textin(bpcharout(c))) FROM special_polled WHERE id IN (1, 11)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(padded, [5, 5, 5, 5], "char(5) keeps its trailing blanks");
}

/// A row whose record is larger than the broker takes (the producer's
/// `message.max.bytes`, 1,000,000 bytes by default) goes to the source's
/// dead-letter topic with the reason, from the snapshot, the stream and
/// `sql_poll` alike, and everything after it lands: the slot moves past it.
/// Before, the source retried that row forever while the slot kept WAL.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_too_large_for_the_broker_is_dead_lettered_and_the_slot_moves_on() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("oversized").await;
    let target = PgDb::create("cdc_oversized").await;
    let src = pg_connect(&source).await;
    // ~2 MB of incompressible text in rows 2 and 12, a few bytes elsewhere.
    let rows = |offset: i32| {
        format!(
            "SELECT g + {offset}, CASE WHEN g = 2 THEN \
               (SELECT string_agg(md5(g::text || i::text || '{offset}'), '') FROM generate_series(1, 64000) i) \
               ELSE 'small ' || g END FROM generate_series(1, 3) g"
        )
    };
    for table in ["big", "big_polled"] {
        src.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, payload text); INSERT INTO {table} {}",
            rows(0)
        ))
        .await
        .unwrap();
    }
    let name = "cdc-oversized";
    let (_dir, file) = pipeline_in(
        name,
        &cdc_and_poll_pipeline(&stack, name, &source, &target.url(), &["big"]),
    );
    let run = SynclineRun::start(&file);
    let landed = |table: &'static str| {
        let url = target.url();
        async move {
            let Some(c) = utc_session(&url).await else {
                return Vec::new();
            };
            c.query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get::<_, i32>(0)).collect())
                .unwrap_or_default()
        }
    };
    for table in ["big", "big_polled"] {
        wait_until(
            Duration::from_secs(120),
            "the snapshot's small rows",
            || async { landed(table).await == [1, 3] },
        )
        .await;
    }
    for table in ["big", "big_polled"] {
        src.batch_execute(&format!("INSERT INTO {table} {}", rows(10)))
            .await
            .unwrap();
    }
    let lsn: String = src
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    for table in ["big", "big_polled"] {
        wait_until(
            Duration::from_secs(120),
            "the stream's small rows",
            || async { landed(table).await == [1, 3, 11, 13] },
        )
        .await;
    }
    wait_until(Duration::from_secs(60), "the slot to move past the large rows", || async {
        src.query_one(
            "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_type = 'logical'",
            &[&lsn],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
    })
    .await;
    for (source_name, topic) in [("cdc", "cdc.big"), ("poll", "poll.big")] {
        let dead = support::records(&stack.bootstrap(), &format!("{name}.{source_name}.dead"), 2);
        for m in &dead {
            use rdkafka::message::Message;
            let reason = support::header(m, "syncline.reason");
            assert!(
                reason.contains("message.max.bytes") && reason.contains(topic),
                "the reason names the limit and the topic: {reason}"
            );
            assert_eq!(support::header(m, "syncline.topic"), topic);
            assert!(
                m.key().is_some_and(|k| !k.is_empty()),
                "the row's key is kept"
            );
            assert!(m.payload().is_none(), "the value is not");
        }
    }
    assert!(
        run.log().contains("record dead-lettered"),
        "each dead letter is logged"
    );
}

/// Bytes of WAL the slot keeps: pg_current_wal_lsn() - restart_lsn.
async fn retained(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::int8, (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT temporary",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_captured_table_while_the_database_is_busy_keeps_retained_wal_bounded() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let Captured {
        source,
        target,
        src,
        dir: _dir,
        file,
    } = captured_and_noise(&stack, &pg, "cdc-idle", "idle", "cdc_idle").await;
    let (_source_run, run) = start_source_then_sink(&file).await;
    let tables: &[(&str, &str, &str)] = &[("captured", "id, v", "id")];
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the snapshot",
        &[&run],
    )
    .await;
    // Only the uncaptured table is written: ~20 MB of WAL per round. After
    // each round the WAL held behind the slot falls back under 16 MB.
    const BOUND: i64 = 16 << 20;
    for round in 0..4 {
        src.batch_execute(
            "INSERT INTO noise (payload) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 60000) g",
        )
        .await
        .unwrap();
        let (before, _) = retained(&src).await;
        eprintln!("round {round}: {before} bytes retained right after the writes");
        wait_until(
            Duration::from_secs(120),
            "the slot to follow the WAL",
            || {
                let src = &src;
                async move {
                    // a checkpoint logs the running transactions, which lets restart_lsn move
                    let _ = src.batch_execute("CHECKPOINT").await;
                    let (retained, lag) = retained(src).await;
                    retained < BOUND && lag < BOUND
                }
            },
        )
        .await;
    }
    let (r, lag) = retained(&src).await;
    eprintln!("finally: {r} bytes retained, {lag} bytes behind");
    // and the captured table still syncs
    src.batch_execute("UPDATE captured SET v = 'b'")
        .await
        .unwrap();
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the idle period",
        &[&run],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_slot_stops_the_pipeline_saying_how_to_recover() {
    let stack = Stack::start();
    let pg = PgServer::start(&[
        "max_slot_wal_keep_size=1MB",
        "min_wal_size=32MB",
        "max_wal_size=32MB",
    ]);
    let Captured {
        source,
        target,
        src,
        dir: _dir,
        file,
    } = captured_and_noise(&stack, &pg, "cdc-lost", "lost", "cdc_lost").await;
    let tables: &[(&str, &str, &str)] = &[("captured", "id, v", "id")];
    let (mut source_run, sink_run) = start_source_then_sink(&file).await;
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the snapshot",
        &[&source_run, &sink_run],
    )
    .await;
    source_run.kill9();
    // While the source is down: a change it must not skip, then WAL beyond
    // max_slot_wal_keep_size, and checkpoints until Postgres invalidates the slot.
    src.batch_execute("UPDATE captured SET v = 'while down'")
        .await
        .unwrap();
    wait_until(Duration::from_secs(120), "the slot to be lost", || {
        let src = &src;
        async move {
            let _ = src
                .batch_execute(
                    "INSERT INTO noise (payload) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 20000) g;
                     SELECT pg_switch_wal(); CHECKPOINT;",
                )
                .await;
            src.query_one(
                "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_type = 'logical'",
                &[],
            )
            .await
            .map(|r| r.get::<_, String>(0) == "lost")
            .unwrap_or(false)
        }
    })
    .await;
    source_run.restart();
    let code = source_run.wait_exit(Duration::from_secs(120));
    assert_ne!(code, Some(0), "the source must stop with an error");
    let log = source_run.log();
    assert!(log.contains("is lost"), "no lost-slot message in:\n{log}");
    assert!(
        log.contains("pg_drop_replication_slot"),
        "no recovery advice in:\n{log}"
    );
    let v: String = pg_connect(&target.url())
        .await
        .query_one("SELECT v FROM captured WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        v, "a",
        "nothing after the lost position can have been applied"
    );
}

async fn target_columns(url: &str, table: &str) -> Vec<(String, String)> {
    pg_connect(url)
        .await
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = $1 AND column_name NOT LIKE '\\_syncline%' ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_while_streaming_evolve_the_target_and_a_refused_one_stops_the_source() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("schema").await;
    let target = PgDb::create("cdc_schema").await;
    let src = pg_connect(&source).await;
    src.batch_execute(
        "CREATE TABLE s (id int PRIMARY KEY, a int, b text);
         INSERT INTO s SELECT g, g, 'b' || g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let (_dir, file) = pipeline_in(
        "cdc-schema",
        &small_pipeline(
            &stack,
            "cdc-schema",
            &source,
            &target.url(),
            "      - { table: public.s, topic: cdc.s }\n",
            "    topics: [cdc.s]\n    tables: { cdc.s: s }\n    on_dropped_column: drop\n",
        ),
    );
    let (mut source_run, sink_run) = start_source_then_sink(&file).await;
    wait_equal(
        &source,
        &target.url(),
        &[("s", "id, a, b", "id")],
        "after the snapshot",
        &[&source_run, &sink_run],
    )
    .await;

    // ADD COLUMN: a new schema version, a new target column
    src.batch_execute(
        "ALTER TABLE s ADD COLUMN c text;
         INSERT INTO s SELECT g, g, 'b' || g, 'c' || g FROM generate_series(101, 150) g;
         UPDATE s SET c = 'x' WHERE id < 10;",
    )
    .await
    .unwrap();
    wait_equal(
        &source,
        &target.url(),
        &[("s", "id, a, b, c", "id")],
        "after ADD COLUMN",
        &[&source_run, &sink_run],
    )
    .await;

    // DROP COLUMN: dropped in the target too (on_dropped_column: drop)
    src.batch_execute(
        "ALTER TABLE s DROP COLUMN b;
         INSERT INTO s SELECT g, g, 'c' || g FROM generate_series(151, 160) g;
         UPDATE s SET a = a + 1 WHERE id % 3 = 0;",
    )
    .await
    .unwrap();
    wait_equal(
        &source,
        &target.url(),
        &[("s", "id, a, c", "id")],
        "after DROP COLUMN",
        &[&source_run, &sink_run],
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "column b to be dropped in the target",
        || {
            let url = target.url();
            async move {
                !target_columns(&url, "s")
                    .await
                    .iter()
                    .any(|(c, _)| c == "b")
            }
        },
    )
    .await;

    // A widening type change: integer -> bigint, with a value only bigint holds
    src.batch_execute(
        "ALTER TABLE s ALTER COLUMN a TYPE bigint;
         INSERT INTO s VALUES (200, 5000000000, 'big');
         UPDATE s SET a = a * 1000000 WHERE id = 1;",
    )
    .await
    .unwrap();
    wait_equal(
        &source,
        &target.url(),
        &[("s", "id, a, c", "id")],
        "after integer -> bigint",
        &[&source_run, &sink_run],
    )
    .await;
    let cols = target_columns(&target.url(), "s").await;
    assert!(
        cols.contains(&("a".into(), "bigint".into())),
        "target columns: {cols:?}"
    );

    // A change the registry refuses (text -> integer is not BACKWARD compatible):
    // the source stops before publishing anything of the new shape.
    src.batch_execute(
        "ALTER TABLE s ALTER COLUMN c TYPE integer USING length(c);
         UPDATE s SET a = -1 WHERE id = 2;",
    )
    .await
    .unwrap();
    let code = source_run.wait_exit(Duration::from_secs(120));
    assert_ne!(code, Some(0));
    let log = source_run.log();
    assert!(
        log.contains("the registry refused the schema as incompatible"),
        "no refusal in the log:\n{log}"
    );
    assert!(log.contains("nothing of it was published"), "{log}");
    let a: i64 = pg_connect(&target.url())
        .await
        .query_one("SELECT a FROM s WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(a, -1, "a change of the refused shape reached the target");
}

/// `value` of the first sample of metric `name` whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resnapshot_asked_for_while_streaming_repairs_a_damaged_target_and_survives_kill9() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let c = captured_and_noise(&stack, &pg, "cdc-resnap", "resnap", "cdc_resnap_dst").await;
    c.src
        .batch_execute(
            "INSERT INTO captured SELECT g, 'row ' || g FROM generate_series(2, 6000) g; ANALYZE captured",
        )
        .await
        .unwrap();
    let metrics_port = support::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut source_run = SynclineRun::start_with_args(
        &c.file,
        &["--component", "cdc", "--metrics-addr", &metrics_addr],
    );
    wait_until(Duration::from_secs(120), "the source to stream", || {
        let log = source_run.log();
        async move { log.contains("postgres_cdc: streaming") }
    })
    .await;
    let sink_run = run_component(&c.file, "warehouse");
    let table = [("captured", "id, v", "id")];
    wait_equal(
        &c.source,
        &c.target.url(),
        &table,
        "after the snapshot",
        &[&source_run, &sink_run],
    )
    .await;
    // The initial snapshot read the table in several key ranges at once.
    let log = source_run.log();
    let ranges: usize = log
        .lines()
        .find(|l| l.contains("snapshot of a table started"))
        .and_then(|l| l.split("ranges=").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the snapshot logs its ranges:\n{log}"));
    assert!(
        ranges > 1,
        "6000 rows in chunks of 500 were read as {ranges} range(s)"
    );

    // The metrics show the snapshot and the stream.
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let snap = metric(
        &text,
        "syncline_cdc_snapshot_rows_total",
        "table=\"public.captured\"",
    );
    assert_eq!(snap, Some(6000.0), "snapshot rows in the metrics:\n{text}");
    assert!(metric(
        &text,
        "syncline_cdc_snapshot_rows_estimate",
        "public.captured"
    )
    .is_some_and(|e| e >= 5000.0));
    c.src
        .batch_execute("UPDATE captured SET v = 'changed' WHERE id <= 10")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the metrics to count streamed changes",
        || {
            let url = format!("http://{metrics_addr}/metrics");
            async move {
                let text = match reqwest::get(url).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => return false,
                };
                metric(&text, "syncline_cdc_events_total", "source=\"cdc\"")
                    .is_some_and(|n| n >= 10.0)
                    && metric(
                        &text,
                        "syncline_cdc_slot_retained_wal_bytes",
                        "source=\"cdc\"",
                    )
                    .is_some()
                    && metric(&text, "syncline_cdc_lag_bytes", "source=\"cdc\"").is_some()
            }
        },
    )
    .await;

    // Damage the target behind the sink's back: rows lost, rows overwritten.
    let dst = pg_connect(&c.target.url()).await;
    dst.batch_execute(
        "DELETE FROM captured WHERE id BETWEEN 100 AND 199; UPDATE captured SET v = 'damaged' WHERE id BETWEEN 1000 AND 1099",
    )
    .await
    .unwrap();
    // Writes continue at the source, on other rows.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (c.source.clone(), stop.clone());
        tokio::spawn(async move {
            let client = pg_connect(&url).await;
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                client
                    .batch_execute(&format!(
                        "UPDATE captured SET v = 'w{i}' WHERE id = {}; INSERT INTO captured VALUES ({}, 'new'); \
                         DELETE FROM captured WHERE id = {}",
                        3000 + i % 1000,
                        10_000 + i,
                        5000 + i
                    ))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let bad_table = std::process::Command::new(support::syncline_bin())
        .args(["snapshot"])
        .arg(&c.file)
        .args(["--source", "cdc", "--table", "public.nope"])
        .output()
        .unwrap();
    assert_eq!(bad_table.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad_table.stderr);
    assert!(
        err.contains("`public.nope` is not a table captured") && err.contains("public.captured"),
        "{err}"
    );
    let out = std::process::Command::new(support::syncline_bin())
        .args(["snapshot"])
        .arg(&c.file)
        .args(["--source", "cdc", "--table", "captured"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-snapshot of public.captured requested")
    );

    // kill -9 right after the request is recorded: the restarted source still answers it.
    wait_until(
        Duration::from_secs(60),
        "the source to take the request",
        || {
            let log = source_run.log();
            async move { log.contains("re-snapshot requested") }
        },
    )
    .await;
    source_run.restart();
    wait_until(
        Duration::from_secs(120),
        "the re-snapshot to finish",
        || {
            let log = source_run.log();
            async move { log.matches("postgres_cdc: snapshot finished").count() >= 2 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    wait_equal(
        &c.source,
        &c.target.url(),
        &table,
        "after the re-snapshot",
        &[&source_run, &sink_run],
    )
    .await;
    // Answered once: the replayed request (if the slot had not moved past it) started no third snapshot.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        source_run
            .log()
            .matches("postgres_cdc: snapshot finished")
            .count(),
        2
    );
    drop(c.dir);
}

/// Random inserts, updates and deletes on `items`, and now and then a
/// TRUNCATE (of `items`, or of `items` and `other` in one statement), until `stop`.
fn truncating_workload(
    url: String,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let client = pg_connect(&url).await;
        let mut truncates = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let id = 1 + rng.below(5_000);
            let sql = match rng.below(60) {
                0 => {
                    truncates += 1;
                    "TRUNCATE items".to_string()
                }
                1 => {
                    truncates += 1;
                    format!(
                        "BEGIN; INSERT INTO items SELECT g, 'pre', 0 FROM generate_series({id}, {id} + 50) g ON CONFLICT DO NOTHING; \
                         TRUNCATE other, items; INSERT INTO other VALUES ({id}, 'post'); \
                         INSERT INTO items SELECT g, 'post', 1 FROM generate_series({id}, {id} + 20) g; COMMIT"
                    )
                }
                2..=25 => format!(
                    "INSERT INTO items SELECT g, 'ins', 0 FROM generate_series({id}, {id} + 9) g ON CONFLICT DO NOTHING"
                ),
                26..=50 => {
                    format!("UPDATE items SET n = n + 1, v = 'upd' WHERE id BETWEEN {id} AND {id} + 30")
                }
                _ => format!("DELETE FROM items WHERE id BETWEEN {id} AND {id} + 5"),
            };
            if client.batch_execute(&sql).await.is_err() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        truncates
    })
}

/// kill -9 and restart `run` as soon as its log shows `line` once more.
async fn restart_after_next(run: &mut SynclineRun, line: &str) {
    let seen = run.log().matches(line).count();
    wait_until(Duration::from_secs(120), line, || {
        let n = run.log().matches(line).count();
        async move { n > seen }
    })
    .await;
    run.restart();
}

#[tokio::test(flavor = "multi_thread")]
async fn truncates_empty_the_target_in_order_with_the_rows_around_them_even_after_kill9() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("trunc").await;
    let target = PgDb::create("cdc_trunc").await;
    let src = pg_connect(&source).await;
    src.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text, n int);
         INSERT INTO items SELECT g, 'snap', 0 FROM generate_series(1, 3000) g;
         CREATE TABLE other (id int PRIMARY KEY, v text);
         INSERT INTO other SELECT g, 'o' FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let tgt = pg_connect(&target.url()).await;
    tgt.batch_execute("CREATE SCHEMA archive").await.unwrap();
    let dir = TempDir::new("cdc-truncate");
    let file = dir.path().join("pipeline.yaml");
    let mut yaml = small_pipeline(
        &stack,
        "cdc-truncate",
        &source,
        &target.url(),
        "      - { table: public.items, topic: cdc.items }\n      - { table: public.other, topic: cdc.other }\n",
        "    topics: [cdc.items, cdc.other]\n    tables: { cdc.items: items, cdc.other: other }\n",
    );
    // A second sink that keeps what the source truncates; and a chain
    // rules -> dedup -> sink that must pass truncates on.
    yaml.push_str(&format!(
        r#"  archive:
    type: postgres
    connection: {target}
    schema: archive
    topics: [cdc.items]
    tables: {{ cdc.items: items }}
    on_truncate: ignore
  mirror:
    type: postgres
    connection: {target}
    schema: mirror
    topics: [cdc.items.once]
    tables: {{ cdc.items.once: items }}
processors:
  clean:
    type: rules
    from: [cdc.items]
    to: cdc.items.clean
    steps:
      - rename: {{ v: label }}
  once:
    type: dedup
    from: [cdc.items.clean]
    to: cdc.items.once
"#,
        target = target.url()
    ));
    std::fs::write(&file, yaml).unwrap();
    tgt.batch_execute("CREATE SCHEMA mirror").await.unwrap();
    let tables: &[(&str, &str, &str)] = &[("items", "id, v, n", "id"), ("other", "id, v", "id")];
    let (mut source_run, mut sink_run) = start_source_then_sink(&file).await;
    let state = dir.path().join("state");
    let archive_run = SynclineRun::start_with_args(
        &file,
        &[
            "--component",
            "archive",
            "--component",
            "clean",
            "--component",
            "once",
            "--component",
            "mirror",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after the snapshot",
        &[&sink_run],
    )
    .await;

    // In one transaction: rows before the truncate go, rows after it stay.
    // A row another source wrote stays.
    tgt.batch_execute(
        "INSERT INTO items (id, v, n, _syncline_source, _syncline_position) VALUES (999999, 'elsewhere', 0, 'other', '\\x01')",
    )
    .await
    .unwrap();
    src.batch_execute(
        "BEGIN; INSERT INTO items SELECT g, 'before', 1 FROM generate_series(3001, 3500) g;
         UPDATE items SET v = 'upd' WHERE id <= 10; TRUNCATE items;
         INSERT INTO items SELECT g, 'after', 2 FROM generate_series(1, 200) g; COMMIT",
    )
    .await
    .unwrap();
    wait_equal(
        &source,
        &target.url(),
        &[
            (
                "(SELECT * FROM items WHERE id <> 999999) i",
                "id, v, n",
                "id",
            ),
            ("other", "id, v", "id"),
        ],
        "after a truncate between inserts",
        &[&source_run, &sink_run],
    )
    .await;
    let kept: i64 = tgt
        .query_one("SELECT count(*) FROM items WHERE id = 999999", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the truncate removed a row another source wrote");
    tgt.batch_execute("DELETE FROM items WHERE id = 999999")
        .await
        .unwrap();
    // `on_truncate: ignore` keeps every row, updated by the changes after the truncate.
    wait_until(
        Duration::from_secs(120),
        "the archive to hold every row",
        || {
            let url = target.url();
            async move {
                let c = pg_connect(&url).await;
                let row = c
                    .query_one(
                        "SELECT count(*), count(*) FILTER (WHERE v = 'after') FROM archive.items",
                        &[],
                    )
                    .await;
                row.is_ok_and(|r| r.get::<_, i64>(0) == 3500 && r.get::<_, i64>(1) == 200)
            }
        },
    )
    .await;

    // Truncates among random writes; kill -9 the source right after it
    // published a truncate (before the slot moved past it) and the sink
    // right after it applied one, and both at random points.
    let mut rng = Rng::from_time();
    let stop = Arc::new(AtomicBool::new(false));
    let load = truncating_workload(source.clone(), rng.clone(), stop.clone());
    for round in 0..3 {
        restart_after_next(&mut source_run, "TRUNCATE published").await;
        restart_after_next(&mut sink_run, "TRUNCATE applied").await;
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        if round % 2 == 0 {
            source_run.restart();
        } else {
            sink_run.restart();
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let truncates = load.await.unwrap();
    eprintln!("workload: {truncates} truncates; 3 kills right after a truncate in each of source and sink");
    wait_equal(
        &source,
        &target.url(),
        tables,
        "after truncates among random writes and kill -9",
        &[&source_run, &sink_run, &archive_run],
    )
    .await;
    // Through rules and dedup: the same rows (`v` renamed `label`).
    let want = checksum(&source, "items", "id, v, n", "id").await;
    let mut got = String::new();
    for _ in 0..240 {
        got = checksum(&target.url(), "mirror.items", "id, label, n", "id").await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        got,
        want,
        "the target behind rules and dedup never equalled the source\n{}",
        archive_run
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
