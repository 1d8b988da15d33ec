//! SHA-256 over the parts of a change in a canonical form: equal input
//! exactly when the parts are equal (a tag per kind, lengths before
//! variable parts). Used by the change identity (`ChangeEvent::
//! identity_digest`) and by the dedup processor's keys.

use apache_avro::types::Value;
use sha2::{Digest, Sha256};

pub fn bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

pub fn text(h: &mut Sha256, s: &str) {
    bytes(h, s.as_bytes());
}

/// Feed a value in a form that is equal exactly when the values are: a tag
/// per kind, lengths before variable parts, map entries in key order, and a
/// union's branch index left out (a nullable column and its non-null
/// schema version hash alike).
pub fn value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Union(_, inner) => value(h, inner),
        Value::Null => h.update(b"n"),
        Value::Boolean(b) => h.update(if *b { b"T" } else { b"F" }),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            h.update(b"b");
            bytes(h, b);
        }
        Value::String(s) | Value::Enum(_, s) => {
            h.update(b"s");
            text(h, s);
        }
        Value::Array(items) => {
            h.update(b"a");
            h.update((items.len() as u64).to_be_bytes());
            for i in items {
                value(h, i);
            }
        }
        Value::Map(m) => {
            h.update(b"m");
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            h.update((entries.len() as u64).to_be_bytes());
            for (k, v) in entries {
                text(h, k);
                value(h, v);
            }
        }
        Value::Record(fields) => {
            h.update(b"r");
            h.update((fields.len() as u64).to_be_bytes());
            for (k, v) in fields {
                text(h, k);
                value(h, v);
            }
        }
        // Scalars: their Debug text names the kind and the exact value
        // (integers, floats with shortest round-trip digits, decimals'
        // unscaled bytes, timestamps' units).
        other => {
            h.update(b"v");
            text(h, &format!("{other:?}"));
        }
    }
}
