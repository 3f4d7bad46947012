//! The binary's log subscriber without an OTLP exporter: the INFO request and attempt spans are
//! disabled where they are created (no layer records them), so a streamed body's per-poll
//! `span.enter()` costs nothing; warnings are still logged. (Its own process: the subscriber is
//! global.)

#![cfg(feature = "cli")]

use tower_llm_gateway::cli::{init_logging_as, LogFormat};

#[test]
fn without_an_exporter_info_spans_are_disabled_and_warnings_are_not() {
    init_logging_as(LogFormat::Text);
    let request = tracing::info_span!(target: "tower_llm_gateway::request", "gateway.request");
    assert!(request.is_disabled());
    let attempt = tracing::info_span!(target: "tower_llm_fallback::trace", "llm.attempt");
    assert!(attempt.is_disabled());
    let tower_http = tracing::info_span!("request", method = "POST");
    assert!(tower_http.is_disabled());
    assert!(tracing::enabled!(tracing::Level::WARN));
    // The gateway's own notices (key reloads) stay on at INFO.
    assert!(tracing::enabled!(target: "tower_llm_gateway::reload", tracing::Level::INFO));
}
