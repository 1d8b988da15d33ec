//! Driving the JVM peers from the benches: Kafka Connect standalone workers
//! (Debezium's Postgres source, Debezium's JDBC sink) and `StreamsDedup`
//! (Kafka Streams), all from the classpath `scripts/peers.sh` assembled
//! (benches/peers/README.md says what is in it and why).
#![allow(dead_code)] // each bench uses a different part

use crate::support::{free_port, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The installed peers, or why they cannot run here.
pub struct Peers {
    libs: PathBuf,
}

impl Peers {
    /// The classpath `scripts/peers.sh` installed, if it did.
    pub fn installed() -> Result<Peers, String> {
        let cache = std::env::var("SYNCLINE_CACHE").unwrap_or_else(|_| {
            format!(
                "{}/.cache/syncline",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let libs = PathBuf::from(cache).join("peers/libs");
        if libs.join(".complete").exists() {
            Ok(Peers { libs })
        } else {
            Err(format!(
                "the JVM peers are not installed in {} (scripts/peers.sh; `make bench` runs it)",
                libs.display()
            ))
        }
    }

    fn java(&self, heap_max: &str, main: &str) -> Command {
        let mut cmd = Command::new("java");
        let log4j = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/log4j2.properties");
        cmd.arg("-Xms256m")
            .arg(format!("-Xmx{heap_max}"))
            .arg("-XX:+UseG1GC")
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg(main);
        cmd
    }

    /// A Kafka Connect standalone worker running one connector (`props`,
    /// with `name` and `connector.class`), its files in `dir`. JSON
    /// converters with schemas: Confluent's Avro converter is not on Maven
    /// Central, and the JDBC sink needs the schemas.
    pub fn connect(
        &self,
        bootstrap: &str,
        dir: &Path,
        name: &str,
        props: &[(&str, String)],
    ) -> Connect {
        std::fs::create_dir_all(dir).unwrap();
        let rest_port = free_port();
        let worker = dir.join(format!("{name}-worker.properties"));
        let connector = dir.join(format!("{name}.properties"));
        let mut w = format!(
            "bootstrap.servers={bootstrap}\nlisteners=http://127.0.0.1:{rest_port}\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             key.converter.schemas.enable=true\nvalue.converter.schemas.enable=true\n\
             offset.storage.file.filename={}\noffset.flush.interval.ms=1000\n\
             plugin.discovery=service_load\n\
             producer.compression.type=lz4\n",
            dir.join(format!("{name}-offsets.dat")).display()
        );
        w.push_str("consumer.max.poll.records=2000\n");
        std::fs::write(&worker, w).unwrap();
        let mut c = format!("name={name}\ntasks.max=1\n");
        for (k, v) in props {
            c.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(&connector, c).unwrap();
        let mut cmd = self.java("1g", "org.apache.kafka.connect.cli.ConnectStandalone");
        cmd.arg(&worker).arg(&connector);
        let log = dir.join(format!("{name}.log"));
        Connect {
            name: name.to_string(),
            rest_port,
            log: log.clone(),
            proc: Proc::spawn(cmd, &log),
        }
    }

    /// The command of `StreamsDedup`: dedup by identity on Kafka Streams
    /// (at least once, Kafka Streams' default), from `input` to `output`
    /// (which must exist).
    pub fn streams_dedup(
        &self,
        bootstrap: &str,
        registry: &str,
        input: &str,
        output: &str,
        app_id: &str,
        state_dir: &Path,
    ) -> Command {
        let mut cmd = self.java("512m", "io.syncline.peers.StreamsDedup");
        cmd.args(["--broker", bootstrap, "--registry", registry])
            .args([
                "--input",
                input,
                "--output",
                output,
                "--application-id",
                app_id,
            ])
            .arg("--state-dir")
            .arg(state_dir);
        cmd
    }
}

/// A running Connect standalone worker with one connector.
pub struct Connect {
    name: String,
    rest_port: u16,
    log: PathBuf,
    pub proc: Proc,
}

impl Connect {
    /// Wait until the connector and its task run; panic with the reason when
    /// either failed (a worker keeps running when its connector fails).
    pub async fn wait_running(&self) {
        let url = format!(
            "http://127.0.0.1:{}/connectors/{}/status",
            self.rest_port, self.name
        );
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    let connector = v["connector"]["state"].as_str().unwrap_or("");
                    let task = v["tasks"][0]["state"].as_str().unwrap_or("");
                    if connector == "FAILED" || task == "FAILED" {
                        panic!("{}: failed: {v}\n{}", self.name, self.log_tail());
                    }
                    if connector == "RUNNING" && task == "RUNNING" {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: not running after 180 s\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A panic if the connector or its task failed meanwhile.
    pub async fn assert_not_failed(&self) {
        let url = format!(
            "http://127.0.0.1:{}/connectors/{}/status",
            self.rest_port, self.name
        );
        if let Ok(r) = reqwest::get(&url).await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                assert!(
                    !v.to_string().contains("\"FAILED\""),
                    "{}: failed: {v}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM: the worker stops the connector and flushes its offsets.
    pub fn stop(&mut self) {
        self.proc.terminate(Duration::from_secs(30));
    }
}

/// Debezium's Postgres connector (pgoutput) for `table` of the database at
/// `url` (`postgres://user@host:port/db`), publishing to
/// `<prefix>.public.<table>` with one partition per topic; `snapshot` is
/// Debezium's `snapshot.mode` (`initial`, `no_data`).
pub fn debezium_postgres(
    url: &str,
    table: &str,
    prefix: &str,
    snapshot: &str,
) -> Vec<(&'static str, String)> {
    let (user, rest) = url
        .trim_start_matches("postgres://")
        .split_once('@')
        .expect("postgres://user@host:port/db");
    let (hostport, db) = rest.split_once('/').expect("a database name");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    vec![
        (
            "connector.class",
            "io.debezium.connector.postgresql.PostgresConnector".into(),
        ),
        ("database.hostname", host.into()),
        ("database.port", port.into()),
        ("database.user", user.into()),
        ("database.password", String::new()),
        ("database.dbname", db.into()),
        ("topic.prefix", prefix.into()),
        ("table.include.list", format!("public.{table}")),
        ("plugin.name", "pgoutput".into()),
        (
            "slot.name",
            format!("{}_slot", prefix.replace(['.', '-'], "_")),
        ),
        (
            "publication.name",
            format!("{}_pub", prefix.replace(['.', '-'], "_")),
        ),
        ("publication.autocreate.mode", "filtered".into()),
        ("snapshot.mode", snapshot.into()),
        ("topic.creation.default.partitions", "3".into()),
        ("topic.creation.default.replication.factor", "1".into()),
        // Tuned as a user after throughput and latency would: batches as
        // large as syncline's, and no 500 ms wait (the default) for a batch
        // to fill when changes come one at a time.
        ("max.batch.size", "4096".into()),
        ("max.queue.size", "16384".into()),
        ("poll.interval.ms", "10".into()),
    ]
}

/// Debezium's JDBC sink: upserts and deletes by the record key into `table`
/// of the Postgres database at `url`, creating the table.
pub fn debezium_jdbc_sink(url: &str, topic: &str, table: &str) -> Vec<(&'static str, String)> {
    let (user, rest) = url
        .trim_start_matches("postgres://")
        .split_once('@')
        .expect("postgres://user@host:port/db");
    vec![
        (
            "connector.class",
            "io.debezium.connector.jdbc.JdbcSinkConnector".into(),
        ),
        ("topics", topic.into()),
        ("connection.url", format!("jdbc:postgresql://{rest}")),
        ("connection.username", user.into()),
        ("connection.password", String::new()),
        ("insert.mode", "upsert".into()),
        ("delete.enabled", "true".into()),
        ("primary.key.mode", "record_key".into()),
        ("schema.evolution", "basic".into()),
        ("collection.name.format", table.into()),
        ("batch.size", "2000".into()),
    ]
}
