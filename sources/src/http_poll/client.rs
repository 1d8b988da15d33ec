//! One request of an `http_poll` source, as a careful API client makes it:
//! authenticated, within a request budget, and retried.
//!
//! - **Auth** ([`super::config::AuthConfig`]): bearer, basic, an API key in
//!   a header or the query, OAuth2 client credentials (a token fetched from
//!   `token_url`, kept until 30 s (or a tenth of its life) before it
//!   expires, fetched again after a 401).
//! - **Rate limits**: `requests_per_second` spaces the requests; a 429 waits
//!   what `Retry-After` says (seconds or an HTTP date), else backs off;
//!   `X-RateLimit-Remaining: 0` (or `RateLimit-Remaining`) holds the next
//!   request until `X-RateLimit-Reset` (epoch seconds, or seconds from now).
//! - **Retries**: no answer, a timeout, 429, 5xx and an answer that is not
//!   JSON are retried with exponential backoff and jitter (the runtime's
//!   `Backoff`), each retry logged and counted; another 4xx stops the source
//!   with the status and the start of the answer.
//!
//! Secrets never reach a log or an error: errors name the URL without its
//! query (where an API key may be) and reqwest's errors lose their URL.

use super::config::{HttpPollConfig, Method, OAuth2};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, Instant};
use syncline_core::runtime::Shutdown;
use syncline_core::{Error, ErrorKind, Result};
use syncline_runtime::backoff::{retry_after, Backoff};
use syncline_runtime::events::Events;

/// What `application/x-www-form-urlencoded` escapes: all but the
/// unreserved characters.
const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An answer: its JSON body and its `Link` header.
pub struct Answer {
    pub body: Value,
    pub link: Option<String>,
}

/// The configured auth, one of its kinds.
#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(String, String),
    HeaderKey(String, String),
    QueryKey(String, String),
    OAuth2(OAuth2),
}

struct Token {
    value: String,
    good_until: Instant,
}

pub struct Client {
    http: reqwest::Client,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: Option<Value>,
    auth: Option<Auth>,
    token: Option<Token>,
    spacing: Option<Duration>,
    next_allowed: Instant,
    events: Events,
}

/// `https://host/path?query` -> `https://host/path`: what errors show.
pub fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

impl Client {
    pub fn new(cfg: &HttpPollConfig, events: Events) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| Error::config("cannot build the HTTP client").with_source(e))?;
        Ok(Client {
            http,
            method: cfg.method,
            url: cfg.url.clone(),
            headers: cfg
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            query: cfg
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: cfg.body.as_deref().cloned(),
            auth: cfg.auth.as_deref().and_then(|a| {
                if let Some(t) = &a.bearer {
                    Some(Auth::Bearer(t.0.clone()))
                } else if let Some(b) = &a.basic {
                    Some(Auth::Basic(b.username.clone(), b.password.0.clone()))
                } else if let Some(k) = &a.api_key {
                    match (&k.header, &k.query) {
                        (Some(h), _) => Some(Auth::HeaderKey(h.clone(), k.value.0.clone())),
                        (None, Some(q)) => Some(Auth::QueryKey(q.clone(), k.value.0.clone())),
                        (None, None) => None,
                    }
                } else {
                    a.oauth2.clone().map(Auth::OAuth2)
                }
            }),
            token: None,
            spacing: cfg
                .requests_per_second
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next_allowed: Instant::now(),
            events,
        })
    }

    /// GET (or POST) the configured URL, or `url` (a next-page URL, which
    /// carries its own query), with `extra` query parameters; retried until
    /// it answers or fails for good. `None`: shutdown came first.
    pub async fn fetch(
        &mut self,
        url: Option<&str>,
        extra: &[(String, String)],
        shutdown: &Shutdown,
    ) -> Result<Option<Answer>> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut refreshed = false;
        loop {
            let wait = self.next_allowed.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            return match self.attempt(url, extra, shutdown).await {
                Ok(Some(a)) => {
                    backoff.reset();
                    return Ok(Some(a));
                }
                Ok(None) => return Ok(None),
                Err(Failure::Unauthorized(e))
                    if !refreshed && matches!(self.auth, Some(Auth::OAuth2(_))) =>
                {
                    // The token was revoked or expired early: a new one, once.
                    tracing::info!(component = %self.events.component(), error = %e,
                        "http_poll: 401 with an OAuth2 token; fetching a new one");
                    self.token = None;
                    refreshed = true;
                    continue;
                }
                Err(Failure::Unauthorized(e)) => Err(e),
                Err(Failure::Retry(e, wait)) => {
                    let delay = wait.unwrap_or_else(|| backoff.next_delay());
                    self.events.retrying(
                        "http_poll: a request failed",
                        &e,
                        backoff.attempts(),
                        delay,
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
                Err(Failure::Stop(e)) => Err(e),
            };
        }
    }

    async fn attempt(
        &mut self,
        url: Option<&str>,
        extra: &[(String, String)],
        shutdown: &Shutdown,
    ) -> std::result::Result<Option<Answer>, Failure> {
        let target = url.unwrap_or(&self.url).to_string();
        let mut req = match self.method {
            Method::Get => self.http.get(&target),
            Method::Post => self.http.post(&target),
        };
        if url.is_none() {
            req = req.query(&self.query);
        }
        req = req.query(extra);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &self.body {
            req = req.json(b);
        }
        match self.auth.clone() {
            None => {}
            Some(Auth::Bearer(t)) => req = req.bearer_auth(t),
            Some(Auth::Basic(user, password)) => req = req.basic_auth(user, Some(password)),
            Some(Auth::HeaderKey(h, value)) => req = req.header(h, value),
            Some(Auth::QueryKey(q, value)) => req = req.query(&[(q, value)]),
            Some(Auth::OAuth2(_)) => match self.oauth_token(shutdown).await? {
                Some(t) => req = req.bearer_auth(t),
                None => return Ok(None),
            },
        }
        self.next_allowed = Instant::now() + self.spacing.unwrap_or_default();
        let shown_url = shown(&target).to_string();
        let answer = req.send().await.map_err(|e| {
            Failure::Retry(
                Error::transient(format!(
                    "no answer from {shown_url} ({})",
                    if e.is_timeout() {
                        "timed out"
                    } else {
                        "connection failed"
                    }
                ))
                .with_source(e.without_url()),
                None,
            )
        })?;
        let status = answer.status().as_u16();
        self.obey_rate_headers(answer.headers());
        if status == 429 || answer.status().is_server_error() {
            let wait = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after);
            return Err(Failure::Retry(
                Error::transient(format!("{shown_url} answered {status}")),
                wait,
            ));
        }
        if !answer.status().is_success() {
            let text: String = answer
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            let e = Error::new(
                ErrorKind::Config,
                format!("{shown_url} answered {status}: {text}"),
            );
            return Err(if status == 401 {
                Failure::Unauthorized(e)
            } else {
                Failure::Stop(e)
            });
        }
        let link = answer
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = answer.bytes().await.map_err(|e| {
            Failure::Retry(
                Error::transient(format!("the answer of {shown_url} broke off"))
                    .with_source(e.without_url()),
                None,
            )
        })?;
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Retry(
                Error::transient(format!("the answer of {shown_url} is not JSON ({e})")),
                None,
            )
        })?;
        Ok(Some(Answer { body, link }))
    }

    /// `X-RateLimit-Remaining: 0` holds the next request until the reset.
    fn obey_rate_headers(&mut self, h: &HeaderMap) {
        let get = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| h.get(*n))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        if get(["x-ratelimit-remaining", "ratelimit-remaining"]) != Some(0.0) {
            return;
        }
        let Some(reset) = get(["x-ratelimit-reset", "ratelimit-reset"]) else {
            return;
        };
        let now = chrono::Utc::now().timestamp() as f64;
        // An epoch time, or seconds from now (both are in use).
        let secs = if reset > 1_000_000_000.0 {
            reset - now
        } else {
            reset
        };
        let wait = Duration::from_secs_f64(secs.clamp(0.0, 3600.0));
        tracing::info!(component = %self.events.component(), wait_ms = wait.as_millis() as u64,
            "http_poll: the API's rate limit is used up; waiting for its reset");
        self.next_allowed = self.next_allowed.max(Instant::now() + wait);
    }

    /// A valid OAuth2 access token, fetched when missing or about to expire.
    async fn oauth_token(
        &mut self,
        shutdown: &Shutdown,
    ) -> std::result::Result<Option<String>, Failure> {
        if let Some(t) = &self.token {
            if Instant::now() < t.good_until {
                return Ok(Some(t.value.clone()));
            }
        }
        let Some(Auth::OAuth2(OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
        })) = self.auth.clone()
        else {
            unreachable!("called for oauth2 only");
        };
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id),
            ("client_secret", client_secret.0),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, FORM)))
            .collect::<Vec<_>>()
            .join("&");
        let shown_url = shown(&token_url).to_string();
        let answer = self
            .http
            .post(&token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                Failure::Retry(
                    Error::transient(format!("no answer from the token endpoint {shown_url}"))
                        .with_source(e.without_url()),
                    None,
                )
            })?;
        let status = answer.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Retry(
                Error::transient(format!("the token endpoint {shown_url} answered {status}")),
                None,
            ));
        }
        if !status.is_success() {
            return Err(Failure::Stop(Error::config(format!(
                "the token endpoint {shown_url} refused the client credentials ({status}): check auth.oauth2"
            ))));
        }
        #[derive(serde::Deserialize)]
        struct Granted {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let granted: Granted = answer.json().await.map_err(|_| {
            Failure::Retry(
                Error::transient(format!(
                    "the token endpoint {shown_url} answered no access_token"
                )),
                None,
            )
        })?;
        // Used until shortly before it expires: 30 s, or a tenth of a short life.
        let life = Duration::from_secs(granted.expires_in.unwrap_or(3600));
        let margin = (life / 10).min(Duration::from_secs(30));
        self.token = Some(Token {
            value: granted.access_token.clone(),
            good_until: Instant::now() + life - margin,
        });
        Ok(Some(granted.access_token))
    }
}

enum Failure {
    /// Retried after the wait the server asked for, else with backoff.
    Retry(Error, Option<Duration>),
    /// 401: a new OAuth2 token may help, once.
    Unauthorized(Error),
    /// Stops the source.
    Stop(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_urls_without_their_query() {
        assert_eq!(
            shown("https://api.example.com/v1/x?api_key=s3cret&a=1"),
            "https://api.example.com/v1/x"
        );
        assert_eq!(shown("http://h/p"), "http://h/p");
    }
}
