//! Consumed offsets kept in the target database, and where to resume.
//!
//! # Why the database, not Kafka
//! The offsets a batch consumed are written by the same transaction as the
//! batch's rows (see `apply.rs`), into `syncline_offsets(group_id, topic,
//! partition, next_offset)`. Either both are committed or neither is, so the
//! database always says exactly which records its rows reflect. When
//! partitions are assigned (on start and on every rebalance), the runtime
//! starts each partition at the offset stored here (or at its beginning
//! when none is: only the database knows what was applied, and applying
//! again is harmless). Kafka's committed offsets play no part: after a
//! crash between the two commits they may be ahead of the database. Offsets are committed
//! to Kafka as well, after the database commit and best-effort, only so lag
//! tools can show progress; they are never read back.

use super::ddl::qualified;
use super::pg_error;
use crate::table::OFFSETS_TABLE;
use std::collections::{BTreeMap, HashMap};
use syncline_core::Result;
use tokio_postgres::GenericClient;

pub use syncline_runtime::TopicPartition;

/// The stored offsets of `group` for `topics`.
pub async fn read(
    client: &impl GenericClient,
    schema: &str,
    group: &str,
    topics: &[String],
) -> Result<HashMap<TopicPartition, i64>> {
    let sql = format!(
        "SELECT topic, partition, next_offset FROM {} WHERE group_id = $1 AND topic = ANY($2)",
        qualified(schema, OFFSETS_TABLE)
    );
    let rows = client
        .query(&sql, &[&group, &topics])
        .await
        .map_err(|e| pg_error(e, "cannot read stored offsets"))?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// Store `next` for `group`: call it inside the batch's transaction.
pub async fn write(
    client: &impl GenericClient,
    schema: &str,
    group: &str,
    next: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let topics: Vec<&str> = next.keys().map(|(t, _)| t.as_str()).collect();
    let partitions: Vec<i32> = next.keys().map(|(_, p)| *p).collect();
    let offsets: Vec<i64> = next.values().copied().collect();
    let sql = format!(
        "INSERT INTO {} AS o (group_id, topic, partition, next_offset)
         SELECT $1, * FROM unnest($2::text[], $3::integer[], $4::bigint[])
         ON CONFLICT (group_id, topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        qualified(schema, OFFSETS_TABLE)
    );
    client
        .execute(&sql, &[&group, &topics, &partitions, &offsets])
        .await
        .map_err(|e| pg_error(e, "cannot store consumed offsets"))?;
    Ok(())
}
