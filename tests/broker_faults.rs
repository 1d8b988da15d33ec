//! Broker failures under a running pipeline, on a three-node Apache Kafka
//! cluster (KRaft; every node a broker and a controller). The pipeline's
//! topics have replication factor 3 and `min.insync.replicas=2`, as a user
//! would configure them in production.
//!
//! Source (`sql_poll`) -> processor (`rules`) -> sink (`postgres`), all
//! through the real `syncline` binary and `syncline registry`, with a
//! workload of inserts, updates and deletes running the whole time:
//! 1. kill -9 of the broker that leads most partitions of the processor's
//!    output, mid-stream: the pipeline keeps moving on the two others;
//!    then the broker starts again and catches up;
//! 2. a rolling restart of all three brokers (clean shutdown, start, wait
//!    until every replica is back in sync, next);
//! 3. the target must then equal the source, row by row (nothing lost, no
//!    stale row, no row twice), and the registry, restarted while the
//!    leader of `_schemas` is down, must serve every schema it served before.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{wait_until, Cluster, PgDb, RegistryProcess, Rng, SynclineRun, TempDir};

const SOURCE_DDL: &str = r#"
CREATE TABLE items (
  id bigint PRIMARY KEY,
  n integer NOT NULL,
  label text,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
"#;

/// The topics the pipeline uses (all created by syncline).
const TOPICS: &[&str] = &["shop.items", "shop.items.clean", "_syncline_cursors"];

fn pipeline_yaml(cluster: &Cluster, registry: &str, source: &PgDb, target: &PgDb) -> String {
    format!(
        r#"name: broker-faults
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 3
  replication_factor: 3
  topic_properties:
    min.insync.replicas: "2"
  properties:
    session.timeout.ms: "6000"
    heartbeat.interval.ms: "500"
registry:
  url: {registry}
sources:
  shop:
    type: sql_poll
    connection: {source}
    schedule: {{ interval_ms: 100 }}
    tables:
      - table: public.items
        topic: shop.items
        mode: timestamp
        timestamp_column: updated_at
        incrementing_column: id
        detect_deletes: true
        delete_scan_interval_ms: 1000
processors:
  clean:
    type: rules
    from: [shop.items]
    to: shop.items.clean
    steps:
      - set: {{ label: "row.label + '!'" }}
      - drop: [updated_at]
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [shop.items.clean]
    tables: {{ shop.items.clean: items }}
"#,
        bootstrap = cluster.bootstrap(),
        source = source.url(),
        target = target.url(),
    )
}

/// What the target must hold: every source row, label with the rules' `!`.
async fn expected(source: &PgDb) -> String {
    one_text(
        source,
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(id || ',' || n || ',' || label || '!', '|' ORDER BY id)), '-') FROM items",
    )
    .await
}

async fn actual(target: &PgDb) -> String {
    one_text(
        target,
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(id || ',' || n || ',' || label, '|' ORDER BY id)), '-') FROM items",
    )
    .await
}

async fn one_text(db: &PgDb, sql: &str) -> String {
    match db.client().await.query_one(sql, &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "missing".into(),
    }
}

async fn target_rows(target: &PgDb) -> i64 {
    match target
        .client()
        .await
        .query_one("SELECT count(*) FROM items", &[])
        .await
    {
        Ok(row) => row.get(0),
        Err(_) => 0,
    }
}

/// Inserts, updates and deletes in small transactions until `stop`.
fn workload(source: &PgDb, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    let url = source.url();
    tokio::spawn(async move {
        let c = support::pg_connect(&url).await;
        let mut rng = Rng::from_time();
        let mut next = 1i64;
        while !stop.load(Ordering::SeqCst) {
            let tx = format!(
                "BEGIN;
                 INSERT INTO items (id, n, label) SELECT g, 0, 'row ' || g FROM generate_series({next}, {last}) g;
                 UPDATE items SET n = n + 1, label = label || '.' WHERE id IN ({a}, {b}, {c}, {d});
                 DELETE FROM items WHERE id = {del};
                 COMMIT;",
                last = next + 19,
                a = 1 + rng.below(next as u64),
                b = 1 + rng.below(next as u64),
                c = 1 + rng.below(next as u64),
                d = 1 + rng.below(next as u64),
                del = 1 + rng.below(next as u64),
            );
            // A failed transaction (none expected) changes nothing: both
            // sides are compared at the end, whatever ran.
            let _ = c.batch_execute(&tx).await;
            next += 20;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        next - 1
    })
}

async fn wait_equal(
    source: &PgDb,
    target: &PgDb,
    what: &str,
    run: &SynclineRun,
    cluster: &Cluster,
) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (want, got) = (expected(source).await, actual(target).await);
        if want == got {
            return;
        }
        if Instant::now() > deadline {
            let log = run.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let broker_tail: Vec<String> = cluster
                .brokers
                .iter()
                .map(|b| {
                    let log = b.log();
                    let lines: Vec<&str> = log.lines().rev().take(10).collect();
                    format!("broker {}:\n{}", b.node_id(), lines.join("\n"))
                })
                .collect();
            panic!(
                "{what}: target never equalled source\nsource {want}\ntarget {got}\nsyncline log (newest first):\n{}\n{}",
                tail.join("\n"),
                broker_tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every schema the registry serves: subjects with their versions' ids and texts.
async fn registry_contents(url: &str) -> Vec<(String, i64, String)> {
    let http = reqwest::Client::new();
    let subjects: Vec<String> = http
        .get(format!("{url}/subjects"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    for s in subjects {
        let versions: Vec<i64> = http
            .get(format!("{url}/subjects/{s}/versions"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for v in versions {
            let body: serde_json::Value = http
                .get(format!("{url}/subjects/{s}/versions/{v}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            out.push((
                format!("{s}/{v}"),
                body["id"].as_i64().unwrap(),
                body["schema"].as_str().unwrap().to_string(),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_and_rolling_restart_leave_the_target_equal_to_the_source() {
    let mut cluster = Cluster::start();
    let mut registry = RegistryProcess::start_at(&cluster.bootstrap(), "_schemas");
    let (source, target) = (PgDb::create("bf_src").await, PgDb::create("bf_dst").await);
    source
        .client()
        .await
        .batch_execute(SOURCE_DDL)
        .await
        .unwrap();
    let dir = TempDir::new("broker-faults");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        pipeline_yaml(&cluster, &registry.url(), &source, &target),
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&source, stop.clone());
    let run = SynclineRun::start(&file);
    wait_until(
        Duration::from_secs(120),
        "the first rows at the target",
        || {
            let t = &target;
            async move { target_rows(t).await > 100 }
        },
    )
    .await;
    for t in TOPICS.iter().chain(&["_schemas"]) {
        assert!(
            cluster.replicas(t).iter().all(|&r| r == 3),
            "{t} is not replicated three times"
        );
    }

    // 1. kill -9 the broker leading most of the output's partitions.
    let leader = cluster.leader_of("shop.items.clean");
    cluster.brokers[leader].kill9();
    let before = target_rows(&target).await;
    wait_until(
        Duration::from_secs(90),
        "the target to keep moving with one broker down",
        || {
            let t = &target;
            async move { target_rows(t).await > before + 200 }
        },
    )
    .await;
    cluster.brokers[leader].start_again();
    for t in TOPICS {
        cluster.wait_in_sync(t);
    }

    // 2. Rolling restart: each broker in turn shuts down cleanly and comes
    // back; the next one goes only when every replica is in sync again.
    for i in 0..cluster.brokers.len() {
        cluster.brokers[i].stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.brokers[i].start_again();
        for t in TOPICS.iter().chain(&["_schemas", "__consumer_offsets"]) {
            cluster.wait_in_sync(t);
        }
    }

    // 3. The workload ends; the target must converge to the source.
    stop.store(true, Ordering::SeqCst);
    let last_id = load.await.unwrap();
    assert!(last_id > 1000, "the workload wrote only {last_id} rows");
    wait_equal(&source, &target, "after the broker faults", &run, &cluster).await;

    // The registry's `_schemas` survives the same: with the partition's
    // leader down, a registry restarted from scratch reads every schema back.
    let served = registry_contents(&registry.url()).await;
    assert!(!served.is_empty(), "the registry holds no schema");
    let schemas_leader = cluster.leader_of("_schemas");
    cluster.brokers[schemas_leader].kill9();
    registry.restart();
    assert_eq!(
        registry_contents(&registry.url()).await,
        served,
        "the registry restarted with a broker down serves other schemas\n{}",
        registry.log()
    );
    cluster.brokers[schemas_leader].start_again();
}
