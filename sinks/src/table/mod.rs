//! What every database sink shares: the change as a row operation, the
//! rules that make applying a batch exactly once, and the names of the
//! bookkeeping a target holds. A sink folder (`postgres/`, `sqlite/`) adds
//! only its dialect: DDL, value encoding, and the statements that apply a
//! [`Group`] and store the offsets in one transaction.
//!
//! # Exactly once, in every target
//! A record's effect lands in the target exactly once, even when records are
//! delivered again, because of two rules that each sink keeps inside every
//! batch transaction:
//! 1. **Offsets with rows.** The batch's consumed offsets are written to
//!    [`OFFSETS_TABLE`] in the same transaction as its rows, and consumption
//!    resumes from there (the runtime's `OffsetsHome::Stage`). A crash before
//!    the commit loses both; after it, keeps both.
//! 2. **Apply only what is newer.** Kafka offsets alone are not enough: after
//!    a source crash, the source replays changes it had already produced,
//!    and those arrive as new records at new offsets, carrying the same
//!    identity (source name, position) as before. So every target row keeps
//!    the position of the change it holds ([`POSITION_COLUMN`], bytewise
//!    order), and an upsert or delete only touches a row whose position is
//!    lower (or unknown). A delete leaves a tombstone (key and position, in
//!    [`TOMBSTONES_TABLE`]) so that an older insert replayed after the
//!    delete cannot bring the row back; an insert newer than the tombstone
//!    applies and removes it, which keeps the tombstones to keys that are
//!    currently deleted.
//!
//! Within a batch only the newest change per key is kept
//! ([`newest_per_key`]): older ones would be overwritten anyway, and one row
//! per key and statement is what an upsert needs.
//!
//! # Unchanged columns (TOAST)
//! A change may name columns whose value it does not carry because it did
//! not change ([`Change::unchanged`], from `postgres_cdc` for unchanged
//! TOASTed values). A sink never writes the change's null placeholder for
//! them: the value comes from the newest older change of the key in the same
//! batch when there is one ([`newest_per_key`]), else from the target row
//! itself. The target row holds the previous state of the row, because
//! changes of a key arrive in order and only newer ones apply.
//!
//! # TRUNCATE: one change to every row of a table
//! A source publishes a TRUNCATE as one keyless record with position `P`,
//! sent to every partition of the table's topic (see
//! `syncline_core::kafka::partitions_of`). Inside the batch's transaction a
//! sink applies it as:
//! 1. delete every row of the target table that this source wrote with a
//!    position lower than `P`, and every row of unknown position (rows no
//!    syncline sink wrote); rows written by other sources stay;
//! 2. drop the batch's other changes of that table and source older than
//!    `P` ([`superseded`]: they happened before the truncate), and apply the
//!    rest as usual.
//!
//! Why it is exactly once, whatever the order of partitions:
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

pub mod config;
pub mod json;
pub mod text;

use crate::table::text::literal;
use apache_avro::types::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use syncline_core::codec::Decoded;
use syncline_core::{Column, Op, Position};

pub use syncline_runtime::record::Origin;
pub use syncline_runtime::TopicPartition;

/// What every database sink's `Stage::prepare` does: find the record's
/// target table, check the change ([`Change::new`]), and skip truncates
/// under `on_truncate: ignore`.
pub struct Router {
    kind: &'static str,
    component: String,
    tables: HashMap<String, Arc<str>>,
    on_truncate: config::OnTruncate,
}

impl Router {
    /// `tables`: the target table of every subscribed topic.
    pub fn new(
        kind: &'static str,
        component: &str,
        tables: &BTreeMap<String, String>,
        on_truncate: config::OnTruncate,
    ) -> Router {
        Router {
            kind,
            component: component.to_string(),
            tables: tables
                .iter()
                .map(|(topic, table)| (topic.clone(), Arc::from(table.as_str())))
                .collect(),
            on_truncate,
        }
    }

    /// The change of one decoded record; `None`: nothing to apply.
    pub fn prepare(
        &self,
        record: &syncline_runtime::Record,
        decoded: Decoded,
    ) -> syncline_core::Result<Option<Change>> {
        // Every subscribed topic has a table (the settings' `tables`; topic
        // names are checked not to be patterns).
        let table = self.tables.get(&*record.topic).cloned().ok_or_else(|| {
            syncline_core::Error::config(format!(
                "the sink has no table for topic `{}`",
                record.topic
            ))
        })?;
        let change = Change::new(table, decoded, record.origin())
            .map_err(|reason| syncline_core::Error::data(format!("cannot apply it: {reason}")))?;
        if change.truncate && self.on_truncate == config::OnTruncate::Ignore {
            tracing::info!(sink = %self.component, r#type = self.kind, at = %change.origin,
                "TRUNCATE ignored (on_truncate: ignore)");
            return Ok(None);
        }
        Ok(Some(change))
    }
}

/// The column holding the source name of the change a row holds.
pub const SOURCE_COLUMN: &str = "_syncline_source";
/// The column holding the position of the change a row holds.
pub const POSITION_COLUMN: &str = "_syncline_position";
/// `(group_id, topic, partition) -> next_offset`: where each partition resumes.
pub const OFFSETS_TABLE: &str = "syncline_offsets";
/// `(target_table, key) -> (source, position)` of deleted rows.
pub const TOMBSTONES_TABLE: &str = "syncline_tombstones";

/// One decoded change, bound for one target table.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: Arc<str>,
    /// Canonical key bytes (see [`key_bytes`]).
    pub key: Vec<u8>,
    pub delete: bool,
    /// A TRUNCATE of the whole table (no key; see [the module docs](self)).
    pub truncate: bool,
    pub decoded: Decoded,
    pub origin: Origin,
}

impl Change {
    /// Check that the change can be applied (the caller names the record on error).
    pub fn new(table: Arc<str>, decoded: Decoded, origin: Origin) -> Result<Change, String> {
        let op = decoded.event.op;
        if op == Op::Truncate {
            return Ok(Change {
                table,
                key: Vec::new(),
                delete: false,
                truncate: true,
                decoded,
                origin,
            });
        }
        if let Some(c) = decoded.columns.iter().find(|c| {
            c.name == SOURCE_COLUMN || c.name == POSITION_COLUMN || c.name.starts_with("_syncline_")
        }) {
            return Err(format!(
                "its column `{}` is named like one of the sink's own columns (`_syncline_*`); rename it before the sink (a `rules` step `rename`)",
                c.name
            ));
        }
        let delete = op.removes_row();
        if !delete && decoded.event.after.is_none() {
            return Err(format!("{} change without an `after` row", op.symbol()));
        }
        let key = key_bytes(&decoded)?;
        Ok(Change {
            table,
            key,
            delete,
            truncate: false,
            decoded,
            origin,
        })
    }

    /// Columns whose value the record does not carry (unchanged): the
    /// target keeps the value it has.
    pub fn unchanged(&self) -> &[String] {
        &self.decoded.event.unchanged
    }

    pub fn position(&self) -> &Position {
        &self.decoded.event.source.position
    }

    pub fn source(&self) -> &str {
        &self.decoded.event.source.name
    }
}

/// The key as bytes that are equal exactly when the keys are equal: each key
/// column's canonical text, escaped and terminated (the position encoding),
/// in key order. Stored in tombstones and used to find duplicates.
pub fn key_bytes(decoded: &Decoded) -> Result<Vec<u8>, String> {
    let mut b = Position::builder();
    for name in decoded.key_columns.iter() {
        let col = find_column(&decoded.columns, name)?;
        let value = decoded
            .event
            .key
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or(&Value::Null);
        match literal(&col.ty, value).map_err(|e| format!("key column `{name}`: {e}"))? {
            Some(text) => b = b.str(&text),
            None => return Err(format!("key column `{name}` is null")),
        }
    }
    Ok(b.build().into_bytes())
}

fn find_column<'a>(columns: &'a [Column], name: &str) -> Result<&'a Column, String> {
    columns
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("key column `{name}` is not a column of the row"))
}

/// Keep only the newest change per (table, key): the one with the greatest
/// position; of equal positions (the same change delivered twice) the later.
/// Survivors keep the order of their first appearance. A survivor's
/// unchanged columns are filled from the change it replaces, when that one
/// carries them.
pub fn newest_per_key(changes: &[Change]) -> Vec<Cow<'_, Change>> {
    let mut slot: HashMap<(&str, &[u8]), usize> = HashMap::with_capacity(changes.len());
    let mut out: Vec<Cow<'_, Change>> = Vec::with_capacity(changes.len());
    for c in changes {
        match slot.get(&(&*c.table, c.key.as_slice())) {
            Some(&i) => {
                if c.position() >= out[i].position() {
                    let older = std::mem::replace(&mut out[i], Cow::Borrowed(c));
                    if let Some(filled) = fill_unchanged(c, &older) {
                        out[i] = Cow::Owned(filled);
                    }
                } else if let Some(filled) = fill_unchanged(&out[i], c) {
                    out[i] = Cow::Owned(filled);
                }
            }
            None => {
                slot.insert((&c.table, &c.key), out.len());
                out.push(Cow::Borrowed(c));
            }
        }
    }
    out
}

/// `newer` with the unchanged columns that `older` carries filled in, or
/// None when there is nothing to fill.
fn fill_unchanged(newer: &Change, older: &Change) -> Option<Change> {
    if newer.unchanged().is_empty() || newer.delete || older.delete {
        return None;
    }
    let older_after = older.decoded.event.after.as_ref()?;
    let mut filled = newer.clone();
    let ev = &mut filled.decoded.event;
    let after = ev.after.as_mut()?;
    let mut any = false;
    ev.unchanged.retain(|name| {
        if older.unchanged().contains(name) {
            return true;
        }
        let Some((_, v)) = older_after.iter().find(|(n, _)| n == name) else {
            return true;
        };
        if let Some(slot) = after.iter_mut().find(|(n, _)| n == name) {
            slot.1 = v.clone();
            any = true;
            return false;
        }
        true
    });
    any.then_some(filled)
}

/// The newest truncate per (table, source) among `changes`.
pub fn truncate_floors(changes: &[Change]) -> Floors {
    floors(
        changes
            .iter()
            .filter(|c| c.truncate)
            .map(|c| (&c.table, c.source(), c.position())),
    )
}

/// Whether a truncate in `floors` supersedes the row change `c`.
pub fn superseded(floors: &Floors, c: &Change) -> bool {
    supersedes(floors, &c.table, c.source(), c.position())
}

/// The newest truncate per (target table, source) in a batch.
pub type Floors = BTreeMap<(Arc<str>, String), Position>;

/// The newest of `truncates` (table, source, position) per (table, source).
fn floors<'a>(truncates: impl Iterator<Item = (&'a Arc<str>, &'a str, &'a Position)>) -> Floors {
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
fn supersedes(floors: &Floors, table: &Arc<str>, source: &str, position: &Position) -> bool {
    floors
        .get(&(table.clone(), source.to_string()))
        .is_some_and(|p| position < p)
}

/// The row changes of a batch that apply: truncates and the changes a
/// truncate of the batch supersedes are left out (see the module docs).
pub fn row_changes<'a>(changes: &'a [Change], floors: &Floors) -> Cow<'a, [Change]> {
    if changes.iter().any(|c| c.truncate) {
        Cow::Owned(
            changes
                .iter()
                .filter(|c| !c.truncate && !superseded(floors, c))
                .cloned()
                .collect(),
        )
    } else {
        Cow::Borrowed(changes)
    }
}

/// The changes of one batch for one table and one row shape (value schema).
pub struct Group<'a> {
    pub table: Arc<str>,
    pub schema_id: u32,
    pub columns: Arc<Vec<Column>>,
    pub key: Arc<Vec<String>>,
    pub changes: Vec<&'a Change>,
}

impl Group<'_> {
    /// `topic `t` partition 0 offsets 10..=20, ...`: where its records are.
    pub fn span(&self) -> String {
        let mut ranges: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
        for c in &self.changes {
            let r = ranges
                .entry((&c.origin.topic, c.origin.partition))
                .or_insert((c.origin.offset, c.origin.offset));
            r.0 = r.0.min(c.origin.offset);
            r.1 = r.1.max(c.origin.offset);
        }
        ranges
            .into_iter()
            .map(|((t, p), (lo, hi))| format!("topic `{t}` partition {p} offsets {lo}..={hi}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The row a change writes: its `after`, or its key for a delete.
    pub fn row(c: &Change) -> &[(String, Value)] {
        let ev = &c.decoded.event;
        if c.delete {
            &ev.key
        } else {
            ev.after.as_deref().expect("checked in Change::new")
        }
    }

    /// Call `f` with each column of the group and `c`'s value for it (null
    /// when the change has none), in column order. A value `f` refuses is
    /// a `Data` error naming the record and the column.
    pub fn each_value(
        &self,
        c: &Change,
        mut f: impl FnMut(&Column, &Value) -> Result<(), String>,
    ) -> syncline_core::Result<()> {
        let row = Self::row(c);
        for col in self.columns.iter() {
            let v = row
                .iter()
                .find(|(n, _)| n == &col.name)
                .map(|(_, v)| v)
                .unwrap_or(&Value::Null);
            f(col, v).map_err(|e| {
                syncline_core::Error::data(format!(
                    "record at {} does not fit column `{}`: {e}",
                    c.origin, col.name
                ))
            })?;
        }
        Ok(())
    }

    /// The non-key columns that some change of the group does not carry
    /// (unchanged), sorted, each once: the target keeps their value.
    pub fn unchanged_columns(&self) -> Vec<&str> {
        let mut unchanged: Vec<&str> = self
            .changes
            .iter()
            .flat_map(|c| c.unchanged().iter().map(String::as_str))
            .filter(|n| !self.key.iter().any(|k| k == n))
            .filter(|n| self.columns.iter().any(|c| c.name == *n))
            .collect();
        unchanged.sort_unstable();
        unchanged.dedup();
        unchanged
    }
}

/// Check that `key` can key upserts into target table `name`: it has
/// columns, and each is a column of the record. A `Data` error sets the
/// record aside (its key is what does not fit), the others go on.
pub fn check_key(name: &str, columns: &[Column], key: &[String]) -> syncline_core::Result<()> {
    if key.is_empty() {
        return Err(syncline_core::Error::data(format!(
            "records for {name} have no key columns: cannot upsert by key"
        )));
    }
    match key.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
        Some(k) => Err(syncline_core::Error::data(format!(
            "key column `{k}` of {name} is not a column of the record"
        ))),
        None => Ok(()),
    }
}

/// Check that `key` is the column set of one of `unique_keys` (the primary
/// key or a unique index) of an existing target table `name`: upserts need
/// one. A `Data` error: this record's key does not fit the table.
pub fn check_key_is_unique<'a>(
    name: &str,
    key: &[String],
    unique_keys: impl IntoIterator<Item = &'a [String]>,
) -> syncline_core::Result<()> {
    let set = |cols: &'a [String]| {
        cols.iter()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let want: std::collections::BTreeSet<&str> = key.iter().map(String::as_str).collect();
    if unique_keys.into_iter().any(|u| set(u) == want) {
        return Ok(());
    }
    Err(syncline_core::Error::data(format!(
        "the record key ({}) is not the primary key or a unique index of target table {name}; \
         upserts need one (add the index, or map the topic to another table under `tables`)",
        key.join(", ")
    )))
}

/// `newest` grouped by (table, value schema id), in that order.
pub fn groups<'a>(newest: &'a [Cow<'a, Change>]) -> Vec<Group<'a>> {
    let mut groups: BTreeMap<(Arc<str>, u32), Group<'a>> = BTreeMap::new();
    for c in newest.iter().map(|c| &**c) {
        groups
            .entry((c.table.clone(), c.decoded.value_schema_id))
            .or_insert_with(|| Group {
                table: c.table.clone(),
                schema_id: c.decoded.value_schema_id,
                columns: c.decoded.columns.clone(),
                key: c.decoded.key_columns.clone(),
                changes: Vec::new(),
            })
            .changes
            .push(c);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_core::{ChangeEvent, ColumnType, SourceInfo};

    fn change(key: i64, pos: i64, op: Op, tag: &str) -> Change {
        let columns = Arc::new(vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Long,
                nullable: false,
                sql_type: "int8".into(),
            },
            Column {
                name: "v".into(),
                ty: ColumnType::Text,
                nullable: true,
                sql_type: "text".into(),
            },
        ]);
        let after = (!op.removes_row()).then(|| {
            vec![
                ("id".into(), Value::Long(key)),
                ("v".into(), Value::String(tag.into())),
            ]
        });
        let decoded = Decoded {
            event: ChangeEvent {
                op,
                key: vec![("id".into(), Value::Long(key))],
                before: None,
                after,
                source: SourceInfo {
                    connector: "test".into(),
                    name: "src".into(),
                    db: "db".into(),
                    table: "t".into(),
                    position: Position::builder().i64(pos).build(),
                    position_text: pos.to_string(),
                    ts_us: 0,
                },
                unchanged: Vec::new(),
            },
            value_schema_id: 1,
            columns,
            key_columns: Arc::new(vec!["id".into()]),
        };
        Change::new(
            "t".into(),
            decoded,
            Origin {
                topic: "topic".into(),
                partition: 0,
                offset: pos,
            },
        )
        .unwrap()
    }

    fn tag(c: &Change) -> String {
        match c.decoded.event.after.as_ref().map(|a| &a[1].1) {
            Some(Value::String(s)) => s.clone(),
            _ => "deleted".into(),
        }
    }

    #[test]
    fn keeps_only_the_newest_change_per_key_whatever_the_arrival_order() {
        let batch = vec![
            change(1, 10, Op::Insert, "a"),
            change(2, 5, Op::Insert, "b"),
            change(1, 30, Op::Update, "c"),
            change(1, 20, Op::Update, "replayed-old"),
            change(2, 6, Op::Delete, ""),
            change(3, 1, Op::Insert, "d"),
        ];
        let out: Vec<_> = newest_per_key(&batch)
            .iter()
            .map(|c| (c.key.clone(), tag(c)))
            .collect();
        let k = |id: i64| {
            Position::builder()
                .str(&id.to_string())
                .build()
                .into_bytes()
        };
        assert_eq!(
            out,
            [
                (k(1), "c".to_string()),
                (k(2), "deleted".into()),
                (k(3), "d".into())
            ]
        );
    }

    #[test]
    fn equal_positions_keep_the_later_delivery_and_tables_are_separate() {
        let mut other_table = change(1, 10, Op::Insert, "other");
        other_table.table = "u".into();
        let batch = vec![
            change(1, 10, Op::Insert, "first"),
            other_table,
            change(1, 10, Op::Insert, "again"),
        ];
        let out = newest_per_key(&batch);
        assert_eq!(
            out.iter().map(|c| tag(c)).collect::<Vec<_>>(),
            ["again", "other"]
        );
    }

    fn truncate(pos: i64) -> Change {
        let mut d = change(1, pos, Op::Insert, "x").decoded;
        d.event.op = Op::Truncate;
        d.event.key.clear();
        d.event.after = None;
        Change::new(
            "t".into(),
            d,
            Origin {
                topic: "t".into(),
                partition: 0,
                offset: pos,
            },
        )
        .unwrap()
    }

    #[test]
    fn keys_are_canonical_and_a_keyless_truncate_is_accepted() {
        let c = change(-7, 1, Op::Insert, "x");
        assert_eq!(c.key, Position::builder().str("-7").build().into_bytes());
        let t = truncate(5);
        assert!(t.truncate && !t.delete && t.key.is_empty());
    }

    #[test]
    fn a_truncate_supersedes_older_changes_of_its_table_and_source_only() {
        let mut other_source = change(4, 3, Op::Insert, "kept");
        other_source.decoded.event.source.name = "other".into();
        let mut other_table = change(5, 3, Op::Insert, "kept");
        other_table.table = "u".into();
        let batch = vec![
            change(1, 3, Op::Insert, "gone"),
            truncate(5),
            change(2, 6, Op::Insert, "kept"),
            truncate(4),
            other_source,
            other_table,
        ];
        let floors = truncate_floors(&batch);
        assert_eq!(floors.len(), 1, "one floor, the newest truncate");
        let kept: Vec<_> = batch
            .iter()
            .filter(|c| !c.truncate && !superseded(&floors, c))
            .map(tag)
            .collect();
        assert_eq!(kept, ["kept", "kept", "kept"]);
    }
}
