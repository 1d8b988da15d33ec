//! Writing one batch: newest change per key, staged with `COPY`, applied with
//! conditional upserts and deletes, offsets stored, all in one transaction.
//! The rules that make it exactly once are `crate::table`'s; this is their
//! Postgres form:
//! - a staging temp table per (table, row shape), filled by one `COPY`;
//! - unchanged (TOASTed) columns filled from the target row by one `UPDATE
//!   ... FROM` of the staging table;
//! - one `INSERT ... ON CONFLICT DO UPDATE ... WHERE position is lower` for
//!   the upserts, guarded by the tombstones, and one `DELETE` that writes the
//!   tombstones of what it deleted;
//! - the offsets upserted (`offsets.rs`), then `COMMIT`.

use super::config::Evolution;
use super::ddl::{self, qualified, quote_ident, quote_literal};
use super::offsets;
use super::pg_error;
use super::truncate;
use super::values::{write_copy_bytea, write_copy_field, write_copy_text};
use crate::table::{
    self, Change, Group, TopicPartition, POSITION_COLUMN, SOURCE_COLUMN, TOMBSTONES_TABLE,
};
use bytes::Bytes;
use futures::SinkExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use syncline_core::{Error, ErrorKind, Result};
use tokio_postgres::Client;

/// The batch-writing half of the sink: one connection, the tables it has
/// checked and the staging tables it has created on it.
pub struct Writer {
    client: Client,
    schema: String,
    group: String,
    evolution: Evolution,
    /// (table, value schema id) pairs whose target table is known to fit.
    ready: HashSet<(Arc<str>, u32)>,
    /// (table, value schema id) -> temp staging table.
    stages: HashMap<(Arc<str>, u32), String>,
}

impl Writer {
    pub fn new(client: Client, schema: String, group: String, evolution: Evolution) -> Writer {
        Writer {
            client,
            schema,
            group,
            evolution,
            ready: HashSet::new(),
            stages: HashMap::new(),
        }
    }

    /// Apply `changes` and store `next` offsets in one transaction.
    pub async fn write_batch(
        &mut self,
        changes: &[Change],
        next: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let floors = table::truncate_floors(changes);
        let kept = table::row_changes(changes, &floors);
        let newest = table::newest_per_key(&kept);
        let groups = table::groups(&newest);
        let mut staged = Vec::with_capacity(groups.len());
        for g in &groups {
            let stage = self.prepare(g).await?;
            let sql = self.apply_sql(g, &stage);
            staged.push((g, stage, stage_rows(g)?, sql));
        }
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| pg_error(e, "cannot begin a transaction"))?;
        truncate::apply(&tx, &self.schema, &floors).await?;
        for (g, stage, rows, sql) in staged {
            let sink = tx
                .copy_in(&format!("COPY {stage} FROM STDIN"))
                .await
                .map_err(|e| pg_error(e, "cannot start COPY into the staging table"))?;
            futures::pin_mut!(sink);
            let sent = async {
                sink.send(Bytes::from(rows)).await?;
                sink.as_mut().finish().await
            };
            if let Err(e) = sent.await {
                return Err(copy_error(e, g));
            }
            tx.batch_execute(&sql).await.map_err(|e| {
                let err = pg_error(
                    e,
                    format!(
                        "cannot apply a batch to {}",
                        qualified(&self.schema, &g.table)
                    ),
                );
                match err.kind() {
                    ErrorKind::Data => {
                        Error::data(format!("{err} (one of the records at {})", g.span()))
                    }
                    _ => err,
                }
            })?;
        }
        offsets::write(&tx, &self.schema, &self.group, next).await?;
        tx.commit()
            .await
            .map_err(|e| pg_error(e, "cannot commit the batch"))
    }

    /// Make sure the target table fits `g`'s shape and a staging table exists.
    async fn prepare(&mut self, g: &Group<'_>) -> Result<String> {
        let id = (g.table.clone(), g.schema_id);
        if !self.ready.contains(&id) {
            ddl::ensure_table(
                &self.client,
                &self.schema,
                &g.table,
                &g.columns,
                &g.key,
                self.evolution,
            )
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Transient => e,
                _ => Error::new(e.kind(), format!("{e} (records from {})", g.span())),
            })?;
            self.ready.insert(id.clone());
        }
        if let Some(stage) = self.stages.get(&id) {
            return Ok(stage.clone());
        }
        let stage = format!("pg_temp.syncline_stage_{}", self.stages.len());
        let mut defs: Vec<String> = g
            .columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), ddl::sql_type(c)))
            .collect();
        defs.extend([
            format!("{} text", quote_ident(SOURCE_COLUMN)),
            format!("{} bytea", quote_ident(POSITION_COLUMN)),
            "_syncline_key bytea".into(),
            "_syncline_delete boolean".into(),
            "_syncline_unchanged text[]".into(),
        ]);
        // Kept for the connection's life; emptied by every commit.
        let sql = format!(
            "CREATE TEMP TABLE {stage} ({}) ON COMMIT DELETE ROWS",
            defs.join(", ")
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error(e, "cannot create a staging table"))?;
        self.stages.insert(id, stage.clone());
        Ok(stage)
    }

    /// The statements for `g`'s upserts and deletes (only those it has),
    /// each conditional on positions (see the module docs).
    fn apply_sql(&self, g: &Group<'_>, stage: &str) -> String {
        let target = qualified(&self.schema, &g.table);
        let tomb = qualified(&self.schema, TOMBSTONES_TABLE);
        let tname = quote_literal(&format!("{}.{}", self.schema, g.table));
        let pos = quote_ident(POSITION_COLUMN);
        let src = quote_ident(SOURCE_COLUMN);
        let key_eq = |a: &str, b: &str| {
            g.key
                .iter()
                .map(|k| format!("{a}.{k} = {b}.{k}", k = quote_ident(k)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let cols: Vec<String> = g.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let col_list = cols.join(", ");
        let key_list = g
            .key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let updates: Vec<String> = cols
            .iter()
            .filter(|c| !g.key.iter().any(|k| &&quote_ident(k) == c))
            .chain([&src, &pos])
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let upserts = format!(
            "DELETE FROM {tomb} x USING {stage} s
               WHERE NOT s._syncline_delete AND x.target_table = {tname}
                 AND x.key = s._syncline_key AND x.position < s.{pos};
             INSERT INTO {target} AS t ({col_list}, {src}, {pos})
               SELECT {col_list}, {src}, {pos} FROM {stage} s
               WHERE NOT s._syncline_delete AND NOT EXISTS (
                 SELECT 1 FROM {tomb} x
                 WHERE x.target_table = {tname} AND x.key = s._syncline_key AND x.position >= s.{pos})
               ON CONFLICT ({key_list}) DO UPDATE SET {updates}
               WHERE t.{pos} IS NULL OR t.{pos} < EXCLUDED.{pos};",
            updates = updates.join(", "),
        );
        let deletes = format!(
            "WITH gone AS (
               DELETE FROM {target} t USING {stage} s
               WHERE s._syncline_delete AND {key_ts} AND (t.{pos} IS NULL OR t.{pos} < s.{pos}))
             INSERT INTO {tomb} AS x (target_table, key, source, position)
               SELECT {tname}, s._syncline_key, s.{src}, s.{pos} FROM {stage} s
               WHERE s._syncline_delete
                 AND NOT EXISTS (SELECT 1 FROM {target} t WHERE {key_ts} AND t.{pos} >= s.{pos})
               ON CONFLICT (target_table, key) DO UPDATE
               SET source = EXCLUDED.source, position = EXCLUDED.position, deleted_at = now()
               WHERE x.position < EXCLUDED.position;",
            key_ts = key_eq("t", "s"),
        );
        // Unchanged columns take the target's value (see the module docs).
        let unchanged = g.unchanged_columns();
        let upserts = if unchanged.is_empty() {
            upserts
        } else {
            let sets: Vec<String> = unchanged
                .iter()
                .map(|n| {
                    let col = g.columns.iter().find(|c| c.name == *n).expect("filtered");
                    format!(
                        "{c} = CASE WHEN {lit} = ANY(s._syncline_unchanged) THEN t.{c}::{ty} ELSE s.{c} END",
                        c = quote_ident(n),
                        lit = quote_literal(n),
                        ty = ddl::sql_type(col)
                    )
                })
                .collect();
            format!(
                "UPDATE {stage} s SET {sets} FROM {target} t
                   WHERE {key_ts} AND NOT s._syncline_delete AND s._syncline_unchanged IS NOT NULL;
                 {upserts}",
                sets = sets.join(", "),
                key_ts = key_eq("t", "s"),
            )
        };
        let has_deletes = g.changes.iter().any(|c| c.delete);
        let has_upserts = g.changes.iter().any(|c| !c.delete);
        match (has_upserts, has_deletes) {
            (true, true) => format!("{upserts}\n{deletes}"),
            (true, false) => upserts,
            (false, _) => deletes,
        }
    }
}

/// The COPY text rows of a group: its columns, then source, position, key, delete.
fn stage_rows(g: &Group<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(g.changes.len() * 128);
    for c in &g.changes {
        let ev = &c.decoded.event;
        g.each_value(c, |col, v| {
            write_copy_field(&mut out, &col.ty, v)?;
            out.push(b'\t');
            Ok(())
        })?;
        write_copy_text(&mut out, Some(&ev.source.name));
        out.push(b'\t');
        write_copy_bytea(&mut out, c.position().as_bytes());
        out.push(b'\t');
        write_copy_bytea(&mut out, &c.key);
        out.push(b'\t');
        out.push(if c.delete { b't' } else { b'f' });
        out.push(b'\t');
        if c.unchanged().is_empty() {
            write_copy_text(&mut out, None);
        } else {
            let items: Vec<String> = c
                .unchanged()
                .iter()
                .map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            write_copy_text(&mut out, Some(&format!("{{{}}}", items.join(","))));
        }
        out.push(b'\n');
    }
    Ok(out)
}

/// A COPY error names the record: Postgres reports the line (1-based) it refused.
fn copy_error(e: tokio_postgres::Error, g: &Group<'_>) -> Error {
    let line = e
        .as_db_error()
        .and_then(|d| d.where_())
        .and_then(|w| w.split("line ").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    let err = pg_error(e, "the target refused a record");
    if err.kind() != ErrorKind::Data {
        return err;
    }
    match line.and_then(|l| g.changes.get(l.wrapping_sub(1))) {
        Some(c) => Error::data(format!(
            "record at {} does not fit {}: {err}",
            c.origin, g.table
        )),
        None => Error::data(format!("{err} (one of the records at {})", g.span())),
    }
}
