//! Out-of-order commits: why polling by cursor skips rows, and the snapshot
//! fence that prevents it (Postgres).
//!
//! # The flaw
//! A poller that publishes every row above its cursor and then moves the
//! cursor to the greatest value it saw skips rows whose transactions commit
//! out of order: transaction A takes id 10, B takes id 11 and commits, the
//! poller reads 11 and moves its cursor to 11, A commits: row 10 is never
//! read (the flaw of Kafka Connect's JDBC source, kafka-connect-jdbc
//! #172/#1015). Timestamps (`now()` is the start of the transaction) have the
//! same problem.
//!
//! # The fence
//! At each poll, in one REPEATABLE READ transaction, the source reads its
//! snapshot and the high-water cursor H (the greatest cursor visible in it),
//! and remembers a *fence* `(xmax of the snapshot, H)`, together with the
//! transactions running right after the snapshot was taken. It publishes only
//! rows with cursor <= W, where W is the greatest H of a fence whose
//! transactions have all finished: the xmin of a later snapshot is at least
//! the fence's xmax (`pg_snapshot_xmin(pg_current_snapshot()) >= xmax`: every
//! transaction with an id below xmax is over), and none of the listed
//! transactions is still running.
//!
//! Why no row <= H can appear later: a row with cursor c <= H got c (from
//! `nextval()` or from `now()`) no later than the row holding H got its value,
//! which was before the fence's snapshot, so its transaction had started by
//! then. It was therefore committed in that snapshot, or running at that time:
//! running with a transaction id (id < xmax), or without one yet (Postgres
//! assigns ids at the first write, so `BEGIN; SELECT nextval(..)`, or a
//! transaction that reads for a while before it writes `now()`, has none):
//! that is why the fence also lists running transactions by virtual
//! transaction id (`pg_locks`, locktype `virtualxid`), not only by xid. Once
//! all of them have finished, every row <= H is committed, and the snapshot of
//! the next poll, taken after that was observed, sees them all.
//!
//! Assumptions (see sources/README.md):
//! - incrementing columns come from a sequence or identity with `CACHE 1` (the
//!   default), so ids are handed out in increasing order across sessions;
//! - timestamps come from the database clock at or after the start of the
//!   writing transaction (`now()`, `clock_timestamp()`, a trigger), and the
//!   clock does not go backwards. For application-supplied timestamps,
//!   `commit_delay_ms` widens the fence: it lists the running transactions
//!   only `commit_delay_ms` after its snapshot, which covers rows whose
//!   timestamp is at most that much older than their transaction's start.
//!
//! Cost: a transaction that stays open (in the same database; or holding an
//! xid anywhere in the cluster, since xmin is cluster-wide) holds W back, so
//! nothing newer than it is published until it ends; the source logs which
//! transactions a fence waits for. Correctness never depends on timing.
//!
//! Everything here is pure: the Postgres dialect gathers the facts (snapshot,
//! running transactions, H) and this module decides.

use super::cursor::Cursor;
use std::collections::{BTreeSet, VecDeque};

/// Virtual transaction ids (`pg_locks.virtualxid`) of running transactions.
pub type Running = BTreeSet<String>;

/// At most this many fences wait at once; when full, a new fence is not
/// recorded (W then advances in larger steps, never wrongly).
const MAX_PENDING: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    /// `pg_snapshot_xmax` of the snapshot in which `high_water` was read.
    pub xmax: u64,
    /// The greatest cursor visible in that snapshot.
    pub high_water: Cursor,
    /// When the snapshot was taken (milliseconds on the source's monotonic clock).
    pub created_ms: u64,
    /// Transactions running after the snapshot (plus `commit_delay_ms`);
    /// `None` until listed.
    pub open: Option<Running>,
}

/// Whether a fence's rows can be published, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceDecision {
    /// Every transaction that could still write a row <= its H has finished.
    Cleared,
    /// The running transactions have not been listed yet (`commit_delay_ms` not elapsed).
    NotArmed,
    /// A transaction with an id below the fence's xmax is still running.
    XidsRunning,
    /// These transactions, running at the fence, still are.
    TransactionsRunning(Vec<String>),
}

/// Decide one fence. `xmin_now` is `pg_snapshot_xmin` of the snapshot the
/// rows will be read in; `running` was listed *before* that snapshot.
pub fn decide(fence: &Fence, xmin_now: u64, running: &Running) -> FenceDecision {
    let Some(open) = &fence.open else {
        return FenceDecision::NotArmed;
    };
    if xmin_now < fence.xmax {
        return FenceDecision::XidsRunning;
    }
    let still: Vec<String> = open.intersection(running).cloned().collect();
    if still.is_empty() {
        FenceDecision::Cleared
    } else {
        FenceDecision::TransactionsRunning(still)
    }
}

/// The fences of one table and the watermark W they have released.
#[derive(Debug, Default)]
pub struct FenceState {
    pending: VecDeque<Fence>,
    watermark: Option<Cursor>,
}

impl FenceState {
    /// Rows with cursor <= W may be published; `None`: nothing yet.
    pub fn watermark(&self) -> Option<&Cursor> {
        self.watermark.as_ref()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Clear every fence that [`decide`] clears and raise W to the greatest
    /// H among them (W never decreases). Returns why the oldest remaining
    /// fence waits, if any.
    pub fn clear(&mut self, xmin_now: u64, running: &Running) -> Option<FenceDecision> {
        let mut oldest_wait = None;
        let mut keep = VecDeque::with_capacity(self.pending.len());
        for fence in self.pending.drain(..) {
            match decide(&fence, xmin_now, running) {
                FenceDecision::Cleared => {
                    if self
                        .watermark
                        .as_ref()
                        .is_none_or(|w| fence.high_water > *w)
                    {
                        self.watermark = Some(fence.high_water);
                    }
                }
                wait => {
                    oldest_wait.get_or_insert(wait);
                    keep.push_back(fence);
                }
            }
        }
        self.pending = keep;
        oldest_wait
    }

    /// Record a fence for high-water `high_water` read in a snapshot with
    /// `xmax`. A fence whose H is not above W or above the newest pending
    /// fence's H would release nothing new, so it is not kept.
    pub fn push(&mut self, xmax: u64, high_water: Cursor, now_ms: u64) {
        let newest = self
            .pending
            .back()
            .map(|f| &f.high_water)
            .or(self.watermark.as_ref());
        if newest.is_some_and(|n| high_water <= *n) || self.pending.len() >= MAX_PENDING {
            return;
        }
        self.pending.push_back(Fence {
            xmax,
            high_water,
            created_ms: now_ms,
            open: None,
        });
    }

    /// List `running` (read after every pending fence's snapshot) as the open
    /// transactions of each fence not armed yet whose `delay_ms` has elapsed.
    /// Call it after [`Self::clear`] in a poll: a fence armed with this list
    /// must be checked against a list read later.
    pub fn arm(&mut self, running: &Running, now_ms: u64, delay_ms: u64) {
        for f in self.pending.iter_mut().filter(|f| f.open.is_none()) {
            if now_ms.saturating_sub(f.created_ms) >= delay_ms {
                f.open = Some(running.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cursor::CursorPart;
    use super::*;

    fn c(i: i64) -> Cursor {
        Cursor(vec![CursorPart::Int(i)])
    }
    fn set(v: &[&str]) -> Running {
        v.iter().map(|s| s.to_string()).collect()
    }
    fn armed(xmax: u64, h: i64, open: &[&str]) -> Fence {
        Fence {
            xmax,
            high_water: c(h),
            created_ms: 0,
            open: Some(set(open)),
        }
    }

    #[test]
    fn not_armed_fence_waits() {
        let f = Fence {
            xmax: 10,
            high_water: c(5),
            created_ms: 0,
            open: None,
        };
        assert_eq!(decide(&f, 100, &set(&[])), FenceDecision::NotArmed);
    }

    #[test]
    fn fence_waits_for_older_xids() {
        assert_eq!(
            decide(&armed(10, 5, &[]), 9, &set(&[])),
            FenceDecision::XidsRunning
        );
    }

    #[test]
    fn fence_waits_for_transactions_without_xid() {
        let d = decide(&armed(10, 5, &["3/7", "4/1"]), 10, &set(&["4/1", "5/2"]));
        assert_eq!(d, FenceDecision::TransactionsRunning(vec!["4/1".into()]));
    }

    #[test]
    fn fence_clears_when_all_finished() {
        assert_eq!(
            decide(&armed(10, 5, &["3/7"]), 10, &set(&["5/2"])),
            FenceDecision::Cleared
        );
    }

    #[test]
    fn watermark_is_greatest_cleared_high_water_and_never_decreases() {
        let mut s = FenceState::default();
        s.push(10, c(5), 0);
        s.push(12, c(9), 0);
        s.arm(&set(&["1/1"]), 0, 0);
        // first poll: 1/1 still runs, nothing released
        assert_eq!(
            s.clear(20, &set(&["1/1"])),
            Some(FenceDecision::TransactionsRunning(vec!["1/1".into()]))
        );
        assert_eq!(s.watermark(), None);
        // 1/1 finished: both clear, W = 9
        assert_eq!(s.clear(20, &set(&[])), None);
        assert_eq!(s.watermark(), Some(&c(9)));
        assert_eq!(s.pending(), 0);
        // a fence at or below W is not kept
        s.push(30, c(9), 0);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_newer_fence_that_clears_alone_releases_its_high_water() {
        let mut s = FenceState::default();
        s.pending.push_back(armed(10, 5, &["1/1"]));
        s.pending.push_back(armed(12, 9, &[]));
        s.clear(20, &set(&["1/1"]));
        assert_eq!(s.watermark(), Some(&c(9)));
        assert_eq!(s.pending(), 1);
        // the older one clears later and does not lower W
        s.clear(20, &set(&[]));
        assert_eq!(s.watermark(), Some(&c(9)));
    }

    #[test]
    fn commit_delay_postpones_arming() {
        let mut s = FenceState::default();
        s.push(10, c(5), 1_000);
        s.arm(&set(&["1/1"]), 1_500, 1_000);
        assert_eq!(s.clear(20, &set(&[])), Some(FenceDecision::NotArmed));
        s.arm(&set(&["2/2"]), 2_000, 1_000);
        assert_eq!(s.pending[0].open, Some(set(&["2/2"])));
        s.clear(20, &set(&[]));
        assert_eq!(s.watermark(), Some(&c(5)));
    }

    #[test]
    fn pending_fences_are_bounded() {
        let mut s = FenceState::default();
        for i in 0..(MAX_PENDING as i64 + 10) {
            s.push(1, c(i + 1), 0);
        }
        assert_eq!(s.pending(), MAX_PENDING);
    }
}
