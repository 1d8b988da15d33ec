//! The `http` sink: changes delivered to an HTTP endpoint as JSON, in
//! batches, at least once, made idempotent for the receiver.
//!
//! # What it guarantees
//! - **Every change reaches the receiver at least once**, in per-partition
//!   order (so per-key order): the runtime writes one request at a time, and
//!   the consumed offsets are committed to Kafka ([`OffsetsHome::Kafka`])
//!   only after the receiver answered 2xx. After a crash, a rebalance or a
//!   failed request, the records after the last committed offset are sent
//!   again.
//! - **Repeats can be dropped exactly**: every change carries an `id` made of
//!   its identity (source name, position, and a digest of its table and
//!   key: the rows of one snapshot share a position), equal across
//!   retries, restarts and upstream replays (a source that publishes a
//!   change again after its own crash publishes the same identity). Every
//!   request carries an `Idempotency-Key`: the SHA-256 of the ids it
//!   carries, equal across retries of that request. A receiver that keeps
//!   the ids it has applied (or applies a change only if its position is
//!   newer than the row's, as syncline's database sinks do) sees each
//!   change's effect once.
//!
//! # The request
//! `POST` (or `PUT`) of `{"changes": [change, ...]}` with
//! `Content-Type: application/json`, `Idempotency-Key`, the configured
//! headers and auth, and with a signing secret the Standard Webhooks
//! headers (`sign.rs`). A change (`body.rs`): `id`, `op`, `key`, `before`,
//! `after`, `unchanged`, `source` (connector, name, db, table, readable
//! position, time), `schema` (registry id of the value schema) and its Kafka
//! origin (`topic`, `partition`, `offset`).
//!
//! # Answers
//! 2xx: done, the offsets move on. A status in `retry_status` (default
//! 408, 429, 5xx), a timeout or a connection error: retried by the runtime
//! with its backoff, waiting at least the answer's `Retry-After`. Any other
//! status: the receiver refuses the data; the runtime splits the request
//! until the refused change is alone and dead-letters it, with the status
//! and the start of the answer's body in the reason.

mod body;
mod config;
pub mod sign;

pub use body::change_id;
pub use config::{Auth, Basic, HttpSinkConfig, Method, Secret};

use config::Settings;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};
use syncline_core::codec::Decoded;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, ErrorKind, Result};
use syncline_runtime::consume::ConsumeSettings;
use syncline_runtime::{Commit, OffsetsHome, Record, Stage};

/// A built sink, ready to run.
pub struct HttpSink {
    settings: Settings,
    ctx: ComponentContext,
    client: reqwest::Client,
}

impl HttpSink {
    fn new(settings: Settings, ctx: ComponentContext) -> Result<HttpSink> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::internal("cannot build the HTTP client").with_source(e))?;
        Ok(HttpSink {
            settings,
            ctx,
            client,
        })
    }

    /// Consume until `shutdown`, or until an error that retrying cannot fix.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let consume = ConsumeSettings {
            kind: "http",
            group_id: s.group_id.clone(),
            topics: s.topics.clone(),
            batch: s.batch.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
        };
        let stage = SinkStage {
            settings: self.settings.clone(),
            client: self.client.clone(),
        };
        crate::run_stage(&self.ctx, consume, stage, shutdown).await
    }
}

/// One change, ready to send: its id and its JSON text (encoded once, in
/// `prepare`; a request only joins them, also when it is split or retried).
pub struct Delivery {
    id: String,
    json: Vec<u8>,
}

struct SinkStage {
    settings: Settings,
    client: reqwest::Client,
}

impl Stage for SinkStage {
    type Item = Delivery;

    fn offsets_home(&self) -> OffsetsHome {
        OffsetsHome::Kafka
    }

    fn prepare(&mut self, record: &Record, decoded: Decoded) -> Result<Option<Delivery>> {
        let (id, json) = body::change(record, &decoded)
            .map_err(|reason| Error::data(format!("cannot send it: {reason}")))?;
        let json = serde_json::to_vec(&json)
            .map_err(|e| Error::internal("cannot encode a change").with_source(e))?;
        Ok(Some(Delivery { id, json }))
    }

    async fn write(&mut self, items: &[Delivery], _commit: &Commit<'_>) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        // `{"changes":[...]}` of the changes' JSON, as encoded in `prepare`.
        let mut body =
            Vec::with_capacity(items.iter().map(|d| d.json.len() + 1).sum::<usize>() + 14);
        body.extend_from_slice(b"{\"changes\":[");
        for (i, d) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&d.json);
        }
        body.extend_from_slice(b"]}");
        let key = idempotency_key(items.iter().map(|d| d.id.as_str()));
        let s = &self.settings;
        let mut request = match s.method {
            Method::Post => self.client.post(s.url.clone()),
            Method::Put => self.client.put(s.url.clone()),
        }
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", &key);
        for (name, value) in &s.headers {
            request = request.header(name, &value.0);
        }
        if let Some(auth) = &s.auth {
            if let Some(token) = &auth.bearer {
                request = request.bearer_auth(&token.0);
            } else if let Some(b) = &auth.basic {
                request = request.basic_auth(&b.username, Some(&b.password.0));
            }
        }
        if let Some(secret) = &s.signing_key {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            for (name, value) in sign::headers(secret, &key, now, &body) {
                request = request.header(name, value);
            }
        }
        // The URL only: never a header (auth, keys) in an error.
        let url = s.url.as_str();
        let answer = request.body(body).send().await.map_err(|e| {
            Error::transient(format!(
                "cannot deliver {} changes to {url} ({})",
                items.len(),
                if e.is_timeout() {
                    "timed out"
                } else {
                    "no answer"
                }
            ))
            .with_source(e.without_url())
        })?;
        let status = answer.status().as_u16();
        if answer.status().is_success() {
            return Ok(items.len());
        }
        let retry_after = retry_after(answer.headers());
        let text = answer.text().await.unwrap_or_default();
        let start: String = text.chars().take(500).collect();
        let what = format!("{url} answered {status}: {start}");
        if s.retry.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
            let e = Error::transient(what);
            return Err(match retry_after {
                Some(wait) => e.retrying_after(wait),
                None => e,
            });
        }
        Err(Error::new(
            ErrorKind::Data,
            format!("the receiver refused it: {what}"),
        ))
    }
}

/// The key of a request carrying the changes `ids`: hex SHA-256 of them,
/// newline-separated.
pub fn idempotency_key<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    syncline_runtime::backoff::retry_after(
        headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_retry_after_reads_both_forms() {
        let a = idempotency_key(["src/01", "src/02"].into_iter());
        assert_eq!(a, idempotency_key(["src/01", "src/02"].into_iter()));
        assert_ne!(a, idempotency_key(["src/01"].into_iter()));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
    }
}
