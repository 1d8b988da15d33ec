//! Avro binary of syncline's own records, written straight from a change.
//!
//! apache-avro writes a record from a [`Value`] tree: one has to be built
//! per record (every field name copied), it is validated, and writing each
//! nested record builds a hash map of its fields. For the envelope and key
//! records that syncline encodes millions of times that was most of the
//! encoding cost. This writer walks the registered schema and the change
//! side by side instead, and writes the bytes of the Avro specification.
//!
//! It is strict: it writes only a value whose kind is exactly the one the
//! schema names (a `Long` for a `long`, a `Uuid` for a `uuid` string, ...).
//! For anything else it writes nothing and answers `None`, and the caller
//! encodes the record with apache-avro's validating writer, which decides
//! (encodes the value, or refuses it with its reason). So a record this
//! writer takes has the same bytes as apache-avro's (the unit tests compare
//! both for every column type), and one it does not take gets apache-avro's
//! result.

use crate::change::{ChangeEvent, SourceInfo};
use crate::schema::{Column, TableSchema};
use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, RecordSchema, Schema, UuidSchema};
use apache_avro::types::Value;

/// Zig-zag varint of `n` (Avro `int` and `long`).
fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The index of the `null` branch of a union schema, and the other branch.
fn nullable(schema: &Schema) -> Option<(usize, usize, &Schema)> {
    let Schema::Union(u) = schema else {
        return None;
    };
    let variants = u.variants();
    if variants.len() != 2 {
        return None;
    }
    let null = variants.iter().position(|s| *s == Schema::Null)?;
    let other = 1 - null;
    Some((null, other, &variants[other]))
}

/// One column value, of exactly the kind `schema` names.
fn value(out: &mut Vec<u8>, schema: &Schema, v: &Value) -> Option<()> {
    match (schema, v) {
        (Schema::Null, Value::Null) => {}
        (Schema::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
        (Schema::Int, Value::Int(i)) | (Schema::Date, Value::Date(i)) => long(out, *i as i64),
        (Schema::Long, Value::Long(i))
        | (Schema::TimeMicros, Value::TimeMicros(i))
        | (Schema::TimestampMicros, Value::TimestampMicros(i))
        | (Schema::LocalTimestampMicros, Value::LocalTimestampMicros(i)) => long(out, *i),
        (Schema::Float, Value::Float(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (Schema::Double, Value::Double(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (Schema::String, Value::String(s)) => bytes(out, s.as_bytes()),
        (Schema::Bytes, Value::Bytes(b)) => bytes(out, b),
        (Schema::Uuid(UuidSchema::String), Value::Uuid(u)) => bytes(
            out,
            u.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        ),
        (
            Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Bytes,
                ..
            }),
            Value::Decimal(d),
        ) => {
            let b: Vec<u8> = d.try_into().ok()?;
            bytes(out, &b);
        }
        (Schema::Array(a), Value::Array(items)) => {
            if !items.is_empty() {
                long(out, items.len() as i64);
                for item in items {
                    value(out, &a.items, item)?;
                }
            }
            out.push(0);
        }
        (Schema::Union(_), Value::Null) => {
            let (null, _, _) = nullable(schema)?;
            long(out, null as i64);
        }
        (Schema::Union(u), Value::Union(i, item)) => {
            let branch = u.variants().get(*i as usize)?;
            long(out, *i as i64);
            value(out, branch, item)?;
        }
        _ => return None,
    }
    Some(())
}

/// A record of `columns` (in order, one field each) from the named values
/// `vals` (a missing one is null), as `record` describes it. What
/// [`super::record_value`] builds, written.
pub(super) fn record<'a>(
    out: &mut Vec<u8>,
    record: &RecordSchema,
    columns: impl ExactSizeIterator<Item = &'a Column>,
    vals: &[(String, Value)],
) -> Option<()> {
    if record.fields.len() != columns.len() {
        return None;
    }
    for (field, col) in record.fields.iter().zip(columns) {
        let v = vals
            .iter()
            .find(|(n, _)| n == &col.name)
            .map_or(&Value::Null, |(_, v)| v);
        match (col.nullable, v) {
            (true, Value::Null) => {
                let (null, _, _) = nullable(&field.schema)?;
                long(out, null as i64);
            }
            (true, v) => {
                let (_, other, inner) = nullable(&field.schema)?;
                long(out, other as i64);
                value(out, inner, v)?;
            }
            // (the validating writer says which column)
            (false, Value::Null) => return None,
            (false, v) => value(out, &field.schema, v)?,
        }
    }
    Some(())
}

fn source(out: &mut Vec<u8>, schema: &Schema, s: &SourceInfo) -> Option<()> {
    let Schema::Record(r) = schema else {
        return None;
    };
    for f in &r.fields {
        match (f.name.as_str(), &f.schema) {
            ("connector", Schema::String) => bytes(out, s.connector.as_bytes()),
            ("name", Schema::String) => bytes(out, s.name.as_bytes()),
            ("db", Schema::String) => bytes(out, s.db.as_bytes()),
            ("table", Schema::String) => bytes(out, s.table.as_bytes()),
            ("position", Schema::Bytes) => bytes(out, s.position.as_bytes()),
            ("position_text", Schema::String) => bytes(out, s.position_text.as_bytes()),
            ("ts_us", Schema::TimestampMicros) => long(out, s.ts_us),
            _ => return None,
        }
    }
    Some(())
}

/// The envelope of `event` as `schema` (the registered value schema of
/// `table`) describes it: what [`super::envelope`] builds, written.
pub(super) fn envelope(
    out: &mut Vec<u8>,
    schema: &Schema,
    table: &TableSchema,
    event: &ChangeEvent,
) -> Option<()> {
    let Schema::Record(env) = schema else {
        return None;
    };
    // The row type is defined in `before` and named again in `after`.
    let row = env.fields.iter().find_map(|f| match f.name.as_str() {
        "before" => match nullable(&f.schema)? {
            (_, _, Schema::Record(r)) => Some(r),
            _ => None,
        },
        _ => None,
    })?;
    for f in &env.fields {
        match f.name.as_str() {
            "op" => {
                let Schema::Enum(e) = &f.schema else {
                    return None;
                };
                let i = e.symbols.iter().position(|s| s == event.op.symbol())?;
                long(out, i as i64);
            }
            "before" | "after" => {
                let vals = match f.name.as_str() {
                    "before" => &event.before,
                    _ => &event.after,
                };
                let (null, other, _) = nullable(&f.schema)?;
                match vals {
                    None => long(out, null as i64),
                    Some(vals) => {
                        long(out, other as i64);
                        record(out, row, table.columns.iter(), vals)?;
                    }
                }
            }
            "source" => source(out, &f.schema, &event.source)?,
            _ => return None,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Op, Position};
    use crate::schema::ColumnType;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::Decimal;

    fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable,
            sql_type: "t".into(),
        }
    }

    /// Every column type, each both NOT NULL and nullable, with a value of
    /// the kind sources make.
    fn table_and_row() -> (TableSchema, Vec<(String, Value)>) {
        let kinds: Vec<(ColumnType, Value)> = vec![
            (ColumnType::Int, Value::Int(-7)),
            (ColumnType::Long, Value::Long(i64::MIN)),
            (
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
                Value::Decimal(Decimal::from(vec![0xff, 0x01, 0x02])),
            ),
            (ColumnType::NumericText, Value::String("1e400".into())),
            (ColumnType::Float, Value::Float(1.5)),
            (ColumnType::Double, Value::Double(f64::NAN)),
            (ColumnType::Text, Value::String("héllo ✓".into())),
            (ColumnType::Bool, Value::Boolean(true)),
            (ColumnType::Date, Value::Date(-1)),
            (ColumnType::Time, Value::TimeMicros(86_399_999_999)),
            (ColumnType::Timestamp, Value::LocalTimestampMicros(1 << 50)),
            (ColumnType::TimestampTz, Value::TimestampMicros(-(1 << 40))),
            (
                ColumnType::Uuid,
                Value::Uuid(uuid::Uuid::from_u128(
                    0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
                )),
            ),
            (ColumnType::Json, Value::String(r#"{"a":[1,null]}"#.into())),
            (ColumnType::Bytes, Value::Bytes(vec![0, 1, 255])),
            (
                ColumnType::Array(Box::new(ColumnType::Long)),
                Value::Array(vec![
                    Value::Union(1, Box::new(Value::Long(3))),
                    Value::Null,
                    Value::Union(1, Box::new(Value::Long(-300))),
                ]),
            ),
            (
                ColumnType::Array(Box::new(ColumnType::Text)),
                Value::Array(vec![]),
            ),
        ];
        let mut columns = vec![col("id", ColumnType::Long, false)];
        let mut row = vec![("id".to_string(), Value::Long(42))];
        for (i, (ty, v)) in kinds.into_iter().enumerate() {
            for nullable in [false, true] {
                let name = format!("c{i}_{nullable}");
                columns.push(col(&name, ty.clone(), nullable));
                row.push((name, v.clone()));
            }
        }
        let table = TableSchema {
            namespace: "syncline.test".into(),
            name: "all_types".into(),
            columns,
            primary_key: vec!["id".into()],
        };
        (table, row)
    }

    fn event(
        op: Op,
        before: Option<Vec<(String, Value)>>,
        after: Option<Vec<(String, Value)>>,
    ) -> ChangeEvent {
        ChangeEvent {
            op,
            key: vec![("id".into(), Value::Long(42))],
            before,
            after,
            source: SourceInfo {
                connector: "postgres_cdc".into(),
                name: "pg".into(),
                db: "shop".into(),
                table: "public.all_types".into(),
                position: Position::builder().i64(1 << 40).i64(-3).build(),
                position_text: "0/1000".into(),
                ts_us: 1_700_000_000_000_000,
            },
            unchanged: Vec::new(),
        }
    }

    /// apache-avro's bytes for the same record: the reference.
    fn reference(schema: &Schema, value: Value) -> Vec<u8> {
        GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    fn fast(f: impl FnOnce(&mut Vec<u8>) -> Option<()>) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        f(&mut out).map(|()| out)
    }

    #[test]
    fn envelopes_of_every_column_type_have_apache_avros_bytes() {
        let (table, row) = table_and_row();
        let schema = Schema::parse(&table.value_schema_json()).unwrap();
        // Nulls in every nullable column, too.
        let nulls: Vec<(String, Value)> = row
            .iter()
            .map(|(n, v)| match n.ends_with("_true") {
                true => (n.clone(), Value::Null),
                false => (n.clone(), v.clone()),
            })
            .collect();
        // A nullable column left out of the row is null as well.
        let missing: Vec<(String, Value)> = row
            .iter()
            .filter(|(n, _)| !n.ends_with("_true"))
            .cloned()
            .collect();
        let events = [
            event(Op::Insert, None, Some(row.clone())),
            event(Op::Update, Some(nulls.clone()), Some(row.clone())),
            event(Op::Upsert, None, Some(missing)),
            event(Op::Delete, Some(row.clone()), None),
            event(Op::Truncate, None, None),
        ];
        for e in &events {
            let want = reference(&schema, super::super::envelope(&table, e).unwrap());
            let got = fast(|out| envelope(out, &schema, &table, e));
            assert_eq!(got.as_ref(), Some(&want), "{:?}", e.op);
        }
    }

    #[test]
    fn key_records_have_apache_avros_bytes() {
        let (table, _) = table_and_row();
        let schema = Schema::parse(&table.key_schema_json().unwrap()).unwrap();
        let Schema::Record(r) = &schema else {
            panic!("a key schema is a record")
        };
        let e = event(Op::Insert, None, None);
        let want = reference(
            &schema,
            super::super::record_value(table.columns[..1].iter(), &e.key).unwrap(),
        );
        assert_eq!(
            fast(|out| record(out, r, table.columns[..1].iter(), &e.key)),
            Some(want)
        );
    }

    /// A value of another kind than its column's, or a null in a NOT NULL
    /// column, is not written: the validating writer decides (it refuses
    /// most, and takes a bare item of a nullable array).
    #[test]
    fn values_of_the_wrong_kind_are_left_to_the_validating_writer() {
        let (table, row) = table_and_row();
        let schema = Schema::parse(&table.value_schema_json()).unwrap();
        let wrong = |col: &str, v: Value| -> Vec<(String, Value)> {
            row.iter()
                .map(|(n, x)| match n == col {
                    true => (n.clone(), v.clone()),
                    false => (n.clone(), x.clone()),
                })
                .collect()
        };
        for (col, v, refused) in [
            ("c0_false", Value::Long(1), true),
            ("c0_true", Value::String("1".into()), true),
            ("c12_false", Value::String("not a uuid".into()), true),
            ("c15_false", Value::Array(vec![Value::Long(1)]), false),
            ("c15_true", Value::Union(7, Box::new(Value::Null)), true),
            ("c1_false", Value::Null, true),
            ("id", Value::Null, true),
        ] {
            let e = event(Op::Insert, None, Some(wrong(col, v.clone())));
            assert_eq!(
                fast(|out| envelope(out, &schema, &table, &e)),
                None,
                "{col} = {v:?}"
            );
            let validating = GenericDatumWriter::builder(&schema).build().unwrap();
            let slow = super::super::envelope(&table, &e)
                .map_err(|e| e.to_string())
                .and_then(|v| validating.write_value_to_vec(v).map_err(|e| e.to_string()));
            assert_eq!(slow.is_err(), refused, "{col} = {v:?}: {slow:?}");
        }
    }

    #[test]
    fn varints_follow_the_avro_specification() {
        for (n, want) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            long(&mut out, n);
            assert_eq!(out, want, "{n}");
        }
    }
}
