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
//! AND k2 > ?)`) so the key's index serves it, the last key bound in its
//! column's own order ([`KeyOrder`]). After each chunk is
//! acknowledged by the broker its last key is recorded
//! ([`crate::snapshot_progress`]), so a crash republishes at most one chunk
//! per table.

use super::position::{change_position, file_number, BinlogPosition};
use super::schema::{quote, Kind, MyColumn};
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
        let key_order: Vec<KeyOrder> = key_idx
            .iter()
            .map(|&i| KeyOrder::of(&table.columns[i]))
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
        let position = change_position(self.epoch, file_number(&at.file)?, at.pos, 0);
        let text = match self.epoch {
            0 => format!("snapshot at {at}"),
            e => format!("snapshot at {at}, epoch {e}"),
        };
        let chunk_size = self.cfg.snapshot_chunk_size;
        let started = Instant::now();
        let rows_before = entry.rows;
        // The server's estimate, for the snapshot's progress (not exact for InnoDB).
        let estimate: Option<u64> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (table.database.as_str(), table.name.as_str()),
            )
            .await
            .ok()
            .flatten();
        self.status.running();
        self.status
            .snapshot_table(&name, entry.rows, estimate, false);
        loop {
            let after = entry.segments[0].after.clone();
            let (filter, params) = match &after {
                None => (String::new(), Vec::new()),
                Some(last) => after_key(&table.key, &key_order, last).map_err(|why| {
                    Error::internal(format!(
                        "snapshot: cannot resume `{name}` after key {last:?}: {why}"
                    ))
                })?,
            };
            let sql = format!("{select}{filter} ORDER BY {order} LIMIT {chunk_size}");
            let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await.map_err(|e| {
                mysql_error(e, format!("snapshot: cannot read a chunk of `{name}`"))
            })?;
            let n = rows.len();
            let Some(last) = rows.last() else { break };
            let last_key: Vec<String> = key_idx
                .iter()
                .zip(&key_order)
                .map(|(&i, o)| o.text(last.as_ref(i).unwrap_or(&My::NULL)))
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
            self.status.snapshot_table(&name, entry.rows, None, false);
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
        self.status.snapshot_table(&name, entry.rows, None, true);
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
/// after `last` in key order, each part bound as its column's type
/// ([`KeyOrder`]).
fn after_key(
    key: &[String],
    order: &[KeyOrder],
    last: &[String],
) -> std::result::Result<(String, Vec<My>), String> {
    let bound: Vec<(String, My)> = order
        .iter()
        .zip(last)
        .map(|(o, v)| o.bind(v))
        .collect::<std::result::Result<_, _>>()?;
    let mut ors = Vec::new();
    let mut params = Vec::new();
    for i in 0..key.len() {
        let mut ands = Vec::new();
        for j in 0..i {
            ands.push(format!("{} = {}", quote(&key[j]), bound[j].0));
            params.push(bound[j].1.clone());
        }
        ands.push(format!("{} > {}", quote(&key[i]), bound[i].0));
        params.push(bound[i].1.clone());
        ors.push(format!("({})", ands.join(" AND ")));
    }
    Ok((format!(" WHERE {}", ors.join(" OR ")), params))
}

/// How a key column sorts, so that a chunk's last key is bound again in
/// that order. A value bound as text would be compared as text (an enum's
/// label, a set's labels), or as a double (a decimal, a bigint past 2^53,
/// a float, which a double's text does not equal), while `ORDER BY` sorts
/// by the column's own order: chunks would skip or repeat rows.
///
/// The recorded key stays text ([`crate::snapshot_progress`]), in the forms
/// recorded before (numbers, labels, hex of binary, `YYYY-MM-DD hh:mm:ss.ffffff`),
/// so progress recorded earlier resumes.
#[derive(Debug, Clone, PartialEq)]
enum KeyOrder {
    /// Integers, `year`: bound as integers.
    Integer,
    /// `decimal(p,s)`: `CAST(? AS DECIMAL(p,s))`, compared exactly.
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// `float`: bound as a float (a double of its text is another number).
    Float,
    Double,
    /// `enum`: sorts by its label's index (from 1; 0 the empty error
    /// value): bound as the index.
    Enum(Vec<String>),
    /// `set`: sorts by its bit mask: bound as the mask.
    Set(Vec<String>),
    /// `bit(n)`: sorts as a number; recorded in hex.
    Bit,
    /// `binary`, `varbinary`, blobs: bytewise; recorded in hex.
    Binary,
    /// Text: compared in the column's collation, as it sorts.
    Text,
    /// `date`, `datetime`, `timestamp` (the session is at UTC).
    DateTime,
    Time,
}

impl KeyOrder {
    fn of(c: &MyColumn) -> KeyOrder {
        match (&c.ty, &c.kind) {
            (_, Kind::Enum(labels)) => KeyOrder::Enum(labels.clone()),
            (_, Kind::Set(labels)) => KeyOrder::Set(labels.clone()),
            (ColumnType::Int | ColumnType::Long, _) => KeyOrder::Integer,
            // bigint unsigned is a decimal(20,0) in Avro, an integer here
            (ColumnType::Decimal { .. }, _) if c.sql_type.starts_with("bigint") => {
                KeyOrder::Integer
            }
            (&ColumnType::Decimal { precision, scale }, _) => {
                KeyOrder::Decimal { precision, scale }
            }
            (ColumnType::Float, _) => KeyOrder::Float,
            (ColumnType::Double, _) => KeyOrder::Double,
            (ColumnType::Bool | ColumnType::Bytes, _) if c.sql_type.starts_with("bit") => {
                KeyOrder::Bit
            }
            (ColumnType::Bytes, _) => KeyOrder::Binary,
            (ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz, _) => {
                KeyOrder::DateTime
            }
            (ColumnType::Time, _) => KeyOrder::Time,
            _ => KeyOrder::Text,
        }
    }

    /// A key value (as the snapshot reads it) as recorded text.
    fn text(&self, v: &My) -> String {
        match (self, v) {
            (KeyOrder::Bit | KeyOrder::Binary, My::Bytes(b)) => hex::encode(b),
            (_, My::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            (_, My::Int(i)) => i.to_string(),
            (_, My::UInt(u)) => u.to_string(),
            // Rust writes the shortest text that reads back as the same number
            (_, My::Float(f)) => f.to_string(),
            (_, My::Double(d)) => d.to_string(),
            (_, My::Date(y, m, d, h, mi, s, us)) => {
                format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
            }
            (_, My::Time(neg, d, h, m, s, us)) => format!(
                "{}{}:{m:02}:{s:02}.{us:06}",
                if *neg { "-" } else { "" },
                d * 24 + u32::from(*h)
            ),
            (_, My::NULL) => String::new(),
        }
    }

    /// Recorded text -> the SQL for one bound value and the value.
    fn bind(&self, text: &str) -> std::result::Result<(String, My), String> {
        let bad = |what: &str| format!("`{text}` is not {what}");
        let plain = |v: My| Ok(("?".to_string(), v));
        match self {
            KeyOrder::Integer => match text.parse::<i64>() {
                Ok(i) => plain(My::Int(i)),
                Err(_) => plain(My::UInt(text.parse().map_err(|_| bad("an integer"))?)),
            },
            KeyOrder::Decimal { precision, scale } => Ok((
                format!("CAST(? AS DECIMAL({precision},{scale}))"),
                My::from(text),
            )),
            KeyOrder::Float => plain(My::Float(text.parse().map_err(|_| bad("a float"))?)),
            KeyOrder::Double => plain(My::Double(text.parse().map_err(|_| bad("a double"))?)),
            KeyOrder::Enum(labels) => {
                let index = match text {
                    "" => 0,
                    _ => {
                        1 + labels
                            .iter()
                            .position(|l| l == text)
                            .ok_or_else(|| bad("a label of the enum"))?
                    }
                };
                plain(My::UInt(index as u64))
            }
            KeyOrder::Set(labels) => {
                let mut mask = 0u64;
                for label in text.split(',').filter(|l| !l.is_empty()) {
                    let i = labels
                        .iter()
                        .position(|l| l == label)
                        .ok_or_else(|| bad("labels of the set"))?;
                    mask |= 1 << i;
                }
                plain(My::UInt(mask))
            }
            KeyOrder::Bit => {
                // a bit(1) key was recorded as its one byte before
                let bytes = hex::decode(text).unwrap_or_else(|_| text.bytes().collect());
                if bytes.len() > 8 {
                    return Err(bad("a bit value"));
                }
                plain(My::UInt(
                    bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)),
                ))
            }
            KeyOrder::Binary => Ok(("UNHEX(?)".to_string(), My::from(text))),
            KeyOrder::Text => plain(My::from(text)),
            KeyOrder::DateTime => plain(date_time(text).ok_or_else(|| bad("a date and time"))?),
            KeyOrder::Time => plain(time(text).ok_or_else(|| bad("a time"))?),
        }
    }
}

/// `YYYY-MM-DD hh:mm:ss.ffffff` -> a date-time value.
fn date_time(text: &str) -> Option<My> {
    let (date, time) = text.split_once(' ')?;
    let mut d = date.splitn(3, '-').map(str::parse::<u32>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (h, mi, s, us) = clock(time)?;
    Some(My::Date(
        u16::try_from(y).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(day).ok()?,
        u8::try_from(h).ok()?,
        mi,
        s,
        us,
    ))
}

/// `[-]h:mm:ss.ffffff` (hours past 24) -> a time value.
fn time(text: &str) -> Option<My> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (h, m, s, us) = clock(rest)?;
    Some(My::Time(neg, h / 24, u8::try_from(h % 24).ok()?, m, s, us))
}

/// `h:mm:ss[.ffffff]` -> its parts (hours unbounded).
fn clock(text: &str) -> Option<(u32, u8, u8, u32)> {
    let (hms, frac) = text.split_once('.').unwrap_or((text, "0"));
    let mut p = hms.splitn(3, ':').map(str::parse::<u32>);
    let (h, m, s) = (p.next()?.ok()?, p.next()?.ok()?, p.next()?.ok()?);
    let us: u32 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    Some((h, u8::try_from(m).ok()?, u8::try_from(s).ok()?, us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(ty: ColumnType, kind: Kind, sql_type: &str) -> MyColumn {
        MyColumn {
            name: "k".into(),
            ty,
            kind,
            sql_type: sql_type.into(),
            latin1: false,
        }
    }

    #[test]
    fn the_next_chunk_starts_after_the_last_key_in_key_order() {
        let key = vec!["a".to_string(), "b".to_string()];
        let order = [KeyOrder::Integer, KeyOrder::Binary];
        let (sql, params) = after_key(&key, &order, &["1".into(), "ff".into()]).unwrap();
        assert_eq!(sql, " WHERE (`a` > ?) OR (`a` = ? AND `b` > UNHEX(?))");
        assert_eq!(params, vec![My::Int(1), My::Int(1), My::from("ff")]);
        assert_eq!(KeyOrder::Binary.text(&My::Bytes(vec![0xff])), "ff");
        assert_eq!(
            KeyOrder::DateTime.text(&My::Date(2024, 1, 2, 3, 4, 5, 6)),
            "2024-01-02 03:04:05.000006"
        );
    }

    #[test]
    fn key_parts_are_bound_as_their_column_sorts_not_as_text() {
        let labels = || vec!["zeta".to_string(), "alpha".into(), "mid".into()];
        let bind = |c: MyColumn, v: My| {
            let o = KeyOrder::of(&c);
            o.bind(&o.text(&v)).unwrap()
        };
        // an enum sorts by its labels' order: bound as the index
        let e = column(
            ColumnType::Text,
            Kind::Enum(labels()),
            "enum('zeta','alpha','mid')",
        );
        assert_eq!(bind(e, My::from("alpha")), ("?".into(), My::UInt(2)));
        let s = column(
            ColumnType::Text,
            Kind::Set(labels()),
            "set('zeta','alpha','mid')",
        );
        assert_eq!(bind(s, My::from("zeta,mid")), ("?".into(), My::UInt(0b101)));
        let b = column(ColumnType::Bytes, Kind::Plain, "bit(12)");
        assert_eq!(
            bind(b, My::Bytes(vec![0x0a, 0xbc])),
            ("?".into(), My::UInt(0xabc))
        );
        let b1 = column(ColumnType::Bool, Kind::Plain, "bit(1)");
        assert_eq!(
            bind(b1.clone(), My::Bytes(vec![1])),
            ("?".into(), My::UInt(1))
        );
        // (recorded as its byte before)
        assert_eq!(KeyOrder::of(&b1).bind("\u{1}").unwrap().1, My::UInt(1));
        // a float as a float: 0.1f32 is not the double 0.1
        let f = column(ColumnType::Float, Kind::Plain, "float");
        assert_eq!(bind(f, My::Float(0.1)), ("?".into(), My::Float(0.1)));
        let d = column(ColumnType::Double, Kind::Plain, "double");
        assert_eq!(
            bind(d, My::Double(1e-300)),
            ("?".into(), My::Double(1e-300))
        );
        // a decimal exactly, however long
        let long = "12345678901234567890123456789012345.000000000000000000000000000001";
        let dec = column(
            ColumnType::Decimal {
                precision: 65,
                scale: 30,
            },
            Kind::Plain,
            "decimal(65,30)",
        );
        assert_eq!(
            bind(dec, My::from(long)),
            ("CAST(? AS DECIMAL(65,30))".into(), My::from(long))
        );
        // integers past 2^53 and unsigned bigints as integers
        let big = column(
            ColumnType::Decimal {
                precision: 20,
                scale: 0,
            },
            Kind::Plain,
            "bigint(20) unsigned",
        );
        assert_eq!(
            bind(big, My::UInt(u64::MAX)),
            ("?".into(), My::UInt(u64::MAX))
        );
        let l = column(ColumnType::Long, Kind::Plain, "bigint(20)");
        assert_eq!(
            bind(l, My::Int(9_007_199_254_740_993)),
            ("?".into(), My::Int(9_007_199_254_740_993))
        );
        let dt = column(ColumnType::Timestamp, Kind::Plain, "datetime(6)");
        let v = My::Date(2024, 1, 2, 3, 4, 5, 6);
        assert_eq!(bind(dt, v.clone()), ("?".into(), v));
        let t = column(ColumnType::Time, Kind::Plain, "time(6)");
        let v = My::Time(true, 1, 2, 3, 4, 5);
        assert_eq!(bind(t, v.clone()), ("?".into(), v));
        // a label no longer in the enum is an error, not a wrong bound
        let e = column(ColumnType::Text, Kind::Enum(labels()), "enum");
        assert!(KeyOrder::of(&e).bind("gone").is_err());
    }
}
