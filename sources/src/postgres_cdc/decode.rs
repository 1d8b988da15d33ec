//! Values and shapes: Postgres text output (what pgoutput sends, and what
//! the snapshot reads with `::text`) -> Avro values of the column types, and
//! a table's columns -> its [`TableSchema`].
//!
//! One conversion for both phases: a row read by the snapshot and the same
//! row streamed later give equal values, and both phases build the schema
//! from (column name, type oid, type modifier) the same way, so they share
//! one registered schema version. Both sessions run with `DateStyle = ISO`,
//! `TimeZone = UTC`, `extra_float_digits = 3`, `bytea_output = hex`
//! ([`SESSION_OPTIONS`]), so the text forms parsed here are the only ones.
//!
//! Nullability: every non-key column is nullable in the schema, whatever
//! the table says. A `NOT NULL` column added or dropped later is then no
//! incompatible schema change, and a snapshot and a stream agree.

use crate::clip;
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike};
use pg_walstream::{ColumnValue, RowData};
use std::collections::HashMap;
use syncline_core::schema::{avro_name, nullable_value};
use syncline_core::value::{
    decimal_value, DATE_INFINITY, DATE_NEG_INFINITY, TIMESTAMP_INFINITY, TIMESTAMP_NEG_INFINITY,
    TIME_END_OF_DAY,
};
use syncline_core::{Column, ColumnType, Error, Result, TableSchema};

/// Session settings of every connection of this source (libpq `options`).
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 -c bytea_output=hex -c IntervalStyle=postgres";

/// A column as the database describes it (a relation message, or pg_attribute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawColumn {
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
}

impl RawColumn {
    /// The columns of a pgoutput relation message.
    pub fn of_relation(columns: &[pg_walstream::RelationColumn]) -> Vec<RawColumn> {
        columns
            .iter()
            .map(|c| RawColumn {
                name: c.name.to_string(),
                type_oid: c.type_id,
                typmod: c.type_modifier,
            })
            .collect()
    }
}

/// What a (type oid, type modifier) stands for, resolved once from pg_type.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    /// `format_type` of the type (of a domain's base type), e.g. `numeric(12,3)`.
    pub sql_type: String,
    /// Base type name (a domain resolved), e.g. `int4`, `_text`.
    pub base: String,
    /// Element type name of an array type.
    pub elem: Option<String>,
    /// The modifier that applies (a domain's own, else the column's).
    pub typmod: i32,
}

/// Resolves a (type oid, modifier) pair; `$1` oid, `$2` modifier.
pub const TYPE_SQL: &str = "SELECT CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) ELSE format_type(t.oid, $2) END, \
       bt.typname::text, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE $2 END, et.typname::text \
     FROM pg_type t \
     JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
     LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A' \
     WHERE t.oid = $1";

/// The column type of a resolved type (the mapping of docs/types.md).
pub fn column_type(info: &TypeInfo) -> ColumnType {
    crate::sql_poll::postgres::column_type(&info.base, info.typmod, info.elem.as_deref())
}

/// The schema of a captured table: its columns in table order, all but the
/// key nullable (see the module docs).
pub fn table_schema(
    source: &str,
    table: &str,
    columns: &[RawColumn],
    key: &[String],
    types: &HashMap<(u32, i32), TypeInfo>,
) -> Result<TableSchema> {
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        let info = types.get(&(c.type_oid, c.typmod)).ok_or_else(|| {
            Error::internal(format!(
                "type oid {} of `{table}`.`{}` was not resolved",
                c.type_oid, c.name
            ))
        })?;
        out.push(Column {
            name: c.name.clone(),
            ty: column_type(info),
            nullable: !key.contains(&c.name),
            sql_type: info.sql_type.clone(),
        });
    }
    for k in key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(Error::config(format!(
                "key column `{k}` is not a column of `{table}`"
            )));
        }
    }
    let short = table.rsplit('.').next().unwrap_or(table);
    Ok(TableSchema {
        namespace: format!("syncline.{}", avro_name(source)),
        name: avro_name(short),
        columns: out,
        primary_key: key.to_vec(),
    })
}

/// One value in Postgres text output form -> the Avro value of `ty`.
pub fn text_value(ty: &ColumnType, text: &str) -> Result<Value> {
    let bad = |what: &str| Error::data(format!("`{}` is not a valid {what}", clip(text)));
    Ok(match ty {
        ColumnType::Int => Value::Int(text.parse().map_err(|_| bad("integer"))?),
        ColumnType::Long => Value::Long(text.parse().map_err(|_| bad("bigint"))?),
        ColumnType::Float => Value::Float(parse_float(text).ok_or_else(|| bad("real"))? as f32),
        ColumnType::Double => Value::Double(parse_float(text).ok_or_else(|| bad("double"))?),
        ColumnType::Bool => match text {
            "t" | "true" => Value::Boolean(true),
            "f" | "false" => Value::Boolean(false),
            _ => return Err(bad("boolean")),
        },
        ColumnType::Text | ColumnType::NumericText | ColumnType::Json => {
            Value::String(text.to_string())
        }
        ColumnType::Decimal { precision, scale } => decimal_value(text, *precision, *scale)?,
        ColumnType::Date => Value::Date(date_days(text).ok_or_else(|| bad("date"))?),
        ColumnType::Time => Value::TimeMicros(time_micros(text).ok_or_else(|| bad("time"))?),
        ColumnType::Timestamp => Value::LocalTimestampMicros(
            timestamp_micros(text, false).ok_or_else(|| bad("timestamp"))?,
        ),
        ColumnType::TimestampTz => {
            Value::TimestampMicros(timestamp_micros(text, true).ok_or_else(|| bad("timestamptz"))?)
        }
        ColumnType::Uuid => Value::Uuid(text.parse().map_err(|_| bad("uuid"))?),
        ColumnType::Bytes => {
            let hex = text.strip_prefix("\\x").ok_or_else(|| bad("bytea (hex)"))?;
            Value::Bytes(hex::decode(hex).map_err(|_| bad("bytea (hex)"))?)
        }
        ColumnType::Array(item) => {
            let items = parse_array(text).ok_or_else(|| bad("one-dimensional array"))?;
            Value::Array(
                items
                    .into_iter()
                    .map(|x| match x {
                        None => Ok(nullable_value(None)),
                        Some(s) => text_value(item, &s).map(|v| nullable_value(Some(v))),
                    })
                    .collect::<Result<_>>()?,
            )
        }
    })
}

/// A date in ISO text: `2024-01-02`, `10000-01-01`, `0044-03-15 BC`,
/// `infinity`, `-infinity` -> days since 1970-01-01 (infinities as
/// [`DATE_INFINITY`] / [`DATE_NEG_INFINITY`]). `None`: not a date, or
/// beyond the years chrono holds (±262,143).
pub fn date_days(text: &str) -> Option<i32> {
    match text {
        "infinity" => return Some(DATE_INFINITY),
        "-infinity" => return Some(DATE_NEG_INFINITY),
        _ => {}
    }
    let (text, bc) = without_bc(text);
    let d = ymd(text, bc)?;
    i32::try_from((d - DateTime::UNIX_EPOCH.date_naive()).num_days()).ok()
}

/// `text` without Postgres's ` BC` suffix, and whether it had one.
fn without_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    }
}

/// `Y...-MM-DD` (four or more year digits; `bc`: Postgres's year N BC is
/// the proleptic year 1 - N).
fn ymd(text: &str, bc: bool) -> Option<NaiveDate> {
    let (y, rest) = text.split_once('-')?;
    let (m, d) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y) && y.len() >= 4 && digits(m) && digits(d)) {
        return None;
    }
    let year: i32 = y.parse().ok()?;
    let year = if bc { 1 - year } else { year };
    NaiveDate::from_ymd_opt(year, m.parse().ok()?, d.parse().ok()?)
}

/// A time of day in ISO text (`HH:MM:SS[.ffffff]`, up to `24:00:00`) ->
/// microseconds since midnight.
pub fn time_micros(text: &str) -> Option<i64> {
    if let Some(frac) = text.strip_prefix("24:00:00") {
        let zero = frac.is_empty()
            || frac
                .strip_prefix('.')
                .is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b == b'0'));
        return zero.then_some(TIME_END_OF_DAY);
    }
    let t = NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?;
    Some(i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1_000))
}

/// A timestamp in ISO text (`2024-01-02 03:04:05.123456`, with `+00` or
/// another offset when `tz`, ` BC` last, `infinity`, `-infinity`) ->
/// microseconds since 1970-01-01 UTC (infinities as
/// [`TIMESTAMP_INFINITY`] / [`TIMESTAMP_NEG_INFINITY`]).
pub fn timestamp_micros(text: &str, tz: bool) -> Option<i64> {
    match text {
        "infinity" => return Some(TIMESTAMP_INFINITY),
        "-infinity" => return Some(TIMESTAMP_NEG_INFINITY),
        _ => {}
    }
    let (text, bc) = without_bc(text);
    let (date, time) = text.split_once(' ')?;
    let (time, offset_s) = if tz {
        let at = time.rfind(['+', '-'])?;
        (&time[..at], utc_offset_seconds(&time[at..])?)
    } else {
        (time, 0)
    };
    let t = NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?;
    let local = ymd(date, bc)?.and_time(t).and_utc().timestamp_micros();
    local.checked_sub(offset_s * 1_000_000)
}

/// `+00`, `+05:30`, `-03:30:15` -> seconds east of UTC.
fn utc_offset_seconds(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let mut seconds = 0i64;
    let mut parts = 0;
    for (i, part) in rest.split(':').enumerate() {
        if i > 2 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seconds += part.parse::<i64>().ok()? * [3600, 60, 1][i];
        parts += 1;
    }
    (parts > 0).then_some(sign * seconds)
}

/// A row's values by column name, in the table schema's column order.
pub type Row = Vec<(String, Value)>;

/// One row of a pgoutput change -> values in the schema's column order,
/// and the columns left out because their TOASTed value did not change
/// (filled from `old` when it has them, else null and listed). A value that
/// is not UTF-8 or not of its column's type is a `Data` error naming the
/// column; `table` names the table in it, and is called only then (this
/// runs for every streamed row). Pure: fuzzed with hostile pgoutput bytes
/// (`fuzz/`).
pub fn row_values(
    schema: &TableSchema,
    table: impl Fn() -> String,
    data: &RowData,
    old: Option<&RowData>,
) -> Result<(Row, Vec<String>)> {
    let mut values = Vec::with_capacity(schema.columns.len());
    let mut unchanged = Vec::new();
    for c in &schema.columns {
        let v = match data
            .get(&c.name)
            .or_else(|| old.and_then(|o| o.get(&c.name)))
        {
            None => {
                unchanged.push(c.name.clone());
                Value::Null
            }
            Some(ColumnValue::Null) => Value::Null,
            Some(ColumnValue::Text(b)) => {
                let s = std::str::from_utf8(b).map_err(|_| {
                    Error::data(format!(
                        "column `{}` of `{}` is not UTF-8 text",
                        c.name,
                        table()
                    ))
                })?;
                text_value(&c.ty, s).map_err(|e| {
                    Error::data(format!("column `{}` of `{}`: {e}", c.name, table()))
                })?
            }
            Some(ColumnValue::Binary(_)) => {
                return Err(Error::internal("binary pgoutput values were not requested"))
            }
        };
        values.push((c.name.clone(), v));
    }
    Ok((values, unchanged))
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// `{a,"b c",NULL,"x\"y"}` -> items (None for NULL). One dimension only.
pub fn parse_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    '\\' => s.push(chars.next()?),
                    '"' => break,
                    c => s.push(c),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' {
                    return None; // nested arrays are not supported
                }
                s.push(c);
                chars.next();
            }
            (s != "NULL").then_some(s)
        };
        out.push(item);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_output_of_each_type() {
        assert_eq!(text_value(&ColumnType::Int, "-5").unwrap(), Value::Int(-5));
        assert_eq!(
            text_value(&ColumnType::Bool, "t").unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            text_value(&ColumnType::TimestampTz, "1970-01-01 00:00:01.5+00").unwrap(),
            Value::TimestampMicros(1_500_000)
        );
        assert_eq!(
            text_value(&ColumnType::TimestampTz, "1970-01-01 01:00:00+01:00").unwrap(),
            Value::TimestampMicros(0)
        );
        assert_eq!(
            text_value(&ColumnType::Timestamp, "1970-01-02 00:00:00").unwrap(),
            Value::LocalTimestampMicros(86_400_000_000)
        );
        assert_eq!(
            text_value(&ColumnType::Date, "1970-01-11").unwrap(),
            Value::Date(10)
        );
        assert_eq!(
            text_value(&ColumnType::Time, "00:00:01.000002").unwrap(),
            Value::TimeMicros(1_000_002)
        );
        assert_eq!(
            text_value(&ColumnType::Bytes, "\\x00ff").unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert!(text_value(&ColumnType::Int, "x").is_err());
    }

    /// The values Postgres holds beyond the everyday range, as its ISO
    /// text output writes them.
    #[test]
    fn parses_infinities_bc_dates_far_years_and_the_end_of_a_day() {
        let date = |t| text_value(&ColumnType::Date, t).unwrap();
        assert_eq!(date("infinity"), Value::Date(DATE_INFINITY));
        assert_eq!(date("-infinity"), Value::Date(DATE_NEG_INFINITY));
        // 1 BC is year 0; 0001-01-01 is day -719,162
        assert_eq!(date("0001-12-31 BC"), Value::Date(-719_163));
        assert_eq!(date("10000-01-01"), Value::Date(2_932_897));
        let ts = |t, tz| timestamp_micros(t, tz).unwrap();
        assert_eq!(ts("infinity", false), TIMESTAMP_INFINITY);
        assert_eq!(ts("-infinity", true), TIMESTAMP_NEG_INFINITY);
        assert_eq!(
            ts("0001-12-31 23:59:59.5 BC", false),
            -719_162 * 86_400_000_000 - 500_000
        );
        assert_eq!(
            ts("0001-12-31 23:59:59.5+00 BC", true),
            -719_162 * 86_400_000_000 - 500_000
        );
        assert_eq!(
            ts("10000-01-01 00:00:00+05:30", true),
            2_932_897 * 86_400_000_000 - 19_800_000_000
        );
        assert_eq!(ts("1970-01-01 00:00:00-00:00:15", true), 15_000_000);
        assert_eq!(time_micros("24:00:00"), Some(TIME_END_OF_DAY));
        assert_eq!(time_micros("24:00:00.000"), Some(TIME_END_OF_DAY));
        assert_eq!(time_micros("24:00:01"), None);
        for bad in ["999-01-01", "2024-1-x", "infinityy", "2024-01-01 BC BC", ""] {
            assert_eq!(date_days(bad), None, "{bad}");
        }
        assert_eq!(timestamp_micros("2024-01-01 00:00:00", true), None);
    }

    #[test]
    fn parses_one_dimensional_arrays() {
        assert_eq!(
            parse_array(r#"{a,"b c",NULL,"x\"y","NULL"}"#).unwrap(),
            vec![
                Some("a".into()),
                Some("b c".into()),
                None,
                Some("x\"y".into()),
                Some("NULL".into())
            ]
        );
        assert_eq!(parse_array("{}").unwrap(), Vec::<Option<String>>::new());
        assert!(parse_array("{{1},{2}}").is_none());
    }
}
