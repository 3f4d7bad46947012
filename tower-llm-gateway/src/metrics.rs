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
//! **Idle series can be dropped** (`[gateway] metrics_idle_timeout_ms`, off by default): a
//! series not updated for that long leaves `/metrics` at the next render. The targets of a
//! pass-through route come and go with the models clients ask for (the library evicts idle
//! models past 256 per route), and the `metrics` facade cannot delete a series, so without it
//! the registry keeps the series of every model ever requested. It is off by default because a
//! series whose handle a live target holds does not come back once dropped: the breaker sets
//! its state gauge only on transitions, so a healthy breaker's `tower_llm_breaker_state` would
//! vanish after the timeout even under traffic. Turn it on when untrusted clients can send
//! many distinct model names to a pass-through route, and alert on counters rather than on
//! the breaker's gauges then.
//!
//! The recorder is process-global (the `metrics` facade has one global recorder): every
//! gateway in a process renders the same registry, with the idle timeout of the first. When another recorder was installed first,
//! `/metrics` stays empty (with a warning in the log).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// Counter `tower_llm_gateway_requests_total{outcome, fallback, status, client}`: chat requests
/// answered.
pub const REQUESTS_TOTAL: &str = "tower_llm_gateway_requests_total";

/// Every metric name of this crate.
pub const ALL: [&str; 1] = [REQUESTS_TOTAL];

/// The process-wide Prometheus recorder, installed as the global `metrics` recorder on the first
/// call, keeping every series (the default of `[gateway] metrics_idle_timeout_ms`); later calls
/// return a handle to the same registry.
pub fn prometheus_handle() -> PrometheusHandle {
    prometheus_handle_with_idle_timeout(None)
}

/// As [`prometheus_handle`], with series not updated for `idle_timeout` dropped from the
/// registry (`None`: kept forever). Only the first call of the process installs the recorder:
/// later calls return its handle whatever their timeout.
pub fn prometheus_handle_with_idle_timeout(idle_timeout: Option<Duration>) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::ALL, idle_timeout)
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}
