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
//! Chunks: `WHERE (key) > (last key) ORDER BY key LIMIT chunk_size`; after
//! each chunk is acknowledged by the broker its last key is recorded
//! ([`super::progress`]). A crash republishes at most the unrecorded chunk,
//! with the same positions if read in the same snapshot, or greater ones
//! from a later one (then they are the newer truth, by the argument above).

use super::decode::text_value;
use super::progress::TableProgress;
use super::slot::{self, Exported};
use super::{await_deliveries, key_of, PostgresCdcSource};
use crate::sql_poll::plan::quote_ident;
use std::time::Instant;
use syncline_core::runtime::Shutdown;
use syncline_core::{ChangeEvent, Error, Op, Position, Result};
use tokio_postgres::types::ToSql;

/// The position of a row read in a snapshot consistent at `lsn`.
pub fn snapshot_position(lsn: u64) -> Position {
    Position::builder().u64(lsn).u64(0).build()
}

impl PostgresCdcSource {
    /// Snapshot every table whose snapshot is not finished. `exported` is the
    /// main slot's export when the slot was just created. Returns true if
    /// shutdown was requested meanwhile.
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
        let pending: Vec<usize> = (0..self.tables.len())
            .filter(|&t| {
                !progress
                    .get(&self.tables[t].resolved.name())
                    .is_some_and(|p| p.done)
            })
            .collect();
        if pending.is_empty() {
            return Ok(false);
        }
        let exported = match exported {
            Some(e) => e,
            None => {
                let temp = format!("{}_snap_{}", self.slot, std::process::id());
                let mut temp = temp.clone();
                temp.truncate(63);
                let e = slot::create_slot(&self.url, &temp, true).await?;
                tracing::info!(source = %self.name, temporary_slot = %temp, consistent_point = %slot::format_lsn(e.lsn),
                    "postgres_cdc: resuming the snapshot in a new exported snapshot");
                e
            }
        };
        let (lsn, snapshot) = (exported.lsn, exported.snapshot.clone());
        for t in pending {
            let name = self.tables[t].resolved.name();
            let from = progress.remove(&name).unwrap_or_default();
            let stopped = self
                .snapshot_table(t, lsn, &snapshot, from, shutdown)
                .await?;
            if stopped {
                return Ok(true);
            }
        }
        tracing::info!(source = %self.name, slot = %exported.slot, "postgres_cdc: snapshot finished");
        Ok(false)
    }

    async fn snapshot_table(
        &self,
        t: usize,
        lsn: u64,
        snapshot: &str,
        mut progress: TableProgress,
        shutdown: &Shutdown,
    ) -> Result<bool> {
        let table = &self.tables[t];
        let r = &table.resolved;
        let name = r.name();
        let client = slot::connect(&self.url, &self.name).await?;
        let pg = |what: &'static str| {
            let name = name.clone();
            move |e| slot::pg_error(e, || format!("snapshot of `{name}`: {what}"))
        };
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                snapshot.replace('\'', "")
            ))
            .await
            .map_err(pg("cannot import the exported snapshot"))?;
        let estimate: i64 = client
            .query_one(
                "SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = $1",
                &[&r.oid],
            )
            .await
            .map_err(pg("cannot estimate the row count"))?
            .get(0);
        let labels = self.metric_labels();
        let mut table_labels = labels.to_vec();
        table_labels.push(("table", name.clone()));
        metrics::gauge!("syncline_cdc_snapshot_rows_estimate", &table_labels).set(estimate as f64);
        let columns = &table.schema.columns;
        // Output columns get positional aliases: an output column named like
        // a key column would make `ORDER BY key` sort by its text form.
        let select = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("s.{}::text AS c{i}", quote_ident(&c.name)))
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
        let key_list = r
            .key
            .iter()
            .map(|k| format!("s.{}", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let casts = key_idx
            .iter()
            .enumerate()
            .map(|(i, &c)| format!("${}::text::{}", i + 1, columns[c].sql_type))
            .collect::<Vec<_>>()
            .join(", ");
        let chunk = self.cfg.snapshot_chunk_size;
        let from_start = format!(
            "SELECT {select} FROM {} AS s ORDER BY {key_list} LIMIT {chunk}",
            r.quoted()
        );
        let from_key = format!(
            "SELECT {select} FROM {} AS s WHERE ({key_list}) > ({casts}) ORDER BY {key_list} LIMIT {chunk}",
            r.quoted()
        );
        let position = snapshot_position(lsn);
        let text = format!("snapshot at {}", slot::format_lsn(lsn));
        let started = Instant::now();
        let rows_before = progress.rows;
        tracing::info!(source = %self.name, table = %name, estimate, resumed_after_rows = progress.rows,
            "postgres_cdc: snapshot of a table started");
        loop {
            if shutdown.is_cancelled() {
                return Ok(true);
            }
            let rows = match &progress.after {
                None => client.query(&from_start, &[]).await,
                Some(after) => {
                    let params: Vec<&(dyn ToSql + Sync)> =
                        after.iter().map(|s| s as &(dyn ToSql + Sync)).collect();
                    client.query(&from_key, &params).await
                }
            }
            .map_err(pg("cannot read a chunk"))?;
            let now_us = chrono::Utc::now().timestamp_micros();
            let mut deliveries = Vec::with_capacity(rows.len());
            let mut last_key = None;
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
                    source: self.source_info(&name, position.clone(), text.clone(), now_us),
                };
                deliveries.push(self.enqueue(t, &ev, &[]).await?);
                last_key = Some(
                    key_idx
                        .iter()
                        .map(|&i| row.get::<_, Option<String>>(i).unwrap_or_default())
                        .collect::<Vec<_>>(),
                );
            }
            let n = rows.len();
            await_deliveries(&r.topic, deliveries).await?;
            progress.rows += n as u64;
            if last_key.is_some() {
                progress.after = last_key;
            }
            progress.done = n < chunk;
            self.progress
                .store(&self.producer, &name, &progress)
                .await?;
            metrics::counter!("syncline_cdc_snapshot_rows_total", &table_labels)
                .increment(n as u64);
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = (progress.rows - rows_before) as f64 / secs;
            tracing::info!(source = %self.name, table = %name, rows = progress.rows, estimate,
                rows_per_s = rate as u64, done = progress.done, "postgres_cdc: snapshot chunk published");
            if progress.done {
                break;
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(pg("cannot end the snapshot transaction"))?;
        Ok(false)
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
