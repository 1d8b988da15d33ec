//! What only the mysql sink has: its type mapping (every mapped type lands
//! as `sinks/src/mysql/ddl.rs` says, read back from MariaDB), and the values
//! MySQL cannot hold (NaN, dates before 1 AD) dead-lettered with their
//! reason while the rest lands. Against a real Apache Kafka broker, the real
//! `syncline registry` and the machine's MariaDB. The scenarios every
//! database sink shares (replays, kill -9, groups, TOAST, poison) are in
//! `sinks.rs`.

mod support;

use apache_avro::types::Value;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::time::Duration;
use support::changes::{all_types, AllTypes, Producer};
use support::target::MyDb;
use support::{wait_until, Stack};
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_runtime::Component;
use syncline_sinks::mysql::MysqlSinkConfig;

fn ctx(stack: &Stack) -> ComponentContext {
    ComponentContext {
        pipeline: "test".into(),
        component: "warehouse".into(),
        kafka: KafkaConfig::new(stack.bootstrap()),
        registry: RegistryConfig::new(stack.registry_url()),
        state_dir: std::env::temp_dir(),
        limits: Default::default(),
        status: Default::default(),
    }
}

/// Every mapped type with extreme values MySQL can hold, and NULLs, lands
/// in a table created from the registered schema; the rows MySQL cannot
/// hold (a date before 1 AD, NaN) go to the dead-letter topic, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_as_the_mapping_says_and_what_mysql_cannot_hold_is_dead_lettered() {
    let stack = Stack::start();
    let db = MyDb::create("mysql_types").await;
    let p = Producer::new(&stack);
    p.topic("types.all", 1).await;
    let AllTypes {
        table,
        mut events,
        uuid,
        jsonb,
        json,
        text,
        all_bytes,
    } = all_types();
    // Row 4: row 1 as it is, with its BC date (refused). Row 1: dates MySQL has.
    let mut bc = events[0].clone();
    bc.key[0].1 = Value::Long(4);
    bc.after.as_mut().unwrap()[0].1 = Value::Long(4);
    bc.source.position = syncline_core::Position::builder().i64(4).build();
    for (name, v) in events[0].after.as_mut().unwrap().iter_mut() {
        match name.as_str() {
            "dt" => *v = Value::Date(19_000),
            "ts" => *v = Value::LocalTimestampMicros(1_700_000_000_123_456),
            _ => {}
        }
    }
    events.push(bc);
    p.send("types.all", &table, &events).await;

    let yaml = format!(
        "connection: {}\ntopics: [types.all]\ndead_letter_topic: types.dead\n",
        db.url()
    );
    let cfg: MysqlSinkConfig = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(cfg.check(), []);
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let c = ctx(&stack);
    let task = tokio::spawn(async move { cfg.run(c, s).await });
    let mut conn = db.conn().await;
    wait_until(Duration::from_secs(120), "4 records committed", || {
        let url = db.url();
        async move {
            let Ok(mut c) = mysql_async::Conn::from_url(url).await else {
                return false;
            };
            let n: Option<i64> = c
                .query_first(
                    "SELECT CAST(coalesce(sum(next_offset), 0) AS SIGNED) FROM syncline_offsets",
                )
                .await
                .ok()
                .flatten();
            let _ = c.disconnect().await;
            n == Some(4)
        }
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let types: BTreeMap<String, (String, String)> = conn
        .query(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'types_all'",
        )
        .await
        .unwrap()
        .into_iter()
        .map(|(n, t, null): (String, String, String)| (n, (t, null)))
        .collect();
    for (col, want) in [
        ("id", "bigint(20)"),
        ("i", "int(11)"),
        ("d", "decimal(12,3)"),
        ("nt", "longtext"),
        ("f", "float"),
        ("db", "double"),
        ("b", "tinyint(1)"),
        ("dt", "date"),
        ("tm", "time(6)"),
        ("ts", "datetime(6)"),
        ("tz", "datetime(6)"),
        ("u", "char(36)"),
        ("by", "longblob"),
        ("_syncline_position", "blob"),
    ] {
        assert_eq!(types[col].0, want, "column {col}");
    }
    assert_eq!(
        types["Mixed Case"].1, "NO",
        "a non-null source column is NOT NULL"
    );
    assert_eq!(types["t"].1, "YES");

    let cols = "i, l, d, nt, f, db, t, b, dt, tm, ts, tz, u, js, jn, ai, at, ad, `Mixed Case`";
    let row: Vec<Option<String>> = {
        let r: mysql_async::Row = conn
            .query_first(format!("SELECT {cols} FROM types_all WHERE id = 1"))
            .await
            .unwrap()
            .expect("row 1 landed");
        (0..r.len()).map(|i| r.get(i).unwrap()).collect()
    };
    let want = [
        i32::MIN.to_string(),
        i64::MAX.to_string(),
        "-123456789.125".into(),
        "3.14159265358979323846264338327950288419716939937510".into(),
        "1.1".into(),
        "0.30000000000000004".into(),
        text.into(),
        "1".into(),
        "2022-01-08".into(),
        "23:59:59.999999".into(),
        "2023-11-14 22:13:20.123456".into(),
        "9999-12-31 23:59:59.999999".into(),
        uuid.into(),
        jsonb.into(),
        json.into(),
        format!("[1,null,{}]", i32::MIN),
        r#"["a,b",null,"\"q\" {x}","","NULL"]"#.into(),
        r#"["1.50",null,"-999.99"]"#.into(),
        "x".into(),
    ];
    for (i, (have, want)) in row.iter().zip(want).enumerate() {
        assert_eq!(have.as_deref(), Some(want.as_str()), "column {i} of {cols}");
    }
    let bytes: Option<Vec<u8>> = conn
        .query_first("SELECT `by` FROM types_all WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(bytes, Some(all_bytes));
    let nulls: mysql_async::Row = conn
        .query_first(format!("SELECT {cols} FROM types_all WHERE id = 2"))
        .await
        .unwrap()
        .expect("row 2 landed");
    for i in 0..nulls.len() - 1 {
        assert_eq!(
            nulls.get::<Option<String>, _>(i).unwrap(),
            None,
            "column {i} of row 2"
        );
    }
    let ids: Vec<i64> = conn
        .query("SELECT id FROM types_all ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids, [1, 2], "rows 3 (NaN) and 4 (a BC date) cannot be held");
    let _ = conn.disconnect().await;

    let dead = support::topic_records(&stack.bootstrap(), "types.dead");
    assert_eq!(dead, 2, "rows 3 and 4 are dead-lettered");
}
