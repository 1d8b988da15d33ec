//! Target tables: the Avro -> Postgres type mapping, and creating or evolving
//! a table from the registered schema.
//!
//! # Type mapping (registered schema -> Postgres column)
//! | Avro (see core/src/schema.rs) | ColumnType | Postgres |
//! |---|---|---|
//! | `int` | Int | `integer` |
//! | `long` | Long | `bigint` |
//! | `bytes`, logicalType `decimal(p,s)` | Decimal | `numeric(p,s)` (`numeric` if p > 1000) |
//! | `string`, sql_type numeric/decimal | NumericText | `numeric` |
//! | `float` / `double` | Float / Double | `real` / `double precision` |
//! | `string` | Text | `text`, or the source's type named by sql_type when it is a built-in Postgres type whose text form round-trips ([`source_text_type`]: `character(n)`, `character varying(n)`, `interval`, `inet`, `bit(n)`, …) |
//! | `boolean` | Bool | `boolean` |
//! | `int`, logicalType `date` | Date | `date` |
//! | `long`, logicalType `time-micros` | Time | `time` |
//! | `long`, logicalType `local-timestamp-micros` | Timestamp | `timestamp` |
//! | `long`, logicalType `timestamp-micros` | TimestampTz | `timestamptz` |
//! | `string`, logicalType `uuid` | Uuid | `uuid` |
//! | `string`, sql_type `jsonb` | Json | `jsonb` |
//! | `string`, sql_type `json` | Json | `json` (keeps the source's exact text, key order and duplicates) |
//! | `bytes` / `fixed` | Bytes | `bytea` |
//! | `array` of T | Array(T) | T`[]` |
//!
//! A column is `NOT NULL` when its Avro type is not a `["null", T]` union.
//! The primary key is the record key's columns. Every target table also
//! gets `_syncline_source text` and `_syncline_position bytea`: the identity
//! of the change the row holds (see `apply.rs`).
//!
//! # Evolution
//! When `create_tables` is on, a column the table lacks is added, always
//! nullable (existing rows have no value for it), and a `NOT NULL` column the
//! schema now allows to be null loses its constraint. A column the schema no
//! longer has is left alone (new rows get its default), or dropped with
//! `on_dropped_column: drop`. A column whose type differs from the mapping is
//! altered to it with `on_type_change: widen` (the default) when the new type
//! holds every old value ([`widens`]); otherwise it is logged and left alone:
//! Postgres converts on insert, or refuses the batch with an error naming
//! the column.

use super::config::{Evolution, OnDroppedColumn, OnTypeChange};
use super::pg_error;
use crate::table::{OFFSETS_TABLE, POSITION_COLUMN, SOURCE_COLUMN, TOMBSTONES_TABLE};
use std::collections::BTreeMap;
use syncline_core::{Column, ColumnType, Error, Result};
use tokio_postgres::Client;

/// `na"me` -> `"na""me"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `it's` -> `'it''s'`.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Whether a column of type `have` can become `want` without losing any
/// value (both spelled as `format_type()` does).
pub fn widens(have: &str, want: &str) -> bool {
    let rank = |t: &str| match t {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        _ => None,
    };
    let numeric = |t: &str| -> Option<Option<(u32, u32)>> {
        if t == "numeric" {
            return Some(None);
        }
        let inner = t.strip_prefix("numeric(")?.strip_suffix(')')?;
        let (p, s) = inner.split_once(',')?;
        Some(Some((p.trim().parse().ok()?, s.trim().parse().ok()?)))
    };
    let varchar = |t: &str| -> Option<Option<u32>> {
        if t == "character varying" {
            return Some(None);
        }
        Some(Some(
            t.strip_prefix("character varying(")?
                .strip_suffix(')')?
                .parse()
                .ok()?,
        ))
    };
    if let (Some(Some(a)), Some(b)) = (varchar(have), varchar(want)) {
        return b.is_none_or(|b| b >= a);
    }
    match (have, want) {
        (_, "text") => !have.ends_with("[]") && have != "bytea",
        ("real", "double precision") => true,
        _ => {
            if let (Some(a), Some(b)) = (rank(have), rank(want)) {
                return a < b;
            }
            match (rank(have), numeric(have), numeric(want)) {
                (Some(_), _, Some(None)) => true,
                (Some(r), _, Some(Some((p, s)))) => {
                    let digits = [0, 5, 10, 19][r as usize];
                    p - s >= digits
                }
                (None, Some(_), Some(None)) => true,
                (None, Some(Some((p1, s1))), Some(Some((p2, s2)))) => {
                    s2 >= s1 && p2 - s2 >= p1 - s1
                }
                _ => false,
            }
        }
    }
}

/// The Postgres type of a column, spelled as `format_type()` spells it so an
/// existing column can be compared with it.
pub fn sql_type(col: &Column) -> String {
    type_name(&col.ty, &col.sql_type)
}

fn type_name(ty: &ColumnType, sql_type: &str) -> String {
    match ty {
        ColumnType::Int => "integer".into(),
        ColumnType::Long => "bigint".into(),
        ColumnType::Decimal { precision, scale } if *precision <= 1000 => {
            format!("numeric({precision},{scale})")
        }
        ColumnType::Decimal { .. } | ColumnType::NumericText => "numeric".into(),
        ColumnType::Float => "real".into(),
        ColumnType::Double => "double precision".into(),
        ColumnType::Text => source_text_type(sql_type).unwrap_or("text").into(),
        ColumnType::Bool => "boolean".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time without time zone".into(),
        ColumnType::Timestamp => "timestamp without time zone".into(),
        ColumnType::TimestampTz => "timestamp with time zone".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Json if sql_type.eq_ignore_ascii_case("json") => "json".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Bytes => "bytea".into(),
        // Postgres has one array type per element type, whatever the dimensions.
        ColumnType::Array(item) if matches!(**item, ColumnType::Array(_)) => type_name(item, ""),
        ColumnType::Array(item) => format!(
            "{}[]",
            type_name(item, sql_type.strip_suffix("[]").unwrap_or(""))
        ),
    }
}

/// Built-in Postgres types a source's text column may have, spelled as
/// `format_type()` spells them, after removing a `(n)` or `(p,s)` modifier.
/// Their values travel as their text form, which reads back to the same
/// value. Left out: `money` (its text depends on `lc_monetary`), and every
/// type that is not built in (enums, domains, extensions), which the target
/// may lack.
const SOURCE_TEXT_TYPES: &[&str] = &[
    "character",
    "character varying",
    "bit",
    "bit varying",
    "time with time zone",
    "interval",
    "interval year",
    "interval month",
    "interval day",
    "interval hour",
    "interval minute",
    "interval second",
    "interval year to month",
    "interval day to hour",
    "interval day to minute",
    "interval day to second",
    "interval hour to minute",
    "interval hour to second",
    "interval minute to second",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "xml",
    "tsvector",
    "tsquery",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
    "pg_lsn",
];

/// The source's type of a text column when the target can have it too:
/// `sql_type` (a schema's field attribute, so anything) is used only when it
/// is one of [`SOURCE_TEXT_TYPES`] with at most one modifier of digits,
/// which also keeps it from carrying SQL into the DDL.
pub fn source_text_type(sql_type: &str) -> Option<&str> {
    let bare = match (sql_type.find('('), sql_type.find(')')) {
        (Some(open), Some(close)) if open < close => {
            let modifier = &sql_type[open + 1..close];
            let digits =
                |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
            let ok = match modifier.split_once(',') {
                Some((a, b)) => digits(a) && digits(b),
                None => digits(modifier),
            };
            if !ok || sql_type[close + 1..].contains(['(', ')']) {
                return None;
            }
            format!("{}{}", &sql_type[..open], &sql_type[close + 1..])
        }
        (None, None) => sql_type.to_string(),
        _ => return None,
    };
    SOURCE_TEXT_TYPES
        .contains(&bare.as_str())
        .then_some(sql_type)
}

/// Create the sink's own tables (offsets and tombstones) if missing.
pub async fn ensure_bookkeeping(client: &Client, schema: &str, create_schema: bool) -> Result<()> {
    let offsets = qualified(schema, OFFSETS_TABLE);
    let tombstones = qualified(schema, TOMBSTONES_TABLE);
    let create_schema = if create_schema {
        format!("CREATE SCHEMA IF NOT EXISTS {};", quote_ident(schema))
    } else {
        String::new()
    };
    // The advisory lock serialises instances starting together: concurrent
    // CREATE ... IF NOT EXISTS can still collide in the catalog.
    let sql = format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('syncline ddl'));
         {create_schema}
         CREATE TABLE IF NOT EXISTS {offsets} (
             group_id text NOT NULL,
             topic text NOT NULL,
             partition integer NOT NULL,
             next_offset bigint NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (group_id, topic, partition));
         CREATE TABLE IF NOT EXISTS {tombstones} (
             target_table text NOT NULL,
             key bytea NOT NULL,
             source text NOT NULL,
             position bytea NOT NULL,
             deleted_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (target_table, key));
         COMMIT;"
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| pg_error(e, "cannot create the sink's offsets and tombstones tables"))
}

/// What an existing table looks like.
#[derive(Debug, Default)]
struct Existing {
    /// column -> (format_type, not null)
    columns: BTreeMap<String, (String, bool)>,
    /// Column sets of the unique indexes (the primary key among them).
    unique_keys: Vec<Vec<String>>,
}

async fn inspect(client: &Client, qualified_name: &str) -> Result<Option<Existing>> {
    let oid: Option<u32> = client
        .query_one("SELECT to_regclass($1)::oid", &[&qualified_name])
        .await
        .map_err(|e| pg_error(e, "cannot look up the target table"))?
        .get(0);
    let Some(oid) = oid else { return Ok(None) };
    let mut existing = Existing::default();
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error(e, "cannot read the target table's columns"))?;
    for r in rows {
        existing.columns.insert(r.get(0), (r.get(1), r.get(2)));
    }
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text) FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL
             GROUP BY i.indexrelid",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error(e, "cannot read the target table's keys"))?;
    existing.unique_keys = rows
        .into_iter()
        .map(|r| r.get::<_, Vec<String>>(0))
        .collect();
    Ok(Some(existing))
}

/// The `CREATE TABLE` statement for a table with `columns`, keyed by `key`.
pub fn create_table_sql(qualified_name: &str, columns: &[Column], key: &[String]) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable && !key.contains(&c.name) {
                ""
            } else {
                " NOT NULL"
            };
            format!("{} {}{not_null}", quote_ident(&c.name), sql_type(c))
        })
        .collect();
    defs.push(format!("{} text NOT NULL", quote_ident(SOURCE_COLUMN)));
    defs.push(format!("{} bytea NOT NULL", quote_ident(POSITION_COLUMN)));
    let pk: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    format!(
        "CREATE TABLE IF NOT EXISTS {qualified_name} (\n  {}\n)",
        defs.join(",\n  ")
    )
}

/// Make sure `schema.table` exists and can take rows of `columns` keyed by
/// `key`: create it or add what it lacks (when `create` is on), or say
/// precisely what is missing.
pub async fn ensure_table(
    client: &Client,
    schema: &str,
    table: &str,
    columns: &[Column],
    key: &[String],
    evolution: Evolution,
) -> Result<()> {
    let create = evolution.create;
    let name = qualified(schema, table);
    crate::table::check_key(&name, columns, key)?;
    let mut ddl = Vec::new();
    match inspect(client, &name).await? {
        None if !create => {
            return Err(Error::config(format!(
                "target table {name} does not exist; create it or set `create_tables: true`"
            )))
        }
        None => ddl.push(create_table_sql(&name, columns, key)),
        Some(existing) => {
            let wanted = columns
                .iter()
                .map(|c| (c.name.clone(), sql_type(c), c.nullable))
                .chain([
                    (SOURCE_COLUMN.to_string(), "text".to_string(), true),
                    (POSITION_COLUMN.to_string(), "bytea".to_string(), true),
                ]);
            for (col, ty, nullable) in wanted {
                match existing.columns.get(&col) {
                    None if !create => {
                        return Err(Error::config(format!(
                            "target table {name} has no column `{col}` ({ty}); add it or set `create_tables: true`"
                        )))
                    }
                    None => ddl.push(format!("ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {} {ty}", quote_ident(&col))),
                    Some((have, not_null)) => {
                        if have != &ty
                            && create
                            && evolution.on_type_change == OnTypeChange::Widen
                            && !key.contains(&col)
                            && widens(have, &ty)
                        {
                            ddl.push(format!(
                                "ALTER TABLE {name} ALTER COLUMN {} TYPE {ty}",
                                quote_ident(&col)
                            ));
                        } else if have != &ty {
                            tracing::warn!(table = %name, column = %col, have = %have, mapped = %ty,
                                "target column type differs from the mapped type; Postgres converts on insert");
                        }
                        if *not_null && nullable && !key.contains(&col) && col != SOURCE_COLUMN && col != POSITION_COLUMN
                        {
                            if !create {
                                return Err(Error::config(format!(
                                    "column `{col}` of {name} is NOT NULL but the source allows null; \
                                     drop the constraint or set `create_tables: true`"
                                )));
                            }
                            ddl.push(format!("ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL", quote_ident(&col)));
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
                        ddl.push(format!(
                            "ALTER TABLE {name} DROP COLUMN IF EXISTS {}",
                            quote_ident(col)
                        ));
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
    let sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock(hashtext('syncline ddl')); {}; COMMIT;",
        ddl.join("; ")
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| pg_error(e, format!("cannot create or alter {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, nullable: bool, sql: &str) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable,
            sql_type: sql.into(),
        }
    }

    #[test]
    fn maps_every_column_type() {
        let cases = [
            (ColumnType::Int, "", "integer"),
            (ColumnType::Long, "", "bigint"),
            (
                ColumnType::Decimal {
                    precision: 12,
                    scale: 3,
                },
                "",
                "numeric(12,3)",
            ),
            (ColumnType::NumericText, "numeric", "numeric"),
            (ColumnType::Float, "", "real"),
            (ColumnType::Double, "", "double precision"),
            (ColumnType::Text, "varchar(40)", "text"),
            (ColumnType::Text, "character(5)", "character(5)"),
            (
                ColumnType::Text,
                "character varying(40)",
                "character varying(40)",
            ),
            (ColumnType::Text, "character varying", "character varying"),
            (
                ColumnType::Text,
                "interval day to second(3)",
                "interval day to second(3)",
            ),
            (
                ColumnType::Text,
                "time(3) with time zone",
                "time(3) with time zone",
            ),
            (ColumnType::Text, "inet", "inet"),
            (ColumnType::Text, "money", "text"),
            (ColumnType::Text, "mood", "text"),
            (ColumnType::Text, "character(5); DROP TABLE t", "text"),
            (ColumnType::Text, "character(5) (1)", "text"),
            (ColumnType::Text, "character(1,2,3)", "text"),
            (
                ColumnType::Array(Box::new(ColumnType::Text)),
                "character(2)[]",
                "character(2)[]",
            ),
            (ColumnType::Bool, "", "boolean"),
            (ColumnType::Date, "", "date"),
            (ColumnType::Time, "", "time without time zone"),
            (ColumnType::Timestamp, "", "timestamp without time zone"),
            (ColumnType::TimestampTz, "", "timestamp with time zone"),
            (ColumnType::Uuid, "", "uuid"),
            (ColumnType::Json, "jsonb", "jsonb"),
            (ColumnType::Json, "JSON", "json"),
            (ColumnType::Bytes, "", "bytea"),
            (
                ColumnType::Array(Box::new(ColumnType::Decimal {
                    precision: 5,
                    scale: 1,
                })),
                "",
                "numeric(5,1)[]",
            ),
            (
                ColumnType::Array(Box::new(ColumnType::Array(Box::new(ColumnType::Int)))),
                "",
                "integer[]",
            ),
        ];
        for (ty, sql, want) in cases {
            assert_eq!(sql_type(&col("c", ty.clone(), true, sql)), want, "{ty:?}");
        }
    }

    #[test]
    fn create_table_keys_and_bookkeeping_columns() {
        let cols = [
            col("id", ColumnType::Long, false, "int8"),
            col("na\"me", ColumnType::Text, true, "text"),
        ];
        let sql = create_table_sql("\"public\".\"t\"", &cols, &["id".into()]);
        assert!(sql.contains("\"id\" bigint NOT NULL"));
        assert!(sql.contains("\"na\"\"me\" text,"));
        assert!(sql.contains("\"_syncline_position\" bytea NOT NULL"));
        assert!(sql.ends_with("PRIMARY KEY (\"id\")\n)"));
    }
}

#[cfg(test)]
mod widening_tests {
    use super::widens;

    #[test]
    fn widening_keeps_every_value() {
        assert!(widens("integer", "bigint"));
        assert!(widens("smallint", "integer"));
        assert!(!widens("bigint", "integer"));
        assert!(widens("real", "double precision"));
        assert!(widens("character varying(5)", "character varying(10)"));
        assert!(widens("character varying(5)", "character varying"));
        assert!(!widens("character varying(10)", "character varying(5)"));
        assert!(widens("character(5)", "text"));
        assert!(!widens("double precision", "real"));
        assert!(widens("numeric(10,2)", "numeric(12,2)"));
        assert!(widens("numeric(10,2)", "numeric(12,3)"));
        assert!(!widens("numeric(10,2)", "numeric(10,3)"));
        assert!(widens("numeric(10,2)", "numeric"));
        assert!(widens("integer", "numeric(12,2)"));
        assert!(!widens("bigint", "numeric(12,2)"));
        assert!(widens("integer", "text"));
        assert!(!widens("bytea", "text"));
    }
}
