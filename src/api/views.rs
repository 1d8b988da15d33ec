//! The API's JSON shapes (docs/openapi.yaml, `components.schemas`), built
//! from the supervisor's handles and the components' live status.

use super::history::{lag_seconds, History};
use crate::dead_letters::{Letter, Origin, Replayed};
use crate::pipeline::supervise::Handle;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::SystemTime;
use syncline_core::status::{PartitionLag, SourceLag, State, StatusView, TableSnapshot};

fn time(t: SystemTime) -> DateTime<Utc> {
    t.into()
}

fn seconds_since(t: Option<SystemTime>) -> Option<f64> {
    t.map(|t| {
        SystemTime::now()
            .duration_since(t)
            .unwrap_or_default()
            .as_secs_f64()
    })
}

#[derive(Serialize)]
pub struct LastError {
    pub message: String,
    pub at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct Counts {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    pub retries: u64,
}

#[derive(Serialize)]
pub struct Rates {
    pub records_in_per_s: f64,
    pub records_out_per_s: f64,
}

#[derive(Serialize)]
pub struct Latency {
    pub batch_p50_ms: Option<f64>,
    pub batch_p99_ms: Option<f64>,
    pub end_to_end_ms: Option<f64>,
}

#[derive(Serialize)]
pub struct CursorLag {
    pub value: Option<String>,
    pub age_seconds: Option<f64>,
    pub last_poll_seconds_ago: Option<f64>,
    pub last_poll_ok: Option<bool>,
}

#[derive(Serialize)]
pub struct Lag {
    pub records: Option<i64>,
    pub partitions: Vec<PartitionLag>,
    pub source: Option<SourceLag>,
    pub cursor: Option<CursorLag>,
}

#[derive(Serialize)]
pub struct Snapshot {
    pub running: bool,
    pub tables: Vec<TableSnapshot>,
}

#[derive(Serialize)]
pub struct ComponentStatus {
    pub name: String,
    pub role: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: State,
    pub since: DateTime<Utc>,
    pub last_error: Option<LastError>,
    pub restarts: u64,
    pub counts: Counts,
    pub rates: Rates,
    pub latency: Latency,
    pub lag: Lag,
    pub snapshot: Option<Snapshot>,
}

impl ComponentStatus {
    pub fn of(h: &Handle, history: &History) -> ComponentStatus {
        let v: StatusView = h.status.view();
        let (records_in_per_s, records_out_per_s) = history.rates(&h.name, &v);
        // A component another process runs: nothing is known here.
        let state = if h.local { v.state } else { State::Done };
        ComponentStatus {
            name: h.name.clone(),
            role: h.component.role(),
            kind: h.component.type_name(),
            state,
            since: time(v.since),
            last_error: v.last_error.as_ref().map(|(m, at)| LastError {
                message: m.clone(),
                at: time(*at),
            }),
            restarts: v.restarts,
            counts: Counts {
                records_in: v.records_in,
                records_out: v.records_out,
                dead_lettered: v.dead_lettered,
                retries: v.retries,
            },
            rates: Rates {
                records_in_per_s,
                records_out_per_s,
            },
            latency: Latency {
                batch_p50_ms: v.batch_ms.map(|b| b.0),
                batch_p99_ms: v.batch_ms.map(|b| b.1),
                end_to_end_ms: v.end_to_end_ms,
            },
            lag: Lag {
                records: v.lag_records(),
                partitions: v.partitions.clone(),
                source: v.source_lag.clone().map(|mut l| {
                    l.seconds = l.seconds.or_else(|| lag_seconds(&v));
                    l
                }),
                cursor: v.cursor.as_ref().map(|c| CursorLag {
                    value: c.value.clone(),
                    age_seconds: seconds_since(c.moved_at),
                    last_poll_seconds_ago: seconds_since(c.polled_at),
                    last_poll_ok: c.last_poll_ok,
                }),
            },
            snapshot: v.snapshot.as_ref().map(|s| Snapshot {
                running: s.running,
                tables: s.tables.clone(),
            }),
        }
    }
}

#[derive(Serialize)]
pub struct ComponentNode {
    pub name: String,
    pub role: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub topics_in: Vec<String>,
    pub topics_out: Vec<String>,
    pub dead_letter_topic: Option<String>,
    pub local: bool,
}

#[derive(Serialize)]
pub struct Pipeline {
    pub name: String,
    pub file: String,
    pub components: Vec<ComponentNode>,
    pub topics: Vec<String>,
}

#[derive(Serialize)]
pub struct DeadLetter {
    pub component: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<DateTime<Utc>>,
    pub reason: String,
    pub origin: Option<Origin>,
    pub key: Option<serde_json::Value>,
    pub value_bytes: u64,
    pub replayable: bool,
    pub replayed: Option<Replayed>,
}

impl DeadLetter {
    pub fn of(l: &Letter, key: Option<serde_json::Value>) -> DeadLetter {
        DeadLetter {
            component: l.component.clone(),
            topic: l.topic.clone(),
            partition: l.partition,
            offset: l.offset,
            timestamp: l.timestamp,
            reason: l.reason.clone(),
            origin: l.origin.clone(),
            key,
            value_bytes: l.value.as_ref().map_or(0, |v| v.len() as u64),
            replayable: l.replayable(),
            replayed: l.replayed.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
    pub truncated: bool,
}

#[derive(Serialize)]
pub struct ReplayOutcome {
    pub dry_run: bool,
    pub matched: usize,
    pub replayed: usize,
    pub already_replayed: usize,
    pub not_replayable: usize,
    pub items: Vec<DeadLetter>,
}
