//! Avro row values to CEL values and back. One table, used by `set`, `cast`
//! and the expressions' variables, so a column reads and writes the same way
//! everywhere (documented in processors/README.md):
//!
//! | column type | CEL value |
//! |---|---|
//! | int, long | int |
//! | float, double | double |
//! | decimal(p,s), numeric | double (for arithmetic; untouched columns keep their exact value) |
//! | text, json, uuid | string |
//! | bool | bool |
//! | bytes | bytes |
//! | date | timestamp at 00:00 UTC |
//! | time | duration since midnight |
//! | timestamp, timestamptz | timestamp (UTC; a timestamp without time zone is read as UTC) |
//! | array of T | list |
//! | null | null |
//!
//! Back to a column (a `set` result, a `cast`): numbers convert between the
//! numeric types only when no digit is lost (12.0 to long is 12, 12.5 fails),
//! text is parsed (`"12"` to long, RFC 3339 to timestamp), and anything
//! becomes text. A conversion that fails is a runtime failure of the change.

use apache_avro::types::Value as Avro;
use cel::objects::{Key, Map};
use cel::Value as Cel;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use syncline_core::value::{decimal_bytes, decimal_from_text, decimal_text, unwrap_union};
use syncline_core::{Column, ColumnType};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The CEL value of a column value (`ty` gives a decimal its scale).
pub(crate) fn to_cel(v: &Avro, ty: &ColumnType) -> Cel {
    let Some(v) = unwrap_union(v) else {
        return Cel::Null;
    };
    match (v, ty) {
        (Avro::Int(i), _) => Cel::Int(*i as i64),
        (Avro::Long(l), _) => Cel::Int(*l),
        (Avro::Float(f), _) => Cel::Float(*f as f64),
        (Avro::Double(d), _) => Cel::Float(*d),
        (Avro::Boolean(b), _) => Cel::Bool(*b),
        (Avro::Decimal(_), ColumnType::Decimal { precision, scale }) => {
            let text = decimal_text(&decimal_bytes(v).unwrap_or_default(), *precision, *scale);
            // `NaN` parses as f64's NaN, as Postgres's numeric NaN is one.
            Cel::Float(text.parse().unwrap_or(f64::NAN))
        }
        (Avro::String(s), ColumnType::NumericText) => match s.parse::<f64>() {
            Ok(f) => Cel::Float(f),
            Err(_) => Cel::String(Arc::new(s.clone())),
        },
        (Avro::String(s) | Avro::Enum(_, s), _) => Cel::String(Arc::new(s.clone())),
        (Avro::Uuid(u), _) => Cel::String(Arc::new(u.to_string())),
        (Avro::Bytes(b) | Avro::Fixed(_, b), _) => Cel::Bytes(Arc::new(b.clone())),
        (Avro::Date(d), _) => micros_to_cel((*d as i64).saturating_mul(MICROS_PER_DAY)),
        (Avro::TimeMicros(t), _) => Cel::Duration(chrono::Duration::microseconds(*t)),
        (Avro::TimeMillis(t), _) => Cel::Duration(chrono::Duration::milliseconds(*t as i64)),
        (Avro::TimestampMicros(t) | Avro::LocalTimestampMicros(t), _) => micros_to_cel(*t),
        (Avro::TimestampMillis(t) | Avro::LocalTimestampMillis(t), _) => {
            micros_to_cel(t.saturating_mul(1000))
        }
        (Avro::TimestampNanos(t) | Avro::LocalTimestampNanos(t), _) => micros_to_cel(t / 1000),
        (Avro::Array(items), _) => {
            let inner = match ty {
                ColumnType::Array(inner) => inner.as_ref(),
                other => other,
            };
            Cel::List(Arc::new(items.iter().map(|i| to_cel(i, inner)).collect()))
        }
        (Avro::Map(m), _) => {
            let m: HashMap<Key, Cel> = m
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v, ty)))
                .collect();
            Cel::Map(Map { map: Arc::new(m) })
        }
        (other, _) => Cel::String(Arc::new(format!("{other:?}"))),
    }
}

/// A row as a CEL map from column name to value.
pub(crate) fn row_to_cel(row: &[(String, Avro)], columns: &[Column]) -> Cel {
    let m: HashMap<Key, Cel> = row
        .iter()
        .map(|(name, v)| {
            let ty = columns
                .iter()
                .find(|c| &c.name == name)
                .map(|c| &c.ty)
                .unwrap_or(&ColumnType::Text);
            (Key::String(Arc::new(name.clone())), to_cel(v, ty))
        })
        .collect();
    Cel::Map(Map { map: Arc::new(m) })
}

fn micros_to_cel(us: i64) -> Cel {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => Cel::Timestamp(t.fixed_offset()),
        None => Cel::Int(us),
    }
}

/// The exact text of a column value: what `mask` hashes and what a cast to
/// text gives. Decimals keep every digit (not the double CEL sees); null has none.
pub(crate) fn canonical_text(v: &Avro, ty: &ColumnType) -> Option<String> {
    let v = unwrap_union(v)?;
    match (v, ty) {
        (Avro::Decimal(_), ColumnType::Decimal { precision, scale }) => {
            Some(decimal_text(&decimal_bytes(v)?, *precision, *scale))
        }
        (Avro::String(s), _) => Some(s.clone()),
        (Avro::LocalTimestampMicros(t), _) => DateTime::<Utc>::from_timestamp_micros(*t)
            .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        (Avro::Date(d), _) => NaiveDate::default()
            .checked_add_signed(chrono::Duration::days(*d as i64))
            .map(|d| d.to_string()),
        _ => text_of(&to_cel(v, ty)),
    }
}

/// Text of a CEL value; `None` for null.
fn text_of(v: &Cel) -> Option<String> {
    Some(match v {
        Cel::Null => return None,
        Cel::String(s) => s.to_string(),
        Cel::Int(i) => i.to_string(),
        Cel::UInt(u) => u.to_string(),
        // Rust's Display never uses an exponent, so the text parses as a decimal.
        Cel::Float(f) => f.to_string(),
        Cel::Bool(b) => b.to_string(),
        Cel::Bytes(b) => hex::encode(b.as_slice()),
        Cel::Timestamp(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        Cel::Duration(d) => {
            let us = d.num_microseconds().unwrap_or(0);
            let t = NaiveTime::from_num_seconds_from_midnight_opt(
                (us.rem_euclid(MICROS_PER_DAY) / 1_000_000) as u32,
                (us.rem_euclid(1_000_000) * 1000) as u32,
            )
            .unwrap_or_default();
            t.format("%H:%M:%S%.f").to_string()
        }
        Cel::List(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| text_of(i).unwrap_or_else(|| "null".into()))
                .collect();
            format!("[{}]", parts.join(","))
        }
        other => format!("{other:?}"),
    })
}

/// A CEL value as the value of `col`, or why it cannot be.
pub(crate) fn to_avro(v: &Cel, col: &Column) -> Result<Avro, String> {
    if matches!(v, Cel::Null) {
        return if col.nullable {
            Ok(Avro::Null)
        } else {
            Err(format!(
                "column `{}` is NOT NULL but the value is null",
                col.name
            ))
        };
    }
    to_type(v, &col.ty).map_err(|why| format!("column `{}`: {why}", col.name))
}

fn to_type(v: &Cel, ty: &ColumnType) -> Result<Avro, String> {
    let bad = || format!("cannot convert {} to {}", describe(v), type_name(ty));
    Ok(match ty {
        ColumnType::Int => {
            let i = integer(v).ok_or_else(bad)?;
            Avro::Int(i32::try_from(i).map_err(|_| format!("{i} is out of range for int"))?)
        }
        ColumnType::Long => Avro::Long(integer(v).ok_or_else(bad)?),
        ColumnType::Float => Avro::Float(float(v).ok_or_else(bad)? as f32),
        ColumnType::Double => Avro::Double(float(v).ok_or_else(bad)?),
        ColumnType::Decimal { precision, scale } => {
            let text = match v {
                Cel::Int(_) | Cel::UInt(_) | Cel::Float(_) | Cel::String(_) => text_of(v),
                _ => None,
            }
            .ok_or_else(bad)?;
            let int_digits = text
                .trim_start_matches(['-', '+'])
                .split('.')
                .next()
                .unwrap_or("")
                .trim_start_matches('0')
                .len();
            if int_digits + *scale as usize > *precision as usize {
                return Err(format!("{text} does not fit decimal({precision},{scale})"));
            }
            decimal_from_text(&text, *scale).map_err(|e| e.to_string())?
        }
        ColumnType::NumericText => match v {
            Cel::String(s) if s.parse::<f64>().is_err() => return Err(bad()),
            Cel::Int(_) | Cel::UInt(_) | Cel::Float(_) | Cel::String(_) => {
                Avro::String(text_of(v).ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        },
        ColumnType::Text | ColumnType::Json => Avro::String(text_of(v).ok_or_else(bad)?),
        ColumnType::Bool => match v {
            Cel::Bool(b) => Avro::Boolean(*b),
            Cel::String(s) if s.as_str() == "true" => Avro::Boolean(true),
            Cel::String(s) if s.as_str() == "false" => Avro::Boolean(false),
            _ => return Err(bad()),
        },
        ColumnType::Bytes => match v {
            Cel::Bytes(b) => Avro::Bytes(b.to_vec()),
            Cel::String(s) => Avro::Bytes(s.as_bytes().to_vec()),
            _ => return Err(bad()),
        },
        ColumnType::Uuid => match v {
            Cel::String(s) => Avro::Uuid(s.trim().parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        },
        ColumnType::Date => {
            let us = timestamp_micros(v, false).ok_or_else(bad)?;
            Avro::Date(i32::try_from(us.div_euclid(MICROS_PER_DAY)).map_err(|_| bad())?)
        }
        ColumnType::Time => match v {
            Cel::Duration(d) => Avro::TimeMicros(d.num_microseconds().ok_or_else(bad)?),
            Cel::String(s) => {
                let t = NaiveTime::parse_from_str(s, "%H:%M:%S%.f").map_err(|_| bad())?;
                let since = t - NaiveTime::MIN;
                Avro::TimeMicros(since.num_microseconds().ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        },
        ColumnType::Timestamp => {
            Avro::LocalTimestampMicros(timestamp_micros(v, true).ok_or_else(bad)?)
        }
        ColumnType::TimestampTz => {
            Avro::TimestampMicros(timestamp_micros(v, false).ok_or_else(bad)?)
        }
        ColumnType::Array(inner) => match v {
            Cel::List(items) => Avro::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Cel::Null => Ok(syncline_core::schema::nullable_value(None)),
                        i => to_type(i, inner)
                            .map(|v| syncline_core::schema::nullable_value(Some(v))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(bad()),
        },
    })
}

/// An integer without loss: 12, 12.0 and "12" are 12; 12.5 is none.
fn integer(v: &Cel) -> Option<i64> {
    match v {
        Cel::Int(i) => Some(*i),
        Cel::UInt(u) => i64::try_from(*u).ok(),
        Cel::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
        Cel::String(s) => {
            let s = s.trim();
            s.parse().ok().or_else(|| {
                // "12.00" (a decimal's text) is an integer too.
                let (i, f) = s.split_once('.')?;
                f.bytes().all(|b| b == b'0').then(|| i.parse().ok())?
            })
        }
        _ => None,
    }
}

fn float(v: &Cel) -> Option<f64> {
    match v {
        Cel::Int(i) => Some(*i as f64),
        Cel::UInt(u) => Some(*u as f64),
        Cel::Float(f) => Some(*f),
        Cel::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Microseconds since the epoch; `naive` reads zone-less text as UTC.
fn timestamp_micros(v: &Cel, naive: bool) -> Option<i64> {
    match v {
        Cel::Timestamp(t) => Some(t.timestamp_micros()),
        Cel::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::<FixedOffset>::parse_from_rfc3339(s) {
                return Some(t.timestamp_micros());
            }
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return Some(d.and_time(NaiveTime::MIN).and_utc().timestamp_micros());
            }
            if !naive {
                return None;
            }
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc().timestamp_micros())
        }
        _ => None,
    }
}

fn describe(v: &Cel) -> String {
    match v {
        Cel::String(s) => format!("string {:?}", s.as_str()),
        Cel::List(_) | Cel::Map(_) => format!("a {}", v.type_of()),
        other => format!("{} {}", other.type_of(), text_of(other).unwrap_or_default()),
    }
}

/// The name a user writes for a column type (`cast`, `set ... type:`).
pub fn type_name(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Int => "int".into(),
        ColumnType::Long => "long".into(),
        ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
        ColumnType::NumericText => "numeric".into(),
        ColumnType::Float => "float".into(),
        ColumnType::Double => "double".into(),
        ColumnType::Text => "text".into(),
        ColumnType::Bool => "bool".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Json => "json".into(),
        ColumnType::Bytes => "bytes".into(),
        ColumnType::Array(inner) => format!("array<{}>", type_name(inner)),
    }
}

/// The names [`parse_type`] accepts, for error messages.
pub const TYPE_NAMES: &str = "int, long, float, double, decimal(P,S), numeric, text, bool, date, \
     time, timestamp, timestamptz, uuid, json, bytes, array<T>";

/// A user's type name, the inverse of [`type_name`].
pub fn parse_type(name: &str) -> Option<ColumnType> {
    let n = name.trim().to_ascii_lowercase();
    Some(match n.as_str() {
        "int" => ColumnType::Int,
        "long" => ColumnType::Long,
        "float" => ColumnType::Float,
        "double" => ColumnType::Double,
        "numeric" => ColumnType::NumericText,
        "text" => ColumnType::Text,
        "bool" => ColumnType::Bool,
        "date" => ColumnType::Date,
        "time" => ColumnType::Time,
        "timestamp" => ColumnType::Timestamp,
        "timestamptz" => ColumnType::TimestampTz,
        "uuid" => ColumnType::Uuid,
        "json" => ColumnType::Json,
        "bytes" => ColumnType::Bytes,
        _ => {
            if let Some(inner) = n.strip_prefix("array<").and_then(|r| r.strip_suffix('>')) {
                return Some(ColumnType::Array(Box::new(parse_type(inner)?)));
            }
            let args = n.strip_prefix("decimal(")?.strip_suffix(')')?;
            let (p, s) = args.split_once(',')?;
            let (precision, scale) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
            if precision == 0 || scale > precision {
                return None;
            }
            ColumnType::Decimal { precision, scale }
        }
    })
}

/// The SQL type a sink creates for a column whose type a step chose.
pub(crate) fn sql_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Int => "integer".into(),
        ColumnType::Long => "bigint".into(),
        ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        ColumnType::NumericText => "numeric".into(),
        ColumnType::Float => "real".into(),
        ColumnType::Double => "double precision".into(),
        ColumnType::Text => "text".into(),
        ColumnType::Bool => "boolean".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Array(inner) => format!("{}[]", sql_type(inner)),
    }
}

/// Whether a cast from `from` to `to` can ever succeed; checked at compile
/// time so that, say, bool to timestamp is refused before anything runs.
pub(crate) fn castable(from: &ColumnType, to: &ColumnType) -> bool {
    use ColumnType::*;
    let numeric = |t: &ColumnType| {
        matches!(
            t,
            Int | Long | Float | Double | Decimal { .. } | NumericText
        )
    };
    let instant = |t: &ColumnType| matches!(t, Date | Timestamp | TimestampTz);
    match (from, to) {
        (Array(a), Array(b)) => castable(a, b),
        (Array(_), Text | Json) => true,
        (Array(_), _) | (_, Array(_)) => false,
        (_, Text | Json) => true,
        (Text | Json, _) => true,
        (a, b) if numeric(a) && numeric(b) => true,
        (a, b) if instant(a) && instant(b) => true,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, nullable: bool) -> Column {
        Column {
            name: "c".into(),
            ty,
            nullable,
            sql_type: String::new(),
        }
    }

    #[test]
    fn decimals_are_doubles_in_cel_and_exact_as_text() {
        let d = decimal_from_text("12.50", 2).unwrap();
        let ty = ColumnType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(to_cel(&d, &ty), Cel::Float(12.5));
        assert_eq!(canonical_text(&d, &ty).as_deref(), Some("12.50"));
        let back = to_avro(&Cel::Float(12.5), &col(ty.clone(), false)).unwrap();
        assert_eq!(back, d);
        assert!(
            to_avro(&Cel::Float(0.125), &col(ty.clone(), false)).is_err(),
            "no rounding"
        );
        assert!(
            to_avro(&Cel::Int(123_456_789), &col(ty, false)).is_err(),
            "precision"
        );
    }

    #[test]
    fn numbers_convert_only_without_loss() {
        let long = col(ColumnType::Long, false);
        assert_eq!(to_avro(&Cel::Float(12.0), &long), Ok(Avro::Long(12)));
        assert_eq!(
            to_avro(&Cel::String(Arc::new("12.00".into())), &long),
            Ok(Avro::Long(12))
        );
        assert!(to_avro(&Cel::Float(12.5), &long).is_err());
        assert!(to_avro(&Cel::Int(i64::MAX), &col(ColumnType::Int, false)).is_err());
        assert!(to_avro(&Cel::Null, &long).unwrap_err().contains("NOT NULL"));
        assert_eq!(
            to_avro(&Cel::Null, &col(ColumnType::Long, true)),
            Ok(Avro::Null)
        );
    }

    #[test]
    fn times_round_trip() {
        for (v, ty) in [
            (
                Avro::TimestampMicros(1_700_000_000_123_456),
                ColumnType::TimestampTz,
            ),
            (
                Avro::LocalTimestampMicros(1_700_000_000_123_456),
                ColumnType::Timestamp,
            ),
            (Avro::Date(19_000), ColumnType::Date),
            (Avro::TimeMicros(3_723_000_001), ColumnType::Time),
        ] {
            let c = to_cel(&v, &ty);
            assert_eq!(
                to_avro(&c, &col(ty.clone(), false)),
                Ok(v.clone()),
                "{ty:?}"
            );
            let text = canonical_text(&v, &ty).unwrap();
            let from_text = to_avro(
                &Cel::String(Arc::new(text.clone())),
                &col(ty.clone(), false),
            );
            assert_eq!(from_text, Ok(v), "{text}");
        }
    }

    #[test]
    fn type_names_round_trip() {
        for n in [
            "int",
            "decimal(12,2)",
            "array<text>",
            "timestamptz",
            "numeric",
        ] {
            assert_eq!(type_name(&parse_type(n).unwrap()), n);
        }
        assert!(parse_type("decimal(2,5)").is_none());
        assert!(parse_type("varchar").is_none());
    }
}
