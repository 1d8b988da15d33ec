//! The user's words: the `steps:` of a rules processor in a pipeline file.
//! Nothing here runs; [`RulesConfig::compile`] turns it into
//! [`CompiledRules`](super::CompiledRules), which is all the running code sees.

use schemars::JsonSchema;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use syncline_core::config::Issue;
use syncline_core::TableSchema;

use super::CompiledRules;

/// A processor that transforms each change with declarative steps, applied in
/// order. See processors/README.md for every step and the expression language.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// The steps, applied in order to every change; a `filter` that is false
    /// ends the list for that change.
    pub steps: Vec<StepConfig>,
}

impl RulesConfig {
    /// Parse every expression, check every named field against `input` (the
    /// schema of the topic read) and derive the output schema.
    pub fn compile(&self, input: &TableSchema) -> Result<CompiledRules, Vec<Issue>> {
        CompiledRules::compile(&self.steps, input)
    }
}

/// One step, as the running code sees it. Written as a one-key map
/// (`- filter: "row.amount > 10"`); [`StepFields`] is that map, and holds the
/// user's reference for each step.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "StepFields", into = "StepFields")]
pub enum StepConfig {
    Filter(String),
    Set(FieldMap<SetConfig>),
    Rename(FieldMap<String>),
    Drop(Vec<String>),
    Cast(FieldMap<String>),
    Mask(FieldMap<MaskConfig>),
    Route(Vec<RouteRule>),
    Unwrap(UnwrapConfig),
}

/// One step: exactly one of these keys. (A struct of options rather than a
/// serde enum because serde_yaml reads enums only from YAML tags, `!filter`,
/// which nobody writes by hand.)
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepFields {
    /// Keep only the changes for which this CEL expression is true, e.g.
    /// `"row.amount > 10 && op != 'DELETE'"`. A result that is not a boolean
    /// fails the change (it goes to the dead-letter topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Compute columns from CEL expressions: `{ total_cents: "int(row.amount * 100)" }`
    /// or `{ total_cents: { expr: "...", type: long } }`. An existing column
    /// keeps its type; a new one is appended with the type given or inferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<FieldMap<SetConfig>>,
    /// Rename columns: `{ old_name: new_name }`. Key columns are renamed in
    /// the key too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<FieldMap<String>>,
    /// Remove columns: `[internal_notes]`. Key columns cannot be dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<Vec<String>>,
    /// Change column types: `{ qty: long }`. Types: int, long, float, double,
    /// decimal(P,S), numeric, text, bool, date, time, timestamp, timestamptz,
    /// uuid, json, bytes, array<T>. A value that does not convert without
    /// loss fails the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cast: Option<FieldMap<String>>,
    /// Hide personal data: `{ email: { hash: sha256 } }`, `{ card: { keep_last: 4 } }`
    /// or `{ notes: { redact: "***" } }`. The column becomes text; null stays null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<FieldMap<MaskConfig>>,
    /// Choose the output topic: the first rule whose `when` is true gives the
    /// topic; when none is, the processor's default output topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteRule>>,
    /// Flatten the envelope into one row per change: the row (after, or
    /// before for a delete) plus the columns `<prefix>op`, `<prefix>source_name`,
    /// `<prefix>source_table`, `<prefix>source_position` (text) and
    /// `<prefix>source_ts` (timestamptz). Every change becomes an UPSERT, so a
    /// delete reaches the target as a row whose `<prefix>op` is `DELETE` (a
    /// soft delete). A TRUNCATE passes unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwrap: Option<UnwrapConfig>,
}

const STEP_KEYS: &str = "filter, set, rename, drop, cast, mask, route, unwrap";

impl TryFrom<StepFields> for StepConfig {
    type Error = String;
    fn try_from(f: StepFields) -> Result<Self, String> {
        let mut found = Vec::new();
        found.extend(f.filter.map(StepConfig::Filter));
        found.extend(f.set.map(StepConfig::Set));
        found.extend(f.rename.map(StepConfig::Rename));
        found.extend(f.drop.map(StepConfig::Drop));
        found.extend(f.cast.map(StepConfig::Cast));
        found.extend(f.mask.map(StepConfig::Mask));
        found.extend(f.route.map(StepConfig::Route));
        found.extend(f.unwrap.map(StepConfig::Unwrap));
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!("a step needs one of: {STEP_KEYS}")),
            _ => Err(format!(
                "a step has exactly one of {STEP_KEYS}: write each as its own `- ` item"
            )),
        }
    }
}

impl From<StepConfig> for StepFields {
    fn from(s: StepConfig) -> Self {
        let mut f = StepFields::default();
        match s {
            StepConfig::Filter(v) => f.filter = Some(v),
            StepConfig::Set(v) => f.set = Some(v),
            StepConfig::Rename(v) => f.rename = Some(v),
            StepConfig::Drop(v) => f.drop = Some(v),
            StepConfig::Cast(v) => f.cast = Some(v),
            StepConfig::Mask(v) => f.mask = Some(v),
            StepConfig::Route(v) => f.route = Some(v),
            StepConfig::Unwrap(v) => f.unwrap = Some(v),
        }
        f
    }
}

/// A computed column: an expression alone, or with its type.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SetConfig {
    /// A CEL expression; the type is the column's (if it exists) or inferred.
    Expr(String),
    /// A CEL expression and the column's type.
    Typed(TypedSet),
}

/// `{ expr: "...", type: long, nullable: false }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TypedSet {
    /// The CEL expression, evaluated with `row` bound to the row image.
    pub expr: String,
    /// The column's type (same names as `cast`). Needed for a new column when
    /// the expression's type cannot be inferred (see processors/README.md).
    #[serde(default, rename = "type")]
    pub ty: Option<String>,
    /// Whether the column may be null. Default: true for a new column, the
    /// existing column's nullability otherwise. A null result in a column
    /// that may not be null fails the change.
    #[serde(default)]
    pub nullable: Option<bool>,
}

impl SetConfig {
    pub(crate) fn expr(&self) -> &str {
        match self {
            SetConfig::Expr(e) => e,
            SetConfig::Typed(t) => &t.expr,
        }
    }
}

/// How a column is masked; written `{ hash: sha256 }`, `{ redact: "***" }`
/// or `{ keep_last: 4 }` ([`MaskFields`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "MaskFields", into = "MaskFields")]
pub enum MaskConfig {
    Hash(HashAlgorithm),
    Redact(String),
    KeepLast(usize),
}

/// How a column is masked: exactly one of these keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskFields {
    /// Replace the value by the lowercase hex digest of its exact text (equal
    /// values give equal digests, so the column can still be joined on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<HashAlgorithm>,
    /// Replace every non-null value by this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact: Option<String>,
    /// Keep the last N characters of the value's text, replace the others by `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
}

impl TryFrom<MaskFields> for MaskConfig {
    type Error = String;
    fn try_from(f: MaskFields) -> Result<Self, String> {
        match (f.hash, f.redact, f.keep_last) {
            (Some(h), None, None) => Ok(MaskConfig::Hash(h)),
            (None, Some(r), None) => Ok(MaskConfig::Redact(r)),
            (None, None, Some(n)) => Ok(MaskConfig::KeepLast(n)),
            _ => Err("a mask has exactly one of: hash, redact, keep_last".into()),
        }
    }
}

impl From<MaskConfig> for MaskFields {
    fn from(m: MaskConfig) -> Self {
        let mut f = MaskFields::default();
        match m {
            MaskConfig::Hash(h) => f.hash = Some(h),
            MaskConfig::Redact(r) => f.redact = Some(r),
            MaskConfig::KeepLast(n) => f.keep_last = Some(n),
        }
        f
    }
}

/// Digest used by `mask: { hash: ... }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// SHA-256, 64 hex characters.
    Sha256,
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// A CEL expression; the rule applies when it is true.
    pub when: String,
    /// The topic a matching change is written to.
    pub topic: String,
}

/// Options of `unwrap`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnwrapConfig {
    /// Prefix of the added columns, so they cannot clash with the row's own
    /// columns. Default `__` (`__op`, `__source_name`, ...).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "__".into()
}

/// A map from column names to values that keeps the order it was written in
/// (new columns are appended in that order) and refuses a name given twice.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap<V>(pub Vec<(String, V)>);

impl<V> FieldMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for FieldMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = FieldMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from column names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, V>()? {
                    if out.iter().any(|(n, _)| n == &k) {
                        return Err(serde::de::Error::custom(format!(
                            "column `{k}` is named twice"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(FieldMap(out))
            }
        }
        d.deserialize_map(V_(PhantomData))
    }
}

impl<V: Serialize> Serialize for FieldMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<V: JsonSchema> JsonSchema for FieldMap<V> {
    // Inline, like a plain map: the reference then reads "map of name to X"
    // instead of linking to an empty `Map_of_X` section.
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        BTreeMap::<String, V>::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        BTreeMap::<String, V>::json_schema(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_yaml_parses() {
        let yaml = r#"
steps:
  - filter: "row.amount > 10 && op != 'DELETE'"
  - set: { total_cents: "int(row.amount * 100)", note: { expr: "'x'", type: text } }
  - rename: { customer: customer_name }
  - drop: [internal_notes]
  - cast: { qty: long }
  - mask: { email: { hash: sha256 }, card: { keep_last: 4 }, notes: { redact: "***" } }
  - route: [ { when: "row.country == 'DE'", topic: orders.de } ]
  - unwrap: {}
"#;
        let cfg: RulesConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(cfg.steps.len(), 8);
        let StepConfig::Set(set) = &cfg.steps[1] else {
            panic!("step 1 is set")
        };
        let names: Vec<_> = set.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["total_cents", "note"], "written order is kept");
    }

    #[test]
    fn the_json_schema_carries_the_field_docs() {
        let schema = serde_json::to_string(&schemars::schema_for!(RulesConfig)).unwrap();
        for doc in [
            "Keep only the changes",
            "Hide personal data",
            "Keep the last N",
        ] {
            assert!(schema.contains(doc), "{doc} missing from {schema}");
        }
    }

    #[test]
    fn unknown_keys_and_repeated_columns_are_refused() {
        let err = serde_yaml::from_str::<RulesConfig>("steps: [ { explode: [a] } ]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `explode`"), "{err}");
        let err = serde_yaml::from_str::<RulesConfig>("steps: [ { filter: 'true', drop: [a] } ]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of"), "{err}");
        assert!(serde_yaml::from_str::<RulesConfig>(
            "steps: [ { route: [ { when: 'true', topic: t, extra: 1 } ] } ]"
        )
        .is_err());
        let err = serde_yaml::from_str::<RulesConfig>("steps: [ { rename: { a: b, a: c } } ]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("named twice") || err.contains("duplicate"),
            "{err}"
        );
    }
}
