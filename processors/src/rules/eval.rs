//! One change in, one [`Outcome`] out.

use apache_avro::types::Value as Avro;
use cel::objects::{Key, Map};
use cel::{Context, Env, Value as Cel};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use syncline_core::{ChangeEvent, Column, Op};

use super::cel_value::{canonical_text, row_to_cel, to_avro, to_cel};
use super::compile::{CelExpr, Compiled, CompiledRules, Step, UNWRAP_COLUMNS};
use super::config::{HashAlgorithm, MaskConfig};

/// What the rules made of one change.
// Emit is the common case: boxing it would allocate per change to shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Publish `event`, to `topic` when a `route` step chose one, else to the
    /// processor's default output topic.
    Emit {
        topic: Option<String>,
        event: ChangeEvent,
    },
    /// A `filter` step was false: publish nothing.
    Filtered,
    /// An expression or a conversion failed on this change's values (a type
    /// error, a division by zero, a null in a NOT NULL column). The caller
    /// dead-letters the input change with `reason` and its identity.
    Failed { reason: String },
}

type Row = Vec<(String, Avro)>;

impl CompiledRules {
    /// Apply every step to `event`.
    ///
    /// Deterministic and replay-safe: the outcome depends on `event` alone (no
    /// clock, no randomness, no state), so the same change read again gives
    /// the same outcome; and an emitted change keeps `event.source`
    /// unchanged, so its identity (`source.name`, `source.position`) is the
    /// input's and sinks can drop replays. A TRUNCATE has no row and passes
    /// every step unchanged.
    pub fn apply(&self, event: &ChangeEvent) -> Outcome {
        let mut ev = event.clone();
        let mut topic = None;
        if ev.op == Op::Truncate {
            return Outcome::Emit { topic, event: ev };
        }
        for (i, compiled) in self.steps.iter().enumerate() {
            match apply_step(compiled, &self.env, &mut ev, &mut topic) {
                Ok(true) => {}
                Ok(false) => return Outcome::Filtered,
                Err(why) => {
                    return Outcome::Failed {
                        reason: format!("steps[{i}]: {why}"),
                    }
                }
            }
        }
        debug_assert_eq!(ev.source, event.source, "identity is kept");
        Outcome::Emit { topic, event: ev }
    }
}

/// `Ok(false)`: filtered out.
fn apply_step(
    c: &Compiled,
    env: &Arc<Env>,
    ev: &mut ChangeEvent,
    topic: &mut Option<String>,
) -> Result<bool, String> {
    let cols = &c.columns;
    match &c.step {
        Step::Filter(e) => {
            let row = ev.after.as_ref().or(ev.before.as_ref());
            return boolean(e, &context(env, ev, row, cols));
        }
        Step::Route(rules) => {
            let row = ev.after.as_ref().or(ev.before.as_ref());
            let ctx = context(env, ev, row, cols);
            for (e, t) in rules {
                if boolean(e, &ctx)? {
                    *topic = Some(t.clone());
                    break;
                }
            }
        }
        Step::Set(fields) => {
            // A column computed from an unchanged one (whose value the change
            // does not carry) is unchanged too: the target keeps its value,
            // never one computed from the null placeholder. Any other
            // column it writes now has a value.
            let derived: Vec<&str> = fields
                .iter()
                .filter(|(_, e)| ev.unchanged.iter().any(|u| mentions(&e.text, u)))
                .map(|(col, _)| col.name.as_str())
                .collect();
            ev.unchanged
                .retain(|u| !fields.iter().any(|(col, _)| &col.name == u));
            ev.unchanged.extend(derived.into_iter().map(str::to_string));
            // Every expression sees the row as it was before this step, so
            // the order of the fields in one `set` does not matter.
            let mut images = [ev.before.clone(), ev.after.clone()];
            for img in images.iter_mut().flatten() {
                let ctx = context(env, ev, Some(img), cols);
                let mut values = Vec::with_capacity(fields.len());
                for (col, e) in fields {
                    values.push(to_avro(&eval(e, &ctx)?, col)?);
                }
                for ((col, _), v) in fields.iter().zip(values) {
                    put(img, &col.name, v);
                }
            }
            [ev.before, ev.after] = images;
        }
        Step::Rename(pairs) => {
            for name in ev.unchanged.iter_mut() {
                if let Some((_, new)) = pairs.iter().find(|(old, _)| old == name) {
                    *name = new.clone();
                }
            }
            for (name, _) in rows_and_key(ev) {
                if let Some((_, new)) = pairs.iter().find(|(old, _)| old == name) {
                    *name = new.clone();
                }
            }
        }
        Step::Drop(names) => {
            ev.unchanged.retain(|u| !names.contains(u));
            for img in [&mut ev.before, &mut ev.after].into_iter().flatten() {
                img.retain(|(n, _)| !names.contains(n));
            }
        }
        Step::Cast(pairs) => {
            for (name, v) in rows_and_key(ev) {
                if let Some((from, to)) = pairs.iter().find(|(f, _)| &f.name == name) {
                    *v = cast(v, from, to)?;
                }
            }
        }
        Step::Mask(masks) => {
            for (name, v) in rows_and_key(ev) {
                if let Some((_, ty, mask)) = masks.iter().find(|(n, _, _)| n == name) {
                    if let Some(text) = canonical_text(v, ty) {
                        *v = Avro::String(masked(&text, mask));
                    }
                }
            }
        }
        Step::Unwrap { prefix } => {
            // A delete without a before image still says which row it removed.
            let mut row = ev
                .after
                .take()
                .or(ev.before.take())
                .unwrap_or_else(|| ev.key.clone());
            let s = &ev.source;
            let meta = [
                Avro::String(ev.op.symbol().into()),
                Avro::String(s.name.clone()),
                Avro::String(s.table.clone()),
                Avro::String(s.position_text.clone()),
                Avro::TimestampMicros(s.ts_us),
            ];
            for ((name, _), v) in UNWRAP_COLUMNS.iter().zip(meta) {
                put(&mut row, &format!("{prefix}{name}"), v);
            }
            ev.after = Some(row);
            ev.op = Op::Upsert;
        }
    }
    Ok(true)
}

/// Whether expression `text` names column `column` (as a whole word: an
/// over-approximation that errs towards keeping the target's value).
fn mentions(text: &str, column: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(column).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + column.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Every (name, value) of both row images and of the key: rename, cast and
/// mask change a column wherever it appears.
fn rows_and_key(ev: &mut ChangeEvent) -> impl Iterator<Item = (&mut String, &mut Avro)> {
    ev.before
        .iter_mut()
        .chain(ev.after.iter_mut())
        .flat_map(|r| r.iter_mut())
        .chain(ev.key.iter_mut())
        .map(|(n, v)| (n, v))
}

fn put(row: &mut Row, name: &str, v: Avro) {
    match row.iter_mut().find(|(n, _)| n == name) {
        Some((_, old)) => *old = v,
        None => row.push((name.to_string(), v)),
    }
}

fn cast(v: &Avro, from: &Column, to: &Column) -> Result<Avro, String> {
    use syncline_core::ColumnType::*;
    let exact = matches!(from.ty, Decimal { .. } | NumericText) || matches!(to.ty, Text | Json);
    let cel = if exact {
        // Through the exact text: a decimal must not pass through a double.
        match canonical_text(v, &from.ty) {
            Some(t) => Cel::String(Arc::new(t)),
            None => Cel::Null,
        }
    } else {
        to_cel(v, &from.ty)
    };
    to_avro(&cel, to)
}

fn masked(text: &str, mask: &MaskConfig) -> String {
    match mask {
        MaskConfig::Hash(HashAlgorithm::Sha256) => hex::encode(Sha256::digest(text.as_bytes())),
        MaskConfig::Redact(with) => with.clone(),
        MaskConfig::KeepLast(n) => {
            let len = text.chars().count();
            let hidden = len.saturating_sub(*n);
            text.chars()
                .enumerate()
                .map(|(i, c)| if i < hidden { '*' } else { c })
                .collect()
        }
    }
}

fn eval(e: &CelExpr, ctx: &Context) -> Result<Cel, String> {
    e.program
        .execute(ctx)
        .map_err(|err| format!("`{}` failed: {err}", e.text))
}

fn boolean(e: &CelExpr, ctx: &Context) -> Result<bool, String> {
    match eval(e, ctx)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!(
            "`{}` gave {} {other:?}, not a bool",
            e.text,
            other.type_of()
        )),
    }
}

/// The variables of an expression: `row` (the image being computed, or the
/// after image, or the before image of a delete), `before`, `after`, `key`,
/// `op` and `source`.
fn context<'a>(
    env: &Arc<Env>,
    ev: &ChangeEvent,
    row: Option<&Row>,
    cols: &[Column],
) -> Context<'a, 'a> {
    let image = |r: Option<&Row>| r.map(|r| row_to_cel(r, cols)).unwrap_or(Cel::Null);
    let mut ctx = Context::with_env(env.clone());
    ctx.add_variable_from_value("row", image(row.or(Some(&ev.key))));
    ctx.add_variable_from_value("before", image(ev.before.as_ref()));
    ctx.add_variable_from_value("after", image(ev.after.as_ref()));
    ctx.add_variable_from_value("key", row_to_cel(&ev.key, cols));
    ctx.add_variable_from_value("op", ev.op.symbol());
    let s = &ev.source;
    let source: HashMap<Key, Cel> = [
        ("connector", Cel::from(s.connector.as_str())),
        ("name", Cel::from(s.name.as_str())),
        ("db", Cel::from(s.db.as_str())),
        ("table", Cel::from(s.table.as_str())),
        ("position", Cel::from(s.position_text.as_str())),
        ("ts_us", Cel::Int(s.ts_us)),
    ]
    .into_iter()
    .map(|(k, v)| (Key::String(Arc::new(k.to_string())), v))
    .collect();
    ctx.add_variable_from_value(
        "source",
        Cel::Map(Map {
            map: Arc::new(source),
        }),
    );
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::orders_schema;
    use crate::rules::RulesConfig;
    use syncline_core::value::decimal_from_text;
    use syncline_core::{Position, SourceInfo};

    fn rules(yaml: &str) -> CompiledRules {
        let cfg: RulesConfig = serde_yaml::from_str(yaml).expect("valid YAML");
        cfg.compile(&orders_schema()).expect("compiles")
    }

    fn order(id: i64, amount: &str, country: &str) -> Row {
        vec![
            ("id".into(), Avro::Long(id)),
            ("customer".into(), Avro::String("Ada".into())),
            ("amount".into(), decimal_from_text(amount, 2).unwrap()),
            ("qty".into(), Avro::Int(3)),
            ("email".into(), Avro::String("ada@example.com".into())),
            ("country".into(), Avro::String(country.into())),
            ("internal_notes".into(), Avro::Null),
        ]
    }

    fn change(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            op,
            key: vec![("id".into(), Avro::Long(7))],
            before,
            after,
            source: SourceInfo {
                connector: "sql_poll".into(),
                name: "shop".into(),
                db: "shop".into(),
                table: "public.orders".into(),
                position: Position::builder().i64(42).build(),
                position_text: "42".into(),
                ts_us: 1_700_000_000_000_000,
            },
            unchanged: Vec::new(),
        }
    }

    #[test]
    fn unchanged_columns_follow_renames_drops_and_derived_values() {
        let r = rules(
            r#"
steps:
  - rename: { email: contact }
  - drop: [internal_notes]
  - set: { email_domain: "row.contact + '!'", country: "'FR'" }
"#,
        );
        let mut ev = insert("1.00", "DE");
        ev.unchanged = vec!["email".into(), "internal_notes".into(), "country".into()];
        let (_, out) = emitted(r.apply(&ev));
        let mut got = out.unchanged.clone();
        got.sort();
        // `contact` is `email` renamed; `email_domain` is computed from it,
        // so the target keeps its value; `country` was set: it has a value;
        // `internal_notes` is gone.
        assert_eq!(got, ["contact", "email_domain"]);
        assert!(mentions("row.contact + 'x'", "contact"));
        assert!(!mentions("row.contacts", "contact"));
        assert!(!mentions("row.my_contact", "contact"));
    }

    fn insert(amount: &str, country: &str) -> ChangeEvent {
        change(Op::Insert, None, Some(order(7, amount, country)))
    }

    fn emitted(o: Outcome) -> (Option<String>, ChangeEvent) {
        match o {
            Outcome::Emit { topic, event } => (topic, event),
            other => panic!("expected Emit, got {other:?}"),
        }
    }

    fn after(ev: &ChangeEvent, col: &str) -> Avro {
        let row = ev.after.as_ref().expect("after image");
        row.iter()
            .find(|(n, _)| n == col)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {col}"))
    }

    #[test]
    fn filter_keeps_or_drops() {
        let r = rules(r#"steps: [ { filter: "row.amount > 10 && op != 'DELETE'" } ]"#);
        assert!(matches!(
            r.apply(&insert("10.50", "DE")),
            Outcome::Emit { .. }
        ));
        assert_eq!(r.apply(&insert("9.99", "DE")), Outcome::Filtered);
        let delete = change(Op::Delete, Some(order(7, "50.00", "DE")), None);
        assert_eq!(
            r.apply(&delete),
            Outcome::Filtered,
            "a delete's row is its before image"
        );
    }

    #[test]
    fn set_computes_in_both_images() {
        let r = rules(
            r#"steps: [ { set: { total_cents: "int(math.round(row.amount * 100.0))", qty: "row.qty * 2" } } ]"#,
        );
        let ev = change(
            Op::Update,
            Some(order(7, "1.25", "DE")),
            Some(order(7, "2.50", "DE")),
        );
        let (_, out) = emitted(r.apply(&ev));
        assert_eq!(after(&out, "total_cents"), Avro::Long(250));
        assert_eq!(
            after(&out, "qty"),
            Avro::Int(6),
            "an existing column keeps its type"
        );
        let before = out.before.unwrap();
        assert!(before.contains(&("total_cents".into(), Avro::Long(125))));
    }

    #[test]
    fn a_failing_expression_fails_the_change_with_its_reason() {
        let r = rules(
            r#"steps: [ { drop: [email] }, { set: { per_item: "row.qty / (row.qty - 3)" } } ]"#,
        );
        let Outcome::Failed { reason } = r.apply(&insert("1.00", "DE")) else {
            panic!("division by zero must fail")
        };
        assert!(
            reason.starts_with("steps[1]: `row.qty / (row.qty - 3)` failed"),
            "{reason}"
        );
        assert!(
            reason.to_lowercase().contains("division by zero"),
            "{reason}"
        );

        // CEL does not mix int and double in arithmetic: a type error at run time.
        let r = rules(r#"steps: [ { set: { x: { expr: "row.amount * 100", type: double } } } ]"#);
        let Outcome::Failed { reason } = r.apply(&insert("1.00", "DE")) else {
            panic!("double * int must fail")
        };
        assert!(reason.contains("`row.amount * 100` failed"), "{reason}");

        let r = rules(r#"steps: [ { filter: "row.customer" } ]"#);
        let Outcome::Failed { reason } = r.apply(&insert("1.00", "DE")) else {
            panic!("a non-bool filter must fail")
        };
        assert!(reason.contains("not a bool"), "{reason}");
    }

    #[test]
    fn a_null_in_a_not_null_column_fails() {
        let r = rules(
            r#"steps: [ { set: { label: { expr: "row.internal_notes", type: text, nullable: false } } } ]"#,
        );
        let Outcome::Failed { reason } = r.apply(&insert("1.00", "DE")) else {
            panic!("null into NOT NULL must fail")
        };
        assert!(reason.contains("`label` is NOT NULL"), "{reason}");
    }

    #[test]
    fn rename_drop_and_cast() {
        let r = rules(
            r#"
steps:
  - rename: { customer: customer_name, id: order_id }
  - drop: [internal_notes]
  - cast: { qty: long, amount: text }
"#,
        );
        let (_, out) = emitted(r.apply(&insert("12.50", "DE")));
        assert_eq!(after(&out, "customer_name"), Avro::String("Ada".into()));
        assert_eq!(after(&out, "qty"), Avro::Long(3));
        assert_eq!(
            after(&out, "amount"),
            Avro::String("12.50".into()),
            "exact decimal text"
        );
        assert!(out
            .after
            .as_ref()
            .unwrap()
            .iter()
            .all(|(n, _)| n != "internal_notes"));
        assert_eq!(out.key, vec![("order_id".to_string(), Avro::Long(7))]);
    }

    #[test]
    fn a_cast_that_loses_digits_fails() {
        let r = rules(r#"steps: [ { cast: { amount: long } } ]"#);
        assert_eq!(
            emitted(r.apply(&insert("12.00", "DE"))).1.after.unwrap()[2].1,
            Avro::Long(12)
        );
        assert!(matches!(
            r.apply(&insert("12.50", "DE")),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn mask_hashes_redacts_and_keeps_last() {
        let r = rules(
            r#"steps: [ { mask: { email: { hash: sha256 }, customer: { keep_last: 1 }, country: { redact: "**" }, internal_notes: { redact: "x" } } } ]"#,
        );
        let (_, out) = emitted(r.apply(&insert("1.00", "DE")));
        let digest = hex::encode(Sha256::digest(b"ada@example.com"));
        assert_eq!(after(&out, "email"), Avro::String(digest));
        assert_eq!(after(&out, "customer"), Avro::String("**a".into()));
        assert_eq!(after(&out, "country"), Avro::String("**".into()));
        assert_eq!(after(&out, "internal_notes"), Avro::Null, "null stays null");
    }

    #[test]
    fn route_picks_the_first_matching_topic() {
        let r = rules(
            r#"steps: [ { route: [ { when: "row.country == 'DE'", topic: orders.de }, { when: "row.amount > 100.0", topic: orders.big } ] } ]"#,
        );
        assert_eq!(
            emitted(r.apply(&insert("500.00", "DE"))).0.as_deref(),
            Some("orders.de")
        );
        assert_eq!(
            emitted(r.apply(&insert("500.00", "FR"))).0.as_deref(),
            Some("orders.big")
        );
        assert_eq!(
            emitted(r.apply(&insert("5.00", "FR"))).0,
            None,
            "default topic"
        );
    }

    #[test]
    fn unwrap_flattens_and_soft_deletes() {
        let r = rules(r#"steps: [ { unwrap: {} }, { filter: "row.__op == 'DELETE'" } ]"#);
        let delete = change(Op::Delete, Some(order(7, "1.00", "DE")), None);
        let (_, out) = emitted(r.apply(&delete));
        assert_eq!(out.op, Op::Upsert);
        assert_eq!(out.before, None);
        assert_eq!(after(&out, "__op"), Avro::String("DELETE".into()));
        assert_eq!(after(&out, "__source_position"), Avro::String("42".into()));
        assert_eq!(
            after(&out, "__source_ts"),
            Avro::TimestampMicros(1_700_000_000_000_000)
        );
        assert_eq!(after(&out, "customer"), Avro::String("Ada".into()));
        assert_eq!(r.apply(&insert("1.00", "DE")), Outcome::Filtered);
    }

    #[test]
    fn output_keeps_identity_and_replays_give_the_same_outcome() {
        let r = rules(
            r#"
steps:
  - set: { total_cents: "int(math.round(row.amount * 100.0))" }
  - mask: { email: { hash: sha256 } }
  - unwrap: {}
"#,
        );
        let input = insert("3.10", "DE");
        let first = r.apply(&input);
        let (_, out) = emitted(first.clone());
        assert_eq!(out.identity(), input.identity());
        assert_eq!(out.source, input.source);
        assert_eq!(r.apply(&input), first, "replay is deterministic");
    }

    #[test]
    fn truncate_passes_unchanged() {
        let r = rules(r#"steps: [ { filter: "row.amount > 10" }, { unwrap: {} } ]"#);
        let t = change(Op::Truncate, None, None);
        assert_eq!(emitted(r.apply(&t)).1, t);
    }
}
