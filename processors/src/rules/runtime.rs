//! The running `rules` processor: consume the input topics in a consumer
//! group, apply the compiled steps to each change, produce the outputs.
//!
//! The processor is a [`Stage`] of the connector runtime
//! (`syncline_runtime::consume`), which consumes, batches, decodes,
//! dead-letters, retries and commits; it publishes through the runtime's
//! [`Publisher`]. What is particular to `rules`: [`Stage::prepare`] compiles
//! the steps for each input shape and applies them to one change, and
//! [`Stage::write`] publishes a batch's outputs.
//!
//! # Guarantee and commit order
//! At least once, with stable identity. For each batch of consumed records:
//! 1. every output is handed to an idempotent producer, in input order, and
//!    every record that cannot be decoded, whose shape the steps do not fit,
//!    or on which a step fails, to the dead-letter topic;
//! 2. the processor waits until the broker has acknowledged every one of them;
//! 3. only then are the batch's input offsets committed to Kafka.
//!
//! A crash between 1 and 3 replays the batch from the last committed
//! offsets. Rules are a pure function of the change and every output keeps
//! the input's `source.name` and `source.position`, so a replayed output is
//! equal to the first one, identity included: syncline sinks drop it, and the
//! result at the target is exactly once. Other consumers of the output topic
//! can see such duplicates (see processors/README.md). Nothing is lost: an
//! offset is never committed before its outputs are safe on the broker.
//!
//! With `kafka.exactly_once: transactions`, steps 1-3 are also one Kafka
//! transaction ([`crate::transaction::Transactional`]): the batch's outputs and
//! input offsets commit together or not at all, so a `read_committed`
//! consumer of the outputs sees each change once, and an instance that lost
//! its partitions cannot commit. A failed transaction is aborted and the
//! processor is built again (new producer, fresh group generation), resuming
//! from the committed offsets. Dead letters go through the runtime's own
//! producer, outside the transaction: at least once.

use super::{CompiledRules, Outcome, StepConfig};
use crate::metrics::ProcessorMetrics;
use crate::output_error;
use crate::transaction::{in_transaction, Transactional};
use std::collections::HashMap;
use std::sync::Arc;
use syncline_core::codec::{Decoded, Encoder};
use syncline_core::kafka::ExactlyOnce;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::schema::avro_name;
use syncline_core::{ChangeEvent, Error, Op, Result, TableSchema};
use syncline_runtime::consume::{self, ConsumeSettings};
use syncline_runtime::publish::{Pending, Publisher};
use syncline_runtime::{BatchSettings, Commit, OffsetsHome, Record, Stage};

/// The typed settings the running processor gets (no raw user words).
#[derive(Debug, Clone)]
pub struct Settings {
    pub group_id: String,
    pub dead_letter_topic: String,
    pub from: Vec<String>,
    pub to: String,
    pub steps: Vec<StepConfig>,
    pub batch: BatchSettings,
}

/// A built `rules` processor, ready to run.
pub struct RulesProcessor {
    settings: Settings,
    ctx: ComponentContext,
}

impl RulesProcessor {
    pub(crate) fn new(settings: Settings, ctx: ComponentContext) -> Result<Self> {
        Ok(Self { settings, ctx })
    }

    /// Consume until `shutdown`, or until an error that retrying cannot fix.
    /// A batch not fully acknowledged at shutdown is not committed: it is
    /// read again on the next start.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let kafka = &self.ctx.kafka;
        for t in &outputs(s) {
            kafka.ensure_topic(t, kafka.partitions, false).await?;
        }
        let txn = match kafka.exactly_once {
            ExactlyOnce::Identity => None,
            ExactlyOnce::Transactions => Some(Transactional::new(&self.ctx, "").await?),
        };
        let producer = match &txn {
            Some(t) => t.producer().clone(),
            None => kafka.producer()?,
        };
        let stage = RulesStage {
            settings: s.clone(),
            namespace: format!("syncline.{}", avro_name(&self.ctx.component)),
            publisher: Publisher::new(Encoder::new(&self.ctx.registry)?, producer),
            txn,
            compiled: HashMap::new(),
            shutdown: shutdown.clone(),
            metrics: ProcessorMetrics::new(&self.ctx),
        };
        let consume = ConsumeSettings {
            kind: "rules",
            group_id: s.group_id.clone(),
            topics: s.from.clone(),
            batch: s.batch.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
        };
        tracing::info!(processor = %self.ctx.component, group = %s.group_id, from = ?s.from, to = %s.to, "rules processor started");
        let result = consume::run(&self.ctx, consume, stage, shutdown).await;
        match &result {
            Ok(()) => tracing::info!(processor = %self.ctx.component, "rules processor stopped"),
            Err(e) => {
                tracing::error!(processor = %self.ctx.component, error = %e, "rules processor failed")
            }
        }
        result
    }
}

/// The topics changes may go to: `to` and every route's topic, each once.
fn outputs(s: &Settings) -> Vec<String> {
    output_topics(&s.to, &s.steps)
}

/// `to` and the topic of every `route` in `steps`, each once.
pub(crate) fn output_topics(to: &str, steps: &[StepConfig]) -> Vec<String> {
    let mut out = vec![to.to_string()];
    for step in steps {
        if let StepConfig::Route(rules) = step {
            for r in rules {
                if !out.contains(&r.topic) {
                    out.push(r.topic.clone());
                }
            }
        }
    }
    out
}

/// One change the steps made, ready to publish.
pub(crate) struct Output {
    /// The output topic (`to`, or the one a `route` step chose).
    topic: String,
    rules: Arc<CompiledRules>,
    event: ChangeEvent,
    /// The input record's origin, for error messages.
    at: String,
}

struct RulesStage {
    settings: Settings,
    namespace: String,
    publisher: Publisher,
    /// Set with `kafka.exactly_once: transactions` (the publisher's producer is its producer).
    txn: Option<Transactional>,
    /// Compiled steps per input value schema id: a new id (the input's shape
    /// changed) compiles the steps again.
    compiled: HashMap<u32, Arc<CompiledRules>>,
    shutdown: Shutdown,
    metrics: ProcessorMetrics,
}

impl Stage for RulesStage {
    type Item = Output;

    fn offsets_home(&self) -> OffsetsHome {
        OffsetsHome::Kafka
    }

    fn transactional(&self) -> bool {
        self.txn.is_some()
    }

    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Output>> {
        let at = record.origin().to_string();
        let rules = match self.rules_for(&decoded, &record.topic) {
            Ok(rules) => rules,
            // Steps that name `key.*` cannot compile without the key
            // columns, which a keyless TRUNCATE does not carry.
            Err(e) if decoded.event.op == Op::Truncate => {
                return Err(Error::data(format!(
                    "a TRUNCATE came before any row of its shape, and {e}"
                )))
            }
            Err(e) => return Err(e),
        };
        match rules.apply(&decoded.event) {
            Outcome::Filtered => {
                self.metrics.filtered.increment(1);
                Ok(None)
            }
            Outcome::Failed { reason } => Err(Error::data(format!("the steps failed: {reason}"))),
            Outcome::Emit { event, .. }
                if event.op == Op::Truncate && self.settings.from.len() > 1 =>
            {
                Err(crate::merged_truncate())
            }
            Outcome::Emit { topic, event } => Ok(Some(Output {
                topic: topic.unwrap_or_else(|| self.settings.to.clone()),
                rules,
                event,
                at,
            })),
        }
    }

    async fn write(&mut self, items: &[Output], commit: &Commit<'_>) -> Result<usize> {
        // Outputs and input offsets commit together, or not at all.
        in_transaction(self.txn.as_ref(), commit, self.publish(items)).await
    }
}

impl RulesStage {
    /// Publish `items` and wait until the broker has every one. Every
    /// output is encoded before the first is produced: an output that cannot
    /// be encoded refuses the batch (`Data`) with nothing of it produced.
    async fn publish(&self, items: &[Output]) -> Result<usize> {
        let mut encoded = Vec::with_capacity(items.len());
        for o in items {
            if o.event.op == Op::Truncate {
                continue;
            }
            // Registers the output schemas once per shape: an incompatible
            // one stops the processor before anything of the shape is produced.
            encoded.push(
                self.publisher
                    .encode(&o.topic, o.rules.output_schema(), &o.event)
                    .await
                    .map_err(|e| output_error(e, &o.at, &o.topic))?,
            );
        }
        let mut encoded = encoded.iter();
        let mut pending: Vec<Pending> = Vec::with_capacity(items.len());
        for o in items {
            if o.event.op == Op::Truncate {
                // Every output may hold rows of the truncated table.
                for topic in outputs(&self.settings) {
                    pending.extend(
                        self.publisher
                            .publish_truncate(&topic, o.rules.output_schema(), &o.event)
                            .await
                            .map_err(|e| output_error(e, &o.at, &topic))?,
                    );
                }
                continue;
            }
            let e = encoded.next().expect("one encoded output per change");
            pending.push(self.publisher.send(e)?);
        }
        match self.publisher.acknowledged(&self.shutdown, pending).await? {
            Some(_) => Ok(items.len()),
            None => Err(Error::transient("shut down while publishing")),
        }
    }

    /// The steps compiled for this record's input shape (compiled on first sight).
    fn rules_for(&mut self, d: &Decoded, topic: &str) -> Result<Arc<CompiledRules>> {
        if let Some(r) = self.compiled.get(&d.value_schema_id) {
            return Ok(r.clone());
        }
        let input = TableSchema {
            namespace: self.namespace.clone(),
            name: avro_name(topic),
            columns: d.columns.as_ref().clone(),
            primary_key: d.key_columns.as_ref().clone(),
        };
        let rules = CompiledRules::compile(&self.settings.steps, &input).map_err(|issues| {
            let text: Vec<String> = issues
                .iter()
                .map(|i| {
                    format!(
                        "steps{}: {}",
                        if i.path.is_empty() {
                            String::new()
                        } else {
                            format!(".{}", i.path)
                        },
                        i.message
                    )
                })
                .collect();
            // This shape's records are set aside; others go on.
            Error::data(format!(
                "the steps do not fit the records of `{topic}` (value schema id {}): {}",
                d.value_schema_id,
                text.join("; ")
            ))
        })?;
        let rules = Arc::new(rules);
        // A TRUNCATE carries no key to learn the key columns from: its
        // compilation serves it alone (its value schema is the same).
        if d.event.op != Op::Truncate {
            self.compiled.insert(d.value_schema_id, rules.clone());
        }
        Ok(rules)
    }
}
