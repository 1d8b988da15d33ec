//! What only the sqlite sink has: its type mapping (every mapped type lands
//! as `ddl.rs` says, read back from the file with rusqlite), a table you
//! made whose constraint refuses a record, and a file it cannot write.
//! Against a real Apache Kafka broker and the real `syncline registry`. The
//! scenarios every database sink shares (replays, kill -9, groups, TOAST,
//! poison) are in `sinks.rs`.

mod support;

use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::time::Duration;
use support::changes::{all_types, items_table, upsert, AllTypes, Producer};
use support::{wait_until, Stack, TempDir};
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Position;
use syncline_runtime::Component;
use syncline_sinks::sqlite::SqliteSinkConfig;

const WAIT: Duration = Duration::from_secs(120);

fn ctx(stack: &Stack) -> ComponentContext {
    ComponentContext {
        pipeline: "test".into(),
        component: "replica".into(),
        kafka: KafkaConfig::new(stack.bootstrap()),
        registry: RegistryConfig::new(stack.registry_url()),
        state_dir: std::env::temp_dir(),
        limits: Default::default(),
        status: Default::default(),
    }
}

fn config(yaml: &str) -> SqliteSinkConfig {
    let cfg: SqliteSinkConfig =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test config: {e}\n{yaml}"));
    assert_eq!(cfg.check(), [], "{yaml}");
    cfg
}

fn consumed(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .and_then(|c| {
            c.query_row(
                "SELECT coalesce(sum(next_offset), 0) FROM syncline_offsets WHERE group_id = 'syncline.test.replica'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

async fn run_until(stack: &Stack, cfg: SqliteSinkConfig, path: &std::path::Path, n: i64) {
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let ctx = ctx(stack);
    let task = tokio::spawn(async move { cfg.run(ctx, s).await });
    wait_until(WAIT, &format!("{n} records committed"), || async {
        consumed(path) >= n
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(consumed(path), n, "more offsets than records");
}

/// Every mapped type, with extreme values, NULLs and float specials, lands
/// in a table created from the registered schema, stored as the mapping in
/// `sinks/src/sqlite/ddl.rs` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_as_the_mapping_says() {
    let stack = Stack::start();
    let dir = TempDir::new("sqlite-types");
    let path = dir.path().join("replica.db");
    let p = Producer::new(&stack);
    p.topic("types.all", 1).await;
    let AllTypes {
        table,
        events,
        uuid,
        jsonb,
        json,
        text,
        all_bytes,
    } = all_types();
    p.send("types.all", &table, &events).await;
    let cfg = config(&format!("path: {}\ntopics: [types.all]\n", path.display()));
    run_until(&stack, cfg, &path, 3).await;

    let c = Connection::open(&path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let declared: BTreeMap<String, (String, bool)> = c
        .prepare("SELECT name, type, \"notnull\" FROM pragma_table_info('types_all')")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want = [
        ("id", "INTEGER", true),
        ("i", "INTEGER", false),
        ("l", "INTEGER", false),
        ("d", "TEXT", false),
        ("nt", "TEXT", false),
        ("f", "REAL", false),
        ("db", "REAL", false),
        ("t", "TEXT", false),
        ("b", "BOOLEAN", false),
        ("dt", "DATE", false),
        ("tm", "TIME", false),
        ("ts", "DATETIME", false),
        ("tz", "TIMESTAMPTZ", false),
        ("u", "UUID", false),
        ("js", "JSON", false),
        ("jn", "JSON", false),
        ("by", "BLOB", false),
        ("ai", "JSON", false),
        ("at", "JSON", false),
        ("ad", "JSON", false),
        // Only key columns are NOT NULL (see ddl.rs).
        ("Mixed Case", "TEXT", false),
        ("_syncline_source", "TEXT", false),
        ("_syncline_position", "BLOB", false),
    ];
    assert_eq!(
        declared,
        want.iter()
            .map(|(n, t, nn)| (n.to_string(), (t.to_string(), *nn)))
            .collect::<BTreeMap<_, _>>()
    );

    let row = |id: i64| -> BTreeMap<String, Sql> {
        let mut stmt = c.prepare("SELECT * FROM types_all WHERE id = ?1").unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        stmt.query_row([id], |r| {
            Ok(names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), r.get::<_, Sql>(i).unwrap()))
                .collect())
        })
        .unwrap()
    };
    let t = |s: &str| Sql::Text(s.into());
    let full = row(1);
    let expect = [
        ("i", Sql::Integer(i64::from(i32::MIN))),
        ("l", Sql::Integer(i64::MAX)),
        ("d", t("-123456789.125")),
        (
            "nt",
            t("3.14159265358979323846264338327950288419716939937510"),
        ),
        ("f", Sql::Real(f64::from(1.1f32))),
        ("db", Sql::Real(0.1 + 0.2)),
        ("t", t(text)),
        ("b", Sql::Integer(1)),
        ("dt", t("0001-12-31 BC")),
        ("tm", t("23:59:59.999999")),
        ("ts", t("0001-12-31 23:59:59.999999 BC")),
        ("tz", t("9999-12-31 23:59:59.999999+00:00")),
        ("u", t(uuid)),
        ("js", t(jsonb)),
        ("jn", t(json)),
        ("by", Sql::Blob(all_bytes)),
        ("ai", t(&format!("[1,null,{}]", i32::MIN))),
        ("at", t(r#"["a,b",null,"\"q\" {x}","","NULL"]"#)),
        ("ad", t(r#"["1.50",null,"-999.99"]"#)),
        ("Mixed Case", t("x")),
        ("_syncline_source", t("src")),
        (
            "_syncline_position",
            Sql::Blob(Position::builder().i64(1).build().into_bytes()),
        ),
    ];
    for (col, want) in expect {
        assert_eq!(full[col], want, "column {col}");
    }
    let nulls = row(2);
    for (col, v) in &nulls {
        match col.as_str() {
            "id" => assert_eq!(v, &Sql::Integer(2)),
            "Mixed Case" => assert_eq!(v, &t(""), "an empty string is not NULL"),
            "_syncline_source" | "_syncline_position" => {}
            _ => assert_eq!(v, &Sql::Null, "column {col} of the all-NULL row"),
        }
    }
    let specials = row(3);
    assert_eq!(specials["f"], Sql::Real(f64::INFINITY));
    assert_eq!(specials["db"], t("NaN"), "NaN is kept (as text)");
    assert_eq!(specials["ai"], t("[]"));
}

/// A table made by hand with a CHECK constraint: the record it refuses goes
/// to the dead-letter topic with SQLite's reason, and the rest of the batch
/// lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_target_refuses_is_dead_lettered_and_its_batch_lands() {
    let stack = Stack::start();
    let dir = TempDir::new("sqlite-refused");
    let path = dir.path().join("replica.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT CHECK (v <> 'refused'),
                                 _syncline_source TEXT, _syncline_position BLOB)",
        )
        .unwrap();
    let p = Producer::new(&stack);
    p.topic("refused.items", 1).await;
    let events = [
        upsert(1, 1, "a"),
        upsert(2, 2, "refused"),
        upsert(3, 3, "c"),
        upsert(4, 1, "a2"),
    ];
    p.send("refused.items", &items_table(), &events).await;
    let cfg = config(&format!(
        "path: {}\ntopics: [refused.items]\ntables: {{ refused.items: items }}\ndead_letter_topic: refused.dead\n",
        path.display()
    ));
    run_until(&stack, cfg, &path, 4).await;
    let c = Connection::open(&path).unwrap();
    let rows: Vec<(i64, String)> = c
        .prepare("SELECT id, v FROM items ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [(1, "a2".to_string()), (3, "c".to_string())]);
    assert_eq!(
        support::topic_records(&stack.bootstrap(), "refused.dead"),
        1
    );
}

/// A path whose directory does not exist: the sink does not start, and
/// says which file and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_opened_stops_the_sink_with_its_name() {
    let stack = Stack::start();
    let cfg = config("path: /nonexistent/dir/replica.db\ntopics: [x]\n");
    let e = cfg.run(ctx(&stack), Shutdown::new()).await.unwrap_err();
    assert_eq!(e.kind(), syncline_core::ErrorKind::Config, "{e}");
    let msg = format!("{e:#}");
    assert!(msg.contains("/nonexistent/dir/replica.db"), "{msg}");
    assert!(msg.contains("sqlite sink `replica`"), "{msg}");
}
