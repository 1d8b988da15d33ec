//! TRUNCATE: one change to every row of a table (why this is exactly once:
//! `crate::table`).
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
//! With `on_truncate: ignore` the sink skips truncates (logging each) and
//! the target keeps its rows.

use super::ddl::{qualified, quote_ident};
use super::pg_error;
use crate::table::{Floors, POSITION_COLUMN, SOURCE_COLUMN};
use syncline_core::Result;
use tokio_postgres::Transaction;

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
