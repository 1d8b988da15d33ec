//! The dedup key of a change: 32 bytes (SHA-256) that are equal exactly when
//! two changes count as duplicates. A pure function of the change, so a
//! replay gets the same key.

use apache_avro::types::Value;
use sha2::{Digest, Sha256};
use syncline_core::digest::{text, value};
use syncline_core::ChangeEvent;

pub type Key = [u8; 32];

/// What makes two changes duplicates (see `by:` in the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupKey {
    /// The same change: equal identity (`ChangeEvent::identity_digest`:
    /// source, table, key and position; the rows of one snapshot share a
    /// position and stay apart by their keys).
    Identity,
    /// Equal operation, table and row values (before image for a delete).
    Content,
    /// Equal values of these columns.
    Fields(Vec<String>),
}

impl DedupKey {
    /// The key of `event`, or why it has none (a `fields` column missing).
    pub fn of(&self, event: &ChangeEvent) -> Result<Key, String> {
        let mut h = Sha256::new();
        match self {
            DedupKey::Identity => {
                h.update(b"i");
                h.update(event.identity_digest());
            }
            DedupKey::Content => {
                h.update(b"c");
                text(&mut h, event.op.symbol());
                text(&mut h, &event.source.table);
                for (name, v) in row(event) {
                    text(&mut h, name);
                    value(&mut h, v);
                }
            }
            DedupKey::Fields(fields) => {
                h.update(b"f");
                let row = row(event);
                for f in fields {
                    let v = row
                        .iter()
                        .find(|(n, _)| n == f)
                        .map(|(_, v)| v)
                        .ok_or_else(|| {
                            format!("the change has no column `{f}` (listed in `fields`)")
                        })?;
                    text(&mut h, f);
                    value(&mut h, v);
                }
            }
        }
        Ok(h.finalize().into())
    }

    /// The Kafka key a change gets on the repartition topic: what decides
    /// its partition there. Two rules hold:
    /// 1. duplicates meet: changes with equal dedup keys get equal
    ///    partition keys, so one partition (and its state) decides them;
    /// 2. a row's changes stay in order: for `identity` and `content` the
    ///    partition key is the row's (table and key values), so all changes
    ///    of a row travel through one partition, in their order. Equal
    ///    content means an equal table and row, hence an equal key; an
    ///    equal identity means the same change, hence the same row. The
    ///    order matters downstream: a sink fills a column the change left
    ///    out (an unchanged TOASTed value) from the row's previous state.
    ///
    /// `fields` keeps only rule 1: its partition key is the dedup key
    /// itself (two rows with equal `fields` must meet), so changes of one
    /// row whose `fields` values differ may overtake each other.
    pub fn partition_key(&self, event: &ChangeEvent) -> Result<Key, String> {
        match self {
            DedupKey::Identity | DedupKey::Content => {
                let mut h = Sha256::new();
                h.update(b"p");
                text(&mut h, &event.source.table);
                for (name, v) in &event.key {
                    text(&mut h, name);
                    value(&mut h, v);
                }
                Ok(h.finalize().into())
            }
            DedupKey::Fields(_) => self.of(event),
        }
    }
}

/// The row a change is about: after image, else before image, else the key.
fn row(event: &ChangeEvent) -> &[(String, Value)] {
    event
        .after
        .as_deref()
        .or(event.before.as_deref())
        .unwrap_or(&event.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_core::{Op, Position, SourceInfo};

    fn change(pos: i64, op: Op, id: i64, note: &str) -> ChangeEvent {
        let row = vec![
            ("id".to_string(), Value::Long(id)),
            (
                "note".to_string(),
                Value::Union(1, Box::new(Value::String(note.into()))),
            ),
        ];
        ChangeEvent {
            unchanged: Vec::new(),
            op,
            key: vec![("id".to_string(), Value::Long(id))],
            before: None,
            after: Some(row),
            source: SourceInfo {
                connector: "test".into(),
                name: "src".into(),
                db: "db".into(),
                table: "t".into(),
                position: Position::builder().i64(pos).build(),
                position_text: pos.to_string(),
                ts_us: 0,
            },
        }
    }

    #[test]
    fn identity_ignores_content_and_content_ignores_identity() {
        let a = change(1, Op::Insert, 7, "x");
        let replay = change(1, Op::Insert, 7, "x");
        let reread = change(2, Op::Insert, 7, "x");
        let edited = change(3, Op::Update, 7, "y");
        let id = DedupKey::Identity;
        let content = DedupKey::Content;
        assert_eq!(id.of(&a), id.of(&replay));
        assert_ne!(id.of(&a), id.of(&reread));
        assert_eq!(content.of(&a), content.of(&reread));
        assert_ne!(content.of(&a), content.of(&edited));
        // The operation is part of the content.
        assert_ne!(content.of(&a), content.of(&change(2, Op::Update, 7, "x")));
    }

    /// Every row of a snapshot is at the snapshot's position: their keys
    /// (and tables) keep them apart, so none is dropped as a duplicate.
    #[test]
    fn rows_sharing_a_position_are_different_changes() {
        let id = DedupKey::Identity;
        let a = change(5, Op::Read, 1, "x");
        let b = change(5, Op::Read, 2, "x");
        assert_ne!(id.of(&a), id.of(&b));
        let mut other_table = a.clone();
        other_table.source.table = "u".into();
        assert_ne!(id.of(&a), id.of(&other_table));
    }

    #[test]
    fn fields_compare_only_the_listed_columns() {
        let by_note = DedupKey::Fields(vec!["note".into()]);
        assert_eq!(
            by_note.of(&change(1, Op::Insert, 1, "x")),
            by_note.of(&change(2, Op::Update, 2, "x"))
        );
        assert_ne!(
            by_note.of(&change(1, Op::Insert, 1, "x")),
            by_note.of(&change(1, Op::Insert, 1, "y"))
        );
        let missing = DedupKey::Fields(vec!["nope".into()]);
        assert!(missing
            .of(&change(1, Op::Insert, 1, "x"))
            .unwrap_err()
            .contains("`nope`"));
    }

    #[test]
    fn null_and_text_null_differ() {
        let mut a = change(1, Op::Insert, 1, "x");
        let mut b = a.clone();
        a.after.as_mut().unwrap()[1].1 = Value::Union(0, Box::new(Value::Null));
        b.after.as_mut().unwrap()[1].1 = Value::Union(1, Box::new(Value::String("null".into())));
        assert_ne!(DedupKey::Content.of(&a), DedupKey::Content.of(&b));
    }

    #[test]
    fn a_rows_changes_share_a_partition_key_and_duplicates_meet() {
        for by in [DedupKey::Identity, DedupKey::Content] {
            let first = change(1, Op::Insert, 7, "x");
            let later = change(2, Op::Update, 7, "y");
            let other_row = change(3, Op::Update, 8, "y");
            // every change of row 7, whatever its content or identity
            assert_eq!(by.partition_key(&first), by.partition_key(&later));
            assert_ne!(by.partition_key(&later), by.partition_key(&other_row));
            // the same row in another table is another row
            let mut elsewhere = later.clone();
            elsewhere.source.table = "u".into();
            assert_ne!(by.partition_key(&later), by.partition_key(&elsewhere));
        }
        // duplicates by content: a re-read of row 7 at another position
        let reread = change(9, Op::Update, 7, "y");
        let by = DedupKey::Content;
        assert_eq!(
            by.of(&change(2, Op::Update, 7, "y")),
            by.of(&reread),
            "a duplicate"
        );
        assert_eq!(
            by.partition_key(&change(2, Op::Update, 7, "y")),
            by.partition_key(&reread)
        );
        // `fields`: rows with equal fields must meet, so the dedup key decides
        let by_note = DedupKey::Fields(vec!["note".into()]);
        let a = change(1, Op::Insert, 1, "x");
        let b = change(2, Op::Insert, 2, "x");
        assert_eq!(by_note.partition_key(&a), by_note.partition_key(&b));
        assert_eq!(by_note.partition_key(&a), by_note.of(&a));
    }
}
