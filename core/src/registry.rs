//! The `registry:` section of a pipeline file: any Confluent-compatible schema
//! registry (Confluent's, Apicurio's compatibility API, Redpanda's, or
//! `syncline registry`). syncline uses only the public REST API.

use crate::error::{Context, Error, ErrorKind, Result};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// Basic-auth user name, if the registry needs one.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password (use `${VAR}`; never logged).
    #[serde(default)]
    pub password: Option<String>,
    /// Timeout of one registry request, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl RegistryConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            timeout_ms: default_timeout_ms(),
        }
    }

    pub fn settings(&self) -> Result<SrSettings> {
        let mut b = SrSettings::new_builder(self.url.trim_end_matches('/').to_string());
        b.set_timeout(Duration::from_millis(self.timeout_ms))
            .no_proxy();
        if let Some(user) = &self.username {
            b.set_basic_authorization(user, self.password.as_deref());
        }
        b.build().context(ErrorKind::Config, || {
            format!("cannot set up schema registry client for {}", self.url)
        })
    }
}

/// Largest registry answer read (a schema of a very wide table is ~1 MiB).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// syncline's own client of the registry's REST API: every answer is
/// classified by [`crate::error::registry`] (status and Confluent error
/// code), answers are bounded in size, and schemas come back as text, so
/// the codec can check a writer schema before parsing it.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, Option<String>)>,
}

impl RegistryClient {
    pub fn new(config: &RegistryConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .no_proxy()
            .build()
            .context(ErrorKind::Config, || {
                format!(
                    "cannot set up the schema registry client for {}",
                    config.url
                )
            })?;
        Ok(Self {
            http,
            base: config.url.trim_end_matches('/').to_string(),
            auth: config
                .username
                .clone()
                .map(|u| (u, config.password.clone())),
        })
    }

    /// The text of the schema with `id`.
    pub async fn schema_text(&self, id: u32) -> Result<String> {
        let answer = self
            .call(
                self.http.get(format!("{}/schemas/ids/{id}", self.base)),
                &format!("schema id {id}"),
            )
            .await?;
        answer
            .get("schema")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Error::config(format!(
                    "the registry at {} answered schema id {id} without a schema (is it a schema registry?)",
                    self.base
                ))
            })
    }

    /// Register `schema` (Avro, as JSON text) under `subject`; its id. An
    /// equal schema registered before gets its earlier id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let body = serde_json::json!({ "schema": schema });
        let request = self
            .http
            .post(format!(
                "{}/subjects/{}/versions",
                self.base,
                path_segment(subject)
            ))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
        let answer = self
            .call(request, &format!("the schema of subject `{subject}`"))
            .await?;
        answer
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                Error::config(format!(
                    "the registry at {} registered `{subject}` without giving an id",
                    self.base
                ))
            })
    }

    /// Send `request`; a JSON answer, or an error whose kind comes from the
    /// registry table. `what` names the object for messages.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<serde_json::Value> {
        let request = match &self.auth {
            Some((user, password)) => request.basic_auth(user, password.as_deref()),
            None => request,
        };
        let mut response = request.send().await.map_err(|e| {
            Error::transient(format!(
                "cannot reach the schema registry at {} for {what}",
                self.base
            ))
            .with_source(e.without_url())
        })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            Error::transient(format!(
                "the schema registry at {} broke off its answer",
                self.base
            ))
            .with_source(e.without_url())
        })? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Error::data(format!(
                    "the schema registry's answer for {what} is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if (200..300).contains(&status) {
            return json.ok_or_else(|| {
                Error::config(format!(
                    "the answer of {} for {what} is not JSON (is it a schema registry?)",
                    self.base
                ))
            });
        }
        let code = json
            .as_ref()
            .and_then(|j| j.get("error_code"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(crate::error::registry::ANY);
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .chars()
            .take(500)
            .collect::<String>();
        let (kind, why) = crate::error::registry::classify(status, code);
        let error = Error::new(
            kind,
            format!(
                "schema registry at {}: {what}: {why} (HTTP {status}{}{})",
                self.base,
                if code == 0 {
                    String::new()
                } else {
                    format!(", error {code}")
                },
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                },
            ),
        );
        // A refused schema stops the pipeline, before any partial write.
        Err(match status {
            409 | 422 => error.stopping_pipeline(),
            _ => error,
        })
    }
}

/// `subject` as one URL path segment.
fn path_segment(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
