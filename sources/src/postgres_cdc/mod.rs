//! The `postgres_cdc` source: change-data-capture from Postgres through
//! logical replication (pgoutput over the streaming replication protocol).
//!
//! ```text
//! config.rs    the pipeline entry (tables, patterns, slot, publication, snapshot)
//! slot.rs      connections, tables, publication, slot health and creation
//! snapshot.rs  initial snapshot by primary-key chunks, consistent with the slot
//! stream.rs    replication stream -> change events; slot acknowledgements
//! decode.rs    Postgres text values -> Avro; columns -> table schema
//! (snapshot progress: crate::snapshot_progress, shared with mysql_cdc)
//! ```
//!
//! How it runs ([`PostgresCdcSource::run`]):
//! 1. read the slot's status (a lost slot stops the pipeline, see [`slot`]);
//! 2. when the slot is missing: forget stored snapshot progress, create the
//!    slot with an exported snapshot;
//! 3. snapshot every table whose snapshot is not finished (see [`snapshot`]);
//! 4. stream from the slot's confirmed position (see [`stream`]); when a
//!    re-snapshot is asked for (`syncline snapshot`), the stream stops after
//!    the request, and the source goes back to 3.
//!
//! # The guarantee (exactly-once effects)
//! Every committed change of a captured table is published at least once,
//! with an identity (source name, position) that is the same on every
//! replay, and positions order the changes of a key:
//! - a streamed change has position `(commit LSN, 1 + index in its
//!   transaction)`; its commit LSN and index come from the WAL, so a replay
//!   after a restart has the same position;
//! - a snapshot row has position `(consistent point of the snapshot it was
//!   read in, 0)`, which sorts before every change streamed after that
//!   point and after every change it already contains;
//! - the slot's confirmed LSN only moves past a transaction once the broker
//!   has acknowledged every record of it and of all earlier ones
//!   ([`stream`]), so a restart (kill -9 included) replays from a point at or
//!   before the first unacknowledged record, never after it.
//!
//! syncline sinks apply a change only if its position is greater than the
//! one the row holds, so replays are dropped and the effect is exactly once.

pub mod config;
pub(crate) mod decode;
mod slot;
mod snapshot;
mod stream;
mod wire;

pub use config::{CdcTableConfig, PostgresCdcConfig, SnapshotMode};
pub use stream::{ResnapshotRequest, RESNAPSHOT_PREFIX};

use crate::snapshot_progress::ProgressStore;
use decode::TypeInfo;
use slot::Resolved;
use std::collections::HashMap;
use stream::StreamEnd;
use syncline_core::codec::Encoder;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{ChangeEvent, Error, Position, Result, SourceInfo, TableSchema};
use syncline_runtime::publish::{Pending, Publisher};

pub use syncline_core::change::UNCHANGED_HEADER;

/// One captured table at run time.
pub(crate) struct Table {
    pub resolved: Resolved,
    pub schema: TableSchema,
}

/// A built postgres_cdc source; [`PostgresCdcSource::run`] captures until shutdown.
pub struct PostgresCdcSource {
    name: String,
    pipeline: String,
    url: String,
    display: String,
    db_name: String,
    slot: String,
    publication: String,
    cfg: PostgresCdcConfig,
    tables: Vec<Table>,
    types: HashMap<(u32, i32), TypeInfo>,
    /// Encodes and produces every change (the runtime's publisher); its
    /// producer also writes the snapshot progress.
    publisher: Publisher,
    progress: ProgressStore,
    /// The live status: slot lag, snapshot progress.
    status: syncline_core::status::Status,
}

impl PostgresCdcSource {
    async fn build(cfg: &PostgresCdcConfig, ctx: ComponentContext) -> Result<PostgresCdcSource> {
        let url = cfg.connection.trim().to_string();
        let display = crate::sql_poll::connection::redact(&url);
        let client = slot::connect(&url, &ctx.component).await?;
        let row = client
            .query_one(
                "SELECT current_database()::text, current_setting('wal_level')",
                &[],
            )
            .await
            .map_err(|e| slot::pg_error(e, format!("cannot query {display}")))?;
        let (db_name, wal_level): (String, String) = (row.get(0), row.get(1));
        if wal_level != "logical" {
            return Err(Error::config(format!(
                "{display} has wal_level = {wal_level}; logical replication needs wal_level = logical \
                 (ALTER SYSTEM SET wal_level = logical, then restart Postgres)"
            )));
        }
        let slot_name = cfg
            .slot
            .clone()
            .unwrap_or_else(|| config::default_slot_name(&ctx.pipeline, &ctx.component));
        let publication = cfg.publication.clone().unwrap_or_else(|| slot_name.clone());
        let resolved = slot::resolve_tables(&client, &cfg.tables).await?;
        slot::ensure_publication(&client, &publication, &resolved).await?;
        let mut types = HashMap::new();
        let encoder = Encoder::new(&ctx.registry)?;
        let mut tables = Vec::new();
        for r in resolved {
            slot::resolve_types(&client, &r.columns, &mut types).await?;
            let schema =
                decode::table_schema(&ctx.component, &r.name(), &r.columns, &r.key, &types)?;
            ctx.kafka
                .ensure_topic(&r.topic, ctx.kafka.partitions, false)
                .await?;
            encoder.prepare(&r.topic, &schema).await?;
            tracing::info!(source = %ctx.component, table = %r.name(), topic = %r.topic, key = ?r.key,
                replica_identity = %r.replica_identity, "postgres_cdc: table ready");
            tables.push(Table {
                resolved: r,
                schema,
            });
        }
        let publisher = Publisher::for_source(
            &ctx,
            "postgres_cdc",
            encoder,
            ctx.kafka.producer()?,
            cfg.dead_letter_topic.as_deref(),
        )
        .await?;
        Ok(PostgresCdcSource {
            publisher,
            progress: ProgressStore::new(ctx.kafka.clone(), &ctx.pipeline, &ctx.component),
            status: ctx.status.clone(),
            name: ctx.component,
            pipeline: ctx.pipeline,
            url,
            display,
            db_name,
            slot: slot_name,
            publication,
            cfg: cfg.clone(),
            tables,
            types,
        })
    }

    /// Snapshot what is not snapshotted yet, then stream until `shutdown`.
    /// Errors: transient ones (database, broker away) are returned for the
    /// supervisor to restart the source, which resumes from the slot and
    /// the stored snapshot progress; a lost slot or a schema the registry
    /// refuses stop the pipeline.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        let client = slot::connect(&self.url, &self.name).await?;
        let status = slot::slot_status(&client, &self.slot, &self.db_name).await?;
        let mut exported = None;
        match &status {
            None => {
                let stored = self.progress.restore().await?;
                self.progress
                    .reset(self.publisher.producer(), stored.keys())
                    .await?;
                let e = slot::create_slot(&self.url, &self.slot, false).await?;
                tracing::info!(source = %self.name, slot = %self.slot, consistent_point = %slot::format_lsn(e.lsn),
                    "postgres_cdc: created the replication slot");
                exported = Some(e);
            }
            Some(s) => {
                if let Some(pid) = s.active_pid {
                    return Err(Error::transient(format!(
                        "replication slot `{}` is in use by process {pid} (a previous run that has not ended yet?)",
                        self.slot
                    )));
                }
                tracing::info!(source = %self.name, slot = %self.slot, confirmed_flush = ?s.confirmed_flush,
                    "postgres_cdc: resuming from the replication slot");
            }
        }
        if self.cfg.snapshot == SnapshotMode::Never {
            if let Some(e) = &exported {
                tracing::info!(source = %self.name, slot = %e.slot, "postgres_cdc: snapshot: never; streaming only");
            }
        }
        drop(client);
        loop {
            let shutdown_requested = self.snapshot(exported.take(), &shutdown).await?;
            if shutdown_requested {
                return Ok(());
            }
            match self.stream(&shutdown).await? {
                StreamEnd::Shutdown => return Ok(()),
                StreamEnd::Resnapshot => {
                    slot::wait_until_released(&self.url, &self.slot, &self.db_name).await?
                }
            }
        }
    }

    fn source_info(&self, table: &str, position: Position, text: String, ts_us: i64) -> SourceInfo {
        SourceInfo {
            connector: "postgres_cdc".into(),
            name: self.name.clone(),
            db: self.db_name.clone(),
            table: table.to_string(),
            position,
            position_text: text,
            ts_us,
        }
    }

    /// Encode `event` and hand it to the producer, in call order (the
    /// producer keeps that order per partition). Returns the delivery future.
    async fn enqueue(&self, t: usize, event: &ChangeEvent) -> Result<Pending> {
        let table = &self.tables[t];
        self.publisher
            .publish(&table.resolved.topic, &table.schema, event)
            .await
    }

    /// Hand a TRUNCATE of table `t` to the producer, once per partition of its topic.
    async fn enqueue_truncate(&self, t: usize, event: &ChangeEvent) -> Result<Vec<Pending>> {
        let table = &self.tables[t];
        self.publisher
            .publish_truncate(&table.resolved.topic, &table.schema, event)
            .await
    }

    fn metric_labels(&self) -> [(&'static str, String); 2] {
        [
            ("pipeline", self.pipeline.clone()),
            ("source", self.name.clone()),
        ]
    }
}

/// Ask the running (or next) `postgres_cdc` source `source` of `pipeline`
/// for a re-snapshot of the captured tables named by `tables` (names or
/// patterns; empty: every captured table). Writes the request into the WAL
/// as a transactional logical message (see [`stream`]); returns the names
/// of the tables and the request's LSN.
pub async fn request_resnapshot(
    cfg: &PostgresCdcConfig,
    pipeline: &str,
    source: &str,
    tables: &[String],
) -> Result<(Vec<String>, String)> {
    let url = cfg.connection.trim();
    let client = slot::connect(url, source).await?;
    let captured = slot::resolve_tables(&client, &cfg.tables).await?;
    let mut names = Vec::new();
    for pattern in tables {
        let matched: Vec<String> = captured
            .iter()
            .filter(|r| slot::table_matches(pattern, r))
            .map(Resolved::name)
            .collect();
        if matched.is_empty() {
            let all: Vec<String> = captured.iter().map(Resolved::name).collect();
            return Err(Error::config(format!(
                "`{pattern}` is not a table captured by source `{source}`; it captures: {}",
                all.join(", ")
            )));
        }
        names.extend(matched);
    }
    if tables.is_empty() {
        names = captured.iter().map(Resolved::name).collect();
    }
    names.sort();
    names.dedup();
    let request = ResnapshotRequest {
        slot: cfg
            .slot
            .clone()
            .unwrap_or_else(|| config::default_slot_name(pipeline, source)),
        tables: names.clone(),
    };
    let content = serde_json::to_string(&request)
        .map_err(|e| Error::internal("cannot encode the request").with_source(e))?;
    let lsn: String = client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&RESNAPSHOT_PREFIX, &content],
        )
        .await
        .map_err(|e| slot::pg_error(e, "cannot write the re-snapshot request"))?
        .get(0);
    Ok((names, lsn))
}

/// Wait for deliveries, in order. A refusal keeps its kind (a record larger
/// than the broker accepts is `Data`: the source stops and says so).
async fn await_deliveries(topic: &str, futures: Vec<Pending>) -> Result<()> {
    syncline_runtime::publish::all(futures).await.map_err(|e| {
        syncline_core::Error::new(e.kind(), format!("publishing to `{topic}` failed"))
            .with_source(e)
    })?;
    Ok(())
}
