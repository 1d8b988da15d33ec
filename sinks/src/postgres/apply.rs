//! Writing one batch: newest change per key, staged with `COPY`, applied with
//! conditional upserts and deletes, offsets stored, all in one transaction.
//!
//! # Exactly once
//! A record's effect lands in the target exactly once, even when records are
//! delivered again, because of two rules that hold inside every batch
//! transaction:
//! 1. **Offsets with rows.** The batch's consumed offsets are written to
//!    `syncline_offsets` in the same transaction as its rows (see
//!    `offsets.rs`), and consumption resumes from there. A crash before the
//!    commit loses both; after it, keeps both.
//! 2. **Apply only what is newer.** Kafka offsets alone are not enough: after
//!    a source crash, the source replays changes it had already produced,
//!    and those arrive as new records at new offsets, carrying the same
//!    identity (source name, position) as before. So every target row keeps
//!    the position of the change it holds (`_syncline_position`, bytewise
//!    order), and an upsert or delete only touches a row whose position is
//!    lower (or unknown). A delete leaves a tombstone (key and position, in
//!    `syncline_tombstones`) so that an older insert replayed after the
//!    delete cannot bring the row back; an insert newer than the tombstone
//!    applies and removes it, which keeps the tombstones to keys that are
//!    currently deleted.
//!
//! Within a batch only the newest change per key is kept (one row per key
//! and statement is what `ON CONFLICT` requires, and older changes would be
//! overwritten anyway).
//!
//! # Unchanged columns (TOAST)
//! A record may name columns whose value it does not carry because it did
//! not change (header `syncline.unchanged`, written by `postgres_cdc` for
//! unchanged TOASTed values). The sink never writes the record's null
//! placeholder for them: the value comes from the newest older change of the
//! key in the same batch when there is one ([`newest_per_key`]), else from
//! the target row itself (a statement fills the staged row from the target
//! before the upsert). The target row holds the previous state of the row,
//! because records of a key arrive in order and only newer ones apply.

use super::config::Evolution;
use super::ddl::{
    self, qualified, quote_ident, quote_literal, POSITION_COLUMN, SOURCE_COLUMN, TOMBSTONES_TABLE,
};
use super::offsets::{self, TopicPartition};
use super::pg_error;
use super::truncate;
use super::values::{literal, write_copy_bytea, write_copy_field, write_copy_text};
use apache_avro::types::Value;
use bytes::Bytes;
use futures::SinkExt;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use syncline_core::codec::Decoded;
use syncline_core::{Column, Error, ErrorKind, Op, Position, Result};
use tokio_postgres::Client;

pub use syncline_runtime::record::Origin;

/// One decoded change, bound for one target table.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: Arc<str>,
    /// Canonical key bytes (see [`key_bytes`]).
    pub key: Vec<u8>,
    pub delete: bool,
    /// A TRUNCATE of the whole table (no key; see `truncate.rs`).
    pub truncate: bool,
    pub decoded: Decoded,
    pub origin: Origin,
}

impl Change {
    /// Check that the change can be applied (the caller names the record on error).
    pub fn new(table: Arc<str>, decoded: Decoded, origin: Origin) -> Result<Change, String> {
        let op = decoded.event.op;
        if op == Op::Truncate {
            return Ok(Change {
                table,
                key: Vec::new(),
                delete: false,
                truncate: true,
                decoded,
                origin,
            });
        }
        if let Some(c) = decoded.columns.iter().find(|c| {
            c.name == SOURCE_COLUMN || c.name == POSITION_COLUMN || c.name.starts_with("_syncline_")
        }) {
            return Err(format!(
                "its column `{}` is named like one of the sink's own columns (`_syncline_*`); rename it before the sink (a `rules` step `rename`)",
                c.name
            ));
        }
        let delete = op.removes_row();
        if !delete && decoded.event.after.is_none() {
            return Err(format!("{} change without an `after` row", op.symbol()));
        }
        let key = key_bytes(&decoded)?;
        Ok(Change {
            table,
            key,
            delete,
            truncate: false,
            decoded,
            origin,
        })
    }

    /// Columns whose value the record does not carry (unchanged): the
    /// target keeps the value it has.
    pub fn unchanged(&self) -> &[String] {
        &self.decoded.event.unchanged
    }

    fn position(&self) -> &Position {
        &self.decoded.event.source.position
    }

    fn source(&self) -> &str {
        &self.decoded.event.source.name
    }
}

/// The key as bytes that are equal exactly when the keys are equal: each key
/// column's canonical text, escaped and terminated (the position encoding),
/// in key order. Stored in tombstones and used to find duplicates.
pub fn key_bytes(decoded: &Decoded) -> Result<Vec<u8>, String> {
    let mut b = Position::builder();
    for name in decoded.key_columns.iter() {
        let col = find_column(&decoded.columns, name)?;
        let value = decoded
            .event
            .key
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or(&Value::Null);
        match literal(&col.ty, value).map_err(|e| format!("key column `{name}`: {e}"))? {
            Some(text) => b = b.str(&text),
            None => return Err(format!("key column `{name}` is null")),
        }
    }
    Ok(b.build().into_bytes())
}

fn find_column<'a>(columns: &'a [Column], name: &str) -> Result<&'a Column, String> {
    columns
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("key column `{name}` is not a column of the row"))
}

/// Keep only the newest change per (table, key): the one with the greatest
/// position; of equal positions (the same change delivered twice) the later.
/// Survivors keep the order of their first appearance. A survivor's
/// unchanged columns are filled from the change it replaces, when that one
/// carries them.
pub fn newest_per_key(changes: &[Change]) -> Vec<Cow<'_, Change>> {
    let mut slot: HashMap<(&str, &[u8]), usize> = HashMap::with_capacity(changes.len());
    let mut out: Vec<Cow<'_, Change>> = Vec::with_capacity(changes.len());
    for c in changes {
        match slot.get(&(&*c.table, c.key.as_slice())) {
            Some(&i) => {
                if c.position() >= out[i].position() {
                    let older = std::mem::replace(&mut out[i], Cow::Borrowed(c));
                    if let Some(filled) = fill_unchanged(c, &older) {
                        out[i] = Cow::Owned(filled);
                    }
                } else if let Some(filled) = fill_unchanged(&out[i], c) {
                    out[i] = Cow::Owned(filled);
                }
            }
            None => {
                slot.insert((&c.table, &c.key), out.len());
                out.push(Cow::Borrowed(c));
            }
        }
    }
    out
}

/// `newer` with the unchanged columns that `older` carries filled in, or
/// None when there is nothing to fill.
fn fill_unchanged(newer: &Change, older: &Change) -> Option<Change> {
    if newer.unchanged().is_empty() || newer.delete || older.delete {
        return None;
    }
    let older_after = older.decoded.event.after.as_ref()?;
    let mut filled = newer.clone();
    let ev = &mut filled.decoded.event;
    let after = ev.after.as_mut()?;
    let mut any = false;
    ev.unchanged.retain(|name| {
        if older.unchanged().contains(name) {
            return true;
        }
        let Some((_, v)) = older_after.iter().find(|(n, _)| n == name) else {
            return true;
        };
        if let Some(slot) = after.iter_mut().find(|(n, _)| n == name) {
            slot.1 = v.clone();
            any = true;
            return false;
        }
        true
    });
    any.then_some(filled)
}

/// The newest truncate per (table, source) among `changes`.
fn truncate_floors(changes: &[Change]) -> truncate::Floors {
    truncate::floors(
        changes
            .iter()
            .filter(|c| c.truncate)
            .map(|c| (&c.table, c.source(), c.position())),
    )
}

/// Whether a truncate in `floors` supersedes the row change `c`.
fn superseded(floors: &truncate::Floors, c: &Change) -> bool {
    truncate::superseded(floors, &c.table, c.source(), c.position())
}

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

/// The changes of one batch for one table and one row shape.
struct Group<'a> {
    table: Arc<str>,
    schema_id: u32,
    columns: Arc<Vec<Column>>,
    key: Arc<Vec<String>>,
    changes: Vec<&'a Change>,
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
        let floors = truncate_floors(changes);
        // Row changes only; those a truncate of this batch supersedes are dropped.
        let kept: Cow<'_, [Change]> = if changes.iter().any(|c| c.truncate) {
            Cow::Owned(
                changes
                    .iter()
                    .filter(|c| !c.truncate && !superseded(&floors, c))
                    .cloned()
                    .collect(),
            )
        } else {
            Cow::Borrowed(changes)
        };
        let newest = newest_per_key(&kept);
        let mut groups: BTreeMap<(Arc<str>, u32), Group<'_>> = BTreeMap::new();
        for c in newest.iter().map(|c| &**c) {
            groups
                .entry((c.table.clone(), c.decoded.value_schema_id))
                .or_insert_with(|| Group {
                    table: c.table.clone(),
                    schema_id: c.decoded.value_schema_id,
                    columns: c.decoded.columns.clone(),
                    key: c.decoded.key_columns.clone(),
                    changes: Vec::new(),
                })
                .changes
                .push(c);
        }
        let mut staged = Vec::with_capacity(groups.len());
        for g in groups.values() {
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
                        Error::data(format!("{err} (one of the records at {})", span(g)))
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
                _ => Error::new(e.kind(), format!("{e} (records from {})", span(g))),
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
        let mut unchanged: Vec<&str> = g
            .changes
            .iter()
            .flat_map(|c| c.unchanged().iter().map(String::as_str))
            .filter(|n| !g.key.iter().any(|k| k == n))
            .filter(|n| g.columns.iter().any(|c| c.name == *n))
            .collect();
        unchanged.sort_unstable();
        unchanged.dedup();
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
        let row = if c.delete {
            &ev.key
        } else {
            ev.after.as_ref().expect("checked in Change::new")
        };
        for col in g.columns.iter() {
            let v = row
                .iter()
                .find(|(n, _)| n == &col.name)
                .map(|(_, v)| v)
                .unwrap_or(&Value::Null);
            write_copy_field(&mut out, &col.ty, v).map_err(|e| {
                Error::data(format!(
                    "record at {} does not fit column `{}`: {e}",
                    c.origin, col.name
                ))
            })?;
            out.push(b'\t');
        }
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
        None => Error::data(format!("{err} (one of the records at {})", span(g))),
    }
}

/// `topic `t` partition 0 offsets 10..=20, ...` for the records of a group.
fn span(g: &Group<'_>) -> String {
    let mut ranges: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
    for c in &g.changes {
        let r = ranges
            .entry((&c.origin.topic, c.origin.partition))
            .or_insert((c.origin.offset, c.origin.offset));
        r.0 = r.0.min(c.origin.offset);
        r.1 = r.1.max(c.origin.offset);
    }
    ranges
        .into_iter()
        .map(|((t, p), (lo, hi))| format!("topic `{t}` partition {p} offsets {lo}..={hi}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_core::{ChangeEvent, ColumnType, SourceInfo};

    fn change(key: i64, pos: i64, op: Op, tag: &str) -> Change {
        let columns = Arc::new(vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Long,
                nullable: false,
                sql_type: "int8".into(),
            },
            Column {
                name: "v".into(),
                ty: ColumnType::Text,
                nullable: true,
                sql_type: "text".into(),
            },
        ]);
        let after = (!op.removes_row()).then(|| {
            vec![
                ("id".into(), Value::Long(key)),
                ("v".into(), Value::String(tag.into())),
            ]
        });
        let decoded = Decoded {
            event: ChangeEvent {
                op,
                key: vec![("id".into(), Value::Long(key))],
                before: None,
                after,
                source: SourceInfo {
                    connector: "test".into(),
                    name: "src".into(),
                    db: "db".into(),
                    table: "t".into(),
                    position: Position::builder().i64(pos).build(),
                    position_text: pos.to_string(),
                    ts_us: 0,
                },
                unchanged: Vec::new(),
            },
            value_schema_id: 1,
            columns,
            key_columns: Arc::new(vec!["id".into()]),
        };
        Change::new(
            "t".into(),
            decoded,
            Origin {
                topic: "topic".into(),
                partition: 0,
                offset: pos,
            },
        )
        .unwrap()
    }

    fn tag(c: &Change) -> String {
        match c.decoded.event.after.as_ref().map(|a| &a[1].1) {
            Some(Value::String(s)) => s.clone(),
            _ => "deleted".into(),
        }
    }

    #[test]
    fn keeps_only_the_newest_change_per_key_whatever_the_arrival_order() {
        let batch = vec![
            change(1, 10, Op::Insert, "a"),
            change(2, 5, Op::Insert, "b"),
            change(1, 30, Op::Update, "c"),
            change(1, 20, Op::Update, "replayed-old"),
            change(2, 6, Op::Delete, ""),
            change(3, 1, Op::Insert, "d"),
        ];
        let out: Vec<_> = newest_per_key(&batch)
            .iter()
            .map(|c| (c.key.clone(), tag(c)))
            .collect();
        let k = |id: i64| {
            Position::builder()
                .str(&id.to_string())
                .build()
                .into_bytes()
        };
        assert_eq!(
            out,
            [
                (k(1), "c".to_string()),
                (k(2), "deleted".into()),
                (k(3), "d".into())
            ]
        );
    }

    #[test]
    fn equal_positions_keep_the_later_delivery_and_tables_are_separate() {
        let mut other_table = change(1, 10, Op::Insert, "other");
        other_table.table = "u".into();
        let batch = vec![
            change(1, 10, Op::Insert, "first"),
            other_table,
            change(1, 10, Op::Insert, "again"),
        ];
        let out = newest_per_key(&batch);
        assert_eq!(
            out.iter().map(|c| tag(c)).collect::<Vec<_>>(),
            ["again", "other"]
        );
    }

    fn truncate(pos: i64) -> Change {
        let mut d = change(1, pos, Op::Insert, "x").decoded;
        d.event.op = Op::Truncate;
        d.event.key.clear();
        d.event.after = None;
        Change::new(
            "t".into(),
            d,
            Origin {
                topic: "t".into(),
                partition: 0,
                offset: pos,
            },
        )
        .unwrap()
    }

    #[test]
    fn keys_are_canonical_and_a_keyless_truncate_is_accepted() {
        let c = change(-7, 1, Op::Insert, "x");
        assert_eq!(c.key, Position::builder().str("-7").build().into_bytes());
        let t = truncate(5);
        assert!(t.truncate && !t.delete && t.key.is_empty());
    }

    #[test]
    fn a_truncate_supersedes_older_changes_of_its_table_and_source_only() {
        let mut other_source = change(4, 3, Op::Insert, "kept");
        other_source.decoded.event.source.name = "other".into();
        let mut other_table = change(5, 3, Op::Insert, "kept");
        other_table.table = "u".into();
        let batch = vec![
            change(1, 3, Op::Insert, "gone"),
            truncate(5),
            change(2, 6, Op::Insert, "kept"),
            truncate(4),
            other_source,
            other_table,
        ];
        let floors = truncate_floors(&batch);
        assert_eq!(floors.len(), 1, "one floor, the newest truncate");
        let kept: Vec<_> = batch
            .iter()
            .filter(|c| !c.truncate && !superseded(&floors, c))
            .map(tag)
            .collect();
        assert_eq!(kept, ["kept", "kept", "kept"]);
    }
}
