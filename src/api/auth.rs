//! Who may use the management API, checked before every route.
//!
//! - With tokens (`api.tokens`), every `/api/v1` route needs
//!   `Authorization: Bearer <token>`: a `read` token the GET routes, an
//!   `operator` token every route. Tokens are compared as SHA-256 digests in
//!   constant time; which token was used is logged by its holder's name,
//!   never by its value.
//! - Without tokens (loopback only, unless `allow_anonymous`), a request's
//!   `Host` must be a loopback name or address: a web page that rebinds its
//!   own name to 127.0.0.1 gets 403 instead of the API.
//! - Every POST must say `Content-Type: application/json` (each action's
//!   JSON body extractor refuses anything else with 415, before acting): a
//!   web page can send a form or `text/plain` to any address without asking
//!   first, but not JSON.
//! - The health routes and the dashboard's files need nothing: they hold no
//!   data (the dashboard asks for a token when the API does).

use super::ApiError;
use crate::pipeline::api_config::{ApiConfig, ApiRole};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub struct Auth {
    tokens: Vec<([u8; 32], String, ApiRole)>,
    check_host: bool,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal digests, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(config: &ApiConfig) -> Self {
        Auth {
            tokens: config
                .tokens
                .iter()
                .map(|t| (digest(&t.token.0), t.name.clone(), t.role))
                .collect(),
            check_host: config.tokens.is_empty() && !config.allow_anonymous,
        }
    }

    /// The holder and role of `token`, if it is one of ours. Every token is
    /// compared, so the time taken does not say which one came close.
    fn role_of(&self, token: &str) -> Option<(&str, ApiRole)> {
        let d = digest(token);
        let mut found = None;
        for (t, name, role) in &self.tokens {
            if same(t, &d) && found.is_none() {
                found = Some((name.as_str(), *role));
            }
        }
        found
    }
}

/// `host` (a `Host` header: name or address, maybe with a port) is this
/// machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = ApiError::new(status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"syncline\""),
        );
    }
    r
}

pub async fn guard(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    if auth.check_host {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host) {
            return refuse(
                StatusCode::FORBIDDEN,
                "this API has no tokens, so it answers only requests addressed to a loopback name or address (Host: 127.0.0.1, localhost); list `api.tokens` in the pipeline file to serve others",
            );
        }
    }
    let path = request.uri().path();
    if !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let writes = request.method() != Method::GET && request.method() != Method::HEAD;
    if auth.tokens.is_empty() {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let Some((holder, role)) = bearer.as_deref().and_then(|t| auth.role_of(t)) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this API needs `Authorization: Bearer <token>` with one of the pipeline file's `api.tokens`",
        );
    };
    if writes && role != ApiRole::Operator {
        return refuse(
            StatusCode::FORBIDDEN,
            "this token may only read: pausing, restarting, re-snapshots and replays need an `operator` token",
        );
    }
    if writes {
        tracing::info!(token = holder, method = %request.method(), path, "management API action");
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::api_config::ApiToken;
    use syncline_core::config::Secret;

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_this_machine_only() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9470",
            "localhost",
            "LOCALHOST:80",
            "[::1]:9470",
            "[::1]",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for no in [
            "",
            "evil.example",
            "evil.example:9470",
            "10.0.0.1:9470",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!loopback_host(no), "{no}");
        }
    }

    #[test]
    fn tokens_are_found_by_value_with_their_role() {
        let config = ApiConfig {
            listen: None,
            tokens: vec![
                ApiToken {
                    name: "grafana".into(),
                    role: ApiRole::Read,
                    token: Secret("read-token-0123456789".into()),
                },
                ApiToken {
                    name: "oncall".into(),
                    role: ApiRole::Operator,
                    token: Secret("operator-token-0123456789".into()),
                },
            ],
            allow_anonymous: false,
        };
        let auth = Auth::new(&config);
        assert!(!auth.check_host, "tokens replace the Host check");
        assert_eq!(
            auth.role_of("operator-token-0123456789"),
            Some(("oncall", ApiRole::Operator))
        );
        assert_eq!(
            auth.role_of("read-token-0123456789"),
            Some(("grafana", ApiRole::Read))
        );
        assert_eq!(auth.role_of("read-token-012345678"), None);
        assert_eq!(auth.role_of(""), None);
    }
}
