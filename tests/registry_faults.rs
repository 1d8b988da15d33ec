//! The schema registry failing during a run: gone (connections dropped),
//! answering 401, answering 500. On real parts (Apache Kafka, the `syncline
//! registry` behind a proxy the test controls, Postgres), through `syncline
//! run` with a `rules` processor and the `postgres` sink. Each failure comes
//! while new schema versions arrive, so the pipeline must ask the registry
//! (decoding new writer schemas, registering new output schemas). Nothing
//! valid may be dead-lettered, nothing may stop, and the stream must resume
//! once the registry answers again: the target ends equal to what was sent.

mod support;

use apache_avro::types::Value;
use rdkafka::producer::FutureRecord;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{topic_records, PgDb, Stack, SynclineRun, TempDir};
use syncline_core::codec::Encoder;
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::{ChangeEvent, Column, ColumnType, Op, Position, SourceInfo, TableSchema};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Pass,
    /// Every connection is closed at once, live ones too.
    Down,
    /// Every request gets this HTTP status (with a Confluent error body).
    Status(u16),
}

/// A TCP proxy in front of the registry that fails on demand.
struct Proxy {
    port: u16,
    state: Arc<Mutex<(Mode, CancellationToken)>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new((Mode::Pass, CancellationToken::new())));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (mode, cut) = {
                    let s = shared.lock().unwrap();
                    (s.0, s.1.clone())
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    match mode {
                        Mode::Down => drop(client),
                        Mode::Status(code) => {
                            let mut buf = vec![0u8; 65536];
                            let _ = client.read(&mut buf).await;
                            let body = format!(
                                r#"{{"error_code":{code}01,"message":"failing on purpose"}}"#
                            );
                            let answer = format!(
                                "HTTP/1.1 {code} Failing\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = client.write_all(answer.as_bytes()).await;
                            let _ = client.shutdown().await;
                        }
                        Mode::Pass => {
                            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut.cancelled() => {}
                            }
                        }
                    }
                });
            }
        });
        Proxy { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switch mode; connections kept alive from before are cut.
    fn set(&self, mode: Mode) {
        let mut s = self.state.lock().unwrap();
        s.1.cancel();
        *s = (mode, CancellationToken::new());
    }
}

/// `id` key and `extra` nullable text columns `c1..`: one more per version.
fn table(extra: usize) -> TableSchema {
    let col = |name: &str, ty, nullable| Column {
        name: name.into(),
        ty,
        nullable,
        sql_type: String::new(),
    };
    let mut columns = vec![
        col("id", ColumnType::Long, false),
        col("v", ColumnType::Text, true),
    ];
    for i in 1..=extra {
        columns.push(col(&format!("c{i}"), ColumnType::Text, true));
    }
    TableSchema {
        namespace: "syncline.test".into(),
        name: "items".into(),
        columns,
        primary_key: vec!["id".into()],
    }
}

fn upsert(id: i64, extra: usize) -> ChangeEvent {
    let mut after = vec![
        ("id".to_string(), Value::Long(id)),
        ("v".to_string(), Value::String(format!("v{id}"))),
    ];
    for i in 1..=extra {
        after.push((format!("c{i}"), Value::String(format!("c{i}"))));
    }
    ChangeEvent {
        op: Op::Upsert,
        key: vec![("id".into(), Value::Long(id))],
        before: None,
        after: Some(after),
        source: SourceInfo {
            connector: "test".into(),
            name: "src".into(),
            db: "db".into(),
            table: "items".into(),
            position: Position::builder().i64(id).build(),
            position_text: id.to_string(),
            ts_us: 0,
        },
        unchanged: Vec::new(),
    }
}

async fn rows(c: &tokio_postgres::Client) -> BTreeMap<i64, String> {
    match c.query("SELECT id, v FROM items", &[]).await {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(_) => BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_401_and_500_are_waited_out_and_nothing_is_dead_lettered() {
    let stack = Stack::start();
    let db = PgDb::create("registry_faults").await;
    let dir = TempDir::new("registry-faults");
    let upstream = stack
        .registry_url()
        .trim_start_matches("http://")
        .to_string();
    let proxy = Proxy::start(upstream).await;
    let kafka = KafkaConfig::new(stack.bootstrap());
    kafka.ensure_topic("rf.in", 2, false).await.unwrap();
    // The test writes with the registry itself; the pipeline reads through the proxy.
    let encoder = Encoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let producer = kafka.producer().unwrap();
    let send = |version: usize, ids: std::ops::Range<i64>| {
        let (encoder, producer) = (&encoder, &producer);
        async move {
            for id in ids {
                let (k, v) = encoder
                    .encode("rf.in", &table(version), &upsert(id, version))
                    .await
                    .unwrap();
                producer
                    .send(
                        FutureRecord::to("rf.in").key(&k).payload(&v),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
            }
        }
    };
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: rf
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 2
registry:
  url: {registry}
  timeout_ms: 2000
external_topics: [rf.in]
processors:
  shape:
    type: rules
    from: [rf.in]
    to: rf.out
    steps:
      - set: {{ origin: "'rf'" }}
sinks:
  target:
    type: postgres
    connection: {target}
    topics: [rf.out]
    tables: {{ rf.out: items }}
"#,
            bootstrap = stack.bootstrap(),
            registry = proxy.url(),
            target = db.url(),
        ),
    )
    .unwrap();
    let mut run = SynclineRun::start(&pipeline);
    let c = db.client().await;
    let want =
        |n: i64| -> BTreeMap<i64, String> { (0..n).map(|id| (id, format!("v{id}"))).collect() };
    let wait_rows = |n: i64, what: &'static str| {
        let c = &c;
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let have = rows(c).await;
                if have == want(n) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} of {n} rows",
                    have.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    send(0, 0..100).await;
    wait_rows(100, "before any fault").await;

    // Each fault while a new schema version arrives; 100 rows each.
    for (i, mode) in [Mode::Down, Mode::Status(401), Mode::Status(500)]
        .into_iter()
        .enumerate()
    {
        proxy.set(mode);
        let from = 100 * (i as i64 + 1);
        send(i + 1, from..from + 100).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            rows(&c).await.len() as i64 <= from,
            "rows of a new schema version landed while the registry was {mode:?}"
        );
        assert!(
            run.exit_code().is_none(),
            "syncline exited during {mode:?}:\n{}",
            run.log()
        );
        for dead in ["rf.shape.dead", "rf.target.dead"] {
            assert_eq!(
                topic_records(&stack.bootstrap(), dead),
                0,
                "valid records were dead-lettered while the registry was {mode:?}:\n{}",
                run.log()
            );
        }
        proxy.set(Mode::Pass);
        wait_rows(from + 100, "after the registry came back").await;
    }
    let log = run.log();
    assert!(log.contains("retrying"), "no retry was logged:\n{log}");
    assert!(run.exit_code().is_none(), "syncline exited:\n{log}");
    for dead in ["rf.shape.dead", "rf.target.dead"] {
        assert_eq!(topic_records(&stack.bootstrap(), dead), 0, "{dead}");
    }
    run.kill9();
}
