//! Configuration of [`StreamGuardLayer`]: the three time limits, the malformed-event policy, the
//! grace for a missing `[DONE]` and the bound on one event, validated when built.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_core::{MalformedPolicy, StreamGuardLayer, StreamLimits};
//!
//! let layer = StreamGuardLayer::builder()
//!     .limits(StreamLimits::new(Duration::from_secs(5), Duration::from_secs(20), Duration::from_secs(90)))
//!     .malformed(MalformedPolicy::End)
//!     .finish_grace(Duration::from_millis(200))
//!     .build()
//!     .unwrap();
//! assert_eq!(layer.limits().ttft, Duration::from_secs(5));
//!
//! // Invalid values are refused when built, never at call time.
//! let err = StreamGuardLayer::builder().max_event_size(0).build().unwrap_err();
//! assert_eq!(err.field(), "max_event_size");
//! ```

use std::time::Duration;

use crate::sse::DEFAULT_MAX_EVENT_SIZE;
use crate::ConfigError;

use super::StreamGuardLayer;

/// Default time to the first event: 10 s.
pub const DEFAULT_TTFT: Duration = Duration::from_secs(10);
/// Default longest gap between two events: 30 s.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);
/// Default longest stream, from the call to the last byte: 120 s.
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(120);
/// Default largest non-stream answer read whole by the guard: 8 MiB.
pub const DEFAULT_MAX_BUFFERED_BODY: usize = 8 * 1024 * 1024;
/// Default wait for `[DONE]` after a `finish_reason`: 500 ms.
pub const DEFAULT_FINISH_GRACE: Duration = Duration::from_millis(500);

/// The three independent time limits of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamLimits {
    /// Time to first event: from the call to the first event that carries an answer (a delta or
    /// a `finish_reason`; comments and pings do not count). Past it, the attempt fails with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). The wait for the response headers
    /// counts (the guard cannot tell a stream from a JSON answer before them, so it only acts
    /// once they say `text/event-stream`); an event already received when late headers arrive is
    /// still taken.
    pub ttft: Duration,
    /// The longest silence between two events (comments count: they are keep-alives) once the
    /// stream has started. Past it, the stream is ended with an error event.
    pub idle: Duration,
    /// The longest stream, from the call to its end. Past it, the attempt fails (before the first
    /// event) or the stream is ended with an error event (after).
    pub total: Duration,
}

impl StreamLimits {
    /// `ttft`, `idle` and `total` as given.
    pub const fn new(ttft: Duration, idle: Duration, total: Duration) -> Self {
        StreamLimits { ttft, idle, total }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("ttft", self.ttft),
            ("idle", self.idle),
            ("total", self.total),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
        }
        Ok(())
    }
}

impl Default for StreamLimits {
    /// TTFT 10 s, idle 30 s, total 120 s.
    fn default() -> Self {
        StreamLimits::new(DEFAULT_TTFT, DEFAULT_IDLE, DEFAULT_TOTAL)
    }
}

/// What to do with an event whose data is neither `[DONE]` nor JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MalformedPolicy {
    /// Leave it out and go on: the caller never sees its bytes.
    #[default]
    Skip,
    /// End the stream there with an `invalid_response` error event (before the first event: fail
    /// the attempt with [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse)).
    End,
}

/// The validated settings a guard copies into each call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuardConfig {
    pub(crate) limits: StreamLimits,
    pub(crate) malformed: MalformedPolicy,
    pub(crate) finish_grace: Duration,
    pub(crate) max_event_size: usize,
    pub(crate) max_buffered_body_bytes: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            limits: StreamLimits::default(),
            malformed: MalformedPolicy::Skip,
            finish_grace: DEFAULT_FINISH_GRACE,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY,
        }
    }
}

/// Builder of a [`StreamGuardLayer`]; see [`StreamGuardLayer::builder`]. Every setting starts at
/// its default; [`build`](Self::build) validates them.
///
/// There is no `classifier`: the guard does not judge statuses or headers. It watches `2xx
/// text/event-stream` bodies and the JSON bodies of other `2xx` answers it reads whole, takes a
/// failure's kind from the in-band error that names it (or from
/// [`classify_error`](crate::classify_error) for a body error), and leaves every other response
/// to the classifiers of the layers above.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_core::{MalformedPolicy, StreamGuardLayer, StreamLimits};
///
/// let layer = StreamGuardLayer::builder()
///     .ttft(Duration::from_secs(5))
///     .idle(Duration::from_secs(20))
///     .malformed(MalformedPolicy::End)
///     .build()
///     .unwrap();
/// assert_eq!(layer.limits(), StreamLimits::new(Duration::from_secs(5), Duration::from_secs(20), Duration::from_secs(120)));
///
/// let err = StreamGuardLayer::builder().idle(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "idle");
/// ```
#[derive(Clone, Debug, Default)]
pub struct StreamGuardLayerBuilder {
    config: GuardConfig,
}

impl StreamGuardLayerBuilder {
    /// All three limits at once.
    pub fn limits(mut self, limits: StreamLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Time to first event (default 10 s).
    pub fn ttft(mut self, ttft: Duration) -> Self {
        self.config.limits.ttft = ttft;
        self
    }

    /// Longest gap between events (default 30 s).
    pub fn idle(mut self, idle: Duration) -> Self {
        self.config.limits.idle = idle;
        self
    }

    /// Longest stream (default 120 s).
    pub fn total(mut self, total: Duration) -> Self {
        self.config.limits.total = total;
        self
    }

    /// What to do with a malformed event (default [`MalformedPolicy::Skip`]).
    pub fn malformed(mut self, policy: MalformedPolicy) -> Self {
        self.config.malformed = policy;
        self
    }

    /// How long to wait for `[DONE]` after a `finish_reason` before appending `[DONE]` and ending
    /// the stream (default 500 ms). Each later answer chunk (a usage chunk, another choice's
    /// delta) starts the wait again; comments and pings do not. Zero ends the stream right after
    /// the chunk that carried the `finish_reason`.
    pub fn finish_grace(mut self, grace: Duration) -> Self {
        self.config.finish_grace = grace;
        self
    }

    /// The largest event accepted, in bytes (default 1 MiB). A bigger one ends the stream as
    /// [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse): it is a broken or
    /// hostile upstream, and holding it would mean buffering without bound.
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.config.max_event_size = bytes;
        self
    }

    /// The largest non-stream `2xx` answer read whole before the response is handed on (default
    /// 8 MiB). Reading it whole, under the same `ttft` / `idle` / `total` limits as a stream,
    /// turns a body that stalls or breaks into a failed attempt (`Timeout` / `Transport`) that
    /// retry and fallback act on. Past the cap (or when the body announces a larger length) the
    /// response is handed on as the bytes read so far plus the rest of the body, unguarded.
    /// A JSON body read whole is also checked to be one JSON value and not a provider's error
    /// object (see [the module docs](crate::stream)); one past the cap is not.
    /// Zero turns the read off: non-stream answers pass through untouched.
    pub fn max_buffered_body_bytes(mut self, bytes: usize) -> Self {
        self.config.max_buffered_body_bytes = bytes;
        self
    }

    /// Validate and build the layer.
    pub fn build(self) -> Result<StreamGuardLayer, ConfigError> {
        self.config.limits.validate()?;
        if self.config.max_event_size == 0 {
            return Err(ConfigError::new(
                "max_event_size",
                "must be at least one byte",
            ));
        }
        Ok(StreamGuardLayer::from_config(self.config))
    }
}
