//! Avro values -> Postgres text input (the canonical text of
//! `crate::table::text`, exact for every mapped type), written in the `COPY
//! ... FROM STDIN` text format (tab-separated, `\N` for NULL, backslash
//! escapes).

use crate::table::text::{bytea_hex, literal};
use apache_avro::types::Value;
use syncline_core::ColumnType;

/// Append `v` (the value of a column of type `ty`) as one COPY text field.
pub fn write_copy_field(out: &mut Vec<u8>, ty: &ColumnType, v: &Value) -> Result<(), String> {
    match literal(ty, v)? {
        None => out.extend_from_slice(b"\\N"),
        Some(text) => copy_escape(out, &text),
    }
    Ok(())
}

/// Append a field that is already text (or NULL).
pub fn write_copy_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.extend_from_slice(b"\\N"),
        Some(t) => copy_escape(out, t),
    }
}

/// Append bytes as a `bytea` field.
pub fn write_copy_bytea(out: &mut Vec<u8>, bytes: &[u8]) {
    copy_escape(out, &bytea_hex(bytes));
}

fn copy_escape(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn lit(ty: ColumnType, v: Value) -> String {
        literal(&ty, &v).unwrap().unwrap()
    }

    #[test]
    fn arrays_quote_items_and_copy_escapes_specials() {
        let v = Value::Array(vec![
            Value::Union(1, Box::new(Value::String("a\"b\\c".into()))),
            Value::Union(0, Box::new(Value::Null)),
        ]);
        assert_eq!(
            lit(ColumnType::Array(Box::new(ColumnType::Text)), v.clone()),
            r#"{"a\"b\\c",NULL}"#
        );
        let mut out = Vec::new();
        write_copy_field(&mut out, &ColumnType::Array(Box::new(ColumnType::Text)), &v).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a\\"b\\\\c",NULL}"#);
        let mut out = Vec::new();
        write_copy_text(&mut out, Some("a\tb\nc"));
        assert_eq!(out, b"a\\tb\\nc");
    }
}
