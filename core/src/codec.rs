//! Change events <-> Confluent wire format (magic byte 0, 4-byte schema id,
//! Avro binary), through any Confluent-compatible registry.
//!
//! Schemas are registered under the topic-name strategy: `<topic>-key` for the
//! key record and `<topic>-value` for the envelope. Registering an unchanged
//! schema returns the same id, so the codec registers once per process and
//! caches. A schema the registry rejects (incompatible change) is a
//! `Config` error (crate::error::registry): the caller stops before writing
//! anything encoded with it. Registry answers are classified by one table;
//! a registry that is away is `Transient`, never a reason to dead-letter.

use crate::change::{ChangeEvent, Op, Position, SourceInfo};
use crate::error::{Error, Result};
use crate::limits::DecodeLimits;
use crate::registry::{RegistryClient, RegistryConfig};
use crate::schema::{envelope_row_schema, nullable_value, Column, TableSchema};
use crate::value::unwrap_union;
mod wire;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use schema_registry_converter::schema_registry_common::{
    get_bytes_result, get_payload, BytesResult,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Reader<'s> = GenericDatumReader<'s>;
type Writer<'s> = GenericDatumWriter<'s>;

self_cell::self_cell!(
    /// A parsed schema and its writer, made once per schema: making a writer
    /// resolves the schema's named types (a walk that copies every name),
    /// which costs more than writing one small record and is the same for
    /// every record.
    struct ResolvedWriter {
        owner: Schema,
        #[covariant]
        dependent: Writer,
    }
);

self_cell::self_cell!(
    /// A writer schema and its reader, made once per schema id (see
    /// [`ResolvedWriter`]).
    struct ResolvedReader {
        owner: Schema,
        #[covariant]
        dependent: Reader,
    }
);

/// A schema registered under a subject: its id and parsed form.
#[derive(Clone)]
struct Registered {
    id: u32,
    schema: Arc<ResolvedWriter>,
}

pub struct Encoder {
    client: RegistryClient,
    /// (subject, schema JSON) -> registration; a new schema for the same
    /// subject is a new entry (that is how a schema change reaches the registry).
    registered: Mutex<HashMap<(String, String), Registered>>,
    /// (topic, table shape) -> (key, value) registrations: the hot path of
    /// `encode` compares shapes instead of rebuilding schema JSON per record.
    prepared: Mutex<Vec<(String, TableSchema, Registered, Registered)>>,
}

impl Encoder {
    pub fn new(registry: &RegistryConfig) -> Result<Self> {
        Ok(Self {
            client: RegistryClient::new(registry)?,
            registered: Mutex::new(HashMap::new()),
            prepared: Mutex::new(Vec::new()),
        })
    }

    async fn register(&self, subject: String, schema_json: String) -> Result<Registered> {
        let cache_key = (subject, schema_json);
        if let Some(r) = self
            .registered
            .lock()
            .expect("codec cache poisoned")
            .get(&cache_key)
        {
            return Ok(r.clone());
        }
        let schema = Schema::parse_str(&cache_key.1).map_err(|e| {
            Error::internal(format!("invalid Avro schema for `{}`", cache_key.0)).with_source(e)
        })?;
        let schema =
            ResolvedWriter::try_new(schema, |s| Writer::builder(s).build()).map_err(|e| {
                Error::internal(format!("invalid Avro schema for `{}`", cache_key.0)).with_source(e)
            })?;
        let id = self.client.register(&cache_key.0, &cache_key.1).await?;
        let r = Registered {
            id,
            schema: Arc::new(schema),
        };
        self.registered
            .lock()
            .expect("codec cache poisoned")
            .insert(cache_key, r.clone());
        Ok(r)
    }

    /// Register (once) the key and value schemas of `table` for `topic`.
    /// Call it before producing anything with a new table shape, so that an
    /// incompatible change stops the pipeline before any record is written.
    pub async fn prepare(&self, topic: &str, table: &TableSchema) -> Result<()> {
        self.registrations(topic, table).await.map(|_| ())
    }

    async fn registrations(
        &self,
        topic: &str,
        table: &TableSchema,
    ) -> Result<(Registered, Registered)> {
        {
            let prepared = self.prepared.lock().expect("codec cache poisoned");
            if let Some((_, _, k, v)) = prepared
                .iter()
                .find(|(t, s, _, _)| t == topic && s == table)
            {
                return Ok((k.clone(), v.clone()));
            }
        }
        let key = self
            .register(format!("{topic}-key"), table.key_schema_json()?.to_string())
            .await?;
        let value = self
            .register(
                format!("{topic}-value"),
                table.value_schema_json().to_string(),
            )
            .await?;
        let mut prepared = self.prepared.lock().expect("codec cache poisoned");
        prepared.push((topic.to_string(), table.clone(), key.clone(), value.clone()));
        Ok((key, value))
    }

    /// Encode `event` as (key bytes, value bytes) in Confluent wire format.
    pub async fn encode(
        &self,
        topic: &str,
        table: &TableSchema,
        event: &ChangeEvent,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let (key_schema, value_schema) = self.registrations(topic, table).await?;

        let key_cols: Vec<&Column> = table
            .primary_key
            .iter()
            .map(|k| {
                table
                    .columns
                    .iter()
                    .find(|c| &c.name == k)
                    .expect("key_schema_json checked key columns")
            })
            .collect();
        let key = framed(
            &key_schema,
            |out, schema| match schema {
                Schema::Record(r) => wire::record(out, r, key_cols.iter().copied(), &event.key),
                _ => None,
            },
            || record_value(key_cols.iter().copied(), &event.key),
        )?;
        let value = framed(
            &value_schema,
            |out, schema| wire::envelope(out, schema, table, event),
            || envelope(table, event),
        )?;
        Ok((key, value))
    }

    /// Encode a TRUNCATE: the value only, with the table's value schema. A
    /// truncate concerns every key of the table, so its record has no Kafka
    /// key; it is sent to every partition ([`crate::kafka::partitions_of`]).
    /// Only the value schema is registered: `table.primary_key` may be empty
    /// (a truncate read back has no key to learn it from).
    pub async fn encode_truncate(
        &self,
        topic: &str,
        table: &TableSchema,
        event: &ChangeEvent,
    ) -> Result<Vec<u8>> {
        if event.op != Op::Truncate {
            return Err(Error::internal("encode_truncate called with a row change"));
        }
        let value_schema = self
            .register(
                format!("{topic}-value"),
                table.value_schema_json().to_string(),
            )
            .await?;
        framed(
            &value_schema,
            |out, schema| wire::envelope(out, schema, table, event),
            || envelope(table, event),
        )
    }
}

/// The envelope record of `event` (schemas/envelope.avsc) with `table`'s row shape.
fn envelope(table: &TableSchema, event: &ChangeEvent) -> Result<Value> {
    {
        let row = |r: &Option<Vec<(String, Value)>>| -> Result<Value> {
            Ok(nullable_value(match r {
                None => None,
                Some(vals) => Some(record_value(table.columns.iter(), vals)?),
            }))
        };
        Ok(Value::Record(vec![
            (
                "op".into(),
                Value::Enum(event.op.index() as u32, event.op.symbol().into()),
            ),
            ("before".into(), row(&event.before)?),
            ("after".into(), row(&event.after)?),
            ("source".into(), source_value(&event.source)),
        ]))
    }
}

/// A record of `reg`'s schema in Confluent wire format: written by
/// [`wire`] (`fast`) when it takes the record, else built as a value
/// (`slow`) and written by apache-avro's validating writer, which decides.
fn framed(
    reg: &Registered,
    fast: impl FnOnce(&mut Vec<u8>, &Schema) -> Option<()>,
    slow: impl FnOnce() -> Result<Value>,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(0);
    out.extend_from_slice(&reg.id.to_be_bytes());
    if fast(&mut out, reg.schema.borrow_owner()).is_some() {
        return Ok(out);
    }
    frame(reg, slow()?)
}

fn frame(reg: &Registered, value: Value) -> Result<Vec<u8>> {
    let bytes = reg
        .schema
        .borrow_dependent()
        .write_value_to_vec(value)
        .map_err(|e| Error::data("value does not match its Avro schema").with_source(e))?;
    Ok(get_payload(reg.id, bytes))
}

/// Build a record value in column order; a missing or null column becomes
/// null (an error for a non-nullable column). What the encoder writes for a
/// row or a key (public for the fuzz targets, which check a source's rows
/// against it).
pub fn record_value<'a>(
    columns: impl Iterator<Item = &'a Column>,
    vals: &[(String, Value)],
) -> Result<Value> {
    let mut fields = Vec::new();
    for col in columns {
        let v = vals
            .iter()
            .find(|(n, _)| n == &col.name)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null);
        let field = crate::schema::avro_name(&col.name);
        let v = match (col.nullable, v) {
            (true, Value::Null) => nullable_value(None),
            (true, v) => nullable_value(Some(v)),
            (false, Value::Null) => {
                return Err(Error::data(format!(
                    "column `{}` is NOT NULL but the value is null",
                    col.name
                )))
            }
            (false, v) => v,
        };
        fields.push((field, v));
    }
    Ok(Value::Record(fields))
}

fn source_value(s: &SourceInfo) -> Value {
    Value::Record(vec![
        ("connector".into(), Value::String(s.connector.clone())),
        ("name".into(), Value::String(s.name.clone())),
        ("db".into(), Value::String(s.db.clone())),
        ("table".into(), Value::String(s.table.clone())),
        (
            "position".into(),
            Value::Bytes(s.position.as_bytes().to_vec()),
        ),
        (
            "position_text".into(),
            Value::String(s.position_text.clone()),
        ),
        ("ts_us".into(), Value::TimestampMicros(s.ts_us)),
    ])
}

/// A change read back from Kafka, with the row shape of the schema it was written with.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub event: ChangeEvent,
    /// Registry id of the value schema: equal ids mean equal row shapes.
    pub value_schema_id: u32,
    /// Row columns as registered (names are source column names).
    pub columns: Arc<Vec<Column>>,
    /// Key column names, in key order.
    pub key_columns: Arc<Vec<String>>,
}

/// The row columns of one value schema, and Avro field name -> column name.
type RowShape = (Arc<Vec<Column>>, HashMap<String, String>);

/// Reads syncline change records back, through the registry, within
/// [`DecodeLimits`] (see `crate::limits` for why): a record that breaks a
/// limit, names a schema the registry does not have, or does not decode is
/// a `Data` error (its stage dead-letters it); a registry that is away or
/// refuses the credentials is `Transient` or `Config`, never `Data`.
pub struct Decoder {
    schemas_from: WriterSchemas,
    limits: DecodeLimits,
    /// Writer schemas by id, checked and parsed once.
    schemas: Mutex<HashMap<u32, Arc<ResolvedReader>>>,
    shapes: Mutex<HashMap<u32, RowShape>>,
    key_shapes: Mutex<HashMap<u32, Arc<Vec<String>>>>,
}

/// Where a decoder finds the writer schema a record names.
enum WriterSchemas {
    Registry(RegistryClient),
    Fixed(HashMap<u32, String>),
}

impl WriterSchemas {
    async fn text(&self, id: u32) -> Result<String> {
        match self {
            WriterSchemas::Registry(client) => client.schema_text(id).await,
            WriterSchemas::Fixed(schemas) => schemas
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::data(format!("schema id {id} is not known"))),
        }
    }
}

impl Decoder {
    pub fn new(registry: &RegistryConfig) -> Result<Self> {
        Self::with_limits(registry, DecodeLimits::default())
    }

    pub fn with_limits(registry: &RegistryConfig, limits: DecodeLimits) -> Result<Self> {
        let client = RegistryClient::new(registry)?;
        Ok(Self::from(WriterSchemas::Registry(client), limits))
    }

    /// A decoder that knows only the writer schemas given (id -> schema
    /// text) and asks no registry: for fuzzing and unit tests, which then
    /// run the same checks, limits and caches as a running stage.
    pub fn with_schemas(schemas: HashMap<u32, String>, limits: DecodeLimits) -> Self {
        Self::from(WriterSchemas::Fixed(schemas), limits)
    }

    fn from(schemas_from: WriterSchemas, limits: DecodeLimits) -> Self {
        limits.install();
        Self {
            schemas_from,
            limits,
            schemas: Mutex::new(HashMap::new()),
            shapes: Mutex::new(HashMap::new()),
            key_shapes: Mutex::new(HashMap::new()),
        }
    }

    /// The writer schema `id`, checked against the limits, then parsed.
    async fn writer_schema(&self, id: u32) -> Result<Arc<ResolvedReader>> {
        if let Some(s) = self
            .schemas
            .lock()
            .expect("decoder cache poisoned")
            .get(&id)
        {
            return Ok(s.clone());
        }
        let text = self.schemas_from.text(id).await?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::data(format!("writer schema {id} is not JSON")).with_source(e))?;
        self.limits
            .check_schema(&json)
            .map_err(|why| Error::data(format!("writer schema {id} is refused: {why}")))?;
        let schema = Schema::parse(&json).map_err(|e| {
            Error::data(format!("writer schema {id} is not a valid Avro schema")).with_source(e)
        })?;
        let schema =
            ResolvedReader::try_new(schema, |s| Reader::builder(s).build()).map_err(|e| {
                Error::data(format!(
                    "writer schema {id} names a type it does not define"
                ))
                .with_source(e)
            })?;
        let schema = Arc::new(schema);
        self.schemas
            .lock()
            .expect("decoder cache poisoned")
            .insert(id, schema.clone());
        Ok(schema)
    }

    fn schema_id(bytes: &[u8], what: &str) -> Result<u32> {
        match get_bytes_result(Some(bytes)) {
            BytesResult::Valid(id, _) => Ok(id),
            _ => Err(Error::data(format!(
                "{what} is not in Confluent wire format (magic byte 0 + schema id)"
            ))),
        }
    }

    /// The Avro value of a Confluent frame, decoded with its writer schema.
    async fn decode_value(&self, bytes: &[u8], what: &str) -> Result<Value> {
        let id = Self::schema_id(bytes, what)?;
        let schema = self.writer_schema(id).await?;
        let mut body = &bytes[5..];
        let value = schema
            .borrow_dependent()
            .read_value(&mut body)
            .map_err(|e| {
                Error::data(format!(
                    "{what} does not decode with its writer schema {id}"
                ))
                .with_source(e)
            })?;
        if !body.is_empty() {
            return Err(Error::data(format!(
                "{what} has {} bytes after its Avro value (writer schema {id})",
                body.len()
            )));
        }
        Ok(value)
    }

    async fn row_shape(&self, id: u32) -> Result<RowShape> {
        if let Some(s) = self.shapes.lock().expect("decoder cache poisoned").get(&id) {
            return Ok(s.clone());
        }
        let schema = self.writer_schema(id).await?;
        let row = envelope_row_schema(schema.borrow_owner())?;
        let columns = TableSchema::columns_from_record(row)?;
        let field_to_col = columns
            .iter()
            .map(|c| (crate::schema::avro_name(&c.name), c.name.clone()))
            .collect();
        let shape = (Arc::new(columns), field_to_col);
        self.shapes
            .lock()
            .expect("decoder cache poisoned")
            .insert(id, shape.clone());
        Ok(shape)
    }

    async fn key_shape(&self, id: u32) -> Result<Arc<Vec<String>>> {
        if let Some(s) = self
            .key_shapes
            .lock()
            .expect("decoder cache poisoned")
            .get(&id)
        {
            return Ok(s.clone());
        }
        let schema = self.writer_schema(id).await?;
        let cols = TableSchema::columns_from_record(schema.borrow_owner())?;
        let names = Arc::new(cols.into_iter().map(|c| c.name).collect::<Vec<_>>());
        self.key_shapes
            .lock()
            .expect("decoder cache poisoned")
            .insert(id, names.clone());
        Ok(names)
    }

    /// Decode one Kafka record written by any syncline source (or by any
    /// producer that follows the envelope in schemas/envelope.avsc). Every
    /// record has a key except a TRUNCATE, which concerns every key (its
    /// `key` and `key_columns` are empty).
    pub async fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Decoded> {
        let value = value.ok_or_else(|| {
            Error::data("record has no value (a Kafka tombstone): syncline deletes are explicit DELETE changes")
        })?;
        let value_id = Self::schema_id(value, "record value")?;
        let (columns, field_to_col) = self.row_shape(value_id).await?;
        let rename = |f: String| field_to_col.get(&f).cloned().unwrap_or(f);
        let Value::Record(env) = self.decode_value(value, "record value").await? else {
            return Err(Error::data("record value is not an Avro record"));
        };
        let mut op = None;
        let mut before = None;
        let mut after = None;
        let mut source = None;
        for (name, v) in env {
            match name.as_str() {
                "op" => match v {
                    Value::Enum(_, s) | Value::String(s) => op = Op::from_symbol(&s),
                    _ => {}
                },
                "before" => before = row_fields(&v, &rename),
                "after" => after = row_fields(&v, &rename),
                "source" => source = Some(source_info(&v)?),
                _ => {}
            }
        }
        let op = op.ok_or_else(|| Error::data("envelope has no valid `op`"))?;
        let source = source.ok_or_else(|| Error::data("envelope has no `source`"))?;
        let (key_vals, key_columns) = match key {
            Some(key) => {
                let key_columns = self.key_shape(Self::schema_id(key, "record key")?).await?;
                let key_fields = match self.decode_value(key, "record key").await? {
                    Value::Record(f) => f,
                    other => {
                        return Err(Error::data(format!(
                            "record key is not an Avro record: {other:?}"
                        )))
                    }
                };
                let vals = key_fields
                    .into_iter()
                    .map(|(f, v)| (rename(f), unwrap_union(&v).cloned().unwrap_or(Value::Null)))
                    .collect();
                (vals, key_columns)
            }
            None if op == Op::Truncate => (Vec::new(), Arc::new(Vec::new())),
            None => return Err(Error::data("record has no key")),
        };
        Ok(Decoded {
            event: ChangeEvent {
                op,
                key: key_vals,
                before,
                after,
                source,
                unchanged: Vec::new(),
            },
            value_schema_id: value_id,
            columns,
            key_columns,
        })
    }
}

fn row_fields(v: &Value, rename: &impl Fn(String) -> String) -> Option<Vec<(String, Value)>> {
    match unwrap_union(v)? {
        Value::Record(fields) => Some(
            fields
                .iter()
                .map(|(f, v)| {
                    (
                        rename(f.clone()),
                        unwrap_union(v).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect(),
        ),
        _ => None,
    }
}

fn source_info(v: &Value) -> Result<SourceInfo> {
    let Value::Record(fields) = v else {
        return Err(Error::data("envelope `source` is not a record"));
    };
    let get = |n: &str| fields.iter().find(|(f, _)| f == n).map(|(_, v)| v);
    let string = |n: &str| match get(n) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(Error::data(format!(
            "envelope `source.{n}` is missing or not a string"
        ))),
    };
    Ok(SourceInfo {
        connector: string("connector")?,
        name: string("name")?,
        db: string("db")?,
        table: string("table")?,
        position: match get("position") {
            Some(Value::Bytes(b)) => Position::from_bytes(b.clone()),
            _ => {
                return Err(Error::data(
                    "envelope `source.position` is missing or not bytes",
                ))
            }
        },
        position_text: string("position_text")?,
        ts_us: match get("ts_us") {
            Some(Value::TimestampMicros(t)) | Some(Value::Long(t)) => *t,
            _ => 0,
        },
    })
}
