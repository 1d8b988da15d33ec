//! `webhook`: an HTTP listener that publishes each delivery it is sent.
//!
//! A POST to `path` is checked ([`verify`]: a signature over the raw body,
//! a timestamp within the tolerance), its body parsed as JSON, and published
//! through the runtime's publisher as one change to `topic`: key `id` (the
//! sender's delivery id), columns `event_type`, `received_at`, `body`
//! (jsonb). Answers:
//!
//! | status | when |
//! |---|---|
//! | 200 | the broker acknowledged the record (or its dead letter, for one too large for the broker) |
//! | 400 | the body is not JSON, or the scheme's id is missing |
//! | 401 | no signature, a signature no secret made, a timestamp outside the tolerance |
//! | 404 / 405 | another path / another method |
//! | 413 | a body over `max_body_bytes` |
//! | 429 + `Retry-After` | `max_in_flight` deliveries are being published already |
//! | 503 + `Retry-After` | the broker did not acknowledge within `ack_timeout_ms`, or the registry is away |
//!
//! # Guarantee
//! A 2xx is sent only after the broker acknowledged the delivery's record,
//! so a delivery that got one is in the topic, whatever happens to this
//! process next. A delivery that got anything else, or no answer (the
//! process was killed), is retried by its sender with the same id; the
//! record's identity is that id at a fixed position, so a copy already
//! published (the broker had it, the answer was lost) is a replay that every
//! syncline sink, and `dedup`, drops. Each delivery that got a 2xx is thus
//! applied once at the target; nothing unsigned or stale is published.
//! Proof: `tests/webhook.rs`, 10,000 signed deliveries with sender retries
//! and `kill -9` of syncline.

pub mod config;
pub mod verify;

pub use config::WebhookConfig;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use syncline_core::codec::Encoder;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::schema::avro_name;
use syncline_core::{
    ChangeEvent, Column, ColumnType, Error, ErrorKind, Op, Position, Result, SourceInfo,
    TableSchema,
};
use syncline_runtime::events::Events;
use syncline_runtime::publish::Publisher;
use tokio::sync::Semaphore;
use verify::{Refusal, Verifier};

/// The columns of every delivery record.
fn delivery_schema(source: &str) -> TableSchema {
    let col = |name: &str, ty: ColumnType, nullable: bool, sql_type: &str| Column {
        name: name.into(),
        ty,
        nullable,
        sql_type: sql_type.into(),
    };
    TableSchema {
        namespace: format!("syncline.{}", avro_name(source)),
        name: "delivery".into(),
        columns: vec![
            col("id", ColumnType::Text, false, "text"),
            col("event_type", ColumnType::Text, true, "text"),
            col("received_at", ColumnType::TimestampTz, false, "timestamptz"),
            col("body", ColumnType::Json, false, "jsonb"),
        ],
        primary_key: vec!["id".into()],
    }
}

struct Shared {
    name: String,
    path: String,
    topic: String,
    schema: TableSchema,
    publisher: Publisher,
    verifier: Verifier,
    permits: Semaphore,
    ack_timeout: Duration,
    events: Events,
}

pub struct WebhookSource {
    listen: std::net::SocketAddr,
    max_body: usize,
    shared: Arc<Shared>,
}

impl WebhookSource {
    pub async fn build(cfg: &WebhookConfig, ctx: ComponentContext) -> Result<WebhookSource> {
        let issues = cfg.check();
        if let Some(first) = issues.first() {
            return Err(Error::config(format!(
                "webhook source `{}` at `{}`: {}",
                ctx.component, first.path, first.message
            )));
        }
        let listen = cfg.listen_addr().map_err(Error::config)?;
        let secrets: Vec<&str> = cfg.secrets.iter().map(|s| s.0.as_str()).collect();
        let verifier = Verifier::new(
            cfg.verify,
            &secrets,
            cfg.tolerance_s,
            cfg.id_header.as_deref(),
        )
        .map_err(|e| Error::config(format!("webhook source `{}`: a secret {e}", ctx.component)))?;
        let schema = delivery_schema(&ctx.component);
        ctx.kafka
            .ensure_topic(&cfg.topic, ctx.kafka.partitions, false)
            .await?;
        let encoder = Encoder::new(&ctx.registry)?;
        encoder.prepare(&cfg.topic, &schema).await?;
        let publisher = Publisher::for_source(
            &ctx,
            "webhook",
            encoder,
            ctx.kafka.producer()?,
            cfg.dead_letter_topic.as_deref(),
        )
        .await?;
        Ok(WebhookSource {
            listen,
            max_body: cfg.max_body_bytes,
            shared: Arc::new(Shared {
                events: Events::new(&ctx, "webhook"),
                name: ctx.component,
                path: cfg.path.clone(),
                topic: cfg.topic.clone(),
                schema,
                publisher,
                verifier,
                permits: Semaphore::new(cfg.max_in_flight),
                ack_timeout: Duration::from_millis(cfg.ack_timeout_ms),
            }),
        })
    }

    /// Serve until `shutdown`; deliveries being published then finish.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::AddrInUse {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Config
                };
                Error::new(
                    kind,
                    format!(
                        "webhook source `{}`: cannot listen on {}: {e}",
                        self.shared.name, self.listen
                    ),
                )
            })?;
        tracing::info!(source = %self.shared.name, listen = %self.listen, path = %self.shared.path,
            topic = %self.shared.topic, "webhook: listening");
        self.shared.events.status().running();
        let app = Router::new()
            .route(&self.shared.path, post(deliver))
            .layer(DefaultBodyLimit::max(self.max_body))
            .with_state(self.shared.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| {
                Error::transient(format!(
                    "webhook source `{}`: the HTTP server failed: {e}",
                    self.shared.name
                ))
            })
    }
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn retry_after(status: StatusCode, seconds: u32, message: &str) -> Response {
    let mut r = answer(status, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    r
}

/// One delivery: verify, publish, wait for the broker, answer.
async fn deliver(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(_permit) = s.permits.try_acquire() else {
        s.events.skipped(1);
        return retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            1,
            "too many deliveries in flight; retry later",
        );
    };
    let now = chrono::Utc::now();
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = match s.verifier.verify(lookup, &body, now.timestamp()) {
        Ok(d) => d,
        Err(Refusal::Unauthorized(why)) => {
            s.events.skipped(1);
            tracing::debug!(source = %s.name, reason = %why, "webhook: delivery refused (401)");
            return answer(StatusCode::UNAUTHORIZED, &why);
        }
        Err(Refusal::BadRequest(why)) => {
            s.events.skipped(1);
            return answer(StatusCode::BAD_REQUEST, &why);
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        s.events.skipped(1);
        return answer(StatusCode::BAD_REQUEST, "the body is not UTF-8 JSON");
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        s.events.skipped(1);
        return answer(StatusCode::BAD_REQUEST, "the body is not JSON");
    }
    s.events.records_in(1);
    use apache_avro::types::Value;
    let id = Value::String(delivery.id.clone());
    let event = ChangeEvent {
        op: Op::Upsert,
        key: vec![("id".into(), id.clone())],
        before: None,
        after: Some(vec![
            ("id".into(), id),
            (
                "event_type".into(),
                delivery
                    .event_type
                    .map(Value::String)
                    .unwrap_or(Value::Null),
            ),
            (
                "received_at".into(),
                Value::TimestampMicros(now.timestamp_micros()),
            ),
            ("body".into(), Value::String(text.to_string())),
        ]),
        source: SourceInfo {
            connector: "webhook".into(),
            name: s.name.clone(),
            db: String::new(),
            table: s.path.clone(),
            // One position for every delivery: a delivery happens once, and
            // its retries (same id) must be replays, not newer versions.
            position: Position::builder().u64(0).build(),
            position_text: delivery.id,
            ts_us: now.timestamp_micros(),
        },
        unchanged: Vec::new(),
    };
    let pending = match s.publisher.publish(&s.topic, &s.schema, &event).await {
        Ok(p) => p,
        Err(e) => return failure(&s, e),
    };
    match tokio::time::timeout(s.ack_timeout, pending).await {
        // (counted as records_out by the publisher's acknowledgement)
        Ok(Ok(_)) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "accepted": true })),
        )
            .into_response(),
        Ok(Err(e)) => failure(&s, e),
        Err(_) => {
            tracing::warn!(source = %s.name, timeout_ms = s.ack_timeout.as_millis() as u64,
                "webhook: the broker did not acknowledge a delivery in time (503)");
            retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                5,
                "the broker did not acknowledge the delivery in time; retry later",
            )
        }
    }
}

/// The answer to a delivery that could not be published.
fn failure(s: &Shared, e: Error) -> Response {
    tracing::warn!(source = %s.name, error = %e, "webhook: a delivery was not published");
    match e.kind() {
        ErrorKind::Transient => retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            5,
            "the broker or the registry is away; retry later",
        ),
        _ => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the delivery cannot be published",
        ),
    }
}
