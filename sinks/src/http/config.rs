//! The `http` sink's section of a pipeline file: the user's words, checked
//! here and turned into typed values for the running sink.

use super::HttpSink;
use crate::table::config::{default_batch_linger_ms, default_batch_timeout_ms, refuse, Common};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};

/// Delivers changes to an HTTP endpoint as JSON, in batches, at least once
/// and idempotently: every request carries an `Idempotency-Key` and every
/// change a stable `id` (from its source, position, table and key), equal across
/// retries, restarts and upstream replays, so the receiver drops repeats.
/// Kafka offsets are committed only after a 2xx.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The endpoint, e.g. `https://api.example.com/v1/changes`.
    pub url: String,
    /// `post` (default) or `put`.
    #[serde(default)]
    pub method: Method,
    /// The topics to read (syncline change records).
    pub topics: Vec<String>,
    /// More request headers. Values may be secrets (`${API_KEY}`): they are
    /// never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `bearer: ${TOKEN}` or `basic: { username: ..., password: ${PASSWORD} }`.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Most changes in one request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most bytes of records (keys, values, headers) in one request; the
    /// JSON body is larger by a factor of about 2-3.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A request is sent as soon as no record arrived for this many
    /// milliseconds (linger).
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Longest time a record waits for its request to fill, in milliseconds.
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
    /// Request timeout (connect, send, and the answer), in milliseconds. A
    /// request that times out is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Answers that are retried (with backoff and jitter, and after the
    /// answer's `Retry-After` when it asks for longer): status codes or
    /// classes (`5xx`). Any other answer but 2xx dead-letters the records of
    /// the request (split until the refused one is found), with the status
    /// and the start of the body in the reason.
    #[serde(default = "default_retry_status")]
    pub retry_status: Vec<String>,
    /// Standard Webhooks signing: `whsec_` followed by the base64 secret.
    /// Each request then carries `webhook-id` (its idempotency key),
    /// `webhook-timestamp` and `webhook-signature` (`v1,` + base64 of
    /// HMAC-SHA256 over `id.timestamp.body`).
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// Kafka consumer group (offsets are committed there, after a 2xx).
    /// Default: `syncline.<pipeline>.<sink name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Topic for records the receiver refuses or that cannot be decoded.
    /// Default: `<pipeline>.<sink name>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

pub use syncline_core::config::Secret;

/// The request method.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Post,
    Put,
}

/// How the sink authenticates: one of `bearer` or `basic`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// `Authorization: Basic <base64 of username:password>`.
    #[serde(default)]
    pub basic: Option<Basic>,
}

/// A user name and password for HTTP basic auth.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Basic {
    pub username: String,
    pub password: Secret,
}

fn default_batch_size() -> usize {
    500
}
fn default_batch_max_bytes() -> usize {
    1 << 20
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retry_status() -> Vec<String> {
    vec!["408".into(), "429".into(), "5xx".into()]
}

/// Whether `pattern` (`503` or `5xx`) is a valid status pattern.
fn status_pattern(pattern: &str) -> Option<(u16, u16)> {
    match pattern.as_bytes() {
        [d @ b'1'..=b'5', b'x', b'x'] | [d @ b'1'..=b'5', b'X', b'X'] => {
            let lo = u16::from(d - b'0') * 100;
            Some((lo, lo + 99))
        }
        _ => pattern
            .parse::<u16>()
            .ok()
            .filter(|c| (100..600).contains(c))
            .map(|c| (c, c)),
    }
}

/// The typed settings the running sink gets.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub url: reqwest::Url,
    pub method: Method,
    pub topics: Vec<String>,
    pub headers: Vec<(String, Secret)>,
    pub auth: Option<Auth>,
    pub batch: syncline_runtime::BatchSettings,
    pub timeout: Duration,
    /// Inclusive ranges of retried statuses.
    pub retry: Vec<(u16, u16)>,
    /// The decoded signing key.
    pub signing_key: Option<Vec<u8>>,
    pub group_id: String,
    pub dead_letter_topic: String,
}

impl HttpSinkConfig {
    fn common(&self) -> Common<'_> {
        static NO_TABLES: std::sync::LazyLock<BTreeMap<String, String>> =
            std::sync::LazyLock::new(BTreeMap::new);
        Common {
            topics: &self.topics,
            tables: &NO_TABLES,
            batch_size: self.batch_size,
            batch_max_bytes: self.batch_max_bytes,
            batch_timeout_ms: self.batch_timeout_ms,
            batch_linger_ms: self.batch_linger_ms,
            group_id: self.group_id.as_deref(),
            dead_letter_topic: self.dead_letter_topic.as_deref(),
        }
    }

    fn signing_key(&self) -> Option<std::result::Result<Vec<u8>, String>> {
        use base64::Engine;
        let secret = self.signing_secret.as_ref()?;
        Some(
            secret
                .0
                .strip_prefix("whsec_")
                .ok_or_else(|| "must start with `whsec_` (Standard Webhooks)".to_string())
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|_| "is not `whsec_` followed by base64".to_string())
                }),
        )
    }

    /// Problems serde cannot see; paths are relative to the sink's entry.
    pub fn check(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => issues.push(Issue::new(
                "url",
                "not an http(s) URL; write e.g. `https://api.example.com/v1/changes`",
            )),
        }
        issues.extend(self.common().check(None));
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.push(Issue::new(
                    format!("headers.{name}"),
                    "not a valid header name",
                ));
            } else if reqwest::header::HeaderValue::from_str(&value.0).is_err() {
                issues.push(Issue::new(
                    format!("headers.{name}"),
                    "not a valid header value (control characters?)",
                ));
            }
        }
        for (i, p) in self.retry_status.iter().enumerate() {
            if status_pattern(p).is_none() {
                issues.push(Issue::new(
                    format!("retry_status[{i}]"),
                    format!("`{p}` is not a status (e.g. `429`) or a class (e.g. `5xx`)"),
                ));
            }
        }
        if let Some(auth) = &self.auth {
            if auth.bearer.is_some() == auth.basic.is_some() {
                issues.push(Issue::new(
                    "auth",
                    "name one of `bearer: <token>` or `basic: { username: ..., password: ... }`",
                ));
            }
        }
        if self.timeout_ms == 0 {
            issues.push(Issue::new("timeout_ms", "must be at least 1 millisecond"));
        }
        if let Some(Err(why)) = self.signing_key() {
            issues.push(Issue::new("signing_secret", why));
        }
        issues
    }

    pub(crate) fn settings(&self, ctx: &ComponentContext) -> Result<Settings> {
        refuse("http", ctx, self.check())?;
        let common = self.common();
        Ok(Settings {
            url: reqwest::Url::parse(&self.url).map_err(|e| {
                Error::config(format!("http sink `{}`: bad url", ctx.component)).with_source(e)
            })?,
            method: self.method,
            topics: self.topics.clone(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            auth: self.auth.clone(),
            batch: common.batch(),
            timeout: Duration::from_millis(self.timeout_ms),
            retry: self
                .retry_status
                .iter()
                .filter_map(|p| status_pattern(p))
                .collect(),
            signing_key: self.signing_key().and_then(|k| k.ok()),
            group_id: common.group_id(ctx),
            dead_letter_topic: common.dead_letter_topic(ctx),
        })
    }
}

impl syncline_runtime::Component for HttpSinkConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_in(&self) -> Vec<String> {
        self.topics.clone()
    }

    fn check(&self) -> Vec<Issue> {
        HttpSinkConfig::check(self)
    }

    async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        let settings = self.settings(&ctx)?;
        HttpSink::new(settings, ctx)?.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> HttpSinkConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn statuses_secrets_and_checks() {
        assert_eq!(status_pattern("5xx"), Some((500, 599)));
        assert_eq!(status_pattern("429"), Some((429, 429)));
        assert_eq!(status_pattern("6xx"), None);
        assert_eq!(status_pattern("abc"), None);
        let c = parse(serde_json::json!({
            "url": "http://127.0.0.1:1/x", "topics": ["t"],
            "auth": {"bearer": "s3cret-token"}, "headers": {"X-Api-Key": "k3y"},
            "signing_secret": "whsec_c2VjcmV0"
        }));
        assert!(c.check().is_empty(), "{:?}", c.check());
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        for secret in ["s3cret-token", "k3y", "c2VjcmV0"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        let c = parse(serde_json::json!({
            "url": "ftp://x", "topics": ["t"], "retry_status": ["5xx", "99"],
            "signing_secret": "nope"
        }));
        let paths: Vec<_> = c.check().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["url", "retry_status[1]", "signing_secret"]);
    }
}
