//! [`StreamGuardLayer`], built with [`StreamGuardLayer::builder`].
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{InspectErrorBodyLayer, StreamGuardLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let guard = StreamGuardLayer::builder()
//!     .ttft(Duration::from_secs(5))
//!     .idle(Duration::from_secs(20))
//!     .total(Duration::from_secs(90))
//!     .build()
//!     .unwrap();
//! let upstream = service_fn(|_req: http::Request<()>| async {
//!     let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
//!     let res = http::Response::builder()
//!         .header("content-type", "text/event-stream")
//!         .body(Full::new(Bytes::from(sse)))
//!         .unwrap();
//!     Ok::<_, std::convert::Infallible>(res)
//! });
//! // Innermost, just above the error-body inspection and the client.
//! let client = ServiceBuilder::new()
//!     .layer(guard)
//!     .layer(InspectErrorBodyLayer::new())
//!     .service(upstream);
//! let res = client.oneshot(http::Request::new(())).await.unwrap();
//! let sse = res.into_body().collect().await.unwrap().to_bytes();
//! assert!(sse.ends_with(b"data: [DONE]\n\n"));
//! # }
//! ```

use std::time::Duration;

use tower_layer::Layer;

use super::config::GuardConfig;
use super::{MalformedPolicy, StreamGuard, StreamGuardLayerBuilder, StreamLimits};

/// Layer that applies [`StreamGuard`]: commits to a streamed answer only after its first event,
/// and enforces time-to-first-event, idle and total limits on it. See the [module
/// docs](crate::stream).
///
/// Place it innermost, just above [`InspectErrorBodyLayer`](crate::InspectErrorBodyLayer) and
/// below retry and fallback: a stream that never starts is then an ordinary failed attempt that
/// every layer above can retry or fail over.
///
/// The layer holds only its (copied) configuration: the guard keeps no state between calls, so
/// it has no `handle()` (each stream reports how it ended through
/// [`StreamOutcome`](crate::StreamOutcome), and in aggregate through its
/// [metrics](crate::stream::metrics)).
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamGuardLayer {
    config: GuardConfig,
}

impl StreamGuardLayer {
    /// The defaults: TTFT 10 s, idle 30 s, total 120 s, malformed events skipped, 500 ms grace
    /// for a missing `[DONE]`, events up to 1 MiB, non-stream answers read whole up to 8 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder starting from the defaults.
    pub fn builder() -> StreamGuardLayerBuilder {
        StreamGuardLayerBuilder::default()
    }

    pub(crate) fn from_config(config: GuardConfig) -> Self {
        StreamGuardLayer { config }
    }

    /// The time limits.
    pub fn limits(&self) -> StreamLimits {
        self.config.limits
    }

    /// The malformed-event policy.
    pub fn malformed_policy(&self) -> MalformedPolicy {
        self.config.malformed
    }

    /// The wait for `[DONE]` after a `finish_reason`.
    pub fn finish_grace(&self) -> Duration {
        self.config.finish_grace
    }

    /// The largest event accepted, in bytes.
    pub fn max_event_size(&self) -> usize {
        self.config.max_event_size
    }

    /// The largest non-stream answer read whole, in bytes (0: not read).
    pub fn max_buffered_body_bytes(&self) -> usize {
        self.config.max_buffered_body_bytes
    }
}

impl<S> Layer<S> for StreamGuardLayer {
    type Service = StreamGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamGuard::from_config(inner, self.config)
    }
}
