//! The routes of docs/openapi.yaml and their handlers. [`routes`] is the one
//! table the router is built from, and a test holds it equal to the paths
//! and methods of the OpenAPI file.

use super::views::{self, ComponentStatus, DeadLetterList, ReplayOutcome};
use super::{ApiError, ApiState};
use crate::dead_letters::{self, DeadLetterTopic, Filter, Letter};
use crate::pipeline::supervise::{Control, Handle};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;
use syncline_core::status::State as ComponentState;

type S = Arc<ApiState>;

/// Method, path and handler of every route.
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<S>)> {
    vec![
        ("get", "/healthz", get(health)),
        ("get", "/readyz", get(ready)),
        ("get", "/api/v1/version", get(version)),
        ("get", "/api/v1/pipeline", get(pipeline)),
        ("get", "/api/v1/components", get(list_components)),
        ("get", "/api/v1/components/{name}", get(component)),
        ("get", "/api/v1/components/{name}/history", get(history)),
        (
            "post",
            "/api/v1/components/{name}/pause",
            action(Control::Pause),
        ),
        (
            "post",
            "/api/v1/components/{name}/resume",
            action(Control::Resume),
        ),
        (
            "post",
            "/api/v1/components/{name}/restart",
            action(Control::Restart),
        ),
        ("post", "/api/v1/components/{name}/snapshot", post(snapshot)),
        ("get", "/api/v1/dead-letters", get(list_dead_letters)),
        ("post", "/api/v1/dead-letters/replay", post(replay)),
    ]
}

pub fn router(state: S) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(not_found).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route: see docs/openapi.yaml",
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(s): State<S>) -> Response {
    let not_running: Vec<serde_json::Value> = s
        .handles
        .iter()
        .filter(|h| h.local)
        .map(|h| (h, h.status.state()))
        .filter(|(_, state)| *state != ComponentState::Running)
        .map(|(h, state)| serde_json::json!({ "name": h.name, "state": state }))
        .collect();
    let ready = not_running.is_empty();
    let body = Json(serde_json::json!({ "ready": ready, "not_running": not_running }));
    if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn version(State(s): State<S>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pipeline": s.pipeline.name,
    }))
}

async fn pipeline(State(s): State<S>) -> Json<views::Pipeline> {
    let mut topics = std::collections::BTreeSet::new();
    let components = s
        .handles
        .iter()
        .map(|h| {
            let (topics_in, topics_out) = (h.component.topics_in(), h.component.topics_out());
            topics.extend(topics_in.iter().chain(&topics_out).cloned());
            views::ComponentNode {
                name: h.name.clone(),
                role: h.component.role(),
                kind: h.component.type_name(),
                topics_in,
                topics_out,
                dead_letter_topic: Some(h.component.dead_letter_topic(&s.pipeline.name, &h.name)),
                local: h.local,
            }
        })
        .collect();
    Json(views::Pipeline {
        name: s.pipeline.name.clone(),
        file: s.file.display().to_string(),
        components,
        topics: topics.into_iter().collect(),
    })
}

fn find<'a>(s: &'a ApiState, name: &str) -> Result<&'a Handle, ApiError> {
    s.handles.iter().find(|h| h.name == name).ok_or_else(|| {
        let names: Vec<&str> = s.handles.iter().map(|h| h.name.as_str()).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no component `{name}` in pipeline `{}`; components: {}",
                s.pipeline.name,
                names.join(", ")
            ),
        )
    })
}

async fn list_components(State(s): State<S>) -> Json<Vec<ComponentStatus>> {
    Json(
        s.handles
            .iter()
            .map(|h| ComponentStatus::of(h, &s.history))
            .collect(),
    )
}

async fn component(
    State(s): State<S>,
    Path(name): Path<String>,
) -> Result<Json<ComponentStatus>, ApiError> {
    let h = find(&s, &name)?;
    Ok(Json(ComponentStatus::of(h, &s.history)))
}

async fn history(
    State(s): State<S>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let h = find(&s, &name)?;
    Ok(Json(serde_json::json!({
        "interval_seconds": super::history::INTERVAL.as_secs_f64(),
        "points": s.history.points(&h.name),
    })))
}

/// A body that must be a JSON object with no fields (the action routes).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(|e| {
        let status = match e {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(
            status,
            format!("the request body is not as expected: {}", e.body_text()),
        )
    })
}

fn command(s: &ApiState, name: &str, c: Control) -> Result<Response, ApiError> {
    let h = find(s, name)?;
    if !h.send(c) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("`{name}` does not run in this process (see --component): ask the instance that runs it"),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ComponentStatus::of(h, &s.history)),
    )
        .into_response())
}

/// The route of an operator's command: `{}` in, 202 with the status out.
fn action(c: Control) -> MethodRouter<S> {
    post(
        move |State(s): State<S>,
              Path(name): Path<String>,
              b: Result<Json<Empty>, JsonRejection>| async move {
            body(b)?;
            command(&s, &name, c)
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    #[serde(default)]
    tables: Vec<String>,
}

async fn snapshot(
    State(s): State<S>,
    Path(name): Path<String>,
    b: Result<Json<SnapshotRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(b)?;
    find(&s, &name)?;
    if let Some(t) = request.tables.iter().find(|t| t.trim().is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{t}` is not a table name"),
        ));
    }
    match crate::pipeline::request_snapshot(&s.pipeline, &name, &request.tables, false).await {
        Ok(answer) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "tables": answer.tables, "message": answer.message })),
        )
            .into_response()),
        Err(crate::pipeline::SnapshotRefusal::NotCdc(message)) => {
            Err(ApiError::new(StatusCode::CONFLICT, message))
        }
        Err(crate::pipeline::SnapshotRefusal::Failed(e)) => Err(ApiError::from_error(&e)),
    }
}

/// The dead-letter filters of the listing's query and of a replay's body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Selection {
    component: Option<String>,
    topic: Option<String>,
    reason: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    partition: Option<i32>,
    from_offset: Option<i64>,
    to_offset: Option<i64>,
    limit: Option<usize>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
}

/// Most dead letters one listing returns.
const MAX_LIMIT: usize = 1000;
/// Most dead letters one replay takes.
const MAX_REPLAY: usize = 100_000;

impl Selection {
    fn filter(&self) -> Result<Filter, ApiError> {
        let bad = |m: &str| Err(ApiError::new(StatusCode::BAD_REQUEST, m.to_string()));
        if self.partition.is_some_and(|p| !(0..=100_000).contains(&p)) {
            return bad("`partition` is a partition number, 0 or more");
        }
        if self.from_offset.is_some_and(|o| o < 0) || self.to_offset.is_some_and(|o| o < 0) {
            return bad("offsets are 0 or more");
        }
        Ok(Filter {
            topic: self.topic.clone().filter(|t| !t.is_empty()),
            reason: self.reason.clone().filter(|r| !r.is_empty()),
            since: self.since,
            until: self.until,
            partition: self.partition,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
        })
    }

    fn topics(&self, s: &ApiState) -> Result<Vec<DeadLetterTopic>, ApiError> {
        if let Some(name) = &self.component {
            find(s, name)?;
        }
        Ok(dead_letters::topics_of(
            &s.pipeline,
            self.component.as_deref(),
        ))
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a query parameter is not valid: {}", e.body_text()),
        )
    })
}

async fn views_of(s: &ApiState, letters: &[&Letter]) -> Vec<views::DeadLetter> {
    let mut out = Vec::with_capacity(letters.len());
    for l in letters {
        out.push(views::DeadLetter::of(
            l,
            dead_letters::key_json(s.keys.as_ref(), l).await,
        ));
    }
    out
}

async fn list_dead_letters(
    State(s): State<S>,
    q: Result<Query<Selection>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let q = query(q)?;
    if q.dry_run || q.force {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`dry_run` and `force` belong to a replay",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`limit` is 1 to {MAX_LIMIT}"),
        ));
    }
    let (letters, truncated) = dead_letters::list(
        &s.pipeline.kafka,
        &s.pipeline.name,
        &q.topics(&s)?,
        &q.filter()?,
        limit,
    )
    .await
    .map_err(|e| ApiError::from_error(&e))?;
    Ok(Json(DeadLetterList {
        dead_letters: views_of(&s, &letters.iter().collect::<Vec<_>>()).await,
        truncated,
    }))
}

async fn replay(
    State(s): State<S>,
    b: Result<Json<Selection>, JsonRejection>,
) -> Result<Json<ReplayOutcome>, ApiError> {
    let r = body(b)?;
    if r.component.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name the `component` whose dead letters to replay",
        ));
    }
    if r.limit.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a replay takes every dead letter that matches; narrow it with the filters instead of `limit`",
        ));
    }
    let (letters, truncated) = dead_letters::list(
        &s.pipeline.kafka,
        &s.pipeline.name,
        &r.topics(&s)?,
        &r.filter()?,
        MAX_REPLAY,
    )
    .await
    .map_err(|e| ApiError::from_error(&e))?;
    if truncated {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("more than {MAX_REPLAY} dead letters match: narrow the selection (time or offset range), or use `syncline dlq replay`"),
        ));
    }
    let matched = letters.len();
    let out = dead_letters::replay(
        &s.pipeline.kafka,
        &s.pipeline.name,
        letters,
        r.dry_run,
        r.force,
        |_, _| {},
    )
    .await
    .map_err(|e| ApiError::from_error(&e))?;
    let all: Vec<&Letter> = out
        .replayed
        .iter()
        .chain(&out.already_replayed)
        .chain(&out.not_replayable)
        .collect();
    let items = views_of(&s, &all).await;
    Ok(Json(ReplayOutcome {
        dry_run: out.dry_run,
        matched,
        replayed: out.replayed.len(),
        already_replayed: out.already_replayed.len(),
        not_replayable: out.not_replayable.len(),
        items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// docs/openapi.yaml and the router name the same routes.
    #[test]
    fn the_routes_are_those_of_the_openapi_file() {
        let spec: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../docs/openapi.yaml")).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in spec["paths"].as_mapping().unwrap() {
            for (method, _) in item.as_mapping().unwrap() {
                let method = method.as_str().unwrap();
                if method != "parameters" {
                    documented.insert((method.to_string(), path.as_str().unwrap().to_string()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(served, documented);
    }
}
