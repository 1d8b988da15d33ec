//! The initial snapshot: each table read in primary-key chunks inside a
//! `REPEATABLE READ` transaction that imports a snapshot exported by
//! `CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')`. Plain `SELECT`s: no
//! lock beyond the `ACCESS SHARE` every reader takes.
//!
//! # Why it is consistent, also when resumed after a crash
//! A snapshot exported with a slot at consistent point `C` contains exactly
//! the transactions that committed before `C`; the slot streams exactly the
//! ones that commit at or after `C`. A row read in it gets position `(C, 0)`.
//!
//! The first snapshot uses the main slot's own export, so `C` is the point
//! where streaming starts. A snapshot resumed after a crash (or of a table
//! added later) cannot import that export any more: it uses a new
//! *temporary* slot's export, at a later point `C' >= C`, while streaming
//! still starts at the main slot's confirmed position `<= C` (the main slot
//! does not advance before every snapshot is done). For every key:
//! - changes committed before `C'` are in the chunk read at `C'`; their
//!   streamed records have positions `< (C', 0)`, so the sink drops them
//!   whichever arrives first;
//! - changes committed at or after `C'` are streamed with positions
//!   `> (C', 0)` and win over the snapshot row;
//! - a row read earlier (a chunk recorded before the crash, at `C`) and
//!   deleted before `C'` is not read again, but its delete is streamed
//!   (it committed after `C`, where streaming starts) with a greater position.
//!
//! So the hand-over has no gap, and overlap is harmless by position.
//!
//! The same argument covers a re-snapshot asked for while the source runs
//! (see [`super::stream`]): streaming stops at a position `S` after the
//! request, the snapshot is read at `C' >= S`, and streaming resumes at `S`.
//!
//! # Chunks, several at once
//! Before its first chunk, a table is split into key ranges
//! ([`plan_segments`]): boundaries are quantiles of a `TABLESAMPLE SYSTEM`
//! sample of its keys, sorted by the database, so the ranges hold similar
//! numbers of rows. The plan is stored with the progress, so a resumed
//! snapshot reads the same ranges. `snapshot_parallelism` workers, each on
//! its own connection importing the same exported snapshot, take ranges
//! (of every pending table) from one queue and read each in chunks:
//! `WHERE (key) > (last key) AND (key) <= (range end) ORDER BY key LIMIT
//! chunk_size`. After each chunk is acknowledged by the broker its last key
//! is recorded ([`crate::snapshot_progress`]). A crash republishes at most the
//! unrecorded chunk of each range, with the same positions if read in the
//! same snapshot, or greater ones from a later one (then they are the newer
//! truth, by the argument above).

use super::decode::text_value;
use super::slot::{self, Exported};
use super::{await_deliveries, PostgresCdcSource};
use crate::key_of;
use crate::snapshot_progress::{Segment, TableProgress};
use crate::sql_poll::plan::quote_ident;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use syncline_core::runtime::Shutdown;
use syncline_core::{ChangeEvent, Error, Op, Position, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// The position of a row read in a snapshot consistent at `lsn`.
pub fn snapshot_position(lsn: u64) -> Position {
    Position::builder().u64(lsn).u64(0).build()
}

/// Pages sampled to plan a table's key ranges.
const SAMPLE_PAGES: f64 = 256.0;

/// One table being snapshotted in this run.
struct TableRun {
    t: usize,
    name: String,
    estimate: i64,
    labels: Vec<(&'static str, String)>,
    /// Written after each acknowledged chunk; the lock keeps the stored
    /// entries of one table in order.
    progress: tokio::sync::Mutex<TableProgress>,
    started: Instant,
    rows_before: u64,
}

/// The SQL that reads one table, built once.
struct Reader {
    /// `SELECT <columns as text> FROM <table> AS s`
    select: String,
    /// `(s.k1, s.k2)`
    key_list: String,
    /// `s.k1::text, s.k2::text`
    key_text: String,
    /// The key columns' positions among the selected columns.
    key_idx: Vec<usize>,
    /// The key columns' SQL types, for the casts of bound parameters.
    key_types: Vec<String>,
}

/// A column's value as the text pgoutput sends for it (its type's output
/// function): `s.c::text`, except for a `char(n)`, whose cast to text drops
/// the trailing blanks the stream keeps, so a row's value would depend on
/// the phase that read it.
fn text_of(c: &syncline_core::Column) -> String {
    let col = format!("s.{}", quote_ident(&c.name));
    if c.ty == syncline_core::ColumnType::Text && crate::sql_poll::postgres::is_bpchar(&c.sql_type)
    {
        format!("textin(bpcharout({col}))")
    } else {
        format!("{col}::text")
    }
}

impl Reader {
    fn new(source: &PostgresCdcSource, t: usize) -> Reader {
        let table = &source.tables[t];
        let r = &table.resolved;
        let columns = &table.schema.columns;
        // Output columns get positional aliases: an output column named like
        // a key column would make `ORDER BY key` sort by its text form.
        let select = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} AS c{i}", text_of(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let key_idx: Vec<usize> = r
            .key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| &c.name == k)
                    .expect("key checked")
            })
            .collect();
        let keys = |suffix: &str| {
            r.key
                .iter()
                .map(|k| format!("s.{}{suffix}", quote_ident(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key_list = keys("");
        Reader {
            key_text: keys("::text"),
            select: format!("SELECT {select} FROM {} AS s", r.quoted()),
            key_list: format!("({key_list})"),
            key_types: key_idx
                .iter()
                .map(|&c| columns[c].sql_type.clone())
                .collect(),
            key_idx,
        }
    }

    /// `($n::text::type, ...)` for the key bound starting at parameter `first`.
    fn bound(&self, first: usize) -> String {
        let casts = self
            .key_types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::text::{ty}", first + i))
            .collect::<Vec<_>>()
            .join(", ");
        format!("({casts})")
    }

    /// The next chunk of a range: keys above `lower`, up to `upper`.
    fn chunk_sql(&self, lower: bool, upper: bool, limit: usize) -> String {
        let n = self.key_types.len();
        let mut conds = Vec::new();
        if lower {
            conds.push(format!("{} > {}", self.key_list, self.bound(1)));
        }
        if upper {
            let first = if lower { n + 1 } else { 1 };
            conds.push(format!("{} <= {}", self.key_list, self.bound(first)));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        format!(
            "{}{filter} ORDER BY {} LIMIT {limit}",
            self.select, self.key_list
        )
    }
}

/// Open a connection reading in `snapshot` (an exported snapshot).
async fn snapshot_connection(source: &PostgresCdcSource, snapshot: &str) -> Result<Client> {
    let client = slot::connect(&source.url, &source.name).await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            snapshot.replace('\'', "")
        ))
        .await
        .map_err(|e| slot::pg_error(e, "snapshot: cannot import the exported snapshot"))?;
    Ok(client)
}

/// The table's row estimate (`pg_class.reltuples`, 0 when never analyzed)
/// and its size in pages.
async fn table_size(client: &Client, r: &slot::Resolved) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT greatest(reltuples, 0)::int8, \
                    pg_relation_size(oid) / current_setting('block_size')::int8 \
             FROM pg_class WHERE oid = $1",
            &[&r.oid],
        )
        .await
        .map_err(|e| {
            slot::pg_error(e, {
                format!("snapshot of `{}`: cannot estimate the row count", r.name())
            })
        })?;
    Ok((row.get(0), row.get(1)))
}

/// The key ranges `n` workers should read `t` in, and an estimate of its
/// rows. Boundaries are quantiles of a `TABLESAMPLE SYSTEM` sample of the
/// keys (about [`SAMPLE_PAGES`] pages), ordered by the database; a table of
/// at most one chunk, or one that samples too few keys, is one range.
async fn plan_segments(
    client: &Client,
    source: &PostgresCdcSource,
    t: usize,
    reader: &Reader,
) -> Result<(Vec<Segment>, i64)> {
    let r = &source.tables[t].resolved;
    let (reltuples, pages) = table_size(client, r).await?;
    let one = vec![Segment::default()];
    let (chunk, workers) = (
        source.cfg.snapshot_chunk_size as i64,
        source.cfg.snapshot_parallelism as i64,
    );
    if pages == 0 || workers == 1 {
        return Ok((one, reltuples));
    }
    let percent = (100.0 * SAMPLE_PAGES / pages as f64).min(100.0);
    let sample = client
        .query(
            &format!(
                "SELECT {} FROM {} AS s TABLESAMPLE SYSTEM ({percent:.6}) ORDER BY {}",
                reader.key_text,
                r.quoted(),
                reader.key_list
            ),
            &[],
        )
        .await
        .map_err(|e| {
            slot::pg_error(e, {
                format!("snapshot of `{}`: cannot sample the keys", r.name())
            })
        })?;
    let estimate = if reltuples > 0 {
        reltuples
    } else {
        (sample.len() as f64 * 100.0 / percent) as i64
    };
    let wanted = ((estimate + chunk - 1) / chunk).clamp(1, workers) as usize;
    if wanted < 2 || sample.len() < wanted {
        return Ok((one, estimate));
    }
    let mut segments: Vec<Segment> = Vec::with_capacity(wanted);
    for i in 1..wanted {
        let row = &sample[sample.len() * i / wanted];
        let key: Vec<String> = (0..r.key.len())
            .map(|c| row.get::<_, Option<String>>(c).unwrap_or_default())
            .collect();
        if segments.last().and_then(|s| s.upper.as_ref()) != Some(&key) {
            segments.push(Segment {
                upper: Some(key),
                ..Segment::default()
            });
        }
    }
    segments.push(Segment::default());
    Ok((segments, estimate))
}

impl PostgresCdcSource {
    /// Snapshot every table whose snapshot is pending: with `snapshot:
    /// initial`, every table without a finished entry; always, a table whose
    /// entry is not done (an interrupted snapshot or a requested
    /// re-snapshot). `exported` is the main slot's export when the slot was
    /// just created. Returns true if shutdown was requested meanwhile.
    pub(super) async fn snapshot(
        &mut self,
        exported: Option<Exported>,
        shutdown: &Shutdown,
    ) -> Result<bool> {
        let fresh = exported.is_some();
        let mut progress = if fresh {
            Default::default()
        } else {
            self.progress.restore().await?
        };
        let initial = self.cfg.snapshot == super::SnapshotMode::Initial;
        let pending: Vec<usize> = (0..self.tables.len())
            .filter(|&t| match progress.get(&self.tables[t].resolved.name()) {
                None => initial,
                Some(p) => !p.done,
            })
            .collect();
        if pending.is_empty() {
            return Ok(false);
        }
        let exported = match exported {
            Some(e) => e,
            None => {
                let mut temp = format!("{}_snap_{}", self.slot, std::process::id());
                temp.truncate(63);
                let e = slot::create_slot(&self.url, &temp, true).await?;
                tracing::info!(source = %self.name, temporary_slot = %temp, consistent_point = %slot::format_lsn(e.lsn),
                    "postgres_cdc: snapshot in a new exported snapshot");
                e
            }
        };
        let (lsn, snapshot) = (exported.lsn, exported.snapshot.clone());

        // Plan every pending table's ranges (stored before any row is read).
        let planner = snapshot_connection(self, &snapshot).await?;
        let mut runs = Vec::new();
        let mut readers = HashMap::new();
        let mut queue = VecDeque::new();
        for t in pending {
            let name = self.tables[t].resolved.name();
            let reader = Reader::new(self, t);
            let mut p = progress.remove(&name).unwrap_or_default().upgraded();
            let estimate = if p.segments.is_empty() {
                let (segments, estimate) = plan_segments(&planner, self, t, &reader).await?;
                p.segments = segments;
                self.progress
                    .store(self.publisher.producer(), &name, &p)
                    .await?;
                estimate
            } else {
                table_size(&planner, &self.tables[t].resolved).await?.0
            };
            readers.insert(t, reader);
            let mut labels = self.metric_labels().to_vec();
            labels.push(("table", name.clone()));
            metrics::gauge!("syncline_cdc_snapshot_rows_estimate", &labels).set(estimate as f64);
            tracing::info!(source = %self.name, table = %name, estimate, ranges = p.segments.len(),
                resumed_after_rows = p.rows, "postgres_cdc: snapshot of a table started");
            self.status.running();
            self.status.snapshot_table(
                &name,
                p.rows,
                (estimate > 0).then_some(estimate as u64),
                p.done,
            );
            for (s, seg) in p.segments.iter().enumerate() {
                if !seg.done {
                    queue.push_back((runs.len(), s));
                }
            }
            runs.push(TableRun {
                t,
                name,
                estimate,
                labels,
                rows_before: p.rows,
                progress: tokio::sync::Mutex::new(p),
                started: Instant::now(),
            });
        }
        drop(planner);
        let workers = self.cfg.snapshot_parallelism.min(queue.len()).max(1);
        let queue = std::sync::Mutex::new(queue);
        let this = &*self;
        let stopped = futures::future::try_join_all(
            (0..workers)
                .map(|_| this.snapshot_worker(&queue, &runs, &readers, lsn, &snapshot, shutdown)),
        )
        .await?;
        if stopped.into_iter().any(|s| s) {
            return Ok(true);
        }
        for run in &runs {
            let p = run.progress.lock().await;
            if !p.done {
                return Err(Error::internal(format!(
                    "the snapshot of `{}` ended with ranges left",
                    run.name
                )));
            }
        }
        tracing::info!(source = %self.name, slot = %exported.slot, "postgres_cdc: snapshot finished");
        Ok(false)
    }

    /// Take ranges from `queue` until it is empty, on one connection.
    async fn snapshot_worker(
        &self,
        queue: &std::sync::Mutex<VecDeque<(usize, usize)>>,
        runs: &[TableRun],
        readers: &HashMap<usize, Reader>,
        lsn: u64,
        snapshot: &str,
        shutdown: &Shutdown,
    ) -> Result<bool> {
        let client = snapshot_connection(self, snapshot).await?;
        loop {
            let next = queue.lock().expect("queue lock").pop_front();
            let Some((run, segment)) = next else { break };
            let run = &runs[run];
            let reader = &readers[&run.t];
            if self
                .snapshot_segment(&client, run, reader, segment, lsn, shutdown)
                .await?
            {
                return Ok(true);
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| slot::pg_error(e, "snapshot: cannot end the transaction"))?;
        Ok(false)
    }

    /// Read one key range in chunks; record each chunk once acknowledged.
    async fn snapshot_segment(
        &self,
        client: &Client,
        run: &TableRun,
        reader: &Reader,
        segment: usize,
        lsn: u64,
        shutdown: &Shutdown,
    ) -> Result<bool> {
        let (t, name) = (run.t, &run.name);
        let r = &self.tables[t].resolved;
        let columns = &self.tables[t].schema.columns;
        let chunk = self.cfg.snapshot_chunk_size;
        let position = snapshot_position(lsn);
        let text = format!("snapshot at {}", slot::format_lsn(lsn));
        let (mut lower, upper) = {
            let p = run.progress.lock().await;
            (p.lower(segment).cloned(), p.segments[segment].upper.clone())
        };
        let sql_from_start = reader.chunk_sql(false, upper.is_some(), chunk);
        let sql_from_key = reader.chunk_sql(true, upper.is_some(), chunk);
        loop {
            if shutdown.is_cancelled() {
                return Ok(true);
            }
            let params: Vec<&(dyn ToSql + Sync)> = lower
                .iter()
                .chain(upper.iter())
                .flatten()
                .map(|s| s as &(dyn ToSql + Sync))
                .collect();
            let sql = if lower.is_some() {
                &sql_from_key
            } else {
                &sql_from_start
            };
            let rows = client.query(sql, &params).await.map_err(|e| {
                slot::pg_error(e, format!("snapshot of `{name}`: cannot read a chunk"))
            })?;
            let now_us = chrono::Utc::now().timestamp_micros();
            let mut deliveries = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut values = Vec::with_capacity(columns.len());
                for (i, c) in columns.iter().enumerate() {
                    let v = match row.get::<_, Option<String>>(i) {
                        None => apache_avro::types::Value::Null,
                        Some(s) => text_value(&c.ty, &s).map_err(|e| {
                            Error::data(format!("snapshot of `{name}`, column `{}`: {e}", c.name))
                        })?,
                    };
                    values.push((c.name.clone(), v));
                }
                let ev = ChangeEvent {
                    op: Op::Read,
                    key: key_of(&r.key, &values),
                    before: None,
                    after: Some(values),
                    source: self.source_info(name, position.clone(), text.clone(), now_us),
                    unchanged: Vec::new(),
                };
                deliveries.push(self.enqueue(t, &ev).await?);
            }
            let n = rows.len();
            if let Some(last) = rows.last() {
                lower = Some(
                    reader
                        .key_idx
                        .iter()
                        .map(|&i| last.get::<_, Option<String>>(i).unwrap_or_default())
                        .collect(),
                );
            }
            await_deliveries(&r.topic, deliveries).await?;
            let finished = n < chunk;
            let (rows_total, done) = {
                let mut p = run.progress.lock().await;
                p.rows += n as u64;
                let seg = &mut p.segments[segment];
                seg.after = lower.clone();
                seg.done = finished;
                p.done = p.segments.iter().all(|s| s.done);
                self.progress
                    .store(self.publisher.producer(), name, &p)
                    .await?;
                (p.rows, p.done)
            };
            self.status.snapshot_table(name, rows_total, None, done);
            metrics::counter!("syncline_cdc_snapshot_rows_total", &run.labels).increment(n as u64);
            let secs = run.started.elapsed().as_secs_f64().max(0.001);
            let rate = (rows_total - run.rows_before) as f64 / secs;
            tracing::info!(source = %self.name, table = %name, range = segment, rows = rows_total,
                estimate = run.estimate, rows_per_s = rate as u64, done, "postgres_cdc: snapshot chunk published");
            if finished {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_rows_sort_before_changes_streamed_after_their_point() {
        let c = 0x16_0000_0100;
        let streamed = |lsn: u64, i: u64| Position::builder().u64(lsn).u64(i).build();
        assert!(snapshot_position(c) < streamed(c, 1));
        assert!(snapshot_position(c) < streamed(c + 1, 1));
        assert!(streamed(c - 1, 99) < snapshot_position(c));
        // a later (resumed) snapshot wins over an earlier one
        assert!(snapshot_position(c) < snapshot_position(c + 8));
    }
}
