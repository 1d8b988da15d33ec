//! A real HTTP API on loopback for the `http_poll` source's tests: items
//! `{id, name, updated_at}` served in every pagination style, behind the
//! auth each style's path asks for, failing on purpose (429 with
//! `Retry-After`, 500) as its fault plan says, and logging every request.
//!
//! | path | pagination | records | auth |
//! |---|---|---|---|
//! | `/page?page=N&per_page=M` | page number, `has_more` | `$.data` | bearer `static-token` |
//! | `/offset?offset=O&limit=L` | offset/limit | `$.items` | query `api_key=k3y` |
//! | `/cursor?cursor=C&limit=L` | cursor at `$.meta.next` | `$.data` | OAuth2 token from `/token`, good for 3 requests |
//! | `/next?after=A` | next URL at `$.next` | `$.results` | basic `user:pw` |
//! | `/link?page=N` | `Link: <...>; rel="next"` | `$` | header `X-Api-Key: k3y` |
//! | `/stuck?cursor=C` | a cursor that never moves | `$.data` | none |
//!
//! Every path filters by `updated_since` (items with `updated_at` at or
//! after it) and orders by `id`.

use super::http::{read_request, RawRequest};
use base64::Engine;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub id: i64,
    pub name: String,
    pub updated_at: i64,
}

/// Which requests fail on purpose (by request number, from 1, counting
/// data requests only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Every n-th request is answered 429 with `Retry-After: 1`.
    pub too_many_every: Option<u64>,
    /// Every n-th request is answered 500.
    pub error_every: Option<u64>,
    /// Each data request is answered after this long.
    pub delay: Duration,
}

/// One request the API read.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub target: String,
    pub status: u16,
}

struct State {
    items: Vec<Item>,
    log: Vec<Logged>,
    /// Issued OAuth2 tokens and the requests each has served.
    tokens: Vec<(String, u32)>,
}

pub struct Api {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

const PER_PAGE: usize = 25;
pub const TOKEN_LIFE_S: u64 = 1;
/// Requests an OAuth2 token is good for.
pub const TOKEN_USES: u32 = 3;

impl Api {
    pub async fn start(items: Vec<Item>, faults: Faults) -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            items,
            log: Vec::new(),
            tokens: Vec::new(),
        }));
        let counter = Arc::new(AtomicU64::new(0));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (st, counter) = (st.clone(), counter.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    while let Some(req) = read_request(&mut read).await {
                        let (status, headers, body) =
                            answer(&req, &st, &counter, faults, port).await;
                        st.lock().unwrap().log.push(Logged {
                            path: req.path().to_string(),
                            target: req.target.clone(),
                            status,
                        });
                        let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n", body.len());
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        out.push_str(&body);
                        if write.write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Api { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Replace item `id` (or add it).
    pub fn put(&self, item: Item) {
        let mut s = self.state.lock().unwrap();
        match s.items.iter_mut().find(|i| i.id == item.id) {
            Some(i) => *i = item,
            None => s.items.push(item),
        }
        s.items.sort_by_key(|i| i.id);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
}

fn unauthorized() -> (u16, Vec<(String, String)>, String) {
    (401, vec![], r#"{"error":"unauthorized"}"#.into())
}

fn authorized(req: &RawRequest, st: &Mutex<State>) -> bool {
    let basic = base64::engine::general_purpose::STANDARD.encode("user:pw");
    match req.path() {
        "/page" => req.header("authorization") == Some("Bearer static-token"),
        "/offset" => req.query("api_key").as_deref() == Some("k3y"),
        "/cursor" => req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| {
                // A token serves TOKEN_USES requests, then is refused (401),
                // as a revoked or expired one is.
                let mut s = st.lock().unwrap();
                match s.tokens.iter_mut().find(|(k, _)| k == t) {
                    Some((_, uses)) if *uses < TOKEN_USES => {
                        *uses += 1;
                        true
                    }
                    _ => false,
                }
            }),
        "/next" => req.header("authorization") == Some(&format!("Basic {basic}")),
        "/link" => req.header("x-api-key") == Some("k3y"),
        _ => true,
    }
}

async fn answer(
    req: &RawRequest,
    st: &Mutex<State>,
    counter: &AtomicU64,
    faults: Faults,
    port: u16,
) -> (u16, Vec<(String, String)>, String) {
    if req.path() == "/token" {
        let form = super::http::form(&req.body);
        let has = |k: &str, v: &str| form.iter().any(|(a, b)| a == k && b == v);
        if !(has("grant_type", "client_credentials")
            && has("client_id", "syncline")
            && has("client_secret", "s3cret"))
        {
            return unauthorized();
        }
        let n = counter.load(Ordering::SeqCst);
        let token = format!("tok-{n}-{}", st.lock().unwrap().tokens.len());
        let mut s = st.lock().unwrap();
        // Only the two newest tokens are good.
        s.tokens.push((token.clone(), 0));
        let keep = s.tokens.len().saturating_sub(2);
        s.tokens.drain(..keep);
        return (
            200,
            vec![],
            serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFE_S}).to_string(),
        );
    }
    if !authorized(req, st) {
        return unauthorized();
    }
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if faults.too_many_every.is_some_and(|k| n.is_multiple_of(k)) {
        return (429, vec![("retry-after".into(), "1".into())], "{}".into());
    }
    if faults.error_every.is_some_and(|k| n.is_multiple_of(k)) {
        return (500, vec![], r#"{"error":"boom"}"#.into());
    }
    let since: i64 = req
        .query("updated_since")
        .and_then(|v| v.parse().ok())
        .unwrap_or(i64::MIN);
    let items: Vec<Item> = st
        .lock()
        .unwrap()
        .items
        .iter()
        .filter(|i| i.updated_at >= since)
        .cloned()
        .collect();
    let json = |items: &[Item]| -> Vec<serde_json::Value> {
        items
            .iter()
            .map(|i| serde_json::json!({"id": i.id, "name": i.name, "updated_at": i.updated_at}))
            .collect()
    };
    let num = |name: &str, default: usize| -> usize {
        req.query(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let since_q = req
        .query("updated_since")
        .map(|s| format!("&updated_since={s}"))
        .unwrap_or_default();
    match req.path() {
        "/page" => {
            let (page, per) = (num("page", 1).max(1), num("per_page", PER_PAGE));
            let chunk: Vec<Item> = items
                .iter()
                .skip((page - 1) * per)
                .take(per)
                .cloned()
                .collect();
            let has_more = page * per < items.len();
            (
                200,
                vec![],
                serde_json::json!({"data": json(&chunk), "has_more": has_more}).to_string(),
            )
        }
        "/offset" => {
            let (offset, limit) = (num("offset", 0), num("limit", PER_PAGE));
            let chunk: Vec<Item> = items.iter().skip(offset).take(limit).cloned().collect();
            (
                200,
                vec![],
                serde_json::json!({"items": json(&chunk)}).to_string(),
            )
        }
        "/cursor" => {
            let after: i64 = req
                .query("cursor")
                .and_then(|c| c.strip_prefix('c').and_then(|v| v.parse().ok()))
                .unwrap_or(i64::MIN);
            let limit = num("limit", PER_PAGE);
            let chunk: Vec<Item> = items
                .iter()
                .filter(|i| i.id > after)
                .take(limit)
                .cloned()
                .collect();
            let next = (chunk.len() == limit
                && items.iter().any(|i| i.id > chunk[chunk.len() - 1].id))
            .then(|| format!("c{}", chunk[chunk.len() - 1].id));
            (
                200,
                vec![],
                serde_json::json!({"data": json(&chunk), "meta": {"next": next}}).to_string(),
            )
        }
        "/next" => {
            let after: i64 = req
                .query("after")
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN);
            let chunk: Vec<Item> = items
                .iter()
                .filter(|i| i.id > after)
                .take(PER_PAGE)
                .cloned()
                .collect();
            let next = chunk
                .last()
                .filter(|last| items.iter().any(|i| i.id > last.id))
                .map(|last| format!("http://127.0.0.1:{port}/next?after={}{since_q}", last.id));
            (
                200,
                vec![],
                serde_json::json!({"results": json(&chunk), "next": next}).to_string(),
            )
        }
        "/link" => {
            let page = num("page", 1).max(1);
            let chunk: Vec<Item> = items
                .iter()
                .skip((page - 1) * PER_PAGE)
                .take(PER_PAGE)
                .cloned()
                .collect();
            let mut headers = Vec::new();
            if page * PER_PAGE < items.len() {
                headers.push((
                    "link".to_string(),
                    format!(
                        "<http://127.0.0.1:{port}/link?page=1{since_q}>; rel=\"first\", <http://127.0.0.1:{port}/link?page={}{since_q}>; rel=\"next\"",
                        page + 1
                    ),
                ));
            }
            (
                200,
                headers,
                serde_json::Value::Array(json(&chunk)).to_string(),
            )
        }
        "/stuck" => {
            // Whatever cursor is asked for, the same page and the same next cursor.
            let chunk: Vec<Item> = items.iter().take(PER_PAGE).cloned().collect();
            let _ = req.query("cursor");
            (
                200,
                vec![],
                serde_json::json!({"data": json(&chunk), "meta": {"next": "same"}}).to_string(),
            )
        }
        _ => (404, vec![], "{}".into()),
    }
}
