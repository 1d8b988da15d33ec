//! A table's columns and the Avro schemas derived from them.
//!
//! # Type mapping (source column -> Avro), documented in docs/types.md
//! | ColumnType | Avro |
//! |---|---|
//! | Int (int2, int4) | `int` |
//! | Long (int8) | `long` |
//! | Decimal{p,s} (numeric(p,s)) | `bytes`, logicalType `decimal` |
//! | Float / Double | `float` / `double` |
//! | Text | `string` |
//! | Bool | `boolean` |
//! | Date | `int`, logicalType `date` |
//! | Time | `long`, logicalType `time-micros` |
//! | Timestamp (without time zone) | `long`, logicalType `local-timestamp-micros` |
//! | TimestampTz | `long`, logicalType `timestamp-micros` (UTC) |
//! | Uuid | `string`, logicalType `uuid` |
//! | Json | `string` (field attribute `sql_type`: json/jsonb) |
//! | Bytes | `bytes` |
//! | Array(T) | `array` of T (items nullable) |
//! | unconstrained numeric | `string` (exact text; Avro decimal needs a precision) |
//!
//! A nullable column is the union `["null", T]` with default null. Every field
//! carries the source's type name as the custom attribute `sql_type`, so a
//! sink can recreate the same column type where the target supports it.

use crate::error::{Error, Result};
use apache_avro::schema::{RecordField, Schema};
use serde_json::{json, Value as Json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Long,
    /// Exact numeric with known precision and scale.
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// Exact numeric without a declared precision, carried as text.
    NumericText,
    Float,
    Double,
    Text,
    Bool,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Uuid,
    Json,
    Bytes,
    Array(Box<ColumnType>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name in the source (Avro field names are derived from it).
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The source's own type name (e.g. `jsonb`, `varchar(40)`), kept as the
    /// field attribute `sql_type`.
    pub sql_type: String,
}

/// The shape of one captured table (or query).
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    /// Avro namespace of the row type, e.g. `syncline.orders_source`.
    pub namespace: String,
    /// Avro name of the row type, e.g. `orders`.
    pub name: String,
    pub columns: Vec<Column>,
    /// Names of the primary-key columns, in key order.
    pub primary_key: Vec<String>,
}

const OP_AVSC: &str = include_str!("../../schemas/syncline.Op.avsc");
const SOURCE_AVSC: &str = include_str!("../../schemas/syncline.Source.avsc");
const ENVELOPE_AVSC: &str = include_str!("../../schemas/envelope.avsc");

/// Turn any name into a valid Avro name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl ColumnType {
    fn avro_json(&self) -> Json {
        match self {
            ColumnType::Int => json!("int"),
            ColumnType::Long => json!("long"),
            ColumnType::Decimal { precision, scale } => {
                json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
            }
            ColumnType::NumericText | ColumnType::Text | ColumnType::Json => json!("string"),
            ColumnType::Float => json!("float"),
            ColumnType::Double => json!("double"),
            ColumnType::Bool => json!("boolean"),
            ColumnType::Date => json!({"type": "int", "logicalType": "date"}),
            ColumnType::Time => json!({"type": "long", "logicalType": "time-micros"}),
            ColumnType::Timestamp => {
                json!({"type": "long", "logicalType": "local-timestamp-micros"})
            }
            ColumnType::TimestampTz => json!({"type": "long", "logicalType": "timestamp-micros"}),
            ColumnType::Uuid => json!({"type": "string", "logicalType": "uuid"}),
            ColumnType::Bytes => json!("bytes"),
            ColumnType::Array(item) => {
                json!({"type": "array", "items": ["null", item.avro_json()]})
            }
        }
    }

    /// The reverse mapping: which column type a (non-union) Avro schema stands for.
    /// `sql_type` (the field attribute) tells JSON and unconstrained numeric
    /// apart from plain strings.
    pub fn from_avro(schema: &Schema, sql_type: Option<&str>) -> Result<ColumnType> {
        let sql = sql_type.unwrap_or("").to_ascii_lowercase();
        Ok(match schema {
            Schema::Int => ColumnType::Int,
            Schema::Long => ColumnType::Long,
            Schema::Float => ColumnType::Float,
            Schema::Double => ColumnType::Double,
            Schema::Boolean => ColumnType::Bool,
            Schema::Bytes | Schema::Fixed(_) => ColumnType::Bytes,
            Schema::String if sql == "json" || sql == "jsonb" => ColumnType::Json,
            Schema::String if sql == "numeric" || sql == "decimal" => ColumnType::NumericText,
            Schema::String | Schema::Enum(_) => ColumnType::Text,
            Schema::Uuid(_) => ColumnType::Uuid,
            Schema::Decimal(d) => ColumnType::Decimal {
                precision: d.precision as u32,
                scale: d.scale as u32,
            },
            Schema::BigDecimal => ColumnType::NumericText,
            Schema::Date => ColumnType::Date,
            Schema::TimeMillis | Schema::TimeMicros => ColumnType::Time,
            Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos => {
                ColumnType::TimestampTz
            }
            Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => ColumnType::Timestamp,
            Schema::Array(a) => {
                let (inner, _) = unwrap_nullable(&a.items);
                ColumnType::Array(Box::new(ColumnType::from_avro(inner, None)?))
            }
            other => {
                return Err(Error::data(format!(
                    "no column type for Avro schema {other:?}"
                )))
            }
        })
    }
}

/// `["null", T]` -> (T, true); anything else -> (itself, false).
pub fn unwrap_nullable(schema: &Schema) -> (&Schema, bool) {
    if let Schema::Union(u) = schema {
        let variants = u.variants();
        if variants.len() == 2 && variants[0] == Schema::Null {
            return (&variants[1], true);
        }
        if variants.len() == 2 && variants[1] == Schema::Null {
            return (&variants[0], true);
        }
    }
    (schema, false)
}

impl TableSchema {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    fn field_json(col: &Column) -> Json {
        let ty = col.ty.avro_json();
        let mut f = json!({"name": avro_name(&col.name), "sql_type": col.sql_type});
        if avro_name(&col.name) != col.name {
            f["column"] = json!(col.name);
        }
        if col.nullable {
            f["type"] = json!(["null", ty]);
            f["default"] = Json::Null;
        } else {
            f["type"] = ty;
        }
        f
    }

    /// The row record (all columns).
    pub fn row_schema_json(&self) -> Json {
        json!({
            "type": "record",
            "name": avro_name(&self.name),
            "namespace": self.namespace,
            "fields": self.columns.iter().map(Self::field_json).collect::<Vec<_>>(),
        })
    }

    /// The key record: the primary-key columns (subject `<topic>-key`).
    pub fn key_schema_json(&self) -> Result<Json> {
        let mut fields = Vec::new();
        for k in &self.primary_key {
            let col = self.columns.iter().find(|c| &c.name == k).ok_or_else(|| {
                Error::config(format!(
                    "key column `{k}` is not a column of `{}`",
                    self.name
                ))
            })?;
            fields.push(Self::field_json(col));
        }
        Ok(json!({
            "type": "record",
            "name": format!("{}Key", avro_name(&self.name)),
            "namespace": self.namespace,
            "fields": fields,
        }))
    }

    /// The envelope (subject `<topic>-value`), built from schemas/envelope.avsc
    /// with the row type inlined once and referenced once.
    pub fn value_schema_json(&self) -> Json {
        let mut env: Json =
            serde_json::from_str(ENVELOPE_AVSC).expect("schemas/envelope.avsc is valid JSON");
        env["namespace"] = json!(format!("{}.{}", self.namespace, avro_name(&self.name)));
        let fields = env["fields"].as_array_mut().expect("envelope has fields");
        for f in fields.iter_mut() {
            match f["name"].as_str() {
                Some("op") => f["type"] = serde_json::from_str(OP_AVSC).expect("Op.avsc is valid"),
                Some("source") => {
                    f["type"] = serde_json::from_str(SOURCE_AVSC).expect("Source.avsc is valid")
                }
                Some("before") => f["type"] = json!(["null", self.row_schema_json()]),
                Some("after") => f["type"] = json!(["null", self.full_name()]),
                _ => {}
            }
        }
        env
    }

    pub fn key_schema(&self) -> Result<Schema> {
        parse(&self.key_schema_json()?)
    }
    pub fn value_schema(&self) -> Result<Schema> {
        parse(&self.value_schema_json())
    }

    /// Rebuild the columns of a row record (the envelope's `after`, or a key
    /// record) from a registered schema.
    pub fn columns_from_record(record: &Schema) -> Result<Vec<Column>> {
        let Schema::Record(r) = record else {
            return Err(Error::data(format!(
                "expected an Avro record, got {record:?}"
            )));
        };
        r.fields.iter().map(column_from_field).collect()
    }
}

fn column_from_field(f: &RecordField) -> Result<Column> {
    let sql_type = f
        .custom_attributes
        .get("sql_type")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let name = f
        .custom_attributes
        .get("column")
        .and_then(|v| v.as_str())
        .unwrap_or(&f.name)
        .to_string();
    let (inner, nullable) = unwrap_nullable(&f.schema);
    Ok(Column {
        ty: ColumnType::from_avro(inner, sql_type.as_deref())?,
        nullable,
        sql_type: sql_type.unwrap_or_default(),
        name,
    })
}

/// The `after` (or `before`) row record inside an envelope schema.
pub fn envelope_row_schema(envelope: &Schema) -> Result<&Schema> {
    let Schema::Record(r) = envelope else {
        return Err(Error::data("envelope schema is not a record"));
    };
    let before = r
        .fields
        .iter()
        .find(|f| f.name == "before")
        .ok_or_else(|| {
            Error::data("envelope schema has no `before` field: not a syncline change record")
        })?;
    match unwrap_nullable(&before.schema) {
        (row @ Schema::Record(_), _) => Ok(row),
        _ => Err(Error::data(
            "envelope field `before` is not a nullable record",
        )),
    }
}

fn parse(json: &Json) -> Result<Schema> {
    Schema::parse(json)
        .map_err(|e| Error::internal("derived an invalid Avro schema").with_source(e))
}

/// Build a `["null", T]` union value for a nullable field.
pub fn nullable_value(v: Option<apache_avro::types::Value>) -> apache_avro::types::Value {
    use apache_avro::types::Value;
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}
