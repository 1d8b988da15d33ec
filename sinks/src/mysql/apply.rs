//! Writing one batch into MySQL / MariaDB: newest change per key, staged
//! with multi-row inserts into a temporary table, applied with conditional
//! upserts and deletes, offsets stored, all in one transaction. The rules
//! that make it exactly once are `crate::table`'s; this is their MySQL form:
//! - a `TEMPORARY` staging table per (table, row shape), per connection,
//!   filled by prepared multi-row `INSERT`s (up to 65,535 parameters each);
//! - unchanged (TOASTed) columns filled from the target row by one `UPDATE
//!   stage JOIN target`;
//! - the tombstones older than the upserts deleted; for the upserts, one
//!   `UPDATE target JOIN stage` of the rows whose position is lower, then
//!   one `INSERT ... SELECT` of the keys the target lacks, both skipping
//!   keys with a tombstone as new or newer (not `ON DUPLICATE KEY UPDATE`,
//!   which takes a conflict on any unique index for one on the key; a
//!   concurrent insert of the same key is retried, see `mysql_error`);
//! - one `DELETE target JOIN stage` of older rows, and the tombstones
//!   written unless the row held something newer;
//! - the offsets upserted, then `COMMIT`.
//!
//! Tombstones are keyed by the SHA-256 of the canonical key bytes (the key
//! itself can be longer than an index allows). The session runs with
//! `READ COMMITTED` (fewer gap locks between instances), a strict
//! `sql_mode` (a value that does not fit is an error, never silently cut)
//! and `time_zone = '+00:00'`.

use super::ddl::{self, Evolution};
use super::quote;
use super::values::sql_value;
use crate::table::{
    self, Change, Floors, Group, TopicPartition, OFFSETS_TABLE, POSITION_COLUMN, SOURCE_COLUMN,
    TOMBSTONES_TABLE,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, TxOpts, Value as My};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use syncline_core::connect::mysql::Mysql;
use syncline_core::error::mysql::mysql_error;
use syncline_core::{Error, ErrorKind, Result};

/// Most parameters MySQL takes in one prepared statement.
const MAX_PARAMS: usize = 65_535;

/// Connect and set the session up (see the module docs).
pub async fn connect(mysql: &Mysql) -> Result<Conn> {
    let mut conn = mysql.connect("the target MySQL").await?;
    conn.query_drop(
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO',
             SESSION time_zone = '+00:00';
         SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )
    .await
    .map_err(|e| mysql_error(e, "cannot set up the MySQL session"))?;
    Ok(conn)
}

/// The stored offsets of `group` for `topics`.
pub async fn read_offsets(
    conn: &mut Conn,
    group: &str,
    topics: &[String],
) -> Result<HashMap<TopicPartition, i64>> {
    let rows: Vec<(String, i32, i64)> = conn
        .exec(
            format!(
                "SELECT `topic`, `partition`, `next_offset` FROM {} WHERE `group_id` = ?",
                quote(OFFSETS_TABLE)
            ),
            (group,),
        )
        .await
        .map_err(|e| mysql_error(e, "cannot read stored offsets"))?;
    Ok(rows
        .into_iter()
        .filter(|(t, _, _)| topics.contains(t))
        .map(|(t, p, o)| ((t, p), o))
        .collect())
}

/// The batch-writing half of the sink: one connection, the tables it has
/// checked and the staging tables it has created on it.
pub struct Writer {
    conn: Conn,
    group: String,
    evolution: Evolution,
    /// (table, value schema id) pairs whose target table is known to fit.
    ready: HashSet<(Arc<str>, u32)>,
    /// (table, value schema id) -> temporary staging table.
    stages: HashMap<(Arc<str>, u32), String>,
}

impl Writer {
    pub fn new(conn: Conn, group: String, evolution: Evolution) -> Writer {
        Writer {
            conn,
            group,
            evolution,
            ready: HashSet::new(),
            stages: HashMap::new(),
        }
    }

    pub fn connection(&mut self) -> &mut Conn {
        &mut self.conn
    }

    pub fn into_connection(self) -> Conn {
        self.conn
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
            staged.push((g, stage));
        }
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| mysql_error(e, "cannot begin a transaction"))?;
        truncate(&mut tx, &floors).await?;
        for (g, stage) in staged {
            apply_group(&mut tx, g, &stage).await?;
        }
        write_offsets(&mut tx, &self.group, next).await?;
        tx.commit()
            .await
            .map_err(|e| mysql_error(e, "cannot commit the batch"))
    }

    /// Make sure the target table fits `g`'s shape and a staging table exists.
    async fn prepare(&mut self, g: &Group<'_>) -> Result<String> {
        let id = (g.table.clone(), g.schema_id);
        if !self.ready.contains(&id) {
            ddl::ensure_table(&mut self.conn, &g.table, &g.columns, &g.key, self.evolution)
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
        let stage = format!("syncline_stage_{}", self.stages.len());
        let types = ddl::sql_types(&g.columns, &g.key);
        let mut defs: Vec<String> = g
            .columns
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), types[&c.name]))
            .collect();
        defs.extend([
            format!("{} text", quote(SOURCE_COLUMN)),
            format!("{} blob", quote(POSITION_COLUMN)),
            "`_syncline_key` blob".into(),
            "`_syncline_key_hash` binary(32)".into(),
            "`_syncline_delete` tinyint(1)".into(),
            "`_syncline_unchanged` text".into(),
        ]);
        // Kept for the connection's life; emptied at the start of each use.
        let sql = format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} ({}) {}",
            quote(&stage),
            defs.join(", "),
            ddl::TABLE_OPTIONS
        );
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| mysql_error(e, "cannot create a staging table"))?;
        self.stages.insert(id, stage.clone());
        Ok(stage)
    }
}

/// Every truncate of the batch (see `crate::table`).
async fn truncate(tx: &mut mysql_async::Transaction<'_>, floors: &Floors) -> Result<()> {
    let (src, pos) = (quote(SOURCE_COLUMN), quote(POSITION_COLUMN));
    for ((table, source), position) in floors {
        let exists: Option<i64> = tx
            .exec_first(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (table.as_ref(),),
            )
            .await
            .map_err(|e| mysql_error(e, "cannot look up a target table"))?;
        if exists.is_none() {
            continue;
        }
        let target = quote(table);
        tx.exec_drop(
            format!("DELETE FROM {target} WHERE {pos} IS NULL OR ({src} = ? AND {pos} < ?)"),
            (source.as_str(), position.as_bytes()),
        )
        .await
        .map_err(|e| mysql_error(e, format!("cannot apply a TRUNCATE to {target}")))?;
        tracing::info!(table = %target, source = %source, position = ?position, rows_deleted = tx.affected_rows(),
            "mysql sink: TRUNCATE applied");
    }
    Ok(())
}

/// The staged row of each change: its columns, then source, position, key,
/// key hash, delete, unchanged (`,a,b,`).
fn stage_rows(g: &Group<'_>) -> Result<Vec<Vec<My>>> {
    let mut rows = Vec::with_capacity(g.changes.len());
    for c in &g.changes {
        let mut values = Vec::with_capacity(g.columns.len() + 6);
        g.each_value(c, |col, v| {
            values.push(sql_value(&col.ty, v)?);
            Ok(())
        })?;
        values.push(My::Bytes(c.source().as_bytes().to_vec()));
        values.push(My::Bytes(c.position().as_bytes().to_vec()));
        values.push(My::Bytes(c.key.clone()));
        values.push(My::Bytes(Sha256::digest(&c.key).to_vec()));
        values.push(My::Int(i64::from(c.delete)));
        values.push(match c.unchanged() {
            [] => My::NULL,
            names => My::Bytes(format!(",{},", names.join(",")).into_bytes()),
        });
        rows.push(values);
    }
    Ok(rows)
}

/// Stage `g`'s changes and apply them, inside `tx`.
async fn apply_group(
    tx: &mut mysql_async::Transaction<'_>,
    g: &Group<'_>,
    stage: &str,
) -> Result<()> {
    let rows = stage_rows(g)?;
    let stage_q = quote(stage);
    let refused = |e: mysql_async::Error, what: &str| {
        let err = mysql_error(e, format!("{what} {}", quote(&g.table)));
        match err.kind() {
            ErrorKind::Data => Error::data(format!("{err} (one of the records at {})", g.span())),
            _ => err,
        }
    };
    tx.query_drop(format!("DELETE FROM {stage_q}"))
        .await
        .map_err(|e| mysql_error(e, "cannot empty the staging table"))?;
    let width = g.columns.len() + 6;
    let per_statement = (MAX_PARAMS / width).clamp(1, 1000);
    let row_marks = format!("({})", vec!["?"; width].join(", "));
    for chunk in rows.chunks(per_statement) {
        let sql = format!(
            "INSERT INTO {stage_q} VALUES {}",
            vec![row_marks.as_str(); chunk.len()].join(", ")
        );
        let params: Vec<My> = chunk.iter().flatten().cloned().collect();
        tx.exec_drop(sql, Params::Positional(params))
            .await
            .map_err(|e| refused(e, "the target refused a record for"))?;
    }
    for sql in apply_sql(g, stage) {
        tx.query_drop(sql)
            .await
            .map_err(|e| refused(e, "cannot apply a batch to"))?;
    }
    Ok(())
}

/// The statements that apply a staged group (only those it needs), each
/// conditional on positions (see the module docs).
fn apply_sql(g: &Group<'_>, stage: &str) -> Vec<String> {
    let target = quote(&g.table);
    let stage = quote(stage);
    let tomb = quote(TOMBSTONES_TABLE);
    let tname = format!("'{}'", g.table.replace('\\', "\\\\").replace('\'', "''"));
    let pos = quote(POSITION_COLUMN);
    let src = quote(SOURCE_COLUMN);
    let cols: Vec<String> = g.columns.iter().map(|c| quote(&c.name)).collect();
    let col_list = cols.join(", ");
    let key_eq = g
        .key
        .iter()
        .map(|k| format!("t.{k} = s.{k}", k = quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut sql = Vec::new();
    let has_upserts = g.changes.iter().any(|c| !c.delete);
    let has_deletes = g.changes.iter().any(|c| c.delete);
    let unchanged = g.unchanged_columns();
    if has_upserts && !unchanged.is_empty() {
        let sets: Vec<String> = unchanged
            .iter()
            .map(|n| {
                let lit = format!("',{},'", n.replace('\\', "\\\\").replace('\'', "''"));
                format!(
                    "s.{c} = IF(LOCATE({lit}, s.`_syncline_unchanged`) > 0, t.{c}, s.{c})",
                    c = quote(n)
                )
            })
            .collect();
        sql.push(format!(
            "UPDATE {stage} s JOIN {target} t ON {key_eq} SET {}
             WHERE NOT s.`_syncline_delete` AND s.`_syncline_unchanged` IS NOT NULL",
            sets.join(", ")
        ));
    }
    if has_upserts {
        sql.push(format!(
            "DELETE x FROM {tomb} x JOIN {stage} s
               ON x.`target_table` = {tname} AND x.`key_hash` = s.`_syncline_key_hash`
             WHERE NOT s.`_syncline_delete` AND x.`position` < s.{pos}"
        ));
        // Not `INSERT ... ON DUPLICATE KEY UPDATE`: MySQL takes a conflict on
        // any unique index for a conflict on the key, and would update the
        // other row in the record's place (a unique index the user added);
        // here that record is refused (1062) and dead-lettered, as by
        // Postgres's `ON CONFLICT (key)`. Rows present: updated where older;
        // then rows absent: inserted.
        let no_newer_tombstone = format!(
            "NOT EXISTS (
                 SELECT 1 FROM {tomb} x
                 WHERE x.`target_table` = {tname} AND x.`key_hash` = s.`_syncline_key_hash`
                   AND x.`position` >= s.{pos})"
        );
        let sets: Vec<String> = cols
            .iter()
            .filter(|c| !g.key.iter().any(|k| &&quote(k) == c))
            .chain([&src, &pos])
            .map(|c| format!("t.{c} = s.{c}"))
            .collect();
        sql.push(format!(
            "UPDATE {target} t JOIN {stage} s ON {key_eq} SET {}
             WHERE NOT s.`_syncline_delete` AND (t.{pos} IS NULL OR t.{pos} < s.{pos})
               AND {no_newer_tombstone}",
            sets.join(", ")
        ));
        sql.push(format!(
            "INSERT INTO {target} ({col_list}, {src}, {pos})
               SELECT {col_list}, {src}, {pos} FROM {stage} s
               WHERE NOT s.`_syncline_delete`
                 AND NOT EXISTS (SELECT 1 FROM {target} t WHERE {key_eq})
                 AND {no_newer_tombstone}"
        ));
    }
    if has_deletes {
        sql.push(format!(
            "DELETE t FROM {target} t JOIN {stage} s ON {key_eq}
             WHERE s.`_syncline_delete` AND (t.{pos} IS NULL OR t.{pos} < s.{pos})"
        ));
        let tnewer = format!("({tomb}.`position` < VALUES(`position`))");
        sql.push(format!(
            "INSERT INTO {tomb} (`target_table`, `key_hash`, `key`, `source`, `position`, `deleted_at`)
               SELECT {tname}, s.`_syncline_key_hash`, s.`_syncline_key`, s.{src}, s.{pos}, UTC_TIMESTAMP(6)
               FROM {stage} s
               WHERE s.`_syncline_delete`
                 AND NOT EXISTS (SELECT 1 FROM {target} t WHERE {key_eq} AND t.{pos} >= s.{pos})
             ON DUPLICATE KEY UPDATE
               {tomb}.`key` = IF({tnewer}, VALUES(`key`), {tomb}.`key`),
               {tomb}.`source` = IF({tnewer}, VALUES(`source`), {tomb}.`source`),
               {tomb}.`deleted_at` = IF({tnewer}, VALUES(`deleted_at`), {tomb}.`deleted_at`),
               {tomb}.`position` = IF({tnewer}, VALUES(`position`), {tomb}.`position`)"
        ));
    }
    sql
}

/// Store `next` for `group`, inside the batch's transaction.
async fn write_offsets(
    tx: &mut mysql_async::Transaction<'_>,
    group: &str,
    next: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    if next.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {} (`group_id`, `topic`, `partition`, `next_offset`, `updated_at`) VALUES {}
         ON DUPLICATE KEY UPDATE `next_offset` = VALUES(`next_offset`), `updated_at` = VALUES(`updated_at`)",
        quote(OFFSETS_TABLE),
        vec!["(?, ?, ?, ?, UTC_TIMESTAMP(6))"; next.len()].join(", ")
    );
    let params: Vec<My> = next
        .iter()
        .flat_map(|((topic, partition), offset)| {
            [
                My::Bytes(group.as_bytes().to_vec()),
                My::Bytes(topic.as_bytes().to_vec()),
                My::Int(i64::from(*partition)),
                My::Int(*offset),
            ]
        })
        .collect();
    tx.exec_drop(sql, Params::Positional(params))
        .await
        .map_err(|e| mysql_error(e, "cannot store consumed offsets"))
}
