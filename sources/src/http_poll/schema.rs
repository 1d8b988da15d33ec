//! The columns of an `http_poll` source's records: declared in the file, or
//! inferred from the records and grown as new fields appear.
//!
//! Inferred: each top-level field of a record is a column whose type is
//! that of its first non-null value (an integer `long`, another number
//! `double`, `boolean`, a string `text`, an object or array `json`). A new
//! field adds a nullable column, which is a new schema version registered
//! before any record that has it is published. A field that holds only
//! nulls so far has no column yet. Column types never change: a value that
//! does not fit its column (a string in a `long` column) makes the record a
//! dead letter with the reason, rather than a type change that would
//! refuse earlier rows; declare `columns:` to choose the types.

use super::config::DeclaredType;
use apache_avro::types::Value as Avro;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use syncline_core::schema::avro_name;
use syncline_core::{Column, ColumnType, TableSchema};

/// The record shape: its table schema (the registered columns and key)
/// and whether it may grow.
pub struct Shape {
    table: TableSchema,
    declared: bool,
}

fn column(name: &str, ty: ColumnType, nullable: bool) -> Column {
    let sql_type = match ty {
        ColumnType::Long => "bigint",
        ColumnType::Double => "double precision",
        ColumnType::Bool => "boolean",
        ColumnType::Json => "jsonb",
        ColumnType::TimestampTz => "timestamptz",
        _ => "text",
    };
    Column {
        name: name.to_string(),
        ty,
        nullable,
        sql_type: sql_type.into(),
    }
}

fn inferred_type(v: &Value) -> Option<ColumnType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => ColumnType::Bool,
        Value::Number(n) if n.is_i64() => ColumnType::Long,
        Value::Number(_) => ColumnType::Double,
        Value::String(_) => ColumnType::Text,
        Value::Array(_) | Value::Object(_) => ColumnType::Json,
    })
}

impl Shape {
    pub fn new(
        source: &str,
        key: &[String],
        declared: Option<&BTreeMap<String, DeclaredType>>,
    ) -> Shape {
        let columns = declared
            .map(|cols| {
                let mut out: Vec<Column> = key
                    .iter()
                    .filter_map(|k| cols.get(k).map(|t| column(k, declared_type(*t), false)))
                    .collect();
                out.extend(
                    cols.iter()
                        .filter(|(n, _)| !key.contains(n))
                        .map(|(n, t)| column(n, declared_type(*t), true)),
                );
                out
            })
            .unwrap_or_default();
        Shape {
            table: TableSchema {
                namespace: format!("syncline.{}", avro_name(source)),
                name: "record".into(),
                columns,
                primary_key: key.to_vec(),
            },
            declared: declared.is_some(),
        }
    }

    /// Grow the columns for the fields of `rec` not seen before (inferred
    /// shapes only); whether any was added.
    pub fn observe(&mut self, rec: &Map<String, Value>) -> bool {
        if self.declared {
            return false;
        }
        let mut grew = false;
        let TableSchema {
            columns,
            primary_key: key,
            ..
        } = &mut self.table;
        // Key columns first, in key order.
        for k in key.iter() {
            if !columns.iter().any(|c| &c.name == k) {
                if let Some(ty) = rec.get(k).and_then(inferred_type) {
                    let at = columns.iter().take_while(|c| !c.nullable).count();
                    columns.insert(at, column(k, ty, false));
                    grew = true;
                }
            }
        }
        for (name, v) in rec {
            if key.contains(name) || columns.iter().any(|c| &c.name == name) {
                continue;
            }
            if let Some(ty) = inferred_type(v) {
                columns.push(column(name, ty, true));
                grew = true;
            }
        }
        grew
    }

    pub fn table(&self) -> &TableSchema {
        &self.table
    }

    /// The key values of `rec`, or why it has none.
    pub fn key(&self, rec: &Map<String, Value>) -> Result<Vec<(String, Avro)>, String> {
        self.table
            .primary_key
            .iter()
            .map(|k| {
                let col = self
                    .table
                    .columns
                    .iter()
                    .find(|c| &c.name == k)
                    .ok_or_else(|| format!("the record has no key field `{k}`"))?;
                match rec.get(k) {
                    None | Some(Value::Null) => Err(format!("the record has no key field `{k}`")),
                    Some(v) => Ok((
                        k.clone(),
                        value(&col.ty, v).map_err(|e| format!("key field `{k}`: {e}"))?,
                    )),
                }
            })
            .collect()
    }

    /// The row of `rec`: every column, null where the record lacks it.
    pub fn row(&self, rec: &Map<String, Value>) -> Result<Vec<(String, Avro)>, String> {
        self.table
            .columns
            .iter()
            .map(|c| {
                let v = match rec.get(&c.name) {
                    None | Some(Value::Null) => Avro::Null,
                    Some(v) => value(&c.ty, v).map_err(|e| format!("field `{}`: {e}", c.name))?,
                };
                Ok((c.name.clone(), v))
            })
            .collect()
    }
}

fn declared_type(t: DeclaredType) -> ColumnType {
    match t {
        DeclaredType::Long => ColumnType::Long,
        DeclaredType::Double => ColumnType::Double,
        DeclaredType::Text => ColumnType::Text,
        DeclaredType::Boolean => ColumnType::Bool,
        DeclaredType::Json => ColumnType::Json,
        DeclaredType::Timestamptz => ColumnType::TimestampTz,
    }
}

/// `v` as the Avro value of a column of type `ty`, converting only where
/// nothing is lost.
fn value(ty: &ColumnType, v: &Value) -> Result<Avro, String> {
    let no = |what: &str| Err(format!("{} does not fit a {what} column", short(v)));
    Ok(match (ty, v) {
        (ColumnType::Long, Value::Number(n)) => match n.as_i64() {
            Some(i) => Avro::Long(i),
            None => return no("long"),
        },
        (ColumnType::Long, Value::String(s)) => match s.trim().parse() {
            Ok(i) => Avro::Long(i),
            Err(_) => return no("long"),
        },
        (ColumnType::Double, Value::Number(n)) => match n.as_f64() {
            Some(f) => Avro::Double(f),
            None => return no("double"),
        },
        (ColumnType::Bool, Value::Bool(b)) => Avro::Boolean(*b),
        (ColumnType::Text, Value::String(s)) => Avro::String(s.clone()),
        (ColumnType::Text, Value::Number(_) | Value::Bool(_)) => Avro::String(v.to_string()),
        (ColumnType::Json, v) => Avro::String(v.to_string()),
        (ColumnType::TimestampTz, Value::String(s)) => {
            match chrono::DateTime::parse_from_rfc3339(s.trim()) {
                Ok(t) => Avro::TimestampMicros(t.timestamp_micros()),
                Err(_) => return no("timestamptz (RFC 3339)"),
            }
        }
        (ColumnType::TimestampTz, Value::Number(n)) => {
            match n.as_i64().and_then(|s| s.checked_mul(1_000_000)) {
                Some(us) => Avro::TimestampMicros(us),
                None => return no("timestamptz"),
            }
        }
        (ColumnType::Long, _) => return no("long"),
        (ColumnType::Double, _) => return no("double"),
        (ColumnType::Bool, _) => return no("boolean"),
        (ColumnType::TimestampTz, _) => return no("timestamptz"),
        _ => return no("text"),
    })
}

fn short(v: &Value) -> String {
    let t = v.to_string();
    if t.len() > 80 {
        let mut end = 80;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &t[..end])
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn columns_are_inferred_and_grow() {
        let mut s = Shape::new("api", &["id".into()], None);
        assert!(s.observe(&obj(
            json!({"name": "a", "id": 1, "tags": ["x"], "gone": null})
        )));
        let cols: Vec<_> = s
            .table()
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.clone(), c.nullable))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("id".into(), ColumnType::Long, false),
                ("name".into(), ColumnType::Text, true),
                ("tags".into(), ColumnType::Json, true),
            ]
        );
        assert!(
            !s.observe(&obj(json!({"id": 2, "name": "b"}))),
            "nothing new"
        );
        assert!(s.observe(&obj(json!({"id": 3, "price": 1.5}))));
        let row = s
            .row(&obj(json!({"id": 3, "price": 1.5, "name": 7})))
            .unwrap();
        assert_eq!(row[1], ("name".into(), Avro::String("7".into())));
        assert_eq!(row[3], ("price".into(), Avro::Double(1.5)));
        assert_eq!(
            s.key(&obj(json!({"id": 3}))).unwrap(),
            vec![("id".into(), Avro::Long(3))]
        );
        let e = s.row(&obj(json!({"id": "x"}))).unwrap_err();
        assert!(e.contains("`id`") && e.contains("long"), "{e}");
        assert!(s.key(&obj(json!({"name": "no id"}))).is_err());
    }

    #[test]
    fn declared_columns_are_kept_and_converted() {
        let cols = BTreeMap::from([
            ("id".to_string(), DeclaredType::Text),
            ("at".to_string(), DeclaredType::Timestamptz),
        ]);
        let mut s = Shape::new("api", &["id".into()], Some(&cols));
        assert!(!s.observe(&obj(json!({"id": 1, "extra": true}))));
        let row = s
            .row(&obj(
                json!({"id": 1, "at": "2024-01-01T00:00:00Z", "extra": true}),
            ))
            .unwrap();
        assert_eq!(
            row,
            vec![
                ("id".into(), Avro::String("1".into())),
                ("at".into(), Avro::TimestampMicros(1_704_067_200_000_000)),
            ]
        );
    }
}
