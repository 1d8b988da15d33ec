//! The incremental cursor of an `http_poll` source and the state stored
//! after each acknowledged page.
//!
//! A cursor value is an integer or an RFC 3339 timestamp (its form is the
//! configured `start`'s). A run asks for records from the last run's
//! greatest value minus `lookback`; a record's position is its cursor value,
//! so a record fetched again unchanged (same cursor) is a replay at the sink,
//! and the source drops it already when it saw that key at that value
//! ([`HttpPollState::seen`]).

use super::paginate::PageRequest;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CursorValue {
    Int(i64),
    /// Microseconds since the epoch.
    Timestamp(i64),
}

impl CursorValue {
    /// The configured start value: an integer, else an RFC 3339 timestamp.
    pub fn parse_start(s: &str) -> Option<CursorValue> {
        let s = s.trim();
        if let Ok(i) = s.parse() {
            return Some(CursorValue::Int(i));
        }
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| CursorValue::Timestamp(t.with_timezone(&Utc).timestamp_micros()))
    }

    /// A record's value of the cursor field, read in the form of `like`.
    pub fn of(v: &Value, like: CursorValue) -> Option<CursorValue> {
        match (like, v) {
            (CursorValue::Int(_), Value::Number(n)) => n.as_i64().map(CursorValue::Int),
            (CursorValue::Int(_), Value::String(s)) => s.trim().parse().ok().map(CursorValue::Int),
            (CursorValue::Timestamp(_), Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|t| CursorValue::Timestamp(t.with_timezone(&Utc).timestamp_micros())),
            // Seconds since the epoch.
            (CursorValue::Timestamp(_), Value::Number(n)) => n
                .as_i64()
                .and_then(|s| s.checked_mul(1_000_000))
                .map(CursorValue::Timestamp),
            _ => None,
        }
    }

    /// A stored or sent value ([`Self::text`]) read back in the form of `like`.
    pub fn from_text(text: &str, like: CursorValue) -> Option<CursorValue> {
        CursorValue::of(&Value::String(text.into()), like)
    }

    /// `lookback` earlier (seconds for a timestamp).
    pub fn minus(self, lookback: u64) -> CursorValue {
        let l = lookback.min(i64::MAX as u64) as i64;
        match self {
            CursorValue::Int(i) => CursorValue::Int(i.saturating_sub(l)),
            CursorValue::Timestamp(us) => {
                CursorValue::Timestamp(us.saturating_sub(l.saturating_mul(1_000_000)))
            }
        }
    }

    /// The form sent in the query and stored: the integer, or RFC 3339 UTC.
    pub fn text(self) -> String {
        match self {
            CursorValue::Int(i) => i.to_string(),
            CursorValue::Timestamp(us) => DateTime::from_timestamp_micros(us)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                .unwrap_or_else(|| us.to_string()),
        }
    }

    /// The number that orders it (for positions).
    pub fn ordinal(self) -> i64 {
        match self {
            CursorValue::Int(i) | CursorValue::Timestamp(i) => i,
        }
    }
}

/// A run of pages in progress, as stored after each acknowledged page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// When the run started (µs since the epoch): the position of every
    /// record of a source without a cursor, the same for the run's pages
    /// published again after a crash.
    pub started_us: i64,
    /// The next page to ask for.
    pub next: PageRequest,
    /// The cursor value the run asks from (text form), if incremental.
    pub from: Option<String>,
    /// The greatest cursor value published in this run so far.
    pub max: Option<String>,
}

/// Everything an `http_poll` source stores (one JSON value per source).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpPollState {
    /// The greatest cursor value of the last finished run.
    pub cursor: Option<String>,
    /// The run in progress, when the process stopped inside one.
    pub run: Option<RunState>,
    /// Keys (canonical text) published at cursor values within `lookback`
    /// of `cursor`, with that value: a record fetched again with the same
    /// key and value is dropped.
    #[serde(default)]
    pub seen: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integer_and_timestamp_cursors() {
        let ts = CursorValue::parse_start("2024-01-01T00:00:00Z").unwrap();
        assert!(matches!(ts, CursorValue::Timestamp(_)));
        assert_eq!(ts.minus(60).text(), "2023-12-31T23:59:00Z");
        let later = CursorValue::of(&json!("2024-01-01T01:00:00+01:00"), ts).unwrap();
        assert_eq!(later, ts, "the same instant in another zone");
        assert_eq!(
            CursorValue::of(&json!(1_704_067_200), ts),
            Some(ts),
            "seconds since the epoch"
        );
        let i = CursorValue::parse_start("0").unwrap();
        assert_eq!(CursorValue::of(&json!(42), i), Some(CursorValue::Int(42)));
        assert_eq!(CursorValue::of(&json!("42"), i), Some(CursorValue::Int(42)));
        assert_eq!(CursorValue::of(&json!("x"), i), None);
        assert_eq!(CursorValue::Int(10).minus(3).text(), "7");
        assert!(CursorValue::parse_start("yesterday").is_none());
    }

    #[test]
    fn state_round_trips_as_json() {
        let s = HttpPollState {
            cursor: Some("5".into()),
            run: Some(RunState {
                started_us: 1,
                next: PageRequest::Cursor("c2".into()),
                from: Some("3".into()),
                max: None,
            }),
            seen: BTreeMap::from([("k".into(), "5".into())]),
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<HttpPollState>(&text).unwrap(), s);
    }
}
