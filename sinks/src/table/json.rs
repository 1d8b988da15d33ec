//! Values as JSON: arrays for targets without array columns (SQLite, MySQL),
//! and whole rows for the `http` sink. Numbers and booleans as such (a NaN or
//! infinite float as the text `NaN` / `Infinity` / `-Infinity`), arrays as
//! arrays, JSON values as themselves, bytes as hex text, and every other
//! value as its canonical text (the text Postgres reads: exact decimals,
//! dates, times, timestamps, uuids).

use crate::table::text::literal;
use apache_avro::types::Value;
use serde_json::Value as J;
use syncline_core::ColumnType;

/// The JSON text of an array column's value.
pub fn array_json(item: &ColumnType, items: &[Value]) -> Result<String, String> {
    Ok(J::Array(json_items(item, items)?).to_string())
}

fn json_items(item: &ColumnType, items: &[Value]) -> Result<Vec<J>, String> {
    items.iter().map(|v| json_value(item, v)).collect()
}

/// One value as JSON (see the module docs).
pub fn json_value(ty: &ColumnType, v: &Value) -> Result<J, String> {
    Ok(match (ty, v) {
        (_, Value::Null) => J::Null,
        (_, Value::Union(_, inner)) => return json_value(ty, inner),
        (ColumnType::Array(item), Value::Array(items)) => J::Array(json_items(item, items)?),
        (ColumnType::Json, Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone()))
        }
        (ColumnType::Int | ColumnType::Long, Value::Int(i)) => J::from(*i),
        (ColumnType::Int | ColumnType::Long, Value::Long(i)) => J::from(*i),
        (ColumnType::Bool, Value::Boolean(b)) => J::Bool(*b),
        (ColumnType::Float, Value::Float(f)) => float(f64::from(*f)),
        (ColumnType::Double, Value::Double(d)) => float(*d),
        (ColumnType::Double, Value::Float(f)) => float(f64::from(*f)),
        (ColumnType::Bytes, Value::Bytes(b) | Value::Fixed(_, b)) => J::String(hex::encode(b)),
        _ => match literal(ty, v)? {
            Some(t) => J::String(t),
            None => J::Null,
        },
    })
}

/// A number, or the text `NaN` / `Infinity` / `-Infinity` (JSON has none).
fn float(f: f64) -> J {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            J::String(
                match (f.is_nan(), f > 0.0) {
                    (true, _) => "NaN",
                    (false, true) => "Infinity",
                    (false, false) => "-Infinity",
                }
                .into(),
            )
        },
        J::Number,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_kind() {
        let arr = |t| ColumnType::Array(Box::new(t));
        let cases = [
            (
                arr(ColumnType::Int),
                vec![Value::Array(vec![Value::Int(1), Value::Null])],
                "[[1,null]]",
            ),
            (
                ColumnType::Text,
                vec![Value::Union(1, Box::new(Value::String("x\"y".into())))],
                r#"["x\"y"]"#,
            ),
            (
                ColumnType::Double,
                vec![Value::Double(f64::NAN), Value::Double(0.5)],
                r#"["NaN",0.5]"#,
            ),
            (ColumnType::Bool, vec![Value::Boolean(false)], "[false]"),
            (
                ColumnType::Json,
                vec![Value::String(r#"{"a":1}"#.into())],
                r#"[{"a":1}]"#,
            ),
        ];
        for (item, items, want) in cases {
            assert_eq!(array_json(&item, &items).unwrap(), want, "{item:?}");
        }
    }
}
