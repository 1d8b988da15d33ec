//! The registry's state machine: schema ids, subjects and their versions, and
//! compatibility levels. It changes only by [`State::apply`]ing a [`Command`],
//! and it is pure (no I/O, no clock, no randomness), so every instance that
//! applies the same log in the same order holds the same state and returns
//! the same outcome for every command: the same ids, the same versions, the
//! same rejections.
//!
//! Rules, chosen to match Confluent Schema Registry:
//! - A schema's id is global: the same schema (by [`Candidate::canonical`])
//!   gets the same id in every subject. Ids start at 1, are handed out in log
//!   order and are never reused for another schema, even after a hard delete.
//! - Registering a schema that is a live version of the subject returns that
//!   version and adds nothing. Otherwise the schema must pass the subject's
//!   compatibility level against its live versions, and becomes version
//!   `highest version still stored + 1` (soft-deleted versions count, hard-deleted
//!   ones do not).
//! - Soft delete hides a version; a hard (`permanent`) delete removes it and
//!   requires a soft delete first. Soft-deleting a subject also drops its
//!   compatibility level.
//! - A schema id stays resolvable while any version, live or soft-deleted,
//!   uses it: consumers must decode old records.

use crate::compat::{self, Level};
use crate::schema::Candidate;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// A change to the registry, as written to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Register `schema` (Avro text, as sent) under `subject`.
    Register { subject: String, schema: String },
    /// Delete every version of `subject`.
    DeleteSubject { subject: String, permanent: bool },
    /// Delete one version of `subject`.
    DeleteVersion {
        subject: String,
        version: VersionRef,
        permanent: bool,
    },
    /// Set (`Some`) or clear (`None`) the level of `subject`, or the global
    /// level when `subject` is `None`.
    SetCompatibility {
        subject: Option<String>,
        level: Option<Level>,
    },
}

impl Command {
    /// The command's name, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Register { .. } => "register",
            Command::DeleteSubject { .. } => "delete_subject",
            Command::DeleteVersion { .. } => "delete_version",
            Command::SetCompatibility { .. } => "set_compatibility",
        }
    }

    /// The subject the command changes, if any (`None`: the global level).
    pub fn subject(&self) -> Option<&str> {
        match self {
            Command::Register { subject, .. }
            | Command::DeleteSubject { subject, .. }
            | Command::DeleteVersion { subject, .. } => Some(subject),
            Command::SetCompatibility { subject, .. } => subject.as_deref(),
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The schema's id and its version in the subject (new or existing).
    Registered { id: u32, version: u32 },
    /// The versions a subject delete removed or hid.
    DeletedSubject(Vec<u32>),
    /// The version a version delete removed or hid.
    DeletedVersion(u32),
    /// The level in force before (for a subject: its own level, if any).
    Compatibility { previous: Option<Level> },
}

/// A version as a client names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl FromStr for VersionRef {
    type Err = Rejection;

    /// `latest`, `-1` (Confluent's alias for latest) or 1..=2^31-1.
    fn from_str(s: &str) -> Result<Self, Rejection> {
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionRef::Number(n)),
            _ => Err(Rejection::InvalidVersion(s.to_string())),
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Latest => f.write_str("latest"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Why a request or command was refused. Each maps to one Confluent error code
/// (see `api.rs`); the messages are Confluent's where clients might show them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found.")]
    VersionNotFound {
        subject: String,
        version: VersionRef,
    },
    /// With the id when the request named one.
    #[error("{}", schema_not_found(.0))]
    SchemaNotFound(Option<u32>),
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted { subject: String, version: u32 },
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted { subject: String, version: u32 },
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    #[error("{0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        .problems.join(", ")
    )]
    Incompatible {
        subject: String,
        problems: Vec<String>,
    },
}

fn schema_not_found(id: &Option<u32>) -> String {
    match id {
        Some(id) => format!("Schema {id} not found"),
        None => "Schema not found".into(),
    }
}

impl Rejection {
    /// A "does not exist (here, yet)" answer: another instance may have just
    /// written it, so the caller may catch up with the log and ask again.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Rejection::SubjectNotFound(_)
                | Rejection::VersionNotFound { .. }
                | Rejection::SchemaNotFound(_)
        )
    }
}

/// One version of a subject, as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView<'a> {
    pub subject: &'a str,
    pub version: u32,
    pub id: u32,
    pub schema: &'a str,
}

/// What a compatibility test compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    /// One version (non-transitive, whatever the level says).
    Version(VersionRef),
    /// The live versions the level says (all of them when transitive).
    Level,
}

#[derive(Debug)]
struct StoredSchema {
    /// The text of the first registration with this identity.
    text: String,
    parsed: Schema,
}

#[derive(Debug)]
struct Version {
    id: u32,
    /// The text as registered for this version.
    text: String,
    deleted: bool,
}

/// The whole registry, rebuilt from the log on start.
#[derive(Debug, Default)]
pub struct State {
    /// Schema `id` is at index `id - 1`.
    schemas: Vec<StoredSchema>,
    ids: HashMap<String, u32>,
    /// Subjects with at least one stored (live or soft-deleted) version.
    subjects: BTreeMap<String, BTreeMap<u32, Version>>,
    global_level: Option<Level>,
    subject_levels: BTreeMap<String, Level>,
}

impl State {
    /// Apply one command from the log. Deterministic: the outcome depends only
    /// on the state and the command.
    pub fn apply(&mut self, command: &Command) -> Result<Applied, Rejection> {
        match command {
            Command::Register { subject, schema } => self.register(subject, schema),
            Command::DeleteSubject { subject, permanent } => {
                self.delete_subject(subject, *permanent)
            }
            Command::DeleteVersion {
                subject,
                version,
                permanent,
            } => self.delete_version(subject, *version, *permanent),
            Command::SetCompatibility {
                subject: None,
                level,
            } => {
                let previous = std::mem::replace(&mut self.global_level, *level);
                Ok(Applied::Compatibility {
                    previous: Some(previous.unwrap_or(Level::DEFAULT)),
                })
            }
            Command::SetCompatibility {
                subject: Some(subject),
                level: Some(level),
            } => {
                let previous = self.subject_levels.insert(subject.clone(), *level);
                Ok(Applied::Compatibility { previous })
            }
            Command::SetCompatibility {
                subject: Some(subject),
                level: None,
            } => match self.subject_levels.remove(subject) {
                Some(previous) => Ok(Applied::Compatibility {
                    previous: Some(previous),
                }),
                None if !self.subjects.contains_key(subject) => {
                    Err(Rejection::SubjectNotFound(subject.clone()))
                }
                None => Err(Rejection::SubjectCompatibilityNotConfigured(
                    subject.clone(),
                )),
            },
        }
    }

    fn register(&mut self, subject: &str, text: &str) -> Result<Applied, Rejection> {
        let candidate = Candidate::parse(text)?;
        if let Some((id, version)) = self.live_registration(subject, &candidate) {
            return Ok(Applied::Registered { id, version });
        }
        let problems = self.check(subject, &candidate, Against::Level)?;
        if !problems.is_empty() {
            return Err(Rejection::Incompatible {
                subject: subject.to_string(),
                problems,
            });
        }
        let id = match self.ids.get(&candidate.canonical) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.schemas.len() + 1).expect("fewer than 2^32 schemas");
                self.ids.insert(candidate.canonical.clone(), id);
                self.schemas.push(StoredSchema {
                    text: candidate.text.clone(),
                    parsed: candidate.parsed,
                });
                id
            }
        };
        let versions = self.subjects.entry(subject.to_string()).or_default();
        let version = versions.keys().next_back().map_or(1, |v| v + 1);
        versions.insert(
            version,
            Version {
                id,
                text: candidate.text,
                deleted: false,
            },
        );
        Ok(Applied::Registered { id, version })
    }

    fn delete_subject(&mut self, subject: &str, permanent: bool) -> Result<Applied, Rejection> {
        let versions = self
            .subjects
            .get_mut(subject)
            .ok_or_else(|| Rejection::SubjectNotFound(subject.into()))?;
        let any_live = versions.values().any(|v| !v.deleted);
        if permanent {
            if any_live {
                return Err(Rejection::SubjectNotSoftDeleted(subject.into()));
            }
            let removed = versions.keys().copied().collect();
            self.subjects.remove(subject);
            return Ok(Applied::DeletedSubject(removed));
        }
        if !any_live {
            return Err(Rejection::SubjectSoftDeleted(subject.into()));
        }
        let mut hidden = Vec::new();
        for (&n, v) in versions.iter_mut().filter(|(_, v)| !v.deleted) {
            v.deleted = true;
            hidden.push(n);
        }
        self.subject_levels.remove(subject);
        Ok(Applied::DeletedSubject(hidden))
    }

    fn delete_version(
        &mut self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<Applied, Rejection> {
        let versions = self
            .subjects
            .get_mut(subject)
            .ok_or_else(|| Rejection::SubjectNotFound(subject.into()))?;
        if !permanent && versions.values().all(|v| v.deleted) {
            return Err(Rejection::SubjectNotFound(subject.into()));
        }
        let n = match version {
            VersionRef::Number(n) => n,
            // Soft delete of `latest` hides the newest live version; a hard
            // delete of `latest` removes the newest stored one.
            VersionRef::Latest => versions
                .iter()
                .rev()
                .find(|(_, v)| permanent || !v.deleted)
                .map(|(&n, _)| n)
                .ok_or_else(|| Rejection::VersionNotFound {
                    subject: subject.into(),
                    version,
                })?,
        };
        let v = versions
            .get_mut(&n)
            .ok_or_else(|| Rejection::VersionNotFound {
                subject: subject.into(),
                version,
            })?;
        match (permanent, v.deleted) {
            (false, true) => Err(Rejection::VersionSoftDeleted {
                subject: subject.into(),
                version: n,
            }),
            (false, false) => {
                v.deleted = true;
                Ok(Applied::DeletedVersion(n))
            }
            (true, false) => Err(Rejection::VersionNotSoftDeleted {
                subject: subject.into(),
                version: n,
            }),
            (true, true) => {
                versions.remove(&n);
                if versions.is_empty() {
                    self.subjects.remove(subject);
                }
                Ok(Applied::DeletedVersion(n))
            }
        }
    }

    /// The id and version of `candidate` if it is a live version of `subject`:
    /// registering it again changes nothing, so writers may answer from here.
    pub fn live_registration(&self, subject: &str, candidate: &Candidate) -> Option<(u32, u32)> {
        let id = *self.ids.get(&candidate.canonical)?;
        let versions = self.subjects.get(subject)?;
        versions
            .iter()
            .rev()
            .find(|(_, v)| !v.deleted && v.id == id)
            .map(|(&n, _)| (id, n))
    }

    /// Subjects with a live version (`deleted`: or only soft-deleted ones).
    pub fn subjects(&self, deleted: bool) -> Vec<&str> {
        self.subjects
            .iter()
            .filter(|(_, versions)| deleted || versions.values().any(|v| !v.deleted))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// The version numbers of `subject`, oldest first.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, Rejection> {
        let found: Vec<u32> = self.visible(subject, deleted).map(|(&n, _)| n).collect();
        if found.is_empty() {
            return Err(Rejection::SubjectNotFound(subject.into()));
        }
        Ok(found)
    }

    /// One version of `subject`.
    pub fn version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<VersionView<'_>, Rejection> {
        let (name, mut visible) = self.visible_named(subject, deleted)?;
        let (&n, v) = match version {
            VersionRef::Latest => visible.next_back(),
            VersionRef::Number(n) => visible.find(|(&k, _)| k == n),
        }
        .ok_or_else(|| Rejection::VersionNotFound {
            subject: subject.into(),
            version,
        })?;
        Ok(VersionView {
            subject: name,
            version: n,
            id: v.id,
            schema: &v.text,
        })
    }

    /// The version of `subject` whose schema is `candidate` (the newest, if
    /// several are).
    pub fn lookup(
        &self,
        subject: &str,
        candidate: &Candidate,
        deleted: bool,
    ) -> Result<VersionView<'_>, Rejection> {
        let (name, mut visible) = self.visible_named(subject, deleted)?;
        let id = self.ids.get(&candidate.canonical);
        visible
            .rfind(|(_, v)| Some(&v.id) == id)
            .map(|(&n, v)| VersionView {
                subject: name,
                version: n,
                id: v.id,
                schema: &v.text,
            })
            .ok_or(Rejection::SchemaNotFound(None))
    }

    /// The schema text of `id`, while some version (live or soft-deleted)
    /// uses it; with `subject`, only if one of that subject's versions does.
    pub fn schema_by_id(&self, id: u32, subject: Option<&str>) -> Result<&str, Rejection> {
        let stored = self.stored(id)?;
        let used = match subject {
            Some(s) => self
                .subjects
                .get(s)
                .is_some_and(|vs| vs.values().any(|v| v.id == id)),
            None => self
                .subjects
                .values()
                .flat_map(|vs| vs.values())
                .any(|v| v.id == id),
        };
        if !used {
            return Err(Rejection::SchemaNotFound(Some(id)));
        }
        Ok(&stored.text)
    }

    /// The `(subject, version)` pairs that use schema `id`.
    pub fn subject_versions_of(
        &self,
        id: u32,
        deleted: bool,
    ) -> Result<Vec<(&str, u32)>, Rejection> {
        self.stored(id)?;
        let found: Vec<(&str, u32)> = self
            .subjects
            .iter()
            .flat_map(|(s, vs)| vs.iter().map(move |(&n, v)| (s.as_str(), n, v)))
            .filter(|(_, _, v)| v.id == id && (deleted || !v.deleted))
            .map(|(s, n, _)| (s, n))
            .collect();
        if found.is_empty() {
            return Err(Rejection::SchemaNotFound(Some(id)));
        }
        Ok(found)
    }

    /// The level of `subject` (its own, or with `default_to_global` the
    /// global one when it has none), or the global level when `subject` is `None`.
    pub fn compatibility(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Level, Rejection> {
        let global = self.global_level.unwrap_or(Level::DEFAULT);
        match subject {
            None => Ok(global),
            Some(s) => match self.subject_levels.get(s) {
                Some(&level) => Ok(level),
                None if default_to_global => Ok(global),
                None => Err(Rejection::SubjectCompatibilityNotConfigured(s.into())),
            },
        }
    }

    /// Why `candidate` may not follow `subject`'s versions: empty when it may.
    pub fn check(
        &self,
        subject: &str,
        candidate: &Candidate,
        against: Against,
    ) -> Result<Vec<String>, Rejection> {
        let level = self.compatibility(Some(subject), true)?;
        let previous: Vec<(u32, &Schema)> = match against {
            Against::Level => self
                .visible(subject, false)
                .map(|(&n, v)| (n, self.parsed(v.id)))
                .collect(),
            Against::Version(r) => {
                let v = self.version(subject, r, false)?;
                vec![(v.version, self.parsed(v.id))]
            }
        };
        Ok(compat::check(level, &candidate.parsed, &previous))
    }

    fn visible<'a>(
        &'a self,
        subject: &str,
        deleted: bool,
    ) -> impl DoubleEndedIterator<Item = (&'a u32, &'a Version)> {
        self.subjects
            .get(subject)
            .into_iter()
            .flat_map(|vs| vs.iter())
            .filter(move |(_, v)| deleted || !v.deleted)
    }

    /// The subject's stored name and its visible versions, or 40401 when it has none.
    fn visible_named<'a>(
        &'a self,
        subject: &str,
        deleted: bool,
    ) -> Result<
        (
            &'a str,
            impl DoubleEndedIterator<Item = (&'a u32, &'a Version)>,
        ),
        Rejection,
    > {
        let (name, versions) = self
            .subjects
            .get_key_value(subject)
            .ok_or_else(|| Rejection::SubjectNotFound(subject.into()))?;
        let mut visible = versions
            .iter()
            .filter(move |(_, v)| deleted || !v.deleted)
            .peekable();
        if visible.peek().is_none() {
            return Err(Rejection::SubjectNotFound(subject.into()));
        }
        Ok((name.as_str(), visible))
    }

    fn stored(&self, id: u32) -> Result<&StoredSchema, Rejection> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.schemas.get(i))
            .ok_or(Rejection::SchemaNotFound(Some(id)))
    }

    fn parsed(&self, id: u32) -> &Schema {
        &self.schemas[id as usize - 1].parsed
    }
}

/// The whole state as data, for the log's checkpoints (`store.rs`): what
/// replaying every command up to a point built, so that a restart reads the
/// checkpoint and the commands after it instead of the whole history.
/// Parsed schemas and the identity index are rebuilt on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Schema texts by id (id `i + 1` at index `i`); every id ever given.
    schemas: Vec<String>,
    /// Per subject, its stored versions.
    subjects: BTreeMap<String, Vec<StoredVersion>>,
    global_level: Option<Level>,
    subject_levels: BTreeMap<String, Level>,
}

/// One stored version in a [`Snapshot`]: (version, id, the text as
/// registered when it differs from the schema's, soft-deleted).
type StoredVersion = (u32, u32, Option<String>, bool);

impl State {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            schemas: self.schemas.iter().map(|s| s.text.clone()).collect(),
            subjects: self
                .subjects
                .iter()
                .map(|(name, versions)| {
                    let versions = versions
                        .iter()
                        .map(|(&n, v)| {
                            let same = self
                                .schemas
                                .get(v.id as usize - 1)
                                .is_some_and(|s| s.text == v.text);
                            (n, v.id, (!same).then(|| v.text.clone()), v.deleted)
                        })
                        .collect();
                    (name.clone(), versions)
                })
                .collect(),
            global_level: self.global_level,
            subject_levels: self.subject_levels.clone(),
        }
    }

    /// The state `snapshot` was taken of; an error names what does not fit
    /// (a schema that no longer parses, a version of an unknown id).
    pub fn from_snapshot(snapshot: Snapshot) -> Result<State, String> {
        let mut state = State::default();
        for (i, text) in snapshot.schemas.into_iter().enumerate() {
            let id = i as u32 + 1;
            let c = Candidate::parse(&text)
                .map_err(|e| format!("schema {id} of the checkpoint does not parse: {e}"))?;
            state.ids.entry(c.canonical).or_insert(id);
            state.schemas.push(StoredSchema {
                text,
                parsed: c.parsed,
            });
        }
        for (subject, versions) in snapshot.subjects {
            let mut stored = BTreeMap::new();
            for (n, id, text, deleted) in versions {
                let schema = state.schemas.get((id as usize).wrapping_sub(1)).ok_or_else(|| {
                    format!("version {n} of `{subject}` in the checkpoint names unknown schema {id}")
                })?;
                let text = text.unwrap_or_else(|| schema.text.clone());
                stored.insert(n, Version { id, text, deleted });
            }
            state.subjects.insert(subject, stored);
        }
        state.global_level = snapshot.global_level;
        state.subject_levels = snapshot.subject_levels;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#;
    /// V1 plus a field with a default: compatible with V1 under every level.
    const V2: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;
    /// V1 plus a required field: not BACKWARD compatible with V1.
    const V2_REQUIRED: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}"#;
    const OTHER: &str = r#"{"type":"record","name":"other","fields":[]}"#;

    fn register(s: &mut State, subject: &str, schema: &str) -> Result<Applied, Rejection> {
        s.apply(&Command::Register {
            subject: subject.into(),
            schema: schema.into(),
        })
    }
    fn registered(id: u32, version: u32) -> Result<Applied, Rejection> {
        Ok(Applied::Registered { id, version })
    }
    fn delete_subject(s: &mut State, subject: &str, permanent: bool) -> Result<Applied, Rejection> {
        s.apply(&Command::DeleteSubject {
            subject: subject.into(),
            permanent,
        })
    }
    fn delete_version(
        s: &mut State,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<Applied, Rejection> {
        s.apply(&Command::DeleteVersion {
            subject: subject.into(),
            version,
            permanent,
        })
    }
    fn set_level(
        s: &mut State,
        subject: Option<&str>,
        level: Option<Level>,
    ) -> Result<Applied, Rejection> {
        s.apply(&Command::SetCompatibility {
            subject: subject.map(Into::into),
            level,
        })
    }
    fn cand(text: &str) -> Candidate {
        Candidate::parse(text).unwrap()
    }
    const N1: VersionRef = VersionRef::Number(1);
    const N2: VersionRef = VersionRef::Number(2);

    #[test]
    fn commands_round_trip_through_json() {
        let commands = [
            Command::Register {
                subject: "s".into(),
                schema: V1.into(),
            },
            Command::DeleteSubject {
                subject: "s".into(),
                permanent: true,
            },
            Command::DeleteVersion {
                subject: "s".into(),
                version: VersionRef::Latest,
                permanent: false,
            },
            Command::DeleteVersion {
                subject: "s".into(),
                version: N2,
                permanent: true,
            },
            Command::SetCompatibility {
                subject: None,
                level: Some(Level::Full),
            },
            Command::SetCompatibility {
                subject: Some("s".into()),
                level: None,
            },
        ];
        for c in commands {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c, "{json}");
        }
        assert!(serde_json::from_str::<Command>(r#"{"op":"explode"}"#).is_err());
        let global = Command::SetCompatibility {
            subject: None,
            level: None,
        };
        assert_eq!((global.op(), global.subject()), ("set_compatibility", None));
        let delete = Command::DeleteSubject {
            subject: "s".into(),
            permanent: false,
        };
        assert_eq!(
            (delete.op(), delete.subject()),
            ("delete_subject", Some("s"))
        );
    }

    #[test]
    fn version_refs_parse_like_confluent() {
        assert_eq!("latest".parse(), Ok(VersionRef::Latest));
        assert_eq!("-1".parse(), Ok(VersionRef::Latest));
        assert_eq!("7".parse(), Ok(VersionRef::Number(7)));
        assert_eq!(
            "2147483647".parse(),
            Ok(VersionRef::Number(i32::MAX as u32))
        );
        for bad in ["0", "-2", "2147483648", "x", ""] {
            assert_eq!(
                bad.parse::<VersionRef>(),
                Err(Rejection::InvalidVersion(bad.into()))
            );
        }
        assert_eq!(VersionRef::Latest.to_string(), "latest");
        assert_eq!(N2.to_string(), "2");
    }

    #[test]
    fn ids_are_global_and_versions_per_subject() {
        let mut s = State::default();
        assert_eq!(register(&mut s, "a", V1), registered(1, 1));
        assert_eq!(register(&mut s, "a", V2), registered(2, 2));
        // The same schema in another subject keeps its id, gets version 1 there.
        assert_eq!(register(&mut s, "b", V2), registered(2, 1));
        assert!(matches!(
            register(&mut s, "b", OTHER),
            Err(Rejection::Incompatible { .. })
        ));
        assert_eq!(
            set_level(&mut s, Some("b"), Some(Level::None)),
            Ok(Applied::Compatibility { previous: None })
        );
        assert_eq!(register(&mut s, "b", OTHER), registered(3, 2));
        assert_eq!(s.subjects(false), ["a", "b"]);
        assert_eq!(
            s.subject_versions_of(2, false).unwrap(),
            [("a", 2), ("b", 1)]
        );
    }

    #[test]
    fn re_registering_a_live_schema_adds_nothing_whatever_the_spacing() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        let spaced = V1.replace(',', " , ");
        assert_eq!(register(&mut s, "a", &spaced), registered(1, 1));
        assert_eq!(s.versions("a", true).unwrap(), [1, 2]);
        assert_eq!(s.live_registration("a", &cand(&spaced)), Some((1, 1)));
        assert_eq!(s.live_registration("b", &cand(V1)), None);
        assert_eq!(s.live_registration("a", &cand(OTHER)), None);
        // Each version keeps the text it was registered with.
        assert_eq!(s.version("a", N1, false).unwrap().schema, V1);
    }

    #[test]
    fn the_first_text_of_an_identity_is_what_the_id_returns() {
        let mut s = State::default();
        let spaced = V1.replace(',', " , ");
        register(&mut s, "a", V1).unwrap();
        assert_eq!(register(&mut s, "b", &spaced), registered(1, 1));
        assert_eq!(s.schema_by_id(1, None), Ok(V1));
        assert_eq!(s.version("b", N1, false).unwrap().schema, spaced);
    }

    #[test]
    fn invalid_schemas_are_rejected_at_apply() {
        let mut s = State::default();
        assert!(matches!(
            register(&mut s, "a", "{"),
            Err(Rejection::InvalidSchema(_))
        ));
        assert_eq!(s.subjects(true), Vec::<&str>::new());
    }

    #[test]
    fn incompatible_schemas_are_rejected_with_reasons_and_leave_no_trace() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        let r = register(&mut s, "a", V2_REQUIRED).unwrap_err();
        assert!(r.to_string().starts_with("Schema being registered is incompatible with an earlier schema for subject \"a\", details: [BACKWARD:"), "{r}");
        assert_eq!(s.versions("a", true).unwrap(), [1]);
        assert_eq!(
            s.schema_by_id(2, None),
            Err(Rejection::SchemaNotFound(Some(2)))
        );
        // The global level decides when the subject has none.
        set_level(&mut s, None, Some(Level::Forward)).unwrap();
        assert_eq!(register(&mut s, "a", V2_REQUIRED), registered(2, 2));
    }

    #[test]
    fn compatibility_checks_only_live_versions() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        delete_version(&mut s, "a", N1, false).unwrap();
        // No live version left: anything goes, and the version number continues.
        assert_eq!(register(&mut s, "a", OTHER), registered(2, 2));
    }

    #[test]
    fn soft_deleted_schema_registers_again_as_a_new_version_with_its_id() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        delete_version(&mut s, "a", N1, false).unwrap();
        assert_eq!(s.live_registration("a", &cand(V1)), None);
        assert_eq!(register(&mut s, "a", V1), registered(1, 3));
    }

    #[test]
    fn soft_then_hard_subject_delete() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        set_level(&mut s, Some("a"), Some(Level::Full)).unwrap();
        assert_eq!(
            delete_subject(&mut s, "nope", false),
            Err(Rejection::SubjectNotFound("nope".into()))
        );
        assert_eq!(
            delete_subject(&mut s, "a", true),
            Err(Rejection::SubjectNotSoftDeleted("a".into()))
        );
        assert_eq!(
            delete_subject(&mut s, "a", false),
            Ok(Applied::DeletedSubject(vec![1, 2]))
        );
        // Soft delete hides the subject, drops its level, keeps ids resolvable.
        assert_eq!(s.subjects(false), Vec::<&str>::new());
        assert_eq!(s.subjects(true), ["a"]);
        assert_eq!(
            s.versions("a", false),
            Err(Rejection::SubjectNotFound("a".into()))
        );
        assert_eq!(s.versions("a", true).unwrap(), [1, 2]);
        assert_eq!(
            s.compatibility(Some("a"), false),
            Err(Rejection::SubjectCompatibilityNotConfigured("a".into()))
        );
        assert_eq!(s.schema_by_id(1, None), Ok(V1));
        assert_eq!(s.schema_by_id(1, Some("a")), Ok(V1));
        assert_eq!(
            delete_subject(&mut s, "a", false),
            Err(Rejection::SubjectSoftDeleted("a".into()))
        );
        assert_eq!(
            delete_subject(&mut s, "a", true),
            Ok(Applied::DeletedSubject(vec![1, 2]))
        );
        assert_eq!(s.subjects(true), Vec::<&str>::new());
        assert_eq!(
            s.schema_by_id(1, None),
            Err(Rejection::SchemaNotFound(Some(1)))
        );
        assert_eq!(
            s.subject_versions_of(1, true),
            Err(Rejection::SchemaNotFound(Some(1)))
        );
        // Ids are never reused: the same schema gets its old id, versions restart.
        assert_eq!(register(&mut s, "a", V2), registered(2, 1));
        assert_eq!(register(&mut s, "b", OTHER), registered(3, 1));
    }

    #[test]
    fn soft_then_hard_version_delete() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        assert_eq!(
            delete_version(&mut s, "nope", N1, false),
            Err(Rejection::SubjectNotFound("nope".into()))
        );
        let missing = VersionRef::Number(9);
        assert_eq!(
            delete_version(&mut s, "a", missing, false),
            Err(Rejection::VersionNotFound {
                subject: "a".into(),
                version: missing
            })
        );
        assert_eq!(
            delete_version(&mut s, "a", N1, true),
            Err(Rejection::VersionNotSoftDeleted {
                subject: "a".into(),
                version: 1
            })
        );
        assert_eq!(
            delete_version(&mut s, "a", N1, false),
            Ok(Applied::DeletedVersion(1))
        );
        assert_eq!(
            delete_version(&mut s, "a", N1, false),
            Err(Rejection::VersionSoftDeleted {
                subject: "a".into(),
                version: 1
            })
        );
        assert_eq!(s.versions("a", false).unwrap(), [2]);
        assert_eq!(
            s.version("a", N1, false),
            Err(Rejection::VersionNotFound {
                subject: "a".into(),
                version: N1
            })
        );
        assert_eq!(s.version("a", N1, true).unwrap().id, 1);
        assert_eq!(
            s.subject_versions_of(1, false),
            Err(Rejection::SchemaNotFound(Some(1)))
        );
        assert_eq!(s.subject_versions_of(1, true).unwrap(), [("a", 1)]);
        assert_eq!(
            delete_version(&mut s, "a", N1, true),
            Ok(Applied::DeletedVersion(1))
        );
        assert_eq!(s.versions("a", true).unwrap(), [2]);
        // `latest`: the newest live version when soft, the newest stored when hard.
        assert_eq!(
            delete_version(&mut s, "a", VersionRef::Latest, false),
            Ok(Applied::DeletedVersion(2))
        );
        assert_eq!(
            delete_version(&mut s, "a", VersionRef::Latest, false),
            Err(Rejection::SubjectNotFound("a".into()))
        );
        assert_eq!(
            delete_version(&mut s, "a", VersionRef::Latest, true),
            Ok(Applied::DeletedVersion(2))
        );
        // The last version gone: the subject is gone.
        assert_eq!(s.subjects(true), Vec::<&str>::new());
        assert_eq!(
            delete_version(&mut s, "a", VersionRef::Latest, true),
            Err(Rejection::SubjectNotFound("a".into()))
        );
    }

    #[test]
    fn hard_deleting_the_newest_version_frees_its_number() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        delete_version(&mut s, "a", N2, false).unwrap();
        delete_version(&mut s, "a", N2, true).unwrap();
        assert_eq!(register(&mut s, "a", V2), registered(2, 2));
    }

    #[test]
    fn hard_delete_of_latest_requires_a_soft_delete_first() {
        let mut s = State::default();
        register(&mut s, "a", V1).unwrap();
        assert_eq!(
            delete_version(&mut s, "a", VersionRef::Latest, true),
            Err(Rejection::VersionNotSoftDeleted {
                subject: "a".into(),
                version: 1
            })
        );
    }

    #[test]
    fn reads_of_versions() {
        let mut s = State::default();
        assert_eq!(
            s.versions("a", true),
            Err(Rejection::SubjectNotFound("a".into()))
        );
        assert_eq!(
            s.version("a", VersionRef::Latest, true),
            Err(Rejection::SubjectNotFound("a".into()))
        );
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        assert_eq!(
            s.version("a", VersionRef::Latest, false).unwrap(),
            VersionView {
                subject: "a",
                version: 2,
                id: 2,
                schema: V2
            }
        );
        assert_eq!(s.version("a", N1, false).unwrap().id, 1);
        delete_version(&mut s, "a", N2, false).unwrap();
        assert_eq!(
            s.version("a", VersionRef::Latest, false).unwrap().version,
            1
        );
        assert_eq!(s.version("a", VersionRef::Latest, true).unwrap().version, 2);
    }

    #[test]
    fn lookup_finds_live_versions_and_with_deleted_soft_deleted_ones() {
        let mut s = State::default();
        assert_eq!(
            s.lookup("a", &cand(V1), false),
            Err(Rejection::SubjectNotFound("a".into()))
        );
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        let found = s
            .lookup("a", &cand(&V1.replace(':', " : ")), false)
            .unwrap();
        assert_eq!(
            found,
            VersionView {
                subject: "a",
                version: 1,
                id: 1,
                schema: V1
            }
        );
        assert_eq!(
            s.lookup("a", &cand(OTHER), false),
            Err(Rejection::SchemaNotFound(None))
        );
        delete_version(&mut s, "a", N1, false).unwrap();
        assert_eq!(
            s.lookup("a", &cand(V1), false),
            Err(Rejection::SchemaNotFound(None))
        );
        assert_eq!(s.lookup("a", &cand(V1), true).unwrap().version, 1);
        // Registered in another subject only: still not found here.
        register(&mut s, "b", OTHER).unwrap();
        assert_eq!(
            s.lookup("a", &cand(OTHER), true),
            Err(Rejection::SchemaNotFound(None))
        );
    }

    #[test]
    fn schema_by_id_with_and_without_subject() {
        let mut s = State::default();
        assert_eq!(
            s.schema_by_id(0, None),
            Err(Rejection::SchemaNotFound(Some(0)))
        );
        assert_eq!(
            s.schema_by_id(1, None),
            Err(Rejection::SchemaNotFound(Some(1)))
        );
        register(&mut s, "a", V1).unwrap();
        assert_eq!(s.schema_by_id(1, None), Ok(V1));
        assert_eq!(s.schema_by_id(1, Some("a")), Ok(V1));
        assert_eq!(
            s.schema_by_id(1, Some("b")),
            Err(Rejection::SchemaNotFound(Some(1)))
        );
        assert_eq!(
            s.subject_versions_of(7, true),
            Err(Rejection::SchemaNotFound(Some(7)))
        );
    }

    #[test]
    fn compatibility_levels_global_and_per_subject() {
        let mut s = State::default();
        assert_eq!(s.compatibility(None, false), Ok(Level::Backward));
        assert_eq!(s.compatibility(Some("a"), true), Ok(Level::Backward));
        assert_eq!(
            s.compatibility(Some("a"), false),
            Err(Rejection::SubjectCompatibilityNotConfigured("a".into()))
        );
        assert_eq!(
            set_level(&mut s, None, Some(Level::Full)),
            Ok(Applied::Compatibility {
                previous: Some(Level::Backward)
            })
        );
        assert_eq!(s.compatibility(Some("a"), true), Ok(Level::Full));
        // A level may be set before the subject has any version.
        assert_eq!(
            set_level(&mut s, Some("a"), Some(Level::None)),
            Ok(Applied::Compatibility { previous: None })
        );
        assert_eq!(
            set_level(&mut s, Some("a"), Some(Level::Forward)),
            Ok(Applied::Compatibility {
                previous: Some(Level::None)
            })
        );
        assert_eq!(s.compatibility(Some("a"), false), Ok(Level::Forward));
        assert_eq!(
            set_level(&mut s, Some("a"), None),
            Ok(Applied::Compatibility {
                previous: Some(Level::Forward)
            })
        );
        // Clearing again: unknown subject, or known subject without a level.
        assert_eq!(
            set_level(&mut s, Some("a"), None),
            Err(Rejection::SubjectNotFound("a".into()))
        );
        register(&mut s, "a", V1).unwrap();
        assert_eq!(
            set_level(&mut s, Some("a"), None),
            Err(Rejection::SubjectCompatibilityNotConfigured("a".into()))
        );
        // Clearing the global level restores the default.
        assert_eq!(
            set_level(&mut s, None, None),
            Ok(Applied::Compatibility {
                previous: Some(Level::Full)
            })
        );
        assert_eq!(s.compatibility(None, false), Ok(Level::Backward));
    }

    #[test]
    fn checks_against_one_version_or_the_level() {
        let mut s = State::default();
        assert_eq!(s.check("a", &cand(V2_REQUIRED), Against::Level), Ok(vec![]));
        assert_eq!(
            s.check("a", &cand(V1), Against::Version(VersionRef::Latest)),
            Err(Rejection::SubjectNotFound("a".into()))
        );
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        assert_eq!(
            s.check("a", &cand(V1), Against::Version(VersionRef::Number(5))),
            Err(Rejection::VersionNotFound {
                subject: "a".into(),
                version: VersionRef::Number(5)
            })
        );
        assert_eq!(
            s.check("a", &cand(V2_REQUIRED), Against::Version(N1))
                .unwrap()
                .len(),
            1
        );
        // BACKWARD looks at the latest only, and V2's data has `b`.
        assert_eq!(s.check("a", &cand(V2_REQUIRED), Against::Level), Ok(vec![]));
        set_level(&mut s, Some("a"), Some(Level::BackwardTransitive)).unwrap();
        assert_eq!(
            s.check("a", &cand(V2_REQUIRED), Against::Level)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.check("a", &cand(OTHER), Against::Level).unwrap().len(), 2);
    }

    #[test]
    fn only_not_found_rejections_invite_a_catch_up() {
        assert!(Rejection::SubjectNotFound("a".into()).is_not_found());
        assert!(Rejection::VersionNotFound {
            subject: "a".into(),
            version: N1
        }
        .is_not_found());
        assert!(Rejection::SchemaNotFound(Some(1)).is_not_found());
        assert!(!Rejection::SubjectSoftDeleted("a".into()).is_not_found());
        assert!(!Rejection::InvalidSchema("x".into()).is_not_found());
    }

    #[test]
    fn a_state_rebuilt_from_its_snapshot_answers_every_later_command_alike() {
        let mut a = State::default();
        register(&mut a, "s", V1).unwrap();
        register(&mut a, "s", V2).unwrap();
        // the same schema, written differently, in another subject
        register(&mut a, "t", &V1.replace(',', " , ")).unwrap();
        register(&mut a, "gone", OTHER).unwrap();
        delete_subject(&mut a, "gone", false).unwrap();
        delete_subject(&mut a, "gone", true).unwrap();
        delete_version(&mut a, "s", N1, false).unwrap();
        set_level(&mut a, Some("t"), Some(Level::Full)).unwrap();
        set_level(&mut a, None, Some(Level::None)).unwrap();

        let snapshot = a.snapshot();
        let json = serde_json::to_string(&snapshot).unwrap();
        let mut b = State::from_snapshot(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(b.snapshot(), snapshot);
        let later = [
            Command::Register {
                subject: "gone".into(),
                schema: OTHER.into(),
            },
            Command::Register {
                subject: "s".into(),
                schema: V2_REQUIRED.into(),
            },
            Command::Register {
                subject: "u".into(),
                schema: V2.into(),
            },
            Command::DeleteVersion {
                subject: "s".into(),
                version: N1,
                permanent: true,
            },
            Command::DeleteVersion {
                subject: "s".into(),
                version: N2,
                permanent: true,
            },
            Command::SetCompatibility {
                subject: Some("t".into()),
                level: None,
            },
            Command::SetCompatibility {
                subject: Some("t".into()),
                level: None,
            },
        ];
        for c in &later {
            assert_eq!(a.apply(c), b.apply(c), "{c:?}");
        }
        assert_eq!(a.snapshot(), b.snapshot());
        assert_eq!(
            a.apply(&Command::Register {
                subject: "v".into(),
                schema: cand(OTHER).text
            }),
            registered(3, 1),
            "ids are never reused: OTHER kept id 3 through its subject's hard delete"
        );
    }

    #[test]
    fn a_snapshot_naming_an_unknown_schema_is_refused() {
        let mut a = State::default();
        register(&mut a, "s", V1).unwrap();
        let mut snapshot = a.snapshot();
        snapshot.schemas.clear();
        assert!(State::from_snapshot(snapshot)
            .unwrap_err()
            .contains("unknown schema 1"));
    }
}
