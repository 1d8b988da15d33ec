//! The one retry policy of syncline: every stage retries transient errors
//! (a database, broker or registry briefly away) with it, so an operator
//! learns one set of numbers.
//!
//! Delays grow exponentially from 100 ms, doubling, to at most 10 s, with
//! "equal jitter": each delay is half the exponential step plus a random
//! part of the other half. Instances that failed together (a database
//! restart seen by every sink of a consumer group) thus spread their
//! retries instead of arriving together. A success resets the policy: the
//! next failure starts again at 100 ms.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;
use syncline_core::runtime::Shutdown;
use syncline_core::Result;

/// First delay.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Longest delay.
pub const MAX: Duration = Duration::from_secs(10);

/// Exponential backoff with equal jitter (see the module doc).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            step: initial,
            attempts: 0,
        }
    }

    /// The delay before the next attempt; grows the step for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        self.attempts += 1;
        let half = step / 2;
        half + half.mul_f64(random_unit())
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a success: the next failure starts at the first delay again.
    pub fn reset(&mut self) {
        self.step = self.initial;
        self.attempts = 0;
    }
}

/// An HTTP `Retry-After` value, seconds or an HTTP date, as a wait from now.
pub fn retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(wait.max(0) as u64))
}

/// A number in [0, 1) that differs between calls and processes (no
/// cryptographic quality needed: it only spreads retries).
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Run `f` until it succeeds or fails with an error that is not transient;
/// transient errors are logged (with `what` and the component) and retried
/// with [`Backoff`]. `Ok(None)`: `shutdown` came first.
pub async fn retry<T, F, Fut>(
    shutdown: &Shutdown,
    component: &str,
    what: &str,
    mut f: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::default();
    loop {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(component, error = %e, attempt = backoff.attempts(),
                    retry_in_ms = delay.as_millis() as u64, "{what}; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_with_jitter_within_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let steps = [100u64, 200, 400, 800, 1000, 1000];
        for step in steps {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                (step / 2..=step).contains(&d),
                "delay {d} ms outside [{}, {step}]",
                step / 2
            );
        }
        assert_eq!(b.attempts(), steps.len() as u32);
    }

    #[test]
    fn a_success_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        assert_eq!(b.attempts(), 1);
    }

    #[test]
    fn jitter_spreads_equal_schedules() {
        let delays: std::collections::HashSet<_> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(
            delays.len() > 1,
            "twenty instances retried at the same instant"
        );
    }

    #[tokio::test]
    async fn retries_transient_errors_and_stops_on_others() {
        let shutdown = Shutdown::new();
        let mut calls = 0;
        let got = retry(&shutdown, "t", "flaky", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(syncline_core::Error::transient("away"))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, Some(3));
        let err = retry(&shutdown, "t", "bad", || async {
            Err::<(), _>(syncline_core::Error::config("wrong"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), syncline_core::ErrorKind::Config);
        shutdown.cancel();
        let none = retry(&shutdown, "t", "never", || async { Ok(1) })
            .await
            .unwrap();
        assert_eq!(none, None, "shutdown comes first");
    }
}
