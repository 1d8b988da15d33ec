//! Reading a pipeline file: interpolate, parse, deserialize each part on its
//! own (so that one mistake does not hide the next), check references, and
//! report every problem with the file, line, column, key and what is valid.

use super::config::{PipelineConfig, ProcessorConfig, SinkConfig, SourceConfig};
use super::interpolate::interpolate;
use super::position::{Path, Pos, PositionIndex};
use super::registry::Role;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path as FsPath, PathBuf};

const TOP_KEYS: &[&str] = &[
    "name",
    "kafka",
    "registry",
    "sources",
    "processors",
    "sinks",
    "external_topics",
    "limits",
    "fail_fast",
    "api",
];

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    /// The key the problem is about, e.g. `sources.shop.tables[0].mode`.
    pub path: String,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct LoadError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            let at = if d.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", d.path)
            };
            writeln!(
                f,
                "error: {}:{}:{}: {at}{}",
                self.file.display(),
                d.pos.line,
                d.pos.column,
                d.message
            )?;
        }
        write!(
            f,
            "{} error(s) in {}",
            self.diagnostics.len(),
            self.file.display()
        )
    }
}

pub(super) struct Loader {
    index: PositionIndex,
    diags: Vec<Diagnostic>,
    secrets: Vec<String>,
}

impl Loader {
    fn at_key(&mut self, path: &Path, message: impl Into<String>) {
        let pos = self.index.key_pos(path);
        self.push(pos, path, message.into());
    }
    fn at_value(&mut self, path: &Path, message: impl Into<String>) {
        let pos = self.index.value_pos(path);
        self.push(pos, path, message.into());
    }
    /// Record a diagnostic. Its message *and* its path are redacted: a
    /// substituted `${VAR}` may sit in a key as well as in a value.
    fn push(&mut self, pos: Pos, path: &Path, message: String) {
        let redact = |mut text: String| {
            for s in &self.secrets {
                text = text.replace(s.as_str(), "***");
            }
            text
        };
        let diagnostic = Diagnostic {
            pos,
            path: redact(path.to_string()),
            message: redact(message),
        };
        self.diags.push(diagnostic);
    }

    /// Deserialize `value` (found at `path`) as `T`, reporting any error at
    /// the exact key serde stopped on.
    pub(super) fn de<T: DeserializeOwned>(&mut self, path: &Path, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut p = path.join_serde(e.path());
                let msg = e.inner().to_string();
                // serde reports an unknown or missing key at its parent: point at the key itself.
                if let Some(field) = between(&msg, "unknown field `", "`") {
                    p = p.key(field);
                    self.at_key(&p, explain_unknown(&msg, field));
                } else if let Some(field) = between(&msg, "missing field `", "`") {
                    self.at_key(&p, format!("missing key `{field}` (it is required here)"));
                } else {
                    self.at_value(&p, explain(&msg));
                }
                None
            }
        }
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(&s[i..i + j])
}

/// serde's "unknown field `x`, expected one of `a`, `b`" plus a suggestion.
fn explain_unknown(msg: &str, field: &str) -> String {
    let valid: Vec<&str> = msg.split('`').skip(3).step_by(2).collect();
    let base = format!(
        "unknown key `{field}`; valid keys here: {}",
        valid.join(", ")
    );
    match did_you_mean(field, valid.iter().copied()) {
        Some(s) => format!("{base} (did you mean `{s}`?)"),
        None => base,
    }
}

/// Make serde's type errors read as advice; add a suggestion for unknown variants.
fn explain(msg: &str) -> String {
    if let Some(v) = between(msg, "unknown variant `", "`") {
        let valid: Vec<&str> = msg.split('`').skip(3).step_by(2).collect();
        let base = format!(
            "`{v}` is not valid here; valid values: {}",
            valid.join(", ")
        );
        return match did_you_mean(v, valid.iter().copied()) {
            Some(s) => format!("{base} (did you mean `{s}`?)"),
            None => base,
        };
    }
    msg.split(" at line ").next().unwrap_or(msg).to_string()
}

pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Load and check a pipeline file. Reads environment variables for `${VAR}`.
pub fn load(file: &FsPath) -> Result<PipelineConfig, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|e| LoadError {
        file: file.to_path_buf(),
        diagnostics: vec![Diagnostic {
            pos: Pos { line: 1, column: 1 },
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    load_str(file, &text, |k| std::env::var(k).ok())
}

pub fn load_str(
    file: &FsPath,
    raw: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, LoadError> {
    let interp = interpolate(raw, env);
    let mut l = Loader {
        index: PositionIndex::build(&interp.text),
        diags: Vec::new(),
        secrets: interp.substituted,
    };
    let fail = |l: Loader| LoadError {
        file: file.to_path_buf(),
        diagnostics: l.diags,
    };
    for (var, line, column) in &interp.missing {
        l.push(
            Pos { line: *line, column: *column },
            &Path::default(),
            format!("environment variable `{var}` is not set; set it, or give a default: `${{{var}:-value}}`"),
        );
    }
    let root: Value = match serde_yaml::from_str(&interp.text) {
        Ok(v) => v,
        Err(e) => {
            let pos = e
                .location()
                .map(|m| Pos {
                    line: m.line(),
                    column: m.column(),
                })
                .unwrap_or(Pos { line: 1, column: 1 });
            l.push(
                pos,
                &Path::default(),
                format!("not valid YAML: {}", explain(&e.to_string())),
            );
            return Err(fail(l));
        }
    };
    let Value::Mapping(mut top) = root else {
        l.at_value(
            &Path::default(),
            format!(
                "a pipeline file is a mapping with keys {}; found {}",
                TOP_KEYS.join(", "),
                type_name(&root)
            ),
        );
        return Err(fail(l));
    };
    let root_path = Path::default();
    for key in top.keys() {
        let k = key.as_str().unwrap_or("?").to_string();
        if !TOP_KEYS.contains(&k.as_str()) {
            let hint = did_you_mean(&k, TOP_KEYS.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            l.at_key(
                &root_path.key(&k),
                format!(
                    "unknown key `{k}`; valid keys here: {}{hint}",
                    TOP_KEYS.join(", ")
                ),
            );
        }
    }
    let declared = ["sources", "processors", "sinks"]
        .iter()
        .filter(|k| matches!(top.get(**k), Some(Value::Mapping(m)) if !m.is_empty()))
        .count();
    let mut take = |k: &str| top.remove(k);
    let name = match take("name") {
        Some(Value::String(s))
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Some(s)
        }
        Some(v) => {
            l.at_value(
                &root_path.key("name"),
                format!(
                    "the pipeline name must be letters, digits, `-` or `_`; found {}",
                    describe(&v)
                ),
            );
            None
        }
        None => {
            l.at_key(
                &root_path,
                "missing key `name`: give the pipeline a name, e.g. `name: shop-sync`",
            );
            None
        }
    };
    let kafka = section(&mut l, &root_path, "kafka", take("kafka"));
    let registry = section(&mut l, &root_path, "registry", take("registry"));
    let sources = components::<SourceConfig>(&mut l, &root_path.key("sources"), take("sources"));
    let sinks = components::<SinkConfig>(&mut l, &root_path.key("sinks"), take("sinks"));
    let processors =
        components::<ProcessorConfig>(&mut l, &root_path.key("processors"), take("processors"));

    let external_topics: Vec<String> = match take("external_topics") {
        None => Vec::new(),
        Some(v) => l
            .de(&root_path.key("external_topics"), v)
            .unwrap_or_default(),
    };
    let limits = match take("limits") {
        None => Default::default(),
        Some(v) => l.de(&root_path.key("limits"), v).unwrap_or_default(),
    };
    let fail_fast = match take("fail_fast") {
        None => false,
        Some(v) => l.de(&root_path.key("fail_fast"), v).unwrap_or_default(),
    };
    let api: super::api_config::ApiConfig = match take("api") {
        None => Default::default(),
        Some(v) => {
            let path = root_path.key("api");
            let api: Option<super::api_config::ApiConfig> = l.de(&path, v);
            for issue in api.iter().flat_map(|a| a.check()) {
                l.at_key(&path.join_str(&issue.path), issue.message);
            }
            api.unwrap_or_default()
        }
    };
    check_references(&mut l, &sources, &processors, &sinks, &external_topics);
    if declared == 0 {
        l.at_key(&Path::default(), "the pipeline has no sources, processors or sinks: add at least one under `sources:`, `processors:` or `sinks:`");
    }

    if !l.diags.is_empty() {
        l.diags.sort_by_key(|d| (d.pos.line, d.pos.column));
        return Err(fail(l));
    }
    Ok(PipelineConfig {
        name: name.expect("checked"),
        kafka: kafka.expect("checked"),
        registry: registry.expect("checked"),
        sources,
        processors,
        sinks,
        external_topics,
        limits,
        fail_fast,
        api,
    })
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        other => type_name(other).to_string(),
    }
}

fn section<T: DeserializeOwned>(
    l: &mut Loader,
    root: &Path,
    key: &str,
    v: Option<Value>,
) -> Option<T> {
    match v {
        None => {
            l.at_key(
                root,
                format!("missing key `{key}` (it is required; see docs/reference.md#{key})"),
            );
            None
        }
        Some(v) => l.de(&root.key(key), v),
    }
}

/// `sources:`, `processors:` or `sinks:`: a mapping of name -> `{type: ..., settings}`.
fn components<T: Role>(l: &mut Loader, path: &Path, v: Option<Value>) -> BTreeMap<String, T> {
    let types = T::TYPES;
    let mut out = BTreeMap::new();
    let entries = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Mapping(m)) => m,
        Some(other) => {
            l.at_value(
                path,
                format!(
                    "expected a mapping of names to settings, found {}",
                    type_name(&other)
                ),
            );
            return out;
        }
    };
    for (name, body) in entries {
        let name = name.as_str().unwrap_or("?").to_string();
        let p = path.key(&name);
        let Value::Mapping(mut body) = body else {
            l.at_value(
                &p,
                format!(
                    "expected settings with a `type` (one of {}), found {}",
                    types.join(", "),
                    type_name(&body)
                ),
            );
            continue;
        };
        let ty = match body.remove("type") {
            Some(Value::String(t)) if types.contains(&t.as_str()) => t,
            Some(Value::String(t)) => {
                let hint = did_you_mean(&t, types.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                l.at_value(
                    &p.key("type"),
                    format!(
                        "unknown type `{t}`; valid types: {}{hint}",
                        types.join(", ")
                    ),
                );
                continue;
            }
            _ => {
                l.at_key(
                    &p,
                    format!("missing key `type`: one of {}", types.join(", ")),
                );
                continue;
            }
        };
        if let Some(c) = T::load(l, &p, &ty, Value::Mapping(body)) {
            for issue in c.issues() {
                let ip = p.join_str(&issue.path);
                l.at_key(&ip, issue.message);
            }
            out.insert(name, c);
        }
    }
    out
}

/// Every topic a sink or processor reads must be written by a source or a
/// processor of this file, or be listed in `external_topics`; every topic has
/// at most one writer in this file.
fn check_references(
    l: &mut Loader,
    sources: &BTreeMap<String, SourceConfig>,
    processors: &BTreeMap<String, ProcessorConfig>,
    sinks: &BTreeMap<String, SinkConfig>,
    external: &[String],
) {
    let mut writers: BTreeMap<String, String> = BTreeMap::new();
    let written = sources
        .iter()
        .map(|(n, s)| ("sources", "source", n, s.topics_out()))
        .chain(
            processors
                .iter()
                .map(|(n, p)| ("processors", "processor", n, p.topics_out())),
        );
    for (section, kind, name, topics) in written {
        for t in topics {
            if let Some(other) = writers.insert(t.clone(), format!("{kind} `{name}`")) {
                l.at_key(
                    &Path::default().key(section).key(name),
                    format!("topic `{t}` is already written by {other}; give each source and processor its own topics"),
                );
            }
        }
    }
    let known: BTreeSet<&str> = writers.keys().chain(external).map(String::as_str).collect();
    let listed = if known.is_empty() {
        "none".to_string()
    } else {
        known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let read = processors
        .iter()
        .map(|(n, p)| ("processors", "processor", "from", n, p.topics_in()))
        .chain(
            sinks
                .iter()
                .map(|(n, s)| ("sinks", "sink", "topics", n, s.topics_in())),
        );
    for (section, kind, key, name, topics) in read {
        for (i, t) in topics.iter().enumerate() {
            if !known.contains(t.as_str()) {
                let hint = did_you_mean(t, known.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                l.at_value(
                    &Path::default().key(section).key(name).key(key).index(i),
                    format!("{kind} `{name}` reads topic `{t}`, which no source or processor in this file writes and `external_topics` does not list; known topics: {listed}{hint}"),
                );
            }
        }
    }
}
