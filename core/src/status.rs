//! A running component's live status: its state, counts, lag, latency and
//! snapshot progress, as the management API, the dashboard and `syncline
//! status` show them (docs/api.md).
//!
//! One [`Status`] per component, made by the supervisor and handed to the
//! component in its [`crate::runtime::ComponentContext`]. The supervisor
//! writes the lifecycle (starting, retrying, paused, stopped); the runtime's
//! events write the counts and latencies (so they never disagree with the
//! metrics, which the same calls record); each source writes what only it
//! knows (its log position and how far behind it is, its cursor, its
//! snapshot). Readers take a [`StatusView`], a copy.
//!
//! Writing is cheap on the hot path (atomic adds); the rest takes a short
//! lock a few times per batch at most.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

/// Where a component is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Building, connecting, restoring state: not yet moving records.
    Starting = 0,
    /// Working.
    Running = 1,
    /// Failed with a transient error (a database, the broker or the
    /// registry away) and trying again after a backoff.
    Retrying = 2,
    /// Stopped by an operator until resumed.
    Paused = 3,
    /// Failed with an error an operator must fix (see the last error).
    Stopped = 4,
    /// Ended with the pipeline.
    Done = 5,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Starting,
            1 => State::Running,
            2 => State::Retrying,
            3 => State::Paused,
            4 => State::Stopped,
            _ => State::Done,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Done => "done",
        }
    }
}

/// How far a change-data-capture source is behind its database's log.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SourceLag {
    /// Log bytes the database wrote that the broker has not acknowledged.
    pub bytes: Option<u64>,
    /// Age of the oldest change not yet acknowledged (0: caught up).
    pub seconds: Option<f64>,
    /// The acknowledged log position, as text.
    pub position: Option<String>,
}

/// One table of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TableSnapshot {
    pub table: String,
    pub rows: u64,
    pub rows_estimated: Option<u64>,
    pub done: bool,
}

/// One assigned partition of a consuming stage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The next offset to process (None before the first batch).
    pub position: Option<i64>,
    /// The partition's end offset as the consumer last saw it.
    pub end: Option<i64>,
    pub lag: Option<i64>,
}

/// A copy of a component's status.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub state: State,
    pub since: SystemTime,
    pub last_error: Option<(String, SystemTime)>,
    pub restarts: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    pub retries: u64,
    /// Of the recent batches, in milliseconds: (p50, p99).
    pub batch_ms: Option<(f64, f64)>,
    pub end_to_end_ms: Option<f64>,
    pub partitions: Vec<PartitionLag>,
    pub source_lag: Option<SourceLag>,
    pub cursor: Option<CursorView>,
    pub snapshot: Option<SnapshotView>,
}

impl StatusView {
    /// Records not yet processed over every assigned partition, if known.
    pub fn lag_records(&self) -> Option<i64> {
        let lags: Vec<i64> = self.partitions.iter().filter_map(|p| p.lag).collect();
        (!lags.is_empty()).then(|| lags.iter().sum())
    }
}

#[derive(Debug, Clone)]
pub struct CursorView {
    pub value: Option<String>,
    pub moved_at: Option<SystemTime>,
    pub polled_at: Option<SystemTime>,
    pub last_poll_ok: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct SnapshotView {
    pub running: bool,
    pub tables: Vec<TableSnapshot>,
}

/// How many recent batch durations the percentiles are taken over.
const LATENCY_WINDOW: usize = 256;

#[derive(Default)]
struct Lifecycle {
    since: Option<SystemTime>,
    last_error: Option<(String, SystemTime)>,
    restarts: u64,
}

#[derive(Default)]
struct Cursor {
    value: Option<String>,
    moved_at: Option<SystemTime>,
    polled_at: Option<SystemTime>,
    last_poll_ok: Option<bool>,
}

#[derive(Default)]
struct Snapshot {
    running: bool,
    tables: BTreeMap<String, TableSnapshot>,
}

/// An assigned partition's next offset to process and end, when known.
type Offsets = (Option<i64>, Option<i64>);

#[derive(Default)]
struct Inner {
    state: AtomicU8,
    lifecycle: Mutex<Lifecycle>,
    records_in: AtomicU64,
    records_out: AtomicU64,
    dead_lettered: AtomicU64,
    retries: AtomicU64,
    latencies: Mutex<(Vec<f64>, usize)>,
    end_to_end_ms: Mutex<Option<f64>>,
    partitions: Mutex<BTreeMap<(String, i32), Offsets>>,
    source_lag: Mutex<Option<SourceLag>>,
    cursor: Mutex<Option<Cursor>>,
    snapshot: Mutex<Option<Snapshot>>,
}

/// A component's live status; clones share it. `Default` is a status of
/// its own, attached to nothing (for a component run outside a pipeline,
/// as tests do).
#[derive(Clone, Default)]
pub struct Status(Arc<Inner>);

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Status").field(&self.state()).finish()
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the
/// status it guards is still worth showing.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Status {
    pub fn state(&self) -> State {
        State::from_u8(self.0.state.load(Ordering::Relaxed))
    }

    /// Enter `state` (the supervisor's transitions, and a component's
    /// `running` once it is set up).
    pub fn set_state(&self, state: State) {
        let old = self.0.state.swap(state as u8, Ordering::Relaxed);
        let mut lifecycle = lock(&self.0.lifecycle);
        if old != state as u8 || lifecycle.since.is_none() {
            lifecycle.since = Some(SystemTime::now());
        }
    }

    /// The component is set up and moving records. Called by the runtime
    /// when a consumer joined its group and by each source when it starts
    /// reading; a no-op unless the component was starting or retrying (an
    /// operator's pause is not undone by a last record).
    pub fn running(&self) {
        // (every acknowledged record calls this: a load, not a write, when
        // nothing changes)
        if self.state() == State::Running {
            return;
        }
        for from in [State::Starting, State::Retrying] {
            if self
                .0
                .state
                .compare_exchange(
                    from as u8,
                    State::Running as u8,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                lock(&self.0.lifecycle).since = Some(SystemTime::now());
                return;
            }
        }
    }

    /// An error: `state` is `Retrying` (transient) or `Stopped`.
    pub fn failed(&self, state: State, error: &dyn std::fmt::Display) {
        lock(&self.0.lifecycle).last_error = Some((error.to_string(), SystemTime::now()));
        self.set_state(state);
    }

    /// The supervisor started the component again (after an error, or an
    /// operator's restart).
    pub fn restarted(&self) {
        lock(&self.0.lifecycle).restarts += 1;
    }

    pub fn records_in(&self, n: usize) {
        self.0.records_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records out also mean the component works again after retrying.
    pub fn records_out(&self, n: usize) {
        self.0.records_out.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            self.running();
        }
    }

    pub fn dead_lettered(&self) {
        self.0.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// A transient failure inside a running component (a write retried):
    /// it shows as retrying, with the error, until records move again.
    pub fn retrying(&self, error: &dyn std::fmt::Display) {
        self.0.retries.fetch_add(1, Ordering::Relaxed);
        if self.state() == State::Running {
            self.failed(State::Retrying, error);
        } else {
            lock(&self.0.lifecycle).last_error = Some((error.to_string(), SystemTime::now()));
        }
    }

    /// A batch took `d` from its first record to its commit.
    pub fn batch_latency(&self, d: Duration) {
        let mut l = lock(&self.0.latencies);
        let (ring, next) = &mut *l;
        let ms = d.as_secs_f64() * 1000.0;
        if ring.len() < LATENCY_WINDOW {
            ring.push(ms);
        } else {
            ring[*next] = ms;
        }
        *next = (*next + 1) % LATENCY_WINDOW;
    }

    /// For a sink: the newest committed change reached the target
    /// `ms` after its source wrote it.
    pub fn end_to_end(&self, ms: f64) {
        *lock(&self.0.end_to_end_ms) = Some(ms);
    }

    /// Partitions assigned: each starts with no position.
    pub fn assigned(&self, partitions: &[(String, i32)]) {
        let mut p = lock(&self.0.partitions);
        for tp in partitions {
            p.entry(tp.clone()).or_insert((None, None));
        }
    }

    pub fn revoked(&self, partitions: &[(String, i32)]) {
        let mut p = lock(&self.0.partitions);
        for tp in partitions {
            p.remove(tp);
        }
    }

    /// After a batch is written: the next offset of each partition in it.
    pub fn positions<'a>(&self, next: impl IntoIterator<Item = (&'a (String, i32), &'a i64)>) {
        let mut p = lock(&self.0.partitions);
        for (tp, offset) in next {
            if let Some(e) = p.get_mut(tp) {
                e.0 = Some(*offset);
            }
        }
    }

    /// The end offset of an assigned partition, as the consumer saw it.
    pub fn partition_end(&self, topic: &str, partition: i32, end: i64) {
        let mut p = lock(&self.0.partitions);
        if let Some(e) = p.get_mut(&(topic.to_string(), partition)) {
            e.1 = Some(end);
        }
    }

    pub fn source_lag(&self, lag: SourceLag) {
        *lock(&self.0.source_lag) = Some(lag);
    }

    /// A polling source read its source: `ok` or failed.
    pub fn polled(&self, ok: bool) {
        let mut c = lock(&self.0.cursor);
        let c = c.get_or_insert_with(Cursor::default);
        c.polled_at = Some(SystemTime::now());
        c.last_poll_ok = Some(ok);
    }

    /// A polling source stored its cursor: `value` as text. The cursor's
    /// age counts from the last time the value changed.
    pub fn cursor(&self, value: String) {
        let mut c = lock(&self.0.cursor);
        let c = c.get_or_insert_with(Cursor::default);
        if c.value.as_deref() != Some(value.as_str()) {
            c.value = Some(value);
            c.moved_at = Some(SystemTime::now());
        }
    }

    /// A snapshot of `table` has `rows` rows published and acknowledged
    /// (`estimated`: the database's guess of its size, when known).
    pub fn snapshot_table(&self, table: &str, rows: u64, estimated: Option<u64>, done: bool) {
        let mut s = lock(&self.0.snapshot);
        let s = s.get_or_insert_with(Snapshot::default);
        s.running = true;
        let t = s
            .tables
            .entry(table.to_string())
            .or_insert_with(|| TableSnapshot {
                table: table.to_string(),
                ..TableSnapshot::default()
            });
        t.rows = rows;
        if estimated.is_some() {
            t.rows_estimated = estimated;
        }
        t.done = done;
    }

    /// The snapshot under way (if any) is over: every table done or the
    /// source streams again.
    pub fn snapshot_finished(&self) {
        if let Some(s) = lock(&self.0.snapshot).as_mut() {
            s.running = false;
        }
    }

    pub fn view(&self) -> StatusView {
        let lifecycle = lock(&self.0.lifecycle);
        let batch_ms = {
            let l = lock(&self.0.latencies);
            let mut v = l.0.clone();
            (!v.is_empty()).then(|| {
                v.sort_by(f64::total_cmp);
                let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
                (at(0.5), at(0.99))
            })
        };
        StatusView {
            state: self.state(),
            since: lifecycle.since.unwrap_or_else(SystemTime::now),
            last_error: lifecycle.last_error.clone(),
            restarts: lifecycle.restarts,
            records_in: self.0.records_in.load(Ordering::Relaxed),
            records_out: self.0.records_out.load(Ordering::Relaxed),
            dead_lettered: self.0.dead_lettered.load(Ordering::Relaxed),
            retries: self.0.retries.load(Ordering::Relaxed),
            batch_ms,
            end_to_end_ms: *lock(&self.0.end_to_end_ms),
            partitions: lock(&self.0.partitions)
                .iter()
                .map(|((topic, partition), (position, end))| PartitionLag {
                    topic: topic.clone(),
                    partition: *partition,
                    position: *position,
                    end: *end,
                    lag: match (position, end) {
                        (Some(p), Some(e)) => Some((e - p).max(0)),
                        _ => None,
                    },
                })
                .collect(),
            source_lag: lock(&self.0.source_lag).clone(),
            cursor: lock(&self.0.cursor).as_ref().map(|c| CursorView {
                value: c.value.clone(),
                moved_at: c.moved_at,
                polled_at: c.polled_at,
                last_poll_ok: c.last_poll_ok,
            }),
            snapshot: lock(&self.0.snapshot).as_ref().map(|s| SnapshotView {
                running: s.running,
                tables: s.tables.values().cloned().collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_does_not_undo_a_pause_and_retrying_clears_with_records() {
        let s = Status::default();
        assert_eq!(s.state(), State::Starting);
        s.running();
        assert_eq!(s.state(), State::Running);
        s.retrying(&"database away");
        assert_eq!(s.state(), State::Retrying);
        assert_eq!(s.view().last_error.unwrap().0, "database away");
        s.records_out(3);
        assert_eq!(s.state(), State::Running);
        s.set_state(State::Paused);
        s.records_out(1);
        s.running();
        assert_eq!(s.state(), State::Paused, "a late record does not resume");
        assert_eq!(s.view().retries, 1);
        assert_eq!(s.view().records_out, 4);
    }

    #[test]
    fn partition_lag_is_end_minus_position_of_assigned_partitions() {
        let s = Status::default();
        let tp = ("t".to_string(), 0);
        s.assigned(std::slice::from_ref(&tp));
        s.partition_end("t", 0, 100);
        assert_eq!(s.view().lag_records(), None, "no position yet");
        s.positions([(&tp, &40)]);
        assert_eq!(s.view().lag_records(), Some(60));
        s.partition_end("other", 0, 5);
        s.revoked(std::slice::from_ref(&tp));
        assert!(s.view().partitions.is_empty());
    }

    #[test]
    fn latency_percentiles_cover_the_recent_window() {
        let s = Status::default();
        for ms in 1..=1000u64 {
            s.batch_latency(Duration::from_millis(ms));
        }
        let (p50, p99) = s.view().batch_ms.unwrap();
        // the last 256 batches: 745..=1000 ms
        assert!((870.0..=875.0).contains(&p50), "{p50}");
        assert!((995.0..=1000.0).contains(&p99), "{p99}");
    }

    #[test]
    fn the_cursor_age_counts_from_its_last_change() {
        let s = Status::default();
        s.cursor("10".into());
        let first = s.view().cursor.unwrap().moved_at;
        std::thread::sleep(Duration::from_millis(5));
        s.cursor("10".into());
        assert_eq!(s.view().cursor.unwrap().moved_at, first);
        s.cursor("11".into());
        assert_ne!(s.view().cursor.unwrap().moved_at, first);
    }
}
