//! The Kafka side: a consumer-group member whose partitions always start at
//! the offsets stored in the target database.
//!
//! The sink's loop runs on its own thread (not a runtime worker) with a
//! `BaseConsumer`. librdkafka calls [`SinkContext::rebalance`] from inside
//! `poll` on that thread, so a rebalance never overlaps a batch write: every
//! batch is committed to the database before the next poll. On Assign the
//! context reads the stored offsets (blocking on the runtime, on a
//! connection of its own) and assigns the partitions at those offsets. On
//! Assign and Revoke it records which partitions were reset, so the loop can
//! drop records it had polled for them but not yet written: those will be
//! read again from the stored offsets, by this member or another.

use super::offsets::{self, resume_plan, ResumeFrom, TopicPartition};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use syncline_core::runtime::Shutdown;
use syncline_core::{Error, Result};
use tokio::runtime::Handle;

/// What the rebalance callback leaves for the loop.
#[derive(Default)]
pub struct RebalanceNews {
    /// Partitions revoked or (re)assigned since the loop last looked.
    pub reset: HashSet<TopicPartition>,
    /// The stored offsets could not be read: the loop must stop.
    pub error: Option<Error>,
}

pub struct SinkContext {
    pub handle: Handle,
    pub pg: tokio_postgres::Config,
    pub schema: String,
    pub group: String,
    pub topics: Vec<String>,
    pub shutdown: Shutdown,
    /// A connection only for reading offsets; reconnected after an error.
    pub client: Mutex<Option<tokio_postgres::Client>>,
    pub news: Mutex<RebalanceNews>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let parts: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        self.news
            .lock()
            .expect("rebalance news poisoned")
            .reset
            .extend(parts.iter().cloned());
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => match self.stored_offsets() {
                Ok(stored) => {
                    for ((topic, partition), from) in resume_plan(&parts, &stored) {
                        let offset = match from {
                            ResumeFrom::Stored(o) => Offset::Offset(o),
                            ResumeFrom::Beginning => Offset::Beginning,
                        };
                        let _ = tpl.set_partition_offset(&topic, partition, offset);
                    }
                    tracing::info!(group = %self.group, partitions = ?plan_summary(tpl), "assigned; resuming from the database's offsets");
                    if cooperative {
                        consumer.incremental_assign(tpl)
                    } else {
                        consumer.assign(tpl)
                    }
                }
                Err(e) => {
                    // Never consume without the database's offsets: take
                    // nothing and let the loop stop with the error.
                    self.news.lock().expect("rebalance news poisoned").error = Some(e);
                    if cooperative {
                        Ok(())
                    } else {
                        consumer.unassign()
                    }
                }
            },
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(group = %self.group, partitions = parts.len(), "partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(group = %self.group, error = ?other, "rebalance error; dropping the assignment");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(group = %self.group, error = %e, "cannot apply the partition assignment");
        }
    }
}

fn plan_summary(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]@{:?}", e.topic(), e.partition(), e.offset()))
        .collect()
}

impl SinkContext {
    /// Read the stored offsets, retrying with backoff while the database is
    /// away (until shutdown).
    fn stored_offsets(&self) -> Result<std::collections::HashMap<TopicPartition, i64>> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.handle.block_on(self.try_stored_offsets()) {
                Ok(o) => return Ok(o),
                Err(e) if e.is_transient() && !self.shutdown.is_cancelled() => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read stored offsets; retrying");
                    *self.client.lock().expect("offsets client poisoned") = None;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_stored_offsets(&self) -> Result<std::collections::HashMap<TopicPartition, i64>> {
        let client = self.client.lock().expect("offsets client poisoned").take();
        let client = match client {
            Some(c) if !c.is_closed() => c,
            _ => super::connect(&self.pg).await?,
        };
        let result = offsets::read(&client, &self.schema, &self.group, &self.topics).await;
        *self.client.lock().expect("offsets client poisoned") = Some(client);
        result
    }
}
