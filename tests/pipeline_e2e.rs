//! End to end through the `syncline` binary, on real parts: a Postgres table
//! is polled by `sql_poll`, published as Avro through `syncline registry` to
//! a real broker, and applied by the `postgres` sink to another database.
//! The target must equal the source row by row — also after the sink or the
//! source is killed with SIGKILL at random moments, several times.

mod support;

use std::time::Duration;
use support::{PgDb, Rng, Stack, SynclineRun, TempDir};

/// Columns compared between source and target (every mapped type).
const COLUMNS: &str = "id, small, i, big, price, free_num, r, d, name, code, flag, day, at_time, local_ts, ts, uid, doc, docb, blob, ints, tags";

const SOURCE_DDL: &str = r#"
CREATE TABLE items (
  id bigserial PRIMARY KEY,
  small smallint, i integer, big bigint,
  price numeric(12,3), free_num numeric,
  r real, d double precision,
  name text, code varchar(20), flag boolean,
  day date, at_time time, local_ts timestamp, ts timestamptz,
  uid uuid, doc json, docb jsonb, blob bytea,
  ints integer[], tags text[],
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
"#;

/// `n` rows starting at `from`; every 7th row is all NULLs but the key.
fn insert_rows(from: i64, n: i64) -> String {
    format!(
        r#"INSERT INTO items ({cols})
        SELECT g,
          CASE WHEN g % 7 = 0 THEN NULL ELSE (g % 30000)::smallint END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE (g * 13)::int END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE g::bigint * 1000000007 END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE (g / 7.0)::numeric(12,3) END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE (g::numeric / 3)::numeric(40,20) END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE (g / 4.0)::real END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE g / 3.0 END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE 'name ' || g || ' ünï ''q''' END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || g END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE g % 2 = 0 END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE date '2020-01-01' + (g % 2000)::int END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE time '00:00:00' + (g % 86400) * interval '1 second' + interval '0.123456 second' END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE timestamp '2021-06-01 12:00:00.5' + g * interval '1 minute' END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE timestamptz '2022-03-04 05:06:07.891011+02' + g * interval '1 second' END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE md5(g::text)::uuid END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE json_build_object('g', g, 'tag', 'x') END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'nested', jsonb_build_array(1, 'two', null)) END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE ARRAY[g::int, NULL, 3] END,
          CASE WHEN g % 7 = 0 THEN NULL ELSE ARRAY['a' || g, NULL, 'c'] END
        FROM generate_series({from}, {to}) g"#,
        cols = COLUMNS,
        to = from + n - 1
    )
}

/// Count and an md5 over every compared column of every row, in key order.
async fn checksum(db: &PgDb, table: &str) -> String {
    let client = db.client().await;
    let sql = format!(
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY id)), '-') FROM (SELECT {COLUMNS} FROM {table}) t"
    );
    match client.query_one(&sql, &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "missing".into(),
    }
}

/// First rows where source and target differ, for the failure message.
async fn first_differences(source: &PgDb, target: &PgDb) -> String {
    let rows = |db: &PgDb, table: &'static str| {
        let url = db.url();
        async move {
            let c = support::pg_connect(&url).await;
            let sql = format!(
                "SELECT id::text, t::text FROM (SELECT {COLUMNS} FROM {table}) t ORDER BY id"
            );
            c.query(&sql, &[])
                .await
                .map(|r| {
                    r.iter()
                        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    let (s, t) = (rows(source, "items").await, rows(target, "items").await);
    let t: std::collections::HashMap<_, _> = t.into_iter().collect();
    s.iter()
        .filter(|(id, row)| t.get(id) != Some(row))
        .take(3)
        .map(|(id, row)| format!("id {id}\n  source: {row}\n  target: {:?}", t.get(id)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pipeline_yaml(
    stack: &Stack,
    name: &str,
    source: &PgDb,
    target: &PgDb,
    batch_size: usize,
) -> String {
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 4
registry:
  url: {registry}
sources:
  shop:
    type: sql_poll
    connection: {source}
    schedule: {{ interval_ms: 200 }}
    batch_size: 2000
    tables:
      - table: public.items
        topic: shop.items
        mode: timestamp
        timestamp_column: updated_at
        incrementing_column: id
        detect_deletes: true
        delete_scan_interval_ms: 1000
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [shop.items]
    tables: {{ shop.items: items }}
    batch_size: {batch_size}
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        source = source.url(),
        target = target.url(),
    )
}

async fn wait_equal(source: &PgDb, target: &PgDb, what: &str, runs: &[&SynclineRun]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let (s, t) = (
            checksum(source, "items").await,
            checksum(target, "items").await,
        );
        if s == t {
            return;
        }
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = runs
                .iter()
                .map(|r| {
                    r.log()
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect();
            panic!(
                "{what}: target never equalled source\nsource {s}\ntarget {t}\n{}\nlogs (newest first):\n{}",
                first_differences(source, target).await,
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_syncs_then_inserts_updates_and_deletes_converge() {
    let stack = Stack::start();
    let (source, target) = (PgDb::create("e2e_src").await, PgDb::create("e2e_dst").await);
    let src = source.client().await;
    src.batch_execute(SOURCE_DDL).await.unwrap();
    src.batch_execute(&insert_rows(1, 10_000)).await.unwrap();

    let dir = TempDir::new("e2e");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        pipeline_yaml(&stack, "e2e-types", &source, &target, 1000),
    )
    .unwrap();
    let run = SynclineRun::start(&file);
    wait_equal(&source, &target, "initial 10k rows", &[&run]).await;

    // Changes while it runs: inserts, updates (incl. to and from NULL), deletes.
    src.batch_execute(&insert_rows(10_001, 500)).await.unwrap();
    src.batch_execute("UPDATE items SET name = 'renamed ' || id, price = NULL WHERE id % 10 = 3")
        .await
        .unwrap();
    src.batch_execute("UPDATE items SET small = 1, docb = '{\"k\": [1, 2]}' WHERE id % 7 = 0")
        .await
        .unwrap();
    src.batch_execute("DELETE FROM items WHERE id % 33 = 5")
        .await
        .unwrap();
    wait_equal(
        &source,
        &target,
        "after inserts, updates and deletes",
        &[&run],
    )
    .await;
    let n: i64 = target
        .client()
        .await
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n,
        10_500 - (1..=10_500).filter(|i| i % 33 == 5).count() as i64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_killed_mid_batch_many_times_leaves_every_row_once() {
    let stack = Stack::start();
    let (source, target) = (
        PgDb::create("kill_sink_src").await,
        PgDb::create("kill_sink_dst").await,
    );
    let src = source.client().await;
    src.batch_execute(SOURCE_DDL).await.unwrap();
    src.batch_execute(&insert_rows(1, 30_000)).await.unwrap();

    let dir = TempDir::new("kill-sink");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        pipeline_yaml(&stack, "kill-sink", &source, &target, 5000),
    )
    .unwrap();
    // Source and sink in separate processes, so the sink can be killed alone.
    let mut source_run = run_component(&file, "shop");
    let mut sink_run = run_component(&file, "warehouse");
    let mut rng = Rng::from_time();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        if round == 2 {
            src.batch_execute("UPDATE items SET name = 'updated while killing' WHERE id % 5 = 0")
                .await
                .unwrap();
        }
        sink_run.kill9();
        sink_run.restart();
    }
    wait_equal(
        &source,
        &target,
        "after killing the sink 6 times",
        &[&sink_run, &source_run],
    )
    .await;
    source_run.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn source_killed_mid_poll_many_times_loses_and_duplicates_nothing() {
    let stack = Stack::start();
    let (source, target) = (
        PgDb::create("kill_src_src").await,
        PgDb::create("kill_src_dst").await,
    );
    let src = source.client().await;
    src.batch_execute(SOURCE_DDL).await.unwrap();
    src.batch_execute(&insert_rows(1, 20_000)).await.unwrap();

    let dir = TempDir::new("kill-source");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        pipeline_yaml(&stack, "kill-source", &source, &target, 2000),
    )
    .unwrap();
    let mut source_run = run_component(&file, "shop");
    let mut sink_run = run_component(&file, "warehouse");
    let mut rng = Rng::from_time();
    let mut next_id = 20_001;
    for _ in 0..6 {
        // Kill at a random point of its work: start-up, a poll, a publish, a cursor write.
        tokio::time::sleep(Duration::from_millis(800 + rng.below(2500))).await;
        source_run.kill9();
        // Writes while the source is down, and updates of rows already published.
        src.batch_execute(&insert_rows(next_id, 700)).await.unwrap();
        next_id += 700;
        src.batch_execute(&format!(
            "UPDATE items SET i = i + 1 WHERE id % {} = 0",
            3 + rng.below(5)
        ))
        .await
        .unwrap();
        source_run.restart();
    }
    wait_equal(
        &source,
        &target,
        "after killing the source 6 times",
        &[&source_run, &sink_run],
    )
    .await;
    let client = target.client().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, next_id - 1, "every row exactly once");
    sink_run.kill9();
}

fn run_component(file: &std::path::Path, component: &str) -> SynclineRun {
    SynclineRun::start_with_args(file, &["--component", component])
}
