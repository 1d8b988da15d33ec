//! The `api:` section of a pipeline file: where `syncline run` serves its
//! management API and dashboard (`src/api/`), and who may use them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use syncline_core::config::{Issue, Secret};

/// The address the API listens on when neither the file nor `--api-addr`
/// gives one: loopback, so nothing off the machine reaches it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9470";

/// Shortest token taken: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The management API and dashboard that `syncline run` serves
/// (docs/api.md): status, lag, pause/resume/restart, re-snapshot, the
/// dead-letter browser and replay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on (default `127.0.0.1:9470`); `--api-addr`
    /// overrides it, and `--api-addr off` turns the API off. Off loopback it
    /// needs `tokens` (or `allow_anonymous: true`).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Bearer tokens. With none, the API serves only on loopback and only
    /// requests whose `Host` is a loopback name or address (so a web page
    /// cannot reach it through DNS rebinding). Give each token through the
    /// environment: `token: ${SYNCLINE_API_TOKEN}`.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Serve without tokens on an address other than loopback: anyone who
    /// reaches it may pause components and replay dead letters.
    #[serde(default)]
    pub allow_anonymous: bool,
}

/// One bearer token and what it may do.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it, for the log (the token itself is never logged).
    pub name: String,
    /// `read`: every GET (status, lag, dead letters). `operator`: also
    /// pause, resume, restart, re-snapshot and replay.
    pub role: ApiRole,
    /// The token, 16 characters or more.
    pub token: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiRole {
    Read,
    Operator,
}

impl ApiConfig {
    /// Problems serde cannot see, with the path below `api` and the fix.
    pub fn check(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.0.chars().count() < MIN_TOKEN_CHARS {
                issues.push(Issue::new(
                    format!("tokens[{i}].token"),
                    format!(
                        "the token of `{}` is shorter than {MIN_TOKEN_CHARS} characters: use a random one, e.g. `openssl rand -hex 24`",
                        t.name
                    ),
                ));
            }
            if self.tokens[..i].iter().any(|o| o.token.0 == t.token.0) {
                issues.push(Issue::new(
                    format!("tokens[{i}].token"),
                    format!(
                        "`{}` has the same token as another entry: give each holder its own",
                        t.name
                    ),
                ));
            }
        }
        if let Some(addr) = self.listen {
            if let Some(issue) = self.exposure_issue(addr) {
                issues.push(Issue::new("listen", issue));
            }
        }
        issues
    }

    /// Why serving on `addr` would be unsafe, if it would.
    pub fn exposure_issue(&self, addr: SocketAddr) -> Option<String> {
        (!addr.ip().is_loopback() && self.tokens.is_empty() && !self.allow_anonymous).then(|| {
            format!(
                "serving the API on {addr} without tokens would let anyone who reaches it pause components and replay dead letters: \
                 list `tokens:` (e.g. `- {{ name: ops, role: operator, token: ${{SYNCLINE_API_TOKEN}} }}`), listen on 127.0.0.1, \
                 or set `allow_anonymous: true`"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, t: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            role: ApiRole::Read,
            token: Secret(t.into()),
        }
    }

    #[test]
    fn short_and_shared_tokens_and_open_exposure_are_refused_with_the_fix() {
        let c = ApiConfig {
            listen: Some("0.0.0.0:9470".parse().unwrap()),
            tokens: vec![],
            allow_anonymous: false,
        };
        let issues = c.check();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "listen");
        assert!(
            issues[0].message.contains("tokens"),
            "{}",
            issues[0].message
        );

        let c = ApiConfig {
            listen: Some("0.0.0.0:9470".parse().unwrap()),
            tokens: vec![
                token("a", "short"),
                token("b", "0123456789abcdef0"),
                token("c", "0123456789abcdef0"),
            ],
            allow_anonymous: false,
        };
        let paths: Vec<String> = c.check().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["tokens[0].token", "tokens[2].token"]);
        assert!(
            !format!("{:?}", c.check()).contains("0123456789abcdef0"),
            "no token in a message"
        );
    }
}
