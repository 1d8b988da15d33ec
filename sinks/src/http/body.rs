//! A change as the receiver sees it: JSON with its stable id.

use crate::table::json::json_value;
use apache_avro::types::Value;
use serde_json::{json, Map, Value as J};
use syncline_core::codec::Decoded;
use syncline_core::Column;
use syncline_runtime::Record;

/// `(id, JSON)` of one change. The id is `<source name>/<position
/// hex>/<row hex>`: the change's identity (the row part is the first 16
/// bytes of `ChangeEvent::row_digest`, table and key, because the rows of
/// one snapshot share a position), the same however often it is delivered
/// or published again.
pub fn change(record: &Record, d: &Decoded) -> Result<(String, J), String> {
    let ev = &d.event;
    let id = change_id(ev);
    let row = |values: &Option<Vec<(String, Value)>>| -> Result<J, String> {
        match values {
            None => Ok(J::Null),
            Some(v) => object(&d.columns, v),
        }
    };
    let body = json!({
        "id": id,
        "op": ev.op.symbol(),
        "key": object(&d.columns, &ev.key)?,
        "before": row(&ev.before)?,
        "after": row(&ev.after)?,
        "unchanged": ev.unchanged,
        "source": {
            "connector": ev.source.connector,
            "name": ev.source.name,
            "db": ev.source.db,
            "table": ev.source.table,
            "position": ev.source.position_text,
            "ts_us": ev.source.ts_us,
        },
        "schema": { "value_schema_id": d.value_schema_id },
        "topic": &*record.topic,
        "partition": record.partition,
        "offset": record.offset,
    });
    Ok((id, body))
}

/// The id of a change (see [`change`]).
pub fn change_id(ev: &syncline_core::ChangeEvent) -> String {
    format!(
        "{}/{}/{}",
        ev.source.name,
        hex::encode(ev.source.position.as_bytes()),
        hex::encode(&ev.row_digest()[..16])
    )
}

/// The named values as a JSON object, each by its column's type.
fn object(columns: &[Column], values: &[(String, Value)]) -> Result<J, String> {
    let mut out = Map::with_capacity(values.len());
    for (name, v) in values {
        let j = match columns.iter().find(|c| &c.name == name) {
            Some(c) => json_value(&c.ty, v).map_err(|e| format!("column `{name}`: {e}"))?,
            None => return Err(format!("`{name}` is not a column of the row")),
        };
        out.insert(name.clone(), j);
    }
    Ok(J::Object(out))
}
