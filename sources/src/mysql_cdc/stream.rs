//! Streaming: the binlog's row events as change events, and the stored
//! binlog position.
//!
//! The source connects as a replica (`COM_BINLOG_DUMP` from the stored
//! file and offset, with a server id of its own) after telling MariaDB it
//! understands GTID events (`@mariadb_slave_capability = 4`; without it the
//! server rewrites them away), and reads events in binlog order: a
//! transaction is a GTID event (or `BEGIN`), table maps and row events, and
//! an `XID` (or `COMMIT`); DDL is a standalone GTID and one statement. A
//! group also ends with `ROLLBACK` (non-transactional writes that stay),
//! with `XA PREPARE` (event 38, after an XA transaction's rows) and with `XA
//! COMMIT` / `XA ROLLBACK` (a group of their own). A group that ends in a
//! way not listed here ends where the next one starts, so its records are
//! still awaited before the position moves past it.
//!
//! # When the stored position advances (the guarantee, implemented here)
//! At a transaction's end, the delivery futures of all its records are
//! queued, in binlog order, behind those of earlier transactions. Only when
//! all of them are acknowledged by the broker does the acknowledged position
//! move to the transaction's end; it is stored (`_syncline_cursors`) every
//! second when it moved. So the stored position never passes a record the
//! broker does not have: after a crash the stream resumes at or before the
//! first unacknowledged transaction, and the replayed records carry the same
//! positions. Transactions on tables that are not captured move it too, so
//! a busy server with idle captured tables does not leave it behind.
//!
//! # Heartbeats
//! With `heartbeat_interval_ms`, the server sends a heartbeat event when the
//! binlog is idle for that long; a stream that hears nothing for three
//! intervals (plus 5 s) is broken off and reconnected by the supervisor.
//!
//! # DDL
//! Every row event follows a TABLE_MAP event that describes its table: with
//! `binlog_row_metadata = FULL`, column names, types and their metadata,
//! signedness, character sets and enum/set labels. When that description
//! differs from the one last seen for the table ([`table_map_fingerprint`]:
//! also a change of character set, of signedness or of labels, which keeps
//! names and types), the table's shape is read again from
//! `information_schema` and, if it changed, registered as a new schema
//! version before the row is published (an incompatible one stops the pipeline with the registry's
//! reason, before anything of that shape is written). Rows are read by
//! column name: a column the event lacks (added later) is null, a column the
//! table no longer has (dropped since) is left out, so a replay of events
//! written before a DDL still fits the current shape.
//!
//! # Re-snapshot while running
//! `syncline snapshot` records the tables as "snapshot pending" in the
//! source's snapshot progress. Every 5 s the stream looks for such entries;
//! at the next transaction boundary it waits until the broker has every
//! record read so far, stores that position, and ends; the source snapshots
//! the pending tables in a new consistent snapshot (see [`super::snapshot`]
//! for why that hand-over has no gap) and resumes streaming where it stopped.

use super::position::{
    change_position, file_number, parse_mariadb_gtid, rotated_file, BinlogPosition,
    MARIADB_GTID_EVENT,
};
use super::schema::read_table;
use super::value::binlog_row;
use super::MysqlCdcSource;
use crate::key_of;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use std::time::{Duration, Instant};
use syncline_core::error::mysql::mysql_error;
use syncline_core::error::ErrorKind;
use syncline_core::runtime::Shutdown;
use syncline_core::{ChangeEvent, Error, Op, Result};
use syncline_runtime::publish::Pending;

/// How streaming ended without an error.
pub(super) enum StreamEnd {
    Shutdown,
    /// Tables wait for a re-snapshot; snapshot them, then stream from here.
    Resnapshot(BinlogPosition),
}

/// Transactions read but not yet acknowledged, at most.
const MAX_INFLIGHT: usize = 10_000;
/// How often the stream looks for re-snapshot requests.
const REQUEST_CHECK: Duration = Duration::from_secs(5);
/// How often the stream measures its lag behind the binlog.
const LAG_CHECK: Duration = Duration::from_secs(5);
/// Longest the lag query may take before it is given up until the next check.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of the binlog (`files`: name and size, oldest first) after `acked`;
/// `None` when the acknowledged file is not listed.
fn binlog_bytes_behind(files: &[(String, u64)], acked: &BinlogPosition) -> Option<u64> {
    let at = files.iter().position(|(name, _)| *name == acked.file)?;
    let rest: u64 = files[at + 1..].iter().map(|(_, size)| size).sum();
    Some(files[at].1.saturating_sub(acked.pos) + rest)
}

/// The transaction (a group of binlog events) being read.
struct Tx {
    /// The end offset of its first event (GTID or `BEGIN`).
    begin: u64,
    gtid: Option<String>,
    /// Ends with its one statement: MariaDB's standalone GTID flag, or a
    /// MySQL GTID not (yet) followed by `BEGIN`.
    standalone: bool,
    ts_us: i64,
    records: u64,
    deliveries: Vec<Pending>,
}

/// Where the reader is in the binlog.
struct Cursor {
    file: String,
    file_no: u64,
    tx: Option<Tx>,
    /// Each group's position and commit time, once the broker has its records.
    inflight: FuturesOrdered<futures::future::BoxFuture<'static, Result<(BinlogPosition, i64)>>>,
}

impl Cursor {
    /// A group starts with the event that spans `start..begin`. A group
    /// still open ends at `start`: a group that ended in a way this reader
    /// does not know must still have its deliveries awaited before the
    /// position moves past it, and the next group starts where it ended.
    fn begin(&mut self, start: u64, begin: u64, gtid: Option<String>, standalone: bool, ts: u32) {
        if self.tx.is_some() {
            self.end(start);
        }
        self.tx = Some(Tx {
            begin,
            gtid,
            standalone,
            ts_us: i64::from(ts) * 1_000_000,
            records: 0,
            deliveries: Vec::new(),
        });
    }

    /// The transaction ends at `end`: its position is acknowledged once the
    /// broker has its records and everything before.
    fn end(&mut self, end: u64) {
        let tx = self.tx.take();
        let at = BinlogPosition {
            file: self.file.clone(),
            pos: end,
            gtid: tx.as_ref().and_then(|t| t.gtid.clone()),
        };
        let ts_us = tx.as_ref().map_or(0, |t| t.ts_us);
        let deliveries = tx.map(|t| t.deliveries).unwrap_or_default();
        self.inflight.push_back(
            async move {
                syncline_runtime::publish::all(deliveries)
                    .await
                    .map_err(|e| {
                        Error::new(
                            e.kind(),
                            format!("publishing the changes before {at} failed"),
                        )
                        .with_source(e)
                    })?;
                Ok((at, ts_us))
            }
            .boxed(),
        );
    }
}

impl MysqlCdcSource {
    pub(super) async fn stream(
        &mut self,
        start: BinlogPosition,
        shutdown: &Shutdown,
    ) -> Result<StreamEnd> {
        let mut conn = self.connect().await?;
        let mut admin = self.connect().await?;
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| mysql_error(e, "cannot set up the binlog session"))?;
        let heartbeat = self.cfg.heartbeat_interval_ms;
        if heartbeat > 0 {
            conn.query_drop(format!(
                "SET @master_heartbeat_period = {}",
                heartbeat.saturating_mul(1_000_000)
            ))
            .await
            .map_err(|e| mysql_error(e, "cannot set the binlog heartbeat"))?;
        }
        let request = BinlogStreamRequest::new(self.server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos);
        let mut binlog = match conn.get_binlog_stream(request).await {
            Ok(b) => b,
            Err(e) => return Err(self.stream_error(e, &start).await),
        };
        tracing::info!(source = %self.name, from = %start, server_id = self.server_id, "mysql_cdc: streaming");
        self.status.snapshot_finished();
        self.status.running();
        let idle = if heartbeat > 0 {
            Duration::from_millis(heartbeat.saturating_mul(3)) + Duration::from_secs(5)
        } else {
            Duration::from_secs(365 * 24 * 3600)
        };
        let mut cur = Cursor {
            file: start.file.clone(),
            file_no: file_number(&start.file)?,
            tx: None,
            inflight: FuturesOrdered::new(),
        };
        let mut acked = start.clone();
        let mut acked_ts_us = 0i64;
        let mut stored = start.clone();
        let mut next_lag = Instant::now();
        // Its own connection, so that a server that stops answering the lag
        // query never holds up the stream (or its idle deadline).
        let mut lag_conn: Option<Conn> = None;
        let mut shapes: Vec<Option<Vec<u8>>> = vec![None; self.tables.len()];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_check = Instant::now() + REQUEST_CHECK;
        let mut resnapshot = false;
        // One deadline for the whole stream, moved by every event: a timeout
        // made anew each turn of the loop would be dropped by the 1 s tick
        // before it could ever fire, and a half-open connection would hang
        // the source.
        let silence = tokio::time::sleep(idle);
        tokio::pin!(silence);
        loop {
            let reading = cur.inflight.len() < MAX_INFLIGHT && !(resnapshot && cur.tx.is_none());
            if !reading {
                // not listening (the broker is behind, or a re-snapshot
                // waits): the server's silence is not counted
                silence.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    if acked != stored {
                        self.store_position(&acked).await?;
                    }
                    return Ok(StreamEnd::Shutdown);
                }
                Some(r) = cur.inflight.next(), if !cur.inflight.is_empty() => {
                    let (at, ts_us) = r?;
                    acked = at;
                    if ts_us > 0 {
                        acked_ts_us = ts_us;
                    }
                    if resnapshot && cur.inflight.is_empty() && cur.tx.is_none() {
                        self.store_position(&acked).await?;
                        tracing::info!(source = %self.name, at = %acked, "mysql_cdc: streaming paused for a re-snapshot");
                        return Ok(StreamEnd::Resnapshot(acked));
                    }
                }
                _ = tick.tick() => {
                    if acked != stored {
                        self.store_position(&acked).await?;
                        stored = acked.clone();
                    }
                    if Instant::now() >= next_lag {
                        next_lag = Instant::now() + LAG_CHECK;
                        self.report_lag(&mut lag_conn, &acked, acked_ts_us).await;
                    }
                    if !resnapshot && Instant::now() >= next_check {
                        next_check = Instant::now() + REQUEST_CHECK;
                        resnapshot = self.resnapshot_requested().await?;
                    }
                    if resnapshot && cur.inflight.is_empty() && cur.tx.is_none() {
                        self.store_position(&acked).await?;
                        tracing::info!(source = %self.name, at = %acked, "mysql_cdc: streaming paused for a re-snapshot");
                        return Ok(StreamEnd::Resnapshot(acked));
                    }
                }
                ev = binlog.next(), if reading => {
                    let ev = match ev {
                        None => return Err(Error::transient(format!("{} ended the binlog stream", self.display))),
                        Some(Err(e)) => return Err(self.stream_error(e, &acked).await),
                        Some(Ok(ev)) => ev,
                    };
                    self.handle(&binlog, ev, &mut cur, &mut shapes, &mut admin).await?;
                    // counted from when the stream listens again
                    silence.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                () = &mut silence, if reading => {
                    return Err(Error::transient(format!(
                        "the binlog stream of {} sent nothing for {} s (not even a heartbeat); reconnecting",
                        self.display, idle.as_secs()
                    )));
                }
            }
        }
    }

    /// How far behind the server's binlog the acknowledged position is, in
    /// bytes (`SHOW BINARY LOGS`) and in seconds (since the last
    /// acknowledged transaction's commit, while behind), for the status.
    async fn report_lag(&self, conn: &mut Option<Conn>, acked: &BinlogPosition, acked_ts_us: i64) {
        let read = tokio::time::timeout(LAG_QUERY_TIMEOUT, async {
            if conn.is_none() {
                *conn = Some(self.connect().await?);
            }
            self.binary_logs(conn.as_mut().expect("connected above"))
                .await
        })
        .await;
        let files = match read {
            Ok(Ok(files)) => files,
            failed => {
                // a connection left mid-query is not used again
                *conn = None;
                if let Ok(Err(e)) = failed {
                    tracing::debug!(source = %self.name, error = %e, "mysql_cdc: cannot measure the lag");
                }
                return;
            }
        };
        let bytes = binlog_bytes_behind(&files, acked);
        let seconds = match bytes {
            Some(0) | None => Some(0.0),
            Some(_) if acked_ts_us > 0 => {
                Some(((chrono::Utc::now().timestamp_micros() - acked_ts_us) as f64 / 1e6).max(0.0))
            }
            Some(_) => None,
        };
        self.status.source_lag(syncline_core::status::SourceLag {
            bytes,
            seconds,
            position: Some(acked.to_string()),
        });
    }

    /// Whether some table's snapshot is pending (asked for while running).
    async fn resnapshot_requested(&self) -> Result<bool> {
        let progress = self.progress.restore().await?;
        Ok(self.tables.iter().any(|t| {
            progress
                .get(&t.full_name())
                .is_some_and(|p| !p.done && p.rows == 0 && p.segments.is_empty())
        }))
    }

    /// A failed binlog stream that would resume at `at`. The server's error
    /// 1236 covers several refusals ([`refusal`]); only a file missing from
    /// `SHOW BINARY LOGS` is a purged position. Anything else is the
    /// driver's classification (a dropped connection is transient).
    async fn stream_error(&self, e: mysql_async::Error, at: &BinlogPosition) -> Error {
        let mysql_async::Error::Server(s) = &e else {
            return mysql_error(e, format!("the binlog stream of {} failed", self.display));
        };
        if s.code != 1236 {
            return mysql_error(e, format!("the binlog stream of {} failed", self.display));
        }
        let files = self.binlog_files().await.ok();
        let listed = files.as_ref().map(|f| f.iter().any(|n| n == &at.file));
        let at_event = match listed {
            Some(true) => self.starts_an_event(at).await,
            _ => None,
        };
        let says = &s.message;
        match refusal(listed, at_event, says) {
            Refusal::Purged => Error::config(format!(
                "{} (the server says: {says})",
                self.purged(at, files.as_ref().and_then(|f| f.first()).map(String::as_str))
            )),
            Refusal::NotAnEvent => Error::config(format!(
                "source `{}` cannot read the binlog of {} at {at}: the server says: {says}. The file is there, \
                 but the position is not where an event starts in it (the binlog was written anew, e.g. after \
                 RESET MASTER, or this is another server). To recover, capture again from a new snapshot: \
                 `syncline snapshot PIPELINE_FILE --source {} --from-scratch`, then start the pipeline",
                self.name, self.display, self.name
            )),
            Refusal::Setting => Error::config(format!(
                "source `{}` cannot read the binlog of {} at {at}: the server says: {says}",
                self.name, self.display
            )),
            Refusal::Transient => Error::transient(format!(
                "{} ended the binlog stream at {at}: {says}; reconnecting",
                self.display
            )),
        }
    }

    /// Whether an event starts at `at` in its file, as `SHOW BINLOG EVENTS`
    /// reads it (its error 1220 for any other offset); `None`: unknown.
    async fn starts_an_event(&self, at: &BinlogPosition) -> Option<bool> {
        let mut conn = self.connect().await.ok()?;
        // (no placeholders in SHOW: the file name quoted as a literal)
        let file = at.file.replace('\\', "\\\\").replace('\'', "''");
        let read = conn
            .query_drop(format!(
                "SHOW BINLOG EVENTS IN '{file}' FROM {} LIMIT 1",
                at.pos
            ))
            .await;
        let _ = conn.disconnect().await;
        match read {
            Ok(()) => Some(true),
            Err(mysql_async::Error::Server(s)) if s.code == 1220 => Some(false),
            Err(_) => None,
        }
    }

    /// One binlog event.
    async fn handle(
        &mut self,
        binlog: &BinlogStream,
        ev: Event,
        cur: &mut Cursor,
        shapes: &mut [Option<Vec<u8>>],
        admin: &mut Conn,
    ) -> Result<()> {
        let h = ev.header();
        let end = u64::from(h.log_pos());
        let start = end.saturating_sub(u64::from(h.event_size()));
        match h.event_type_raw() {
            MARIADB_GTID_EVENT => {
                let (gtid, standalone) =
                    parse_mariadb_gtid(ev.data(), h.server_id()).ok_or_else(|| {
                        Error::internal(format!("a GTID event at {}:{end} is too short", cur.file))
                    })?;
                cur.begin(
                    start,
                    end,
                    Some(gtid.to_string()),
                    standalone,
                    h.timestamp(),
                );
                return Ok(());
            }
            XA_PREPARE_EVENT => {
                // `XA PREPARE` ends the group of an XA transaction's rows;
                // its `XA COMMIT` comes later, a group of its own
                cur.end(end);
                return Ok(());
            }
            _ => {}
        }
        let data = ev.read_data().map_err(|e| {
            Error::internal(format!(
                "cannot read binlog event {} at {}:{end}",
                h.event_type_raw(),
                cur.file
            ))
            .with_source(e)
        })?;
        match data {
            Some(EventData::RotateEvent(r)) => {
                cur.file = rotated_file(&r.name(), &cur.file);
                cur.file_no = file_number(&cur.file)?;
                // A real rotation (not the stream's made-up first one, at
                // offset 0) between transactions: the position moves into
                // the new file, so an idle server's purge of the old one
                // does not strand the source.
                if end != 0 && cur.tx.is_none() {
                    cur.end(r.position());
                }
            }
            Some(EventData::GtidEvent(g)) => {
                // MySQL: the GTID comes before `BEGIN`, or before the one
                // statement (DDL) of a group without `BEGIN`
                let sid = uuid::Uuid::from_bytes(g.sid());
                cur.begin(
                    start,
                    end,
                    Some(format!("{sid}:{}", g.gno())),
                    true,
                    h.timestamp(),
                );
            }
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query().trim().to_string();
                match group_part(&sql) {
                    GroupPart::Begin => match cur.tx.as_mut() {
                        Some(tx) => tx.standalone = false,
                        None => cur.begin(start, end, None, false, h.timestamp()),
                    },
                    GroupPart::End => cur.end(end),
                    GroupPart::Statement => {
                        if cur.tx.is_none() {
                            cur.begin(start, end, None, true, h.timestamp());
                        }
                        self.statement(&q.schema(), &sql, cur, shapes).await?;
                        if cur.tx.as_ref().is_some_and(|t| t.standalone) {
                            cur.end(end);
                        }
                    }
                }
            }
            Some(EventData::XidEvent(_)) => cur.end(end),
            Some(EventData::TableMapEvent(tme)) => {
                if let Some(t) = self.table_index(&tme.database_name(), &tme.table_name()) {
                    let shape = table_map_fingerprint(ev.data());
                    if shapes[t].as_deref() != Some(shape) {
                        self.refresh(t, admin).await?;
                        shapes[t] = Some(shape.to_vec());
                    }
                }
            }
            Some(EventData::RowsEvent(rows)) => {
                self.rows(binlog, &rows, cur).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A statement in the binlog (DDL): a `TRUNCATE` of a captured table is
    /// published, and its next row reads the shape again (other DDL shows
    /// in the next TABLE_MAP).
    async fn statement(
        &self,
        default_db: &str,
        sql: &str,
        cur: &mut Cursor,
        shapes: &mut [Option<Vec<u8>>],
    ) -> Result<()> {
        let Some((db, name)) = truncated_table(sql, default_db) else {
            return Ok(());
        };
        let Some(t) = self.table_index(&db, &name) else {
            return Ok(());
        };
        shapes[t] = None;
        let tx = cur.tx.as_mut().expect("a statement is in a transaction");
        tx.records += 1;
        let position = change_position(self.epoch, cur.file_no, tx.begin, tx.records);
        let text = position_text(self.epoch, &cur.file, tx, tx.records);
        let ev = ChangeEvent {
            op: Op::Truncate,
            key: Vec::new(),
            before: None,
            after: None,
            source: self.source_info(t, position, text, tx.ts_us),
            unchanged: Vec::new(),
        };
        let table = &self.tables[t];
        tx.deliveries.extend(
            self.publisher
                .publish_truncate(&table.topic, &table.schema, &ev)
                .await?,
        );
        tracing::info!(source = %self.name, table = %table.full_name(), position = %ev.source.position_text,
            "mysql_cdc: TRUNCATE published");
        Ok(())
    }

    fn table_index(&self, db: &str, name: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.database == db && t.name == name)
    }

    /// A rows event: each row image -> one change (an update that changes
    /// the key -> a delete of the old key and an insert).
    async fn rows(
        &mut self,
        binlog: &BinlogStream,
        rows: &RowsEventData<'_>,
        cur: &mut Cursor,
    ) -> Result<()> {
        let Some(tme) = binlog.get_tme(rows.table_id()) else {
            return Err(Error::internal(format!(
                "a rows event at {} refers to table id {} without a table map",
                cur.file,
                rows.table_id()
            )));
        };
        let Some(t) = self.table_index(&tme.database_name(), &tme.table_name()) else {
            return Ok(());
        };
        let images: Vec<(Option<BinlogRow>, Option<BinlogRow>)> = rows
            .rows(tme)
            .collect::<std::io::Result<_>>()
            .map_err(|e| {
                Error::internal(format!(
                    "cannot read the rows of `{}` at {}",
                    self.tables[t].full_name(),
                    cur.file
                ))
                .with_source(e)
            })?;
        let op = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
            _ => Op::Update,
        };
        if cur.tx.is_none() {
            // a row event outside BEGIN/GTID (never written by a server; a
            // stream resumed mid-transaction): its own transaction
            cur.begin(0, 0, None, false, 0);
        }
        for (before, after) in images {
            let before = before.map(|r| binlog_row(&self.tables[t], r)).transpose();
            let after = after.map(|r| binlog_row(&self.tables[t], r)).transpose();
            let tx = cur.tx.as_mut().expect("begun above");
            let (before, after) = match (before, after) {
                (Ok(b), Ok(a)) => (b, a),
                (Err(e), _) | (_, Err(e)) if e.kind() == ErrorKind::Data => {
                    tx.records += 1;
                    let text = position_text(self.epoch, &cur.file, tx, tx.records);
                    let pending = self.dead_letter(t, op, &text, &e)?;
                    tx.deliveries.push(pending);
                    continue;
                }
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            let key = &self.tables[t].key;
            match (op, before, after) {
                (Op::Update, Some(b), Some(a)) if key_of(key, &b) != key_of(key, &a) => {
                    let old = key_of(key, &b);
                    self.push(t, cur, Op::Delete, old, Some(b), None).await?;
                    let new = key_of(key, &a);
                    self.push(t, cur, Op::Insert, new, None, Some(a)).await?;
                }
                (Op::Delete, Some(b), _) => {
                    let k = key_of(key, &b);
                    self.push(t, cur, Op::Delete, k, Some(b), None).await?;
                }
                (op, b, Some(a)) => {
                    let k = key_of(key, &a);
                    self.push(t, cur, op, k, b, Some(a)).await?;
                }
                (_, _, None) => {
                    return Err(Error::internal(format!(
                        "a row event of `{}` at {} has no row image",
                        self.tables[t].full_name(),
                        cur.file
                    )))
                }
            }
        }
        Ok(())
    }

    async fn push(
        &self,
        t: usize,
        cur: &mut Cursor,
        op: Op,
        key: Vec<(String, apache_avro::types::Value)>,
        before: Option<Vec<(String, apache_avro::types::Value)>>,
        after: Option<Vec<(String, apache_avro::types::Value)>>,
    ) -> Result<()> {
        let tx = cur.tx.as_mut().expect("in a transaction");
        tx.records += 1;
        let position = change_position(self.epoch, cur.file_no, tx.begin, tx.records);
        let text = position_text(self.epoch, &cur.file, tx, tx.records);
        let ev = ChangeEvent {
            op,
            key,
            before,
            after,
            source: self.source_info(t, position, text, tx.ts_us),
            unchanged: Vec::new(),
        };
        let pending = self.enqueue(t, &ev).await?;
        cur.tx
            .as_mut()
            .expect("in a transaction")
            .deliveries
            .push(pending);
        Ok(())
    }

    /// Read table `t`'s shape again; a changed one is a new schema version.
    async fn refresh(&mut self, t: usize, admin: &mut Conn) -> Result<()> {
        let old = &self.tables[t];
        let key = old.configured_key.clone();
        let fresh = read_table(
            admin,
            &self.name,
            &old.database,
            &old.name,
            key.as_deref(),
            old.topic.clone(),
        )
        .await?;
        if fresh.schema != old.schema {
            self.publisher.prepare(&fresh.topic, &fresh.schema).await?;
            tracing::info!(source = %self.name, table = %fresh.full_name(),
                columns = ?fresh.columns.iter().map(|c| format!("{} {}", c.name, c.sql_type)).collect::<Vec<_>>(),
                "mysql_cdc: the table's shape changed; new schema version");
        }
        self.tables[t] = fresh;
        Ok(())
    }
}

/// What a TABLE_MAP event says of its table's shape: its data after the
/// table id and flags (the 8 bytes every server with
/// `binlog_row_metadata` writes): names, column types, their metadata
/// (lengths, precision), nullability and, with `binlog_row_metadata =
/// FULL`, signedness, character sets, enum and set labels, geometry types
/// and the primary key. The table id is left out: the server gives a table
/// a new one whenever it opens it again, shape or not.
fn table_map_fingerprint(data: &[u8]) -> &[u8] {
    data.get(8..).unwrap_or_default()
}

/// What the server's error 1236 ("fatal error reading binlog") means.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The file is not among the server's binlogs: purged, or another
    /// server's. The changes since are gone.
    Purged,
    /// The file is there, but the position is past its end or inside an
    /// event: a retry asks for the same place and fails the same way.
    NotAnEvent,
    /// A server setting refuses it (an event larger than
    /// `max_allowed_packet`): an operator changes the setting.
    Setting,
    /// Anything else (the server ended the dump: shutting down, another
    /// replica with the same server id): a new connection may succeed.
    Transient,
}

/// `listed`: whether the position's file is in `SHOW BINARY LOGS`;
/// `at_event`: whether an event starts at the position (`None`: unknown).
/// These facts come first: at an offset inside an event the server reads
/// garbage as an event's length, and its message is then any of "bogus
/// data", "binlog truncated" or "exceeded max_allowed_packet". The message
/// decides only what they leave open.
fn refusal(listed: Option<bool>, at_event: Option<bool>, message: &str) -> Refusal {
    let says = |words: &str| message.to_ascii_lowercase().contains(words);
    match (listed, at_event) {
        (Some(false), _) => Refusal::Purged,
        (_, Some(false)) => Refusal::NotAnEvent,
        (None, _) if says("could not find first log file name") => Refusal::Purged,
        _ if says("impossible position") => Refusal::NotAnEvent,
        (_, None) if says("bogus data in log event") => Refusal::NotAnEvent,
        _ if says("max_allowed_packet") => Refusal::Setting,
        _ => Refusal::Transient,
    }
}

/// MySQL's and MariaDB's `XA_PREPARE_LOG_EVENT`.
const XA_PREPARE_EVENT: u8 = 38;

/// What a query event is to the group of events it is in.
#[derive(Debug, PartialEq, Eq)]
enum GroupPart {
    /// `BEGIN`, `XA START`: the group has more than one statement.
    Begin,
    /// `COMMIT`; `ROLLBACK`, which ends a group whose non-transactional
    /// writes stay (or, in statement format, one that wrote nothing);
    /// `XA COMMIT` / `XA ROLLBACK`, a group of their own.
    End,
    /// Anything else: DDL, `XA END`, statements.
    Statement,
}

fn group_part(sql: &str) -> GroupPart {
    let mut words = sql.split_whitespace();
    let first = words.next().unwrap_or("");
    let is = |w: &str, word: &str| w.trim_end_matches(';').eq_ignore_ascii_case(word);
    let second = words.next();
    let alone = second.is_none();
    let xa = |word: &str| is(first, "XA") && second.is_some_and(|w| is(w, word));
    if (is(first, "BEGIN") && alone) || xa("START") || xa("BEGIN") {
        GroupPart::Begin
    } else if ((is(first, "COMMIT") || is(first, "ROLLBACK")) && alone)
        || xa("COMMIT")
        || xa("ROLLBACK")
    {
        GroupPart::End
    } else {
        GroupPart::Statement
    }
}

/// `file:offset #index gtid g, epoch e`, readable.
fn position_text(epoch: u64, file: &str, tx: &Tx, index: u64) -> String {
    let mut text = format!("{file}:{} #{index}", tx.begin);
    if let Some(g) = &tx.gtid {
        text += &format!(" gtid {g}");
    }
    if epoch > 0 {
        text += &format!(", epoch {epoch}");
    }
    text
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties.
fn truncated_table(sql: &str, default_db: &str) -> Option<(String, String)> {
    let mut words = sql.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("truncate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("table") {
        name = words.next()?;
    }
    let name = name.trim_end_matches(';');
    let unquote = |s: &str| s.trim_matches('`').replace("``", "`");
    match name.split_once("`.`").or_else(|| name.split_once('.')) {
        Some((db, t)) => Some((unquote(db), unquote(t))),
        None => Some((default_db.to_string(), unquote(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            file: "bin.000001".into(),
            file_no: 1,
            tx: None,
            inflight: FuturesOrdered::new(),
        }
    }

    /// The positions the cursor acknowledges, in order.
    async fn acknowledged(cur: &mut Cursor) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(at) = cur.inflight.next().await {
            out.push(at.unwrap().0.pos);
        }
        out
    }

    #[tokio::test]
    async fn a_group_left_open_ends_where_the_next_one_starts() {
        // MySQL: GTID, then DDL without BEGIN: ends with its statement
        let mut cur = cursor();
        cur.begin(100, 150, Some("u:1".into()), true, 0);
        assert!(cur.tx.as_ref().unwrap().standalone);
        // MySQL: GTID, BEGIN, rows, XID
        cur.begin(300, 350, Some("u:2".into()), true, 0);
        cur.tx.as_mut().unwrap().standalone = false; // BEGIN
        cur.end(500);
        // a group that ends in no way known here, then the next group
        cur.begin(500, 550, Some("0-1-3".into()), false, 0);
        cur.begin(700, 750, Some("0-1-4".into()), false, 0);
        cur.end(900);
        // the DDL group, never ended by a statement here, ends at 300
        assert_eq!(acknowledged(&mut cur).await, vec![300, 500, 700, 900]);
    }

    #[test]
    fn only_a_file_the_server_does_not_list_is_a_purged_position() {
        use Refusal::*;
        let missing = "Could not find first log file name in binary log index file";
        assert_eq!(refusal(Some(false), None, missing), Purged);
        assert_eq!(refusal(None, None, missing), Purged);
        // MariaDB 10.11's words at offsets inside an event, which vary with
        // the bytes found there
        let too_big =
            "log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master";
        for inside in [
            "bogus data in log event; the first event 'mariadb-bin.000003' at 400",
            "binlog truncated in the middle of event; consider out of disk space on master",
            too_big,
        ] {
            assert_eq!(
                refusal(Some(true), Some(false), inside),
                NotAnEvent,
                "{inside}"
            );
        }
        assert_eq!(
            refusal(Some(true), None, "bogus data in log event"),
            NotAnEvent
        );
        let past = "Client requested master to start replication from impossible position; \
                    the first event 'mariadb-bin.000003' at 100000";
        assert_eq!(refusal(Some(true), Some(false), past), NotAnEvent);
        assert_eq!(refusal(Some(true), None, past), NotAnEvent);
        // at an event: a real event too large for the setting
        assert_eq!(refusal(Some(true), Some(true), too_big), Setting);
        let replaced =
            "A slave with the same server_uuid/server_id as this slave has connected to the master";
        assert_eq!(refusal(Some(true), Some(true), replaced), Transient);
        assert_eq!(
            refusal(None, None, "the master is shutting down"),
            Transient
        );
    }

    #[test]
    fn rollback_and_xa_end_their_groups() {
        assert_eq!(group_part("BEGIN"), GroupPart::Begin);
        assert_eq!(group_part("XA START X'7831',X'',1"), GroupPart::Begin);
        assert_eq!(group_part("COMMIT"), GroupPart::End);
        assert_eq!(group_part("ROLLBACK"), GroupPart::End);
        assert_eq!(group_part("rollback;"), GroupPart::End);
        assert_eq!(group_part("XA COMMIT X'7831',X'',1"), GroupPart::End);
        assert_eq!(group_part("XA ROLLBACK X'7832',X'',1"), GroupPart::End);
        assert_eq!(group_part("XA END X'7831',X'',1"), GroupPart::Statement);
        assert_eq!(group_part("ROLLBACK TO SAVEPOINT a"), GroupPart::Statement);
        assert_eq!(group_part("ALTER TABLE t ADD c int"), GroupPart::Statement);
    }

    #[test]
    fn bytes_behind_count_the_rest_of_the_file_and_every_later_one() {
        let files = vec![
            ("b.000001".to_string(), 1000),
            ("b.000002".to_string(), 500),
        ];
        let at = |file: &str, pos| BinlogPosition {
            file: file.into(),
            pos,
            gtid: None,
        };
        assert_eq!(
            binlog_bytes_behind(&files, &at("b.000001", 400)),
            Some(1100)
        );
        assert_eq!(binlog_bytes_behind(&files, &at("b.000002", 500)), Some(0));
        assert_eq!(binlog_bytes_behind(&files, &at("b.000000", 4)), None);
    }

    #[test]
    fn truncate_statements_name_their_table() {
        assert_eq!(
            truncated_table("TRUNCATE TABLE `shop`.`orders`", "x"),
            Some(("shop".into(), "orders".into()))
        );
        assert_eq!(
            truncated_table("truncate orders", "shop"),
            Some(("shop".into(), "orders".into()))
        );
        assert_eq!(
            truncated_table("truncate table shop.orders;", "x"),
            Some(("shop".into(), "orders".into()))
        );
        assert_eq!(truncated_table("ALTER TABLE t ADD c int", "x"), None);
    }
}
