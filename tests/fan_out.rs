//! One `postgres_cdc` source fanned out to every kind of sink at once: a
//! throwaway Postgres with `wal_level = logical` as the source, and
//! Postgres, MariaDB, a SQLite file and an HTTP receiver (that fails on
//! purpose: 503s and dropped connections) as targets, each its own sink (its
//! own consumer group) reading the same topic, under a concurrent workload
//! of inserts, updates and deletes, with the sinks killed (-9) while they
//! write. Every target must converge to the source, row by row; for the
//! receiver, after dropping repeated change ids as docs tell receivers to.

mod support;

use mysql_async::prelude::Queryable;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::pg_server::PgServer;
use support::receiver::{Answer, Receiver};
use support::target::Target;
use support::{pg_connect, Rng, Stack, SynclineRun, TempDir};

/// `id -> (name, amount as exact text, qty)`.
type Rows = BTreeMap<i64, (String, String, i64)>;

const DDL: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, \
    amount numeric(12,2) NOT NULL, qty int NOT NULL);
    INSERT INTO items SELECT g, 'item ' || g, g / 8.0, g % 100 FROM generate_series(1, 5000) g;";

async fn source_rows(url: &str) -> Rows {
    pg_connect(url)
        .await
        .query("SELECT id, name, amount::text, qty::bigint FROM items", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

/// The rows of a target's `items`, in the same shape (empty while the
/// table does not exist yet).
async fn target_rows(target: &Target) -> Rows {
    match target {
        Target::Postgres { db, .. } => db
            .client()
            .await
            .query("SELECT id, name, amount::text, qty::bigint FROM items", &[])
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
                    .collect()
            })
            .unwrap_or_default(),
        Target::Mysql(db) => {
            let mut c = db.conn().await;
            let rows: Vec<(i64, String, String, i64)> = c
                .query("SELECT id, name, CAST(amount AS CHAR), qty FROM items")
                .await
                .unwrap_or_default();
            let _ = c.disconnect().await;
            rows.into_iter()
                .map(|(i, n, a, q)| (i, (n, a, q)))
                .collect()
        }
        Target::Sqlite { path, .. } => {
            let Ok(c) = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            ) else {
                return Rows::new();
            };
            let Ok(mut stmt) = c.prepare("SELECT id, name, amount, qty FROM items") else {
                return Rows::new();
            };
            stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
    }
}

/// What the receiver holds after applying every accepted change in the order
/// it accepted them, each change id once.
fn received_rows(receiver: &Receiver) -> Rows {
    let mut seen = HashSet::new();
    let mut rows = Rows::new();
    for r in receiver.accepted() {
        for c in r.body["changes"].as_array().unwrap() {
            if !seen.insert(c["id"].as_str().unwrap().to_string()) {
                continue;
            }
            let id = c["key"]["id"].as_i64().unwrap();
            if c["op"] == "DELETE" {
                rows.remove(&id);
                continue;
            }
            let a = &c["after"];
            let row = (
                a["name"].as_str().unwrap().to_string(),
                a["amount"].as_str().unwrap().to_string(),
                a["qty"].as_i64().unwrap(),
            );
            rows.insert(id, row);
        }
    }
    rows
}

/// Random single-row transactions until `stop`: inserts of new ids,
/// updates and deletes of existing ones. Returns how many ran.
fn workload(url: String, mut rng: Rng, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let c = pg_connect(&url).await;
        let mut n = 0u64;
        let mut next_id = 5001i64;
        while !stop.load(Ordering::SeqCst) {
            let id = 1 + rng.below(next_id as u64) as i64;
            let sql = match rng.below(10) {
                0..=3 => {
                    next_id += 1;
                    format!("INSERT INTO items VALUES ({next_id}, 'new {next_id}', {next_id} / 3.0, 1)")
                }
                4..=7 => format!(
                    "UPDATE items SET qty = qty + 1, amount = amount + 0.01, name = name || '+' WHERE id = {id}"
                ),
                _ => format!("DELETE FROM items WHERE id = {id}"),
            };
            c.batch_execute(&sql).await.unwrap();
            n += 1;
            if n.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cdc_source_fans_out_to_postgres_mariadb_sqlite_and_http_and_all_converge() {
    let stack = Stack::start();
    let pg = PgServer::start(&[]);
    let source = pg.create_db("fan").await;
    pg_connect(&source).await.batch_execute(DDL).await.unwrap();
    let targets = [
        ("to_postgres", Target::postgres("fan").await),
        ("to_mysql", Target::mysql("fan").await),
        ("to_sqlite", Target::sqlite("fan")),
    ];
    let mut sinks = String::new();
    for (name, target) in &targets {
        sinks.push_str(&format!(
            "  {name}:\n{}    topics: [fan.items]\n    tables: {{ fan.items: items }}\n    batch_size: 500\n",
            target.sink_lines("    ")
        ));
    }
    // Every 9th request a 503, every 17th connection dropped unanswered.
    let receiver = Receiver::start(|n, _| match n {
        n if n % 17 == 0 => Answer::Drop,
        n if n % 9 == 0 => Answer::Status(503),
        _ => Answer::Ok,
    })
    .await;
    sinks.push_str(&format!(
        "  to_http:\n    type: http\n    url: {}\n    topics: [fan.items]\n    batch_size: 500\n    timeout_ms: 2000\n",
        receiver.url()
    ));
    let dir = TempDir::new("fan-out");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            "name: fan
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 3
registry:
  url: {registry}
sources:
  cdc:
    type: postgres_cdc
    connection: {source}
    heartbeat_interval_ms: 500
    tables:
      - {{ table: public.items, topic: fan.items }}
sinks:
{sinks}",
            bootstrap = stack.bootstrap(),
            registry = stack.registry_url(),
        ),
    )
    .unwrap();

    let mut rng = Rng::from_time();
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(source.clone(), rng.clone(), stop.clone());
    let mut cdc = SynclineRun::start_with_args(&file, &["--component", "cdc"]);
    let mut runs: Vec<SynclineRun> = targets
        .iter()
        .map(|(name, _)| *name)
        .chain(["to_http"])
        .map(|name| SynclineRun::start_with_args(&file, &["--component", name]))
        .collect();
    // Each sink is killed twice while the workload runs.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500 + rng.below(1500))).await;
        for run in &mut runs {
            run.kill9();
            run.restart();
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let txs = load.await.unwrap();
    let want = source_rows(&source).await;
    eprintln!(
        "workload: {txs} transactions; the source has {} rows",
        want.len()
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    let names = targets.iter().map(|(name, _)| *name).chain(["to_http"]);
    for (i, name) in names.enumerate() {
        loop {
            let have = match targets.get(i) {
                Some((_, target)) => target_rows(target).await,
                None => received_rows(&receiver),
            };
            if have == want {
                break;
            }
            let logs = format!("cdc:\n{}\n{name}:\n{}", cdc.log(), runs[i].log());
            assert!(
                cdc.exit_code().is_none() && runs[i].exit_code().is_none(),
                "a process exited:\n{logs}"
            );
            if Instant::now() > deadline {
                let diff: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| have.get(k) != Some(v))
                    .take(5)
                    .map(|(k, v)| format!("{k}: source {v:?}, target {:?}", have.get(k)))
                    .collect();
                panic!(
                    "{name} did not converge: {} rows vs {} in the source; first differences {diff:?}\n{logs}",
                    have.len(),
                    want.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert!(
        receiver.seen() > receiver.accepted().len() as u64,
        "the receiver refused nothing; its failures were not exercised"
    );
}
