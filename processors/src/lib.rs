//! syncline's processors: stages that read change topics, transform or
//! deduplicate the changes, and publish them again.
//!
//! - [`rules`]: declarative transformation steps (filter, set, rename, drop,
//!   cast, mask, route, unwrap) with CEL expressions, and the `rules`
//!   processor that consumes, applies them and produces (at least once, with
//!   stable identity; see [`rules::runtime`]).
//! - [`dedup`]: the `dedup` processor: drops changes already seen (by
//!   identity, content or chosen fields, forever or within a TTL), with its
//!   state in RocksDB backed by a compacted changelog topic (see
//!   [`dedup::runtime`] for the commit order that makes it replay-safe).
//! - [`transaction`]: Kafka transactions around a batch (`kafka.exactly_once:
//!   transactions`); [`metrics`]: the processors' own metrics. Consuming,
//!   producing, dead letters and retries are the connector runtime's
//!   (`syncline-runtime`).

pub mod dedup;
pub mod metrics;
pub mod rules;
pub mod transaction;

pub use dedup::DedupProcessorConfig;
pub use rules::{CompiledRules, Outcome, RulesConfig, RulesProcessorConfig, StepConfig};

/// The checks every processor's `from`, `to` and batch settings share;
/// `outputs` are all the topics it may write. Paths are relative to the
/// processor's entry.
pub(crate) fn check_common(
    from: &[String],
    to: &str,
    outputs: &[String],
    batch_size: usize,
    batch_timeout_ms: u64,
) -> Vec<syncline_core::config::Issue> {
    use syncline_core::config::Issue;
    let mut issues = Vec::new();
    if from.is_empty() {
        issues.push(Issue::new("from", "list at least one topic to read"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in from.iter().enumerate() {
        if t.is_empty() {
            issues.push(Issue::new(
                format!("from[{i}]"),
                "a topic name cannot be empty",
            ));
        } else if !seen.insert(t) {
            issues.push(Issue::new(
                format!("from[{i}]"),
                format!("topic `{t}` is listed twice"),
            ));
        }
    }
    if to.is_empty() {
        issues.push(Issue::new("to", "name the topic the outputs go to"));
    }
    for t in outputs {
        if from.contains(t) {
            issues.push(Issue::new(
                "to",
                format!("topic `{t}` is both read and written by this processor; write to another topic"),
            ));
        }
    }
    if batch_size == 0 {
        issues.push(Issue::new("batch_size", "must be at least 1"));
    }
    if batch_timeout_ms == 0 {
        issues.push(Issue::new("batch_timeout_ms", "must be at least 1"));
    }
    issues
}

/// A TRUNCATE of one of several input topics merged into one output is not
/// forwarded: applying it there would empty the rows of the others too.
pub(crate) fn merged_truncate() -> syncline_core::Error {
    syncline_core::Error::data(
        "it is a TRUNCATE of one of several input topics merged into one output; \
         applying it would empty the rows of the others too, so it is not forwarded",
    )
}

/// An output that cannot be published, named by its input. An output the
/// encoder cannot encode is this record's problem (`Data`: dead-lettered);
/// a registry away or refusing the schema keeps its kind.
pub(crate) fn output_error(
    e: syncline_core::Error,
    at: &dyn std::fmt::Display,
    topic: &str,
) -> syncline_core::Error {
    use syncline_core::error::ErrorKind;
    let kind = match e.kind() {
        ErrorKind::Internal => ErrorKind::Data,
        k => k,
    };
    syncline_core::Error::new(
        kind,
        format!("cannot publish the output of the record at {at} to `{topic}`"),
    )
    .with_source(e)
}
