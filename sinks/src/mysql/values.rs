//! Avro values -> MySQL values, by the type mapping of `ddl.rs`. Values go
//! as parameters of prepared statements (binary protocol): no quoting, no
//! text round trip for numbers and dates.

use crate::table::json::array_json;
use crate::table::text::literal;
use apache_avro::types::Value;
use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use mysql_async::Value as My;
use syncline_core::value::{
    DATE_INFINITY, DATE_NEG_INFINITY, TIMESTAMP_INFINITY, TIMESTAMP_NEG_INFINITY,
};
use syncline_core::ColumnType;

/// The MySQL value of `v` for a column of type `ty`.
pub fn sql_value(ty: &ColumnType, v: &Value) -> Result<My, String> {
    let v = match v {
        Value::Null => return Ok(My::NULL),
        Value::Union(_, inner) => return sql_value(ty, inner),
        v => v,
    };
    Ok(match (ty, v) {
        (ColumnType::Int | ColumnType::Long, Value::Int(i)) => My::Int(i64::from(*i)),
        (ColumnType::Int | ColumnType::Long, Value::Long(i)) => My::Int(*i),
        (ColumnType::Float, Value::Float(f)) => My::Float(finite(f64::from(*f))? as f32),
        (ColumnType::Double, Value::Double(d)) => My::Double(finite(*d)?),
        (ColumnType::Double, Value::Float(f)) => My::Double(finite(f64::from(*f))?),
        (ColumnType::Bool, Value::Boolean(b)) => My::Int(i64::from(*b)),
        (ColumnType::Text | ColumnType::Json, Value::String(s))
        | (ColumnType::Text, Value::Enum(_, s)) => My::Bytes(s.clone().into_bytes()),
        (ColumnType::Bytes, Value::Bytes(b) | Value::Fixed(_, b)) => My::Bytes(b.clone()),
        (ColumnType::Array(item), Value::Array(items)) => {
            My::Bytes(array_json(item, items)?.into_bytes())
        }
        (ColumnType::Date, Value::Date(d) | Value::Int(d)) => date(*d)?,
        (ColumnType::Time, Value::TimeMicros(us) | Value::Long(us)) => time(*us)?,
        (ColumnType::Time, Value::TimeMillis(ms)) => time(i64::from(*ms) * 1000)?,
        (ColumnType::Timestamp | ColumnType::TimestampTz, v) => match micros(v) {
            Some(us) => datetime(us?)?,
            None => return Err(mismatch(ty, v)),
        },
        (ColumnType::Decimal { .. }, _) => match literal(ty, v)? {
            Some(t) if t == "NaN" => {
                return Err("MySQL decimals have no NaN (Postgres's numeric `NaN`)".into())
            }
            Some(t) => My::Bytes(t.into_bytes()),
            None => My::NULL,
        },
        // Uuids: the canonical text.
        _ => match literal(ty, v)? {
            Some(t) => My::Bytes(t.into_bytes()),
            None => My::NULL,
        },
    })
}

fn mismatch(ty: &ColumnType, v: &Value) -> String {
    format!("a {ty:?} column cannot hold the Avro value {v:?}")
}

fn finite(f: f64) -> Result<f64, String> {
    if f.is_finite() {
        Ok(f)
    } else {
        Err(format!(
            "{f} cannot be stored: MySQL floats have no NaN or Infinity"
        ))
    }
}

/// Microseconds since the epoch of a timestamp value; `None`: not one.
fn micros(v: &Value) -> Option<Result<i64, String>> {
    Some(match v {
        Value::LocalTimestampMicros(us) | Value::TimestampMicros(us) | Value::Long(us) => Ok(*us),
        Value::LocalTimestampMillis(ms) | Value::TimestampMillis(ms) => ms
            .checked_mul(1000)
            .ok_or_else(|| format!("timestamp {ms} ms is out of range")),
        Value::LocalTimestampNanos(ns) | Value::TimestampNanos(ns) if ns % 1000 == 0 => {
            Ok(ns / 1000)
        }
        Value::LocalTimestampNanos(ns) | Value::TimestampNanos(ns) => Err(format!(
            "timestamp {ns} ns has nanoseconds; MySQL keeps microseconds"
        )),
        _ => return None,
    })
}

/// MySQL's dates are years 1 to 9999 here: its year 0 is not 1 BC (MySQL
/// has no years before Christ), so a date before 1 AD is refused rather
/// than stored as another date.
fn year(y: i32) -> Result<u16, String> {
    u16::try_from(y)
        .ok()
        .filter(|y| (1..=9999).contains(y))
        .ok_or_else(|| format!("year {y} is outside MySQL's 1-9999"))
}

fn date(days: i32) -> Result<My, String> {
    if matches!(days, DATE_INFINITY | DATE_NEG_INFINITY) {
        return Err("MySQL has no infinite date (Postgres's `infinity`)".into());
    }
    let d = NaiveDate::from_ymd_opt(1970, 1, 1)
        .expect("valid date")
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .ok_or_else(|| format!("date {days} days from 1970-01-01 is out of range"))?;
    Ok(My::Date(
        year(d.year())?,
        d.month() as u8,
        d.day() as u8,
        0,
        0,
        0,
        0,
    ))
}

fn time(us: i64) -> Result<My, String> {
    if !(0..=86_400_000_000).contains(&us) {
        return Err(format!("time {us} µs is not within a day"));
    }
    let (s, frac) = (us / 1_000_000, (us % 1_000_000) as u32);
    Ok(My::Time(
        false,
        (s / 86_400) as u32,
        (s / 3600 % 24) as u8,
        (s / 60 % 60) as u8,
        (s % 60) as u8,
        frac,
    ))
}

fn datetime(us: i64) -> Result<My, String> {
    if matches!(us, TIMESTAMP_INFINITY | TIMESTAMP_NEG_INFINITY) {
        return Err("MySQL has no infinite timestamp (Postgres's `infinity`)".into());
    }
    let t = DateTime::from_timestamp_micros(us)
        .ok_or_else(|| format!("timestamp {us} µs is out of range"))?
        .naive_utc();
    Ok(My::Date(
        year(t.year())?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond() / 1000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_and_what_mysql_cannot_hold_is_refused() {
        let ok = |ty: ColumnType, v: Value| sql_value(&ty, &v).unwrap();
        assert_eq!(ok(ColumnType::Int, Value::Int(-3)), My::Int(-3));
        assert_eq!(
            ok(ColumnType::Date, Value::Date(19_000)),
            My::Date(2022, 1, 8, 0, 0, 0, 0)
        );
        assert_eq!(
            ok(ColumnType::Time, Value::TimeMicros(86_400_000_000)),
            My::Time(false, 1, 0, 0, 0, 0)
        );
        assert_eq!(
            ok(ColumnType::TimestampTz, Value::TimestampMicros(1_000_001)),
            My::Date(1970, 1, 1, 0, 0, 1, 1)
        );
        assert_eq!(
            ok(
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2
                },
                Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xD2]))
            ),
            My::Bytes(b"12.34".to_vec())
        );
        assert!(sql_value(&ColumnType::Double, &Value::Double(f64::NAN)).is_err());
        let decimal = ColumnType::Decimal {
            precision: 10,
            scale: 2,
        };
        let nan = sql_value(&decimal, &syncline_core::value::decimal_nan(10)).unwrap_err();
        assert!(nan.contains("NaN"), "{nan}");
        assert!(sql_value(&ColumnType::Date, &Value::Date(DATE_INFINITY)).is_err());
        assert!(
            sql_value(&ColumnType::Date, &Value::Date(-719_163)).is_err(),
            "a BC date"
        );
        assert!(sql_value(&ColumnType::Long, &Value::String("x".into())).is_err());
    }
}
