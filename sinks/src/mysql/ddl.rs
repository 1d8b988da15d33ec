//! Target tables in MySQL / MariaDB: the Avro -> MySQL type mapping, and
//! creating or evolving a table from the registered schema.
//!
//! # Type mapping (registered schema -> MySQL column)
//! | ColumnType | MySQL | notes |
//! |---|---|---|
//! | Int / Long | `int` / `bigint` | |
//! | Decimal(p,s), p <= 65 and s <= 30 | `decimal(p,s)` | exact |
//! | Decimal beyond that, NumericText | `longtext` | the exact decimal text (MySQL's decimal holds 65 digits, 30 after the point) |
//! | Float / Double | `float` / `double` | NaN and Infinity are refused (MySQL has none): dead-lettered |
//! | Text | `longtext` | `utf8mb4`, binary collation |
//! | Bool | `tinyint(1)` | |
//! | Date | `date` | years 1-9999; others are refused |
//! | Time | `time(6)` | microseconds; `24:00:00` kept |
//! | Timestamp | `datetime(6)` | microseconds |
//! | TimestampTz | `datetime(6)` | in UTC (the session's `time_zone` is `+00:00`; `timestamp` would end in 2038) |
//! | Uuid | `char(36)` | text |
//! | Json, Array(T) | `json` | arrays as a JSON array; MariaDB keeps the text, MySQL 8 its binary form |
//! | Bytes | `longblob` | |
//!
//! A key column cannot be a `longtext` or `longblob`: key text becomes
//! `varchar(n)` and key bytes `varbinary(n)`, `n` sharing InnoDB's 3072-byte
//! index limit between the variable-length key columns (768 characters for
//! one text key); a longer key value is refused. Tables are `InnoDB`,
//! `utf8mb4` with the `utf8mb4_bin` collation: keys compare exactly (`'a'`
//! and `'A'` are different rows), as at the source. Every target table also
//! gets `_syncline_source text` and `_syncline_position blob` (compared
//! bytewise).
//!
//! # Evolution
//! As the postgres sink: with `create_tables`, missing columns are added
//! (nullable), a `NOT NULL` column the schema now allows to be null loses
//! its constraint, `on_type_change: widen` alters a column to a type that
//! holds every old value ([`widens`]), and `on_dropped_column: drop` drops
//! columns the schema no longer has.

use super::quote;
use crate::table::config::{OnDroppedColumn, OnTypeChange};
use crate::table::{OFFSETS_TABLE, POSITION_COLUMN, SOURCE_COLUMN, TOMBSTONES_TABLE};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::BTreeMap;
use syncline_core::error::mysql::mysql_error;
use syncline_core::{Column, ColumnType, Error, Result};

/// InnoDB's limit on the bytes of one index.
const INDEX_BYTES: usize = 3072;

/// Table options of every table the sink creates.
pub const TABLE_OPTIONS: &str = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// How the evolution policy reads (from the sink's settings).
#[derive(Debug, Clone, Copy)]
pub struct Evolution {
    pub create: bool,
    pub on_type_change: OnTypeChange,
    pub on_dropped_column: OnDroppedColumn,
}

/// Bytes a fixed-size key column takes in an index (None: variable).
fn fixed_key_bytes(ty: &ColumnType) -> Option<usize> {
    Some(match ty {
        ColumnType::Int => 4,
        ColumnType::Long | ColumnType::Double | ColumnType::Timestamp | ColumnType::TimestampTz => {
            8
        }
        ColumnType::Float => 4,
        ColumnType::Bool => 1,
        ColumnType::Date => 3,
        ColumnType::Time => 6,
        ColumnType::Uuid => 144,
        ColumnType::Decimal { precision, scale } if *precision <= 65 && *scale <= 30 => 30,
        _ => return None,
    })
}

/// The MySQL type of each column, keyed by name (see the module docs).
pub fn sql_types(columns: &[Column], key: &[String]) -> BTreeMap<String, String> {
    let keys: Vec<&Column> = columns.iter().filter(|c| key.contains(&c.name)).collect();
    let fixed: usize = keys.iter().filter_map(|c| fixed_key_bytes(&c.ty)).sum();
    let variable = keys
        .iter()
        .filter(|c| fixed_key_bytes(&c.ty).is_none())
        .count();
    let share = INDEX_BYTES.saturating_sub(fixed) / variable.max(1);
    columns
        .iter()
        .map(|c| {
            let ty = if key.contains(&c.name) && fixed_key_bytes(&c.ty).is_none() {
                match c.ty {
                    ColumnType::Bytes => format!("varbinary({share})"),
                    _ => format!("varchar({})", share / 4),
                }
            } else {
                sql_type(&c.ty).to_string()
            };
            (c.name.clone(), ty)
        })
        .collect()
}

/// The MySQL type of a non-key column.
pub fn sql_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Int => "int".into(),
        ColumnType::Long => "bigint".into(),
        ColumnType::Decimal { precision, scale } if *precision <= 65 && *scale <= 30 => {
            format!("decimal({precision},{scale})")
        }
        ColumnType::Decimal { .. } | ColumnType::NumericText | ColumnType::Text => {
            "longtext".into()
        }
        ColumnType::Float => "float".into(),
        ColumnType::Double => "double".into(),
        ColumnType::Bool => "tinyint(1)".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time(6)".into(),
        ColumnType::Timestamp | ColumnType::TimestampTz => "datetime(6)".into(),
        ColumnType::Uuid => "char(36)".into(),
        ColumnType::Json | ColumnType::Array(_) => "json".into(),
        ColumnType::Bytes => "longblob".into(),
    }
}

/// `int(11)` -> `int`; MariaDB's `json` is a `longtext`.
fn normalized(column_type: &str) -> String {
    let t = column_type.to_ascii_lowercase();
    for int in ["tinyint", "smallint", "mediumint", "int", "bigint"] {
        if t.starts_with(&format!("{int}(")) && int != "tinyint" {
            return int.to_string();
        }
    }
    if t == "json" {
        return "longtext".into();
    }
    t
}

/// Whether a column of type `have` can become `want` without losing any
/// value (both normalized).
pub fn widens(have: &str, want: &str) -> bool {
    let rank = |t: &str| match t {
        "tinyint" | "tinyint(1)" => Some(1),
        "smallint" => Some(2),
        "mediumint" => Some(3),
        "int" => Some(4),
        "bigint" => Some(5),
        _ => None,
    };
    let decimal = |t: &str| -> Option<(u32, u32)> {
        let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
        let (p, s) = inner.split_once(',')?;
        Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
    };
    if want == "longtext" {
        return !have.contains("blob") && !have.contains("binary");
    }
    if have == "float" && want == "double" {
        return true;
    }
    match (rank(have), rank(want), decimal(have), decimal(want)) {
        (Some(a), Some(b), _, _) => a < b,
        (Some(r), None, _, Some((p, s))) => p - s >= [0, 3, 5, 8, 10, 19][r as usize],
        (None, None, Some((p1, s1)), Some((p2, s2))) => s2 >= s1 && p2 - s2 >= p1 - s1,
        _ => false,
    }
}

/// Create the sink's own tables (offsets and tombstones) if missing.
pub async fn ensure_bookkeeping(conn: &mut Conn) -> Result<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {offsets} (
             `group_id` varchar(255) NOT NULL,
             `topic` varchar(255) NOT NULL,
             `partition` int NOT NULL,
             `next_offset` bigint NOT NULL,
             `updated_at` datetime(6) NOT NULL,
             PRIMARY KEY (`group_id`, `topic`, `partition`)) {TABLE_OPTIONS};
         CREATE TABLE IF NOT EXISTS {tombstones} (
             `target_table` varchar(64) NOT NULL,
             `key_hash` binary(32) NOT NULL,
             `key` blob NOT NULL,
             `source` text NOT NULL,
             `position` blob NOT NULL,
             `deleted_at` datetime(6) NOT NULL,
             PRIMARY KEY (`target_table`, `key_hash`)) {TABLE_OPTIONS}",
        offsets = quote(OFFSETS_TABLE),
        tombstones = quote(TOMBSTONES_TABLE),
    );
    conn.query_drop(sql)
        .await
        .map_err(|e| mysql_error(e, "cannot create the sink's offsets and tombstones tables"))
}

/// The `CREATE TABLE` statement for `table` with `columns`, keyed by `key`.
pub fn create_table_sql(table: &str, columns: &[Column], key: &[String]) -> String {
    let types = sql_types(columns, key);
    let mut defs: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable && !key.contains(&c.name) {
                ""
            } else {
                " NOT NULL"
            };
            format!("{} {}{not_null}", quote(&c.name), types[&c.name])
        })
        .collect();
    defs.push(format!("{} text", quote(SOURCE_COLUMN)));
    defs.push(format!("{} blob", quote(POSITION_COLUMN)));
    let pk: Vec<String> = key.iter().map(|k| quote(k)).collect();
    defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) {TABLE_OPTIONS}",
        quote(table),
        defs.join(",\n  ")
    )
}

/// An existing table: column -> (normalized type, nullable), and the column
/// sets of its unique indexes (the primary key among them).
struct Existing {
    columns: BTreeMap<String, (String, bool)>,
    unique_keys: Vec<Vec<String>>,
}

async fn inspect(conn: &mut Conn, table: &str) -> Result<Option<Existing>> {
    let what = || format!("cannot read the columns of target table `{table}`");
    let rows: Vec<(String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (table,),
        )
        .await
        .map_err(|e| mysql_error(e, what()))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .into_iter()
        .map(|(n, t, nullable)| (n, (normalized(&t), nullable == "YES")))
        .collect();
    let index_rows: Vec<(String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0
             ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (table,),
        )
        .await
        .map_err(|e| mysql_error(e, what()))?;
    let mut indexes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (index, column) in index_rows {
        indexes.entry(index).or_default().push(column);
    }
    Ok(Some(Existing {
        columns,
        unique_keys: indexes.into_values().collect(),
    }))
}

/// Make sure `table` exists and can take rows of `columns` keyed by `key`:
/// create it or add what it lacks (when `create` is on), or say precisely
/// what is missing.
pub async fn ensure_table(
    conn: &mut Conn,
    table: &str,
    columns: &[Column],
    key: &[String],
    evolution: Evolution,
) -> Result<()> {
    let name = quote(table);
    crate::table::check_key(&name, columns, key)?;
    let create = evolution.create;
    let types = sql_types(columns, key);
    let mut ddl = Vec::new();
    match inspect(conn, table).await? {
        None if !create => {
            return Err(Error::config(format!(
                "target table {name} does not exist; create it or set `create_tables: true`"
            )))
        }
        None => ddl.push(create_table_sql(table, columns, key)),
        Some(existing) => {
            let wanted = columns
                .iter()
                .map(|c| (c.name.clone(), types[&c.name].clone(), c.nullable))
                .chain([
                    (SOURCE_COLUMN.to_string(), "text".to_string(), true),
                    (POSITION_COLUMN.to_string(), "blob".to_string(), true),
                ]);
            for (col, ty, nullable) in wanted {
                let is_key = key.contains(&col);
                match existing.columns.get(&col) {
                    None if !create => {
                        return Err(Error::config(format!(
                            "target table {name} has no column `{col}` ({ty}); add it or set `create_tables: true`"
                        )))
                    }
                    None => ddl.push(format!("ALTER TABLE {name} ADD COLUMN {} {ty}", quote(&col))),
                    Some((have, have_nullable)) => {
                        let want = normalized(&ty);
                        let alter_type = have != &want
                            && create
                            && evolution.on_type_change == OnTypeChange::Widen
                            && !is_key
                            && widens(have, &want);
                        let loosen = !have_nullable && nullable && !is_key;
                        if loosen && !create {
                            return Err(Error::config(format!(
                                "column `{col}` of {name} is NOT NULL but the source allows null; \
                                 drop the constraint or set `create_tables: true`"
                            )));
                        }
                        if have != &want && !alter_type {
                            tracing::warn!(table = %name, column = %col, have = %have, mapped = %want,
                                "target column type differs from the mapped type; MySQL converts on insert");
                        }
                        if alter_type || loosen {
                            // MODIFY restates the whole column: its type and nullability.
                            let ty = if alter_type { ty.clone() } else { have.clone() };
                            let null = if nullable || *have_nullable { "NULL" } else { "NOT NULL" };
                            ddl.push(format!("ALTER TABLE {name} MODIFY COLUMN {} {ty} {null}", quote(&col)));
                        }
                    }
                }
            }
            if create && evolution.on_dropped_column == OnDroppedColumn::Drop {
                for col in existing.columns.keys() {
                    let known = columns.iter().any(|c| &c.name == col)
                        || col == SOURCE_COLUMN
                        || col == POSITION_COLUMN;
                    if !known {
                        ddl.push(format!("ALTER TABLE {name} DROP COLUMN {}", quote(col)));
                    }
                }
            }
            crate::table::check_key_is_unique(
                &name,
                key,
                existing.unique_keys.iter().map(Vec::as_slice),
            )?;
        }
    }
    if ddl.is_empty() {
        return Ok(());
    }
    tracing::info!(table = %name, statements = ?ddl, "evolving target table");
    // DDL commits implicitly in MySQL; each statement is idempotent or
    // checked again on the next batch.
    for sql in ddl {
        conn.query_drop(&sql)
            .await
            .map_err(|e| mysql_error(e, format!("cannot create or alter {name}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable: true,
            sql_type: String::new(),
        }
    }

    #[test]
    fn key_columns_share_the_index_limit() {
        let cols = [
            col("id", ColumnType::Long),
            col("code", ColumnType::Text),
            col("blob", ColumnType::Bytes),
            col("note", ColumnType::Text),
        ];
        let t = sql_types(&cols, &["id".into(), "code".into(), "blob".into()]);
        assert_eq!(t["id"], "bigint");
        assert_eq!(t["code"], "varchar(383)");
        assert_eq!(t["blob"], "varbinary(1532)");
        assert_eq!(t["note"], "longtext");
        let t = sql_types(&cols, &["code".into()]);
        assert_eq!(t["code"], "varchar(768)");
    }

    #[test]
    fn widening_keeps_every_value() {
        assert!(widens("int", "bigint"));
        assert!(!widens("bigint", "int"));
        assert!(widens("float", "double"));
        assert!(widens("decimal(10,2)", "decimal(12,2)"));
        assert!(!widens("decimal(10,2)", "decimal(10,3)"));
        assert!(widens("int", "decimal(12,2)"));
        assert!(!widens("bigint", "decimal(12,2)"));
        assert!(widens("int", "longtext"));
        assert!(!widens("longblob", "longtext"));
        assert_eq!(normalized("int(11)"), "int");
        assert_eq!(normalized("tinyint(1)"), "tinyint(1)");
    }
}
