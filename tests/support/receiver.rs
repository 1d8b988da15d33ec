//! A real HTTP receiver on loopback for the `http` sink's tests: a plain
//! HTTP/1.1 server on a tokio socket (keep-alive, `Content-Length` bodies),
//! which fails on purpose as a [`Faults`] plan says (500s, 429 with
//! `Retry-After`, answers later than the sink's timeout, connections
//! dropped mid-request) and records every request it accepted (2xx).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the receiver does with request number `n` (from 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Answer {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// Answer 200 after this long (longer than the sink waits: a timeout).
    Late(Duration),
    /// Close the connection without answering.
    Drop,
}

/// One accepted request: its headers (lower-case names) and JSON body.
#[derive(Clone, Debug)]
pub struct Request {
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub raw_body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Plan = dyn Fn(u64, &serde_json::Value) -> Answer + Send + Sync;

pub struct Receiver {
    pub port: u16,
    accepted: Arc<Mutex<Vec<Request>>>,
    /// Requests read, whatever their answer.
    seen: Arc<AtomicU64>,
    /// Changes in the requests answered 2xx.
    changes: Arc<AtomicU64>,
}

impl Receiver {
    /// Start on a free loopback port; `plan` picks each request's answer
    /// from its number and body.
    pub async fn start(
        plan: impl Fn(u64, &serde_json::Value) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        Self::start_keeping(plan, true).await
    }

    /// A receiver that answers every request 200 at once and only counts
    /// the changes (for benchmarks: nothing is kept).
    pub async fn null() -> Receiver {
        Self::start_keeping(|_, _| Answer::Ok, false).await
    }

    async fn start_keeping(
        plan: impl Fn(u64, &serde_json::Value) -> Answer + Send + Sync + 'static,
        keep: bool,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicU64::new(0));
        let changes = Arc::new(AtomicU64::new(0));
        let plan: Arc<Plan> = Arc::new(plan);
        let (a, s, counted) = (accepted.clone(), seen.clone(), changes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (a, s, plan, counted) = (a.clone(), s.clone(), plan.clone(), counted.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let Some(req) = super::http::read_request(&mut read).await else {
                            return;
                        };
                        let (headers, raw_body) = (req.headers, req.body);
                        let body: serde_json::Value =
                            serde_json::from_slice(&raw_body).unwrap_or(serde_json::Value::Null);
                        let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                        let answer = plan(n, &body);
                        let (status, extra) = match answer {
                            Answer::Drop => return,
                            Answer::Late(wait) => {
                                tokio::time::sleep(wait).await;
                                (200, String::new())
                            }
                            Answer::Ok => (200, String::new()),
                            Answer::Status(code) => (code, String::new()),
                            Answer::TooMany(secs) => (429, format!("retry-after: {secs}\r\n")),
                        };
                        // A late answer still applied the request (as a real
                        // receiver would have), though the sink gave up on it.
                        if status / 100 == 2 {
                            let n = body["changes"].as_array().map_or(0, |c| c.len());
                            counted.fetch_add(n as u64, Ordering::SeqCst);
                            if keep {
                                a.lock().unwrap().push(Request {
                                    headers: headers.clone(),
                                    body,
                                    raw_body,
                                });
                            }
                        }
                        let text = format!("answer {status} to request {n}");
                        let out = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{extra}\r\n{text}",
                            text.len()
                        );
                        if write.write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            accepted,
            seen,
            changes,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/changes", self.port)
    }

    /// Every request answered 2xx (late ones too: the receiver applied them
    /// though the sink had given up), in arrival order.
    pub fn accepted(&self) -> Vec<Request> {
        self.accepted.lock().unwrap().clone()
    }

    /// Changes in the requests answered 2xx.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Requests seen, whatever their answer.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }
}
