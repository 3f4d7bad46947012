//! The gateway's Prometheus recorder and its own metric.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | [`REQUESTS_TOTAL`] `tower_llm_gateway_requests_total` | counter | `outcome` (`success`, `failure`), `fallback` (`none`, `target`, `cache`, `static`), `status`, `client` (the client key's name, `anonymous` without client keys; never a key) | chat requests answered, by HTTP status, by what answered them and by client |
//!
//! `/metrics` also shows every `tower_llm_*` metric of the stack's layers (breaker, retry,
//! fallback, bulkhead: see each crate's `metrics` module).
//!
//! **Install the recorder before building a stack.** The breaker registers its metric handles
//! when it is built, with the recorder installed at that moment: a stack built before the
//! recorder is installed keeps no-op handles, and its breakers never appear in `/metrics`.
//! [`Gateway::start`](crate::Gateway::start) calls [`prometheus_handle`] first, so the routes
//! built at start (those whose targets all name a model) are recorded like the others.
//!
//! The recorder is process-global (the `metrics` facade has one global recorder): every
//! gateway in a process renders the same registry. When another recorder was installed first,
//! `/metrics` stays empty (with a warning in the log).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Counter `tower_llm_gateway_requests_total{outcome, fallback, status, client}`: chat requests
/// answered.
pub const REQUESTS_TOTAL: &str = "tower_llm_gateway_requests_total";

/// Every metric name of this crate.
pub const ALL: [&str; 1] = [REQUESTS_TOTAL];

/// The process-wide Prometheus recorder, installed as the global `metrics` recorder on the first
/// call; later calls return a handle to the same registry.
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}
