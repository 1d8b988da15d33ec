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
