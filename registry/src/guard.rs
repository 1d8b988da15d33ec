//! Who may ask what, and how much: the layer in front of every route.
//!
//! - **Credentials and roles.** `read` credentials may read (every `GET`,
//!   and the `POST`s that only ask: looking a schema up under a subject,
//!   testing compatibility); `write` credentials may also register, delete
//!   and set levels. A credential is `user:password` (HTTP Basic, what
//!   Confluent clients and syncline's `registry.username`/`password` send)
//!   or a bare token (`Authorization: Bearer <token>`). Credentials are
//!   compared as SHA-256 digests in constant time and never logged. Missing
//!   or wrong ones get 401 (with `WWW-Authenticate`), a read credential on a
//!   write 403. With no credentials configured the registry is open, which
//!   `syncline registry` allows only on a loopback address unless told
//!   `--allow-anonymous`.
//! - **Content-Type.** A `POST` or `PUT` must say it sends JSON
//!   (`application/vnd.schemaregistry.v1+json`,
//!   `application/vnd.schemaregistry+json` or `application/json`), else 415:
//!   a web page can send `text/plain` or a form to a registry on localhost
//!   without the browser asking the registry first, but not JSON.
//! - **Limits.** A body over `max_request_bytes` gets 413; more than
//!   `max_concurrent_requests` at once get 429 with `Retry-After`; a request
//!   not answered within `request_timeout` gets 503 (a write may still be
//!   applied: retrying it is safe, see [`crate::store`]).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// A refusal in Confluent's error shape (`{"error_code", "message"}`), as
/// the API answers its own errors.
fn refusal(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error_code": code, "message": message.into() });
    (
        status,
        [(
            header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )],
        body.to_string(),
    )
        .into_response()
}

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

/// The configured credentials: SHA-256 of `Basic <user:password>` or of
/// `Bearer <token>`, each with its role. Empty: open.
#[derive(Clone, Default)]
pub struct Auth {
    credentials: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({} credentials)", self.credentials.len())
    }
}

impl Auth {
    /// Credentials from two comma-separated lists (`user:password` or a
    /// bare token each). The error names the list and the entry's index,
    /// never its text.
    pub fn parse(read: Option<&str>, write: Option<&str>) -> Result<Auth, String> {
        let mut credentials = Vec::new();
        for (list, role, name) in [(read, Role::Read, "read"), (write, Role::Write, "write")] {
            let Some(list) = list else { continue };
            for (i, entry) in list.split(',').map(str::trim).enumerate() {
                if entry.is_empty() {
                    continue;
                }
                let presented = match entry.split_once(':') {
                    Some((user, password)) if !user.is_empty() && !password.is_empty() => format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(entry)
                    ),
                    Some(_) => {
                        return Err(format!(
                            "{name} credential #{} has an empty user or password: write `user:password` or a bare token",
                            i + 1
                        ))
                    }
                    None if entry.len() < 16 => {
                        return Err(format!(
                            "{name} credential #{} is a token shorter than 16 characters: use a long random one",
                            i + 1
                        ))
                    }
                    None => format!("Bearer {entry}"),
                };
                credentials.push((digest(presented.as_bytes()), role));
            }
        }
        Ok(Auth { credentials })
    }

    pub fn is_open(&self) -> bool {
        self.credentials.is_empty()
    }

    /// The role of an `Authorization` header; `None`: missing or unknown.
    fn role_of(&self, header: Option<&HeaderValue>) -> Option<Role> {
        let presented = digest(&canonical_credentials(header?.as_bytes()));
        // every credential is compared, so the time says nothing about which matched
        let mut role = None;
        for (expected, r) in &self.credentials {
            if constant_time_eq(expected, &presented) {
                role = role.max(Some(*r));
            }
        }
        role
    }
}

/// An `Authorization` value as the configured digests spell it: RFC 7235
/// auth schemes are case-insensitive (`basic`, `BEARER` are `Basic`,
/// `Bearer`), and one or more spaces may follow them. The credentials
/// themselves stay as sent (base64 and tokens are case-sensitive).
fn canonical_credentials(value: &[u8]) -> Vec<u8> {
    let value = value.trim_ascii();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return value.to_vec();
    };
    let (scheme, rest) = value.split_at(space);
    let scheme: &[u8] = if scheme.eq_ignore_ascii_case(b"basic") {
        b"Basic"
    } else if scheme.eq_ignore_ascii_case(b"bearer") {
        b"Bearer"
    } else {
        scheme
    };
    [scheme, b" ", rest.trim_ascii_start()].concat()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The limits of one registry process.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 8 * 1024 * 1024,
            max_concurrent_requests: 512,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// What the layer holds.
#[derive(Clone)]
pub struct Guard {
    auth: Arc<Auth>,
    limits: Limits,
    slots: Arc<Semaphore>,
}

impl Guard {
    pub fn new(auth: Auth, limits: Limits) -> Guard {
        Guard {
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            auth: Arc::new(auth),
            limits,
        }
    }

    pub fn max_request_bytes(&self) -> usize {
        self.limits.max_request_bytes
    }
}

/// The role a request needs: reads, and the `POST`s that only ask.
fn needs(method: &Method, path: &str) -> Role {
    let asks = method == Method::POST
        && (path.starts_with("/compatibility/")
            || (path.starts_with("/subjects/") && path.matches('/').count() == 2));
    if method == Method::GET || method == Method::HEAD || asks {
        Role::Read
    } else {
        Role::Write
    }
}

/// Whether `value` is a JSON media type the API takes.
fn json_content_type(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        media.as_str(),
        "application/vnd.schemaregistry.v1+json"
            | "application/vnd.schemaregistry+json"
            | "application/json"
    )
}

/// The layer: auth, then Content-Type, then the concurrency and time limits.
pub async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if !guard.auth.is_open() {
        let need = needs(request.method(), request.uri().path());
        match guard
            .auth
            .role_of(request.headers().get(header::AUTHORIZATION))
        {
            None => {
                let mut r = refusal(StatusCode::UNAUTHORIZED,
                    40101,
                    "Unauthorized: this registry needs credentials (HTTP Basic user:password, or a Bearer token)",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"syncline registry\""),
                );
                return r;
            }
            Some(role) if role < need => {
                return refusal(
                    StatusCode::FORBIDDEN,
                    40301,
                    "Forbidden: these credentials may read, not write",
                )
            }
            Some(_) => {}
        }
    }
    let m = request.method();
    if (m == Method::POST || m == Method::PUT)
        && !json_content_type(request.headers().get(header::CONTENT_TYPE))
    {
        return refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "Unsupported Media Type: send the body as application/vnd.schemaregistry.v1+json (or application/json)",
        );
    }
    let Ok(_slot) = guard.slots.clone().try_acquire_owned() else {
        let mut r = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            42901,
            "Too many requests at once: retry shortly",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    match tokio::time::timeout(guard.limits.request_timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => refusal(StatusCode::SERVICE_UNAVAILABLE,
            50301,
            format!(
                "the request was not answered within {} s; a write may still be applied, and retrying it is safe",
                guard.limits.request_timeout.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        ))
        .unwrap()
    }

    #[test]
    fn credentials_have_roles_and_unknown_ones_have_none() {
        let auth = Auth::parse(
            Some("reader:r-pass, 0123456789abcdefREAD"),
            Some("writer:w-pass"),
        )
        .unwrap();
        assert_eq!(
            auth.role_of(Some(&basic("reader:r-pass"))),
            Some(Role::Read)
        );
        assert_eq!(
            auth.role_of(Some(&basic("writer:w-pass"))),
            Some(Role::Write)
        );
        assert_eq!(auth.role_of(Some(&basic("writer:wrong"))), None);
        assert_eq!(
            auth.role_of(Some(&HeaderValue::from_static(
                "Bearer 0123456789abcdefREAD"
            ))),
            Some(Role::Read)
        );
        assert_eq!(auth.role_of(None), None);
        assert!(Auth::parse(None, None).unwrap().is_open());
    }

    #[test]
    fn auth_schemes_match_in_any_case_and_credentials_only_exactly() {
        let auth = Auth::parse(Some("reader:r-pass"), Some("0123456789abcdefWRITE")).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode("reader:r-pass");
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            let h = HeaderValue::from_str(&format!("{scheme} {encoded}")).unwrap();
            assert_eq!(auth.role_of(Some(&h)), Some(Role::Read), "{scheme}");
        }
        let spaced = HeaderValue::from_str(&format!("basic   {encoded}")).unwrap();
        assert_eq!(auth.role_of(Some(&spaced)), Some(Role::Read));
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let h = HeaderValue::from_str(&format!("{scheme} 0123456789abcdefWRITE")).unwrap();
            assert_eq!(auth.role_of(Some(&h)), Some(Role::Write), "{scheme}");
        }
        // the token and the base64 are compared as sent
        let token = HeaderValue::from_static("bearer 0123456789ABCDEFwrite");
        assert_eq!(auth.role_of(Some(&token)), None);
        let lower = HeaderValue::from_str(&format!("basic {}", encoded.to_lowercase())).unwrap();
        assert_eq!(auth.role_of(Some(&lower)), None);
        // another scheme, or a scheme alone, is no credential
        let other = HeaderValue::from_str(&format!("Digest {encoded}")).unwrap();
        assert_eq!(auth.role_of(Some(&other)), None);
        assert_eq!(auth.role_of(Some(&HeaderValue::from_static("basic"))), None);
    }

    #[test]
    fn bad_credentials_are_refused_without_showing_them() {
        let e = Auth::parse(Some("tiny-tok"), None).unwrap_err();
        assert!(
            e.contains("read credential #1") && !e.contains("tiny-tok"),
            "{e}"
        );
        let e = Auth::parse(None, Some("ok:fine,:nopass")).unwrap_err();
        assert!(
            e.contains("write credential #2") && !e.contains("nopass"),
            "{e}"
        );
    }

    #[test]
    fn lookups_and_compatibility_checks_are_reads() {
        assert_eq!(needs(&Method::POST, "/subjects/s"), Role::Read);
        assert_eq!(
            needs(&Method::POST, "/compatibility/subjects/s/versions"),
            Role::Read
        );
        assert_eq!(needs(&Method::POST, "/subjects/s/versions"), Role::Write);
        assert_eq!(needs(&Method::PUT, "/config"), Role::Write);
        assert_eq!(needs(&Method::DELETE, "/subjects/s"), Role::Write);
        assert_eq!(needs(&Method::GET, "/subjects"), Role::Read);
        assert!(json_content_type(Some(&HeaderValue::from_static(
            "application/json; charset=utf-8"
        ))));
        assert!(!json_content_type(Some(&HeaderValue::from_static(
            "text/plain"
        ))));
        assert!(!json_content_type(None));
    }
}
