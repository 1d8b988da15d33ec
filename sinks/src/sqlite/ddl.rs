//! Target tables in SQLite: the Avro -> SQLite type mapping, and creating
//! or evolving a table from the registered schema.
//!
//! # Type mapping (registered schema -> declared type, stored value)
//! SQLite stores each value with its own storage class; the declared type
//! only gives the column an affinity. The declared types below are chosen
//! so that the affinity never rewrites a value (no `NUMERIC` affinity for
//! decimals, which would turn `1.50` into the real `1.5`), and so that
//! `sql_poll` reading the file maps each column back to its type.
//!
//! | ColumnType | declared | stored as |
//! |---|---|---|
//! | Int, Long | `INTEGER` | integer |
//! | Float, Double | `REAL` | real; `NaN` as the text `NaN` (SQLite would store a NaN real as NULL) |
//! | Decimal(p,s), NumericText | `TEXT` | the exact decimal text (`12.50`) |
//! | Text | `TEXT` | text |
//! | Bool | `BOOLEAN` | integer 0 or 1 |
//! | Date | `DATE` | text `YYYY-MM-DD` |
//! | Time | `TIME` | text `HH:MM:SS.ffffff` |
//! | Timestamp | `DATETIME` | text `YYYY-MM-DD HH:MM:SS.ffffff` |
//! | TimestampTz | `TIMESTAMPTZ` | text `YYYY-MM-DD HH:MM:SS.ffffff+00:00` (UTC) |
//! | Uuid | `UUID` | text, lower case |
//! | Json | `JSON` | the JSON text as the source wrote it |
//! | Bytes | `BLOB` | blob |
//! | Array(T) | `JSON` | a JSON array of the items (numbers, strings, nested arrays) |
//!
//! Dates and times are the text SQLite's date functions read; years before
//! 1 AD keep Postgres' ` BC` suffix (SQLite's functions do not read them,
//! the value is kept). Every target table also gets `_syncline_source
//! TEXT` and `_syncline_position BLOB` (compared bytewise, as `memcmp`).
//!
//! # Nullability and evolution
//! Only the key columns are `NOT NULL` (they are the primary key): SQLite
//! cannot drop a `NOT NULL` constraint without rebuilding the table, so
//! other columns are created nullable and a source that later allows null
//! needs nothing. With `create_tables` a missing column is added; a column
//! the schema no longer has is kept, or dropped with `on_dropped_column:
//! drop`. A column whose type changed needs no change: SQLite stores the
//! new values as they are (the declared type stays as first created).

use super::{quote_ident, sqlite_error};
use crate::table::config::OnDroppedColumn;
use crate::table::{OFFSETS_TABLE, POSITION_COLUMN, SOURCE_COLUMN, TOMBSTONES_TABLE};
use rusqlite::Connection;
use syncline_core::{Column, ColumnType, Error, Result};

/// The declared type of a column (see the module docs).
pub fn sql_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Int | ColumnType::Long => "INTEGER",
        ColumnType::Float | ColumnType::Double => "REAL",
        ColumnType::Decimal { .. } | ColumnType::NumericText | ColumnType::Text => "TEXT",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Date => "DATE",
        ColumnType::Time => "TIME",
        ColumnType::Timestamp => "DATETIME",
        ColumnType::TimestampTz => "TIMESTAMPTZ",
        ColumnType::Uuid => "UUID",
        ColumnType::Json | ColumnType::Array(_) => "JSON",
        ColumnType::Bytes => "BLOB",
    }
}

/// Create the sink's own tables (offsets and tombstones) if missing.
pub fn ensure_bookkeeping(conn: &Connection) -> Result<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {offsets} (
             group_id TEXT NOT NULL,
             topic TEXT NOT NULL,
             partition INTEGER NOT NULL,
             next_offset INTEGER NOT NULL,
             updated_at TEXT NOT NULL,
             PRIMARY KEY (group_id, topic, partition));
         CREATE TABLE IF NOT EXISTS {tombstones} (
             target_table TEXT NOT NULL,
             key BLOB NOT NULL,
             source TEXT NOT NULL,
             position BLOB NOT NULL,
             deleted_at TEXT NOT NULL,
             PRIMARY KEY (target_table, key));",
        offsets = quote_ident(OFFSETS_TABLE),
        tombstones = quote_ident(TOMBSTONES_TABLE),
    );
    conn.execute_batch(&sql)
        .map_err(|e| sqlite_error(e, "cannot create the sink's offsets and tombstones tables"))
}

/// The `CREATE TABLE` statement for a table with `columns`, keyed by `key`.
pub fn create_table_sql(table: &str, columns: &[Column], key: &[String]) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if key.contains(&c.name) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", quote_ident(&c.name), sql_type(&c.ty))
        })
        .collect();
    defs.push(format!("{} TEXT", quote_ident(SOURCE_COLUMN)));
    defs.push(format!("{} BLOB", quote_ident(POSITION_COLUMN)));
    let pk: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
        quote_ident(table),
        defs.join(",\n  ")
    )
}

/// An existing table: its columns, and the column sets of its unique keys
/// (the primary key among them).
struct Existing {
    columns: Vec<String>,
    unique_keys: Vec<Vec<String>>,
}

/// The table as it is; `None`: no such table.
fn inspect(conn: &Connection, table: &str) -> Result<Option<Existing>> {
    let what = || format!("cannot read the columns of target table `{table}`");
    let mut stmt = conn
        .prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")
        .map_err(|e| sqlite_error(e, what()))?;
    let rows: Vec<(String, i64)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(|e| sqlite_error(e, what()))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut pk: Vec<(i64, String)> = rows
        .iter()
        .filter(|(_, k)| *k > 0)
        .map(|(n, k)| (*k, n.clone()))
        .collect();
    pk.sort();
    let mut unique = vec![pk.into_iter().map(|(_, n)| n).collect::<Vec<_>>()];
    let mut stmt = conn
        .prepare(
            "SELECT il.name FROM pragma_index_list(?1) AS il WHERE il.\"unique\" AND il.partial = 0",
        )
        .map_err(|e| sqlite_error(e, what()))?;
    let indexes: Vec<String> = stmt
        .query_map([table], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| sqlite_error(e, what()))?;
    for index in indexes {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
            .map_err(|e| sqlite_error(e, what()))?;
        let cols: Vec<Option<String>> = stmt
            .query_map([&index], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(e, what()))?;
        if let Some(cols) = cols.into_iter().collect::<Option<Vec<String>>>() {
            unique.push(cols);
        }
    }
    Ok(Some(Existing {
        columns: rows.into_iter().map(|(n, _)| n).collect(),
        unique_keys: unique,
    }))
}

/// Make sure `table` exists and can take rows of `columns` keyed by `key`:
/// create it or add what it lacks (when `create` is on), or say precisely
/// what is missing.
pub fn ensure_table(
    conn: &Connection,
    table: &str,
    columns: &[Column],
    key: &[String],
    create: bool,
    on_dropped_column: OnDroppedColumn,
) -> Result<()> {
    let name = quote_ident(table);
    crate::table::check_key(&name, columns, key)?;
    let mut ddl = Vec::new();
    match inspect(conn, table)? {
        None if !create => {
            return Err(Error::config(format!(
                "target table {name} does not exist; create it or set `create_tables: true`"
            )))
        }
        None => ddl.push(create_table_sql(table, columns, key)),
        Some(Existing {
            columns: existing,
            unique_keys: unique,
        }) => {
            let wanted = columns
                .iter()
                .map(|c| (c.name.as_str(), sql_type(&c.ty)))
                .chain([(SOURCE_COLUMN, "TEXT"), (POSITION_COLUMN, "BLOB")]);
            for (col, ty) in wanted {
                if existing.iter().any(|c| c == col) {
                    continue;
                }
                if !create {
                    return Err(Error::config(format!(
                        "target table {name} has no column `{col}` ({ty}); add it or set `create_tables: true`"
                    )));
                }
                ddl.push(format!(
                    "ALTER TABLE {name} ADD COLUMN {} {ty}",
                    quote_ident(col)
                ));
            }
            if create && on_dropped_column == OnDroppedColumn::Drop {
                for col in &existing {
                    let known = columns.iter().any(|c| &c.name == col)
                        || col == SOURCE_COLUMN
                        || col == POSITION_COLUMN;
                    if !known {
                        ddl.push(format!(
                            "ALTER TABLE {name} DROP COLUMN {}",
                            quote_ident(col)
                        ));
                    }
                }
            }
            crate::table::check_key_is_unique(&name, key, unique.iter().map(Vec::as_slice))?;
        }
    }
    if ddl.is_empty() {
        return Ok(());
    }
    tracing::info!(table = %name, statements = ?ddl, "evolving target table");
    // IMMEDIATE: two instances evolving the same table take turns.
    let sql = format!("BEGIN IMMEDIATE; {}; COMMIT;", ddl.join("; "));
    conn.execute_batch(&sql).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        sqlite_error(e, format!("cannot create or alter {name}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable,
            sql_type: String::new(),
        }
    }

    #[test]
    fn create_then_evolve_and_refuse_a_key_that_does_not_fit() {
        let conn = Connection::open_in_memory().unwrap();
        let key = vec!["id".to_string()];
        let cols = vec![
            col("id", ColumnType::Long, false),
            col(
                "price",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                false,
            ),
        ];
        ensure_table(&conn, "t", &cols, &key, true, OnDroppedColumn::Keep).unwrap();
        let mut more = cols.clone();
        more.push(col("note", ColumnType::Text, true));
        ensure_table(&conn, "t", &more, &key, true, OnDroppedColumn::Keep).unwrap();
        let Existing {
            columns: names,
            unique_keys: unique,
        } = inspect(&conn, "t").unwrap().unwrap();
        assert_eq!(
            names,
            [
                "id",
                "price",
                "_syncline_source",
                "_syncline_position",
                "note"
            ]
        );
        assert_eq!(unique, [vec!["id".to_string()]]);
        // `price` is gone from the source: dropped with `drop`.
        ensure_table(
            &conn,
            "t",
            &more[..1]
                .iter()
                .chain(&more[2..])
                .cloned()
                .collect::<Vec<_>>(),
            &key,
            true,
            OnDroppedColumn::Drop,
        )
        .unwrap();
        let names = inspect(&conn, "t").unwrap().unwrap().columns;
        assert!(!names.contains(&"price".to_string()), "{names:?}");
        let e = ensure_table(
            &conn,
            "t",
            &more,
            &["note".to_string()],
            true,
            OnDroppedColumn::Keep,
        )
        .unwrap_err();
        assert_eq!(e.kind(), syncline_core::ErrorKind::Data, "{e}");
        let e = ensure_table(&conn, "u", &cols, &key, false, OnDroppedColumn::Keep).unwrap_err();
        assert_eq!(e.kind(), syncline_core::ErrorKind::Config, "{e}");
    }

    #[test]
    fn a_decimal_column_keeps_its_exact_text() {
        let conn = Connection::open_in_memory().unwrap();
        let cols = vec![
            col("id", ColumnType::Long, false),
            col(
                "price",
                ColumnType::Decimal {
                    precision: 30,
                    scale: 2,
                },
                true,
            ),
        ];
        ensure_table(
            &conn,
            "t",
            &cols,
            &["id".into()],
            true,
            OnDroppedColumn::Keep,
        )
        .unwrap();
        conn.execute(
            "INSERT INTO t (id, price) VALUES (1, '1234567890123456789012.50')",
            [],
        )
        .unwrap();
        let v: String = conn
            .query_row("SELECT price FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, "1234567890123456789012.50");
    }
}
