//! The `dedup` processor end to end through the `syncline` binary, on real
//! parts (Apache Kafka broker, `syncline registry`, Postgres target through the
//! `postgres` sink). The test writes a duplicate-laden change stream itself:
//! the same change delivered several times (equal identity), and distinct
//! changes with equal content. It computes, independently of the
//! processor, which changes must pass, and so what the target must hold:
//! per row, the values *and the identity* (`_syncline_position`) of the
//! newest change that passed. A duplicate that slips through shows as a
//! newer position; a lost change as a missing or older row.
//!
//! Then it makes that hard: kill -9 mid-stream several times, delete the
//! local state (restored from the changelog), and scale out and in.

mod support;

use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use support::{PgDb, Rng, Stack, SynclineRun, TempDir};
use syncline_core::codec::{Decoder, Encoder};
use syncline_core::registry::RegistryConfig;
use syncline_core::{ChangeEvent, ColumnType, Op, Position, SourceInfo, TableSchema};

const PARTITIONS: i32 = 3;

/// One change as the test knows it.
#[derive(Clone, Debug)]
struct Change {
    seq: i64,
    id: i64,
    op: Op,
    customer: String,
    amount: i64,
    ts_us: i64,
}

impl Change {
    fn partition(&self) -> i32 {
        (self.id % PARTITIONS as i64) as i32
    }
    /// What `by: content` compares: operation and row values.
    fn content(&self) -> String {
        match self.op {
            Op::Delete => format!("D|{}", self.id),
            _ => format!(
                "{}|{}|{}|{}",
                self.op.symbol(),
                self.id,
                self.customer,
                self.amount
            ),
        }
    }
    fn position_hex(&self) -> String {
        hex(Position::builder().i64(self.seq).build().as_bytes())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `n` distinct changes (positions `first_seq..`) on `rows` rows, with few
/// distinct contents so that equal content recurs, and a delete now and then.
fn changes(rng: &mut Rng, first_seq: i64, n: i64, rows: i64) -> Vec<Change> {
    (first_seq..first_seq + n)
        .map(|seq| {
            let id = rng.below(rows as u64) as i64;
            let op = if rng.below(20) == 0 {
                Op::Delete
            } else {
                Op::Upsert
            };
            Change {
                seq,
                id,
                op,
                customer: format!("c{}", rng.below(2)),
                amount: rng.below(3) as i64,
                ts_us: 1_700_000_000_000_000 + seq * 1000,
            }
        })
        .collect()
}

/// The delivery order: every change once, in order, and each one again
/// (same identity) a few records later with probability 1/3.
fn with_redeliveries(rng: &mut Rng, changes: &[Change]) -> Vec<Change> {
    let mut out = Vec::new();
    let mut again: Vec<(usize, Change)> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        out.push(c.clone());
        if rng.below(3) == 0 {
            again.push((i + 1 + rng.below(20) as usize, c.clone()));
        }
        again.retain(|(at, c)| {
            if *at == i {
                out.push(c.clone());
                false
            } else {
                true
            }
        });
    }
    out.extend(again.into_iter().map(|(_, c)| c));
    out
}

/// Which deliveries pass `by: content` with no TTL: the first of each
/// content. Returns, per row id, the newest passing change.
fn expected_by_content(delivered: &[Change]) -> BTreeMap<i64, Change> {
    let mut seen = HashSet::new();
    let mut newest: BTreeMap<i64, Change> = BTreeMap::new();
    for c in delivered {
        if seen.insert(c.content()) {
            let e = newest.entry(c.id).or_insert_with(|| c.clone());
            if c.seq > e.seq {
                *e = c.clone();
            }
        }
    }
    newest
}

/// Without deduplication the sink would hold each row's newest change: the
/// expected target must differ from that in many rows, or the test could
/// not tell a working processor from none.
fn assert_sensitive(distinct: &[Change], want: &[String]) {
    let mut newest: BTreeMap<i64, Change> = BTreeMap::new();
    for c in distinct {
        newest.insert(c.id, c.clone());
    }
    let without: HashSet<String> = expected_rows(&newest).into_iter().collect();
    let differ = want.iter().filter(|r| !without.contains(*r)).count();
    assert!(differ > 50, "only {differ} rows tell dedup from none");
}

/// The target as `id|customer|amount|position`, for the rows that exist.
fn expected_rows(newest: &BTreeMap<i64, Change>) -> Vec<String> {
    newest
        .values()
        .filter(|c| c.op != Op::Delete)
        .map(|c| format!("{}|{}|{}|{}", c.id, c.customer, c.amount, c.position_hex()))
        .collect()
}

fn table() -> TableSchema {
    support::events_table(
        "syncline.test",
        &[
            ("id", ColumnType::Long, "bigint"),
            ("customer", ColumnType::Text, "text"),
            ("amount", ColumnType::Long, "bigint"),
        ],
    )
}

fn event(c: &Change) -> ChangeEvent {
    let key = vec![("id".to_string(), Value::Long(c.id))];
    let row = vec![
        ("id".to_string(), Value::Long(c.id)),
        ("customer".to_string(), Value::String(c.customer.clone())),
        ("amount".to_string(), Value::Long(c.amount)),
    ];
    let position = Position::builder().i64(c.seq).build();
    ChangeEvent {
        unchanged: Vec::new(),
        op: c.op,
        key,
        before: None,
        after: (c.op != Op::Delete).then_some(row),
        source: SourceInfo {
            connector: "test".into(),
            name: "feed".into(),
            db: "test".into(),
            table: "events".into(),
            position,
            position_text: c.seq.to_string(),
            ts_us: c.ts_us,
        },
    }
}

/// Write `changes` to `topic`, each to the partition of its row.
async fn produce(stack: &Stack, topic: &str, changes: &[Change]) {
    let encoder = Encoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let table = table();
    let mut pending = Vec::new();
    for c in changes {
        let (k, v) = encoder.encode(topic, &table, &event(c)).await.unwrap();
        let record = FutureRecord::to(topic)
            .partition(c.partition())
            .key(&k)
            .payload(&v);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

fn pipeline_yaml(
    stack: &Stack,
    name: &str,
    target: &PgDb,
    dedup: &str,
    properties: &str,
) -> String {
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: {PARTITIONS}
  properties:
    session.timeout.ms: "6000"
    heartbeat.interval.ms: "500"
{properties}registry:
  url: {registry}
external_topics: [events]
processors:
  dd:
    type: dedup
    from: [events]
    to: events.unique
    batch_size: 200
{dedup}
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [events.unique]
    tables: {{ events.unique: events }}
    batch_size: 500
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        target = target.url(),
    )
}

/// Everything a test needs: broker, registry, target, pipeline file.
struct Setup {
    stack: Stack,
    target: PgDb,
    dir: TempDir,
    pipeline: PathBuf,
}

impl Setup {
    async fn new(name: &str, dedup: &str) -> Setup {
        Setup::with_properties(name, dedup, "").await
    }

    /// As `new`, with more `kafka.properties` lines (indented by four).
    async fn with_properties(name: &str, dedup: &str, properties: &str) -> Setup {
        let stack = Stack::start();
        let target = PgDb::create(&format!("dd_{name}")).await;
        let dir = TempDir::new(&format!("dedup-{name}"));
        let pipeline = dir.path().join("pipeline.yaml");
        std::fs::write(
            &pipeline,
            pipeline_yaml(&stack, name, &target, dedup, properties),
        )
        .unwrap();
        Setup {
            stack,
            target,
            dir,
            pipeline,
        }
    }

    fn state_dir(&self, instance: &str) -> PathBuf {
        self.dir.path().join(format!("state-{instance}"))
    }

    /// The processor alone, with its own state directory.
    fn processor(&self, instance: &str) -> SynclineRun {
        let state = self.state_dir(instance);
        SynclineRun::start_with_args(
            &self.pipeline,
            &["--component", "dd", "--state-dir", state.to_str().unwrap()],
        )
    }

    fn sink(&self) -> SynclineRun {
        let state = self.state_dir("sink");
        SynclineRun::start_with_args(
            &self.pipeline,
            &[
                "--component",
                "warehouse",
                "--state-dir",
                state.to_str().unwrap(),
            ],
        )
    }

    async fn target_rows(&self) -> Vec<String> {
        let c = self.target.client().await;
        match c
            .query(
                "SELECT id::text || '|' || customer || '|' || amount::text || '|' || encode(_syncline_position, 'hex') FROM events ORDER BY id",
                &[],
            )
            .await
        {
            Ok(r) => r.iter().map(|r| r.get::<_, String>(0)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Wait until the target holds exactly `want`; on timeout, say how it differs.
    async fn wait_exact(&self, want: &[String], what: &str, logs: &[&SynclineRun]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let got = self.target_rows().await;
            if got == want {
                return;
            }
            if std::time::Instant::now() > deadline {
                let want_set: HashSet<&String> = want.iter().collect();
                let got_set: HashSet<&String> = got.iter().collect();
                let missing: Vec<_> = want_set.difference(&got_set).take(5).collect();
                let extra: Vec<_> = got_set.difference(&want_set).take(5).collect();
                let tails: Vec<String> = logs
                    .iter()
                    .map(|r| {
                        let log = r.log();
                        let lines: Vec<&str> = log.lines().rev().take(25).collect();
                        lines.join("\n")
                    })
                    .collect();
                panic!(
                    "{what}: target is not exact: want {} rows, got {}; missing {missing:?}; unexpected {extra:?}\nlogs (newest first):\n{}",
                    want.len(),
                    got.len(),
                    tails.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    c.fetch_metadata(Some(topic), Duration::from_secs(10))
        .map(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && !t.partitions().is_empty())
        })
        .unwrap_or(false)
}

/// Create the input topic with the partitions the test writes to.
async fn create_input(stack: &Stack) {
    let kafka = syncline_core::kafka::KafkaConfig::new(stack.bootstrap());
    kafka
        .ensure_topic("events", PARTITIONS, false)
        .await
        .unwrap();
    assert!(topic_exists(&stack.bootstrap(), "events"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_by_content_is_exact_through_repeated_kill_9() {
    let setup = Setup::new("kill", "    by: content").await;
    create_input(&setup.stack).await;
    let mut rng = Rng(0x5eed_0001);
    let distinct = changes(&mut rng, 1, 6000, 400);
    let delivered = with_redeliveries(&mut rng, &distinct);
    let want = expected_rows(&expected_by_content(&delivered));
    // The test must be able to fail: duplicates are frequent and matter.
    assert!(delivered.len() > distinct.len() + 1500);
    assert_sensitive(&distinct, &want);

    let sink = setup.sink();
    let mut processor = setup.processor("a");
    let chunks: Vec<&[Change]> = delivered.chunks(delivered.len() / 6 + 1).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        produce(&setup.stack, "events", chunk).await;
        // kill -9 at a different moment after each chunk: mid-batch,
        // mid-commit, mid-restore.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        if i < chunks.len() - 1 {
            processor.restart();
        }
    }
    setup
        .wait_exact(
            &want,
            "after six kill -9 of the processor",
            &[&processor, &sink],
        )
        .await;
    let log = processor.log();
    assert!(
        log.contains("state restored"),
        "restarts restore state:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_local_state_is_restored_from_the_changelog() {
    let setup = Setup::new("restore", "    by: content").await;
    create_input(&setup.stack).await;
    let mut rng = Rng(0x5eed_0002);
    let distinct = changes(&mut rng, 1, 4000, 300);
    let delivered = with_redeliveries(&mut rng, &distinct);
    let (first, second) = delivered.split_at(delivered.len() / 2);
    assert_sensitive(&distinct, &expected_rows(&expected_by_content(&delivered)));

    let sink = setup.sink();
    let mut processor = setup.processor("a");
    produce(&setup.stack, "events", first).await;
    setup
        .wait_exact(
            &expected_rows(&expected_by_content(first)),
            "first half",
            &[&processor, &sink],
        )
        .await;
    processor.kill9();
    std::fs::remove_dir_all(setup.state_dir("a")).unwrap();

    // The second half repeats many contents of the first: only the restored
    // state can tell the processor they were seen.
    let second_contents: HashSet<String> = second.iter().map(Change::content).collect();
    let repeats = first
        .iter()
        .filter(|c| second_contents.contains(&c.content()))
        .count();
    assert!(
        repeats > 100,
        "the second half must repeat the first ({repeats})"
    );
    produce(&setup.stack, "events", second).await;
    let mut processor = setup.processor("a");
    setup
        .wait_exact(
            &expected_rows(&expected_by_content(&delivered)),
            "after deleting the state directory",
            &[&processor, &sink],
        )
        .await;
    let log = processor.log();
    assert!(log.contains("state restored"), "{log}");
    processor.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_out_then_in_stays_exact() {
    let setup = Setup::new("scale", "    by: content").await;
    create_input(&setup.stack).await;
    let mut rng = Rng(0x5eed_0003);
    let distinct = changes(&mut rng, 1, 6000, 400);
    let delivered = with_redeliveries(&mut rng, &distinct);
    let third = delivered.len() / 3;
    let (one, rest) = delivered.split_at(third);
    let (two, three) = rest.split_at(third);

    let sink = setup.sink();
    let mut a = setup.processor("a");
    produce(&setup.stack, "events", one).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A second instance joins mid-stream: the partitions are split, and
    // each moved partition's state follows it through the changelog.
    let mut b = setup.processor("b");
    produce(&setup.stack, "events", two).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Then the first one dies: the survivor takes everything over.
    a.kill9();
    produce(&setup.stack, "events", three).await;
    setup
        .wait_exact(
            &expected_rows(&expected_by_content(&delivered)),
            "after scaling out to two instances and back to one",
            &[&b, &a, &sink],
        )
        .await;
    let log_b = b.log();
    assert!(log_b.contains("state restored"), "{log_b}");
    b.kill9();
}

/// Three instances of the processor with the cooperative protocol
/// (`cooperative-sticky`, for the dedup stage and its repartition stage
/// alike): they join one by one while changes flow, two are killed with
/// SIGKILL and come back, so partitions (and the state that follows them
/// through the changelog) move incrementally many times. The target is
/// still exact: no duplicate passes, no change is lost.
#[tokio::test(flavor = "multi_thread")]
async fn three_cooperative_instances_joining_and_killed_stay_exact() {
    let setup = Setup::with_properties(
        "coop",
        "    by: content",
        "    partition.assignment.strategy: cooperative-sticky\n",
    )
    .await;
    create_input(&setup.stack).await;
    let mut rng = Rng(0x5eed_0005);
    let distinct = changes(&mut rng, 1, 7500, 450);
    let delivered = with_redeliveries(&mut rng, &distinct);
    let want = expected_rows(&expected_by_content(&delivered));
    assert_sensitive(&distinct, &want);
    let chunks: Vec<&[Change]> = delivered.chunks(delivered.len() / 6 + 1).collect();

    let sink = setup.sink();
    let mut a = setup.processor("a");
    produce(&setup.stack, "events", chunks[0]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut b = setup.processor("b");
    produce(&setup.stack, "events", chunks[1]).await;
    tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
    let mut c = setup.processor("c");
    produce(&setup.stack, "events", chunks[2]).await;
    tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
    b.kill9();
    produce(&setup.stack, "events", chunks[3]).await;
    b.restart();
    tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
    c.kill9();
    for chunk in &chunks[4..] {
        produce(&setup.stack, "events", chunk).await;
    }
    c.restart();
    setup
        .wait_exact(
            &want,
            "three cooperative instances, two killed and restarted",
            &[&a, &b, &c, &sink],
        )
        .await;
    let logs = format!("A:\n{}\nB:\n{}\nC:\n{}", a.log(), b.log(), c.log());
    assert!(
        logs.contains("cooperative=true"),
        "the cooperative protocol was not in use:\n{logs}"
    );
    assert!(logs.contains("state restored"), "{logs}");
    for (name, run) in [("A", &mut a), ("B", &mut b), ("C", &mut c)] {
        assert!(run.exit_code().is_none(), "{name} exited:\n{}", run.log());
    }
}

/// Through the repartition topic (`by: content`), the changes of a row that
/// pass leave in the order they came: a row's changes share one partition
/// there. A sink relies on it for columns a change leaves out (unchanged
/// TOASTed values are filled from the row's previous state). Many changes
/// on few rows, so that changes of different content of one row are
/// decided side by side in every batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_rows_changes_leave_a_content_dedup_in_their_order() {
    let setup = Setup::new("order", "    by: content").await;
    create_input(&setup.stack).await;
    let mut rng = Rng(0x5eed_0006);
    let distinct = changes(&mut rng, 1, 4000, 12);
    // Unique contents (the amount is the seq), so every upsert passes;
    // deletes compare by key, so a row's later deletes are dropped.
    let distinct: Vec<Change> = distinct
        .into_iter()
        .map(|mut c| {
            c.amount = c.seq;
            c
        })
        .collect();
    let passing = distinct
        .iter()
        .map(Change::content)
        .collect::<HashSet<_>>()
        .len();
    assert!(passing > 3000);
    produce(&setup.stack, "events", &distinct).await;
    let processor = setup.processor("a");
    let got = read_outputs(&setup.stack, "events.unique", passing, &processor).await;
    assert_eq!(got.len(), passing, "each passing change once");
    let mut last: HashMap<i64, i64> = HashMap::new();
    let mut overtaken = Vec::new();
    for (id, seq) in got {
        if let Some(prev) = last.insert(id, seq) {
            if seq < prev {
                overtaken.push((id, prev, seq));
            }
        }
    }
    assert!(
        overtaken.is_empty(),
        "{} changes left after a newer change of their row, e.g. (id, newer seq, older seq) {:?}",
        overtaken.len(),
        &overtaken[..overtaken.len().min(5)]
    );
}

/// `by: identity` (no repartition) with a TTL, read straight from the output
/// topic: each change once, except a redelivery that comes after the TTL
/// (in the changes' own time), which passes again.
#[tokio::test(flavor = "multi_thread")]
async fn dedup_by_identity_within_a_ttl() {
    let setup = Setup::new("ttl", "    by: identity\n    ttl: 2s").await;
    create_input(&setup.stack).await;
    let mut rng = Rng(0x5eed_0004);
    // 1 ms of change time per change: a TTL of 2 s is 2000 changes.
    let distinct = changes(&mut rng, 1, 3000, 200);
    let mut delivered = with_redeliveries(&mut rng, &distinct);
    // Late redeliveries of the first 100 changes, long after the TTL.
    delivered.extend(distinct[..100].iter().cloned());
    // Expected: per partition, stream time = newest change time seen; a
    // change passes unless its first passage is within the TTL of it.
    let mut first_seen: HashMap<i64, i64> = HashMap::new();
    let mut stream_time: HashMap<i32, i64> = HashMap::new();
    let mut want: BTreeMap<i64, usize> = BTreeMap::new();
    for c in &delivered {
        let st = stream_time.entry(c.partition()).or_insert(i64::MIN);
        *st = (*st).max(c.ts_us);
        let dup = first_seen.get(&c.seq).is_some_and(|&t| t > *st - 2_000_000);
        if !dup {
            first_seen.insert(c.seq, c.ts_us);
            *want.entry(c.seq).or_default() += 1;
        }
    }
    assert_eq!(
        want.values().filter(|&&n| n == 2).count(),
        100,
        "the late copies pass again"
    );

    let metrics_port = support::free_port();
    let state = setup.state_dir("a");
    let processor = SynclineRun::start_with_args(
        &setup.pipeline,
        &[
            "--component",
            "dd",
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    produce(&setup.stack, "events", &delivered).await;
    let expected_total: usize = want.values().sum();
    let got = read_identities(&setup.stack, "events.unique", expected_total, &processor).await;
    assert_eq!(got, want, "each change as often as the TTL allows, no more");

    // The metrics say the same.
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The runtime's metrics carry `component` and `type`; dedup's own, `processor`.
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with(name)
                    && (l.contains("processor=\"dd\"")
                        || (l.contains("component=\"dd\"") && l.contains("type=\"dedup\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in\n{text}"))
    };
    assert_eq!(value("syncline_records_in_total") as usize, delivered.len());
    assert_eq!(value("syncline_records_out_total") as usize, expected_total);
    assert_eq!(
        value("syncline_processor_records_deduplicated_total") as usize,
        delivered.len() - expected_total
    );
    assert!(value("syncline_processor_state_keys") > 0.0, "{text}");
}

/// Count the output records per change (`source.position_text` is the
/// test's seq), waiting for `n` records and a little longer, to see extras.
async fn read_identities(
    stack: &Stack,
    topic: &str,
    n: usize,
    run: &SynclineRun,
) -> BTreeMap<i64, usize> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, seq) in read_outputs(stack, topic, n, run).await {
        *counts.entry(seq).or_default() += 1;
    }
    counts
}

/// The output records as (row id, seq), in the order they were read (each
/// partition in its order), waiting for `n` records and a little longer.
async fn read_outputs(stack: &Stack, topic: &str, n: usize, run: &SynclineRun) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.bootstrap())
        .set("group.id", "dedup-test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let decoder = Decoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut settle = None;
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let d = decoder.decode(m.key(), m.payload()).await.unwrap();
            let seq: i64 = d.event.source.position_text.parse().unwrap();
            let id = match d.event.key.first().map(|(_, v)| v) {
                Some(Value::Long(id)) => *id,
                other => panic!("unexpected key {other:?}"),
            };
            out.push((id, seq));
        }
        if out.len() >= n && settle.is_none() {
            settle = Some(std::time::Instant::now() + Duration::from_secs(3));
        }
        if settle.is_some_and(|s| std::time::Instant::now() > s) {
            return out;
        }
        if std::time::Instant::now() > deadline {
            panic!("only {} of {n} outputs arrived\n{}", out.len(), run.log());
        }
    }
}
