//! The JSON paths of an `http_poll` source (record selector, key, cursor,
//! next-page fields): the part of JSONPath an API response needs, parsed
//! once when the source starts so that a bad path is a config error.
//!
//! `$` is the whole document; `.name` or `['name']` a member (`['a.b']` for a
//! name with dots or blanks); `[3]` an array item. The leading `$` may be
//! left out: `data.items` is `$.data.items`. No wildcards or filters: a
//! record selector names the array, whose items are the records.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Member(String),
    Index(usize),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let t = text.trim();
        let mut rest = t.strip_prefix('$').unwrap_or(t);
        let mut steps = Vec::new();
        let bad = |why: &str| {
            format!(
                "`{text}` is not a JSON path ({why}); write e.g. `$.data.items` or `$['a b'][0]`"
            )
        };
        if !t.starts_with('$') && !rest.is_empty() {
            // `data.items`: the first member without a dot.
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return Err(bad("a member name is missing"));
            }
            steps.push(Step::Member(rest[..end].to_string()));
            rest = &rest[end..];
        }
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return Err(bad("a member name is missing after `.`"));
                }
                steps.push(Step::Member(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix("['") {
                let end = r
                    .find("']")
                    .ok_or_else(|| bad("`['` is not closed by `']`"))?;
                steps.push(Step::Member(r[..end].to_string()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| bad("`[` is not closed"))?;
                let i = r[..end].trim().parse().map_err(|_| {
                    bad("an index must be a number; wildcards and filters are not supported")
                })?;
                steps.push(Step::Index(i));
                rest = &r[end + 1..];
            } else {
                return Err(bad("expected `.`, `[` or the end"));
            }
        }
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }

    /// The value at this path in `doc`, if there is one.
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let mut v = doc;
        for s in &self.steps {
            v = match s {
                Step::Member(m) => v.as_object()?.get(m)?,
                Step::Index(i) => v.as_array()?.get(*i)?,
            };
        }
        Some(v)
    }

    /// The path's last member name: the column a key or cursor field fills
    /// (`$.meta.id` -> `id`); `value` for `$`.
    pub fn leaf_name(&self) -> String {
        self.steps
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::Member(m) => Some(m.clone()),
                Step::Index(_) => None,
            })
            .unwrap_or_else(|| "value".into())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_find_members_and_items() {
        let doc =
            json!({"data": {"items": [{"id": 1}, {"id": 2}]}, "a b": {"c.d": true}, "next": null});
        let get = |p: &str| JsonPath::parse(p).unwrap().get(&doc).cloned();
        assert_eq!(get("$.data.items[1].id"), Some(json!(2)));
        assert_eq!(get("data.items[0]"), Some(json!({"id": 1})));
        assert_eq!(get("$['a b']['c.d']"), Some(json!(true)));
        assert_eq!(get("$"), Some(doc.clone()));
        assert_eq!(get("$.next"), Some(Value::Null));
        assert_eq!(get("$.missing.deeper"), None);
        assert_eq!(get("$.data.items[5]"), None);
        assert_eq!(
            JsonPath::parse("$.meta.cursor").unwrap().leaf_name(),
            "cursor"
        );
    }

    #[test]
    fn bad_paths_say_what_to_write() {
        for p in ["$.", "$..a", "$[*]", "$['a", "$.a[", "$x", ".a"] {
            let e = JsonPath::parse(p).unwrap_err();
            assert!(e.contains("$.data.items"), "{p}: {e}");
        }
    }
}
