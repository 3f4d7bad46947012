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
//! **Idle series are dropped.** A series not updated for `[gateway] metrics_idle_timeout_ms`
//! (default 10 minutes) leaves `/metrics` at the next render: the targets of a pass-through
//! route come and go with the models clients ask for, and the `metrics` facade cannot delete
//! a series, so without this the registry would keep one per model ever requested. A series
//! emitted again by name comes back; one whose handle a live target holds (its breaker's)
//! does not, so the timeout should be longer than a target usually stays idle (`0` keeps every
//! series forever).
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

/// The default of `[gateway] metrics_idle_timeout_ms`: 10 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The process-wide Prometheus recorder, installed as the global `metrics` recorder on the first
/// call, dropping series idle for [`DEFAULT_IDLE_TIMEOUT`]; later calls return a handle to the
/// same registry.
pub fn prometheus_handle() -> PrometheusHandle {
    prometheus_handle_with_idle_timeout(Some(DEFAULT_IDLE_TIMEOUT))
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
