//! Values: what the binlog carries (mysql_common's row values) and what the
//! snapshot reads (the binary protocol's values) -> Avro values of the
//! column types.
//!
//! One conversion for both phases, told apart only where MySQL itself
//! sends different forms ([`Phase`]): a `timestamp` is seconds since the
//! epoch in the binlog and a UTC datetime in the snapshot; an `enum` is its
//! label's index in the binlog and the label in the snapshot; a `set` is a
//! bit mask in the binlog and the labels in the snapshot. So a row read by
//! the snapshot and the same row streamed give equal values.
//!
//! Also: a `year` `0000` is 0 (the binlog's reader says 1900), MySQL's
//! JSON is one canonical text ([`canonical_json`]) whether the snapshot sent
//! text or the binlog binary JSON.
//!
//! Values with no Avro form: MySQL's zero dates (`0000-00-00`, also with a
//! zero month or day) and the zero `timestamp` become null; a `time` below
//! 0 or from 24 hours up is a `Data` error (the change goes to the
//! dead-letter topic with the reason).

use super::schema::{Kind, MyColumn, Table};
use crate::clip;
use apache_avro::types::Value;
use chrono::NaiveDate;
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value as My;
use syncline_core::value::decimal_value;
use syncline_core::{ColumnType, Error, Result};

/// Where a value was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Snapshot,
    Binlog,
}

/// A row in the schema's column order.
pub type Row = Vec<(String, Value)>;

/// A binlog row image -> values in the table's column order. Columns the
/// image lacks (added to the table after the event was written) are null;
/// columns the table lacks (dropped since) are left out.
pub fn binlog_row(table: &Table, row: BinlogRow) -> Result<Row> {
    let names: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    let mut values: Vec<Option<BinlogValue<'static>>> =
        row.unwrap().into_iter().map(Some).collect();
    table
        .columns
        .iter()
        .map(|c| {
            let v = match names.iter().position(|n| n == &c.name) {
                None => Value::Null,
                Some(i) => match values[i].take() {
                    None | Some(BinlogValue::Value(My::NULL)) => Ok(Value::Null),
                    Some(BinlogValue::Value(v)) => avro(c, v, Phase::Binlog),
                    Some(BinlogValue::Jsonb(j)) => serde_json::Value::try_from(j)
                        .map(|j| Value::String(canonical_json(&j)))
                        .map_err(|e| Error::data(format!("cannot read a JSON value: {e}"))),
                    Some(BinlogValue::JsonDiff(_)) => Err(Error::data(
                        "a partial JSON update (binlog_row_value_options = PARTIAL_JSON) carries no full value: turn that option off",
                    )),
                }
                .map_err(|e| column_error(table, c, e))?,
            };
            Ok((c.name.clone(), v))
        })
        .collect()
}

/// A snapshot row (the selected columns in the table's order) -> values.
pub fn snapshot_row(table: &Table, row: mysql_async::Row) -> Result<Row> {
    let values = row.unwrap();
    table
        .columns
        .iter()
        .zip(values)
        .map(|(c, v)| {
            let v = match v {
                My::NULL => Value::Null,
                v => avro(c, v, Phase::Snapshot).map_err(|e| column_error(table, c, e))?,
            };
            Ok((c.name.clone(), v))
        })
        .collect()
}

fn column_error(table: &Table, c: &MyColumn, e: Error) -> Error {
    Error::data(format!(
        "column `{}` of `{}`: {e}",
        c.name,
        table.full_name()
    ))
}

/// One non-null value -> the Avro value of the column's type.
pub fn avro(c: &MyColumn, v: My, phase: Phase) -> Result<Value> {
    let bad = |v: &My| {
        Error::data(format!(
            "`{}` is not a valid {}",
            clip(&format!("{v:?}")),
            c.sql_type
        ))
    };
    Ok(match (&c.ty, v) {
        (ColumnType::Text, My::Int(i)) if matches!(c.kind, Kind::Enum(_)) => {
            let Kind::Enum(labels) = &c.kind else {
                unreachable!()
            };
            // 0 is the empty "error" value MySQL stores for a bad label
            let label = match usize::try_from(i) {
                Ok(0) => String::new(),
                Ok(n) => labels.get(n - 1).cloned().ok_or_else(|| bad(&My::Int(i)))?,
                Err(_) => return Err(bad(&My::Int(i))),
            };
            Value::String(label)
        }
        (ColumnType::Text, My::Bytes(mask))
            if phase == Phase::Binlog && matches!(c.kind, Kind::Set(_)) =>
        {
            let Kind::Set(labels) = &c.kind else {
                unreachable!()
            };
            let chosen: Vec<&str> = labels
                .iter()
                .enumerate()
                .filter(|(i, _)| mask.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
                .map(|(_, l)| l.as_str())
                .collect();
            Value::String(chosen.join(","))
        }
        (ColumnType::Text, My::Bytes(b)) if c.latin1 && phase == Phase::Binlog => {
            Value::String(latin1_text(&b))
        }
        // MySQL's JSON: text in the snapshot, binary in the binlog
        // (`binlog_row`); both as their canonical text
        (ColumnType::Json, My::Bytes(b)) => {
            let j: serde_json::Value = serde_json::from_slice(&b)
                .map_err(|e| Error::data(format!("not a JSON value: {e}")))?;
            Value::String(canonical_json(&j))
        }
        (ColumnType::Int, My::Bytes(b))
            if c.kind == Kind::Year && phase == Phase::Binlog && b == b"1900" =>
        {
            // the binlog's 0 (`0000`), read as 1900; 1900 is no YEAR value
            Value::Int(0)
        }
        (ColumnType::Text, My::Bytes(b)) => Value::String(String::from_utf8(b).map_err(|_| {
            Error::data("not UTF-8 text (capture text columns in utf8mb4, utf8mb3 or ascii)")
        })?),
        (ColumnType::Int, v @ (My::Int(_) | My::UInt(_) | My::Bytes(_))) => Value::Int(
            integer(&v)
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| bad(&v))?,
        ),
        (ColumnType::Long, v @ (My::Int(_) | My::UInt(_) | My::Bytes(_))) => Value::Long(
            integer(&v)
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| bad(&v))?,
        ),
        (ColumnType::Decimal { precision, scale }, v) => {
            let text = match &v {
                My::Int(i) => i.to_string(),
                My::UInt(u) => u.to_string(),
                My::Bytes(b) => std::str::from_utf8(b).map_err(|_| bad(&v))?.to_string(),
                _ => return Err(bad(&v)),
            };
            decimal_value(&text, *precision, *scale)?
        }
        (ColumnType::Float, My::Float(f)) => Value::Float(f),
        (ColumnType::Float, My::Double(d)) => Value::Float(d as f32),
        (ColumnType::Double, My::Double(d)) => Value::Double(d),
        (ColumnType::Double, My::Float(f)) => Value::Double(f64::from(f)),
        (ColumnType::Bool, My::Bytes(b)) => Value::Boolean(b.iter().any(|x| *x != 0)),
        (ColumnType::Bool, My::Int(i)) => Value::Boolean(i != 0),
        (ColumnType::Bytes, My::Bytes(mut b)) => {
            if let Kind::FixedBinary(n) = c.kind {
                if b.len() < n {
                    b.resize(n, 0);
                }
            }
            Value::Bytes(b)
        }
        (ColumnType::Date, v @ My::Date(..)) => match days(&v) {
            Some(d) => Value::Date(d),
            None if is_zero(&v) => Value::Null,
            None => return Err(bad(&v)),
        },
        (ColumnType::Timestamp, v @ My::Date(..)) => match micros(&v) {
            Some(us) => Value::LocalTimestampMicros(us),
            None if is_zero(&v) => Value::Null,
            None => return Err(bad(&v)),
        },
        (ColumnType::TimestampTz, v @ My::Date(..)) => match micros(&v) {
            Some(us) => Value::TimestampMicros(us),
            None if is_zero(&v) => Value::Null,
            None => return Err(bad(&v)),
        },
        // the old `timestamp` (binlog type 7, no fraction: older servers,
        // MariaDB 5.3's format): seconds since the epoch, 0 the zero one
        (ColumnType::TimestampTz, My::Int(secs)) if phase == Phase::Binlog => match secs {
            0 => Value::Null,
            s => Value::TimestampMicros(s * 1_000_000),
        },
        // the binlog's `timestamp`: seconds since the epoch, `.` microseconds
        (ColumnType::TimestampTz, My::Bytes(b)) => {
            let text = String::from_utf8_lossy(&b).into_owned();
            let (secs, frac) = text.split_once('.').unwrap_or((&text, "0"));
            let secs: i64 = secs.parse().map_err(|_| bad(&My::Bytes(b.clone())))?;
            let frac: i64 = format!("{frac:0<6}")[..6]
                .parse()
                .map_err(|_| bad(&My::Bytes(b.clone())))?;
            if secs == 0 && frac == 0 {
                Value::Null
            } else {
                Value::TimestampMicros(secs * 1_000_000 + frac)
            }
        }
        (ColumnType::Time, My::Time(neg, d, h, m, s, us)) => {
            let total = ((((i64::from(d) * 24 + i64::from(h)) * 60 + i64::from(m)) * 60)
                + i64::from(s))
                * 1_000_000
                + i64::from(us);
            if neg || total >= 86_400_000_000 {
                return Err(Error::data(format!(
                    "time `{}{}` is outside 00:00:00 to 23:59:59.999999, which an Avro time-micros holds",
                    if neg { "-" } else { "" },
                    format_args!("{}:{m:02}:{s:02}", i64::from(d) * 24 + i64::from(h))
                )));
            }
            Value::TimeMicros(total)
        }
        (_, v) => return Err(bad(&v)),
    })
}

/// A JSON value as one text, whichever path read it: compact, object
/// keys sorted (serde_json's map), numbers as serde_json writes them. The
/// snapshot's text (`{"b": [1, 2.5], "a": "x"}`, MySQL's spacing) and the
/// binlog's binary JSON read into the same value give the same text.
fn canonical_json(v: &serde_json::Value) -> String {
    v.to_string()
}

/// MySQL's `latin1` (Windows-1252, with the five holes kept as C1
/// controls, as MySQL converts them) -> text.
fn latin1_text(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9f => HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

/// An integer value, also one the binlog sends as text (`year`).
fn integer(v: &My) -> Option<i128> {
    match v {
        My::Int(i) => Some(i128::from(*i)),
        My::UInt(u) => Some(i128::from(*u)),
        My::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn is_zero(v: &My) -> bool {
    matches!(v, My::Date(y, m, d, ..) if *y == 0 || *m == 0 || *d == 0)
}

fn days(v: &My) -> Option<i32> {
    let My::Date(y, m, d, ..) = *v else {
        return None;
    };
    let date = NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))?;
    Some((date - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

fn micros(v: &My) -> Option<i64> {
    let My::Date(y, m, d, h, mi, s, us) = *v else {
        return None;
    };
    let t = NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))?.and_hms_micro_opt(
        u32::from(h),
        u32::from(mi),
        u32::from(s),
        us,
    )?;
    Some(t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, kind: Kind) -> MyColumn {
        MyColumn {
            name: "c".into(),
            ty,
            kind,
            sql_type: "t".into(),
            latin1: false,
        }
    }

    #[test]
    fn latin1_text_in_the_binlog_reads_as_the_snapshot_reads_it() {
        let mut c = col(ColumnType::Text, Kind::Plain);
        c.latin1 = true;
        let bin = avro(&c, My::Bytes(vec![b'n', 0xfc, 0x80, 0xef]), Phase::Binlog).unwrap();
        let snap = avro(&c, My::Bytes("nü€ï".as_bytes().to_vec()), Phase::Snapshot).unwrap();
        assert_eq!(bin, snap);
    }

    #[test]
    fn both_phases_give_one_value_where_mysql_sends_two_forms() {
        let ts = col(ColumnType::TimestampTz, Kind::Timestamp);
        let snap = avro(&ts, My::Date(2024, 1, 2, 3, 4, 5, 600), Phase::Snapshot).unwrap();
        let bin = avro(&ts, My::Bytes(b"1704164645.000600".to_vec()), Phase::Binlog).unwrap();
        assert_eq!(snap, bin);
        let e = col(ColumnType::Text, Kind::Enum(vec!["a".into(), "b".into()]));
        assert_eq!(
            avro(&e, My::Int(2), Phase::Binlog).unwrap(),
            avro(&e, My::Bytes(b"b".to_vec()), Phase::Snapshot).unwrap()
        );
        let s = col(
            ColumnType::Text,
            Kind::Set(vec!["x".into(), "y".into(), "z".into()]),
        );
        assert_eq!(
            avro(&s, My::Bytes(vec![0b101]), Phase::Binlog).unwrap(),
            avro(&s, My::Bytes(b"x,z".to_vec()), Phase::Snapshot).unwrap()
        );
        let b = col(ColumnType::Bytes, Kind::FixedBinary(4));
        assert_eq!(
            avro(&b, My::Bytes(vec![1, 2]), Phase::Binlog).unwrap(),
            Value::Bytes(vec![1, 2, 0, 0])
        );
    }

    #[test]
    fn year_zero_old_timestamps_and_json_read_alike_from_both_paths() {
        let y = col(ColumnType::Int, Kind::Year);
        assert_eq!(
            avro(&y, My::Bytes(b"1900".to_vec()), Phase::Binlog).unwrap(),
            avro(&y, My::Int(0), Phase::Snapshot).unwrap()
        );
        assert_eq!(
            avro(&y, My::Bytes(b"1901".to_vec()), Phase::Binlog).unwrap(),
            avro(&y, My::Int(1901), Phase::Snapshot).unwrap()
        );
        // binlog type 7: seconds as an integer
        let ts = col(ColumnType::TimestampTz, Kind::Timestamp);
        assert_eq!(
            avro(&ts, My::Int(1_704_164_645), Phase::Binlog).unwrap(),
            avro(&ts, My::Date(2024, 1, 2, 3, 4, 5, 0), Phase::Snapshot).unwrap()
        );
        assert_eq!(avro(&ts, My::Int(0), Phase::Binlog).unwrap(), Value::Null);
        // MySQL's text of a JSON value, and the value its binary form reads as
        let j = col(ColumnType::Json, Kind::Plain);
        let text = br#"{"b": [1, 2.5, null, true], "a": {"y": "x\u00e9", "x": -1}}"#;
        let snapshot = avro(&j, My::Bytes(text.to_vec()), Phase::Snapshot).unwrap();
        let binary = serde_json::json!({"a": {"x": -1, "y": "xé"}, "b": [1, 2.5, null, true]});
        assert_eq!(snapshot, Value::String(canonical_json(&binary)));
        assert_eq!(
            snapshot,
            Value::String(r#"{"a":{"x":-1,"y":"xé"},"b":[1,2.5,null,true]}"#.into())
        );
        assert!(avro(&j, My::Bytes(b"{nope".to_vec()), Phase::Snapshot).is_err());
    }

    #[test]
    fn values_without_an_avro_form_are_null_or_a_clear_error() {
        let d = col(ColumnType::Date, Kind::Plain);
        assert_eq!(
            avro(&d, My::Date(0, 0, 0, 0, 0, 0, 0), Phase::Snapshot).unwrap(),
            Value::Null
        );
        let t = col(ColumnType::Time, Kind::Plain);
        let e = avro(&t, My::Time(false, 1, 2, 0, 0, 0), Phase::Binlog).unwrap_err();
        assert!(e.to_string().contains("26:00:00"), "{e}");
        assert!(avro(&t, My::Time(true, 0, 1, 0, 0, 0), Phase::Binlog).is_err());
        assert_eq!(
            avro(&t, My::Time(false, 0, 23, 59, 59, 999_999), Phase::Binlog).unwrap(),
            Value::TimeMicros(86_399_999_999)
        );
        let i = col(ColumnType::Int, Kind::Plain);
        assert!(avro(&i, My::UInt(u64::MAX), Phase::Binlog).is_err());
        assert_eq!(
            avro(&i, My::Bytes(b"1999".to_vec()), Phase::Binlog).unwrap(),
            Value::Int(1999)
        );
        let u = col(
            ColumnType::Decimal {
                precision: 20,
                scale: 0,
            },
            Kind::Plain,
        );
        assert!(avro(&u, My::UInt(u64::MAX), Phase::Binlog).is_ok());
        let txt = col(ColumnType::Text, Kind::Plain);
        assert!(avro(&txt, My::Bytes(vec![0xff, 0xfe]), Phase::Binlog).is_err());
    }
}
