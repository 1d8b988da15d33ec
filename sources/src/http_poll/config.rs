//! The `http_poll` source's section of the pipeline file.

use super::paginate::{Pager, PaginationConfig};
use super::path::JsonPath;
use crate::sql_poll::ScheduleConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use syncline_core::config::{Issue, Secret};

/// Polls an HTTP API on a schedule and publishes each record of its answers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpPollConfig {
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// `get` (default) or `post` (with `body`).
    #[serde(default)]
    pub method: Method,
    /// Extra request headers. Values may hold secrets (`${VAR}`); they are
    /// never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Fixed query parameters of every request.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// The JSON body of a `post`.
    #[serde(default)]
    pub body: Option<Box<serde_json::Value>>,
    /// When a run of requests starts: `interval_ms` (from the start of one
    /// run to the next; default 60,000) or `cron` (UTC, seconds first).
    #[serde(default = "default_schedule")]
    pub schedule: Box<ScheduleConfig>,
    /// The topic every record is published to.
    pub topic: String,
    /// Where the records are in an answer: a JSON path to an array (each
    /// item a record), e.g. `$.data`. Default `$` (the answer is the array).
    #[serde(default = "default_records")]
    pub records: String,
    /// The record fields that identify it (top-level names of a record),
    /// e.g. `[id]`: the record key, and the target's primary key.
    pub key: Vec<String>,
    /// How the pages of one run follow each other (default: one request).
    #[serde(default)]
    pub pagination: Box<PaginationConfig>,
    /// Ask only for records changed since the last run.
    #[serde(default)]
    pub incremental: Option<Box<IncrementalConfig>>,
    /// How requests authenticate.
    #[serde(default)]
    pub auth: Option<Box<AuthConfig>>,
    /// Requests per second at most (a client-side budget; 429 answers,
    /// `Retry-After` and `X-RateLimit-*` headers are obeyed besides).
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// The record's columns and their types (`long`, `double`, `text`,
    /// `boolean`, `json`, `timestamptz`), when they should not be inferred
    /// from the records. Inferred (the default): each top-level field is a
    /// column of the type of its first non-null value, a new field adds a
    /// nullable column (a new schema version in the registry).
    #[serde(default)]
    pub columns: Option<BTreeMap<String, DeclaredType>>,
    /// Milliseconds a request may take. Default 30,000.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Where a record goes that cannot be published (a field whose value
    /// does not fit its column, a record larger than the broker takes),
    /// with the reason. Default `<pipeline>.<source>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Get,
    Post,
}

/// `incremental:`: a cursor field the API can filter on.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// The record field that grows when a record changes (a top-level
    /// name), e.g. `updated_at`: an integer, or an RFC 3339 timestamp.
    pub cursor_field: String,
    /// The query parameter the run's start value is sent in, e.g.
    /// `updated_since`.
    pub param: String,
    /// The start value of the first run, e.g. `"2024-01-01T00:00:00Z"` or
    /// `0`; its form (integer or timestamp) is the cursor's.
    pub start: String,
    /// How far before the last run's greatest cursor a run starts (seconds
    /// for a timestamp cursor, units for an integer one), for records that
    /// became visible late. Records seen already at the same cursor value
    /// are dropped by key. Default 0.
    #[serde(default)]
    pub lookback: u64,
}

/// `auth:` of a request: exactly one of its fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// `Authorization: Basic base64(username:password)`.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// An API key in a header or the query.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// OAuth2 client credentials: a token from `token_url`, used until
    /// shortly before it expires, fetched again after a 401.
    #[serde(default)]
    pub oauth2: Option<OAuth2>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// `header: X-Api-Key` or `query: api_key`, and the key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    pub value: Secret,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default)]
    pub scope: Option<String>,
}

/// The declared type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeclaredType {
    Long,
    Double,
    Text,
    Boolean,
    Json,
    Timestamptz,
}

fn default_schedule() -> Box<ScheduleConfig> {
    Box::new(ScheduleConfig {
        interval_ms: Some(60_000),
        cron: None,
    })
}
fn default_records() -> String {
    "$".into()
}
fn default_timeout() -> u64 {
    30_000
}

fn http_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://")) && u.len() > "https://".len()
}

impl HttpPollConfig {
    pub fn check(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        if !http_url(&self.url) {
            issues.push(Issue::new(
                "url",
                "must be an http:// or https:// URL, e.g. https://api.example.com/v1/orders",
            ));
        }
        if self.body.is_some() && self.method == Method::Get {
            issues.push(Issue::new(
                "body",
                "a `get` sends no body: set `method: post`",
            ));
        }
        issues.extend(self.schedule.issues());
        issues.extend(crate::topic_name_issue("topic", &self.topic));
        if let Err(e) = JsonPath::parse(&self.records) {
            issues.push(Issue::new("records", e));
        }
        if self.key.is_empty() {
            issues.push(Issue::new(
                "key",
                "name the fields that identify a record, e.g. `key: [id]`",
            ));
        }
        for (i, k) in self.key.iter().enumerate() {
            if k.is_empty() || k.contains(['.', '[', '$']) {
                issues.push(Issue::new(
                    format!("key[{i}]"),
                    "must be a top-level field name of a record, e.g. `id`",
                ));
            }
        }
        for (field, e) in Pager::issues(&self.pagination) {
            issues.push(Issue::new(format!("pagination.{field}"), e));
        }
        if let Some(inc) = &self.incremental {
            if inc.cursor_field.is_empty() || inc.cursor_field.contains(['.', '[', '$']) {
                issues.push(Issue::new(
                    "incremental.cursor_field",
                    "must be a top-level field name of a record, e.g. `updated_at`",
                ));
            }
            if inc.param.is_empty() {
                issues.push(Issue::new(
                    "incremental.param",
                    "name the query parameter the start value goes in, e.g. `updated_since`",
                ));
            }
            if super::cursor::CursorValue::parse_start(&inc.start).is_none() {
                issues.push(Issue::new(
                    "incremental.start",
                    "must be an integer (`0`) or an RFC 3339 timestamp (`2024-01-01T00:00:00Z`)",
                ));
            }
        }
        if let Some(a) = self.auth.as_deref() {
            let set = [
                a.bearer.is_some(),
                a.basic.is_some(),
                a.api_key.is_some(),
                a.oauth2.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                issues.push(Issue::new(
                    "auth",
                    "set exactly one of `bearer`, `basic`, `api_key` or `oauth2`",
                ));
            }
            if let Some(k) = &a.api_key {
                if k.header.is_some() == k.query.is_some() {
                    issues.push(Issue::new(
                        "auth.api_key",
                        "set exactly one of `header` (e.g. X-Api-Key) or `query` (e.g. api_key)",
                    ));
                }
            }
            if let Some(o) = &a.oauth2 {
                if !http_url(&o.token_url) {
                    issues.push(Issue::new(
                        "auth.oauth2.token_url",
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        if let Some(r) = self.requests_per_second {
            if !(r > 0.0 && r.is_finite()) {
                issues.push(Issue::new(
                    "requests_per_second",
                    "must be a positive number, e.g. 5",
                ));
            }
        }
        if let Some(cols) = &self.columns {
            for k in &self.key {
                if !cols.contains_key(k) {
                    issues.push(Issue::new(
                        "columns",
                        format!("the key field `{k}` is not among the declared columns"),
                    ));
                }
            }
        }
        if self.timeout_ms == 0 {
            issues.push(Issue::new("timeout_ms", "must be at least 1"));
        }
        issues.extend(crate::dead_letter_topic_issue(
            self.dead_letter_topic.as_deref(),
        ));
        issues
    }
}

impl syncline_runtime::Component for HttpPollConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_out(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn check(&self) -> Vec<Issue> {
        HttpPollConfig::check(self)
    }

    async fn run(
        &self,
        ctx: syncline_core::runtime::ComponentContext,
        shutdown: syncline_core::runtime::Shutdown,
    ) -> syncline_core::Result<()> {
        super::HttpPollSource::build(self, ctx)
            .await?
            .run(shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> HttpPollConfig {
        serde_json::from_str(json).unwrap()
    }

    fn paths(c: &HttpPollConfig) -> Vec<String> {
        c.check().into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn a_good_config_has_no_issues() {
        let c = parse(
            r#"{"url":"https://api.example.com/v1/orders","topic":"api.orders","records":"$.data","key":["id"],
                "pagination":{"type":"cursor","cursor_path":"$.meta.next"},
                "incremental":{"cursor_field":"updated_at","param":"updated_since","start":"2024-01-01T00:00:00Z","lookback":60},
                "auth":{"oauth2":{"token_url":"https://auth.example.com/token","client_id":"c","client_secret":"s3cr3t"}}}"#,
        );
        assert_eq!(c.check(), vec![]);
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn each_problem_is_named_by_its_field() {
        let c = parse(
            r#"{"url":"ftp://x","body":{"a":1},"topic":"bad topic","records":"$[*]","key":["a.b"],
                "pagination":{"type":"next_url"},
                "incremental":{"cursor_field":"","param":"p","start":"yesterday"},
                "auth":{"api_key":{"value":"k"}},"requests_per_second":0,"timeout_ms":0}"#,
        );
        assert_eq!(
            paths(&c),
            vec![
                "url",
                "body",
                "topic",
                "records",
                "key[0]",
                "pagination.next_url_path",
                "incremental.cursor_field",
                "incremental.start",
                "auth.api_key",
                "requests_per_second",
                "timeout_ms"
            ]
        );
    }
}
