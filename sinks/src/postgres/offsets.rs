//! Consumed offsets kept in the target database, and where to resume.
//!
//! # Why the database, not Kafka
//! The offsets a batch consumed are written by the same transaction as the
//! batch's rows (see `apply.rs`), into `syncline_offsets(group_id, topic,
//! partition, next_offset)`. Either both are committed or neither is, so the
//! database always says exactly which records its rows reflect. When
//! partitions are assigned (on start and on every rebalance), the consumer
//! starts each partition at the offset stored here. Offsets are committed
//! to Kafka as well, after the database commit and best-effort, only so lag
//! tools can show progress; they are never read back.

use super::ddl::{qualified, OFFSETS_TABLE};
use super::pg_error;
use std::collections::{BTreeMap, HashMap};
use syncline_core::Result;
use tokio_postgres::GenericClient;

/// A topic partition.
pub type TopicPartition = (String, i32);

/// Where one assigned partition resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFrom {
    /// The next offset after the last record whose effect is committed in the database.
    Stored(i64),
    /// Nothing committed yet for this partition in this group: read it all.
    /// Earlier records are never skipped, because only the database knows
    /// what has been applied, and re-applying is harmless (positions).
    Beginning,
}

/// The resume decision for newly assigned partitions: the database's offset
/// where it has one, the beginning otherwise. Kafka's committed offsets play
/// no part (they may be ahead of the database after a crash between the
/// two commits, or behind it: both would be wrong).
pub fn resume_plan(
    assigned: &[TopicPartition],
    stored: &HashMap<TopicPartition, i64>,
) -> Vec<(TopicPartition, ResumeFrom)> {
    assigned
        .iter()
        .map(|tp| {
            let from = match stored.get(tp) {
                Some(&o) if o >= 0 => ResumeFrom::Stored(o),
                _ => ResumeFrom::Beginning,
            };
            (tp.clone(), from)
        })
        .collect()
}

/// The offsets to store after a batch: one past the highest offset consumed
/// per partition (whether or not that record changed a row).
pub fn next_offsets<'a>(
    consumed: impl IntoIterator<Item = (&'a str, i32, i64)>,
) -> BTreeMap<TopicPartition, i64> {
    let mut next = BTreeMap::new();
    for (topic, partition, offset) in consumed {
        let e = next
            .entry((topic.to_string(), partition))
            .or_insert(offset + 1);
        *e = (*e).max(offset + 1);
    }
    next
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn resumes_from_the_database_or_the_beginning() {
        let stored = HashMap::from([(tp("a", 0), 42), (tp("a", 2), 0), (tp("b", 0), 7)]);
        let plan = resume_plan(&[tp("a", 0), tp("a", 1), tp("a", 2)], &stored);
        assert_eq!(
            plan,
            [
                (tp("a", 0), ResumeFrom::Stored(42)),
                (tp("a", 1), ResumeFrom::Beginning),
                (tp("a", 2), ResumeFrom::Stored(0)),
            ]
        );
    }

    #[test]
    fn a_negative_stored_offset_is_not_trusted() {
        let stored = HashMap::from([(tp("a", 0), -1001)]);
        assert_eq!(
            resume_plan(&[tp("a", 0)], &stored),
            [(tp("a", 0), ResumeFrom::Beginning)]
        );
    }

    #[test]
    fn next_offset_is_one_past_the_highest_consumed() {
        let next = next_offsets([("a", 0, 5), ("a", 0, 9), ("a", 1, 3), ("a", 0, 7)]);
        assert_eq!(next, BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 4)]));
    }
}
