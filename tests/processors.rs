//! The `rules` processor end to end through the `syncline` binary, on real
//! parts: a Postgres table polled by `sql_poll`, a rules processor (filter,
//! set, rename, mask, route) between two topics, and the `postgres` sink.
//! The target must hold exactly the transformed rows that passed the filter;
//! rows on which an expression fails go to the dead-letter topic with their
//! reason; and killing the pipeline with SIGKILL mid-stream changes nothing.

mod support;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use std::collections::BTreeSet;
use std::time::Duration;
use support::{PgDb, Stack, SynclineRun, TempDir};

const SOURCE_DDL: &str = r#"
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  amount_cents bigint NOT NULL,
  qty integer NOT NULL,
  email text,
  country text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"#;

/// Rows `from..from+n`: a third are `XX` (filtered), a third `DE` (routed),
/// a fifth have `qty = 0` (the division fails: dead-lettered).
fn insert_rows(from: i64, n: i64) -> String {
    format!(
        "INSERT INTO orders (id, amount_cents, qty, email, country)
         SELECT g, g * 100, g % 5, 'user' || g || '@example.com',
                CASE g % 3 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' ELSE 'XX' END
         FROM generate_series({from}, {to}) g",
        to = from + n - 1
    )
}

/// What the processor must make of the source table: per output table, the
/// rows as `id|contact|unit_cents|country` text, in id order.
fn expected_sql(de: bool) -> String {
    let cmp = if de { "=" } else { "<>" };
    format!(
        "SELECT id::text || '|' || encode(sha256(email::bytea), 'hex') || '|' || (amount_cents / qty)::text || '|' || country
         FROM orders WHERE country <> 'XX' AND qty <> 0 AND country {cmp} 'DE' ORDER BY id"
    )
}

const TARGET_SQL: &str =
    "SELECT id::text || '|' || contact || '|' || unit_cents::text || '|' || country FROM {t} ORDER BY id";

fn pipeline_yaml(stack: &Stack, name: &str, source: &PgDb, target: &PgDb) -> String {
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 3
registry:
  url: {registry}
sources:
  shop:
    type: sql_poll
    connection: {source}
    schedule: {{ interval_ms: 200 }}
    batch_size: 1000
    tables:
      - table: public.orders
        topic: shop.orders
        mode: timestamp
        timestamp_column: updated_at
        incrementing_column: id
processors:
  clean:
    type: rules
    from: [shop.orders]
    to: shop.orders.clean
    batch_size: 300
    steps:
      - filter: "row.country != 'XX'"
      - drop: [updated_at]
      - set: {{ unit_cents: "row.amount_cents / row.qty" }}
      - rename: {{ email: contact }}
      - mask: {{ contact: {{ hash: sha256 }} }}
      - route: [ {{ when: "row.country == 'DE'", topic: shop.orders.de }} ]
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [shop.orders.clean, shop.orders.de]
    tables: {{ shop.orders.clean: orders_clean, shop.orders.de: orders_de }}
    batch_size: 500
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        source = source.url(),
        target = target.url(),
    )
}

async fn rows(db: &PgDb, sql: &str) -> Vec<String> {
    let c = db.client().await;
    match c.query(sql, &[]).await {
        Ok(r) => r.iter().map(|r| r.get::<_, String>(0)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Wait until both target tables hold exactly the expected rows.
async fn wait_exact(source: &PgDb, target: &PgDb, what: &str, run: &SynclineRun) {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let mut equal = true;
        let mut detail = String::new();
        for (de, table) in [(false, "orders_clean"), (true, "orders_de")] {
            let want = rows(source, &expected_sql(de)).await;
            let got = rows(target, &TARGET_SQL.replace("{t}", table)).await;
            if want != got {
                equal = false;
                let first = want.iter().zip(&got).find(|(w, g)| w != g);
                detail.push_str(&format!(
                    "{table}: want {} rows, got {}; first difference {first:?}\n",
                    want.len(),
                    got.len()
                ));
            }
        }
        if equal {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = run.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{what}: target is not exact\n{detail}log (newest first):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A dead-lettered record: its key bytes (the input's key, unchanged), where
/// it was read (`topic[partition]@offset`) and the reason.
struct DeadLetter {
    key: Vec<u8>,
    origin: String,
    reason: String,
}

/// The records of the dead-letter topic, read until it is quiet.
fn dead_letters(bootstrap: &str, topic: &str, at_least: usize) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-dead-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = std::time::Instant::now();
                let headers = m.headers().expect("dead letters carry headers");
                let get = |k: &str| {
                    headers
                        .iter()
                        .find(|h| h.key == k)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| panic!("dead letter without `{k}`"))
                };
                let origin = format!(
                    "{}[{}]@{}",
                    get("syncline.topic"),
                    get("syncline.partition"),
                    get("syncline.offset")
                );
                out.push(DeadLetter {
                    key: m.key().unwrap_or_default().to_vec(),
                    origin,
                    reason: get("syncline.reason"),
                });
            }
            _ if out.len() >= at_least && quiet_since.elapsed() > Duration::from_secs(3) => break,
            _ => {}
        }
    }
    out
}

fn expected_dead(ids: std::ops::RangeInclusive<i64>) -> usize {
    ids.filter(|g| g % 5 == 0 && g % 3 != 2).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_transform_filter_route_and_dead_letter_failures() {
    let stack = Stack::start();
    let (source, target) = (
        PgDb::create("proc_src").await,
        PgDb::create("proc_dst").await,
    );
    let src = source.client().await;
    src.batch_execute(SOURCE_DDL).await.unwrap();
    src.batch_execute(&insert_rows(1, 3000)).await.unwrap();

    let dir = TempDir::new("processors");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, pipeline_yaml(&stack, "proc-rules", &source, &target)).unwrap();
    let run = SynclineRun::start(&file);
    wait_exact(&source, &target, "3000 rows", &run).await;

    let dead = dead_letters(
        &stack.bootstrap(),
        "proc-rules.clean.dead",
        expected_dead(1..=3000),
    );
    assert_eq!(
        dead.len(),
        expected_dead(1..=3000),
        "every failing row once, none other"
    );
    for DeadLetter { origin, reason, .. } in &dead {
        assert!(origin.starts_with("shop.orders["), "{origin}");
        assert!(
            reason.contains("row.amount_cents / row.qty")
                && reason.to_lowercase().contains("division by zero"),
            "{reason}"
        );
    }
    let distinct: BTreeSet<&String> = dead.iter().map(|d| &d.origin).collect();
    assert_eq!(distinct.len(), dead.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_three_times_mid_stream_the_target_is_still_exact() {
    let stack = Stack::start();
    let (source, target) = (
        PgDb::create("proc_kill_src").await,
        PgDb::create("proc_kill_dst").await,
    );
    let src = source.client().await;
    src.batch_execute(SOURCE_DDL).await.unwrap();
    src.batch_execute(&insert_rows(1, 5000)).await.unwrap();

    let dir = TempDir::new("processors-kill");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, pipeline_yaml(&stack, "proc-kill", &source, &target)).unwrap();
    let mut run = SynclineRun::start(&file);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("random seed: {seed}");
    let mut rng = seed | 1;
    let mut next_id = 5001;
    for _ in 0..3 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(500 + rng % 2500)).await;
        src.batch_execute(&insert_rows(next_id, 1000))
            .await
            .unwrap();
        next_id += 1000;
        run.kill9();
        run.restart();
    }
    wait_exact(&source, &target, "after 3 kills", &run).await;
    // After a kill, a failing row may be dead-lettered twice (the processor
    // replays its batch, or the source republishes the row): each failing
    // row (by key) is there, and no other.
    let dead = dead_letters(
        &stack.bootstrap(),
        "proc-kill.clean.dead",
        expected_dead(1..=next_id - 1),
    );
    let distinct: BTreeSet<&[u8]> = dead.iter().map(|d| d.key.as_slice()).collect();
    assert_eq!(distinct.len(), expected_dead(1..=next_id - 1));
    run.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incompatible_output_schema_stops_the_pipeline_before_producing() {
    let stack = Stack::start();
    let (source, target) = (
        PgDb::create("proc_compat_src").await,
        PgDb::create("proc_compat_dst").await,
    );
    let src = source.client().await;
    src.batch_execute(SOURCE_DDL).await.unwrap();
    src.batch_execute(&insert_rows(1, 300)).await.unwrap();

    let dir = TempDir::new("processors-compat");
    let file = dir.path().join("pipeline.yaml");
    let yaml = pipeline_yaml(&stack, "proc-compat", &source, &target);
    std::fs::write(&file, &yaml).unwrap();
    let mut run = SynclineRun::start(&file);
    wait_exact(&source, &target, "300 rows", &run).await;
    run.kill9();
    let before = (
        rows(&target, &TARGET_SQL.replace("{t}", "orders_clean")).await,
        rows(&target, &TARGET_SQL.replace("{t}", "orders_de")).await,
    );

    // `unit_cents` turns from long into text: the registry (BACKWARD) refuses it.
    let changed = yaml.replace(
        "      - rename:",
        "      - cast: { unit_cents: text }\n      - rename:",
    );
    // `validate --registry` sees it before anything runs, and passes the
    // unchanged file.
    let check = |f: &std::path::Path| {
        std::process::Command::new(support::syncline_bin())
            .args(["validate", "--registry"])
            .arg(f)
            .output()
            .unwrap()
    };
    let ok = check(&file);
    let ok_out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{ok_out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        ok_out.contains("output schema is compatible with `shop.orders.clean-value`"),
        "{ok_out}"
    );
    std::fs::write(&file, changed).unwrap();
    let bad = check(&file);
    let bad_err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{bad_err}");
    assert!(
        bad_err.contains("incompatible with the latest version of `shop.orders.clean-value`"),
        "{bad_err}"
    );
    src.batch_execute(&insert_rows(301, 100)).await.unwrap();
    let mut run = SynclineRun::start(&file);
    let code = run.wait_exit(Duration::from_secs(120));
    let log = run.log();
    assert!(
        matches!(code, Some(c) if c != 0),
        "the pipeline must stop with an error, got {code:?}\n{log}"
    );
    assert!(
        log.contains("the schema of subject `shop.orders.")
            && log.contains("the registry refused the schema as incompatible"),
        "{log}"
    );
    let after = (
        rows(&target, &TARGET_SQL.replace("{t}", "orders_clean")).await,
        rows(&target, &TARGET_SQL.replace("{t}", "orders_de")).await,
    );
    assert_eq!(before, after, "nothing produced with the refused schema");
}
