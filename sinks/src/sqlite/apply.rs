//! Writing one batch into SQLite: newest change per key, each applied by a
//! prepared statement conditional on positions, the offsets stored, all in
//! one `BEGIN IMMEDIATE` transaction. The rules that make it exactly once
//! are `crate::table`'s; this is their SQLite form:
//! - an upsert: `INSERT ... SELECT ... WHERE NOT EXISTS (a tombstone as new
//!   or newer) ON CONFLICT (key) DO UPDATE ... WHERE the row's position is
//!   lower`, after removing the key's older tombstone; columns the change
//!   did not carry (unchanged, TOASTed) are left out of the `UPDATE`, so the
//!   row keeps its value;
//! - a delete: `DELETE ... WHERE the row's position is lower`, then the
//!   tombstone written unless the row held something newer;
//! - a truncate: `DELETE` of the rows older than it (see `crate::table`).
//!
//! SQLite runs in this process: a statement per row costs no round trip,
//! and one transaction per batch is what makes it fast (one WAL append and,
//! with `synchronous: full`, one sync per batch).

use super::config::Synchronous;
use super::ddl;
use super::values::sql_value;
use super::{quote_ident, sqlite_error};
use crate::table::config::OnDroppedColumn;
use crate::table::{
    self, Change, Floors, Group, TopicPartition, OFFSETS_TABLE, POSITION_COLUMN, SOURCE_COLUMN,
    TOMBSTONES_TABLE,
};
use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, OpenFlags, Transaction, TransactionBehavior};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use syncline_core::{Error, ErrorKind, Result};

/// The sink's connection to its file, and what it knows about the tables.
pub struct Writer {
    conn: Connection,
    group: String,
    create: bool,
    on_dropped_column: OnDroppedColumn,
    /// (table, value schema id) pairs whose target table is known to fit.
    ready: HashSet<(Arc<str>, u32)>,
}

/// Open (or create) the database file, in WAL mode.
pub fn open(path: &Path, busy_timeout: Duration, synchronous: Synchronous) -> Result<Connection> {
    let what = || format!("cannot open the SQLite database {}", path.display());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_error(e, what()))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| sqlite_error(e, what()))?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
    ))
    .map_err(|e| sqlite_error(e, what()))?;
    conn.set_prepared_statement_cache_capacity(256);
    ddl::ensure_bookkeeping(&conn)?;
    Ok(conn)
}

/// The stored offsets of `group` for `topics`.
pub fn read_offsets(
    conn: &Connection,
    group: &str,
    topics: &[String],
) -> Result<HashMap<TopicPartition, i64>> {
    let what = "cannot read stored offsets";
    let sql = format!(
        "SELECT topic, partition, next_offset FROM {} WHERE group_id = ?1",
        quote_ident(OFFSETS_TABLE)
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(|e| sqlite_error(e, what))?;
    let rows: Vec<(String, i32, i64)> = stmt
        .query_map([group], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(|e| sqlite_error(e, what))?;
    Ok(rows
        .into_iter()
        .filter(|(t, _, _)| topics.contains(t))
        .map(|(t, p, o)| ((t, p), o))
        .collect())
}

impl Writer {
    pub fn new(
        conn: Connection,
        group: String,
        create: bool,
        on_dropped_column: OnDroppedColumn,
    ) -> Writer {
        Writer {
            conn,
            group,
            create,
            on_dropped_column,
            ready: HashSet::new(),
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Apply `changes` and store `next` offsets in one transaction.
    pub fn write_batch(
        &mut self,
        changes: &[Change],
        next: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let floors = table::truncate_floors(changes);
        let kept = table::row_changes(changes, &floors);
        let newest = table::newest_per_key(&kept);
        let groups = table::groups(&newest);
        for g in &groups {
            self.prepare(g)?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sqlite_error(e, "cannot begin a transaction"))?;
        truncate(&tx, &floors)?;
        for g in &groups {
            apply_group(&tx, g)?;
        }
        write_offsets(&tx, &self.group, next)?;
        tx.commit()
            .map_err(|e| sqlite_error(e, "cannot commit the batch"))
    }

    /// Make sure the target table fits `g`'s shape.
    fn prepare(&mut self, g: &Group<'_>) -> Result<()> {
        let id = (g.table.clone(), g.schema_id);
        if self.ready.contains(&id) {
            return Ok(());
        }
        ddl::ensure_table(
            &self.conn,
            &g.table,
            &g.columns,
            &g.key,
            self.create,
            self.on_dropped_column,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::Transient => e,
            _ => Error::new(e.kind(), format!("{e} (records from {})", g.span())),
        })?;
        self.ready.insert(id);
        Ok(())
    }
}

/// Whether `table` exists in the file.
fn exists(tx: &Transaction<'_>, table: &str) -> Result<bool> {
    tx.prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")
        .and_then(|mut s| s.exists([table]))
        .map_err(|e| sqlite_error(e, "cannot look up a target table"))
}

/// Every truncate of the batch (see `crate::table`).
fn truncate(tx: &Transaction<'_>, floors: &Floors) -> Result<()> {
    let (src, pos) = (quote_ident(SOURCE_COLUMN), quote_ident(POSITION_COLUMN));
    for ((table, source), position) in floors {
        if !exists(tx, table)? {
            continue;
        }
        let target = quote_ident(table);
        let deleted = tx
            .execute(
                &format!("DELETE FROM {target} WHERE {pos} IS NULL OR ({src} = ?1 AND {pos} < ?2)"),
                rusqlite::params![source, position.as_bytes()],
            )
            .map_err(|e| sqlite_error(e, format!("cannot apply a TRUNCATE to {target}")))?;
        tracing::info!(table = %target, source = %source, position = ?position, rows_deleted = deleted,
            "sqlite sink: TRUNCATE applied");
    }
    Ok(())
}

/// The statements of one group, one change at a time.
fn apply_group(tx: &Transaction<'_>, g: &Group<'_>) -> Result<()> {
    let target = quote_ident(&g.table);
    let tomb = quote_ident(TOMBSTONES_TABLE);
    let pos = quote_ident(POSITION_COLUMN);
    let src = quote_ident(SOURCE_COLUMN);
    let cols: Vec<String> = g.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let n = cols.len();
    let key_at: Vec<usize> = g
        .key
        .iter()
        .map(|k| {
            g.columns
                .iter()
                .position(|c| &c.name == k)
                .expect("checked by ensure_table")
        })
        .collect();
    let key_eq = |first: usize| {
        key_at
            .iter()
            .enumerate()
            .map(|(i, &at)| format!("{target}.{} = ?{}", cols[at], first + i))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let upsert_sql = |unchanged: &[String]| {
        let sets: Vec<String> = cols
            .iter()
            .zip(g.columns.iter())
            .filter(|(_, c)| !g.key.contains(&c.name) && !unchanged.contains(&c.name))
            .map(|(q, _)| q)
            .chain([&src, &pos])
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let marks: Vec<String> = (1..=n + 2).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT INTO {target} ({}, {src}, {pos}) SELECT {}
               WHERE NOT EXISTS (SELECT 1 FROM {tomb} x
                 WHERE x.target_table = ?{t} AND x.key = ?{k} AND x.position >= ?{p})
             ON CONFLICT ({}) DO UPDATE SET {}
               WHERE {target}.{pos} IS NULL OR {target}.{pos} < excluded.{pos}",
            cols.join(", "),
            marks.join(", "),
            key_at
                .iter()
                .map(|&i| cols[i].as_str())
                .collect::<Vec<_>>()
                .join(", "),
            sets.join(", "),
            t = n + 3,
            k = n + 4,
            p = n + 2,
        )
    };
    let untomb_sql =
        format!("DELETE FROM {tomb} WHERE target_table = ?1 AND key = ?2 AND position < ?3");
    let delete_sql = format!(
        "DELETE FROM {target} WHERE {} AND ({target}.{pos} IS NULL OR {target}.{pos} < ?{p})",
        key_eq(1),
        p = key_at.len() + 1,
    );
    let tomb_sql = format!(
        "INSERT INTO {tomb} (target_table, key, source, position, deleted_at)
           SELECT ?{t}, ?{k}, ?{s}, ?{p}, strftime('%Y-%m-%d %H:%M:%f', 'now')
           WHERE NOT EXISTS (SELECT 1 FROM {target} WHERE {} AND {target}.{pos} >= ?{p})
         ON CONFLICT (target_table, key) DO UPDATE
           SET source = excluded.source, position = excluded.position, deleted_at = excluded.deleted_at
           WHERE {tomb}.position < excluded.position",
        key_eq(1),
        p = key_at.len() + 1,
        t = key_at.len() + 2,
        k = key_at.len() + 3,
        s = key_at.len() + 4,
    );
    let refused = |e: rusqlite::Error, c: &Change| {
        let err = sqlite_error(e, format!("cannot apply a change to {target}"));
        match err.kind() {
            ErrorKind::Data => {
                Error::data(format!("record at {} refused by {target}: {err}", c.origin))
            }
            _ => err,
        }
    };
    let name = Sql::Text(g.table.to_string());
    // The statement of a change that carries every column, made once; one
    // leaving unchanged columns out is made (and cached) for its shape.
    let full_upsert = upsert_sql(&[]);
    for c in &g.changes {
        let mut values = Vec::with_capacity(n + 4);
        g.each_value(c, |col, v| {
            values.push(sql_value(&col.ty, v)?);
            Ok(())
        })?;
        let position = Sql::Blob(c.position().as_bytes().to_vec());
        let key = Sql::Blob(c.key.clone());
        if c.delete {
            let mut args: Vec<Sql> = key_at.iter().map(|&i| values[i].clone()).collect();
            args.push(position);
            tx.prepare_cached(&delete_sql)
                .and_then(|mut s| s.execute(params_from_iter(&args)))
                .map_err(|e| refused(e, c))?;
            args.extend([name.clone(), key, Sql::Text(c.source().to_string())]);
            tx.prepare_cached(&tomb_sql)
                .and_then(|mut s| s.execute(params_from_iter(&args)))
                .map_err(|e| refused(e, c))?;
        } else {
            tx.prepare_cached(&untomb_sql)
                .and_then(|mut s| s.execute(rusqlite::params![name, key, position]))
                .map_err(|e| refused(e, c))?;
            values.extend([
                Sql::Text(c.source().to_string()),
                position,
                name.clone(),
                key,
            ]);
            let sql = match c.unchanged() {
                [] => std::borrow::Cow::Borrowed(&full_upsert),
                unchanged => std::borrow::Cow::Owned(upsert_sql(unchanged)),
            };
            tx.prepare_cached(&sql)
                .and_then(|mut s| s.execute(params_from_iter(&values)))
                .map_err(|e| refused(e, c))?;
        }
    }
    Ok(())
}

/// Store `next` for `group`, inside the batch's transaction.
fn write_offsets(
    tx: &Transaction<'_>,
    group: &str,
    next: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO {} (group_id, topic, partition, next_offset, updated_at)
         VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%d %H:%M:%f', 'now'))
         ON CONFLICT (group_id, topic, partition)
         DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
        quote_ident(OFFSETS_TABLE)
    );
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(|e| sqlite_error(e, "cannot store consumed offsets"))?;
    for ((topic, partition), offset) in next {
        stmt.execute(rusqlite::params![group, topic, partition, offset])
            .map_err(|e| sqlite_error(e, "cannot store consumed offsets"))?;
    }
    Ok(())
}
