//! TRUNCATE: one change to every row of a table.
//!
//! A source publishes a TRUNCATE as one keyless record with position `P`,
//! sent to every partition of the table's topic (see
//! `syncline_core::kafka::partitions_of`). Inside the batch's transaction
//! the sink applies it as:
//! 1. delete every row of the target table that this source wrote with a
//!    position lower than `P`, and every row of unknown position (rows no
//!    syncline sink wrote); rows written by other sources stay;
//! 2. drop the batch's other changes of that table and source older than
//!    `P` (they happened before the truncate), and apply the rest as usual.
//!
//! # Why it is exactly once, whatever the order of partitions
//! - In each partition the truncate's copy comes after every change of that
//!   partition's keys that the source made before it. So once every
//!   partition's copy is applied, no row older than `P` is left, however far
//!   apart the partitions are.
//! - Applying a copy again (a replay, or the copy of another partition)
//!   deletes nothing that should stay: rows newer than `P` are kept.
//! - Rows are compared by position, not by arrival: a change newer than `P`
//!   that arrived before the truncate (from a partition that is ahead) stays.
//! - The delete commits with the batch's offsets, so a crash replays the
//!   copy or finds it applied.
//!
//! While partitions are apart, a lagging partition may still write a row
//! older than `P` after another partition's copy was applied; its own copy
//! removes it. Tombstones are kept: they only hold back changes older than
//! themselves.
//!
//! With `on_truncate: ignore` the sink skips truncates (logging each) and
//! the target keeps its rows.

use super::ddl::{qualified, quote_ident, POSITION_COLUMN, SOURCE_COLUMN};
use super::pg_error;
use std::collections::BTreeMap;
use std::sync::Arc;
use syncline_core::{Position, Result};
use tokio_postgres::Transaction;

/// The newest truncate per (target table, source) in a batch.
pub type Floors = BTreeMap<(Arc<str>, String), Position>;

/// The newest of `truncates` (table, source, position) per (table, source).
pub fn floors<'a>(
    truncates: impl Iterator<Item = (&'a Arc<str>, &'a str, &'a Position)>,
) -> Floors {
    let mut out = Floors::new();
    for (table, source, p) in truncates {
        let k = (table.clone(), source.to_string());
        match out.get(&k) {
            Some(have) if have >= p => {}
            _ => {
                out.insert(k, p.clone());
            }
        }
    }
    out
}

/// Whether a change of `table` from `source` at `position` happened before
/// a truncate of the batch (and is superseded by it).
pub fn superseded(floors: &Floors, table: &Arc<str>, source: &str, position: &Position) -> bool {
    floors
        .get(&(table.clone(), source.to_string()))
        .is_some_and(|p| position < p)
}

/// Step 1 of the module docs, for every floor, in `tx`. A table that does not
/// exist yet has nothing to delete.
pub async fn apply(tx: &Transaction<'_>, schema: &str, floors: &Floors) -> Result<()> {
    let (src, pos) = (quote_ident(SOURCE_COLUMN), quote_ident(POSITION_COLUMN));
    for ((table, source), position) in floors {
        let target = qualified(schema, table);
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&target])
            .await
            .map_err(|e| pg_error(e, "cannot look up a target table"))?
            .get(0);
        if !exists {
            continue;
        }
        let deleted = tx
            .execute(
                &format!("DELETE FROM {target} WHERE {pos} IS NULL OR ({src} = $1 AND {pos} < $2)"),
                &[source, &position.as_bytes()],
            )
            .await
            .map_err(|e| pg_error(e, format!("cannot apply a TRUNCATE to {target}")))?;
        tracing::info!(table = %target, source = %source, position = ?position, rows_deleted = deleted,
            "postgres sink: TRUNCATE applied");
    }
    Ok(())
}
