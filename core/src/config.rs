//! What a component's config reports when its values are wrong in a way
//! serde cannot see (a column that must be set with a mode, an interval of 0).
//! The pipeline loader turns each issue into an error naming the file, line
//! and column of `path`.

/// One problem in a component's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Path relative to the component, e.g. `tables[0].timestamp_column`
    /// (dots between keys, `[i]` for list items). Empty: the component itself.
    pub path: String,
    /// What is wrong and what would be valid, e.g. "`mode: timestamp` needs
    /// `timestamp_column`: name the column that changes on every update".
    pub message: String,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A value that is never shown (a password, a token, a signing secret):
/// `Debug` and serialization print `***`, so a logged or dumped config never
/// holds it.
#[derive(Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}
