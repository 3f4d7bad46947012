//! Metric names and per-partition handles.
//!
//! Every metric carries the label `target`: what the partition's limits protect.
//!
//! - **Unpartitioned** (the default, [`Global`](crate::Global)): the bulkhead's
//!   [`name`](crate::BulkheadLayerBuilder::name). One bulkhead per target (the one-service-per-target
//!   shape, and the facade's standard stack) names it after the target, `openai/gpt-4o-mini`, and
//!   its metrics line up with the breaker's and retry's of the same target.
//! - **Partitioned** ([`ByTarget`](crate::ByTarget), [`ByModel`](crate::ByModel), ...): the
//!   partition key, as its `Display` writes it (`ByTarget`: `provider/model`), so each target
//!   below a fallback chain has its own series; calls of keys beyond
//!   [`max_partitions`](crate::BulkheadLayerBuilder::max_partitions) are labelled `overflow`
//!   (whether the shared overflow partition serves them or they are rejected).
//! - With [`TargetLabel::Name`](crate::TargetLabel::Name): the bulkhead's name for every
//!   partition.
//!
//! Label values stay bounded: one per bulkhead, or one per partition key. The partition table
//! holds at most `max_partitions` keys at once, but a recorder keeps every series it has seen,
//! so keys that clients choose (a tenant header, the request's `model`) can add series without
//! bound over time; label such a bulkhead by its name with
//! [`.target_label(TargetLabel::Name)`](crate::BulkheadLayerBuilder::target_label) (gauges then add
//! up over its partitions). Partition keys name targets or tenants, never secrets: see
//! [`PartitionKey`](crate::PartitionKey).
//!
//! A partition registers its handles once, on its first call, with the recorder installed at that
//! moment; after that, recording does no lookup and no allocation. A bulkhead that is built but
//! never called adds no series.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | [`tower_llm_bulkhead_in_flight`](IN_FLIGHT) | gauge | `target` | calls holding a permit (until the response body ends) |
//! | [`tower_llm_bulkhead_queued`](QUEUED) | gauge | `target` | calls waiting for a concurrency permit |
//! | [`tower_llm_bulkhead_limit`](LIMIT) | gauge | `target` | current concurrency limit (moves when adaptive; the sum over partitions sharing the label; 0 once the partition is evicted) |
//! | [`tower_llm_bulkhead_rejected_total`](REJECTED_TOTAL) | counter | `target`, `reason` ([`LimitKind::as_str`]: `concurrency`, `queue`, `expected_wait`, `max_wait`, `partitions`, `rate`, `tokens`, `request_too_large`) | calls shed, by the limit that shed them |
//! | [`tower_llm_bulkhead_wait_seconds`](WAIT_SECONDS) | histogram | `target`, `outcome` (`admitted`, `rejected`) | time spent waiting for a concurrency permit, for calls that had to wait (give it [`LATENCY_BUCKETS`](tower_llm_core::stream::metrics::LATENCY_BUCKETS) in the exporter, see [`HISTOGRAMS`]) |
//! | [`tower_llm_bulkhead_tokens_corrected_total`](TOKENS_CORRECTED_TOTAL) | counter | `target`, `direction` (`refund`, `debit`) | tokens moved back into (`refund`) or out of (`debit`) a token budget when the response's usage differs from the estimate charged at admission |
//!
//! ```
//! use tower_llm_bulkhead::{metrics, BulkheadLayer};
//!
//! // One bulkhead per target: its name is the `target` label of every metric it records.
//! let layer = BulkheadLayer::builder().name("openai/gpt-4o-mini").build().unwrap();
//! assert_eq!(layer.handle().name(), "openai/gpt-4o-mini");
//! assert_eq!(metrics::IN_FLIGHT, "tower_llm_bulkhead_in_flight");
//! assert_eq!(metrics::TARGET, "target");
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};
use tower_llm_core::LimitKind;

/// Gauge, label `target`: calls holding a permit (an HTTP response holds it until its body ends).
pub const IN_FLIGHT: &str = "tower_llm_bulkhead_in_flight";
/// Gauge, label `target`: calls waiting for a concurrency permit.
pub const QUEUED: &str = "tower_llm_bulkhead_queued";
/// Gauge, label `target`: the current concurrency limit (moves when adaptive).
pub const LIMIT: &str = "tower_llm_bulkhead_limit";
/// Counter, labels `target`, `reason` ([`LimitKind::as_str`]): rejected calls.
pub const REJECTED_TOTAL: &str = "tower_llm_bulkhead_rejected_total";
/// Histogram (seconds), labels `target`, `outcome` (`admitted`, `rejected`): the wait of calls
/// that had to wait for a concurrency permit.
pub const WAIT_SECONDS: &str = "tower_llm_bulkhead_wait_seconds";
/// Counter (tokens), labels `target`, `direction` (`refund`, `debit`): token-budget corrections
/// from response usage.
pub const TOKENS_CORRECTED_TOTAL: &str = "tower_llm_bulkhead_tokens_corrected_total";

/// Every metric name of this crate.
pub const ALL: [&str; 6] = [
    IN_FLIGHT,
    QUEUED,
    LIMIT,
    REJECTED_TOTAL,
    WAIT_SECONDS,
    TOKENS_CORRECTED_TOTAL,
];

/// The histograms of this crate (give them
/// [`LATENCY_BUCKETS`](tower_llm_core::stream::metrics::LATENCY_BUCKETS)).
pub const HISTOGRAMS: [&str; 1] = [WAIT_SECONDS];

/// Label: what the partition protects (see the [module docs](self)).
pub const TARGET: &str = "target";
/// Label of [`REJECTED_TOTAL`]: the limit that rejected the call ([`LimitKind::as_str`]).
pub const REASON: &str = "reason";
/// Label of [`WAIT_SECONDS`]: `admitted` or `rejected`.
pub const OUTCOME: &str = "outcome";
/// Label of [`TOKENS_CORRECTED_TOTAL`]: `refund` or `debit`.
pub const DIRECTION: &str = "direction";
/// The `target` value of calls whose key found no partition of its own (beyond
/// `max_partitions`), in a bulkhead labelled by partition.
pub const OVERFLOW_TARGET: &str = "overflow";

/// The handles of one partition, registered on the partition's first call (not when it is
/// created), so a bulkhead built before the recorder is installed, or built and never called
/// (a configuration check), records to the right recorder and adds no series.
pub(crate) struct PartitionMetrics {
    target: Arc<str>,
    /// The limit the partition starts with: added to the `limit` gauge when it is registered.
    initial_limit: usize,
    handles: OnceLock<Handles>,
}

struct Handles {
    in_flight: Gauge,
    queued: Gauge,
    limit: Gauge,
    waited_admitted: Histogram,
    waited_rejected: Histogram,
}

impl PartitionMetrics {
    pub(crate) fn new(target: &Arc<str>, initial_limit: usize) -> Self {
        PartitionMetrics {
            target: Arc::clone(target),
            initial_limit,
            handles: OnceLock::new(),
        }
    }

    /// The handles, registered on first use (a load and a branch afterwards).
    #[inline]
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| self.register())
    }

    #[cold]
    #[inline(never)]
    fn register(&self) -> Handles {
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut labels = vec![Label::new(TARGET, Arc::clone(&self.target))];
            if let Some((k, v)) = extra {
                labels.push(Label::new(k, v));
            }
            labels
        };
        let handles = Handles {
            in_flight: metrics::gauge!(IN_FLIGHT, labels(None)),
            queued: metrics::gauge!(QUEUED, labels(None)),
            limit: metrics::gauge!(LIMIT, labels(None)),
            waited_admitted: metrics::histogram!(WAIT_SECONDS, labels(Some((OUTCOME, "admitted")))),
            waited_rejected: metrics::histogram!(WAIT_SECONDS, labels(Some((OUTCOME, "rejected")))),
        };
        // Added, not set: partitions sharing a label add up, and an evicted one takes its part
        // back when dropped.
        handles.limit.increment(self.initial_limit as f64);
        handles
    }

    /// The `in_flight` gauge.
    #[inline]
    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.handles().in_flight
    }

    /// The `queued` gauge.
    #[inline]
    pub(crate) fn queued(&self) -> &Gauge {
        &self.handles().queued
    }

    /// Move the `limit` gauge by the change from `from` to `to`.
    pub(crate) fn limit_moved(&self, from: usize, to: usize) {
        let limit = &self.handles().limit;
        if to > from {
            limit.increment((to - from) as f64);
        } else {
            limit.decrement((from - to) as f64);
        }
    }

    /// The partition goes away with `limit`: take it back from the `limit` gauge (if it was ever
    /// added).
    pub(crate) fn dropped(&self, limit: usize) {
        if let Some(handles) = self.handles.get() {
            handles.limit.decrement(limit as f64);
        }
    }

    /// Record a rejection (slow path: registers the counter on the spot).
    pub(crate) fn rejected(&self, reason: LimitKind) {
        rejected(Arc::clone(&self.target), reason);
    }

    /// Record the wait of a call that had to wait.
    pub(crate) fn waited(&self, waited: Duration, admitted: bool) {
        let handles = self.handles();
        if admitted {
            handles.waited_admitted.record(waited.as_secs_f64());
        } else {
            handles.waited_rejected.record(waited.as_secs_f64());
        }
    }

    /// Record a token-budget correction.
    pub(crate) fn corrected(&self, refund: bool, tokens: u64) {
        let direction = if refund { "refund" } else { "debit" };
        metrics::counter!(
            TOKENS_CORRECTED_TOTAL,
            TARGET => Arc::clone(&self.target),
            DIRECTION => direction
        )
        .increment(tokens);
    }
}

/// Record a rejection of a call labelled `target` (slow path: registers the counter on the spot).
pub(crate) fn rejected(target: Arc<str>, reason: LimitKind) {
    let counter: Counter = metrics::counter!(
        REJECTED_TOTAL,
        TARGET => target,
        REASON => reason.as_str()
    );
    counter.increment(1);
}
