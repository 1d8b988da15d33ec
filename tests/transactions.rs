//! `kafka.exactly_once: transactions` on real Apache Kafka: the `rules` and
//! `dedup` processors write each batch's outputs, changelog records and
//! input offsets in one Kafka transaction. Two instances share the input
//! partitions and are killed with SIGKILL again and again mid-stream (in
//! the middle of transactions): a `read_committed` reader of the output must
//! then see every change exactly once (no identity twice, none missing),
//! while a `read_uncommitted` reader may also see aborted records.
//!
//! Without transactions the same kills leave replayed outputs in the topic
//! (syncline sinks drop them by identity; a plain consumer would not), so
//! these tests fail on the default mode.

mod support;

use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Rng, Stack, SynclineRun, TempDir};
use syncline_core::codec::{Decoder, Encoder};
use syncline_core::registry::RegistryConfig;
use syncline_core::{ChangeEvent, ColumnType, Op, Position, SourceInfo, TableSchema};

const PARTITIONS: i32 = 3;

fn table() -> TableSchema {
    support::events_table(
        "syncline.test",
        &[
            ("id", ColumnType::Long, "bigint"),
            ("amount", ColumnType::Long, "bigint"),
        ],
    )
}

/// Change number `seq` (its identity: source `feed`, position `seq`).
fn event(seq: i64) -> ChangeEvent {
    let id = seq % 700;
    ChangeEvent {
        unchanged: Vec::new(),
        op: Op::Upsert,
        key: vec![("id".to_string(), Value::Long(id))],
        before: None,
        after: Some(vec![
            ("id".to_string(), Value::Long(id)),
            ("amount".to_string(), Value::Long(seq)),
        ]),
        source: SourceInfo {
            connector: "test".into(),
            name: "feed".into(),
            db: "test".into(),
            table: "events".into(),
            position: Position::builder().i64(seq).build(),
            position_text: seq.to_string(),
            ts_us: 1_700_000_000_000_000 + seq * 1000,
        },
    }
}

/// Write the changes `seqs` to `topic`, each to its row's partition.
async fn produce(stack: &Stack, topic: &str, seqs: &[i64]) {
    let encoder = Encoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let table = table();
    let mut pending = Vec::new();
    for &seq in seqs {
        let (k, v) = encoder.encode(topic, &table, &event(seq)).await.unwrap();
        let record = FutureRecord::to(topic)
            .partition(((seq % 700) % PARTITIONS as i64) as i32)
            .key(&k)
            .payload(&v);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

/// Every record of `topic` as a reader with `isolation` sees it now:
/// (key, value) pairs, read to the end of each partition.
fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c: BaseConsumer = syncline_core::kafka::KafkaConfig::new(bootstrap)
        .reader_config()
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let parts = syncline_core::kafka::topic_partitions(c.client(), topic).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut open: std::collections::HashSet<i32> = parts.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "{topic}: cannot read to the end");
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The outputs a reader sees, by change position: how many times each, and
/// the `amount` the output carries.
async fn outputs(stack: &Stack, topic: &str, isolation: &str) -> BTreeMap<i64, (usize, i64)> {
    let decoder = Decoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let mut seen: BTreeMap<i64, (usize, i64)> = BTreeMap::new();
    for (k, v) in read_all(&stack.bootstrap(), topic, isolation) {
        let d = decoder.decode(Some(&k), Some(&v)).await.unwrap();
        let seq: i64 = d.event.source.position_text.parse().unwrap();
        let amount = d
            .event
            .after
            .as_ref()
            .and_then(|row| row.iter().find(|(c, _)| c == "amount"))
            .map(|(_, v)| match v {
                Value::Long(n) => *n,
                other => panic!("amount is {other:?}"),
            })
            .unwrap();
        let e = seen.entry(seq).or_insert((0, amount));
        e.0 += 1;
    }
    seen
}

/// Two instances of `component` (own state dirs, so own transactional
/// ids), killed with SIGKILL in turn for as long as the input keeps coming:
/// `deliveries` are written in chunks of 1,000, one every 600 ms, so that
/// the kills land while the instances are busy.
async fn run_with_kills(
    stack: &Stack,
    file: &Path,
    dir: &Path,
    component: &str,
    deliveries: &[i64],
) -> [SynclineRun; 2] {
    let start = |i: usize| {
        let state = dir.join(format!("state-{i}"));
        SynclineRun::start_with_args(
            file,
            &[
                "--component",
                component,
                "--state-dir",
                state.to_str().unwrap(),
            ],
        )
    };
    let mut runs = [start(0), start(1)];
    let done = std::sync::atomic::AtomicBool::new(false);
    let feed = async {
        for chunk in deliveries.chunks(1_000) {
            produce(stack, "events", chunk).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let killer = async {
        let mut rng = Rng::from_time();
        let mut round = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(500 + rng.below(1200))).await;
            runs[round % 2].restart();
            round += 1;
        }
        round
    };
    let ((), kills) = tokio::join!(feed, killer);
    assert!(kills >= 5, "only {kills} kills while the input came");
    runs
}

/// Wait until a `read_committed` reader sees `want` distinct changes.
async fn wait_committed(stack: &Stack, topic: &str, want: usize, runs: &[SynclineRun]) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let got = outputs(stack, topic, "read_committed").await.len();
        if got >= want {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = runs
                .iter()
                .map(|r| {
                    let log = r.log();
                    let lines: Vec<&str> = log.lines().rev().take(25).collect();
                    lines.join("\n")
                })
                .collect();
            panic!(
                "{topic}: {got} of {want} changes committed after 240 s\nlogs (newest first):\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pipeline(stack: &Stack, name: &str, processor: &str) -> String {
    format!(
        "name: {name}\nkafka:\n  bootstrap_servers: {}\n  partitions: {PARTITIONS}\n  exactly_once: transactions\n\
         \x20 properties: {{ session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\" }}\n\
         registry:\n  url: {}\nexternal_topics: [events]\nprocessors:\n{processor}",
        stack.bootstrap(),
        stack.registry_url()
    )
}

/// What the two readers saw, checked: committed = each change once;
/// uncommitted = at least as much (aborted records included).
async fn check_exactly_once(stack: &Stack, topic: &str, want: &HashMap<i64, i64>) {
    // Anything still open from a killed instance ends by the next start
    // (fenced) or at the transaction timeout; committed data is final.
    let committed = outputs(stack, topic, "read_committed").await;
    let twice: Vec<_> = committed
        .iter()
        .filter(|(_, (n, _))| *n > 1)
        .take(5)
        .collect();
    assert!(
        twice.is_empty(),
        "{topic}: changes committed more than once: {twice:?}"
    );
    let missing: Vec<_> = want
        .keys()
        .filter(|s| !committed.contains_key(s))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{topic}: changes never committed: {missing:?}"
    );
    let extra: Vec<_> = committed
        .keys()
        .filter(|s| !want.contains_key(s))
        .take(5)
        .collect();
    assert!(
        extra.is_empty(),
        "{topic}: changes that should not pass: {extra:?}"
    );
    for (seq, (_, amount)) in &committed {
        assert_eq!(
            Some(amount),
            want.get(seq),
            "{topic}: change {seq} carries another value"
        );
    }
    let uncommitted: usize = outputs(stack, topic, "read_uncommitted")
        .await
        .values()
        .map(|(n, _)| n)
        .sum();
    assert!(uncommitted >= committed.len());
    println!(
        "{topic}: read_committed sees {} changes once each; read_uncommitted sees {uncommitted} records",
        committed.len()
    );
}

/// The whole scenario: a fresh broker and registry, `processor` (YAML of
/// its entry, named `component`) in a pipeline with transactions, two
/// instances killed in turn while `deliveries` arrive on `events`; then
/// `output` must hold exactly `want` (position -> amount) for a
/// read_committed reader.
async fn scenario(
    component: &str,
    processor: &str,
    deliveries: &[i64],
    output: &str,
    want: &HashMap<i64, i64>,
) {
    let stack = Stack::start();
    let dir = TempDir::new(&format!("txn-{component}"));
    syncline_core::kafka::KafkaConfig::new(stack.bootstrap())
        .ensure_topic("events", PARTITIONS, false)
        .await
        .unwrap();
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        pipeline(&stack, &format!("txn-{component}"), processor),
    )
    .unwrap();
    let runs = run_with_kills(&stack, &file, dir.path(), component, deliveries).await;
    wait_committed(&stack, output, want.len(), &runs).await;
    check_exactly_once(&stack, output, want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_outputs_are_committed_exactly_once_through_kill9_of_two_instances() {
    let n = 20_000i64;
    let deliveries: Vec<i64> = (1..=n).collect();
    let want: HashMap<i64, i64> = (1..=n).map(|s| (s, s * 10)).collect();
    let rules = "  rp:\n    type: rules\n    from: [events]\n    to: events.out\n    batch_size: 200\n    steps:\n      - set: { amount: \"row.amount * 10\" }\n";
    scenario("rp", rules, &deliveries, "events.out", &want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_outputs_are_committed_exactly_once_through_kill9_of_two_instances() {
    // 15,000 distinct changes, a third of them delivered once more,
    // each redelivery a few chunks after the first.
    let n = 15_000i64;
    let mut rng = Rng::from_time();
    let mut deliveries: Vec<i64> = (1..=n).collect();
    for s in 1..=n {
        if rng.below(3) == 0 {
            let at = (s as usize + rng.below(4_000) as usize).min(deliveries.len());
            deliveries.insert(at, s);
        }
    }
    let want: HashMap<i64, i64> = (1..=n).map(|s| (s, s)).collect();
    let dedup = "  dd:\n    type: dedup\n    from: [events]\n    to: events.unique\n    by: identity\n    batch_size: 200\n";
    scenario("dd", dedup, &deliveries, "events.unique", &want).await;
}
