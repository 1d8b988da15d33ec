//! The canonical text of a value: Postgres' text input form, exact for
//! every mapped type. Integers and decimals digit for digit, floats in Rust's
//! shortest round-trip form (which Postgres parses back to the same bits),
//! times with all six fractional digits, years before 1 AD with ` BC`,
//! Postgres's infinities (`syncline_core::value::DATE_INFINITY` and the
//! like) as `infinity` / `-infinity`, a numeric's NaN
//! (`syncline_core::value::decimal_nan`) as `NaN`.
//! Nothing is rounded: a value that cannot be written exactly (nanoseconds,
//! a NUL character in text) is an error naming why.
//!
//! It is what the postgres sink copies in, the canonical key text
//! ([`super::key_bytes`]), and the text the other sinks store where their
//! target has no exact type of its own (decimals, dates, times, uuids).

use apache_avro::types::Value;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use syncline_core::value::{
    decimal_bytes, decimal_text, DATE_INFINITY, DATE_NEG_INFINITY, TIMESTAMP_INFINITY,
    TIMESTAMP_NEG_INFINITY,
};
use syncline_core::ColumnType;

/// `\x00ff`: bytes as Postgres' hex `bytea` text.
pub fn bytea_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The canonical (Postgres input) text of `v` for a column of type `ty`;
/// `None` is NULL.
pub fn literal(ty: &ColumnType, v: &Value) -> Result<Option<String>, String> {
    let v = match v {
        Value::Null => return Ok(None),
        Value::Union(_, inner) => return literal(ty, inner),
        v => v,
    };
    let mismatch = || format!("a {ty:?} column cannot hold the Avro value {}", short(v));
    let text = match (ty, v) {
        (ColumnType::Int | ColumnType::Long, Value::Int(i)) => i.to_string(),
        (ColumnType::Int | ColumnType::Long, Value::Long(i)) => i.to_string(),
        (ColumnType::Decimal { precision, scale }, v) => match decimal_bytes(v) {
            Some(b) => decimal_text(&b, *precision, *scale),
            None => return Err(mismatch()),
        },
        (ColumnType::NumericText, Value::String(s)) => s.clone(),
        (ColumnType::Float, Value::Float(f)) => float_text(f64::from(*f), f.to_string()),
        (ColumnType::Double, Value::Double(d)) => float_text(*d, d.to_string()),
        (ColumnType::Double, Value::Float(f)) => {
            float_text(f64::from(*f), f64::from(*f).to_string())
        }
        (ColumnType::Text | ColumnType::Json, Value::String(s))
        | (ColumnType::Text, Value::Enum(_, s)) => {
            if s.contains('\0') {
                return Err(
                    "text contains a NUL character, which Postgres text cannot hold".into(),
                );
            }
            s.clone()
        }
        (ColumnType::Bool, Value::Boolean(b)) => (if *b { "t" } else { "f" }).to_string(),
        (ColumnType::Date, Value::Date(d) | Value::Int(d)) => date_text(*d)?,
        (ColumnType::Time, Value::TimeMicros(us) | Value::Long(us)) => time_text(*us)?,
        (ColumnType::Time, Value::TimeMillis(ms)) => time_text(i64::from(*ms) * 1000)?,
        (ColumnType::Timestamp, Value::LocalTimestampMicros(us) | Value::Long(us)) => {
            timestamp_text(*us, false)?
        }
        (ColumnType::Timestamp, Value::LocalTimestampMillis(ms)) => {
            timestamp_text(millis_to_micros(*ms)?, false)?
        }
        (ColumnType::Timestamp, Value::LocalTimestampNanos(ns)) => {
            timestamp_text(nanos_to_micros(*ns)?, false)?
        }
        (ColumnType::TimestampTz, Value::TimestampMicros(us) | Value::Long(us)) => {
            timestamp_text(*us, true)?
        }
        (ColumnType::TimestampTz, Value::TimestampMillis(ms)) => {
            timestamp_text(millis_to_micros(*ms)?, true)?
        }
        (ColumnType::TimestampTz, Value::TimestampNanos(ns)) => {
            timestamp_text(nanos_to_micros(*ns)?, true)?
        }
        (ColumnType::Uuid, Value::Uuid(u)) => u.to_string(),
        (ColumnType::Uuid, Value::String(s)) => s.clone(),
        (ColumnType::Bytes, Value::Bytes(b) | Value::Fixed(_, b)) => bytea_hex(b),
        (ColumnType::Array(item), Value::Array(items)) => array_text(item, items)?,
        _ => return Err(mismatch()),
    };
    Ok(Some(text))
}

/// An array literal: `{"1","2",NULL}`; nested arrays are not quoted.
fn array_text(item: &ColumnType, items: &[Value]) -> Result<String, String> {
    let mut s = String::from("{");
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match literal(item, v)? {
            None => s.push_str("NULL"),
            Some(t) if matches!(item, ColumnType::Array(_)) => s.push_str(&t),
            Some(t) => {
                s.push('"');
                for c in t.chars() {
                    if c == '"' || c == '\\' {
                        s.push('\\');
                    }
                    s.push(c);
                }
                s.push('"');
            }
        }
    }
    s.push('}');
    Ok(s)
}

fn float_text(v: f64, shortest: String) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        (if v > 0.0 { "Infinity" } else { "-Infinity" }).into()
    } else {
        shortest
    }
}

fn millis_to_micros(ms: i64) -> Result<i64, String> {
    ms.checked_mul(1000)
        .ok_or_else(|| format!("timestamp {ms} ms is out of range"))
}

fn nanos_to_micros(ns: i64) -> Result<i64, String> {
    if ns % 1000 != 0 {
        return Err(format!(
            "timestamp {ns} ns has nanoseconds; Postgres keeps microseconds"
        ));
    }
    Ok(ns / 1000)
}

/// Postgres writes years before 1 AD as `YYYY ... BC` (no year 0).
fn year_parts(year: i32) -> (i32, &'static str) {
    if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    }
}

fn date_text(days: i32) -> Result<String, String> {
    match days {
        DATE_INFINITY => return Ok("infinity".into()),
        DATE_NEG_INFINITY => return Ok("-infinity".into()),
        _ => {}
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let d = epoch
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .ok_or_else(|| format!("date {days} days from 1970-01-01 is out of range"))?;
    let (y, bc) = year_parts(d.year());
    Ok(format!("{y:04}-{:02}-{:02}{bc}", d.month(), d.day()))
}

fn time_text(us: i64) -> Result<String, String> {
    // 24:00:00 is a valid Postgres time.
    if !(0..=86_400_000_000).contains(&us) {
        return Err(format!("time {us} µs is not within a day"));
    }
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    Ok(format!(
        "{:02}:{:02}:{:02}.{frac:06}",
        s / 3600,
        s / 60 % 60,
        s % 60
    ))
}

fn timestamp_text(us: i64, utc: bool) -> Result<String, String> {
    match us {
        TIMESTAMP_INFINITY => return Ok("infinity".into()),
        TIMESTAMP_NEG_INFINITY => return Ok("-infinity".into()),
        _ => {}
    }
    let t: NaiveDateTime = DateTime::from_timestamp_micros(us)
        .ok_or_else(|| format!("timestamp {us} µs is out of range"))?
        .naive_utc();
    let (y, bc) = year_parts(t.year());
    let tz = if utc { "+00" } else { "" };
    Ok(format!(
        "{y:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}{tz}{bc}",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000
    ))
}

/// A value for an error message, without dumping a huge string or array.
fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Decimal;

    fn lit(ty: ColumnType, v: Value) -> String {
        literal(&ty, &v).unwrap().unwrap()
    }

    #[test]
    fn scalars_are_exact() {
        assert_eq!(
            lit(ColumnType::Long, Value::Long(i64::MIN)),
            "-9223372036854775808"
        );
        assert_eq!(lit(ColumnType::Double, Value::Double(0.1)), "0.1");
        assert_eq!(lit(ColumnType::Double, Value::Double(f64::NAN)), "NaN");
        assert_eq!(
            lit(ColumnType::Float, Value::Float(f32::NEG_INFINITY)),
            "-Infinity"
        );
        assert_eq!(lit(ColumnType::Float, Value::Float(1.1)), "1.1");
        assert_eq!(
            lit(
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2
                },
                Value::Decimal(Decimal::from(vec![0xfbu8, 0x2e]))
            ),
            "-12.34"
        );
        assert_eq!(
            lit(
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2
                },
                syncline_core::value::decimal_nan(10)
            ),
            "NaN"
        );
        assert_eq!(
            lit(ColumnType::Bytes, Value::Bytes(vec![0, 0xff])),
            "\\x00ff"
        );
        assert_eq!(
            literal(&ColumnType::Text, &Value::Union(0, Box::new(Value::Null))).unwrap(),
            None
        );
    }

    #[test]
    fn times_keep_microseconds_and_eras() {
        assert_eq!(lit(ColumnType::Date, Value::Date(0)), "1970-01-01");
        assert_eq!(
            lit(ColumnType::Date, Value::Date(-719_163)),
            "0001-12-31 BC"
        );
        assert_eq!(
            lit(ColumnType::Time, Value::TimeMicros(86_399_999_999)),
            "23:59:59.999999"
        );
        assert_eq!(
            lit(ColumnType::Timestamp, Value::LocalTimestampMicros(-1)),
            "1969-12-31 23:59:59.999999"
        );
        assert_eq!(
            lit(ColumnType::TimestampTz, Value::TimestampMicros(1_000_001)),
            "1970-01-01 00:00:01.000001+00"
        );
        assert!(literal(&ColumnType::Timestamp, &Value::LocalTimestampNanos(1)).is_err());
        assert_eq!(
            lit(ColumnType::Date, Value::Date(DATE_INFINITY)),
            "infinity"
        );
        assert_eq!(
            lit(ColumnType::Date, Value::Date(DATE_NEG_INFINITY)),
            "-infinity"
        );
        assert_eq!(
            lit(
                ColumnType::TimestampTz,
                Value::TimestampMicros(TIMESTAMP_INFINITY)
            ),
            "infinity"
        );
        assert_eq!(
            lit(
                ColumnType::Timestamp,
                Value::LocalTimestampMicros(TIMESTAMP_NEG_INFINITY)
            ),
            "-infinity"
        );
        assert_eq!(
            lit(ColumnType::Time, Value::TimeMicros(86_400_000_000)),
            "24:00:00.000000"
        );
    }

    #[test]
    fn mismatches_and_nul_are_errors() {
        assert!(literal(&ColumnType::Int, &Value::String("1".into())).is_err());
        assert!(literal(&ColumnType::Text, &Value::String("a\0b".into())).is_err());
    }
}
