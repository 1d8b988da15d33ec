//! Where a table's polling stands (its cursor), how a change's position is
//! derived from it, and where the cursor is kept between runs.
//!
//! # Position of a change
//! `position = (cursor parts…, key parts…)`, encoded so that bytewise order
//! equals the order of the parts. Reading the same row state again yields
//! the same cursor values and key, hence the same position (the identity a
//! sink uses to drop replays); an update moves the cursor forward (a newer
//! timestamp, or a new id), hence a greater position for that key.
//!
//! # Durability (the guarantee, implemented by [`CursorStore::store`] and its caller)
//! The cursor of a table is written to the compacted topic `_syncline_cursors`
//! only after the broker has acknowledged every record of the batch it
//! covers. After a crash the source therefore republishes at most the last
//! batch that was not fully acknowledged, and with the same identities
//! (same rows, same cursor values, same positions), so sinks drop the replays.

use crate::state::JsonState;
use apache_avro::types::Value;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use syncline_core::kafka::KafkaConfig;
use syncline_core::{Position, Result};

/// The compacted topic holding every sql_poll cursor (key `<pipeline>/<source>/<table>`).
pub use crate::state::STATE_TOPIC as CURSOR_TOPIC;

/// One value of a cursor column.
///
/// The variant order is the comparison order (integers before text), which is
/// also SQLite's order between storage classes; Postgres cursors are always
/// integers (ids, or timestamps as microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CursorPart {
    Int(i64),
    Text(String),
}

/// The values of a table's cursor columns for one row: `[id]` in incrementing
/// mode, `[timestamp, id]` in timestamp mode. Compared lexicographically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub Vec<CursorPart>);

impl Cursor {
    /// Readable form for logs and `position_text`, e.g. `(1732600000000000, 42)`.
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| match p {
                CursorPart::Int(i) => i.to_string(),
                CursorPart::Text(s) => format!("{s:?}"),
            })
            .collect();
        format!("({})", parts.join(", "))
    }
}

const TAG_NULL: u8 = 0x00;
const TAG_INT: u8 = 0x01;
const TAG_TEXT: u8 = 0x02;
const TAG_BYTES: u8 = 0x03;

fn tag(b: syncline_core::change::PositionBuilder, t: u8) -> syncline_core::change::PositionBuilder {
    b.u64(u64::from(t)) // a whole u64 keeps the parts aligned; only its order matters
}

/// The position of a row read at `cursor` with key values `key`.
pub fn row_position(cursor: &Cursor, key: &[(String, Value)]) -> Position {
    let mut b = Position::builder();
    for part in &cursor.0 {
        b = match part {
            CursorPart::Int(i) => tag(b, TAG_INT).i64(*i),
            CursorPart::Text(s) => tag(b, TAG_TEXT).str(s),
        };
    }
    b = encode_key_into(b, key);
    b.build()
}

/// The position of the delete of a key last published at `last`: `last`
/// followed by one 0xFF byte. It sorts after `last` (a longer string with
/// the same prefix), and before the position of any later row state of the
/// key, because a later state has a greater cursor and therefore differs from
/// `last` at a byte inside `last` (the cursor parts come first). Deriving it
/// from `last` makes a re-detected delete (after a crash) keep its identity.
pub fn delete_position(last: &Position) -> Position {
    let mut bytes = last.as_bytes().to_vec();
    bytes.push(0xFF);
    Position::from_bytes(bytes)
}

/// A deterministic byte encoding of key values (also used as the map key of
/// published keys for delete detection). Equal values give equal bytes
/// whether they come from the database or were decoded back from Kafka.
pub fn encode_key(key: &[(String, Value)]) -> Vec<u8> {
    encode_key_into(Position::builder(), key)
        .build()
        .into_bytes()
}

fn encode_key_into(
    mut b: syncline_core::change::PositionBuilder,
    key: &[(String, Value)],
) -> syncline_core::change::PositionBuilder {
    for (_, v) in key {
        let v = syncline_core::value::unwrap_union(v);
        b = match v {
            None => tag(b, TAG_NULL),
            Some(Value::Int(i)) | Some(Value::Date(i)) => tag(b, TAG_INT).i64(i64::from(*i)),
            Some(Value::Long(i))
            | Some(Value::TimeMicros(i))
            | Some(Value::TimestampMicros(i))
            | Some(Value::LocalTimestampMicros(i)) => tag(b, TAG_INT).i64(*i),
            Some(Value::Boolean(x)) => tag(b, TAG_INT).i64(i64::from(*x)),
            Some(Value::String(s)) | Some(Value::Enum(_, s)) => tag(b, TAG_TEXT).str(s),
            Some(Value::Uuid(u)) => tag(b, TAG_TEXT).str(&u.hyphenated().to_string()),
            Some(Value::Bytes(x)) | Some(Value::Fixed(_, x)) => tag(b, TAG_BYTES).bytes(x),
            Some(d @ Value::Decimal(_)) => {
                tag(b, TAG_BYTES).bytes(&syncline_core::value::decimal_bytes(d).unwrap_or_default())
            }
            Some(other) => tag(b, TAG_TEXT).str(&format!("{other:?}")),
        };
    }
    b
}

/// Readable key values for `position_text`, e.g. `id=42`.
pub fn key_text(key: &[(String, Value)]) -> String {
    key.iter()
        .map(|(n, v)| match syncline_core::value::unwrap_union(v) {
            None => format!("{n}=null"),
            Some(Value::String(s)) => format!("{n}={s:?}"),
            Some(Value::Int(i)) => format!("{n}={i}"),
            Some(Value::Long(i)) => format!("{n}={i}"),
            Some(Value::Uuid(u)) => format!("{n}={u}"),
            Some(other) => format!("{n}={other:?}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What `_syncline_cursors` holds for one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCursor {
    /// The cursor columns, so that a changed configuration is noticed
    /// instead of resuming from values of another column.
    pub columns: Vec<String>,
    /// The greatest cursor whose rows are all acknowledged by the broker.
    pub cursor: Cursor,
}

/// Cursors of one source in the compacted topic [`CURSOR_TOPIC`].
#[derive(Clone)]
pub struct CursorStore(JsonState<StoredCursor>);

impl CursorStore {
    pub fn new(kafka: KafkaConfig, pipeline: &str, source: &str) -> Self {
        Self(JsonState::new(
            kafka,
            format!("{pipeline}/{source}/"),
            "sql_poll cursor",
        ))
    }

    pub fn key(&self, table: &str) -> String {
        self.0.key(table)
    }

    /// Every cursor of this source, by table name (the latest value per key;
    /// a tombstone removes a cursor, which is how an operator resets one).
    pub async fn restore(&self) -> Result<HashMap<String, StoredCursor>> {
        self.0.restore().await
    }

    /// Store `cursor` for `table` and wait for the broker's acknowledgement.
    /// Call it only once every record up to `cursor` is acknowledged (see the
    /// module documentation for the guarantee this gives).
    pub async fn store(
        &self,
        producer: &FutureProducer,
        table: &str,
        stored: &StoredCursor,
    ) -> Result<()> {
        self.0.store(producer, table, Some(stored)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64) -> Vec<(String, Value)> {
        vec![("id".to_string(), Value::Long(id))]
    }

    #[test]
    fn positions_follow_the_cursor_then_the_key() {
        let p = |c: Vec<CursorPart>, k: i64| row_position(&Cursor(c), &key(k));
        use CursorPart::*;
        assert!(p(vec![Int(-5)], 9) < p(vec![Int(3)], 1));
        assert!(p(vec![Int(3)], 1) < p(vec![Int(3)], 2));
        assert!(p(vec![Int(1_000), Int(9)], 1) < p(vec![Int(1_001), Int(0)], 1));
        assert!(
            p(vec![Text("2024-01-01 10:00:00".into())], 1)
                < p(vec![Text("2024-01-01 10:00:00.5".into())], 1)
        );
        // integers before text, as SQLite orders storage classes
        assert!(p(vec![Int(i64::MAX)], 1) < p(vec![Text(String::new())], 1));
    }

    #[test]
    fn same_row_state_same_position() {
        let c = Cursor(vec![
            CursorPart::Int(1_732_600_000_000_000),
            CursorPart::Int(7),
        ]);
        assert_eq!(row_position(&c, &key(7)), row_position(&c.clone(), &key(7)));
        // a key decoded back from Kafka (wrapped in a nullable union) encodes the same
        let wrapped = vec![("id".to_string(), Value::Union(1, Box::new(Value::Long(7))))];
        assert_eq!(encode_key(&key(7)), encode_key(&wrapped));
    }

    #[test]
    fn delete_sorts_between_last_state_and_any_later_state() {
        let last = row_position(&Cursor(vec![CursorPart::Int(10)]), &key(3));
        let del = delete_position(&last);
        let later = row_position(&Cursor(vec![CursorPart::Int(11)]), &key(3));
        assert!(last < del && del < later);
        let later_text = row_position(&Cursor(vec![CursorPart::Text("b".into())]), &key(3));
        let last_text = row_position(&Cursor(vec![CursorPart::Text("a".into())]), &key(3));
        assert!(delete_position(&last_text) < later_text);
        // an extension of the text ("a" -> "ab") is later too: the terminator 0x00 0x00 sorts first
        let ext = row_position(&Cursor(vec![CursorPart::Text("ab".into())]), &key(3));
        assert!(delete_position(&last_text) < ext);
    }

    #[test]
    fn cursor_compares_lexicographically_and_serializes_plainly() {
        use CursorPart::*;
        assert!(Cursor(vec![Int(5), Int(100)]) < Cursor(vec![Int(6), Int(0)]));
        let stored = StoredCursor {
            columns: vec!["ts".into(), "id".into()],
            cursor: Cursor(vec![Text("x".into()), Int(4)]),
        };
        let json = serde_json::to_string(&stored).unwrap();
        assert_eq!(json, r#"{"columns":["ts","id"],"cursor":["x",4]}"#);
        assert_eq!(serde_json::from_str::<StoredCursor>(&json).unwrap(), stored);
    }
}
