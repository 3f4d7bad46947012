//! [`ChaosLayer`]: inject errors, latency and canned responses into any tower service.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_chaos::ChaosLayer;
//! use tower_llm_core::{classify_error, ErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_core::BoxError> {
//! let chaos = ChaosLayer::builder()
//!     .error_rate(1.0)
//!     .error_kind(ErrorKind::RateLimited)
//!     .error_retry_after(Duration::from_secs(2))
//!     .seed(7)
//!     .build()?;
//! let switch = chaos.switch();
//! let svc = ServiceBuilder::new()
//!     .layer(chaos.clone())
//!     .service(service_fn(|req: &'static str| async move { Ok::<_, std::io::Error>(req.len()) }));
//!
//! // Every call fails with a classified error that retry and fallback layers understand.
//! let err = svc.clone().oneshot("hello").await.unwrap_err();
//! let failure = classify_error(&*err);
//! assert_eq!(failure.kind, ErrorKind::RateLimited);
//! assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
//!
//! // Switched off, calls go through untouched.
//! switch.disable();
//! assert_eq!(svc.oneshot("hello").await?, 5);
//! assert_eq!(chaos.stats().errors, 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use tower_layer::Layer;
use tower_llm_core::ClassifiedError;

use crate::config::{ChaosLayerBuilder, NoResponse};
use crate::metrics as names;
use crate::{Chaos, ChaosSwitch};

/// Wraps services in [`Chaos`]; see the [module docs](self) and [`config`](crate::config) for
/// how each call is decided.
///
/// Clones share one generator, one switch and one set of counters.
pub struct ChaosLayer<F = NoResponse> {
    shared: Arc<Shared<F>>,
    switch: ChaosSwitch,
}

impl<F> Clone for ChaosLayer<F> {
    fn clone(&self) -> Self {
        ChaosLayer {
            shared: self.shared.clone(),
            switch: self.switch.clone(),
        }
    }
}

impl<F> fmt::Debug for ChaosLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("error_rate", &self.shared.error_below)
            .field("error_kind", &self.shared.error.kind())
            .field(
                "response_rate",
                &(self.shared.response_below - self.shared.error_below),
            )
            .field("latency", &self.shared.latency)
            .field("latency_rate", &self.shared.latency_below)
            .field("enabled", &self.switch.is_enabled())
            .finish()
    }
}

impl ChaosLayer {
    /// A builder that injects nothing until told to.
    pub fn builder() -> ChaosLayerBuilder {
        ChaosLayerBuilder::default()
    }
}

impl<F> ChaosLayer<F> {
    pub(crate) fn from_parts(shared: Arc<Shared<F>>, switch: ChaosSwitch) -> Self {
        ChaosLayer { shared, switch }
    }

    /// The runtime on/off switch, shared with every service this layer made.
    pub fn switch(&self) -> ChaosSwitch {
        self.switch.clone()
    }

    /// What was injected so far, across every service this layer made.
    pub fn stats(&self) -> ChaosStats {
        self.shared.stats.snapshot()
    }
}

impl<S, F> Layer<S> for ChaosLayer<F> {
    type Service = Chaos<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::from_parts(inner, self.shared.clone(), self.switch.clone())
    }
}

/// Counts of what a [`ChaosLayer`] did while switched on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    /// Calls decided while switched on.
    pub calls: u64,
    /// Calls failed with the injected error.
    pub errors: u64,
    /// Calls answered with a canned response.
    pub responses: u64,
    /// Calls passed to the inner service.
    pub forwarded: u64,
    /// Calls delayed (whatever their outcome).
    pub delayed: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    calls: AtomicU64,
    errors: AtomicU64,
    responses: AtomicU64,
    forwarded: AtomicU64,
    delayed: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> ChaosStats {
        ChaosStats {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            responses: self.responses.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
        }
    }
}

/// What to do with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Forward,
    Error,
    Respond,
}

/// State shared by a layer, its clones and every service it made.
pub(crate) struct Shared<F> {
    pub(crate) error_below: f64,
    pub(crate) response_below: f64,
    pub(crate) latency_below: f64,
    pub(crate) latency: Duration,
    pub(crate) error: ClassifiedError,
    pub(crate) rng: Mutex<SmallRng>,
    pub(crate) response: F,
    pub(crate) stats: Stats,
}

impl<F> Shared<F> {
    /// Draw the latency and the outcome of one call (see the `config` module docs).
    pub(crate) fn decide(&self) -> (Option<Duration>, Outcome) {
        let (latency_draw, outcome_draw) = {
            // A poisoned generator is still a generator: a panic elsewhere cannot corrupt it.
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            (rng.random::<f64>(), rng.random::<f64>())
        };
        let delay = (latency_draw < self.latency_below).then_some(self.latency);
        let outcome = if outcome_draw < self.error_below {
            Outcome::Error
        } else if outcome_draw < self.response_below {
            Outcome::Respond
        } else {
            Outcome::Forward
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = delay {
            self.stats.delayed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::INJECTED_TOTAL, names::OUTCOME => "latency").increment(1);
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                "chaos: injecting latency"
            );
        }
        (delay, outcome)
    }

    /// Count what was done with a call.
    pub(crate) fn note(&self, outcome: Outcome) {
        match outcome {
            Outcome::Forward => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Error => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let kind = self.error.kind().as_str();
                metrics::counter!(names::INJECTED_TOTAL, names::OUTCOME => "error", names::KIND => kind)
                    .increment(1);
                tracing::debug!(kind, "chaos: injecting an error");
            }
            Outcome::Respond => {
                self.stats.responses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::INJECTED_TOTAL, names::OUTCOME => "response").increment(1);
                tracing::debug!("chaos: injecting a canned response");
            }
        }
    }
}
