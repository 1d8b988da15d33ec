//! What the CDC benches share: waiting for a stage to end, and rates.

use crate::support::{topic_records, SynclineRun};
use std::time::{Duration, Instant};

pub async fn timed<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "bench stage took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Time from now until `topic` holds `n` records, and from its first
/// record to its `n`th.
pub async fn fill_times(bootstrap: &str, topic: &str, n: i64) -> (Duration, Duration) {
    let start = Instant::now();
    let mut first = None;
    loop {
        let have = topic_records(bootstrap, topic);
        if have > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if have >= n {
            let now = Instant::now();
            return (now - start, now - first.unwrap_or(now));
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{topic}: {have} of {n} records after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn per_s(n: i64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub fn rate(n: i64, d: Duration, unit: &str) -> String {
    format!(
        "{:>9.0} {unit}/s  ({n} in {:.2}s)",
        per_s(n, d),
        d.as_secs_f64()
    )
}

/// Wait until `run`'s log contains `what`.
pub async fn wait_log(run: &SynclineRun, what: &str) {
    timed(|| {
        let log = run.log();
        async move { log.contains(what) }
    })
    .await;
}
