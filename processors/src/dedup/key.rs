//! The dedup key of a change: 32 bytes (SHA-256) that are equal exactly when
//! two changes count as duplicates. A pure function of the change, so a
//! replay gets the same key.

use apache_avro::types::Value;
use sha2::{Digest, Sha256};
use syncline_core::ChangeEvent;

pub type Key = [u8; 32];

/// What makes two changes duplicates (see `by:` in the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupKey {
    /// The same change: equal `source.name` and `source.position`.
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
                text(&mut h, &event.source.name);
                bytes(&mut h, event.source.position.as_bytes());
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

fn bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

fn text(h: &mut Sha256, s: &str) {
    bytes(h, s.as_bytes());
}

/// Feed a value in a form that is equal exactly when the values are: a tag
/// per kind, lengths before variable parts, map entries in key order, and a
/// union's branch index left out (a nullable column and its non-null
/// schema version hash alike).
fn value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Union(_, inner) => value(h, inner),
        Value::Null => h.update(b"n"),
        Value::Boolean(b) => h.update(if *b { b"T" } else { b"F" }),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            h.update(b"b");
            bytes(h, b);
        }
        Value::String(s) | Value::Enum(_, s) => {
            h.update(b"s");
            text(h, s);
        }
        Value::Array(items) => {
            h.update(b"a");
            h.update((items.len() as u64).to_be_bytes());
            for i in items {
                value(h, i);
            }
        }
        Value::Map(m) => {
            h.update(b"m");
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            h.update((entries.len() as u64).to_be_bytes());
            for (k, v) in entries {
                text(h, k);
                value(h, v);
            }
        }
        Value::Record(fields) => {
            h.update(b"r");
            h.update((fields.len() as u64).to_be_bytes());
            for (k, v) in fields {
                text(h, k);
                value(h, v);
            }
        }
        // Scalars: their Debug text names the kind and the exact value
        // (integers, floats with shortest round-trip digits, decimals'
        // unscaled bytes, timestamps' units).
        other => {
            h.update(b"v");
            text(h, &format!("{other:?}"));
        }
    }
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
