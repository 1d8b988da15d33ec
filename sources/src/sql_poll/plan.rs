//! What to read from one table, resolved from its config and its columns:
//! the same for every database.

use super::config::{Mode, TableConfig};
use super::cursor::Cursor;
use apache_avro::types::Value;
use std::time::Duration;
use syncline_core::schema::avro_name;
use syncline_core::{Column, ColumnType, Error, Result, TableSchema};

/// One table (or query) of a running source.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// `source.table` of its change records and the key of its cursor.
    pub name: String,
    pub topic: String,
    /// Columns, and the key columns as `primary_key`.
    pub schema: TableSchema,
    /// `[incrementing]` or `[timestamp, incrementing]`.
    pub cursor_columns: Vec<String>,
    pub detect_deletes: bool,
    pub delete_scan_interval: Duration,
    pub commit_delay_ms: u64,
}

/// A row read from the source: its cursor and its values in column order.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub cursor: Cursor,
    pub values: Vec<(String, Value)>,
}

impl TablePlan {
    /// Resolve key and cursor columns of `tc` against the introspected
    /// `columns` and `primary_key`. `cursor_type_ok(is_timestamp, type)` says
    /// which column types the database can use as a cursor.
    pub fn resolve(
        source: &str,
        tc: &TableConfig,
        columns: Vec<Column>,
        primary_key: Vec<String>,
        cursor_type_ok: impl Fn(bool, &ColumnType) -> bool,
    ) -> Result<TablePlan> {
        let name = tc.entry_name();
        let find = |col: &str, what: &str| -> Result<&Column> {
            columns.iter().find(|c| c.name == col).ok_or_else(|| {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                Error::config(format!(
                    "`{name}`: {what} `{col}` is not one of its columns ({})",
                    names.join(", ")
                ))
            })
        };
        let key = match &tc.key {
            Some(k) => k.clone(),
            None if primary_key.is_empty() => {
                return Err(Error::config(format!(
                    "`{name}` has no primary key: set `key` to the columns that identify a row"
                )))
            }
            None => primary_key,
        };
        for k in &key {
            find(k, "key column")?;
        }
        let incrementing = match &tc.incrementing_column {
            Some(c) => c.clone(),
            None => match key.as_slice() {
                [k] if matches!(find(k, "key column")?.ty, ColumnType::Int | ColumnType::Long) => k.clone(),
                _ => {
                    return Err(Error::config(format!(
                        "`{name}`: set `incrementing_column` (an integer column that grows with every new row); \
                         the key is not a single integer column"
                    )))
                }
            },
        };
        let inc_col = find(&incrementing, "incrementing_column")?;
        if !cursor_type_ok(false, &inc_col.ty) {
            return Err(Error::config(format!(
                "`{name}`: incrementing_column `{incrementing}` is {}, not an integer column",
                inc_col.sql_type
            )));
        }
        let mut cursor_columns = vec![incrementing];
        if tc.mode == Mode::Timestamp {
            let ts = tc.timestamp_column.clone().unwrap_or_default();
            let ts_col = find(&ts, "timestamp_column")?;
            if !cursor_type_ok(true, &ts_col.ty) {
                return Err(Error::config(format!(
                    "`{name}`: timestamp_column `{ts}` is {}; use a timestamp or timestamptz column",
                    ts_col.sql_type
                )));
            }
            cursor_columns.insert(0, ts);
        }
        let short = name.rsplit('.').next().unwrap_or(&name).to_string();
        Ok(TablePlan {
            schema: TableSchema {
                namespace: format!("syncline.{}", avro_name(source)),
                name: avro_name(&short),
                columns,
                primary_key: key,
            },
            name,
            topic: tc.topic.clone(),
            cursor_columns,
            detect_deletes: tc.detect_deletes,
            delete_scan_interval: Duration::from_millis(tc.delete_scan_interval_ms),
            commit_delay_ms: tc.commit_delay_ms,
        })
    }

    /// The key values of a row, in key order.
    pub fn key_of(&self, values: &[(String, Value)]) -> Vec<(String, Value)> {
        self.schema
            .primary_key
            .iter()
            .map(|k| {
                let v = values
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null);
                (k.clone(), v)
            })
            .collect()
    }

    pub fn key_columns(&self) -> Vec<&Column> {
        self.schema
            .primary_key
            .iter()
            .filter_map(|k| self.schema.columns.iter().find(|c| &c.name == k))
            .collect()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.schema.columns.iter().find(|c| c.name == name)
    }
}

/// `public.orders` -> `"public"."orders"`; a name already quoted is kept.
pub fn quote_table(name: &str) -> String {
    if name.contains('"') {
        return name.to_string();
    }
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A user's query without surrounding blanks and trailing semicolons.
pub fn plain_query(query: &str) -> &str {
    query.trim().trim_end_matches(';').trim_end()
}

/// A user's query as a subquery.
pub fn subquery(query: &str) -> String {
    format!("({})", plain_query(query))
}
