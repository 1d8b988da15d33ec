//! Streaming: the slot's changes as change events, and the slot's
//! acknowledgements.
//!
//! A reader task pulls pgoutput messages (protocol 1, whole transactions)
//! off the replication connection ([`super::wire`]), decodes them
//! (pg_walstream's decoder) into a bounded channel, and reports progress
//! to the server every second; this loop turns each change into records
//! and hands them to the producer in WAL order.
//!
//! # When the slot advances (the guarantee, implemented here)
//! At a transaction's commit, the delivery futures of all its records are
//! queued, in commit order, behind those of earlier transactions. Only when
//! all of them are acknowledged by the broker is the transaction's end LSN
//! reported as flushed (the reader's status updates), and Postgres moves the slot's
//! `confirmed_flush_lsn` only to a reported position. So the slot never
//! passes a record the broker does not have: after a crash the stream
//! resumes at or before the first unacknowledged transaction, and the
//! replayed records carry the same positions (commit LSN, index).
//!
//! # Idle tables, busy database
//! pgoutput sends nothing for transactions that touch no published table,
//! so the slot would hold WAL back for ever. Every `heartbeat_interval_ms`
//! the source writes a transactional logical message
//! (`pg_logical_emit_message(true, 'syncline_heartbeat', '')`): it streams
//! as an empty transaction whose end LSN is acknowledged like any other once
//! everything before it is, so the slot keeps up with the database.
//!
//! # Re-snapshot while running
//! `syncline snapshot` writes a transactional logical message
//! ([`RESNAPSHOT_PREFIX`], JSON `{"slot": .., "tables": [..]}`), so the
//! request sits in the WAL in commit order. When its transaction commits in
//! the stream, the source stops reading, waits until every record before
//! it is acknowledged, records each requested table as "snapshot pending"
//! (with the request's commit LSN, so a replayed request is not answered
//! twice), and only then reports the transaction as flushed. Streaming then
//! ends and [`PostgresCdcSource::run`] snapshots the pending tables in a new
//! exported snapshot (see [`super::snapshot`] for why that hand-over has no
//! gap), and resumes streaming where it stopped. A crash at any point
//! either replays the request or finds the pending entries. Streaming of
//! this source pauses during the re-snapshot (the slot holds the WAL
//! meanwhile), like Debezium's blocking snapshot.

use super::decode::{RawColumn, Row};
use super::slot::{self, format_lsn};
use super::wire::{Frame, Wire};
use super::{await_deliveries, PostgresCdcSource};
use crate::key_of;
use crate::sql_poll::plan::quote_ident;
use apache_avro::types::Value;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use pg_walstream::{
    CancellationToken, ChangeEvent as WalEvent, EventType, Lsn, PgOutputDecoder, RowData,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncline_core::runtime::Shutdown;
use syncline_core::{ChangeEvent, Error, Op, Position, Result};
use syncline_runtime::publish::Pending;

/// The prefix of the logical message that asks a running source for a re-snapshot.
pub const RESNAPSHOT_PREFIX: &str = "syncline_snapshot";

/// The content of a re-snapshot request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ResnapshotRequest {
    /// The slot of the source that should answer it.
    pub slot: String,
    /// `schema.table` names or patterns (`*`) of captured tables.
    pub tables: Vec<String>,
}

/// How streaming ended without an error.
pub(super) enum StreamEnd {
    Shutdown,
    /// Tables were marked for a re-snapshot; snapshot them, then stream again.
    Resnapshot,
}

/// The position of the `index`-th record (from 1) of the transaction committed at `commit_lsn`.
pub fn stream_position(commit_lsn: u64, index: u64) -> Position {
    Position::builder().u64(commit_lsn).u64(index).build()
}

/// The transaction being read.
struct Tx {
    xid: u32,
    commit_lsn: u64,
    ts_us: i64,
    records: u64,
    deliveries: Vec<Pending>,
    /// Tables whose re-snapshot this transaction asks for.
    resnapshot: Vec<usize>,
}

/// Acknowledged: (end LSN, commit time µs, records, re-snapshot recorded).
type Acked = Result<(u64, i64, u64, bool)>;

/// Stops the reader task when the stream loop ends, however it ends.
struct ReaderGuard(CancellationToken, tokio::task::JoinHandle<()>);
impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.cancel();
        self.1.abort();
    }
}

/// The reader task: frames from `wire`, decoded, into `tx` in WAL order;
/// a status update every second (received, and `acked` as flushed) and
/// whenever the server asks. Ends at the first error (sent on) or when
/// cancelled.
async fn read_stream(
    mut wire: Wire,
    acked: Arc<AtomicU64>,
    tx: tokio::sync::mpsc::Sender<Result<WalEvent>>,
    cancel: CancellationToken,
) {
    let mut decoder = PgOutputDecoder::with_protocol_version(1);
    let mut received = 0u64;
    let mut status = tokio::time::interval(Duration::from_secs(1));
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            f = wire.next() => Some(f),
            _ = status.tick() => None,
        };
        let event = match frame {
            // The second's status, or a keepalive that asks for one.
            None | Some(Ok(Frame::Keepalive { .. })) => {
                if let Some(Ok(Frame::Keepalive { end, reply })) = frame {
                    received = received.max(end);
                    if !reply {
                        continue;
                    }
                }
                // (`acked` never passes `received`: it is a commit's end
                // LSN of a transaction read here)
                let flushed = acked.load(Ordering::Relaxed);
                match wire.status(received.max(flushed), flushed).await {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                }
            }
            Some(Ok(Frame::XLogData { start, end, body })) => {
                received = received.max(end);
                match decoder.decode_message(body, Lsn::new(start)) {
                    Ok(Some(ev)) => Ok(ev),
                    Ok(None) => continue,
                    Err(e) => Err(Error::internal(format!(
                        "cannot decode a pgoutput message at {}",
                        format_lsn(start)
                    ))
                    .with_source(e)),
                }
            }
            Some(Err(e)) => Err(e),
        };
        let end = event.is_err();
        if tx.send(event).await.is_err() || end {
            return;
        }
    }
}

impl PostgresCdcSource {
    pub(super) async fn stream(&mut self, shutdown: &Shutdown) -> Result<StreamEnd> {
        let conninfo = slot::replication_conninfo(&self.url)?;
        // pgoutput protocol 1: whole transactions, at their commit.
        let publication = quote_ident(&self.publication).replace('\'', "''");
        let start = format!(
            "START_REPLICATION SLOT {} LOGICAL 0/0 (\"proto_version\" '1', \"publication_names\" '{publication}', \"messages\" 'on')",
            quote_ident(&self.slot),
        );
        let wire = match Wire::start(conninfo, start).await {
            Ok(w) => w,
            Err(e) => return Err(self.stream_error(e).await),
        };
        // The end LSN of the last transaction whose records the broker has.
        let flushed = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<WalEvent>>(4096);
        let cancel = CancellationToken::new();
        let reader = tokio::spawn(read_stream(wire, flushed.clone(), tx, cancel.clone()));
        let _guard = ReaderGuard(cancel, reader);
        tracing::info!(source = %self.name, slot = %self.slot, publication = %self.publication, "postgres_cdc: streaming");
        self.status.snapshot_finished();
        self.status.running();

        let admin = slot::connect(&self.url, &self.name).await?;
        let mut answered: HashMap<String, u64> = self
            .progress
            .restore()
            .await?
            .into_iter()
            .map(|(t, p)| (t, p.requested_at))
            .collect();
        let mut pausing = false;
        let labels = self.metric_labels();
        let mut relations: HashMap<u32, Option<usize>> = HashMap::new();
        let mut current: Option<Tx> = None;
        let mut inflight: FuturesOrdered<futures::future::BoxFuture<'static, Acked>> =
            FuturesOrdered::new();
        let heartbeat_every = Duration::from_millis(self.cfg.heartbeat_interval_ms.max(1));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats = tokio::time::interval(Duration::from_secs(5));
        let mut last_commit_ts: Option<i64> = None;
        let mut events_window = (Instant::now(), 0u64);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(StreamEnd::Shutdown),
                Some(acked) = inflight.next(), if !inflight.is_empty() => {
                    let (end_lsn, ts_us, records, resnapshot) = acked?;
                    flushed.fetch_max(end_lsn, Ordering::Relaxed);
                    if resnapshot {
                        tracing::info!(source = %self.name, at = %format_lsn(end_lsn),
                            "postgres_cdc: re-snapshot requested; streaming pauses while it runs");
                        return Ok(StreamEnd::Resnapshot);
                    }
                    if records > 0 {
                        metrics::counter!("syncline_cdc_events_total", &labels).increment(records);
                        events_window.1 += records;
                        last_commit_ts = Some(ts_us);
                    }
                    if inflight.is_empty() {
                        last_commit_ts = None;
                    }
                }
                ev = rx.recv(), if inflight.len() < 10_000 && !pausing => {
                    let ev = match ev {
                        Some(Ok(ev)) => ev,
                        Some(Err(e)) => return Err(self.stream_error(e).await),
                        None => return Err(Error::transient("the replication stream ended")),
                    };
                    let mut ctx = HandleCtx {
                        admin: &admin,
                        relations: &mut relations,
                        current: &mut current,
                        inflight: &mut inflight,
                        answered: &mut answered,
                    };
                    pausing |= self.handle(ev, &mut ctx).await?;
                }
                _ = heartbeat.tick(), if self.cfg.heartbeat_interval_ms > 0 => {
                    if let Err(e) = admin
                        .batch_execute("SELECT pg_logical_emit_message(true, 'syncline_heartbeat', '')")
                        .await
                    {
                        tracing::warn!(source = %self.name, error = %e, "postgres_cdc: cannot write a heartbeat");
                    }
                }
                _ = stats.tick() => {
                    let lag_s = last_commit_ts
                        .map(|ts| (chrono::Utc::now().timestamp_micros() - ts) as f64 / 1e6)
                        .unwrap_or(0.0);
                    metrics::gauge!("syncline_cdc_lag_seconds", &labels).set(lag_s.max(0.0));
                    let (since, n) = events_window;
                    metrics::gauge!("syncline_cdc_events_per_second", &labels)
                        .set(n as f64 / since.elapsed().as_secs_f64().max(0.001));
                    events_window = (Instant::now(), 0);
                    if let Ok(row) = admin
                        .query_one(
                            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8, \
                                    (pg_current_wal_lsn() - restart_lsn)::float8, wal_status \
                             FROM pg_replication_slots WHERE slot_name = $1",
                            &[&self.slot],
                        )
                        .await
                    {
                        let lag: Option<f64> = row.get(0);
                        let retained: Option<f64> = row.get(1);
                        self.status.source_lag(syncline_core::status::SourceLag {
                            bytes: lag.map(|b| b.max(0.0) as u64),
                            seconds: Some(lag_s.max(0.0)),
                            position: Some(format_lsn(flushed.load(Ordering::Relaxed))),
                        });
                        metrics::gauge!("syncline_cdc_lag_bytes", &labels).set(lag.unwrap_or(0.0));
                        metrics::gauge!("syncline_cdc_slot_retained_wal_bytes", &labels)
                            .set(retained.unwrap_or(0.0));
                        tracing::debug!(source = %self.name, lag_bytes = ?lag, retained_wal_bytes = ?retained,
                            acked = %format_lsn(flushed.load(Ordering::Relaxed)), "postgres_cdc: slot");
                        if row.get::<_, Option<String>>(2).as_deref() == Some("lost") {
                            return Err(slot::lost_slot_error(&self.slot));
                        }
                    }
                }
            }
        }
    }

    /// A replication error: a lost slot stops the pipeline; the rest is transient.
    async fn stream_error(&self, e: Error) -> Error {
        if let Ok(client) = slot::connect(&self.url, &self.name).await {
            match slot::slot_status(&client, &self.slot, &self.db_name).await {
                Err(lost) => return lost,
                Ok(None) => {
                    return Error::config(format!(
                        "replication slot `{}` was dropped while streaming: changes since its last \
                         acknowledged position cannot be read. Start the pipeline again to create it \
                         and re-snapshot every table (rows deleted meanwhile stay in targets)",
                        self.slot
                    ))
                    .with_source(e)
                }
                Ok(Some(_)) => {}
            }
        }
        Error::transient(format!(
            "the replication stream from {} failed",
            self.display
        ))
        .with_source(e)
    }

    /// Turn one stream event into records. Returns true when a transaction
    /// that asks for a re-snapshot committed (stop reading until it is acknowledged).
    async fn handle(&mut self, ev: WalEvent, ctx: &mut HandleCtx<'_>) -> Result<bool> {
        let HandleCtx {
            admin,
            relations,
            current,
            inflight,
            answered,
        } = ctx;
        let (admin, relations, current, inflight, answered): (
            &tokio_postgres::Client,
            &mut HashMap<_, _>,
            &mut Option<Tx>,
            &mut FuturesOrdered<_>,
            &mut HashMap<_, _>,
        ) = (admin, relations, current, inflight, answered);
        match ev.event_type {
            EventType::Begin {
                transaction_id,
                final_lsn,
                commit_timestamp,
            } => {
                *current = Some(Tx {
                    xid: transaction_id,
                    commit_lsn: final_lsn.value(),
                    ts_us: commit_timestamp.timestamp_micros(),
                    records: 0,
                    deliveries: Vec::new(),
                    resnapshot: Vec::new(),
                });
            }
            EventType::Commit { end_lsn, .. } => {
                let Some(tx) = current.take() else {
                    return Err(Error::internal(
                        "a commit without a begin in the replication stream",
                    ));
                };
                let end = end_lsn.value();
                let (records, ts, at) = (tx.records, tx.ts_us, tx.commit_lsn);
                if records > 0 {
                    tracing::debug!(source = %self.name, xid = tx.xid, lsn = %format_lsn(at), records,
                        "postgres_cdc: transaction read");
                }
                // A request is answered once: a replayed one is older than the answer.
                let requested: Vec<String> = tx
                    .resnapshot
                    .iter()
                    .map(|&t| self.tables[t].resolved.name())
                    .filter(|name| answered.get(name).is_none_or(|&a| a < at))
                    .collect();
                for name in &requested {
                    answered.insert(name.clone(), at);
                }
                let (store, producer) = (self.progress.clone(), self.publisher.producer().clone());
                let resnapshot = !requested.is_empty();
                inflight.push_back(
                    async move {
                        await_deliveries("a captured table", tx.deliveries).await?;
                        for name in &requested {
                            store.request(&producer, name, at).await?;
                        }
                        Ok((end, ts, records, resnapshot))
                    }
                    .boxed(),
                );
                return Ok(resnapshot);
            }
            EventType::Message {
                flags,
                prefix,
                content,
                ..
            } if &*prefix == RESNAPSHOT_PREFIX => {
                let request: ResnapshotRequest = match serde_json::from_slice(&content) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "postgres_cdc: ignoring a malformed re-snapshot request");
                        return Ok(false);
                    }
                };
                if request.slot != self.slot {
                    return Ok(false);
                }
                let Some(tx) = current.as_mut().filter(|_| flags & 1 == 1) else {
                    tracing::warn!(source = %self.name, "postgres_cdc: ignoring a non-transactional re-snapshot request");
                    return Ok(false);
                };
                for pattern in &request.tables {
                    let matched: Vec<usize> = (0..self.tables.len())
                        .filter(|&t| slot::table_matches(pattern, &self.tables[t].resolved))
                        .collect();
                    if matched.is_empty() {
                        tracing::warn!(source = %self.name, table = %pattern,
                            "postgres_cdc: a re-snapshot request names no captured table");
                    }
                    tx.resnapshot.extend(matched);
                }
            }
            EventType::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let t = self.tables.iter().position(|t| {
                    *t.resolved.schema == *namespace && *t.resolved.table == *relation_name
                });
                relations.insert(relation_id, t);
                if let Some(t) = t {
                    let raw = RawColumn::of_relation(&columns);
                    if raw != self.tables[t].resolved.columns {
                        self.evolve(t, raw, admin).await?;
                    }
                }
            }
            EventType::Insert {
                relation_oid, data, ..
            } => {
                if let Some(t) = self.table_of(relations, relation_oid) {
                    let tx = in_tx(current)?;
                    let (after, unchanged) = self.row(t, &data, None)?;
                    self.emit(t, tx, Op::Insert, None, after, unchanged).await?;
                }
            }
            EventType::Update {
                relation_oid,
                old_data,
                new_data,
                ..
            } => {
                if let Some(t) = self.table_of(relations, relation_oid) {
                    let tx = in_tx(current)?;
                    let old = match &old_data {
                        Some(o) => Some(self.row(t, o, None)?.0),
                        None => None,
                    };
                    let (after, unchanged) = self.row(t, &new_data, old_data.as_ref())?;
                    let key = &self.tables[t].resolved.key;
                    // A key change: the old key's row is deleted, the new one written.
                    if let Some(old) = &old {
                        let old_key = key_of(key, old);
                        if old_key != key_of(key, &after) {
                            self.emit_delete(t, tx, old_key, Some(old.clone())).await?;
                        }
                    }
                    let full_before =
                        old_data.is_some() && self.tables[t].resolved.replica_identity == 'f';
                    let before = if full_before { old } else { None };
                    self.emit(t, tx, Op::Update, before, after, unchanged)
                        .await?;
                }
            }
            EventType::Delete {
                relation_oid,
                old_data,
                ..
            } => {
                if let Some(t) = self.table_of(relations, relation_oid) {
                    let tx = in_tx(current)?;
                    let (old, _) = self.row(t, &old_data, None)?;
                    let key = key_of(&self.tables[t].resolved.key, &old);
                    let before = (self.tables[t].resolved.replica_identity == 'f').then_some(old);
                    self.emit_delete(t, tx, key, before).await?;
                }
            }
            EventType::Truncate { tables, .. } => {
                // pgoutput lists the relations as `schema.table`, with
                // CASCADE already expanded; one TRUNCATE change per captured one.
                let captured: Vec<usize> = (0..self.tables.len())
                    .filter(|&t| {
                        let name = self.tables[t].resolved.name();
                        tables.iter().any(|n| **n == *name)
                    })
                    .collect();
                if !captured.is_empty() {
                    let tx = in_tx(current)?;
                    for t in captured {
                        self.push_truncate(t, tx).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(false)
    }

    fn table_of(&self, relations: &HashMap<u32, Option<usize>>, oid: u32) -> Option<usize> {
        relations.get(&oid).copied().flatten()
    }

    /// A new relation shape: register the new schema version before any
    /// record uses it (a refused schema stops the pipeline, nothing written).
    async fn evolve(
        &mut self,
        t: usize,
        raw: Vec<RawColumn>,
        admin: &tokio_postgres::Client,
    ) -> Result<()> {
        slot::resolve_types(admin, &raw, &mut self.types).await?;
        let name = self.tables[t].resolved.name();
        let schema = super::decode::table_schema(
            &self.name,
            &name,
            &raw,
            &self.tables[t].resolved.key,
            &self.types,
        )?;
        let topic = self.tables[t].resolved.topic.clone();
        self.publisher.prepare(&topic, &schema).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!("`{name}` changed shape and its new schema cannot be used for topic `{topic}`; nothing of it was published"),
            )
            .with_source(e)
        })?;
        tracing::info!(source = %self.name, table = %name, columns = ?raw.iter().map(|c| &c.name).collect::<Vec<_>>(),
            "postgres_cdc: table changed shape; new schema version registered");
        let table = &mut self.tables[t];
        table.resolved.columns = raw;
        table.schema = schema;
        Ok(())
    }

    /// Row values in schema order, and the columns left out because their
    /// TOASTed value did not change (see [`super::decode::row_values`]).
    fn row(&self, t: usize, data: &RowData, old: Option<&RowData>) -> Result<(Row, Vec<String>)> {
        let table = &self.tables[t];
        super::decode::row_values(&table.schema, || table.resolved.name(), data, old)
    }

    async fn emit(
        &self,
        t: usize,
        tx: &mut Tx,
        op: Op,
        before: Option<Vec<(String, Value)>>,
        after: Vec<(String, Value)>,
        unchanged: Vec<String>,
    ) -> Result<()> {
        let key = key_of(&self.tables[t].resolved.key, &after);
        self.push(t, tx, op, key, before, Some(after), unchanged)
            .await
    }

    async fn emit_delete(
        &self,
        t: usize,
        tx: &mut Tx,
        key: Vec<(String, Value)>,
        before: Option<Vec<(String, Value)>>,
    ) -> Result<()> {
        self.push(t, tx, Op::Delete, key, before, None, Vec::new())
            .await
    }

    /// A TRUNCATE of table `t`: one keyless record sent to every partition
    /// of the table's topic, all with the same position (the truncate's
    /// place in its transaction), acknowledged with the rest of the
    /// transaction. A sink removes the rows of the table older than that
    /// position (see sinks/src/postgres/truncate.rs).
    async fn push_truncate(&self, t: usize, tx: &mut Tx) -> Result<()> {
        tx.records += 1;
        let ev = ChangeEvent {
            op: Op::Truncate,
            key: Vec::new(),
            before: None,
            after: None,
            source: self.source_info(
                &self.tables[t].resolved.name(),
                stream_position(tx.commit_lsn, tx.records),
                format!(
                    "lsn {} #{} xid {}",
                    format_lsn(tx.commit_lsn),
                    tx.records,
                    tx.xid
                ),
                tx.ts_us,
            ),
            unchanged: Vec::new(),
        };
        tx.deliveries.extend(self.enqueue_truncate(t, &ev).await?);
        tracing::info!(source = %self.name, table = %ev.source.table, position = %ev.source.position_text,
            "postgres_cdc: TRUNCATE published");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn push(
        &self,
        t: usize,
        tx: &mut Tx,
        op: Op,
        key: Vec<(String, Value)>,
        before: Option<Vec<(String, Value)>>,
        after: Option<Vec<(String, Value)>>,
        unchanged: Vec<String>,
    ) -> Result<()> {
        tx.records += 1;
        let position = stream_position(tx.commit_lsn, tx.records);
        let text = format!(
            "lsn {} #{} xid {}",
            format_lsn(tx.commit_lsn),
            tx.records,
            tx.xid
        );
        let ev = ChangeEvent {
            op,
            key,
            before,
            after,
            source: self.source_info(&self.tables[t].resolved.name(), position, text, tx.ts_us),
            unchanged,
        };
        tx.deliveries.push(self.enqueue(t, &ev).await?);
        Ok(())
    }
}

/// What [`PostgresCdcSource::handle`] works on besides the source.
struct HandleCtx<'a> {
    admin: &'a tokio_postgres::Client,
    relations: &'a mut HashMap<u32, Option<usize>>,
    current: &'a mut Option<Tx>,
    inflight: &'a mut FuturesOrdered<futures::future::BoxFuture<'static, Acked>>,
    /// Per table, the commit LSN of the last re-snapshot request answered.
    answered: &'a mut HashMap<String, u64>,
}

fn in_tx(current: &mut Option<Tx>) -> Result<&mut Tx> {
    current
        .as_mut()
        .ok_or_else(|| Error::internal("a change outside a transaction in the replication stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_commit_then_index() {
        assert!(stream_position(100, 2) < stream_position(100, 3));
        assert!(stream_position(100, 9) < stream_position(101, 1));
        assert_eq!(stream_position(7, 1), stream_position(7, 1));
    }
}
