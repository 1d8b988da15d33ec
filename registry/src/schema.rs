//! One schema as a client sends it: its text (kept and returned as
//! registered), its identity, and its parsed Avro form. Pure: no I/O.
//!
//! Identity is the schema's JSON with object keys sorted and all
//! insignificant whitespace removed, so `{"type": "string"}` sent with other
//! spacing or key order registers as the same schema. Unlike Avro's Parsing
//! Canonical Form it keeps `default`, `doc`, `aliases` and custom properties:
//! two schemas that differ there resolve differently, so they must not share
//! an id. It does not equate `"string"` with `{"type":"string"}` (different
//! documents; clients send the same text each time).

use crate::state::Rejection;
use apache_avro::Schema;
use serde_json::Value;
use std::fmt::Write;

/// A schema that parsed as Avro.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The text as the client sent it.
    pub text: String,
    /// The identity: sorted-key, whitespace-free JSON.
    pub canonical: String,
    pub parsed: Schema,
}

impl Candidate {
    /// Parse `text` as an Avro schema; 42201 when it is not one.
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        if text.trim().is_empty() {
            return Err(Rejection::InvalidSchema("Empty schema".into()));
        }
        let json: Value = serde_json::from_str(text).map_err(|e| {
            Rejection::InvalidSchema(format!("Invalid schema {text}, details: not JSON: {e}"))
        })?;
        let parsed = Schema::parse(&json).map_err(|e| {
            Rejection::InvalidSchema(format!("Invalid schema {text}, details: {e}"))
        })?;
        Ok(Self {
            text: text.to_string(),
            canonical: canonical_json(&json),
            parsed,
        })
    }
}

/// `value` as JSON with object keys sorted and no whitespace.
fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Serializing a string cannot fail.
                let _ = write!(out, "{}:", Value::String(k.clone()));
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_and_key_order_do_not_change_identity() {
        let a = Candidate::parse(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#,
        )
        .unwrap();
        let b = Candidate::parse(
            "{ \"name\" : \"r\",\n \"fields\": [ {\"type\": \"int\", \"name\": \"a\"} ],\n \"type\": \"record\" }",
        )
        .unwrap();
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(
            a.canonical,
            r#"{"fields":[{"name":"a","type":"int"}],"name":"r","type":"record"}"#
        );
        assert_ne!(a.text, b.text, "the text is kept as sent");
    }

    #[test]
    fn defaults_docs_and_field_order_change_identity() {
        let base = Candidate::parse(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#,
        )
        .unwrap();
        for other in [
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int","default":1}]}"#,
            r#"{"type":"record","name":"r","doc":"d","fields":[{"name":"a","type":"int"}]}"#,
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#,
        ] {
            assert_ne!(
                Candidate::parse(other).unwrap().canonical,
                base.canonical,
                "{other}"
            );
        }
    }

    #[test]
    fn primitive_schemas_and_escapes_are_canonical() {
        assert_eq!(
            Candidate::parse(" \"string\" ").unwrap().canonical,
            "\"string\""
        );
        let c = Candidate::parse(r#"{"type":"enum","name":"e","doc":"a \"q\" é","symbols":["A"]}"#)
            .unwrap();
        assert_eq!(
            c.canonical,
            r#"{"doc":"a \"q\" é","name":"e","symbols":["A"],"type":"enum"}"#
        );
    }

    #[test]
    fn rejects_empty_non_json_and_non_avro() {
        for bad in [
            "",
            "  ",
            "{not json",
            r#"{"type":"record","name":"r"}"#,
            r#""no_such_type""#,
        ] {
            match Candidate::parse(bad) {
                Err(Rejection::InvalidSchema(msg)) => assert!(!msg.is_empty()),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
