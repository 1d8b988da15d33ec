//! A change to one row, and the identity that makes every stage replay-safe.
//!
//! # The identity
//! Every change carries `(source name, position)`. A source produces the same
//! identity when it reads the same change again (after a crash, a restart or a
//! re-poll), and for one key a later change has a greater position. That is
//! the whole exactly-once argument of syncline, and it needs nothing from the
//! broker (no Kafka transactions, see docs/delivery.md):
//! - a stage that replays input emits outputs with the same identities;
//! - a sink applies a change to a row only if its position is greater than the
//!   position the row already holds, so a replay can neither duplicate nor
//!   regress a row.
//!
//! # Deletes
//! A delete is an explicit change (`op = DELETE`, `after = null`) with its own
//! position, not a Kafka tombstone: a tombstone has no position, so a sink
//! could not tell an old delete from a new one.

use apache_avro::types::Value;
use std::fmt;

/// Kafka header of a change record listing (comma-separated) the columns
/// whose value did not change and is not carried by the record: Postgres
/// does not log an unchanged TOASTed value, so a CDC source cannot know it.
/// The record holds null for them; a sink keeps the value the target row
/// already has for those columns (never the null placeholder).
pub const UNCHANGED_HEADER: &str = "syncline.unchanged";

/// Kafka header carrying a record's original Kafka key through a dedup
/// repartition topic (whose Kafka key is the dedup key).
pub const ORIGINAL_KEY_HEADER: &str = "syncline.key";

/// The columns an [`UNCHANGED_HEADER`] value names (comma-separated; an
/// absent or non-UTF-8 header names none).
pub fn unchanged_columns(header: Option<&[u8]>) -> Vec<String> {
    header
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What happened to the row (the `syncline.Op` enum in schemas/syncline.Op.avsc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    /// The source only sees the current row and cannot tell insert from update.
    Upsert,
    Delete,
    /// A row read by an initial snapshot.
    Read,
    Truncate,
}

impl Op {
    /// Symbols in the order of schemas/syncline.Op.avsc.
    pub const SYMBOLS: [&'static str; 6] =
        ["INSERT", "UPDATE", "UPSERT", "DELETE", "READ", "TRUNCATE"];

    pub fn symbol(self) -> &'static str {
        Self::SYMBOLS[self.index()]
    }
    pub fn index(self) -> usize {
        match self {
            Op::Insert => 0,
            Op::Update => 1,
            Op::Upsert => 2,
            Op::Delete => 3,
            Op::Read => 4,
            Op::Truncate => 5,
        }
    }
    pub fn from_symbol(s: &str) -> Option<Op> {
        Some(match s {
            "INSERT" => Op::Insert,
            "UPDATE" => Op::Update,
            "UPSERT" => Op::Upsert,
            "DELETE" => Op::Delete,
            "READ" => Op::Read,
            "TRUNCATE" => Op::Truncate,
            _ => return None,
        })
    }
    /// Whether a sink removes the row for this change.
    pub fn removes_row(self) -> bool {
        matches!(self, Op::Delete)
    }
}

/// An order-preserving byte string: for two changes of the same key, the later
/// one has the bytewise-greater position. Sinks store it next to the row and
/// compare with `memcmp` (Postgres `bytea` comparison is exactly that).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(Vec<u8>);

impl Position {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    /// Start building a position from ordered parts.
    pub fn builder() -> PositionBuilder {
        PositionBuilder(Vec::new())
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", hex::encode(&self.0))
    }
}

/// Appends parts so that bytewise order of the result equals the
/// lexicographic order of the parts.
pub struct PositionBuilder(Vec<u8>);

impl PositionBuilder {
    /// A signed integer, fixed width, sign bit flipped so that bytes sort like numbers.
    pub fn i64(mut self, v: i64) -> Self {
        self.0
            .extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A byte string of any length, escaped (0x00 -> 0x00 0xFF) and terminated
    /// by 0x00 0x00, so that shorter prefixes sort first and parts never run together.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        for &b in v {
            self.0.push(b);
            if b == 0 {
                self.0.push(0xFF);
            }
        }
        self.0.extend_from_slice(&[0, 0]);
        self
    }
    pub fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }
    pub fn build(self) -> Position {
        Position(self.0)
    }
}

/// Where a change came from: the `syncline.Source` record.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Source kind, e.g. `sql_poll`.
    pub connector: String,
    /// Source name in the pipeline file.
    pub name: String,
    pub db: String,
    pub table: String,
    pub position: Position,
    /// The same position, readable.
    pub position_text: String,
    /// Commit time when known, otherwise the time the change was read (µs since epoch).
    pub ts_us: i64,
}

/// One change to one row: the Kafka key is `key`, the value is the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    /// Primary-key columns, in key-schema order.
    pub key: Vec<(String, Value)>,
    pub before: Option<Vec<(String, Value)>>,
    pub after: Option<Vec<(String, Value)>>,
    pub source: SourceInfo,
    /// Columns of `after` whose value did not change and is not carried
    /// (`after` holds null for them): a CDC source cannot read an unchanged
    /// TOASTed value. Every stage carries this with the change (a processor
    /// renames or drops them with their columns); on the wire it is the
    /// [`UNCHANGED_HEADER`]. A sink keeps the target's value for them.
    pub unchanged: Vec<String>,
}

impl ChangeEvent {
    /// The identity of this change: same change read twice, same identity.
    /// A position orders the changes of one key; several keys may share one
    /// (every row of a snapshot is at the snapshot's position, and two
    /// tables' rows in one transaction may have equal keys), so what names
    /// one change is the source, its table, its key and its position: see
    /// [`ChangeEvent::identity_digest`].
    pub fn identity(&self) -> (&str, &Position) {
        (&self.source.name, &self.source.position)
    }

    /// SHA-256 of the change's identity: source name, database, table, key
    /// values and position, canonical (`crate::digest`). Equal for the same
    /// change however often it is read, published or delivered; different
    /// for any two changes, including rows of one snapshot.
    pub fn identity_digest(&self) -> [u8; 32] {
        use crate::digest::{bytes, text};
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.row_digest());
        text(&mut h, &self.source.name);
        bytes(&mut h, self.source.position.as_bytes());
        h.finalize().into()
    }

    /// SHA-256 of the row this change is about: database, table and key
    /// values (canonical), without the source or position.
    pub fn row_digest(&self) -> [u8; 32] {
        use crate::digest::{text, value};
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        text(&mut h, &self.source.db);
        text(&mut h, &self.source.table);
        for (name, v) in &self.key {
            text(&mut h, name);
            value(&mut h, v);
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unchanged_header_names_its_columns() {
        assert_eq!(unchanged_columns(Some(b"a,b")), ["a", "b"]);
        assert_eq!(unchanged_columns(Some(b",a,,")), ["a"]);
        assert!(unchanged_columns(Some(b"")).is_empty());
        assert!(unchanged_columns(Some(b"\xff")).is_empty());
        assert!(unchanged_columns(None).is_empty());
    }

    #[test]
    fn integer_positions_sort_like_numbers() {
        let vals = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let pos: Vec<_> = vals
            .iter()
            .map(|&v| Position::builder().i64(v).build())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn byte_parts_sort_lexicographically_and_never_run_together() {
        let a = Position::builder().str("ab").i64(9).build();
        let b = Position::builder().str("abc").i64(0).build();
        let c = Position::builder().bytes(&[b'a', 0]).i64(0).build();
        assert!(a < b, "a shorter string sorts first, whatever follows");
        assert!(c < a, "\"a\\0\" sorts before \"ab\", as strings do");
    }
}
