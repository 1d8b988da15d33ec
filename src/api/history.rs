//! The last ten minutes of each component's throughput and lag, sampled
//! every [`INTERVAL`] from its live status: what the dashboard's charts
//! draw and what the status's rates are computed from.

use crate::pipeline::supervise::Handle;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use syncline_core::status::StatusView;

pub const INTERVAL: Duration = Duration::from_secs(2);
/// Ten minutes of samples.
const KEEP: usize = 300;
/// Rates are taken over this many intervals (10 s).
const RATE_SPAN: usize = 5;

/// One sample of one component.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    pub lag_records: Option<i64>,
    pub lag_seconds: Option<f64>,
}

impl Sample {
    fn of(v: &StatusView, at: DateTime<Utc>) -> Sample {
        Sample {
            at,
            records_in: v.records_in,
            records_out: v.records_out,
            dead_lettered: v.dead_lettered,
            lag_records: v.lag_records(),
            lag_seconds: lag_seconds(v),
        }
    }
}

/// How far behind, in seconds: a CDC source's oldest unacknowledged
/// change, or a polling source's cursor age.
pub fn lag_seconds(v: &StatusView) -> Option<f64> {
    v.source_lag.as_ref().and_then(|l| l.seconds).or_else(|| {
        v.cursor
            .as_ref()
            .and_then(|c| c.moved_at)
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs_f64())
    })
}

/// A point of the history as the API gives it: rates over one interval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub records_in_per_s: f64,
    pub records_out_per_s: f64,
    pub dead_lettered: u64,
    pub lag_records: Option<i64>,
    pub lag_seconds: Option<f64>,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

fn per_second(newer: u64, older: u64, span: Duration) -> f64 {
    let secs = span.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    newer.saturating_sub(older) as f64 / secs
}

impl History {
    /// Take one sample of every component that runs here.
    pub fn sample(&self, handles: &[Handle]) {
        let now = Utc::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        for h in handles.iter().filter(|h| h.local) {
            let ring = samples.entry(h.name.clone()).or_default();
            ring.push_back(Sample::of(&h.status.view(), now));
            while ring.len() > KEEP {
                ring.pop_front();
            }
        }
    }

    /// Sample every [`INTERVAL`] until the process ends.
    pub async fn run(self: std::sync::Arc<Self>, handles: Vec<Handle>) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.sample(&handles);
        }
    }

    /// Records in and out per second over the last 10 s (against `now`).
    pub fn rates(&self, name: &str, now: &StatusView) -> (f64, f64) {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ring) = samples.get(name) else {
            return (0.0, 0.0);
        };
        let Some(old) = ring.iter().rev().nth(RATE_SPAN - 1).or(ring.front()) else {
            return (0.0, 0.0);
        };
        let span = (Utc::now() - old.at).to_std().unwrap_or_default();
        (
            per_second(now.records_in, old.records_in, span),
            per_second(now.records_out, old.records_out, span),
        )
    }

    /// The points of `name`, oldest first.
    pub fn points(&self, name: &str) -> Vec<Point> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ring) = samples.get(name) else {
            return Vec::new();
        };
        ring.iter()
            .zip(ring.iter().skip(1))
            .map(|(a, b)| {
                let span = (b.at - a.at).to_std().unwrap_or_default();
                Point {
                    at: b.at,
                    records_in_per_s: per_second(b.records_in, a.records_in, span),
                    records_out_per_s: per_second(b.records_out, a.records_out, span),
                    dead_lettered: b.dead_lettered.saturating_sub(a.dead_lettered),
                    lag_records: b.lag_records,
                    lag_seconds: b.lag_seconds,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_deltas_over_the_time_between_samples() {
        assert_eq!(per_second(300, 100, Duration::from_secs(2)), 100.0);
        assert_eq!(
            per_second(5, 9, Duration::from_secs(2)),
            0.0,
            "a counter never goes back"
        );
        assert_eq!(per_second(5, 0, Duration::ZERO), 0.0);
    }
}
