//! Avro values -> SQLite values, by the type mapping of `ddl.rs`.

use crate::table::json::array_json;
use crate::table::text::literal;
use apache_avro::types::Value;
use rusqlite::types::Value as Sql;
use syncline_core::ColumnType;

/// The SQLite value of `v` for a column of type `ty`.
pub fn sql_value(ty: &ColumnType, v: &Value) -> Result<Sql, String> {
    let v = match v {
        Value::Null => return Ok(Sql::Null),
        Value::Union(_, inner) => return sql_value(ty, inner),
        v => v,
    };
    Ok(match (ty, v) {
        (ColumnType::Int | ColumnType::Long, Value::Int(i)) => Sql::Integer(i64::from(*i)),
        (ColumnType::Int | ColumnType::Long, Value::Long(i)) => Sql::Integer(*i),
        (ColumnType::Float, Value::Float(f)) => real(f64::from(*f)),
        (ColumnType::Double, Value::Double(d)) => real(*d),
        (ColumnType::Double, Value::Float(f)) => real(f64::from(*f)),
        (ColumnType::Bool, Value::Boolean(b)) => Sql::Integer(i64::from(*b)),
        // Text as it is: SQLite text may hold any character, NUL too.
        (ColumnType::Text | ColumnType::Json, Value::String(s))
        | (ColumnType::Text, Value::Enum(_, s)) => Sql::Text(s.clone()),
        (ColumnType::Bytes, Value::Bytes(b) | Value::Fixed(_, b)) => Sql::Blob(b.clone()),
        (ColumnType::Array(item), Value::Array(items)) => Sql::Text(array_json(item, items)?),
        (ColumnType::TimestampTz, _) => match literal(ty, v)? {
            // Postgres' `+00` as SQLite's date functions read it.
            Some(t) => Sql::Text(t.replacen("+00", "+00:00", 1)),
            None => Sql::Null,
        },
        // Decimals, dates, times, uuids: the canonical text.
        _ => match literal(ty, v)? {
            Some(t) => Sql::Text(t),
            None => Sql::Null,
        },
    })
}

/// A real, or the text `NaN` (SQLite stores a NaN real as NULL).
fn real(f: f64) -> Sql {
    if f.is_nan() {
        Sql::Text("NaN".into())
    } else {
        Sql::Real(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_its_stored_form() {
        let cases: Vec<(ColumnType, Value, Sql)> = vec![
            (ColumnType::Int, Value::Int(-3), Sql::Integer(-3)),
            (
                ColumnType::Long,
                Value::Long(1 << 40),
                Sql::Integer(1 << 40),
            ),
            (
                ColumnType::Double,
                Value::Double(f64::NAN),
                Sql::Text("NaN".into()),
            ),
            (
                ColumnType::Double,
                Value::Double(f64::INFINITY),
                Sql::Real(f64::INFINITY),
            ),
            (ColumnType::Bool, Value::Boolean(true), Sql::Integer(1)),
            (
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xD2])),
                Sql::Text("12.34".into()),
            ),
            (
                ColumnType::Date,
                Value::Date(19_000),
                Sql::Text("2022-01-08".into()),
            ),
            (
                ColumnType::Time,
                Value::TimeMicros(3_600_000_001),
                Sql::Text("01:00:00.000001".into()),
            ),
            (
                ColumnType::Timestamp,
                Value::LocalTimestampMicros(1_000_000),
                Sql::Text("1970-01-01 00:00:01.000000".into()),
            ),
            (
                ColumnType::TimestampTz,
                Value::TimestampMicros(1_000_000),
                Sql::Text("1970-01-01 00:00:01.000000+00:00".into()),
            ),
            (
                ColumnType::Text,
                Value::String("a\0b".into()),
                Sql::Text("a\0b".into()),
            ),
            (
                ColumnType::Bytes,
                Value::Bytes(vec![0, 255]),
                Sql::Blob(vec![0, 255]),
            ),
            (
                ColumnType::Array(Box::new(ColumnType::Array(Box::new(ColumnType::Int)))),
                Value::Array(vec![Value::Array(vec![Value::Int(1), Value::Null])]),
                Sql::Text("[[1,null]]".into()),
            ),
            (
                ColumnType::Array(Box::new(ColumnType::Text)),
                Value::Array(vec![Value::Union(
                    1,
                    Box::new(Value::String("x\"y".into())),
                )]),
                Sql::Text(r#"["x\"y"]"#.into()),
            ),
            (
                ColumnType::Long,
                Value::Union(0, Box::new(Value::Null)),
                Sql::Null,
            ),
        ];
        for (ty, v, want) in cases {
            assert_eq!(sql_value(&ty, &v).unwrap(), want, "{ty:?} {v:?}");
        }
        assert!(sql_value(&ColumnType::Long, &Value::String("x".into())).is_err());
    }
}
