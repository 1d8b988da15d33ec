//! When a sql_poll source polls: a fixed interval or a cron expression.

use chrono::{DateTime, Utc};
use std::str::FromStr;
use std::time::Duration;
use syncline_core::{Error, Result};

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Poll again this long after the previous poll started (a poll that takes
    /// longer is followed immediately by the next).
    Interval(Duration),
    /// Poll at every time of the expression (UTC).
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    pub fn interval_ms(ms: u64) -> Self {
        Schedule::Interval(Duration::from_millis(ms))
    }

    pub fn cron(expr: &str) -> Result<Self> {
        cron::Schedule::from_str(expr).map(|s| Schedule::Cron(Box::new(s))).map_err(|e| {
            // the crate's message repeats the expression with a caret line; keep its reason
            let text = e.to_string();
            let reason = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid");
            Error::config(format!(
                "`{expr}` is not a cron expression ({reason}); use six or seven fields, seconds first, e.g. \"*/10 * * * * *\""
            ))
        })
    }

    /// How long to wait after a poll that started at `started` (now is `now`).
    pub fn wait_after(&self, started: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
        let next = match self {
            Schedule::Interval(d) => {
                started + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX)
            }
            Schedule::Cron(s) => match s.after(&now).next() {
                Some(t) => t,
                // an expression with no future time (a past year): never poll again
                None => return Duration::MAX,
            },
        };
        (next - now).to_std().unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn interval_counts_from_the_start_of_the_poll() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let s = Schedule::interval_ms(1_000);
        assert_eq!(
            s.wait_after(t0, t0 + chrono::Duration::milliseconds(300)),
            Duration::from_millis(700)
        );
        assert_eq!(
            s.wait_after(t0, t0 + chrono::Duration::milliseconds(1_500)),
            Duration::ZERO
        );
    }

    #[test]
    fn cron_waits_for_the_next_match() {
        let s = Schedule::cron("*/10 * * * * *").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 3).unwrap();
        assert_eq!(s.wait_after(now, now), Duration::from_secs(7));
        assert!(Schedule::cron("every minute").is_err());
    }
}
