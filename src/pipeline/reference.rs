//! docs/reference.md, generated from the config types' doc comments and
//! serde attributes (via schemars), so the reference cannot drift: the test
//! below fails when the committed file differs from what the types say.
//! Regenerate with `make reference`.

use super::config::{PipelineConfig, ProcessorConfig, SinkConfig, SourceConfig};
use schemars::schema_for;
use serde_json::Value as Json;
use std::collections::BTreeSet;

pub fn generate() -> String {
    let mut out = String::from(
        "# Pipeline file reference\n\n\
         Generated from the config types by `make reference`; a test keeps it current.\n\
         Every string value may use `${VAR}` or `${VAR:-default}` (environment variables; `$${` for a literal `${`).\n\
         Unknown keys are errors. `syncline validate FILE` checks a file and names the line of each mistake.\n",
    );
    let mut roots = vec![(
        "pipeline".to_string(),
        "The pipeline file".to_string(),
        schema_for!(PipelineConfig),
    )];
    roots.extend(SourceConfig::reference());
    roots.extend(ProcessorConfig::reference());
    roots.extend(SinkConfig::reference());
    let mut seen = BTreeSet::new();
    for (anchor, title, schema) in &roots {
        let root = schema.as_value();
        let defs = root.get("$defs").cloned().unwrap_or(Json::Null);
        render(&mut out, anchor, title, root, &defs, &mut seen);
    }
    out
}

fn render(
    out: &mut String,
    anchor: &str,
    title: &str,
    schema: &Json,
    defs: &Json,
    seen: &mut BTreeSet<String>,
) {
    if !seen.insert(anchor.to_string()) {
        return;
    }
    out.push_str(&format!("\n<a id=\"{anchor}\"></a>\n## {title}\n\n"));
    if let Some(d) = schema.get("description").and_then(Json::as_str) {
        out.push_str(&format!("{}\n\n", d.replace('\n', " ")));
    }
    let mut nested: Vec<(String, Json)> = Vec::new();
    if let Some(variants) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Json::as_array)
    {
        out.push_str("One of:\n\n");
        for v in variants {
            let desc = v
                .get("description")
                .and_then(Json::as_str)
                .unwrap_or("")
                .replace('\n', " ");
            let tag = v.pointer("/properties/type/const").and_then(Json::as_str);
            // A unit variant with a doc comment: one string value.
            let value = v.get("const").and_then(Json::as_str);
            match (tag, value) {
                (Some(t), _) => out.push_str(&format!("- `type: {t}`: {desc}\n")),
                (None, Some(c)) => out.push_str(&format!("- `{c}`: {desc}\n")),
                (None, None) => out.push_str(&format!("- {}: {desc}\n", type_of(v, &mut nested))),
            }
        }
        out.push('\n');
    }
    if let Some(enum_values) = schema.get("enum").and_then(Json::as_array) {
        let vals: Vec<String> = enum_values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect();
        out.push_str(&format!("One of: {}\n\n", vals.join(", ")));
    }
    if let Some(props) = schema.get("properties").and_then(Json::as_object) {
        let required: BTreeSet<&str> = schema
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        out.push_str("| key | type | required / default | description |\n|---|---|---|---|\n");
        for (key, p) in props {
            let ty = type_of(p, &mut nested);
            let req = if required.contains(key.as_str()) {
                "required".to_string()
            } else {
                match p.get("default") {
                    Some(d) => format!("default `{d}`"),
                    None => "optional".to_string(),
                }
            };
            let desc = p
                .get("description")
                .and_then(Json::as_str)
                .unwrap_or("")
                .replace('\n', " ");
            out.push_str(&format!("| `{key}` | {ty} | {req} | {desc} |\n"));
        }
    }
    for (name, _) in nested.clone() {
        if let Some(def) = defs.get(&name) {
            let title = def
                .get("title")
                .and_then(Json::as_str)
                .unwrap_or(&name)
                .to_string();
            render(out, &anchor_of(&name), &title, def, defs, seen);
        }
    }
}

fn anchor_of(def: &str) -> String {
    def.to_ascii_lowercase()
}

/// A readable type, linking to nested definitions (collected in `nested`).
fn type_of(p: &Json, nested: &mut Vec<(String, Json)>) -> String {
    if let Some(r) = p.get("$ref").and_then(Json::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r).to_string();
        let link = format!("[{name}](#{})", anchor_of(&name));
        if !nested.iter().any(|(n, _)| n == &name) {
            nested.push((name, p.clone()));
        }
        return link;
    }
    if let Some(any) = p
        .get("anyOf")
        .or_else(|| p.get("oneOf"))
        .and_then(Json::as_array)
    {
        let parts: Vec<String> = any
            .iter()
            .filter(|v| v.get("type").and_then(Json::as_str) != Some("null"))
            .map(|v| type_of(v, nested))
            .collect();
        return parts.join(" or ");
    }
    if let Some(values) = p.get("enum").and_then(Json::as_array) {
        return values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    let ty = match p.get("type") {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(Json::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    };
    match ty.as_str() {
        "array" => format!(
            "list of {}",
            p.get("items")
                .map(|i| type_of(i, nested))
                .unwrap_or_else(|| "any".into())
        ),
        "object" => match p.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map of name to {}", type_of(v, nested)),
            _ => "mapping".into(),
        },
        "integer" => "integer".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference.md");
        let generated = super::generate();
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/reference.md is out of date with the config types: run `make reference` and commit it"
        );
    }
}
