//! One event per thing worth counting. Each event is a metric and, where an
//! operator cares, a log line, so that the two never disagree; every
//! component reports through these, with the same names and labels
//! (`pipeline`, `component`, `type`). docs/metrics.md lists them. The same
//! calls write the component's live [`Status`] (the management API's
//! counts, latencies and state), so the API, the metrics and the log agree.

use metrics::{Counter, Histogram};
use std::time::Duration;
use syncline_core::runtime::ComponentContext;
use syncline_core::status::Status;

/// The events of one running component. Handles are built once, so the hot
/// path only adds to atomics.
#[derive(Clone)]
pub struct Events {
    pipeline: String,
    component: String,
    kind: &'static str,
    records_in: Counter,
    records_out: Counter,
    skipped: Counter,
    dead_lettered: Counter,
    retries: Counter,
    batch_records: Histogram,
    batch_seconds: Histogram,
    commit_seconds: Histogram,
    status: Status,
}

impl Events {
    /// Events of `ctx`'s component, a component of type `kind` (`postgres`, `rules`, ...).
    pub fn new(ctx: &ComponentContext, kind: &'static str) -> Self {
        let labels = [
            ("pipeline", ctx.pipeline.clone()),
            ("component", ctx.component.clone()),
            ("type", kind.to_string()),
        ];
        Self {
            pipeline: ctx.pipeline.clone(),
            component: ctx.component.clone(),
            kind,
            records_in: metrics::counter!("syncline_records_in_total", &labels),
            records_out: metrics::counter!("syncline_records_out_total", &labels),
            skipped: metrics::counter!("syncline_records_skipped_total", &labels),
            dead_lettered: metrics::counter!("syncline_records_dead_lettered_total", &labels),
            retries: metrics::counter!("syncline_retries_total", &labels),
            batch_records: metrics::histogram!("syncline_batch_records", &labels),
            batch_seconds: metrics::histogram!("syncline_batch_seconds", &labels),
            commit_seconds: metrics::histogram!("syncline_commit_seconds", &labels),
            status: ctx.status.clone(),
        }
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// The component's live status, for what only its code knows (lag,
    /// cursor, snapshot progress).
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// `n` records read (consumed from Kafka, or read from a source system).
    pub fn records_in(&self, n: usize) {
        self.records_in.increment(n as u64);
        self.status.records_in(n);
    }

    /// `n` records published and acknowledged (a source's or processor's output).
    pub fn records_out(&self, n: usize) {
        self.records_out.increment(n as u64);
        self.status.records_out(n);
    }

    /// `n` records skipped on purpose (a setting says so, e.g. `on_truncate: ignore`).
    pub fn skipped(&self, n: usize) {
        self.skipped.increment(n as u64);
    }

    /// A batch is done: `records` records in, `written` effects out (rows,
    /// output records), `batch` from its first record to its commit, of
    /// which `commit` the write and commit themselves.
    pub fn batch_done(&self, records: usize, written: usize, batch: Duration, commit: Duration) {
        self.records_out.increment(written as u64);
        self.status.records_out(written);
        self.status.running();
        self.status.batch_latency(batch);
        self.batch_records.record(records as f64);
        self.batch_seconds.record(batch.as_secs_f64());
        self.commit_seconds.record(commit.as_secs_f64());
        tracing::debug!(pipeline = %self.pipeline, component = %self.component, r#type = self.kind,
            records, written, batch_ms = batch.as_millis() as u64, commit_ms = commit.as_millis() as u64,
            "batch committed");
    }

    /// A record went to the dead-letter topic.
    pub fn dead_lettered(&self, origin: &dyn std::fmt::Display, topic: &str, reason: &str) {
        self.dead_lettered.increment(1);
        self.status.dead_lettered();
        tracing::warn!(pipeline = %self.pipeline, component = %self.component, r#type = self.kind,
            at = %origin, dead_letter_topic = %topic, reason, "record dead-lettered");
    }

    /// A transient failure of `what`; retried in `delay`.
    pub fn retrying(
        &self,
        what: &str,
        error: &syncline_core::Error,
        attempt: u32,
        delay: Duration,
    ) {
        self.retries.increment(1);
        self.status.retrying(&format_args!("{what}: {error}"));
        tracing::warn!(pipeline = %self.pipeline, component = %self.component, r#type = self.kind,
            error = %error, attempt, retry_in_ms = delay.as_millis() as u64, "{what}; retrying");
    }
}
