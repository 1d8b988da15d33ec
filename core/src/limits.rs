//! Bounded decoding: what a record may make a consumer do.
//!
//! A record names its writer schema by id, so whoever can write to a topic
//! chooses the schema every consumer decodes with. Without bounds, one record
//! whose schema is recursive (and whose data nests a million levels), whose
//! array block count is 500 million, or whose decimal scale is 4e9 aborts the
//! consuming process (stack overflow, allocation failure), before any
//! dead-letter topic can catch it, and again after every restart.
//!
//! So a writer schema is checked as JSON before it is parsed (nesting
//! depth, no recursive named type, decimal precision and scale, fixed
//! sizes), and every allocation while decoding a value is bounded (Avro's
//! own limit, set once per process from [`DecodeLimits::max_allocation_bytes`]:
//! strings, bytes and the cumulative size of arrays and maps). What breaks a
//! bound is a `Data` error naming the bound: the record goes to the
//! dead-letter topic and the stream goes on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The `limits:` section of a pipeline file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecodeLimits {
    /// Deepest nesting of types in a writer schema (record in union in
    /// array...). syncline's own schemas nest 4 deep.
    #[serde(default = "default_depth")]
    pub max_schema_depth: usize,
    /// Largest precision of a decimal (Postgres allows 1000 digits).
    #[serde(default = "default_precision")]
    pub max_decimal_precision: u64,
    /// Largest allocation one decoded value may ask for, in bytes: a string,
    /// bytes, a fixed, or all items of an array or a map together. Applies
    /// to the whole process (the first pipeline's value wins).
    #[serde(default = "default_allocation")]
    pub max_allocation_bytes: usize,
}

fn default_depth() -> usize {
    32
}
fn default_precision() -> u64 {
    1000
}
fn default_allocation() -> usize {
    64 * 1024 * 1024
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_schema_depth: default_depth(),
            max_decimal_precision: default_precision(),
            max_allocation_bytes: default_allocation(),
        }
    }
}

impl DecodeLimits {
    /// Bound Avro's allocations for this process (once; later calls keep the
    /// first value).
    pub fn install(&self) {
        apache_avro::util::max_allocation_bytes(self.max_allocation_bytes);
    }

    /// Check a writer schema (JSON) against the limits, before it is parsed.
    /// `Err` says which limit and where.
    pub fn check_schema(&self, schema: &Json) -> Result<(), String> {
        let mut defining = Vec::new();
        self.check(schema, 1, &mut defining, "")
    }

    fn check(
        &self,
        s: &Json,
        depth: usize,
        defining: &mut Vec<String>,
        namespace: &str,
    ) -> Result<(), String> {
        if depth > self.max_schema_depth {
            return Err(format!(
                "the writer schema nests deeper than {} types (limits.max_schema_depth)",
                self.max_schema_depth
            ));
        }
        match s {
            Json::String(name) => {
                if defining.iter().any(|d| names_match(d, name, namespace)) {
                    return Err(format!(
                        "the writer schema is recursive: `{name}` is used inside its own definition"
                    ));
                }
                Ok(())
            }
            Json::Array(branches) => {
                for b in branches {
                    self.check(b, depth + 1, defining, namespace)?;
                }
                Ok(())
            }
            Json::Object(o) => {
                let ty = o.get("type");
                if o.get("logicalType").and_then(Json::as_str) == Some("decimal") {
                    self.check_decimal(o)?;
                }
                if let Some(size) = o.get("size") {
                    let size = size.as_u64().unwrap_or(u64::MAX);
                    if size > self.max_allocation_bytes as u64 {
                        return Err(format!(
                            "a fixed of {size} bytes is larger than limits.max_allocation_bytes"
                        ));
                    }
                }
                let ns = o
                    .get("namespace")
                    .and_then(Json::as_str)
                    .unwrap_or(namespace)
                    .to_string();
                let named = matches!(
                    ty.and_then(Json::as_str),
                    Some("record" | "error" | "enum" | "fixed")
                );
                let name = o.get("name").and_then(Json::as_str).filter(|_| named);
                if let Some(n) = name {
                    defining.push(full_name(n, &ns));
                }
                let result = (|| {
                    match ty {
                        Some(Json::String(t)) if t == "array" => {
                            if let Some(items) = o.get("items") {
                                self.check(items, depth + 1, defining, &ns)?;
                            }
                        }
                        Some(Json::String(t)) if t == "map" => {
                            if let Some(values) = o.get("values") {
                                self.check(values, depth + 1, defining, &ns)?;
                            }
                        }
                        Some(Json::String(t)) if t == "record" || t == "error" => {
                            for f in o
                                .get("fields")
                                .and_then(Json::as_array)
                                .into_iter()
                                .flatten()
                            {
                                if let Some(ft) = f.get("type") {
                                    self.check(ft, depth + 1, defining, &ns)?;
                                }
                            }
                        }
                        Some(Json::String(_)) | None => {}
                        // `{"type": {...}}` or `{"type": [...]}`: a nested definition.
                        Some(inner) => self.check(inner, depth + 1, defining, &ns)?,
                    }
                    Ok(())
                })();
                if name.is_some() {
                    defining.pop();
                }
                result
            }
            _ => Ok(()),
        }
    }

    fn check_decimal(&self, o: &serde_json::Map<String, Json>) -> Result<(), String> {
        let precision = o.get("precision").and_then(Json::as_u64);
        let scale = o.get("scale").map_or(Some(0), Json::as_u64);
        match (precision, scale) {
            (Some(p), Some(s)) if p >= 1 && p <= self.max_decimal_precision && s <= p => Ok(()),
            _ => Err(format!(
                "a decimal with precision {} and scale {} (limits.max_decimal_precision is {}; the scale may not exceed the precision)",
                o.get("precision").map_or("none".into(), Json::to_string),
                o.get("scale").map_or("0".into(), Json::to_string),
                self.max_decimal_precision
            )),
        }
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// Whether a reference `name` (in `namespace`) can mean the type being
/// defined as `defined` (a full name). Errs towards "yes": a false match
/// only refuses an odd schema, a missed one would let recursion through.
fn names_match(defined: &str, name: &str, namespace: &str) -> bool {
    let simple = |n: &str| n.rsplit('.').next().unwrap_or(n).to_string();
    defined == full_name(name, namespace) || defined == name || simple(defined) == simple(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(s: Json) -> Result<(), String> {
        DecodeLimits::default().check_schema(&s)
    }

    #[test]
    fn syncline_envelopes_pass() {
        let env = json!({"type": "record", "name": "Envelope", "namespace": "syncline.x", "fields": [
            {"name": "op", "type": {"type": "enum", "name": "Op", "symbols": ["c", "u", "d"]}},
            {"name": "after", "type": ["null", {"type": "record", "name": "Row", "fields": [
                {"name": "id", "type": "long"},
                {"name": "price", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}]},
                {"name": "tags", "type": ["null", {"type": "array", "items": ["null", "string"]}]}
            ]}]},
            {"name": "before", "type": ["null", "Row"]}
        ]});
        assert_eq!(check(env), Ok(()));
    }

    #[test]
    fn recursion_is_refused_direct_and_mutual() {
        let direct = json!({"type": "record", "name": "n", "fields": [
            {"name": "next", "type": ["null", "n"]}]});
        assert!(check(direct).unwrap_err().contains("recursive"));
        let mutual = json!({"type": "record", "name": "a", "namespace": "p", "fields": [
            {"name": "b", "type": {"type": "record", "name": "b", "fields": [
                {"name": "a", "type": ["null", "p.a"]}]}}]});
        assert!(check(mutual).unwrap_err().contains("recursive"));
    }

    #[test]
    fn depth_is_bounded() {
        let mut s = json!("long");
        for _ in 0..40 {
            s = json!({"type": "array", "items": s});
        }
        assert!(check(s).unwrap_err().contains("max_schema_depth"));
    }

    #[test]
    fn absurd_decimals_and_fixed_sizes_are_refused() {
        let d = |p: u64, s: u64| json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s});
        assert!(check(d(12, 2)).is_ok());
        assert!(check(d(4_000_000_000, 4_000_000_000)).is_err());
        assert!(check(d(10, 11)).is_err());
        assert!(check(json!({"type": "bytes", "logicalType": "decimal"})).is_err());
        assert!(check(json!({"type": "fixed", "name": "f", "size": 1u64 << 40})).is_err());
    }
}
