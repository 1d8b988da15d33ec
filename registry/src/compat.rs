//! Compatibility levels and the check behind them. Pure: no I/O.
//!
//! Directions follow Confluent's definitions:
//! - BACKWARD: the new schema can read data written with the old one
//!   (`can_read(writer = old, reader = new)`), so consumers upgrade first.
//! - FORWARD: the old schema can read data written with the new one
//!   (`can_read(writer = new, reader = old)`), so producers upgrade first.
//! - FULL: both.
//! - `*_TRANSITIVE`: against every live version; otherwise only the latest.
//!
//! apache-avro answers `Partial` when resolving *may* fail for some values
//! (a writer union branch or an enum symbol the reader lacks). Confluent
//! (through Avro's Java checker) calls those incompatible, and so do we: a
//! consumer must never fail on a record its producer was allowed to write.

use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A subject's (or the global) compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    /// The level of a registry nobody configured, as in Confluent.
    pub const DEFAULT: Level = Level::Backward;

    const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// Whether the new schema must read the old schemas' data.
    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// Whether the old schemas must read the new schema's data.
    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of the seven levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel;

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Case-insensitive, like Confluent (`backward` and `BACKWARD` both work).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(UnknownLevel)
    }
}

/// Why `candidate` cannot follow `previous` under `level`: one message per
/// failed check, empty when compatible. `previous` holds the live versions
/// as `(version, schema)`, oldest first; non-transitive levels look only at
/// the last one.
pub fn check(level: Level, candidate: &Schema, previous: &[(u32, &Schema)]) -> Vec<String> {
    let against: &[(u32, &Schema)] = match (level, previous.split_last()) {
        (Level::None, _) | (_, None) => &[],
        (l, Some((last, _))) if !l.transitive() => std::slice::from_ref(last),
        _ => previous,
    };
    let mut problems = Vec::new();
    for &(version, old) in against {
        if level.backward() {
            if let Some(why) = cannot_read(old, candidate) {
                problems.push(format!(
                    "{level}: the new schema cannot read data written with version {version}: {why}"
                ));
            }
        }
        if level.forward() {
            if let Some(why) = cannot_read(candidate, old) {
                problems.push(format!(
                    "{level}: version {version} cannot read data written with the new schema: {why}"
                ));
            }
        }
    }
    problems
}

/// `None` when `reader` can read everything `writer` can write.
fn cannot_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => Some(
            "some values the writer may write cannot be read (a union branch or enum symbol is missing in the reader)"
                .into(),
        ),
        Err(e) => Some(describe(&e)),
    }
}

/// apache-avro's message, except that a type clash names the two types
/// instead of dumping both schemas (its message embeds their `Debug` form).
fn describe(e: &CompatibilityError) -> String {
    match e {
        CompatibilityError::FieldTypeMismatch(field, inner) => {
            format!("field '{field}': {}", describe(inner))
        }
        CompatibilityError::WrongType {
            writer_schema_type,
            reader_schema_type,
        } => format!(
            "the writer's type {} cannot be read as {}",
            type_name(writer_schema_type),
            type_name(reader_schema_type)
        ),
        other => other.to_string(),
    }
}

/// `Record(RecordSchema { .. })` -> `record`: the variant name of a `Debug`-formatted schema.
fn type_name(debug: &str) -> String {
    debug
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"r","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    fn a() -> Schema {
        schema(r#"{"name":"a","type":"int"}"#)
    }
    /// `a` plus a field with a default: readable both ways with `a`.
    fn a_b_default() -> Schema {
        schema(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#)
    }
    /// `a` plus a field without a default: old readers skip it, but it cannot read old data.
    fn a_b_required() -> Schema {
        schema(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#)
    }
    /// No fields: reads anything record `r`; `a` cannot read its data.
    fn empty() -> Schema {
        schema("")
    }

    #[test]
    fn levels_parse_case_insensitively_and_print_upper_case() {
        for l in Level::ALL {
            assert_eq!(l.as_str().to_lowercase().parse::<Level>(), Ok(l));
            assert_eq!(l.to_string(), l.as_str());
            assert_eq!(
                serde_json::to_string(&l).unwrap(),
                format!("\"{}\"", l.as_str())
            );
        }
        assert_eq!("sideways".parse::<Level>(), Err(UnknownLevel));
        assert_eq!(Level::DEFAULT, Level::Backward);
    }

    #[test]
    fn first_version_is_always_compatible() {
        for l in Level::ALL {
            assert!(check(l, &a(), &[]).is_empty(), "{l}");
        }
    }

    #[test]
    fn none_accepts_anything() {
        let old = a();
        assert!(check(Level::None, &Schema::String, &[(1, &old)]).is_empty());
    }

    #[test]
    fn backward_needs_defaults_for_added_fields() {
        let old = a();
        assert!(check(Level::Backward, &a_b_default(), &[(1, &old)]).is_empty());
        let p = check(Level::Backward, &a_b_required(), &[(1, &old)]);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("BACKWARD") && p[0].contains("version 1") && p[0].contains("default"),
            "{p:?}"
        );
    }

    #[test]
    fn forward_allows_added_required_fields_but_not_removed_ones() {
        let old = a();
        assert!(check(Level::Forward, &a_b_required(), &[(1, &old)]).is_empty());
        let p = check(Level::Forward, &empty(), &[(1, &old)]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("version 1 cannot read"), "{p:?}");
    }

    #[test]
    fn full_needs_both_directions() {
        let old = a();
        assert!(check(Level::Full, &a_b_default(), &[(1, &old)]).is_empty());
        assert_eq!(check(Level::Full, &a_b_required(), &[(1, &old)]).len(), 1);
        assert_eq!(check(Level::Full, &empty(), &[(1, &old)]).len(), 1);
        // A type change breaks both directions: two messages, naming the types.
        let p = check(Level::Full, &Schema::String, &[(1, &old)]);
        assert_eq!(
            p,
            [
                "FULL: the new schema cannot read data written with version 1: the writer's type record cannot be read as string",
                "FULL: version 1 cannot read data written with the new schema: the writer's type string cannot be read as record",
            ]
        );
    }

    #[test]
    fn non_transitive_levels_look_only_at_the_latest_version() {
        // v1 has `b` as a string, v2 dropped it, the candidate brings `b`
        // back as an int: fine next to v2, a type clash with v1.
        let v1 = a_b_required();
        let v2 = a();
        let cand = schema(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#);
        let previous = [(1, &v1), (2, &v2)];
        assert!(check(Level::Backward, &cand, &previous).is_empty());
        assert!(check(Level::Forward, &cand, &previous).is_empty());
        assert!(check(Level::Full, &cand, &previous).is_empty());
        let p = check(Level::BackwardTransitive, &cand, &previous);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("version 1"), "{p:?}");
        let p = check(Level::ForwardTransitive, &cand, &previous);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("version 1 cannot read"), "{p:?}");
        assert_eq!(check(Level::FullTransitive, &cand, &previous).len(), 2);
    }

    #[test]
    fn a_field_type_clash_names_the_field_and_the_types() {
        let old = a();
        let new = schema(r#"{"name":"a","type":"string"}"#);
        let p = check(Level::Backward, &new, &[(1, &old)]);
        assert_eq!(
            p,
            ["BACKWARD: the new schema cannot read data written with version 1: field 'a': the writer's type int cannot be read as string"]
        );
    }

    #[test]
    fn partial_compatibility_counts_as_incompatible() {
        let old = Schema::parse_str(r#"["int","string"]"#).unwrap();
        let p = check(Level::Backward, &Schema::Int, &[(1, &old)]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("cannot be read"), "{p:?}");
    }
}
