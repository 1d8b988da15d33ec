//! Small source state (cursors, snapshot progress) as JSON values in the
//! compacted topic [`STATE_TOPIC`], one Kafka key per `<prefix><name>`; the
//! latest value per key wins, and a tombstone removes an entry.

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;
use syncline_core::error::{Context, ErrorKind};
use syncline_core::kafka::{read_topic_to_end, KafkaConfig};
use syncline_core::{Error, Result};

/// The compacted topic every source keeps its state in.
pub const STATE_TOPIC: &str = "_syncline_cursors";

/// The entries of type `T` under one key prefix; `what` names them in errors
/// (e.g. "cursor").
#[derive(Clone)]
pub struct JsonState<T> {
    kafka: KafkaConfig,
    prefix: String,
    what: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> JsonState<T> {
    pub fn new(kafka: KafkaConfig, prefix: String, what: &'static str) -> Self {
        Self {
            kafka,
            prefix,
            what,
            _t: PhantomData,
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The latest value of every entry under the prefix, by name.
    pub async fn restore(&self) -> Result<HashMap<String, T>> {
        self.kafka.ensure_topic(STATE_TOPIC, 1, true).await?;
        let kafka = self.kafka.clone();
        let prefix = self.prefix.clone();
        let raw = tokio::task::spawn_blocking(move || {
            let mut latest: HashMap<String, Option<Vec<u8>>> = HashMap::new();
            read_topic_to_end(&kafka, STATE_TOPIC, |_, _, k, v| {
                if let Some(name) = k
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| k.strip_prefix(&prefix))
                {
                    latest.insert(name.to_string(), v.map(<[u8]>::to_vec));
                }
            })
            .map(|()| latest)
        })
        .await
        .map_err(|e| {
            Error::internal(format!("{} restore task failed", self.what)).with_source(e)
        })??;
        let mut out = HashMap::new();
        for (name, value) in raw {
            let Some(value) = value else { continue };
            let v: T = serde_json::from_slice(&value).context(ErrorKind::Data, || {
                format!(
                    "the {} of `{name}` in `{STATE_TOPIC}` is not valid JSON of its kind",
                    self.what
                )
            })?;
            out.insert(name, v);
        }
        Ok(out)
    }

    /// Store `value` for `name` (`None`: remove it) and wait for the broker's
    /// acknowledgement.
    pub async fn store(
        &self,
        producer: &FutureProducer,
        name: &str,
        value: Option<&T>,
    ) -> Result<()> {
        let key = self.key(name);
        let bytes = value.map(serde_json::to_vec).transpose().map_err(|e| {
            Error::internal(format!("cannot serialize a {}", self.what)).with_source(e)
        })?;
        let mut record = FutureRecord::<String, Vec<u8>>::to(STATE_TOPIC).key(&key);
        if let Some(b) = &bytes {
            record = record.payload(b);
        }
        producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| {
                Error::transient(format!("cannot store the {} of `{name}`", self.what))
                    .with_source(e)
            })?;
        Ok(())
    }
}
