//! Real parts for integration tests: Apache Kafka brokers (one, or a
//! three-node cluster for the fault tests), the `syncline` binary
//! (registry, run, validate) and throwaway Postgres databases. Every test gets its own ports, directories and databases, so
//! tests run in parallel and leave nothing behind.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod api;
pub mod certs;
pub mod changes;
pub mod http;
pub mod my_server;
pub mod pg_server;
pub mod receiver;
mod rng;
pub mod target;

#[allow(unused_imports)] // not every test binary draws random numbers
pub use rng::Rng;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The syncline binary under test: `$SYNCLINE_BIN` (a copy, when another
/// checkout shares the target directory and may rebuild the binary
/// meanwhile), else the one cargo built for these tests.
pub fn syncline_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SYNCLINE_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_syncline"))
}

/// The script that starts one Apache Kafka broker (scripts/kafka/broker.sh:
/// the same setup as `make stack-up` and the benches).
pub fn broker_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka/broker.sh")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "syncline-{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Poll `cond` until it returns true; panic with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `proc` listens on `port`; a failure shows the end of its log.
/// Three minutes: a process that starts while a broker of its cluster is
/// down waits for the partition leaders and the controller to move.
fn wait_for_port(port: u16, proc: &mut Proc, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(code) = proc.exit_code() {
            panic!(
                "{what} exited ({code:?}) before listening on {port}; its log ends:\n{}",
                proc.log_tail(30)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 180 s; its log ends:\n{}",
            proc.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        Self {
            child: Some(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
            ),
            log: log.to_path_buf(),
        }
    }
    /// No process yet (a placeholder until the first spawn).
    pub fn none() -> Self {
        Self {
            child: None,
            log: PathBuf::new(),
        }
    }
    /// The last `n` lines of the process's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
    /// kill -9: no shutdown hook runs, exactly like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// `kill -STOP` (`true`) or `kill -CONT` (`false`): the process is
    /// frozen, its sockets stay open and fill up.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let status = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill {signal} failed");
        }
    }
    /// SIGTERM, then wait up to `timeout` for the process to exit (SIGKILL after).
    pub fn terminate(&mut self, timeout: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Whether the process is still running; `Some(code)` once it has exited.
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map(|s| s.code())
    }
    /// Wait for the process to exit on its own, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_code() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("process was killed")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A real Apache Kafka broker (KRaft, broker and controller in one JVM) on
/// free loopback ports, with its log dir in its own temp dir. Alone it is a
/// one-node cluster; [`Cluster`] starts three that replicate each other.
pub struct Broker {
    node_id: u32,
    port: u16,
    controller_port: u16,
    voters: String,
    dir: TempDir,
    proc: Option<Proc>,
    /// Broker settings beside broker.sh's (`key=value`).
    sets: Vec<String>,
}

impl Broker {
    /// A one-node cluster, ready to serve.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A one-node cluster with broker settings `sets` (`key=value`).
    pub fn start_with(sets: &[&str]) -> Self {
        let (port, controller_port) = (free_port(), free_port());
        let mut b = Self::new(
            1,
            port,
            controller_port,
            format!("1@127.0.0.1:{controller_port}"),
        );
        b.sets = sets.iter().map(|s| s.to_string()).collect();
        b.start_again();
        wait_for_brokers(&b.bootstrap(), 1);
        b
    }

    fn new(node_id: u32, port: u16, controller_port: u16, voters: String) -> Self {
        Self {
            node_id,
            port,
            controller_port,
            voters,
            dir: TempDir::new(&format!("kafka{node_id}")),
            proc: None,
            sets: Vec::new(),
        }
    }

    /// Start the broker process (again) on the same ports and log dir, and
    /// wait until it listens.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "broker {} is running", self.node_id);
        let mut proc = self.spawn();
        wait_for_port(self.port, &mut proc, "kafka broker");
        self.proc = Some(proc);
    }

    fn spawn(&self) -> Proc {
        let mut cmd = Command::new(broker_script());
        cmd.arg("--dir")
            .arg(self.dir.path())
            .args(["--node-id", &self.node_id.to_string()])
            .args(["--port", &self.port.to_string()])
            .args(["--controller-port", &self.controller_port.to_string()])
            .args(["--voters", &self.voters]);
        for s in &self.sets {
            cmd.args(["--set", s]);
        }
        Proc::spawn(cmd, &self.dir.path().join("broker.log"))
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// kill -9: the JVM gets no chance to flush or hand over leadership.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// A clean shutdown (SIGTERM, as in a rolling restart): the broker
    /// moves its leaderships away and flushes before it exits.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(120));
        }
    }

    /// kill -9 the broker and start it again on the same ports and storage.
    pub fn restart(&mut self) {
        self.kill9();
        self.start_again();
        wait_for_brokers(&self.bootstrap(), 1);
    }

    /// What the broker has logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

/// The shape of table `events` for tests and benches that write change
/// records themselves: NOT NULL `columns` (name, type, SQL type), keyed by
/// the first.
pub fn events_table(
    namespace: &str,
    columns: &[(&str, syncline_core::ColumnType, &str)],
) -> syncline_core::TableSchema {
    syncline_core::TableSchema {
        namespace: namespace.into(),
        name: "events".into(),
        columns: columns
            .iter()
            .map(|(name, ty, sql)| syncline_core::Column {
                name: (*name).into(),
                ty: ty.clone(),
                nullable: false,
                sql_type: (*sql).into(),
            })
            .collect(),
        primary_key: vec![columns[0].0.into()],
    }
}

/// A client for metadata and watermark requests (no group, no commits).
pub fn metadata_client(bootstrap: &str) -> rdkafka::consumer::BaseConsumer {
    syncline_core::kafka::KafkaConfig::new(bootstrap)
        .reader_config()
        .create()
        .unwrap()
}

/// Wait until the cluster behind `bootstrap` reports `n` live brokers.
pub fn wait_for_brokers(bootstrap: &str, n: usize) {
    use rdkafka::consumer::Consumer;
    let c = metadata_client(bootstrap);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = c
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|md| md.brokers().len())
            .unwrap_or(0);
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster at {bootstrap} shows {seen} of {n} brokers after 120s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three Apache Kafka brokers, each also a KRaft controller (a quorum of
/// three), on loopback: internal topics and the topics syncline creates
/// have replication factor 3 and `min.insync.replicas=2`, so one broker may
/// die without losing an acknowledged record or stopping producers.
pub struct Cluster {
    pub brokers: Vec<Broker>,
}

impl Cluster {
    pub fn start() -> Self {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut brokers: Vec<Broker> = ports
            .iter()
            .enumerate()
            .map(|(i, &(p, c))| Broker::new(i as u32 + 1, p, c, voters.clone()))
            .collect();
        // Each controller waits for a quorum: start all three before waiting.
        let mut procs: Vec<Proc> = brokers.iter().map(Broker::spawn).collect();
        for (b, p) in brokers.iter().zip(procs.iter_mut()) {
            wait_for_port(b.port, p, "kafka broker");
        }
        for (b, p) in brokers.iter_mut().zip(procs) {
            b.proc = Some(p);
        }
        let cluster = Self { brokers };
        wait_for_brokers(&cluster.bootstrap(), 3);
        cluster
    }

    /// Every broker's address, as a client's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(Broker::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index in [`Self::brokers`] of the broker that leads most of
    /// `topic`'s partitions now.
    pub fn leader_of(&self, topic: &str) -> usize {
        use rdkafka::consumer::Consumer;
        let c = metadata_client(&self.bootstrap());
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut counts = std::collections::BTreeMap::<i32, usize>::new();
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            *counts.entry(p.leader()).or_default() += 1;
        }
        let (leader, _) = counts
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .unwrap_or_else(|| panic!("topic {topic} has no partitions"));
        self.brokers
            .iter()
            .position(|b| b.node_id as i32 == leader)
            .unwrap_or_else(|| panic!("no broker has node id {leader}"))
    }

    /// The replica count of every partition of `topic`.
    pub fn replicas(&self, topic: &str) -> Vec<usize> {
        use rdkafka::consumer::Consumer;
        let md = metadata_client(&self.bootstrap())
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        md.topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| p.replicas().len())
            .collect()
    }

    /// Wait until every partition of `topic` has all three replicas in sync
    /// again (after a broker came back).
    pub fn wait_in_sync(&self, topic: &str) {
        use rdkafka::consumer::Consumer;
        let c = metadata_client(&self.bootstrap());
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let ok = c
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map(|md| {
                    md.topics()
                        .iter()
                        .flat_map(|t| t.partitions())
                        .all(|p| p.error().is_none() && p.isr().len() == 3 && p.leader() >= 0)
                })
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: replicas not back in sync after 180s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `syncline registry`, the real binary, on a free port.
pub struct RegistryProcess {
    port: u16,
    bootstrap: String,
    topic: String,
    /// Environment variables and arguments of every start.
    env: Vec<(String, String)>,
    args: Vec<String>,
    dir: TempDir,
    proc: Proc,
}

impl RegistryProcess {
    pub fn start(broker: &Broker) -> Self {
        Self::start_on_topic(broker, "_schemas")
    }

    pub fn start_on_topic(broker: &Broker, topic: &str) -> Self {
        Self::start_at(&broker.bootstrap(), topic)
    }

    /// A registry keeping its schemas in `topic` of the cluster at `bootstrap`.
    pub fn start_at(bootstrap: &str, topic: &str) -> Self {
        Self::start_with(bootstrap, topic, &[], &[])
    }

    /// [`RegistryProcess::start_at`] with environment variables (e.g.
    /// credentials) and more arguments.
    pub fn start_with(bootstrap: &str, topic: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut r = Self {
            port: free_port(),
            bootstrap: bootstrap.to_string(),
            topic: topic.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: TempDir::new("registry"),
            proc: Proc::none(),
        };
        r.proc = r.spawn();
        r
    }

    fn spawn(&self) -> Proc {
        let mut cmd = Command::new(syncline_bin());
        cmd.arg("registry")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--kafka-bootstrap", &self.bootstrap, "--topic", &self.topic])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn(cmd, &self.dir.path().join("registry.log"));
        wait_for_port(self.port, &mut proc, "syncline registry");
        proc
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// kill -9 and start again on the same port and topic.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = self.spawn();
    }

    /// What the registry has logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

/// A broker and a registry: what every pipeline test needs.
pub struct Stack {
    pub broker: Broker,
    pub registry: RegistryProcess,
}

impl Stack {
    pub fn start() -> Self {
        let broker = Broker::start();
        let registry = RegistryProcess::start(&broker);
        Self { broker, registry }
    }
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }
    pub fn registry_url(&self) -> String {
        self.registry.url()
    }
}

/// The machine's Postgres (127.0.0.1:5432, trust auth), or `$SYNCLINE_TEST_PG`.
pub fn pg_admin_url() -> String {
    std::env::var("SYNCLINE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A throwaway Postgres database with a unique name, dropped on drop.
pub struct PgDb {
    name: String,
}

impl PgDb {
    pub async fn create(prefix: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "syncline_{prefix}_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            Instant::now().elapsed().subsec_nanos() % 1000
        );
        let admin = pg_connect(&format!("{}/postgres", pg_admin_url())).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        Self { name }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn url(&self) -> String {
        format!("{}/{}", pg_admin_url(), self.name)
    }
    pub async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.url()).await
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let url = format!("{}/postgres", pg_admin_url());
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a short-lived thread and runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Fail a test whose target never caught up: `message`, then the last 40
/// lines of each run's log (newest first); each full log is kept in the
/// temp directory and its path printed.
pub fn panic_with_logs(message: &str, runs: &[&SynclineRun]) -> ! {
    for (i, r) in runs.iter().enumerate() {
        let kept =
            std::env::temp_dir().join(format!("syncline-failed-{}-{i}.log", std::process::id()));
        let _ = std::fs::write(&kept, r.log());
        eprintln!("full log of run {i}: {}", kept.display());
    }
    let logs: Vec<String> = runs
        .iter()
        .map(|r| {
            r.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    panic!("{message}\nlogs (newest first):\n{}", logs.join("\n----\n"));
}

/// A `syncline run PIPELINE` process, with its log kept for failure messages.
pub struct SynclineRun {
    pipeline: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    proc: Proc,
}

impl SynclineRun {
    pub fn start(pipeline: &Path) -> Self {
        Self::start_with_args(pipeline, &[])
    }
    /// `syncline run PIPELINE ARGS...`, e.g. `--component NAME`. The
    /// management API listens on a port of its own (see [`Self::api_url`])
    /// unless `ARGS` say `--api-addr`.
    pub fn start_with_args(pipeline: &Path, args: &[&str]) -> Self {
        let log = pipeline.with_extension(format!("{}.log", free_port()));
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--api-addr") {
            args.extend(["--api-addr".into(), format!("127.0.0.1:{}", free_port())]);
        }
        let proc = Self::spawn(pipeline, &args, &log);
        Self {
            pipeline: pipeline.to_path_buf(),
            args,
            log,
            proc,
        }
    }
    /// `http://ADDR` of this run's management API.
    pub fn api_url(&self) -> String {
        let at = self
            .args
            .iter()
            .position(|a| a == "--api-addr")
            .expect("an API address");
        format!("http://{}", self.args[at + 1])
    }
    fn spawn(pipeline: &Path, args: &[String], log: &Path) -> Proc {
        /// `info`, or `SYNCLINE_TEST_LOG` (a `RUST_LOG` filter) to see more
        /// of a run that a test is chasing.
        fn run_log_filter() -> String {
            std::env::var("SYNCLINE_TEST_LOG").unwrap_or_else(|_| "info".into())
        }
        let mut cmd = Command::new(syncline_bin());
        cmd.arg("run")
            .arg(pipeline)
            .args(args)
            .env("RUST_LOG", run_log_filter());
        Proc::spawn(cmd, log)
    }
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }
    /// See [`Proc::freeze`].
    pub fn freeze(&self, frozen: bool) {
        self.proc.freeze(frozen);
    }
    /// kill -9, then start the same pipeline again (appending to the same log).
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Self::spawn(&self.pipeline, &self.args, &self.log);
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        self.proc.exit_code()
    }
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.proc.wait_exit(timeout)
    }
}

/// `syncline ARGS` with the environment `env` added: (exit code, stdout,
/// stderr).
pub fn syncline_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(syncline_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("syncline runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `syncline validate FILE` and return (exit code, stdout, stderr).
pub fn validate(pipeline: &Path) -> (i32, String, String) {
    let out = Command::new(syncline_bin())
        .arg("validate")
        .arg(pipeline)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Records in `topic` now (sum over partitions of high minus low watermark;
/// 0 when the topic does not exist yet).
pub fn topic_records(bootstrap: &str, topic: &str) -> i64 {
    use rdkafka::consumer::Consumer;
    let c = metadata_client(bootstrap);
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    md.topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            c.fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .map(|(lo, hi)| hi - lo)
                .unwrap_or(0)
        })
        .sum()
}

/// The first record of partition 0 of `topic` (waits up to 3 minutes for it).
pub fn first_record(bootstrap: &str, topic: &str) -> rdkafka::message::OwnedMessage {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = syncline_core::kafka::KafkaConfig::new(bootstrap)
        .reader_config()
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(Instant::now() < deadline, "nothing in the topic `{topic}`");
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            return m.detach();
        }
    }
}

/// The first `n` records of `topic`, from all its partitions (waits up to
/// 3 minutes for them).
pub fn records(bootstrap: &str, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = syncline_core::kafka::KafkaConfig::new(bootstrap)
        .reader_config()
        .create()
        .unwrap();
    let md = reader
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} records in the topic `{topic}`",
            out.len()
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}

/// The value of header `name` of `m` ("" when it has none).
pub fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    use rdkafka::message::{Headers, Message};
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// How long a plain librdkafka producer takes to write `n` records of
/// `size` bytes to topic `bench.raw` (3 partitions) and have every one
/// acknowledged: the broker's limit that benches compare stages against.
pub async fn raw_producer(bootstrap: &str, n: i64, size: usize) -> Duration {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = syncline_core::kafka::KafkaConfig::new(bootstrap);
    let producer: FutureProducer = kafka.producer().unwrap();
    kafka.ensure_topic("bench.raw", 3, false).await.unwrap();
    let payload = vec![7u8; size];
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let keys: Vec<[u8; 8]> = chunk.iter().map(|i| i.to_be_bytes()).collect();
        let sends = keys.iter().map(|k| {
            producer.send(
                FutureRecord::to("bench.raw").key(&k[..]).payload(&payload),
                Duration::from_secs(60),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).unwrap();
        }
    }
    start.elapsed()
}
