//! The consumer's rebalance callback: partitions start where the stage
//! says, under the eager and the cooperative protocol alike.
//!
//! librdkafka calls [`StageContext::rebalance`] from inside `poll`, on the
//! runtime's consumer thread, and the callback takes the stage's lock,
//! which the writer thread holds for the whole of each batch: so a
//! rebalance never overlaps a batch. On assignment the
//! stage's stored offsets are read ([`super::Stage::assigned`], retried
//! while its system is away) and the partitions are assigned at them; a
//! stage whose offsets live in Kafka resumes at the group's committed
//! offsets. Under `cooperative-sticky` only the partitions that move are
//! assigned (`incremental_assign`) or revoked (`incremental_unassign`); the
//! rest keep flowing. Every partition revoked or (re)assigned is reported to
//! the poller, which drops the records it had polled for them, and to the
//! writer, which drops them from a batch handed over before the rebalance:
//! those are read again from the stored offsets, by this member or another.

use super::{OffsetsHome, Stage};
use crate::backoff::Backoff;
use crate::events::Events;
use crate::record::TopicPartition;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use syncline_core::runtime::Shutdown;
use syncline_core::{Error, Result};
use tokio::runtime::Handle;

/// What the rebalance callback leaves for the poller and the writer.
#[derive(Default)]
pub(crate) struct News {
    /// Partitions revoked or (re)assigned since the poller last looked.
    pub reset: HashSet<TopicPartition>,
    /// The stored offsets could not be read: the loop must stop.
    pub error: Option<Error>,
    /// Counts the rebalances (each revocation or assignment).
    pub generation: u64,
    /// The generation of each partition's last reset: a batch handed to
    /// the writer at an earlier generation drops that partition's records.
    pub last_reset: HashMap<TopicPartition, u64>,
}

pub(crate) struct StageContext<S> {
    /// The stage; locked by the loop around each batch and by the callback
    /// (on the same thread, never at once).
    pub stage: Mutex<S>,
    pub home: OffsetsHome,
    pub transactional: bool,
    pub handle: Handle,
    pub shutdown: Shutdown,
    pub events: Events,
    pub group: String,
    pub news: Mutex<News>,
}

impl<S: Stage> ClientContext for StageContext<S> {
    /// The end of each assigned partition, for the lag in the component's
    /// status: the last stable offset (under `read_committed`) or the high
    /// watermark.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let status = self.events.status();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if partition >= 0 && end >= 0 {
                    status.partition_end(topic, partition, end);
                }
            }
        }
    }
}

impl<S: Stage> ConsumerContext for StageContext<S> {
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
        {
            let mut news = lock(&self.news);
            news.generation += 1;
            let generation = news.generation;
            for p in &parts {
                news.reset.insert(p.clone());
                news.last_reset.insert(p.clone(), generation);
            }
        }
        let component = self.events.component();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                match self.resume_offsets(consumer, tpl, &parts) {
                    Ok(()) => {
                        tracing::info!(component, group = %self.group, cooperative,
                            partitions = ?summary(tpl), "partitions assigned");
                        let status = self.events.status();
                        status.assigned(&parts);
                        let starts: Vec<(TopicPartition, i64)> = tpl
                            .elements()
                            .iter()
                            .filter_map(|e| match e.offset() {
                                Offset::Offset(o) => {
                                    Some(((e.topic().to_string(), e.partition()), o))
                                }
                                _ => None,
                            })
                            .collect();
                        status.positions(starts.iter().map(|(tp, o)| (tp, o)));
                        if cooperative {
                            consumer.incremental_assign(tpl)
                        } else {
                            consumer.assign(tpl)
                        }
                    }
                    Err(e) => {
                        // Never consume without the stage's offsets: take
                        // nothing and let the loop stop with the error.
                        lock(&self.news).error = Some(e);
                        if cooperative {
                            consumer.incremental_assign(&TopicPartitionList::new())
                        } else {
                            consumer.unassign()
                        }
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(component, group = %self.group, cooperative, partitions = parts.len(), "partitions revoked");
                self.events.status().revoked(&parts);
                self.handle.block_on(lock(&self.stage).revoked(&parts));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(component, group = %self.group, error = ?other, "rebalance error; dropping the assignment");
                self.events.status().revoked(&parts);
                self.handle.block_on(lock(&self.stage).revoked(&parts));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(component, group = %self.group, error = %e, "cannot apply the partition assignment");
        }
    }
}

/// Lock `m` even if a panic poisoned it: the callback also runs while the
/// consumer closes during a panic's unwinding, where a second panic would
/// abort the process instead of reporting the first.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn summary(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]@{:?}", e.topic(), e.partition(), e.offset()))
        .collect()
}

impl<S: Stage> StageContext<S> {
    /// Set each newly assigned partition's start in `tpl`.
    fn resume_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        parts: &[TopicPartition],
    ) -> Result<()> {
        if self.transactional {
            // A read_committed consumer asks with `require_stable`: the
            // answer waits until a transaction still open on these
            // partitions (a stale instance's, or this one's before a crash)
            // has ended, so the stage restores what it committed.
            consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(120))
                .map_err(|e| {
                    syncline_core::error::kafka::kafka_error(
                        e,
                        "cannot read the committed offsets of the assigned partitions",
                    )
                })?;
        }
        let stored = self.assigned_retrying(parts)?;
        if self.home != OffsetsHome::Stage {
            // Kafka's committed offsets (left unset in `tpl`) are the start.
            return Ok(());
        }
        for (topic, partition) in parts {
            let offset = match stored.get(&(topic.clone(), *partition)) {
                Some(&o) if o >= 0 => Offset::Offset(o),
                // Nothing stored for this partition: read it all. Earlier
                // records are never skipped; only the stage knows what it has
                // applied, and applying again is harmless (positions).
                _ => Offset::Beginning,
            };
            let _ = tpl.set_partition_offset(topic, *partition, offset);
        }
        Ok(())
    }

    /// [`Stage::assigned`], retried with backoff while transient (until shutdown).
    fn assigned_retrying(
        &self,
        parts: &[TopicPartition],
    ) -> Result<std::collections::HashMap<TopicPartition, i64>> {
        let mut backoff = Backoff::default();
        let mut stage = lock(&self.stage);
        loop {
            match self.handle.block_on(stage.assigned(parts)) {
                Ok(o) => return Ok(o),
                Err(e) if e.is_transient() && !self.shutdown.is_cancelled() => {
                    let delay = backoff.next_delay();
                    self.events.retrying(
                        "cannot load the stored offsets of the assigned partitions",
                        &e,
                        backoff.attempts(),
                        delay,
                    );
                    std::thread::sleep(delay);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
