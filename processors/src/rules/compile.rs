//! From the user's steps to [`CompiledRules`]: every expression parsed, every
//! named column checked, and the output schema derived, before any change is
//! read. Whatever can be refused here is refused here, so that a change fails
//! at run time only for what depends on its values.

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::parser::Expression;
use cel::{extensions, Env, Program};
use std::fmt;
use std::sync::Arc;
use syncline_core::config::Issue;
use syncline_core::{Column, ColumnType, TableSchema};

use super::cel_value::{castable, parse_type, sql_type, type_name, TYPE_NAMES};
use super::config::{MaskConfig, SetConfig, StepConfig};

/// The names an expression can use besides comprehension variables.
pub(crate) const VARIABLES: [&str; 6] = ["row", "before", "after", "key", "op", "source"];
/// Function namespaces of the extensions (`math.round(x)` reads as the
/// function `round` on the name `math`).
const NAMESPACES: [&str; 1] = ["math"];
/// The fields of `source` in an expression.
pub(crate) const SOURCE_FIELDS: [&str; 6] =
    ["connector", "name", "db", "table", "position", "ts_us"];

/// Rules ready to run: built only by [`CompiledRules::compile`], so every
/// expression parsed and every column it names existed in the schema of its step.
pub struct CompiledRules {
    pub(crate) steps: Vec<Compiled>,
    pub(crate) output: TableSchema,
    /// The functions expressions may call; evaluation needs the same ones.
    pub(crate) env: Arc<Env>,
}

impl fmt::Debug for CompiledRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRules")
            .field("steps", &self.steps)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// CEL's standard library plus its `math` (`math.round`, `math.abs`, ...)
/// and `strings` (`lowerAscii`, `replace`, `split`, ...) extensions: all pure
/// and bounded, so evaluation stays deterministic.
fn rules_env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(extensions::math)
        .and_then(|()| env.add_extension(extensions::strings))
        .expect("the cel extensions declare no conflicting functions");
    Arc::new(env)
}

/// One step and the columns a row has when it reaches that step (to give
/// each value its type in CEL).
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) columns: Vec<Column>,
    pub(crate) step: Step,
}

/// A parsed CEL expression with its text (for failure reasons).
#[derive(Debug)]
pub(crate) struct CelExpr {
    pub(crate) text: String,
    pub(crate) program: Program,
}

#[derive(Debug)]
pub(crate) enum Step {
    Filter(CelExpr),
    /// Target column (with its final type) and expression.
    Set(Vec<(Column, CelExpr)>),
    /// (old, new).
    Rename(Vec<(String, String)>),
    Drop(Vec<String>),
    /// (column before, column after).
    Cast(Vec<(Column, Column)>),
    Mask(Vec<(String, ColumnType, MaskConfig)>),
    Route(Vec<(CelExpr, String)>),
    Unwrap {
        prefix: String,
    },
}

/// The columns `unwrap` adds after the prefix, with their types.
pub(crate) const UNWRAP_COLUMNS: [(&str, ColumnType); 5] = [
    ("op", ColumnType::Text),
    ("source_name", ColumnType::Text),
    ("source_table", ColumnType::Text),
    ("source_position", ColumnType::Text),
    ("source_ts", ColumnType::TimestampTz),
];

/// The schema as it flows through the steps.
struct Shape {
    columns: Vec<Column>,
    key: Vec<String>,
}

impl Shape {
    fn find(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// "`x` is not a column (did you mean `y`?); columns: a, b, c".
    fn unknown(&self, name: &str) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        let hint = names
            .iter()
            .filter(|n| strsim::jaro_winkler(n, name) > 0.85)
            .max_by(|a, b| strsim::jaro_winkler(a, name).total_cmp(&strsim::jaro_winkler(b, name)))
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        format!(
            "`{name}` is not a column at this step{hint}; columns: {}",
            names.join(", ")
        )
    }
}

impl CompiledRules {
    /// Compile `steps` for changes whose rows have the schema `input`. All
    /// problems are reported at once, each with its path (`steps[2].rename.customer`).
    pub fn compile(steps: &[StepConfig], input: &TableSchema) -> Result<Self, Vec<Issue>> {
        let mut shape = Shape {
            columns: input.columns.clone(),
            key: input.primary_key.clone(),
        };
        let env = rules_env();
        let mut issues = Vec::new();
        let mut compiled = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let at = |rest: &str| format!("steps[{i}].{rest}");
            let columns = shape.columns.clone();
            let step = match step {
                StepConfig::Filter(text) => {
                    expr(text, &env, &shape, at("filter"), &mut issues).map(Step::Filter)
                }
                StepConfig::Set(fields) => {
                    let mut out = Vec::new();
                    let mut added = Vec::new();
                    for (name, set) in fields.iter() {
                        let path = at(&format!("set.{name}"));
                        if shape.key.contains(name) {
                            issues.push(Issue::new(
                                path,
                                format!("`{name}` is a key column and identifies the row; set a new column instead"),
                            ));
                            continue;
                        }
                        let Some(e) = expr(set.expr(), &env, &shape, path.clone(), &mut issues)
                        else {
                            continue;
                        };
                        let Some(col) = set_column(name, set, &e, &shape, &path, &mut issues)
                        else {
                            continue;
                        };
                        if shape.find(name).is_none() {
                            added.push(col.clone());
                        }
                        out.push((col, e));
                    }
                    // Existing columns take their new type; new ones are appended.
                    for (col, _) in &out {
                        if let Some(c) = shape.columns.iter_mut().find(|c| c.name == col.name) {
                            *c = col.clone();
                        }
                    }
                    shape.columns.extend(added);
                    Some(Step::Set(out))
                }
                StepConfig::Rename(pairs) => {
                    let mut out = Vec::new();
                    for (old, new) in pairs.iter() {
                        let path = at(&format!("rename.{old}"));
                        if shape.find(old).is_none() {
                            issues.push(Issue::new(path, shape.unknown(old)));
                        } else if shape.find(new).is_some() && !pairs.iter().any(|(o, _)| o == new)
                        {
                            issues.push(Issue::new(
                                path,
                                format!("`{new}` is already a column; drop or rename it first"),
                            ));
                        } else if pairs.iter().filter(|(_, n)| *n == new).count() > 1 {
                            issues.push(Issue::new(
                                path,
                                format!("two columns are renamed to `{new}`"),
                            ));
                        } else {
                            out.push((old.clone(), new.clone()));
                        }
                    }
                    for c in shape.columns.iter_mut() {
                        if let Some((_, new)) = out.iter().find(|(o, _)| o == &c.name) {
                            c.name = new.clone();
                        }
                    }
                    for k in shape.key.iter_mut() {
                        if let Some((_, new)) = out.iter().find(|(o, _)| o == k) {
                            *k = new.clone();
                        }
                    }
                    Some(Step::Rename(out))
                }
                StepConfig::Drop(names) => {
                    let mut out = Vec::new();
                    for (j, name) in names.iter().enumerate() {
                        let path = at(&format!("drop[{j}]"));
                        if shape.find(name).is_none() {
                            issues.push(Issue::new(path, shape.unknown(name)));
                        } else if shape.key.contains(name) {
                            issues.push(Issue::new(
                                path,
                                format!("`{name}` is a key column; a change without its key cannot reach a row"),
                            ));
                        } else {
                            out.push(name.clone());
                        }
                    }
                    shape.columns.retain(|c| !out.contains(&c.name));
                    Some(Step::Drop(out))
                }
                StepConfig::Cast(pairs) => {
                    let mut out = Vec::new();
                    for (name, ty) in pairs.iter() {
                        let path = at(&format!("cast.{name}"));
                        let Some(from) = shape.find(name) else {
                            issues.push(Issue::new(path, shape.unknown(name)));
                            continue;
                        };
                        let Some(to_ty) = parse_type(ty) else {
                            issues.push(Issue::new(
                                path,
                                format!("`{ty}` is not a type; types: {TYPE_NAMES}"),
                            ));
                            continue;
                        };
                        if !castable(&from.ty, &to_ty) {
                            issues.push(Issue::new(
                                path,
                                format!(
                                    "a {} column cannot become {}; cast to text first, or compute it with `set`",
                                    type_name(&from.ty),
                                    type_name(&to_ty)
                                ),
                            ));
                            continue;
                        }
                        let to = Column {
                            sql_type: sql_type(&to_ty),
                            ty: to_ty,
                            ..from.clone()
                        };
                        out.push((from.clone(), to));
                    }
                    for (_, to) in &out {
                        if let Some(c) = shape.columns.iter_mut().find(|c| c.name == to.name) {
                            *c = to.clone();
                        }
                    }
                    Some(Step::Cast(out))
                }
                StepConfig::Mask(fields) => {
                    let mut out = Vec::new();
                    for (name, mask) in fields.iter() {
                        let path = at(&format!("mask.{name}"));
                        let Some(col) = shape.find(name) else {
                            issues.push(Issue::new(path, shape.unknown(name)));
                            continue;
                        };
                        if shape.key.contains(name) && !matches!(mask, MaskConfig::Hash(_)) {
                            issues.push(Issue::new(
                                path,
                                format!("`{name}` is a key column: only `hash` keeps distinct rows distinct"),
                            ));
                            continue;
                        }
                        out.push((name.clone(), col.ty.clone(), mask.clone()));
                    }
                    for c in shape.columns.iter_mut() {
                        if out.iter().any(|(n, _, _)| n == &c.name) {
                            c.ty = ColumnType::Text;
                            c.sql_type = sql_type(&ColumnType::Text);
                        }
                    }
                    Some(Step::Mask(out))
                }
                StepConfig::Route(rules) => {
                    let mut out = Vec::new();
                    for (j, rule) in rules.iter().enumerate() {
                        if rule.topic.trim().is_empty() {
                            issues
                                .push(Issue::new(at(&format!("route[{j}].topic")), "name a topic"));
                        }
                        if let Some(e) = expr(
                            &rule.when,
                            &env,
                            &shape,
                            at(&format!("route[{j}].when")),
                            &mut issues,
                        ) {
                            out.push((e, rule.topic.clone()));
                        }
                    }
                    Some(Step::Route(out))
                }
                StepConfig::Unwrap(cfg) => {
                    for (name, ty) in &UNWRAP_COLUMNS {
                        let full = format!("{}{name}", cfg.prefix);
                        if shape.find(&full).is_some() {
                            issues.push(Issue::new(
                                at("unwrap.prefix"),
                                format!("`{full}` is already a column; choose another `prefix`"),
                            ));
                        }
                        shape.columns.push(Column {
                            nullable: *name == "source_ts",
                            sql_type: sql_type(ty),
                            ty: ty.clone(),
                            name: full,
                        });
                    }
                    Some(Step::Unwrap {
                        prefix: cfg.prefix.clone(),
                    })
                }
            };
            if let Some(step) = step {
                compiled.push(Compiled { columns, step });
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(CompiledRules {
            steps: compiled,
            output: TableSchema {
                columns: shape.columns,
                primary_key: shape.key,
                ..input.clone()
            },
            env,
        })
    }

    /// The schema of the rows the rules emit: to register for the output topic.
    pub fn output_schema(&self) -> &TableSchema {
        &self.output
    }
}

/// Parse one expression and check the names it uses.
fn expr(
    text: &str,
    env: &Env,
    shape: &Shape,
    path: String,
    issues: &mut Vec<Issue>,
) -> Option<CelExpr> {
    let program = match env.compile(text) {
        Ok(p) => p,
        Err(e) => {
            issues.push(Issue::new(path, format!("not a valid CEL expression: {e}")));
            return None;
        }
    };
    let mut bound = Vec::new();
    comprehension_vars(program.expression(), &mut bound);
    let before = issues.len();
    check_names(program.expression(), shape, &bound, &path, issues);
    (issues.len() == before).then(|| CelExpr {
        text: text.to_string(),
        program,
    })
}

fn comprehension_vars(e: &Expression, out: &mut Vec<String>) {
    walk(e, &mut |e| {
        if let Expr::Comprehension(c) = &e.expr {
            out.push(c.iter_var.clone());
            out.extend(c.iter_var2.clone());
            out.push(c.accu_var.clone());
        }
    });
}

fn walk(e: &Expression, f: &mut impl FnMut(&Expression)) {
    f(e);
    match &e.expr {
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, f);
            }
            c.args.iter().for_each(|a| walk(a, f));
        }
        Expr::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(e, f);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|a| walk(a, f)),
        Expr::Map(m) => m.entries.iter().for_each(|en| {
            if let EntryExpr::MapEntry(me) = &en.expr {
                walk(&me.key, f);
                walk(&me.value, f);
            }
        }),
        Expr::Select(s) => walk(&s.operand, f),
        Expr::Struct(s) => s.entries.iter().for_each(|en| {
            if let EntryExpr::StructField(sf) = &en.expr {
                walk(&sf.value, f);
            }
        }),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Unknown variables, and `row.x` / `key.x` / `source.x` naming a field that
/// does not exist at this step.
fn check_names(
    e: &Expression,
    shape: &Shape,
    bound: &[String],
    path: &str,
    issues: &mut Vec<Issue>,
) {
    walk(e, &mut |e| match &e.expr {
        // Maps iterate in hash order, which changes from one process to the
        // next: a `row.map(c, ...)` would break replay determinism.
        Expr::Comprehension(c) => {
            if let Expr::Ident(name) = &c.iter_range.expr {
                if ["row", "before", "after", "key", "source"].contains(&name.as_str()) {
                    issues.push(Issue::new(
                        path,
                        format!("iterating `{name}` has no fixed order, so replays could differ; name the columns instead"),
                    ));
                }
            }
        }
        Expr::Ident(name)
            if !VARIABLES.contains(&name.as_str())
                && !NAMESPACES.contains(&name.as_str())
                && !bound.contains(name) =>
        {
            issues.push(Issue::new(
                path,
                format!(
                    "unknown name `{name}`; an expression can use {}",
                    VARIABLES.join(", ")
                ),
            ));
        }
        Expr::Select(s) => {
            let Expr::Ident(root) = &s.operand.expr else {
                return;
            };
            if bound.contains(root) {
                return;
            }
            let field = &s.field;
            match root.as_str() {
                "row" | "before" | "after" if shape.find(field).is_none() => {
                    issues.push(Issue::new(path, shape.unknown(field)));
                }
                "key" if !shape.key.contains(field) => issues.push(Issue::new(
                    path,
                    format!(
                        "`{field}` is not a key column; key columns: {}",
                        shape.key.join(", ")
                    ),
                )),
                "source" if !SOURCE_FIELDS.contains(&field.as_str()) => issues.push(Issue::new(
                    path,
                    format!(
                        "`source` has no field `{field}`; fields: {}",
                        SOURCE_FIELDS.join(", ")
                    ),
                )),
                _ => {}
            }
        }
        _ => {}
    });
}

/// The column a `set` writes: its type is the one given, else the existing
/// column's, else inferred from the expression.
fn set_column(
    name: &str,
    set: &SetConfig,
    e: &CelExpr,
    shape: &Shape,
    path: &str,
    issues: &mut Vec<Issue>,
) -> Option<Column> {
    let (given, nullable) = match set {
        SetConfig::Expr(_) => (None, None),
        SetConfig::Typed(t) => (t.ty.as_deref(), t.nullable),
    };
    let existing = shape.find(name);
    let ty = match given {
        Some(g) => match parse_type(g) {
            Some(t) => t,
            None => {
                issues.push(Issue::new(
                    path,
                    format!("`{g}` is not a type; types: {TYPE_NAMES}"),
                ));
                return None;
            }
        },
        None => match existing
            .map(|c| c.ty.clone())
            .or_else(|| infer(e.program.expression(), shape))
        {
            Some(t) => t,
            None => {
                issues.push(Issue::new(
                    path,
                    format!(
                        "cannot infer the type of `{}`; write `{name}: {{ expr: \"...\", type: long }}` (types: {TYPE_NAMES})",
                        e.text
                    ),
                ));
                return None;
            }
        },
    };
    Some(Column {
        name: name.to_string(),
        nullable: nullable.unwrap_or(existing.map(|c| c.nullable).unwrap_or(true)),
        // A computed text keeps no `varchar(n)` or `char(n)` of its column's
        // source: a target of the source's type could not hold a longer value.
        sql_type: match existing {
            Some(c) if c.ty == ty && ty != ColumnType::Text => c.sql_type.clone(),
            _ => sql_type(&ty),
        },
        ty,
    })
}

/// The column type of an expression's result, when it is plain from the
/// expression: literals, columns, conversions, comparisons, and arithmetic
/// on operands of one kind. `None` asks the user for `type:`.
fn infer(e: &Expression, shape: &Shape) -> Option<ColumnType> {
    use ColumnType::*;
    // The type CEL computes in: arithmetic on a decimal gives a double.
    let kind = |t: ColumnType| match t {
        Int | Long => Long,
        Float | Double | Decimal { .. } | NumericText => Double,
        Json | Uuid => Text,
        Date | Timestamp => TimestampTz,
        other => other,
    };
    match &e.expr {
        Expr::Literal(l) => match l {
            LiteralValue::Int(_) | LiteralValue::UInt(_) => Some(Long),
            LiteralValue::Double(_) => Some(Double),
            LiteralValue::String(_) => Some(Text),
            LiteralValue::Boolean(_) => Some(Bool),
            LiteralValue::Bytes(_) => Some(Bytes),
            LiteralValue::Null => None,
        },
        Expr::Ident(n) if n == "op" => Some(Text),
        Expr::Select(s) if s.test => Some(Bool),
        Expr::Select(s) => match &s.operand.expr {
            Expr::Ident(r) if matches!(r.as_str(), "row" | "before" | "after" | "key") => {
                shape.find(&s.field).map(|c| c.ty.clone())
            }
            Expr::Ident(r) if r == "source" => Some(if s.field == "ts_us" { Long } else { Text }),
            _ => None,
        },
        Expr::Call(c) => {
            let arg = |i: usize| c.args.get(i).and_then(|a| infer(a, shape)).map(kind);
            let name = match c.target.as_deref().map(|t| &t.expr) {
                Some(Expr::Ident(ns)) if NAMESPACES.contains(&ns.as_str()) => {
                    format!("{ns}.{}", c.func_name)
                }
                _ => c.func_name.clone(),
            };
            match name.as_str() {
                "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "_&&_" | "_||_" | "!_"
                | "@in" | "contains" | "startsWith" | "endsWith" | "matches" => Some(Bool),
                "int" | "uint" | "size" => Some(Long),
                "double" | "math.round" | "math.ceil" | "math.floor" | "math.trunc" => Some(Double),
                "string" => Some(Text),
                "bool" => Some(Bool),
                "bytes" => Some(Bytes),
                "timestamp" => Some(TimestampTz),
                "-_" => arg(0).filter(|t| matches!(t, Long | Double)),
                "_+_" | "_-_" | "_*_" | "_/_" | "_%_" => {
                    let (a, b) = (arg(0)?, arg(1)?);
                    match (&a, &b, name.as_str()) {
                        (Long, Long, _) | (Double, Double, _) => Some(a),
                        (Text, Text, "_+_") => Some(Text),
                        (TimestampTz, _, "_+_" | "_-_") if b != TimestampTz => Some(TimestampTz),
                        _ => None,
                    }
                }
                "_?_:_" => {
                    let is_null = |i: usize| {
                        matches!(
                            c.args.get(i).map(|a| &a.expr),
                            Some(Expr::Literal(LiteralValue::Null))
                        )
                    };
                    match (arg(1), arg(2)) {
                        (Some(a), Some(b)) if a == b => Some(a),
                        (Some(a), None) if is_null(2) => Some(a),
                        (None, Some(b)) if is_null(1) => Some(b),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A table every test of the rules uses: orders keyed by `id`.
#[cfg(test)]
pub(crate) fn orders_schema() -> TableSchema {
    let col = |name: &str, ty: ColumnType, nullable: bool| Column {
        name: name.into(),
        sql_type: sql_type(&ty),
        ty,
        nullable,
    };
    TableSchema {
        namespace: "syncline.shop".into(),
        name: "orders".into(),
        columns: vec![
            col("id", ColumnType::Long, false),
            col("customer", ColumnType::Text, true),
            col(
                "amount",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                true,
            ),
            col("qty", ColumnType::Int, true),
            col("email", ColumnType::Text, true),
            col("country", ColumnType::Text, true),
            col("internal_notes", ColumnType::Text, true),
        ],
        primary_key: vec!["id".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RulesConfig;

    fn compile(yaml: &str) -> Result<CompiledRules, Vec<Issue>> {
        let cfg: RulesConfig = serde_yaml::from_str(yaml).expect("valid YAML");
        cfg.compile(&orders_schema())
    }

    fn issues(yaml: &str) -> Vec<(String, String)> {
        compile(yaml)
            .expect_err("should not compile")
            .into_iter()
            .map(|i| (i.path, i.message))
            .collect()
    }

    #[test]
    fn output_schema_follows_the_steps() {
        let rules = compile(
            r#"
steps:
  - set: { total_cents: "int(row.amount * 100)", big: "row.amount > 100.0", label: { expr: "row.customer", type: text, nullable: false } }
  - rename: { customer: customer_name, id: order_id }
  - drop: [internal_notes]
  - cast: { qty: long }
  - mask: { email: { hash: sha256 } }
  - unwrap: {}
"#,
        )
        .unwrap();
        let out = rules.output_schema();
        let names: Vec<_> = out.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "order_id",
                "customer_name",
                "amount",
                "qty",
                "email",
                "country",
                "total_cents",
                "big",
                "label",
                "__op",
                "__source_name",
                "__source_table",
                "__source_position",
                "__source_ts"
            ]
        );
        let ty = |n: &str| out.columns.iter().find(|c| c.name == n).unwrap();
        assert_eq!(ty("total_cents").ty, ColumnType::Long);
        assert_eq!(ty("big").ty, ColumnType::Bool);
        assert!(!ty("label").nullable);
        assert_eq!(ty("qty").ty, ColumnType::Long);
        assert_eq!(ty("qty").sql_type, "bigint");
        assert_eq!(ty("email").ty, ColumnType::Text);
        assert_eq!(
            out.primary_key,
            ["order_id"],
            "a renamed key is renamed in the key"
        );
        assert!(
            out.value_schema().is_ok(),
            "the derived schema is valid Avro"
        );
    }

    #[test]
    fn unknown_columns_are_named_with_the_step_and_what_exists() {
        let found = issues(
            r#"
steps:
  - filter: "row.amuont > 10"
  - rename: { custmer: customer_name }
  - drop: [nope]
  - cast: { qty: integer }
  - mask: { mail: { redact: "***" } }
"#,
        );
        assert_eq!(found.len(), 5, "{found:#?}");
        assert_eq!(found[0].0, "steps[0].filter");
        assert!(
            found[0].1.contains("did you mean `amount`"),
            "{}",
            found[0].1
        );
        assert_eq!(found[1].0, "steps[1].rename.custmer");
        assert!(
            found[1].1.contains("columns: id, customer, amount"),
            "{}",
            found[1].1
        );
        assert_eq!(found[2].0, "steps[2].drop[0]");
        assert_eq!(found[3].0, "steps[3].cast.qty");
        assert!(found[3].1.contains("types: int, long"), "{}", found[3].1);
        assert_eq!(found[4].0, "steps[4].mask.mail");
    }

    #[test]
    fn a_column_is_checked_against_the_schema_of_its_step() {
        let found = issues(
            r#"
steps:
  - rename: { customer: customer_name }
  - filter: "row.customer == 'x'"
"#,
        );
        assert_eq!(found[0].0, "steps[1].filter");
        assert!(
            found[0].1.contains("`customer` is not a column"),
            "{}",
            found[0].1
        );
    }

    #[test]
    fn bad_expressions_and_names_are_refused() {
        let found = issues(
            r#"
steps:
  - filter: "row.amount >"
  - route: [ { when: "rows.country == 'DE'", topic: orders.de } ]
  - set: { x: "source.partition" }
"#,
        );
        assert_eq!(found[0].0, "steps[0].filter");
        assert!(
            found[0].1.contains("not a valid CEL expression"),
            "{}",
            found[0].1
        );
        assert_eq!(found[1].0, "steps[1].route[0].when");
        assert!(found[1].1.contains("unknown name `rows`"), "{}", found[1].1);
        assert_eq!(found[2].0, "steps[2].set.x");
        assert!(found[2].1.contains("fields: connector"), "{}", found[2].1);
    }

    #[test]
    fn comprehension_variables_are_not_unknown_names() {
        compile(r#"steps: [ { filter: "[1, 2].exists(x, x == row.qty)" } ]"#).unwrap();
    }

    #[test]
    fn iterating_a_row_is_refused_for_determinism() {
        let found = issues(r#"steps: [ { filter: "row.exists(c, c == 'x')" } ]"#);
        assert!(found[0].1.contains("no fixed order"), "{found:?}");
    }

    #[test]
    fn unwrap_columns_must_not_clash() {
        let found = issues(r#"steps: [ { set: { __op: "'x'" } }, { unwrap: {} } ]"#);
        assert_eq!(found[0].0, "steps[1].unwrap.prefix");
        compile(r#"steps: [ { set: { __op: "'x'" } }, { unwrap: { prefix: meta_ } } ]"#).unwrap();
    }

    #[test]
    fn types_are_inferred_from_plain_expressions() {
        let rules = compile(
            r#"
steps:
  - set:
      a: "int(math.round(row.amount * 100.0))"
      b: "math.round(row.amount)"
      c: "row.customer + '/' + row.country"
      d: "row.qty > 1 ? row.qty : null"
      e: "row.amount"
      f: "source.ts_us"
"#,
        )
        .unwrap();
        let ty = |n: &str| {
            let c = rules
                .output_schema()
                .columns
                .iter()
                .find(|c| c.name == n)
                .unwrap();
            c.ty.clone()
        };
        assert_eq!(ty("a"), ColumnType::Long);
        assert_eq!(ty("b"), ColumnType::Double);
        assert_eq!(ty("c"), ColumnType::Text);
        assert_eq!(ty("d"), ColumnType::Long, "CEL computes in int (64 bits)");
        assert_eq!(
            ty("e"),
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(ty("f"), ColumnType::Long);
    }

    #[test]
    fn untyped_new_column_needs_a_type_when_not_inferable() {
        let found = issues(r#"steps: [ { set: { x: "row.qty > 1 ? 1 : 2.5" } } ]"#);
        assert_eq!(found[0].0, "steps[0].set.x");
        assert!(found[0].1.contains("type: long"), "{}", found[0].1);
        compile(r#"steps: [ { set: { x: { expr: "row.qty > 1 ? 1 : 2.5", type: double } } } ]"#)
            .unwrap();
    }

    #[test]
    fn key_columns_are_protected() {
        let found = issues(
            r#"
steps:
  - drop: [id]
  - set: { id: "1" }
  - mask: { id: { redact: "x" } }
  - cast: { qty: bool }
  - rename: { qty: email }
"#,
        );
        let paths: Vec<_> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "steps[0].drop[0]",
                "steps[1].set.id",
                "steps[2].mask.id",
                "steps[3].cast.qty",
                "steps[4].rename.qty"
            ]
        );
        compile(r#"steps: [ { mask: { id: { hash: sha256 } } } ]"#).unwrap();
        compile(r#"steps: [ { rename: { qty: email, email: qty } } ]"#).expect("a swap is fine");
        let found = issues(r#"steps: [ { rename: { qty: x, email: x } } ]"#);
        assert!(
            found[0].1.contains("two columns are renamed to `x`"),
            "{found:?}"
        );
    }
}
