//! The `registry:` section of a pipeline file: any Confluent-compatible schema
//! registry (Confluent's, Apicurio's compatibility API, Redpanda's, or
//! `syncline registry`). syncline uses only the public REST API.

use crate::error::{Context, ErrorKind, Result};
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
