//! `http_poll`: polls an HTTP API on a schedule (interval or cron) and
//! publishes each record of its answers.
//!
//! A run asks for the first page ([`paginate`]), publishes its records
//! through the runtime's publisher, waits until the broker acknowledged
//! every one, stores the next page (and the run's greatest cursor) in the
//! state topic, and only then asks for the next page; it ends when the
//! pagination says so, and the run's greatest cursor becomes the next run's
//! start ([`cursor`]). Requests are authenticated, rate-limited and retried
//! ([`client`]); records get columns declared or inferred ([`schema`]).
//!
//! # Guarantee
//! Every record of every page is published at least once, with a stable
//! identity (this source, the record's key, its position), so a syncline
//! sink applies it once:
//! - the state is stored only after the broker acknowledged every record of
//!   the page it covers, so a crash (even `kill -9`) resumes at the page it
//!   was at, in the run it was in, and republishes at most that page, with
//!   the same positions;
//! - a record's position is its cursor value (incremental), or the run's
//!   start time (kept in the state), so a record fetched again unchanged is
//!   a replay, and a later version of it (a greater cursor, a later run) is
//!   newer;
//! - records at the boundary of an incremental run (fetched again by the
//!   lookback) are dropped by key when their cursor value is the one
//!   published already;
//! - a record that cannot be published (no key, a value that fits no
//!   column, larger than the broker takes) goes to the dead-letter topic
//!   with the reason, and the run goes on.
//!
//! A non-incremental source publishes every record again at each run (with
//! a newer position: the sink rewrites the row, equal or not) and sees no
//! deletes.

pub mod client;
pub mod config;
pub mod cursor;
pub mod paginate;
pub mod path;
pub mod schema;

pub use config::HttpPollConfig;

use crate::sql_poll::schedule::Schedule;
use crate::state::JsonState;
use cursor::{CursorValue, HttpPollState, RunState};
use paginate::{Page, PageRequest, Pager, Stop};
use path::JsonPath;
use schema::Shape;
use serde_json::Value;
use syncline_core::codec::Encoder;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{ChangeEvent, Error, Op, Position, Result, SourceInfo};
use syncline_runtime::events::Events;
use syncline_runtime::publish::{Pending, Publisher};

const STATE_NAME: &str = "run";

struct Incremental {
    field: String,
    param: String,
    start: CursorValue,
    lookback: u64,
}

pub struct HttpPollSource {
    name: String,
    topic: String,
    url_path: String,
    host: String,
    client: client::Client,
    pager: Pager,
    records: JsonPath,
    shape: Shape,
    incremental: Option<Incremental>,
    schedule: Schedule,
    publisher: Publisher,
    store: JsonState<HttpPollState>,
    state: HttpPollState,
    events: Events,
}

impl HttpPollSource {
    pub async fn build(cfg: &HttpPollConfig, ctx: ComponentContext) -> Result<HttpPollSource> {
        if let Some(first) = cfg.check().first() {
            return Err(Error::config(format!(
                "http_poll source `{}` at `{}`: {}",
                ctx.component, first.path, first.message
            )));
        }
        let events = Events::new(&ctx, "http_poll");
        let incremental = cfg.incremental.as_ref().map(|i| Incremental {
            field: i.cursor_field.clone(),
            param: i.param.clone(),
            start: CursorValue::parse_start(&i.start).expect("checked"),
            lookback: i.lookback,
        });
        ctx.kafka
            .ensure_topic(&cfg.topic, ctx.kafka.partitions, false)
            .await?;
        let shape = Shape::new(&ctx.component, &cfg.key, cfg.columns.as_ref());
        let encoder = Encoder::new(&ctx.registry)?;
        if cfg.columns.is_some() {
            encoder.prepare(&cfg.topic, shape.table()).await?;
        }
        let publisher = Publisher::for_source(
            &ctx,
            "http_poll",
            encoder,
            ctx.kafka.producer()?,
            cfg.dead_letter_topic.as_deref(),
        )
        .await?;
        let store = JsonState::new(
            ctx.kafka.clone(),
            format!("{}/{}/", ctx.pipeline, ctx.component),
            "http_poll state",
        );
        let state: HttpPollState = store
            .restore()
            .await?
            .remove(STATE_NAME)
            .unwrap_or_default();
        let shown = client::shown(&cfg.url);
        let (host, url_path) = shown
            .split_once("://")
            .map(|(_, rest)| match rest.split_once('/') {
                Some((h, p)) => (h.to_string(), format!("/{p}")),
                None => (rest.to_string(), "/".to_string()),
            })
            .unwrap_or_default();
        tracing::info!(source = %ctx.component, url = %shown, topic = %cfg.topic,
            cursor = ?state.cursor, resuming = state.run.is_some(), "http_poll: ready");
        Ok(HttpPollSource {
            client: client::Client::new(cfg, events.clone())?,
            pager: Pager::new(&cfg.pagination).map_err(Error::config)?,
            records: JsonPath::parse(&cfg.records).map_err(Error::config)?,
            schedule: cfg.schedule.build()?,
            name: ctx.component,
            topic: cfg.topic.clone(),
            url_path,
            host,
            shape,
            incremental,
            publisher,
            store,
            state,
            events,
        })
    }

    pub async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        loop {
            let started = chrono::Utc::now();
            let ran = self.run_once(&shutdown).await;
            self.events.status().polled(ran.is_ok());
            if !ran? {
                return Ok(());
            }
            self.events.status().running();
            let wait = self.schedule.wait_after(started, chrono::Utc::now());
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One run of pages; `false`: shutdown came first.
    async fn run_once(&mut self, shutdown: &Shutdown) -> Result<bool> {
        let mut run = match self.state.run.clone() {
            Some(r) => {
                tracing::info!(source = %self.name, next = ?r.next, "http_poll: resuming a run at its stored page");
                r
            }
            None => RunState {
                started_us: chrono::Utc::now().timestamp_micros(),
                next: PageRequest::First,
                from: self.incremental.as_ref().map(|i| {
                    self.stored_cursor()
                        .map(|c| c.minus(i.lookback))
                        .unwrap_or(i.start)
                        .text()
                }),
                max: None,
            },
        };
        self.pager.begin_run();
        let mut pages = 0u64;
        let mut published = 0usize;
        loop {
            let mut extra = self.pager.query(&run.next);
            let next_url = self.pager.url(&run.next).map(str::to_string);
            if let (Some(i), Some(from), None) = (&self.incremental, &run.from, &next_url) {
                extra.push((i.param.clone(), from.clone()));
            }
            let Some(answer) = self
                .client
                .fetch(next_url.as_deref(), &extra, shutdown)
                .await?
            else {
                return Ok(false);
            };
            let records = match self.records.get(&answer.body) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items.clone(),
                Some(other) => {
                    return Err(Error::config(format!(
                        "http_poll source `{}`: `records: {}` is a {} in the answer, not an array of records",
                        self.name,
                        self.records,
                        kind(other)
                    )))
                }
            };
            self.events.records_in(records.len());
            let Some(n) = self.publish_page(&records, &mut run, shutdown).await? else {
                return Ok(false);
            };
            published += n;
            pages += 1;
            let page = Page {
                body: &answer.body,
                records: records.len(),
                link: answer.link.as_deref(),
            };
            match self.pager.next(&run.next, &page) {
                Ok(next) => {
                    run.next = next;
                    self.state.run = Some(run.clone());
                    self.save().await?;
                }
                Err(stop) => {
                    self.finish(run, &stop, pages, published).await?;
                    return Ok(true);
                }
            }
        }
    }

    /// The last finished run's greatest cursor.
    fn stored_cursor(&self) -> Option<CursorValue> {
        self.parse_cursor(self.state.cursor.as_deref()?)
    }

    /// Publish one page's records (dead letters for those that cannot be)
    /// and wait for the broker; the number published. `None`: shutdown.
    async fn publish_page(
        &mut self,
        records: &[Value],
        run: &mut RunState,
        shutdown: &Shutdown,
    ) -> Result<Option<usize>> {
        let mut pending: Vec<Pending> = Vec::with_capacity(records.len());
        let mut seen = Vec::new();
        let now_us = chrono::Utc::now().timestamp_micros();
        let mut published = 0;
        for rec in records {
            match self.change(rec, run, now_us).await? {
                Ok(None) => self.events.skipped(1),
                Ok(Some((event, key_text, cursor))) => {
                    pending.push(
                        self.publisher
                            .publish(&self.topic, self.shape.table(), &event)
                            .await?,
                    );
                    if let Some(c) = cursor {
                        seen.push((key_text, c));
                    }
                    published += 1;
                }
                Err(reason) => {
                    let value = rec.to_string();
                    pending.push(self.publisher.dead_letter(
                        &self.topic,
                        None,
                        value.as_bytes(),
                        &reason,
                    )?);
                }
            }
        }
        if self
            .publisher
            .acknowledged(shutdown, pending)
            .await
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("publishing to `{}` failed: {e}", self.topic),
                )
            })?
            .is_none()
        {
            return Ok(None);
        }
        for (key, c) in seen {
            if run.max.as_deref().and_then(|m| self.parse_cursor(m)) < Some(c) {
                run.max = Some(c.text());
            }
            self.state.seen.insert(key, c.text());
        }
        Ok(Some(published))
    }

    fn parse_cursor(&self, text: &str) -> Option<CursorValue> {
        let i = self.incremental.as_ref()?;
        CursorValue::from_text(text, i.start)
    }

    /// The change of one record: `Ok(None)` for a record published already
    /// (same key at the same cursor), `Err(reason)` for a dead letter.
    #[allow(clippy::type_complexity)]
    async fn change(
        &mut self,
        rec: &Value,
        run: &RunState,
        now_us: i64,
    ) -> Result<std::result::Result<Option<(ChangeEvent, String, Option<CursorValue>)>, String>>
    {
        let Some(obj) = rec.as_object() else {
            return Ok(Err(format!(
                "a record is a {}, not a JSON object",
                kind(rec)
            )));
        };
        if self.shape.observe(obj) {
            // A new column: its schema is registered before any record has it.
            self.publisher
                .prepare(&self.topic, self.shape.table())
                .await?;
        }
        let key = match self.shape.key(obj) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let key_text = crate::sql_poll::cursor::key_text(&key);
        let (position, position_text, cursor) = match &self.incremental {
            Some(i) => {
                let Some(c) = obj.get(&i.field).and_then(|v| CursorValue::of(v, i.start)) else {
                    return Ok(Err(format!(
                        "the record has no cursor field `{}` of the cursor's form (as `{}`)",
                        i.field,
                        i.start.text()
                    )));
                };
                if self.state.seen.get(&key_text) == Some(&c.text()) {
                    return Ok(Ok(None));
                }
                (
                    Position::builder().i64(c.ordinal()).build(),
                    c.text(),
                    Some(c),
                )
            }
            None => (
                Position::builder().i64(run.started_us).build(),
                format!("run {}", run.started_us),
                None,
            ),
        };
        let row = match self.shape.row(obj) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Some((
            ChangeEvent {
                op: Op::Upsert,
                key,
                before: None,
                after: Some(row),
                source: SourceInfo {
                    connector: "http_poll".into(),
                    name: self.name.clone(),
                    db: self.host.clone(),
                    table: self.url_path.clone(),
                    position,
                    position_text,
                    ts_us: now_us,
                },
                unchanged: Vec::new(),
            },
            key_text,
            cursor,
        ))))
    }

    /// The run ended: its greatest cursor becomes the next run's start, and
    /// the keys seen further back than the lookback are forgotten.
    async fn finish(
        &mut self,
        run: RunState,
        stop: &Stop,
        pages: u64,
        published: usize,
    ) -> Result<()> {
        if let Stop::Looping(why) = stop {
            metrics::counter!("syncline_http_poll_pagination_stopped_total", "component" => self.name.clone(), "reason" => "looping").increment(1);
            tracing::warn!(source = %self.name, reason = %why, pages,
                "http_poll: the pagination did not move; the run ends here instead of looping forever");
        } else {
            tracing::info!(source = %self.name, pages, published, ended = %stop, "http_poll: run done");
        }
        if let Some(i) = &self.incremental {
            let best = [
                self.stored_cursor(),
                run.max.as_deref().and_then(|m| self.parse_cursor(m)),
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(c) = best {
                self.state.cursor = Some(c.text());
                let keep_from = c.minus(i.lookback);
                let start = i.start;
                self.state.seen.retain(|_, v| {
                    CursorValue::from_text(v, start).is_some_and(|v| v >= keep_from)
                });
            }
        } else {
            self.state.seen.clear();
        }
        self.state.run = None;
        self.save().await
    }

    async fn save(&self) -> Result<()> {
        if let Some(c) = &self.state.cursor {
            self.events.status().cursor(c.clone());
        }
        self.store
            .store(self.publisher.producer(), STATE_NAME, Some(&self.state))
            .await
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
