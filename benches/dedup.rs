//! `make bench` (dedup): throughput of the `dedup` processor beside the
//! limit it passes through and beside Quix Streams doing the same job, on
//! real parts (Apache Kafka broker, `syncline registry`), one machine, one broker,
//! one input topic. Prints a table; asserts only that each output is exact
//! (a wrong count makes its figure meaningless).
//!
//! Input: `SYNCLINE_BENCH_DEDUP_RECORDS` (default 1,000,000: fewer make the
//! start-up of each contender weigh on its figure) change records,
//! written with syncline's own codec (Confluent Avro wire format) to
//! `bench.events` (3 partitions, keyed and partitioned by row id). Every
//! fourth record is a redelivery of an earlier change (same identity, same
//! bytes, same partition), so exactly 3/4 of the records are distinct. Each
//! distinct change also has distinct row values, so `by: content` must pass
//! exactly the same changes as `by: identity`.
//!
//! Rows of the table:
//! - raw librdkafka consume+produce: a plain consumer reading the input from
//!   the beginning and a plain (syncline-configured: idempotent, acks=all,
//!   lz4) producer writing every record unchanged to another topic, until all
//!   are acknowledged. The ceiling.
//! - syncline dedup (identity, and content unless
//!   `SYNCLINE_BENCH_DEDUP_CONTENT=0`): the release binary, `--component dd`,
//!   its default `batch_size` unless `SYNCLINE_BENCH_DEDUP_BATCH` sets one;
//!   timed from process start until the output topic holds the expected
//!   count (watermarks), then checked for extras after a pause.
//! - Quix Streams (`benches/quix_dedup.py`, pinned version installed into its
//!   own venv, since quixstreams pins confluent-kafka < 2.13 and the interop
//!   venv has 2.16.1): the same dedup by identity, timed the same way.
//! - Kafka Streams (`StreamsDedup`, benches/peers: the same dedup by
//!   identity, RocksDB store with its changelog, at least once), when
//!   `scripts/peers.sh` installed it (`make bench` does), timed the same way.
//!
//! records/s = input records / elapsed (start-up included). State on disk is
//! a du-style walk (allocated blocks) of the state directory just before the
//! process is killed; peak RSS is its `VmHWM`.

#[path = "peers/driver.rs"]
mod peers;
#[path = "../tests/support/mod.rs"]
mod support;

use apache_avro::types::Value;
use peers::Peers;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, Stack, TempDir};
use syncline_core::codec::Encoder;
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::{ChangeEvent, ColumnType, Op, Position, SourceInfo, TableSchema};

const PARTITIONS: i32 = 3;
const INPUT: &str = "bench.events";
/// Distinct rows the changes touch.
const ROWS: u64 = 20_000;
/// A redelivery repeats one of the last this-many distinct changes.
const REDELIVERY_WINDOW: usize = 5_000;
/// How long a stage may take before the bench gives up on it.
const STAGE_LIMIT: Duration = Duration::from_secs(900);
/// Pinned Quix Streams: the newest that pip serves here; it needs
/// confluent-kafka < 2.13, hence its own venv.
const QUIX_VERSION: &str = "3.28.1";

/// A small deterministic generator (xorshift), so every run has the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn table() -> TableSchema {
    support::events_table(
        "syncline.bench",
        &[
            ("id", ColumnType::Long, "bigint"),
            ("customer", ColumnType::Text, "text"),
            ("amount", ColumnType::Long, "bigint"),
            ("version", ColumnType::Long, "bigint"),
            ("note", ColumnType::Text, "text"),
        ],
    )
}

/// Distinct change number `seq` (its identity is `feed` + position `seq`;
/// its row values include `seq`, so no two distinct changes share content).
fn event(rng: &mut Rng, seq: i64) -> ChangeEvent {
    let id = rng.below(ROWS) as i64;
    let row = vec![
        ("id".to_string(), Value::Long(id)),
        (
            "customer".to_string(),
            Value::String(format!("customer-{}", rng.below(500))),
        ),
        ("amount".to_string(), Value::Long(rng.below(100_000) as i64)),
        ("version".to_string(), Value::Long(seq)),
        (
            "note".to_string(),
            Value::String("order updated by the nightly batch".into()),
        ),
    ];
    ChangeEvent {
        unchanged: Vec::new(),
        op: Op::Upsert,
        key: vec![("id".to_string(), Value::Long(id))],
        before: None,
        after: Some(row),
        source: SourceInfo {
            connector: "bench".into(),
            name: "feed".into(),
            db: "bench".into(),
            table: "events".into(),
            position: Position::builder().i64(seq).build(),
            position_text: seq.to_string(),
            ts_us: 1_700_000_000_000_000 + seq * 1000,
        },
    }
}

/// Create the input topic, retained forever (`retention.ms: -1`): the
/// contenders read it one after the other, and Quix Streams derives its
/// changelog topic's config from the input's `retention.ms` (a broker that
/// reports only the configs given at creation made Quix fail without it).
async fn create_input(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic =
        NewTopic::new(INPUT, PARTITIONS, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    for r in admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.map_err(|(t, e)| format!("cannot create {t}: {e}"))
            .unwrap();
    }
}

/// One encoded record: partition, key, value.
type Encoded = (i32, Vec<u8>, Vec<u8>);

/// Encode the input: `n` records, every fourth a redelivery (same bytes, same
/// partition) of one of the recent distinct changes. Returns (records, distinct).
async fn input(stack: &Stack, n: usize) -> (Vec<Encoded>, usize) {
    let encoder = Encoder::new(&RegistryConfig::new(stack.registry_url())).unwrap();
    let table = table();
    let mut rng = Rng(0x5eed_dd01);
    let mut distinct: Vec<usize> = Vec::new(); // indexes into `out` of first deliveries
    let mut out: Vec<Encoded> = Vec::with_capacity(n);
    let mut seq = 0i64;
    for i in 0..n {
        if i % 4 == 3 {
            let window = distinct.len().min(REDELIVERY_WINDOW) as u64;
            let pick = distinct[distinct.len() - 1 - rng.below(window) as usize];
            let again = out[pick].clone();
            out.push(again);
        } else {
            seq += 1;
            let e = event(&mut rng, seq);
            let Value::Long(id) = e.key[0].1 else {
                unreachable!()
            };
            let (k, v) = encoder.encode(INPUT, &table, &e).await.unwrap();
            distinct.push(out.len());
            out.push(((id % PARTITIONS as i64) as i32, k, v));
        }
    }
    (out, distinct.len())
}

async fn produce(bootstrap: &str, topic: &str, records: &[Encoded]) {
    let producer: FutureProducer = KafkaConfig::new(bootstrap).producer().unwrap();
    for chunk in records.chunks(20_000) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|(p, k, v)| {
                producer
                    .send_result(FutureRecord::to(topic).partition(*p).key(k).payload(v))
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for s in sends {
            s.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
}

/// Records a topic holds (sum of high - low watermarks); 0 if it does not exist.
fn topic_records(consumer: &BaseConsumer, topic: &str) -> i64 {
    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    md.topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .map(|(lo, hi)| hi - lo)
                .unwrap_or(0)
        })
        .sum()
}

/// The ceiling: consume the input from the beginning, produce every record
/// unchanged to `to`, wait for all acknowledgements.
async fn raw_copy(bootstrap: &str, to: &str, n: usize) -> Duration {
    KafkaConfig::new(bootstrap)
        .ensure_topic(to, PARTITIONS, false)
        .await
        .unwrap();
    let start = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw-copy")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(INPUT, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let producer: FutureProducer = KafkaConfig::new(bootstrap).producer().unwrap();
    let mut pending = Vec::with_capacity(n);
    while pending.len() < n {
        assert!(start.elapsed() < STAGE_LIMIT, "raw copy took too long");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => panic!("raw consumer: {e}"),
            Some(Ok(m)) => {
                let mut r = FutureRecord::to(to).partition(m.partition());
                if let Some(k) = m.key() {
                    r = r.key(k);
                }
                if let Some(v) = m.payload() {
                    r = r.payload(v);
                }
                // Back-pressure as syncline's stages do: a full local queue
                // waits for it to drain.
                loop {
                    match producer.send_result(r) {
                        Ok(f) => break pending.push(f),
                        Err((e, back))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            producer.poll(Duration::from_millis(10));
                            r = back;
                        }
                        Err((e, _)) => panic!("raw producer: {e}"),
                    }
                }
            }
        }
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    start.elapsed()
}

/// Bytes allocated on disk under `path` (like `du -s --bytes` of blocks).
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = md.blocks() * 512;
    if md.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

/// Bytes of the files under `path` (their lengths: what `du --apparent-size` says).
fn apparent_size(path: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| apparent_size(&e.path())).sum())
        .unwrap_or(0)
}

/// "allocated (apparent)": RocksDB preallocates its write-ahead log, so the
/// two differ much while the state is small.
fn state_on_disk(path: &Path) -> String {
    format!(
        "{} ({} apparent)",
        mib(disk_usage(path)),
        mib(apparent_size(path))
    )
}

/// Peak resident set of a running process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// A process under measurement: killed (SIGKILL) on drop, log kept.
struct Measured {
    child: Child,
    log: PathBuf,
}

impl Measured {
    fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self { child, log }
    }
    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured row of the table.
struct Figures {
    what: String,
    elapsed: Duration,
    output: i64,
    state: Option<String>,
    peak_rss: Option<u64>,
    note: String,
}

/// Wait until `topic` holds `expected` records (time from `start`), then a
/// few seconds more to see extras; assert it is exact.
async fn await_output(
    watch: &BaseConsumer,
    topic: &str,
    expected: i64,
    start: Instant,
    proc: &mut Measured,
    what: &str,
) -> (Duration, i64) {
    let elapsed = loop {
        let got = topic_records(watch, topic);
        if got >= expected {
            break start.elapsed();
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "{what}: exited ({status}) with {got} of {expected} outputs\n{}",
                proc.log_tail(60)
            );
        }
        assert!(
            start.elapsed() < STAGE_LIMIT,
            "{what}: only {got} of {expected} outputs after {STAGE_LIMIT:?}\n{}",
            proc.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = topic_records(watch, topic);
    assert_eq!(
        got,
        expected,
        "{what}: the output topic holds {got} records, {expected} expected (duplicates passed)\n{}",
        proc.log_tail(60)
    );
    (elapsed, got)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// `syncline run` of a one-processor pipeline, measured.
async fn syncline_dedup(
    stack: &Stack,
    dir: &Path,
    name: &str,
    by: &str,
    watch: &BaseConsumer,
    n: usize,
    expected: i64,
) -> Figures {
    let output = format!("{INPUT}.unique.{by}");
    let pipeline = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &pipeline,
        format!(
            "name: {name}\nkafka: {{ bootstrap_servers: '{}', partitions: {PARTITIONS} }}\n\
             registry: {{ url: '{}' }}\nexternal_topics: [{INPUT}]\nprocessors:\n  dd:\n    type: dedup\n    from: [{INPUT}]\n\
             \x20   to: {output}\n    by: {by}\n{batch}",
            stack.bootstrap(),
            stack.registry_url(),
            batch = std::env::var("SYNCLINE_BENCH_DEDUP_BATCH")
                .map(|n| format!("    batch_size: {n}\n"))
                .unwrap_or_default(),
        ),
    )
    .unwrap();
    let state = dir.join(format!("state-{name}"));
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(support::syncline_bin());
    cmd.arg("run")
        .arg(&pipeline)
        .args(["--component", "dd", "--state-dir"])
        .arg(&state)
        .args(["--metrics-addr", &metrics_addr])
        .env("RUST_LOG", "info");
    let what = format!("syncline dedup ({by})");
    let start = Instant::now();
    let mut proc = Measured::spawn(cmd, dir.join(format!("{name}.log")));
    let (elapsed, got) = await_output(watch, &output, expected, start, &mut proc, &what).await;
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .ok();
    let metrics = match metrics {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    let dropped = metric(&metrics, "syncline_processor_records_deduplicated_total");
    let state_gauge = metric(&metrics, "syncline_processor_state_bytes");
    let changelog = format!("{name}.dd.changelog");
    let changelog_records = topic_records(watch, &changelog);
    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let rss = peak_rss(proc.child.id());
    let state_size = state_on_disk(&state);
    drop(proc);
    let mut note = format!(
        "output {got} = expected, changelog `{changelog}` holds {changelog_records} records"
    );
    if let Some(d) = dropped {
        note += &format!(", deduplicated_total {d:.0} (want {})", n as i64 - expected);
    }
    if let Some(s) = state_gauge {
        note += &format!(", state_bytes gauge {}", mib(s as u64));
    }
    note += &format!(", {} warnings/errors logged", warnings.len());
    for w in warnings.iter().take(3) {
        note += &format!("\n    {w}");
    }
    Figures {
        what,
        elapsed,
        output: got,
        state: Some(state_size),
        peak_rss: rss,
        note,
    }
}

/// The venv that has Quix Streams (installed on first use).
fn quix_python() -> PathBuf {
    let cache = std::env::var("SYNCLINE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/syncline")
        });
    let venv = cache.join("venv-quix");
    let python = venv.join("bin/python");
    let has = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                &format!("import quixstreams, sys; sys.exit(quixstreams.__version__ != '{QUIX_VERSION}')"),
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        println!(
            "installing quixstreams {QUIX_VERSION} into {}",
            venv.display()
        );
        if !python.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot create the venv {}", venv.display());
        }
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("quixstreams[avro]=={QUIX_VERSION}"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && has(&python),
            "cannot install quixstreams {QUIX_VERSION}"
        );
    }
    python
}

async fn quix_dedup(stack: &Stack, dir: &Path, watch: &BaseConsumer, expected: i64) -> Figures {
    let python = quix_python();
    let output = format!("{INPUT}.unique.quix");
    KafkaConfig::new(stack.bootstrap())
        .ensure_topic(&output, PARTITIONS, false)
        .await
        .unwrap();
    let state = dir.join("state-quix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/quix_dedup.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--broker", &stack.bootstrap()])
        .args(["--registry", &stack.registry_url()])
        .args(["--input", INPUT, "--output", &output])
        .args(["--group", "bench-quix-dedup"])
        .arg("--state-dir")
        .arg(&state);
    let what = format!("Quix Streams {QUIX_VERSION} dedup (identity)");
    let start = Instant::now();
    let mut proc = Measured::spawn(cmd, dir.join("quix.log"));
    let (elapsed, got) = await_output(watch, &output, expected, start, &mut proc, &what).await;
    // Quix writes its state (RocksDB and changelog) at each checkpoint
    // (every 5 s), not per record: measure the state once the changelog
    // holds every identity, so that it is the state of the whole input.
    let changelog = format!("changelog__bench-quix-dedup--{INPUT}--default");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut changelog_records = topic_records(watch, &changelog);
    while changelog_records < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        changelog_records = topic_records(watch, &changelog);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = peak_rss(proc.child.id());
    let state_size = state_on_disk(&state);
    drop(proc);
    Figures {
        what,
        elapsed,
        output: got,
        state: Some(state_size),
        peak_rss: rss,
        note: format!(
            "output {got} = expected, changelog `{changelog}` holds {changelog_records} records"
        ),
    }
}

/// Kafka Streams doing the same dedup by identity (benches/peers).
async fn streams_dedup(
    stack: &Stack,
    dir: &Path,
    watch: &BaseConsumer,
    expected: i64,
    peers: &Peers,
) -> Figures {
    let output = format!("{INPUT}.unique.streams");
    KafkaConfig::new(stack.bootstrap())
        .ensure_topic(&output, PARTITIONS, false)
        .await
        .unwrap();
    let state = dir.join("state-streams");
    let app = "bench-streams-dedup";
    let cmd = peers.streams_dedup(
        &stack.bootstrap(),
        &stack.registry_url(),
        INPUT,
        &output,
        app,
        &state,
    );
    let what = "Kafka Streams 4.1.1 dedup (identity)".to_string();
    let start = Instant::now();
    let mut proc = Measured::spawn(cmd, dir.join("streams.log"));
    let (elapsed, got) = await_output(watch, &output, expected, start, &mut proc, &what).await;
    // Kafka Streams writes each state change to its changelog as it
    // happens (flushed at its commit, every 30 s by default): measure once
    // the changelog holds every identity.
    let changelog = format!("{app}-seen-changelog");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut changelog_records = topic_records(watch, &changelog);
    while changelog_records < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        changelog_records = topic_records(watch, &changelog);
    }
    let rss = peak_rss(proc.child.id());
    let state_size = state_on_disk(&state);
    drop(proc);
    Figures {
        what,
        elapsed,
        output: got,
        state: Some(state_size),
        peak_rss: rss,
        note: format!(
            "output {got} = expected, changelog `{changelog}` holds {changelog_records} records; \
             at_least_once (Kafka Streams' default, commit every 30 s)"
        ),
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SYNCLINE_BENCH_DEDUP_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let content = std::env::var("SYNCLINE_BENCH_DEDUP_CONTENT").as_deref() != Ok("0");
    let quix = std::env::var("SYNCLINE_BENCH_DEDUP_QUIX").as_deref() != Ok("0");
    let stack = Stack::start();
    let dir = TempDir::new("bench-dedup");
    let bootstrap = stack.bootstrap();
    create_input(&bootstrap).await;
    let (records, distinct) = input(&stack, n).await;
    let expected = distinct as i64;
    produce(&bootstrap, INPUT, &records).await;
    let avg = records
        .iter()
        .map(|(_, k, v)| k.len() + v.len())
        .sum::<usize>()
        / n.max(1);
    drop(records);
    let watch: BaseConsumer = KafkaConfig::new(&bootstrap)
        .reader_config()
        .create()
        .unwrap();
    assert_eq!(topic_records(&watch, INPUT), n as i64, "input written");

    let mut rows = Vec::new();
    let raw = raw_copy(&bootstrap, "bench.events.copy", n).await;
    rows.push(Figures {
        what: "raw librdkafka consume+produce".into(),
        elapsed: raw,
        output: n as i64,
        state: None,
        peak_rss: None,
        note: "every record copied, all acknowledged".into(),
    });
    rows.push(
        syncline_dedup(
            &stack,
            dir.path(),
            "benchdd",
            "identity",
            &watch,
            n,
            expected,
        )
        .await,
    );
    if content {
        rows.push(
            syncline_dedup(
                &stack,
                dir.path(),
                "benchcc",
                "content",
                &watch,
                n,
                expected,
            )
            .await,
        );
    }
    if quix {
        rows.push(quix_dedup(&stack, dir.path(), &watch, expected).await);
    }
    match Peers::installed() {
        Ok(peers) => rows.push(streams_dedup(&stack, dir.path(), &watch, expected, &peers).await),
        Err(why) => println!("Kafka Streams: not run: {why}"),
    }

    println!();
    println!(
        "dedup bench: {n} input records ({distinct} distinct), ~{avg} bytes each, Apache Kafka 4.1.1 on loopback, {PARTITIONS} partitions"
    );
    println!("| what | records/s | elapsed | state on disk | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.2}s | {} | {} |",
            r.what,
            n as f64 / r.elapsed.as_secs_f64(),
            r.elapsed.as_secs_f64(),
            r.state.as_deref().unwrap_or("-"),
            r.peak_rss.map_or("-".into(), mib),
        );
    }
    println!();
    for r in &rows {
        println!("{}: {} outputs; {}", r.what, r.output, r.note);
    }
    println!();
    let identity = &rows[1];
    let of_limit = rows[0].elapsed.as_secs_f64() / identity.elapsed.as_secs_f64();
    println!(
        "goal: dedup at >= 0.80 of the raw consume+produce copy: {of_limit:.2} ({})",
        if of_limit >= 0.8 { "met" } else { "NOT met" }
    );
    for r in rows.iter().filter(|r| r.what != identity.what) {
        println!(
            "{} / {} = {:.2}x (records/s)",
            identity.what,
            r.what,
            r.elapsed.as_secs_f64() / identity.elapsed.as_secs_f64()
        );
    }
}
