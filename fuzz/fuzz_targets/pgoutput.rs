//! pgoutput message handling: what `postgres_cdc` does with the bytes of its
//! replication stream, offline. A sequence of messages is parsed
//! (pg_walstream's decoder, protocol 1, as the source streams it); each
//! relation becomes a table schema the way the source builds it (types
//! resolved as pg_type would for the built-in types); each row of an insert,
//! update or delete becomes values through the source's own conversion
//! (`row_values`, which the snapshot's text values share).
//!
//! Asserted: no panic, no hang, and every row that converts fits its
//! table's Avro row schema (what the encoder will write).
//!
//! Input: messages, each a big-endian u16 length and the message body (no
//! XLogData header). Seeds: `seeds/pgoutput.sh` captures real messages of a
//! table of every supported type from a local Postgres.
#![no_main]

use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use syncline_core::codec::record_value;
use syncline_core::TableSchema;
use syncline_sources::fuzzing::{
    row_values, table_schema, EventType, Lsn, PgOutputDecoder, RawColumn, TypeInfo,
};

/// pg_type's answer for the built-in types (oid -> base name, element name).
fn builtin(oid: u32) -> (&'static str, Option<&'static str>) {
    match oid {
        16 => ("bool", None),
        17 => ("bytea", None),
        20 => ("int8", None),
        21 => ("int2", None),
        23 => ("int4", None),
        114 => ("json", None),
        700 => ("float4", None),
        701 => ("float8", None),
        1082 => ("date", None),
        1083 => ("time", None),
        1114 => ("timestamp", None),
        1184 => ("timestamptz", None),
        1700 => ("numeric", None),
        2950 => ("uuid", None),
        3802 => ("jsonb", None),
        1000 => ("_bool", Some("bool")),
        1005 => ("_int2", Some("int2")),
        1007 => ("_int4", Some("int4")),
        1016 => ("_int8", Some("int8")),
        1009 => ("_text", Some("text")),
        1231 => ("_numeric", Some("numeric")),
        1182 => ("_date", Some("date")),
        1185 => ("_timestamptz", Some("timestamptz")),
        2951 => ("_uuid", Some("uuid")),
        _ => ("text", None),
    }
}

struct Table {
    schema: TableSchema,
    row: Schema,
}

fn table(name: &str, columns: &[RawColumn], key: &[String]) -> Option<Table> {
    let types: HashMap<(u32, i32), TypeInfo> = columns
        .iter()
        .map(|c| {
            let (base, elem) = builtin(c.type_oid);
            let info = TypeInfo {
                sql_type: base.to_string(),
                base: base.to_string(),
                elem: elem.map(str::to_string),
                typmod: c.typmod,
            };
            ((c.type_oid, c.typmod), info)
        })
        .collect();
    // A relation the source would refuse (a key that is not a column,
    // duplicate names) is refused here too; only accepted ones go on.
    let schema = table_schema("fuzz", name, columns, key, &types).ok()?;
    let row = Schema::parse(&schema.row_schema_json()).ok()?;
    Some(Table { schema, row })
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = PgOutputDecoder::with_protocol_version(1);
    let mut tables: HashMap<u32, Table> = HashMap::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (body, r) = rest[2..].split_at(n);
        rest = r;
        let Ok(Some(ev)) = decoder.decode_message(body.to_vec(), Lsn(0)) else {
            continue;
        };
        let rows = match ev.event_type {
            EventType::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let raw = RawColumn::of_relation(&columns);
                let key: Vec<String> = columns
                    .iter()
                    .filter(|c| c.is_key)
                    .map(|c| c.name.to_string())
                    .collect();
                match table(&format!("{namespace}.{relation_name}"), &raw, &key) {
                    Some(t) => tables.insert(relation_id, t),
                    None => tables.remove(&relation_id),
                };
                continue;
            }
            EventType::Insert {
                relation_oid, data, ..
            } => vec![(relation_oid, data, None)],
            EventType::Update {
                relation_oid,
                old_data,
                new_data,
                ..
            } => {
                let mut rows = vec![(relation_oid, new_data, old_data.clone())];
                if let Some(old) = old_data {
                    rows.push((relation_oid, old, None));
                }
                rows
            }
            EventType::Delete {
                relation_oid,
                old_data,
                ..
            } => vec![(relation_oid, old_data, None)],
            _ => continue,
        };
        for (oid, row, old) in rows {
            let Some(t) = tables.get(&oid) else { continue };
            if let Ok((values, unchanged)) =
                row_values(&t.schema, || "fuzz".into(), &row, old.as_ref())
            {
                assert_eq!(values.len(), t.schema.columns.len());
                assert!(unchanged
                    .iter()
                    .all(|u| t.schema.columns.iter().any(|c| &c.name == u)));
                // A null in a NOT NULL column is the encoder's error, not a misfit.
                if let Ok(record) = record_value(t.schema.columns.iter(), &values) {
                    assert!(
                        record.validate(&t.row),
                        "a converted row does not fit its schema"
                    );
                }
            }
        }
    }
});
