//! Metric names and per-partition handles.
//!
//! Every metric carries the labels `bulkhead` (the layer's name) and `partition` (the partition
//! key, or the layer's name when unpartitioned). Handles are registered once, when a partition is
//! created, so recording on the hot path does no lookup and no allocation: install the `metrics`
//! recorder before building the layer.
//!
//! | name | type | extra labels | meaning |
//! |---|---|---|---|
//! | `tower_llm_bulkhead_in_flight` | gauge | | calls holding a permit (until the response body ends) |
//! | `tower_llm_bulkhead_queued` | gauge | | calls waiting for a permit |
//! | `tower_llm_bulkhead_limit` | gauge | | current concurrency limit (moves when adaptive) |
//! | `tower_llm_bulkhead_rejected_total` | counter | `reason` ([`LimitKind::as_str`]) | rejected calls |
//! | `tower_llm_bulkhead_wait_seconds` | histogram | `outcome` (`admitted`, `rejected`) | time spent waiting, for calls that had to wait |
//! | `tower_llm_bulkhead_tokens_corrected_total` | counter | `direction` (`refund`, `debit`) | token-budget corrections from response usage |

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tower_llm_core::LimitKind;

/// Calls holding a permit.
pub const IN_FLIGHT: &str = "tower_llm_bulkhead_in_flight";
/// Calls waiting for a permit.
pub const QUEUED: &str = "tower_llm_bulkhead_queued";
/// Current concurrency limit.
pub const LIMIT: &str = "tower_llm_bulkhead_limit";
/// Rejected calls, by `reason`.
pub const REJECTED_TOTAL: &str = "tower_llm_bulkhead_rejected_total";
/// Wait time of calls that had to wait, by `outcome`.
pub const WAIT_SECONDS: &str = "tower_llm_bulkhead_wait_seconds";
/// Token-budget corrections from response usage, in tokens, by `direction`.
pub const TOKENS_CORRECTED_TOTAL: &str = "tower_llm_bulkhead_tokens_corrected_total";

/// The handles of one partition.
pub(crate) struct PartitionMetrics {
    bulkhead: Arc<str>,
    partition: Arc<str>,
    pub(crate) in_flight: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) limit: Gauge,
    waited_admitted: Histogram,
    waited_rejected: Histogram,
}

impl PartitionMetrics {
    pub(crate) fn new(bulkhead: &Arc<str>, partition: &Arc<str>) -> Self {
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut labels = vec![
                metrics::Label::new("bulkhead", Arc::clone(bulkhead)),
                metrics::Label::new("partition", Arc::clone(partition)),
            ];
            if let Some((k, v)) = extra {
                labels.push(metrics::Label::new(k, v));
            }
            labels
        };
        PartitionMetrics {
            bulkhead: Arc::clone(bulkhead),
            partition: Arc::clone(partition),
            in_flight: metrics::gauge!(IN_FLIGHT, labels(None)),
            queued: metrics::gauge!(QUEUED, labels(None)),
            limit: metrics::gauge!(LIMIT, labels(None)),
            waited_admitted: metrics::histogram!(
                WAIT_SECONDS,
                labels(Some(("outcome", "admitted")))
            ),
            waited_rejected: metrics::histogram!(
                WAIT_SECONDS,
                labels(Some(("outcome", "rejected")))
            ),
        }
    }

    /// Record a rejection (slow path: registers the counter on the spot).
    pub(crate) fn rejected(&self, reason: LimitKind) {
        self.counter("reason", reason.as_str(), REJECTED_TOTAL)
            .increment(1);
    }

    /// Record the wait of a call that had to wait.
    pub(crate) fn waited(&self, waited: Duration, admitted: bool) {
        if admitted {
            self.waited_admitted.record(waited.as_secs_f64());
        } else {
            self.waited_rejected.record(waited.as_secs_f64());
        }
    }

    /// Record a token-budget correction.
    pub(crate) fn corrected(&self, refund: bool, tokens: u64) {
        let direction = if refund { "refund" } else { "debit" };
        self.counter("direction", direction, TOKENS_CORRECTED_TOTAL)
            .increment(tokens);
    }

    fn counter(&self, key: &'static str, value: &'static str, name: &'static str) -> Counter {
        metrics::counter!(
            name,
            "bulkhead" => Arc::clone(&self.bulkhead),
            "partition" => Arc::clone(&self.partition),
            key => value
        )
    }
}
