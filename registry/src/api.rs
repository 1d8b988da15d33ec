//! The Confluent Schema Registry REST API (Avro only): routes, request
//! parsing, and Confluent's error shape `{"error_code": N, "message": "..."}`.
//!
//! Handlers only translate: requests become [`Command`]s (writes, through the
//! log) or questions to [`State`](crate::state::State) (reads, from memory).
//! Everything a request can check without the state (schema syntax, version
//! syntax, level names) is checked here, before anything reaches the log.

use crate::compat::Level;
use crate::schema::Candidate;
use crate::state::{Against, Applied, Command, Rejection, VersionRef};
use crate::store::{Store, WriteError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Confluent's media type; clients also accept `application/json`.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = State<Arc<Store>>;
type Params = Query<HashMap<String, String>>;
type Answer = Result<Response, ApiError>;

/// Every route of the API, behind `guard` ([`crate::guard`]).
pub fn router(store: Arc<Store>, guard: crate::guard::Guard) -> Router {
    Router::new()
        .route("/", get(|| async { reply(json!({})) }))
        .route("/schemas/types", get(|| async { reply(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/config",
            get(global_config)
                .put(set_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_level),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                405,
                "HTTP 405 Method Not Allowed",
            )
        })
        .with_state(store)
        .layer(axum::extract::DefaultBodyLimit::max(
            guard.max_request_bytes(),
        ))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::guard::check,
        ))
}

async fn schema_by_id(State(store): Shared, Path(id): Path<String>, Query(q): Params) -> Answer {
    let id = parse_id(&id)?;
    let subject = q.get("subject").filter(|s| !s.is_empty());
    let schema = store
        .read_fresh(|s| {
            s.schema_by_id(id, subject.map(String::as_str))
                .map(str::to_string)
        })
        .await?;
    Ok(reply(json!({ "schema": schema })))
}

async fn raw_schema_by_id(
    State(store): Shared,
    Path(id): Path<String>,
    Query(q): Params,
) -> Answer {
    let id = parse_id(&id)?;
    let subject = q.get("subject").filter(|s| !s.is_empty());
    let schema = store
        .read_fresh(|s| {
            s.schema_by_id(id, subject.map(String::as_str))
                .map(str::to_string)
        })
        .await?;
    Ok(raw(schema))
}

async fn versions_of_id(State(store): Shared, Path(id): Path<String>, Query(q): Params) -> Answer {
    let id = parse_id(&id)?;
    let deleted = flag(&q, "deleted");
    let found = store
        .read_fresh(|s| {
            s.subject_versions_of(id, deleted)
                .map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(subject, version)| json!({"subject": subject, "version": version}))
                })
                .map(Vec::from_iter)
        })
        .await?;
    Ok(reply(json!(found)))
}

async fn subjects(State(store): Shared, Query(q): Params) -> Answer {
    let prefix = q.get("subjectPrefix").map_or("", String::as_str);
    let deleted = flag(&q, "deleted");
    let found: Vec<String> = store.read(|s| {
        s.subjects(deleted)
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .map(str::to_string)
            .collect()
    });
    Ok(reply(json!(found)))
}

async fn versions(State(store): Shared, Path(subject): Path<String>, Query(q): Params) -> Answer {
    let deleted = flag(&q, "deleted");
    Ok(reply(json!(
        store.read_fresh(|s| s.versions(&subject, deleted)).await?
    )))
}

async fn version(
    State(store): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Answer {
    let version: VersionRef = version.parse()?;
    let deleted = flag(&q, "deleted");
    let found = store
        .read_fresh(|s| {
            s.version(&subject, version, deleted)
                .map(|v| json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema}))
        })
        .await?;
    Ok(reply(found))
}

async fn raw_version(
    State(store): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Answer {
    let version: VersionRef = version.parse()?;
    let deleted = flag(&q, "deleted");
    let schema = store
        .read_fresh(|s| {
            s.version(&subject, version, deleted)
                .map(|v| v.schema.to_string())
        })
        .await?;
    Ok(raw(schema))
}

async fn register(State(store): Shared, Path(subject): Path<String>, body: Bytes) -> Answer {
    let candidate = candidate(&body)?;
    if let Some((id, _)) = store.read(|s| s.live_registration(&subject, &candidate)) {
        return Ok(reply(json!({ "id": id })));
    }
    match store
        .write(Command::Register {
            subject,
            schema: candidate.text,
        })
        .await?
    {
        Applied::Registered { id, .. } => Ok(reply(json!({ "id": id }))),
        other => Err(unexpected(other)),
    }
}

async fn lookup(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    let candidate = candidate(&body)?;
    let deleted = flag(&q, "deleted");
    let found = store
        .read_fresh(|s| {
            s.lookup(&subject, &candidate, deleted)
                .map(|v| json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema}))
        })
        .await?;
    Ok(reply(found))
}

async fn delete_subject(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Answer {
    let permanent = flag(&q, "permanent");
    match store
        .write(Command::DeleteSubject { subject, permanent })
        .await?
    {
        Applied::DeletedSubject(versions) => Ok(reply(json!(versions))),
        other => Err(unexpected(other)),
    }
}

async fn delete_version(
    State(store): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Answer {
    let version: VersionRef = version.parse()?;
    let permanent = flag(&q, "permanent");
    match store
        .write(Command::DeleteVersion {
            subject,
            version,
            permanent,
        })
        .await?
    {
        Applied::DeletedVersion(n) => Ok(reply(json!(n))),
        other => Err(unexpected(other)),
    }
}

async fn global_config(State(store): Shared) -> Answer {
    let level = store.read(|s| s.compatibility(None, true))?;
    Ok(reply(json!({ "compatibilityLevel": level })))
}

async fn set_global_config(State(store): Shared, body: Bytes) -> Answer {
    set_level(&store, None, &body).await
}

async fn delete_global_config(State(store): Shared) -> Answer {
    clear_level(&store, None).await
}

async fn subject_config(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Answer {
    let default_to_global = flag(&q, "defaultToGlobal");
    let level = store.read(|s| s.compatibility(Some(&subject), default_to_global))?;
    Ok(reply(json!({ "compatibilityLevel": level })))
}

async fn set_subject_config(
    State(store): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    set_level(&store, Some(subject), &body).await
}

async fn delete_subject_config(State(store): Shared, Path(subject): Path<String>) -> Answer {
    clear_level(&store, Some(subject)).await
}

async fn set_level(store: &Store, subject: Option<String>, body: &Bytes) -> Answer {
    #[derive(Deserialize)]
    struct ConfigRequest {
        compatibility: Option<String>,
    }
    let request: ConfigRequest = parse_body(body)?;
    let level = request.compatibility.as_deref().and_then(|l| l.parse::<Level>().ok()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive",
        )
    })?;
    match store
        .write(Command::SetCompatibility {
            subject,
            level: Some(level),
        })
        .await?
    {
        Applied::Compatibility { .. } => Ok(reply(json!({ "compatibility": level }))),
        other => Err(unexpected(other)),
    }
}

/// Drop a subject's level (or reset the global one); answers the level dropped.
async fn clear_level(store: &Store, subject: Option<String>) -> Answer {
    match store
        .write(Command::SetCompatibility {
            subject,
            level: None,
        })
        .await?
    {
        Applied::Compatibility { previous } => Ok(reply(
            json!({ "compatibilityLevel": previous.unwrap_or(Level::DEFAULT) }),
        )),
        other => Err(unexpected(other)),
    }
}

async fn check_version(
    State(store): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    let version: VersionRef = version.parse()?;
    check(&store, subject, Against::Version(version), &q, &body).await
}

async fn check_level(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    check(&store, subject, Against::Level, &q, &body).await
}

async fn check(
    store: &Store,
    subject: String,
    against: Against,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Answer {
    let candidate = candidate(body)?;
    let problems = store
        .read_fresh(|s| s.check(&subject, &candidate, against))
        .await?;
    let mut answer = json!({ "is_compatible": problems.is_empty() });
    if flag(q, "verbose") {
        answer["messages"] = json!(problems);
    }
    Ok(reply(answer))
}

/// The schema of a register, lookup or compatibility request, parsed as Avro.
fn candidate(body: &Bytes) -> Result<Candidate, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SchemaRequest {
        schema: Option<String>,
        schema_type: Option<String>,
        #[serde(default)]
        references: Vec<Value>,
    }
    let request: SchemaRequest = parse_body(body)?;
    if let Some(t) = request
        .schema_type
        .filter(|t| !t.eq_ignore_ascii_case("AVRO"))
    {
        return Err(Rejection::InvalidSchema(format!("Invalid schema type {t}")).into());
    }
    if !request.references.is_empty() {
        return Err(Rejection::InvalidSchema(
            "Schema references are not supported by this registry".into(),
        )
        .into());
    }
    Ok(Candidate::parse(request.schema.as_deref().unwrap_or(""))?)
}

/// A JSON body; 400 if it is not JSON, 422 if it has the wrong shape.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            400,
            format!("Invalid JSON body: {e}"),
        )
    })?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            format!("Unrecognized request body: {e}"),
        )
    })
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {id} not found"),
        )
    })
}

/// A boolean query parameter (`?deleted=true`); absent means false.
fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn reply(body: Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

/// A schema's own text, as `GET .../schema` returns it.
fn raw(schema: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], schema).into_response()
}

/// An answer in Confluent's error shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

fn unexpected(applied: Applied) -> ApiError {
    tracing::error!(?applied, "a command produced an outcome of another command");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        50001,
        "Error in the backend data store",
    )
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let (status, code) = match &r {
            Rejection::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Rejection::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            Rejection::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            Rejection::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            Rejection::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            Rejection::VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            Rejection::VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            Rejection::SubjectCompatibilityNotConfigured(_) => (StatusCode::NOT_FOUND, 40408),
            Rejection::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Rejection::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Rejection::Incompatible { .. } => (StatusCode::CONFLICT, 409),
        };
        Self::new(status, code, r.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Rejected(r) => r.into(),
            WriteError::Store(e) => {
                tracing::warn!(error = %e, "write failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50001,
                    format!("Error in the backend data store: {e}"),
                )
            }
            WriteError::TimedOut(after) => {
                tracing::warn!(?after, "write timed out");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50002,
                    format!("Operation timed out after {after:?}"),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.code, "message": self.message });
        (
            self.status,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response()
    }
}
