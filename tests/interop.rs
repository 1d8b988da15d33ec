//! Interoperability with a stock Confluent client (Python confluent-kafka's
//! SchemaRegistryClient, AvroSerializer and AvroDeserializer): it decodes
//! what syncline writes, and syncline's sink applies what it writes.

mod support;

use std::process::Command;
use std::time::Duration;
use support::{wait_until, PgDb, Stack, SynclineRun, TempDir};

/// The Python with confluent-kafka installed by `make tools`.
fn python() -> String {
    std::env::var("SYNCLINE_PYTHON").unwrap_or_else(|_| {
        let p = format!(
            "{}/.cache/syncline/venv/bin/python",
            std::env::var("HOME").unwrap()
        );
        assert!(
            std::path::Path::new(&p).exists(),
            "{p} missing: run `make tools`"
        );
        p
    })
}

fn client(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/client.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "client.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_python_client_decodes_what_syncline_writes() {
    let stack = Stack::start();
    let db = PgDb::create("interop_src").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(10,2), seen_at timestamptz, flag boolean);
         INSERT INTO people SELECT g, 'p' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE g / 8.0 END,
                                   timestamptz '2024-02-29 23:59:59.123456+00' + g * interval '1 hour', g % 2 = 0
         FROM generate_series(1, 200) g;",
    )
    .await
    .unwrap();
    let dir = TempDir::new("interop");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            "name: interop-out\nkafka: {{ bootstrap_servers: '{}' }}\nregistry: {{ url: '{}' }}\nsources:\n  db:\n    type: sql_poll\n    connection: {}\n    schedule: {{ interval_ms: 200 }}\n    tables:\n      - table: public.people\n        topic: out.people\n        mode: incrementing\n        incrementing_column: id\n",
            stack.bootstrap(),
            stack.registry_url(),
            db.url()
        ),
    )
    .unwrap();
    let _run = SynclineRun::start(&file);

    let out = client(&[
        "consume",
        &stack.bootstrap(),
        &stack.registry_url(),
        "out.people",
        "200",
    ]);
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 200);
    let expected = c
        .query(
            "SELECT id, name, amount::text, (extract(epoch from seen_at) * 1000000)::bigint, flag FROM people ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let mut by_id: Vec<&serde_json::Value> = records.iter().collect();
    by_id.sort_by_key(|r| r["key"]["id"].as_i64());
    for (rec, row) in by_id.iter().zip(&expected) {
        let after = &rec["value"]["after"];
        assert_eq!(rec["key"]["id"].as_i64(), Some(row.get::<_, i64>(0)));
        assert_eq!(rec["value"]["op"], "UPSERT");
        assert_eq!(rec["value"]["source"]["table"], "public.people");
        assert_eq!(
            after["name"].as_str(),
            Some(row.get::<_, String>(1).as_str())
        );
        assert_eq!(
            after["amount"].as_str().map(str::to_string),
            row.get::<_, Option<String>>(2)
        );
        assert_eq!(after["seen_at"].as_i64(), Some(row.get::<_, i64>(3)));
        assert_eq!(after["flag"].as_bool(), Some(row.get::<_, bool>(4)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn syncline_sink_applies_what_the_stock_serializer_writes() {
    let stack = Stack::start();
    client(&[
        "produce",
        &stack.bootstrap(),
        &stack.registry_url(),
        "ext.people",
        "300",
    ]);

    let target = PgDb::create("interop_dst").await;
    let dir = TempDir::new("interop");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            "name: interop-in\nkafka: {{ bootstrap_servers: '{}' }}\nregistry: {{ url: '{}' }}\nexternal_topics: [ext.people]\nsinks:\n  db:\n    type: postgres\n    connection: {}\n    topics: [ext.people]\n    tables: {{ ext.people: people }}\n",
            stack.bootstrap(),
            stack.registry_url(),
            target.url()
        ),
    )
    .unwrap();
    let run = SynclineRun::start(&file);
    let c = target.client().await;
    wait_until(
        Duration::from_secs(120),
        "the sink to apply 300 upserts and 30 deletes",
        || async {
            c.query_one("SELECT count(*) FROM people", &[])
                .await
                .map(|r| r.get::<_, i64>(0) == 270)
                .unwrap_or(false)
        },
    )
    .await;
    let rows = c
        .query("SELECT id, name, amount::text, (extract(epoch from seen_at) * 1000000)::bigint, note FROM people ORDER BY id", &[])
        .await
        .unwrap();
    for r in &rows {
        let id: i64 = r.get(0);
        assert_ne!(id % 10, 0, "deleted key {id} is present\n{}", run.log());
        assert_eq!(r.get::<_, String>(1), format!("person {id}"));
        let amount: String = r.get(2);
        assert_eq!(amount.parse::<f64>().unwrap(), id as f64 / 4.0);
        assert_eq!(r.get::<_, i64>(3), (1_600_000_000 + id) * 1_000_000 + id);
        let note: Option<String> = r.get(4);
        assert_eq!(
            note,
            if id % 3 == 0 {
                None
            } else {
                Some(format!("note {id}"))
            }
        );
    }
}
