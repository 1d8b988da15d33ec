//! The SQLite side of sql_poll: introspection by declared type (mapping in
//! [`column_type`]), batch reads and key scans.
//!
//! No fence is needed: SQLite has one writer at a time, and a write
//! transaction's rows become visible when it commits, before the next writer
//! starts; ids (`INTEGER PRIMARY KEY`, AUTOINCREMENT) and timestamps taken
//! inside the write transaction (`DEFAULT CURRENT_TIMESTAMP`,
//! `strftime('%Y-%m-%d %H:%M:%f','now')`) therefore become visible in
//! increasing order. A timestamp computed by the application *before* it
//! begins its write transaction can be older than rows committed meanwhile:
//! set timestamps inside the transaction.

use super::config::TableConfig;
use super::cursor::{Cursor, CursorPart};
use super::plan::{plain_query, quote_ident, quote_table, subquery, SourceRow, TablePlan};
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use syncline_core::value::decimal_from_text;
use syncline_core::{Column, ColumnType, Error, Result};

/// Map a declared SQLite column type to a column type.
///
/// Well-known names first (case-insensitive, before any `(`): BOOLEAN/BOOL
/// -> Bool; DATE -> Date; DATETIME/TIMESTAMP -> Timestamp; TIMESTAMPTZ (or
/// `… WITH TIME ZONE`) -> TimestampTz; TIME -> Time; UUID -> Uuid;
/// JSON/JSONB -> Json; DECIMAL/NUMERIC(p,s) -> Decimal (without precision ->
/// NumericText, exact text). Then SQLite's own affinity rules, in its order:
/// contains INT -> Long (SQLite integers are 64-bit); CHAR/CLOB/TEXT -> Text;
/// BLOB -> Bytes; REAL/FLOA/DOUB -> Double; no declared type -> Text (any
/// stored value, as text); anything else (NUMERIC affinity) -> NumericText.
pub fn column_type(declared: &str) -> ColumnType {
    let upper = declared.trim().to_ascii_uppercase();
    let (base, args) = match upper.split_once('(') {
        Some((b, rest)) => (b.trim().to_string(), rest.trim_end_matches(')').to_string()),
        None => (upper.clone(), String::new()),
    };
    match base.as_str() {
        "BOOLEAN" | "BOOL" => return ColumnType::Bool,
        "DATE" => return ColumnType::Date,
        "DATETIME" | "TIMESTAMP" | "TIMESTAMP WITHOUT TIME ZONE" => return ColumnType::Timestamp,
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => return ColumnType::TimestampTz,
        "TIME" => return ColumnType::Time,
        "UUID" => return ColumnType::Uuid,
        "JSON" | "JSONB" => return ColumnType::Json,
        "DECIMAL" | "NUMERIC" => {
            let nums: Vec<Option<u32>> = args.split(',').map(|a| a.trim().parse().ok()).collect();
            return match nums.as_slice() {
                [Some(p), Some(s)] if s <= p && *p > 0 => ColumnType::Decimal {
                    precision: *p,
                    scale: *s,
                },
                [Some(p)] if *p > 0 => ColumnType::Decimal {
                    precision: *p,
                    scale: 0,
                },
                _ => ColumnType::NumericText,
            };
        }
        _ => {}
    }
    if upper.contains("INT") {
        ColumnType::Long
    } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
        ColumnType::Text
    } else if upper.contains("BLOB") {
        ColumnType::Bytes
    } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
        ColumnType::Double
    } else if upper.is_empty() {
        ColumnType::Text
    } else {
        ColumnType::NumericText
    }
}

/// Which column types a cursor can use. SQLite compares the stored values:
/// integers for the incrementing column; for the timestamp, text in one
/// ISO-8601 format or integer epoch values (whatever its declared type).
pub fn cursor_type_ok(is_timestamp: bool, ty: &ColumnType) -> bool {
    if is_timestamp {
        matches!(
            ty,
            ColumnType::Timestamp
                | ColumnType::TimestampTz
                | ColumnType::Text
                | ColumnType::Long
                | ColumnType::NumericText
        )
    } else {
        matches!(ty, ColumnType::Long)
    }
}

/// By the one SQLite classification (`syncline_core::error::sqlite`).
fn sql_error(e: rusqlite::Error, what: impl FnOnce() -> String) -> Error {
    syncline_core::error::sqlite::sqlite_error(e, what())
}

struct SqliteTable {
    name: String,
    from: String,
    columns: Vec<Column>,
    /// Indexes (into `columns`) of the cursor columns.
    cursor: Vec<usize>,
    key: Vec<usize>,
}

pub struct SqliteSource {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    tables: Vec<Arc<SqliteTable>>,
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        sql_error(e, || {
            format!(
                "cannot open SQLite database {} (it must exist)",
                path.display()
            )
        })
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| sql_error(e, || "cannot set busy_timeout".into()))?;
    Ok(conn)
}

impl SqliteSource {
    pub async fn open(path: &Path) -> Result<SqliteSource> {
        let p = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || open(&p))
            .await
            .map_err(|e| Error::internal("SQLite task failed").with_source(e))??;
        Ok(SqliteSource {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            tables: Vec::new(),
        })
    }

    pub fn db_name(&self) -> String {
        self.path.display().to_string()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| Error::internal("SQLite connection poisoned"))?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::internal("SQLite task failed").with_source(e))?
    }

    /// Columns and primary key of a table (`PRAGMA table_xinfo`) or of a
    /// query (declared types of its result columns; all nullable).
    pub async fn introspect(&self, tc: &TableConfig) -> Result<(Vec<Column>, Vec<String>)> {
        let tc = tc.clone();
        self.blocking(move |conn| {
            let name = tc.entry_name();
            if let Some(query) = &tc.query {
                let stmt = conn.prepare(plain_query(query)).map_err(|e| sql_error(e, || format!("the query of `{name}` is not a valid SELECT")))?;
                let columns = stmt
                    .columns()
                    .iter()
                    .map(|c| {
                        let decl = c.decl_type().unwrap_or("").to_string();
                        Column { name: c.name().to_string(), ty: column_type(&decl), nullable: true, sql_type: decl }
                    })
                    .collect();
                return Ok((columns, Vec::new()));
            }
            let table = tc.table.clone().unwrap_or_default();
            let (schema, bare) = match table.split_once('.') {
                Some((s, t)) => (s.to_string(), t.to_string()),
                None => ("main".to_string(), table.clone()),
            };
            let mut stmt = conn
                .prepare(r#"SELECT name, type, "notnull", pk FROM pragma_table_xinfo(?1, ?2) WHERE hidden <> 1 ORDER BY cid"#)
                .map_err(|e| sql_error(e, || "cannot read table_xinfo".into()))?;
            let rows: Vec<(String, String, bool, i64)> = stmt
                .query_map([&bare, &schema], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| sql_error(e, || format!("cannot read the columns of `{table}`")))?;
            if rows.is_empty() {
                return Err(Error::config(format!("table `{table}` does not exist in the SQLite database")));
            }
            let mut pk: Vec<(i64, String)> = rows.iter().filter(|r| r.3 > 0).map(|r| (r.3, r.0.clone())).collect();
            pk.sort();
            // an INTEGER PRIMARY KEY is the rowid: never null, even without NOT NULL
            let rowid_alias = match pk.as_slice() {
                [(_, n)] => rows.iter().find(|r| &r.0 == n).filter(|r| r.1.eq_ignore_ascii_case("INTEGER")).map(|r| r.0.clone()),
                _ => None,
            };
            let columns = rows
                .iter()
                .map(|(n, decl, notnull, _)| Column {
                    name: n.clone(),
                    ty: column_type(decl),
                    nullable: !*notnull && rowid_alias.as_ref() != Some(n),
                    sql_type: decl.clone(),
                })
                .collect();
            Ok((columns, pk.into_iter().map(|(_, n)| n).collect()))
        })
        .await
    }

    pub fn add_table(&mut self, tc: &TableConfig, plan: &TablePlan) {
        let index = |n: &String| {
            plan.schema
                .columns
                .iter()
                .position(|c| &c.name == n)
                .expect("plan resolved its columns")
        };
        self.tables.push(Arc::new(SqliteTable {
            name: plan.name.clone(),
            from: match (&tc.table, &tc.query) {
                (Some(t), _) => quote_table(t),
                (None, Some(q)) => subquery(q),
                (None, None) => unreachable!("config check requires table or query"),
            },
            columns: plan.schema.columns.clone(),
            cursor: plan.cursor_columns.iter().map(index).collect(),
            key: plan.schema.primary_key.iter().map(index).collect(),
        }));
    }

    /// Up to `limit` rows with cursor > `after`, ordered by cursor.
    pub async fn read_batch(
        &self,
        t: usize,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<SourceRow>> {
        let table = self.tables[t].clone();
        let after = after.cloned();
        self.blocking(move |conn| {
            let cols: Vec<String> = table
                .columns
                .iter()
                .map(|c| format!("t.{}", quote_ident(&c.name)))
                .collect();
            let cursor_cols: Vec<&str> = table.cursor.iter().map(|&i| cols[i].as_str()).collect();
            let tuple = format!("({})", cursor_cols.join(", "));
            let mut filter = cursor_cols
                .iter()
                .map(|c| format!("{c} IS NOT NULL"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let mut params: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(a) = &after {
                let marks: Vec<String> = (1..=a.0.len()).map(|i| format!("?{i}")).collect();
                filter.push_str(&format!(" AND {tuple} > ({})", marks.join(", ")));
                params.extend(a.0.iter().map(|p| match p {
                    CursorPart::Int(i) => rusqlite::types::Value::Integer(*i),
                    CursorPart::Text(s) => rusqlite::types::Value::Text(s.clone()),
                }));
            }
            let sql = format!(
                "SELECT {} FROM {} AS t WHERE {filter} ORDER BY {} LIMIT {limit}",
                cols.join(", "),
                table.from,
                cursor_cols.join(", ")
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(|e| sql_error(e, || format!("cannot read `{}`", table.name)))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params))
                .map_err(|e| sql_error(e, || format!("cannot read `{}`", table.name)))?;
            let mut out = Vec::new();
            while let Some(row) = rows
                .next()
                .map_err(|e| sql_error(e, || format!("cannot read `{}`", table.name)))?
            {
                let mut values = Vec::with_capacity(table.columns.len());
                for (i, c) in table.columns.iter().enumerate() {
                    let v = row
                        .get_ref(i)
                        .map_err(|e| sql_error(e, || "cannot read a column".into()))?;
                    values.push((
                        c.name.clone(),
                        read_value(v, &c.ty).map_err(|e| {
                            Error::new(e.kind(), format!("`{}`.`{}`: {e}", table.name, c.name))
                        })?,
                    ));
                }
                let mut parts = Vec::with_capacity(table.cursor.len());
                for &i in &table.cursor {
                    parts.push(
                        match row
                            .get_ref(i)
                            .map_err(|e| sql_error(e, || "cannot read a column".into()))?
                        {
                            ValueRef::Integer(v) => CursorPart::Int(v),
                            ValueRef::Text(t) => {
                                CursorPart::Text(String::from_utf8_lossy(t).into_owned())
                            }
                            other => {
                                return Err(Error::data(format!(
                                "`{}`.`{}` holds {:?}: a cursor column must hold integers or text",
                                table.name,
                                table.columns[i].name,
                                other.data_type()
                            )))
                            }
                        },
                    );
                }
                out.push(SourceRow {
                    cursor: Cursor(parts),
                    values,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Every key of table `t` (read in one statement, a consistent snapshot).
    pub async fn scan_keys(&self, t: usize) -> Result<Vec<Vec<(String, Value)>>> {
        let table = self.tables[t].clone();
        self.blocking(move |conn| {
            let cols: Vec<String> = table
                .key
                .iter()
                .map(|&i| format!("t.{}", quote_ident(&table.columns[i].name)))
                .collect();
            let sql = format!("SELECT {} FROM {} AS t", cols.join(", "), table.from);
            let mut stmt = conn.prepare(&sql).map_err(|e| {
                sql_error(e, || format!("cannot scan the keys of `{}`", table.name))
            })?;
            let mut rows = stmt.query([]).map_err(|e| {
                sql_error(e, || format!("cannot scan the keys of `{}`", table.name))
            })?;
            let mut out = Vec::new();
            while let Some(row) = rows
                .next()
                .map_err(|e| sql_error(e, || format!("cannot scan the keys of `{}`", table.name)))?
            {
                let mut key = Vec::with_capacity(table.key.len());
                for (j, &i) in table.key.iter().enumerate() {
                    let c = &table.columns[i];
                    let v = row
                        .get_ref(j)
                        .map_err(|e| sql_error(e, || "cannot read a column".into()))?;
                    key.push((c.name.clone(), read_value(v, &c.ty)?));
                }
                out.push(key);
            }
            Ok(out)
        })
        .await
    }
}

fn text_of(v: ValueRef<'_>) -> Result<String> {
    Ok(match v {
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => String::from_utf8(b.to_vec())
            .map_err(|_| Error::data("holds a blob that is not UTF-8 text"))?,
        ValueRef::Null => String::new(),
    })
}

fn bad(v: ValueRef<'_>, what: &str) -> Error {
    Error::data(format!(
        "value {:?} is not {what}",
        text_of(v).unwrap_or_else(|_| "<blob>".into())
    ))
}

/// `2026-11-26 07:00:00`, `…T…`, fractional seconds, `Z` or `±hh:mm`, a bare
/// date, or integer seconds since the epoch -> microseconds since the epoch (UTC).
pub fn timestamp_micros(v: ValueRef<'_>) -> Result<i64> {
    match v {
        ValueRef::Integer(secs) => Ok(secs.saturating_mul(1_000_000)),
        ValueRef::Text(_) => {
            let s = text_of(v)?;
            let s = s.trim();
            if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
                return Ok(dt.timestamp_micros());
            }
            for fmt in [
                "%Y-%m-%d %H:%M:%S%.f%:z",
                "%Y-%m-%dT%H:%M:%S%.f%:z",
                "%Y-%m-%d %H:%M:%S%.f%#z",
            ] {
                if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
                    return Ok(dt.timestamp_micros());
                }
            }
            let naive = s.trim_end_matches('Z');
            for fmt in [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M",
                "%Y-%m-%dT%H:%M",
            ] {
                if let Ok(dt) = NaiveDateTime::parse_from_str(naive, fmt) {
                    return Ok(dt.and_utc().timestamp_micros());
                }
            }
            if let Ok(d) = NaiveDate::parse_from_str(naive, "%Y-%m-%d") {
                return Ok(d
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
                    .and_utc()
                    .timestamp_micros());
            }
            Err(bad(v, "an ISO-8601 timestamp"))
        }
        _ => Err(bad(
            v,
            "a timestamp (ISO-8601 text or integer epoch seconds)",
        )),
    }
}

/// One stored value as the Avro value of its column type (`Value::Null` for NULL).
pub fn read_value(v: ValueRef<'_>, ty: &ColumnType) -> Result<Value> {
    if let ValueRef::Null = v {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ColumnType::Long | ColumnType::Int => match v {
            ValueRef::Integer(i) => Value::Long(i),
            ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Value::Long(f as i64),
            _ => Value::Long(
                text_of(v)?
                    .trim()
                    .parse()
                    .map_err(|_| bad(v, "an integer"))?,
            ),
        },
        ColumnType::Double | ColumnType::Float => match v {
            ValueRef::Integer(i) => Value::Double(i as f64),
            ValueRef::Real(f) => Value::Double(f),
            _ => Value::Double(text_of(v)?.trim().parse().map_err(|_| bad(v, "a number"))?),
        },
        ColumnType::Text | ColumnType::Json | ColumnType::NumericText => Value::String(text_of(v)?),
        // REAL values are rounded to the declared scale (SQLite stores them in binary)
        ColumnType::Decimal { scale, .. } => match v {
            ValueRef::Real(f) => decimal_from_text(&format!("{f:.*}", *scale as usize), *scale)?,
            _ => decimal_from_text(&text_of(v)?, *scale)?,
        },
        ColumnType::Bool => match v {
            ValueRef::Integer(i) => Value::Boolean(i != 0),
            _ => match text_of(v)?.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "t" | "yes" => Value::Boolean(true),
                "0" | "false" | "f" | "no" => Value::Boolean(false),
                _ => return Err(bad(v, "a boolean")),
            },
        },
        ColumnType::Date => match v {
            ValueRef::Integer(_) => {
                Value::Date(timestamp_micros(v)?.div_euclid(86_400_000_000) as i32)
            }
            _ => {
                let s = text_of(v)?;
                let d = NaiveDate::parse_from_str(s.trim().get(..10).unwrap_or(""), "%Y-%m-%d")
                    .map_err(|_| bad(v, "a date (YYYY-MM-DD)"))?;
                Value::Date((d - DateTime::UNIX_EPOCH.date_naive()).num_days() as i32)
            }
        },
        ColumnType::Time => {
            let s = text_of(v)?;
            let t = NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f")
                .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M"))
                .map_err(|_| bad(v, "a time (HH:MM:SS)"))?;
            Value::TimeMicros(
                i64::from(t.num_seconds_from_midnight()) * 1_000_000
                    + i64::from(t.nanosecond() / 1_000),
            )
        }
        ColumnType::Timestamp => Value::LocalTimestampMicros(timestamp_micros(v)?),
        ColumnType::TimestampTz => Value::TimestampMicros(timestamp_micros(v)?),
        ColumnType::Uuid => match v {
            ValueRef::Blob(b) if b.len() == 16 => {
                Value::Uuid(uuid::Uuid::from_slice(b).map_err(|_| bad(v, "a UUID"))?)
            }
            _ => Value::Uuid(text_of(v)?.trim().parse().map_err(|_| bad(v, "a UUID"))?),
        },
        ColumnType::Bytes => match v {
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            _ => Value::Bytes(text_of(v)?.into_bytes()),
        },
        ColumnType::Array(_) => return Err(Error::data("SQLite has no arrays")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_by_name_then_affinity() {
        for (decl, ty) in [
            ("INTEGER", ColumnType::Long),
            ("bigint", ColumnType::Long),
            ("UNSIGNED BIG INT", ColumnType::Long),
            ("VARCHAR(40)", ColumnType::Text),
            ("NCHAR(5)", ColumnType::Text),
            ("CLOB", ColumnType::Text),
            ("TEXT", ColumnType::Text),
            ("BLOB", ColumnType::Bytes),
            ("", ColumnType::Text),
            ("REAL", ColumnType::Double),
            ("DOUBLE PRECISION", ColumnType::Double),
            ("FLOAT", ColumnType::Double),
            ("NUMERIC", ColumnType::NumericText),
            (
                "DECIMAL(10,2)",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            (
                "decimal(7)",
                ColumnType::Decimal {
                    precision: 7,
                    scale: 0,
                },
            ),
            ("BOOLEAN", ColumnType::Bool),
            ("DATE", ColumnType::Date),
            ("DATETIME", ColumnType::Timestamp),
            ("TIMESTAMP", ColumnType::Timestamp),
            ("timestamptz", ColumnType::TimestampTz),
            ("TIME", ColumnType::Time),
            ("UUID", ColumnType::Uuid),
            ("JSON", ColumnType::Json),
            ("MONEY", ColumnType::NumericText),
            // SQLite's rule 1 wins over the name: "POINT" contains INT
            ("POINT", ColumnType::Long),
        ] {
            assert_eq!(column_type(decl), ty, "{decl}");
        }
    }

    #[test]
    fn values_convert_by_storage_class() {
        assert_eq!(
            read_value(ValueRef::Integer(5), &ColumnType::Long).unwrap(),
            Value::Long(5)
        );
        assert_eq!(
            read_value(ValueRef::Null, &ColumnType::Long).unwrap(),
            Value::Null
        );
        assert_eq!(
            read_value(ValueRef::Integer(1), &ColumnType::Bool).unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            read_value(ValueRef::Text(b"2026-11-26"), &ColumnType::Date).unwrap(),
            Value::Date(20_783)
        );
        assert_eq!(
            read_value(
                ValueRef::Text(b"1970-01-01 00:00:01.5"),
                &ColumnType::Timestamp
            )
            .unwrap(),
            Value::LocalTimestampMicros(1_500_000)
        );
        assert_eq!(
            read_value(
                ValueRef::Text(b"1970-01-01T02:00:00+02:00"),
                &ColumnType::TimestampTz
            )
            .unwrap(),
            Value::TimestampMicros(0)
        );
        assert_eq!(
            read_value(ValueRef::Integer(60), &ColumnType::Timestamp).unwrap(),
            Value::LocalTimestampMicros(60_000_000)
        );
        assert_eq!(
            read_value(
                ValueRef::Real(12.5),
                &ColumnType::Decimal {
                    precision: 10,
                    scale: 2
                }
            )
            .unwrap(),
            decimal_from_text("12.50", 2).unwrap()
        );
        assert_eq!(
            read_value(ValueRef::Text(b"01:02:03"), &ColumnType::Time).unwrap(),
            Value::TimeMicros(3_723_000_000)
        );
        assert!(read_value(ValueRef::Text(b"soon"), &ColumnType::Timestamp).is_err());
    }
}
