//! The metrics every processor records (names in docs/metrics.md), labelled
//! with `pipeline` and `processor`. Handles are built once per processor, so
//! the hot path only adds to atomics.

use metrics::{Counter, Gauge};
use syncline_core::runtime::ComponentContext;

#[derive(Clone)]
pub struct ProcessorMetrics {
    /// Changes a `filter` step dropped.
    pub filtered: Counter,
    /// Changes a dedup processor dropped as duplicates.
    pub deduplicated: Counter,
    /// Keys held in the state store (an estimate from RocksDB).
    pub state_keys: Gauge,
    /// Bytes of live data in the state store (an estimate from RocksDB).
    pub state_bytes: Gauge,
    /// Changelog records applied while restoring state.
    pub restored: Counter,
    /// Changelog records still to apply in the restore under way (0 when none).
    pub restore_remaining: Gauge,
}

impl ProcessorMetrics {
    pub fn new(ctx: &ComponentContext) -> Self {
        let labels = [
            ("pipeline", ctx.pipeline.clone()),
            ("processor", ctx.component.clone()),
        ];
        Self {
            filtered: metrics::counter!("syncline_processor_records_filtered_total", &labels),
            deduplicated: metrics::counter!(
                "syncline_processor_records_deduplicated_total",
                &labels
            ),
            state_keys: metrics::gauge!("syncline_processor_state_keys", &labels),
            state_bytes: metrics::gauge!("syncline_processor_state_bytes", &labels),
            restored: metrics::counter!("syncline_processor_restored_records_total", &labels),
            restore_remaining: metrics::gauge!(
                "syncline_processor_restore_remaining_records",
                &labels
            ),
        }
    }
}
