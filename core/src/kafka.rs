//! The `kafka:` section of a pipeline file, and the librdkafka clients built from it.

use crate::error::{Context, Error, ErrorKind, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How to reach the Kafka-protocol broker.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers, e.g. `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// Partitions of the topics syncline creates (data topics that do not exist yet).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of the topics syncline creates; -1 uses the broker's default.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Topic configs given to every topic syncline creates (data, dead-letter
    /// and state topics), e.g. `min.insync.replicas: "2"`: with
    /// `replication_factor: 3`, one broker may then fail without losing an
    /// acknowledged record or stopping producers. Topics that exist already
    /// are left as they are. State topics stay compacted whatever this says.
    #[serde(default)]
    pub topic_properties: BTreeMap<String, String>,
    /// How `rules` and `dedup` make each of their outputs count once.
    /// `identity` (the default): every output keeps its input's identity and
    /// offsets are stored only after the outputs are acknowledged, so a
    /// replay writes equal records that syncline sinks drop; works on any
    /// Kafka-protocol broker. `transactions`: each batch's outputs, changelog
    /// records and input offsets are also written in one Kafka transaction,
    /// so a `read_committed` consumer of their topics sees every change once,
    /// and a stale instance is fenced (needs a broker with transactions).
    /// docs/delivery.md says when to choose which.
    #[serde(default)]
    pub exactly_once: ExactlyOnce,
    /// Extra librdkafka properties passed to every client, e.g.
    /// `security.protocol: SASL_SSL`, `sasl.mechanism: SCRAM-SHA-512`,
    /// `sasl.username`, `sasl.password: ${KAFKA_PASSWORD}`. Values are never logged.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// The values of `kafka.exactly_once`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExactlyOnce {
    /// Stable change identity and replay-safe stages; no broker transactions.
    #[default]
    Identity,
    /// Kafka transactions in `rules` and `dedup`, on top of the identity.
    Transactions,
}

fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    -1
}

impl KafkaConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
            topic_properties: BTreeMap::new(),
            exactly_once: ExactlyOnce::default(),
            properties: BTreeMap::new(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A producer that never reorders or duplicates within a partition on
    /// retry (idempotence), and waits for all in-sync replicas.
    pub fn producer(&self) -> Result<FutureProducer> {
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "60000");
        c.create()
            .context(ErrorKind::Config, || "cannot create Kafka producer".into())
    }

    /// A transactional producer with `transactional_id`, ready for its
    /// first transaction: `init_transactions` has fenced every earlier
    /// producer with the same id (aborting what it left open), so a stale
    /// instance can no longer commit. Blocks while the broker answers.
    pub fn transactional_producer(&self, transactional_id: &str) -> Result<FutureProducer> {
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "60000")
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000");
        let producer: FutureProducer = c.create().context(ErrorKind::Config, || {
            "cannot create a transactional Kafka producer".into()
        })?;
        producer
            .init_transactions(Duration::from_secs(60))
            .context(ErrorKind::Transient, || {
                format!("cannot initialize transactions for `{transactional_id}`")
            })?;
        Ok(producer)
    }

    /// A consumer in `group` that never commits on its own: every syncline
    /// stage decides itself when an offset is safe to store.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            // A sink may start before its source created the topic: notice
            // the topic within seconds, not librdkafka's default 5 minutes.
            .set("topic.metadata.refresh.interval.ms", "3000");
        c
    }

    /// A member of consumer `group` (configured as [`Self::consumer_config`])
    /// subscribed to `topics`, with `context` receiving its callbacks
    /// (statistics too, every `stats_interval_ms` when given).
    pub fn subscribed<C, X>(
        &self,
        group: &str,
        topics: &[String],
        context: X,
        stats_interval_ms: Option<u32>,
    ) -> Result<C>
    where
        X: rdkafka::consumer::ConsumerContext,
        C: rdkafka::config::FromClientConfigAndContext<X> + Consumer<X>,
    {
        let mut config = self.consumer_config(group);
        if let Some(ms) = stats_interval_ms {
            config.set("statistics.interval.ms", ms.to_string());
        }
        let consumer: C = config
            .create_with_context(context)
            .context(ErrorKind::Config, || {
                "cannot create the Kafka consumer".into()
            })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).context(ErrorKind::Config, || {
            format!("cannot subscribe to {names:?}")
        })?;
        Ok(consumer)
    }

    /// A consumer outside any group, for reading a whole topic (state topics).
    pub fn reader_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", "syncline-reader-unused")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true");
        c
    }

    /// Create `topic` if it does not exist. `compacted` topics hold state
    /// (cursors, schemas) where only the latest value per key matters.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32, compacted: bool) -> Result<()> {
        // Asking for a missing topic's metadata must not create it (with the
        // broker's default partition count) before CreateTopics can.
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .set("allow.auto.create.topics", "false")
            .create()
            .context(ErrorKind::Config, || {
                "cannot create Kafka admin client".into()
            })?;
        // A topic that exists needs no CreateTopics request (one request
        // less to a controller that may be moving, and no error to read).
        let (admin, exists) = {
            let name = topic.to_string();
            tokio::task::spawn_blocking(move || {
                let exists = topic_partitions(admin.inner(), &name).is_ok_and(|p| !p.is_empty());
                (admin, exists)
            })
            .await
            .map_err(|e| Error::internal("metadata task failed").with_source(e))?
        };
        if exists {
            return Ok(());
        }
        let mut new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        for (k, v) in &self.topic_properties {
            if !(compacted && k == "cleanup.policy") {
                new = new.set(k, v);
            }
        }
        if compacted {
            new = new.set("cleanup.policy", "compact");
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new], &opts)
            .await
            .context(ErrorKind::Transient, || {
                format!("cannot create topic `{topic}`")
            })?;
        let mut created = false;
        for r in results {
            match r {
                Ok(_) => created = true,
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(Error::transient(format!(
                        "cannot create topic `{t}`: {code}"
                    )));
                }
            }
        }
        wait_until_visible(admin, topic, created).await
    }
}

/// CreateTopics returns once the controller has the topic; the brokers learn
/// of it a moment later (Apache Kafka propagates metadata asynchronously).
/// Wait until the metadata shows the topic's partitions (each with a leader,
/// when this client just created it), so that the caller's next step
/// (reading the partition count, subscribing, producing) sees it whole.
async fn wait_until_visible(
    admin: AdminClient<DefaultClientContext>,
    topic: &str,
    created: bool,
) -> Result<()> {
    const LIMIT: Duration = Duration::from_secs(30);
    let name = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Ok(md) = admin.inner().fetch_metadata(Some(&name), Duration::from_secs(5)) {
                let ready = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .is_some_and(|t| {
                        !t.partitions().is_empty()
                            && (!created || t.partitions().iter().all(|p| p.leader() >= 0))
                    });
                if ready {
                    return Ok(());
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::transient(format!(
                    "topic `{name}` does not show all its partitions in the broker's metadata after {}s",
                    LIMIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .map_err(|e| Error::internal("metadata task failed").with_source(e))?
}

/// The partitions of `topic`, fresh from the broker.
///
/// A change that concerns every key of a table (a TRUNCATE) has no Kafka
/// key and is sent once to each of these partitions: every consumer of a
/// partition then reads it after every earlier change of the keys in that
/// partition, which is the order a sink needs to apply it (see
/// sinks/src/postgres/truncate.rs). Asked again for each such change, so
/// partitions added meanwhile are included.
pub async fn partitions_of(producer: &FutureProducer, topic: &str) -> Result<Vec<i32>> {
    let producer = producer.clone();
    let name = topic.to_string();
    let parts = tokio::task::spawn_blocking(move || topic_partitions(producer.client(), &name))
        .await
        .map_err(|e| Error::internal("metadata task failed").with_source(e))??;
    if parts.is_empty() {
        return Err(Error::transient(format!(
            "topic `{topic}` has no partitions yet"
        )));
    }
    Ok(parts)
}

/// The partitions of `topic` as the broker reports them now (blocking);
/// empty when the topic does not exist.
pub fn topic_partitions<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<Vec<i32>> {
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .context(ErrorKind::Transient, || {
            format!("cannot read metadata of `{topic}`")
        })?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Read every record of `topic` from the beginning up to its end as of now,
/// calling `f(partition, offset, key, value)` in offset order per partition.
/// Used to restore small state (cursors, schemas) from compacted topics.
pub fn read_topic_to_end(
    config: &KafkaConfig,
    topic: &str,
    mut f: impl FnMut(i32, i64, Option<&[u8]>, Option<&[u8]>),
) -> Result<()> {
    use rdkafka::message::Message;
    use rdkafka::TopicPartitionList;
    let consumer: BaseConsumer<EndOfTopicContext> = config
        .reader_config()
        .create_with_context(EndOfTopicContext)
        .context(ErrorKind::Config, || "cannot create Kafka consumer".into())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .context(ErrorKind::Transient, || {
            format!("cannot read metadata of `{topic}`")
        })?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(());
    };
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
            .context(ErrorKind::Transient, || {
                format!("cannot read offsets of `{topic}`")
            })?;
        if hi > lo {
            ends.insert(p.id(), hi);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))
                .map_err(|e| Error::internal("bad partition list").with_source(e))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&tpl)
        .context(ErrorKind::Transient, || format!("cannot assign `{topic}`"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(Error::transient(format!(
                "timed out reading `{topic}` to its end"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => {
                return Err(Error::transient(format!("cannot read `{topic}`")).with_source(e))
            }
            Some(Ok(m)) => {
                f(m.partition(), m.offset(), m.key(), m.payload());
                if ends
                    .get(&m.partition())
                    .is_some_and(|&hi| m.offset() + 1 >= hi)
                {
                    ends.remove(&m.partition());
                }
            }
        }
    }
    Ok(())
}

/// The reader's context: reaching the end of a partition is what
/// [`read_topic_to_end`] waits for, not an error worth logging (librdkafka
/// also reports it as a global error, which the default context logs at ERROR).
pub struct EndOfTopicContext;

impl rdkafka::ClientContext for EndOfTopicContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            && !reason.contains("PartitionEOF")
        {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndOfTopicContext {}

/// The headers a dead letter adds to its record.
pub const DEAD_LETTER_HEADERS: [&str; 4] = [
    "syncline.reason",
    "syncline.topic",
    "syncline.partition",
    "syncline.offset",
];

/// A record that a stage gives up on (a poison record), and why.
pub struct DeadLetter<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's own headers, kept so that a replay sends it as it was
    /// (the unchanged-columns header above all).
    pub headers: &'a [(String, Option<Vec<u8>>)],
    pub reason: &'a str,
}

impl<'a> DeadLetter<'a> {
    /// The record for `dead_letter_topic`: key, value and headers
    /// unchanged, plus headers `syncline.reason`, `syncline.topic`,
    /// `syncline.partition` and `syncline.offset` (a record's own headers of
    /// those names are dropped, so a dead letter of a dead letter names its
    /// latest origin). One scheme for every stage, so that one tool can
    /// inspect or replay any stage's dead letters (src/dead_letters.rs).
    pub fn record(
        &self,
        dead_letter_topic: &'a str,
    ) -> rdkafka::producer::FutureRecord<'a, [u8], [u8]> {
        use rdkafka::message::{Header, OwnedHeaders};
        let (partition, offset) = (self.partition.to_string(), self.offset.to_string());
        let mut own = OwnedHeaders::new();
        for (k, v) in self.headers {
            if !DEAD_LETTER_HEADERS.contains(&k.as_str()) {
                own = own.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
        }
        let headers = own
            .insert(Header {
                key: "syncline.reason",
                value: Some(self.reason),
            })
            .insert(Header {
                key: "syncline.topic",
                value: Some(self.topic),
            })
            .insert(Header {
                key: "syncline.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "syncline.offset",
                value: Some(offset.as_str()),
            });
        let mut record = rdkafka::producer::FutureRecord::to(dead_letter_topic).headers(headers);
        if let Some(k) = self.key {
            record = record.key(k);
        }
        if let Some(v) = self.value {
            record = record.payload(v);
        }
        record
    }
}

/// The headers a change record carries besides its key and value: the
/// [`crate::change::UNCHANGED_HEADER`] when the change has unchanged columns
/// (the wire form of [`crate::ChangeEvent::unchanged`]). Every stage that
/// publishes a change sets them, so the fact reaches the sink.
pub fn unchanged_header(unchanged: &[String]) -> Option<rdkafka::message::OwnedHeaders> {
    use rdkafka::message::{Header, OwnedHeaders};
    (!unchanged.is_empty()).then(|| {
        OwnedHeaders::new().insert(Header {
            key: crate::change::UNCHANGED_HEADER,
            value: Some(unchanged.join(",").as_bytes()),
        })
    })
}
