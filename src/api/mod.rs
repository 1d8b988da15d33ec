//! The management API and dashboard that `syncline run` serves
//! (docs/api.md; the contract is docs/openapi.yaml, which tests/api.rs
//! checks the routes against and runs schemathesis with).
//!
//! It answers for the components this process runs: their state, lag,
//! throughput and latency (from each component's live status), operators'
//! pause, resume, restart and re-snapshot (handed to the supervisor), and
//! the pipeline's dead letters, listed and replayed through
//! [`crate::dead_letters`]. `auth.rs` says who may do what.

pub mod auth;
mod dashboard;
pub mod history;
mod routes;
mod views;

pub use crate::pipeline::api_config::{ApiConfig, ApiRole, ApiToken, DEFAULT_LISTEN};

use crate::pipeline::config::PipelineConfig;
use crate::pipeline::supervise::Handle;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;
use std::sync::Arc;
use syncline_core::runtime::Shutdown;

/// Largest request body taken (413 above).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answer: `{"error": "..."}` with a status.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// An error of a system the API called (Kafka, the registry, a
    /// database): its kind decides the status.
    pub fn from_error(e: &syncline_core::Error) -> Self {
        use syncline_core::ErrorKind;
        let status = match e.kind() {
            ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Config | ErrorKind::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// What every route reads.
pub struct ApiState {
    pub pipeline: PipelineConfig,
    pub file: PathBuf,
    pub handles: Vec<Handle>,
    pub history: Arc<history::History>,
    /// Shows dead letters' keys; one for the process, so the writer
    /// schemas it fetches stay cached between requests.
    pub keys: Option<syncline_core::codec::Decoder>,
}

/// Serve the API and the dashboard on `listener` (bound by the caller, so
/// that `syncline run` can refuse to start when an address it was given
/// is taken) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    config: &ApiConfig,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let history = state.history.clone();
    tokio::spawn(history.run(state.handles.clone()));
    let auth = Arc::new(auth::Auth::new(config));
    let app = routes::router(Arc::new(state))
        .merge(dashboard::router())
        .layer(axum::middleware::from_fn_with_state(auth, auth::guard))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(security_headers));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Headers on every answer: no framing (the dashboard's buttons act), no
/// type sniffing, no caching of API answers.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::{self, HeaderValue};
    let api = request.uri().path().starts_with("/api/");
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
