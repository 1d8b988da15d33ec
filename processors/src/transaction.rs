//! Kafka transactions around each batch of a consume-transform-produce
//! stage (`kafka.exactly_once: transactions`), for `rules` and `dedup`.

use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;
use syncline_core::runtime::ComponentContext;
use syncline_core::{Error, Result};

/// Kafka transactions around each batch of a consume-transform-produce
/// stage (`kafka.exactly_once: transactions`).
///
/// # Guarantee
/// [`Transactional::commit`] makes the batch's records (outputs,
/// changelog records, and a stage's own dead letters: everything produced
/// with this producer since
/// [`Transactional::begin`]) and its consumer group's input offsets one
/// atomic step: a `read_committed` consumer sees all of them or none, and
/// the group resumes after them or before them. Stale instances are fenced
/// twice: creating the producer (`init_transactions` with the instance's
/// transactional id) aborts what an earlier run of the same instance left
/// open; and the offsets carry the consumer's group generation, so an
/// instance that lost its partitions to another while it still ran has its
/// commit refused instead of adding outputs the new owner produces too.
/// Any failure aborts the transaction and is returned as a transient error:
/// the component restarts with a new producer and reads the batch again
/// from the committed offsets.
pub struct Transactional {
    producer: FutureProducer,
    id: String,
    /// A transaction is open (begun, neither committed nor aborted).
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a transaction's commit or offsets may take before it is aborted.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

impl Transactional {
    /// A producer with the transactional id of this instance of `ctx`'s
    /// component (`suffix` tells apart several stages of one component).
    pub async fn new(ctx: &ComponentContext, suffix: &str) -> Result<Self> {
        let id = format!("{}{suffix}.{}", ctx.qualified_name(), instance_id(ctx)?);
        let (kafka, tid) = (ctx.kafka.clone(), id.clone());
        let producer = tokio::task::spawn_blocking(move || kafka.transactional_producer(&tid))
            .await
            .map_err(|e| Error::internal("transaction set-up task failed").with_source(e))??;
        tracing::info!(processor = %ctx.component, transactional_id = %id, "Kafka transactions on");
        Ok(Self {
            producer,
            id,
            open: Default::default(),
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Open the batch's transaction: what is produced from now on belongs to it.
    pub fn begin(&self) -> Result<()> {
        self.producer.begin_transaction().map_err(|e| {
            Error::transient(format!("cannot begin a transaction of `{}`", self.id))
                .with_source(e)
                .restarting_component()
        })?;
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Add the input offsets `next` (for `group`) to the transaction and
    /// commit it; on any failure abort it (see the type's guarantee).
    /// Blocks while the broker answers.
    pub fn commit_blocking(
        &self,
        next: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<()> {
        let result = self
            .producer
            .send_offsets_to_transaction(next, group, TXN_TIMEOUT)
            .and_then(|()| self.producer.commit_transaction(TXN_TIMEOUT));
        match result {
            Ok(()) => {
                self.open.store(false, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                self.abort_blocking();
                // The producer may be fenced or stuck mid-commit, and the
                // group generation stale: build the component again.
                Err(Error::transient(format!(
                    "the transaction of `{}` was aborted; its batch is read again",
                    self.id
                ))
                .with_source(e)
                .restarting_component())
            }
        }
    }

    /// Abort the open transaction, if one is (shutdown or a failure came in
    /// the middle of a batch).
    pub fn abort_blocking(&self) {
        if !self.open.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
            tracing::warn!(transactional_id = %self.id, error = %e, "cannot abort the open transaction; the broker aborts it at its timeout");
        }
    }
}

/// Run `work` (which produces a batch) inside the batch's Kafka
/// transaction when there is one: begun before, committed with the input
/// offsets after (see [`Transactional`]'s guarantee), aborted on any failure.
pub async fn in_transaction<T>(
    txn: Option<&Transactional>,
    commit: &syncline_runtime::Commit<'_>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let Some(txn) = txn else {
        return work.await;
    };
    let group = commit.group_metadata()?;
    txn.begin()?;
    match work.await {
        Ok(v) => {
            txn.commit_blocking(&syncline_runtime::record::offset_list(commit.next()), group)?;
            Ok(v)
        }
        Err(e) => {
            txn.abort_blocking();
            Err(e)
        }
    }
}

/// This instance's id: kept in `<state_dir>/<pipeline>/<component>.instance`
/// (created with a random id on first start), so a restart of the same
/// instance reuses its transactional id and fences what it left behind,
/// while two instances (two state dirs) never fence each other.
fn instance_id(ctx: &ComponentContext) -> Result<String> {
    use syncline_core::error::{Context, ErrorKind};
    let dir = ctx.state_dir.join(&ctx.pipeline);
    let file = dir.join(format!("{}.instance", ctx.component));
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    std::fs::create_dir_all(&dir).context(ErrorKind::Config, || {
        format!("cannot create the state directory {}", dir.display())
    })?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = file.with_extension("instance.tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .context(ErrorKind::Config, || {
            format!("cannot write {}", file.display())
        })?;
    Ok(id)
}
