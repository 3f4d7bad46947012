//! [`StreamGuardLayer`].

use std::time::Duration;

use tower_layer::Layer;

use super::config::GuardConfig;
use super::{MalformedPolicy, StreamGuard, StreamGuardBuilder, StreamLimits};

/// Layer that applies [`StreamGuard`]: commits to a streamed answer only after its first event,
/// and enforces time-to-first-event, idle and total limits on it. See the [module
/// docs](crate::stream).
///
/// Place it innermost, just above [`InspectErrorBodyLayer`](crate::InspectErrorBodyLayer) and
/// below retry and fallback: a stream that never starts is then an ordinary failed attempt that
/// every layer above can retry or fail over.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamGuardLayer {
    config: GuardConfig,
}

impl StreamGuardLayer {
    /// The defaults: TTFT 10 s, idle 30 s, total 120 s, malformed events skipped, 500 ms grace
    /// for a missing `[DONE]`, events up to 1 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder starting from the defaults.
    pub fn builder() -> StreamGuardBuilder {
        StreamGuardBuilder::default()
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
}

impl<S> Layer<S> for StreamGuardLayer {
    type Service = StreamGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamGuard::from_config(inner, self.config)
    }
}
