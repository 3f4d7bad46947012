//! Metric names of the stream guard ([`StreamGuardLayer`](super::StreamGuardLayer)), recorded
//! through the `metrics` facade.
//!
//! The `target` label is the request's [`Target`](crate::Target) extension (`provider/model`, set
//! by a fallback chain above, or by the caller), empty when the request carries none; the
//! targets a chain is configured with bound its values. `kind` is an
//! [`ErrorKind::as_str`](crate::ErrorKind::as_str), `none` for a stream that did not fail.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | [`tower_llm_stream_ends_total`](ENDS_TOTAL) | counter | `target`, `outcome` (`complete`, `failed`, `abandoned`: [`StreamEnd::as_str`](super::StreamEnd::as_str); `rejected`: failed before its first event, the call returned an error), `kind` | streamed answers by how they ended |
//! | [`tower_llm_stream_first_event_seconds`](FIRST_EVENT_SECONDS) | histogram | `target` | time from the call to the first answer event of each stream that committed (time to first token) |
//!
//! ```
//! use tower_llm_core::stream::metrics;
//! use tower_llm_core::StreamGuardLayer;
//!
//! // The guard records these for each `text/event-stream` answer it watches.
//! let layer = StreamGuardLayer::builder().build().unwrap();
//! # let _ = layer;
//! assert_eq!(metrics::ENDS_TOTAL, "tower_llm_stream_ends_total");
//! assert_eq!(metrics::TARGET, "target");
//! ```

/// Counter, labels `target`, `outcome` (`complete`, `failed`, `abandoned`, `rejected`), `kind`:
/// streamed answers by how they ended.
pub const ENDS_TOTAL: &str = "tower_llm_stream_ends_total";
/// Histogram (seconds), label `target`: time to the first answer event of a committed stream.
pub const FIRST_EVENT_SECONDS: &str = "tower_llm_stream_first_event_seconds";

/// Label: the request's target (`provider/model`; empty without a `Target` extension).
pub const TARGET: &str = "target";
/// Label of [`ENDS_TOTAL`]: how the stream ended.
pub const OUTCOME: &str = "outcome";
/// Label of [`ENDS_TOTAL`]: the error kind of a failed stream (`none` otherwise).
pub const KIND: &str = "kind";
/// The `outcome` of a stream that failed before its first event (the call returned an error).
pub const REJECTED: &str = "rejected";
