//! The initial snapshot: each table read in key chunks inside one
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` (InnoDB's MVCC, no global
//! read lock, no table lock), whose binlog position MariaDB reports
//! (`binlog_snapshot_file`, `binlog_snapshot_position`): the snapshot holds
//! exactly the transactions written to the binlog before that position.
//!
//! # Why it is consistent, also when resumed after a crash
//! A row read in a snapshot at binlog position `C` gets position `(C, 0)`
//! ([`super::position::change_position`]).
//!
//! The first snapshot's `C` is stored as where streaming starts before any
//! row is read, so streaming starts exactly where the snapshot ends. A
//! snapshot resumed after a crash (or of a table added to the file later,
//! or asked for again) cannot reopen that transaction: it opens a new one at
//! `C' >= C`, while streaming still starts at the stored position `<= C'`
//! (it does not move during a snapshot). For every key:
//! - changes written before `C'` are in the chunk read at `C'`; their
//!   streamed records have positions `< (C', 0)`, so the sink drops them
//!   whichever arrives first;
//! - changes written at or after `C'` are streamed with positions
//!   `> (C', 0)` and win over the snapshot row;
//! - a row read earlier (a chunk recorded before the crash) and deleted
//!   before `C'` is not read again, but its delete is streamed (it was
//!   written after the stored position) with a greater position.
//!
//! So the hand-over has no gap, and overlap is harmless by position.
//!
//! # Chunks
//! `SELECT <columns> FROM t WHERE (key) > (last key) ORDER BY key LIMIT
//! snapshot_chunk_size`, the row comparison spelled out (`k1 > ? OR (k1 = ?
//! AND k2 > ?)`) so the key's index serves it. After each chunk is
//! acknowledged by the broker its last key is recorded
//! ([`crate::snapshot_progress`]), so a crash republishes at most one chunk
//! per table.

use super::position::{change_position, file_number, BinlogPosition};
use super::schema::quote;
use super::value::snapshot_row;
use super::MysqlCdcSource;
use crate::key_of;
use crate::postgres_cdc::SnapshotMode;
use crate::snapshot_progress::{Segment, TableProgress};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as My};
use std::collections::HashMap;
use std::time::Instant;
use syncline_core::error::mysql::mysql_error;
use syncline_core::runtime::Shutdown;
use syncline_core::{ChangeEvent, ColumnType, Error, Op, Result};

impl MysqlCdcSource {
    /// Snapshot every table that needs it ([`MysqlCdcSource::pending`]);
    /// returns where streaming starts (`start`, or, on a first start, the
    /// snapshot's own position, stored before any row is read). `None`:
    /// shutdown came first.
    pub(super) async fn snapshot(
        &mut self,
        start: Option<BinlogPosition>,
        shutdown: &Shutdown,
    ) -> Result<Option<BinlogPosition>> {
        let progress = self.progress.restore().await?;
        let pending = self.pending(&progress);
        if pending.is_empty() {
            return Ok(Some(match start {
                Some(s) => s,
                None => {
                    let end = self.binlog_end().await?;
                    self.store_position(&end).await?;
                    tracing::info!(source = %self.name, position = %end, "mysql_cdc: snapshot: never; streaming from the binlog's end");
                    end
                }
            }));
        }
        let mut conn = self.connect().await?;
        let at = open_snapshot(&mut conn, &self.display).await?;
        let start = match start {
            Some(s) => s,
            None => {
                self.store_position(&at).await?;
                at.clone()
            }
        };
        tracing::info!(source = %self.name, snapshot_at = %at, stream_from = %start,
            tables = ?pending.iter().map(|&t| self.tables[t].full_name()).collect::<Vec<_>>(),
            "mysql_cdc: snapshot started");
        for t in pending {
            let entry = progress
                .get(&self.tables[t].full_name())
                .cloned()
                .unwrap_or_default();
            if !self
                .snapshot_table(&mut conn, t, &at, entry, shutdown)
                .await?
            {
                return Ok(None);
            }
        }
        let _ = conn.query_drop("COMMIT").await;
        let _ = conn.disconnect().await;
        tracing::info!(source = %self.name, snapshot_at = %at, "mysql_cdc: snapshot finished");
        Ok(Some(start))
    }

    /// The tables whose snapshot is to be read: an entry that is not done
    /// (a snapshot cut short, or asked for again), or none yet with
    /// `snapshot: initial` (a first start, or a table added to the file).
    fn pending(&self, progress: &HashMap<String, TableProgress>) -> Vec<usize> {
        (0..self.tables.len())
            .filter(|&t| match progress.get(&self.tables[t].full_name()) {
                Some(p) => !p.done,
                None => self.cfg.snapshot == SnapshotMode::Initial,
            })
            .collect()
    }

    /// The binlog's current end (`SHOW MASTER STATUS`; MySQL 8.4 calls it
    /// `SHOW BINARY LOG STATUS`).
    async fn binlog_end(&self) -> Result<BinlogPosition> {
        let mut conn = self.connect().await?;
        let mut row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
            Ok(r) => r,
            Err(_) => conn
                .query_first("SHOW BINARY LOG STATUS")
                .await
                .map_err(|e| {
                    mysql_error(e, "cannot read the binlog's position (SHOW MASTER STATUS)")
                })?,
        };
        let _ = conn.disconnect().await;
        let r = row.as_mut().ok_or_else(|| {
            Error::config(format!(
                "{} writes no binlog (start it with --log-bin)",
                self.display
            ))
        })?;
        let file: String = r.take(0).unwrap_or_default();
        let pos: u64 = r.take(1).unwrap_or_default();
        Ok(BinlogPosition {
            file,
            pos,
            gtid: None,
        })
    }

    /// Read table `t` from where `entry` left it, chunk by chunk, in the
    /// open snapshot at `at`. `false`: shutdown came first.
    async fn snapshot_table(
        &self,
        conn: &mut Conn,
        t: usize,
        at: &BinlogPosition,
        mut entry: TableProgress,
        shutdown: &Shutdown,
    ) -> Result<bool> {
        let table = &self.tables[t];
        let name = table.full_name();
        if entry.segments.is_empty() {
            entry.segments = vec![Segment::default()];
        }
        let key_idx: Vec<usize> = table
            .key
            .iter()
            .map(|k| table.column(k).expect("key checked"))
            .collect();
        let bytes_key: Vec<bool> = key_idx
            .iter()
            .map(|&i| table.columns[i].ty == ColumnType::Bytes)
            .collect();
        let select = format!(
            "SELECT {} FROM {}",
            table
                .columns
                .iter()
                .map(|c| quote(&c.name))
                .collect::<Vec<_>>()
                .join(", "),
            table.quoted()
        );
        let order = table
            .key
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let position = change_position(file_number(&at.file)?, at.pos, 0);
        let text = format!("snapshot at {at}");
        let chunk_size = self.cfg.snapshot_chunk_size;
        let started = Instant::now();
        let rows_before = entry.rows;
        loop {
            let after = entry.segments[0].after.clone();
            let (filter, params) = match &after {
                None => (String::new(), Vec::new()),
                Some(last) => after_key(&table.key, &bytes_key, last),
            };
            let sql = format!("{select}{filter} ORDER BY {order} LIMIT {chunk_size}");
            let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await.map_err(|e| {
                mysql_error(e, format!("snapshot: cannot read a chunk of `{name}`"))
            })?;
            let n = rows.len();
            let Some(last) = rows.last() else { break };
            let last_key: Vec<String> = key_idx
                .iter()
                .zip(&bytes_key)
                .map(|(&i, &b)| key_text(last.as_ref(i).unwrap_or(&My::NULL), b))
                .collect();
            let now_us = chrono::Utc::now().timestamp_micros();
            let mut deliveries = Vec::with_capacity(n);
            for row in rows {
                match snapshot_row(table, row) {
                    Ok(values) => {
                        let ev = ChangeEvent {
                            op: Op::Read,
                            key: key_of(&table.key, &values),
                            before: None,
                            after: Some(values),
                            source: self.source_info(t, position.clone(), text.clone(), now_us),
                            unchanged: Vec::new(),
                        };
                        deliveries.push(self.enqueue(t, &ev).await?);
                    }
                    Err(e) if e.kind() == syncline_core::error::ErrorKind::Data => {
                        deliveries.push(self.dead_letter(t, Op::Read, &text, &e)?);
                    }
                    Err(e) => return Err(e),
                }
            }
            if self
                .publisher
                .acknowledged(shutdown, deliveries)
                .await
                .map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!("publishing the snapshot of `{name}` failed"),
                    )
                    .with_source(e)
                })?
                .is_none()
            {
                return Ok(false);
            }
            entry.rows += n as u64;
            entry.segments[0].after = Some(last_key);
            if n < chunk_size {
                break;
            }
            self.progress
                .store(self.publisher.producer(), &name, &entry)
                .await?;
        }
        entry.done = true;
        entry.segments[0].done = true;
        self.progress
            .store(self.publisher.producer(), &name, &entry)
            .await?;
        let rows = entry.rows - rows_before;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(source = %self.name, table = %name, rows, total_rows = entry.rows, seconds = secs,
            rows_per_second = rows as f64 / secs.max(1e-9), "mysql_cdc: snapshot of the table done");
        Ok(true)
    }
}

/// Open `START TRANSACTION WITH CONSISTENT SNAPSHOT` on `conn` and read
/// the binlog position it is consistent with (and that position's GTID).
///
/// MariaDB reports that position for the open transaction
/// (`binlog_snapshot_file` / `_position`): no lock at all. MySQL 8 has no
/// such status; there the position is read under `FLUSH TABLES WITH READ
/// LOCK`, held only while the transaction starts and the position is read
/// (milliseconds; commits wait meanwhile), as Debezium's MySQL connector
/// does by default. That path needs the `RELOAD` privilege and is written
/// from MySQL's documentation: the tests run MariaDB.
async fn open_snapshot(conn: &mut Conn, display: &str) -> Result<BinlogPosition> {
    for set in [
        "SET SESSION time_zone = '+00:00'",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        conn.query_drop(set)
            .await
            .map_err(|e| mysql_error(e, "snapshot: cannot set up the session"))?;
    }
    let start = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";
    conn.query_drop(start)
        .await
        .map_err(|e| mysql_error(e, "snapshot: cannot start a consistent snapshot"))?;
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| mysql_error(e, "snapshot: cannot read the snapshot's binlog position"))?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (file, pos) = match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(file), Some(pos)) => {
            let pos: u64 = pos.parse().map_err(|_| {
                Error::internal(format!("binlog_snapshot_position `{pos}` is not a number"))
            })?;
            (file, pos)
        }
        _ => {
            // MySQL: the position under a brief global read lock
            conn.query_drop("ROLLBACK").await.ok();
            conn.query_drop("FLUSH TABLES WITH READ LOCK").await.map_err(|e| {
                mysql_error(
                    e,
                    format!("snapshot: {display} reports no binlog_snapshot_file (not MariaDB), and the brief global read lock MySQL needs instead was refused (grant RELOAD, or use `snapshot: never`)"),
                )
            })?;
            let locked = async {
                conn.query_drop(start).await?;
                let row: Option<mysql_async::Row> =
                    match conn.query_first("SHOW MASTER STATUS").await {
                        Ok(r) => r,
                        Err(_) => conn.query_first("SHOW BINARY LOG STATUS").await?,
                    };
                Ok::<_, mysql_async::Error>(row)
            }
            .await;
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(|e| mysql_error(e, "snapshot: cannot release the global read lock"))?;
            let mut row = locked
                .map_err(|e| mysql_error(e, "snapshot: cannot read the binlog position"))?
                .ok_or_else(|| {
                    Error::config(format!(
                        "{display} writes no binlog (start it with --log-bin)"
                    ))
                })?;
            let file: String = row.take(0).unwrap_or_default();
            let pos: u64 = row.take(1).unwrap_or_default();
            tracing::info!(position = %format!("{file}:{pos}"), "mysql_cdc: snapshot position read under a brief global read lock (MySQL)");
            (file, pos)
        }
    };
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
        .await
        .unwrap_or(None);
    Ok(BinlogPosition {
        file,
        pos,
        gtid: gtid.flatten().filter(|g| !g.is_empty()),
    })
}

/// ` WHERE k1 > ? OR (k1 = ? AND k2 > ?) ...` and its parameters: the keys
/// after `last` in key order. Binary key columns travel in hex.
fn after_key(key: &[String], bytes: &[bool], last: &[String]) -> (String, Vec<My>) {
    let param = |i: usize| if bytes[i] { "UNHEX(?)" } else { "?" };
    let mut ors = Vec::new();
    let mut params = Vec::new();
    for i in 0..key.len() {
        let mut ands = Vec::new();
        for j in 0..i {
            ands.push(format!("{} = {}", quote(&key[j]), param(j)));
            params.push(My::from(last[j].as_str()));
        }
        ands.push(format!("{} > {}", quote(&key[i]), param(i)));
        params.push(My::from(last[i].as_str()));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    (format!(" WHERE {}", ors.join(" OR ")), params)
}

/// A key value as text the server compares back to the column: numbers and
/// dates in their SQL form, binary in hex.
fn key_text(v: &My, binary: bool) -> String {
    match v {
        My::Bytes(b) if binary => hex::encode(b),
        My::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        My::Int(i) => i.to_string(),
        My::UInt(u) => u.to_string(),
        My::Float(f) => f.to_string(),
        My::Double(d) => d.to_string(),
        My::Date(y, m, d, h, mi, s, us) => {
            format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }
        My::Time(neg, d, h, m, s, us) => format!(
            "{}{}:{m:02}:{s:02}.{us:06}",
            if *neg { "-" } else { "" },
            d * 24 + u32::from(*h)
        ),
        My::NULL => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_chunk_starts_after_the_last_key_in_key_order() {
        let key = vec!["a".to_string(), "b".to_string()];
        let (sql, params) = after_key(&key, &[false, true], &["1".into(), "ff".into()]);
        assert_eq!(sql, " WHERE (`a` > ?) OR (`a` = ? AND `b` > UNHEX(?))");
        assert_eq!(params.len(), 3);
        assert_eq!(key_text(&My::Bytes(vec![0xff]), true), "ff");
        assert_eq!(
            key_text(&My::Date(2024, 1, 2, 3, 4, 5, 6), false),
            "2024-01-02 03:04:05.000006"
        );
    }
}
