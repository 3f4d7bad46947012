//! Configuration of a [`ChaosLayer`]: what to inject, how often, and the seed.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_chaos::ChaosLayer;
//! use tower_llm_core::ErrorKind;
//!
//! let layer = ChaosLayer::builder()
//!     .error_rate(0.1)
//!     .error_kind(ErrorKind::Overloaded)
//!     .latency(Duration::from_millis(50), 0.2)
//!     .response(0.05, || "canned answer")
//!     .seed(42)
//!     .build()?;
//! assert!(layer.switch().is_enabled());
//!
//! // Rates are probabilities; errors and canned responses share one draw, so they must fit in 1.
//! let err = ChaosLayer::builder().error_rate(1.5).build().unwrap_err();
//! assert_eq!(err.field(), "error_rate");
//! let err = ChaosLayer::builder().error_rate(0.7).response(0.4, || ()).build().unwrap_err();
//! assert_eq!(err.field(), "response");
//! # Ok::<(), tower_llm_core::ConfigError>(())
//! ```
//!
//! # How a call is decided
//!
//! While the layer's [`ChaosSwitch`] is on, every call draws two numbers
//! `u` in `[0, 1)` from the layer's generator, in this order:
//! 1. latency: when `u < latency rate`, the call is delayed by the latency (`tokio::time::sleep`,
//!    so a paused test clock applies) before anything else happens;
//! 2. outcome: when `u < error_rate` the call fails with the configured error; else when
//!    `u < error_rate + response rate` it returns a canned response; else it goes to the inner
//!    service. Injected calls never reach the inner service.
//!
//! The generator is a [`rand::rngs::SmallRng`] seeded with [`seed`](ChaosLayerBuilder::seed)
//! (or from the OS's hash seed when none is given), shared by every service the layer makes and
//! every clone of them behind one mutex held only for the two draws. Calls made one after
//! another therefore see the same decisions on every run with the same seed.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tower_llm_core::{ClassifiedError, ConfigError, ErrorKind};

use crate::layer::{ChaosLayer, Shared};
use crate::ChaosSwitch;

/// Makes the canned responses a [`ChaosLayer`] returns.
///
/// Implemented for every `Fn() -> Res` closure, and for [`NoResponse`].
pub trait CannedResponse<Res> {
    /// A fresh canned response, or `None` to forward the call instead.
    fn canned_response(&self) -> Option<Res>;
}

impl<F, Res> CannedResponse<Res> for F
where
    F: Fn() -> Res,
{
    fn canned_response(&self) -> Option<Res> {
        Some(self())
    }
}

/// The canned-response maker of a layer built without
/// [`response`](ChaosLayerBuilder::response): it has none, for any response type.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoResponse;

impl<Res> CannedResponse<Res> for NoResponse {
    fn canned_response(&self) -> Option<Res> {
        None
    }
}

/// Builds a [`ChaosLayer`]; see the [module docs](self).
#[must_use = "call `.build()` to get the layer"]
pub struct ChaosLayerBuilder<F = NoResponse> {
    error_rate: f64,
    error_kind: ErrorKind,
    error_message: Option<Arc<str>>,
    error_retry_after: Option<Duration>,
    latency: Duration,
    latency_rate: f64,
    response_rate: f64,
    response: F,
    seed: Option<u64>,
    enabled: bool,
}

impl<F> fmt::Debug for ChaosLayerBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayerBuilder")
            .field("error_rate", &self.error_rate)
            .field("error_kind", &self.error_kind)
            .field("error_retry_after", &self.error_retry_after)
            .field("latency", &self.latency)
            .field("latency_rate", &self.latency_rate)
            .field("response_rate", &self.response_rate)
            .field("seed", &self.seed)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl Default for ChaosLayerBuilder<NoResponse> {
    fn default() -> Self {
        ChaosLayerBuilder {
            error_rate: 0.0,
            error_kind: ErrorKind::ServerError,
            error_message: None,
            error_retry_after: None,
            latency: Duration::ZERO,
            latency_rate: 0.0,
            response_rate: 0.0,
            response: NoResponse,
            seed: None,
            enabled: true,
        }
    }
}

impl<F> ChaosLayerBuilder<F> {
    /// Fail this fraction of calls (0 to 1) with a
    /// [`ClassifiedError`] of [`error_kind`](Self::error_kind).
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// The kind of the injected errors (default [`ErrorKind::ServerError`]).
    pub fn error_kind(mut self, kind: ErrorKind) -> Self {
        self.error_kind = kind;
        self
    }

    /// The message of the injected errors (default `injected by tower-llm-chaos`).
    pub fn error_message(mut self, message: impl Into<Arc<str>>) -> Self {
        self.error_message = Some(message.into());
        self
    }

    /// Attach a server-requested delay to the injected errors (as a 429's `retry-after` would).
    pub fn error_retry_after(mut self, retry_after: Duration) -> Self {
        self.error_retry_after = Some(retry_after);
        self
    }

    /// Delay this fraction of calls (0 to 1) by `delay` before they proceed.
    pub fn latency(mut self, delay: Duration, rate: f64) -> Self {
        self.latency = delay;
        self.latency_rate = rate;
        self
    }

    /// Answer this fraction of calls (0 to 1) with `make()` instead of calling the inner service.
    /// The response may be a success or an error response (a 503 `http::Response`, say).
    pub fn response<G>(self, rate: f64, make: G) -> ChaosLayerBuilder<G> {
        ChaosLayerBuilder {
            error_rate: self.error_rate,
            error_kind: self.error_kind,
            error_message: self.error_message,
            error_retry_after: self.error_retry_after,
            latency: self.latency,
            latency_rate: self.latency_rate,
            response_rate: rate,
            response: make,
            seed: self.seed,
            enabled: self.enabled,
        }
    }

    /// Seed the generator, for decisions that repeat from run to run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Start switched on (default) or off; see [`ChaosLayer::switch`].
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Validate the rates and build the layer.
    pub fn build(self) -> Result<ChaosLayer<F>, ConfigError> {
        check_rate("error_rate", self.error_rate)?;
        check_rate("latency", self.latency_rate)?;
        check_rate("response", self.response_rate)?;
        let slices = self.error_rate + self.response_rate;
        // A little slack for sums like 0.7 + 0.3 that land a hair above 1 in floating point.
        if slices > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "response",
                format!(
                    "error_rate {} + response rate {} = {slices} exceeds 1; both are slices of one draw",
                    self.error_rate, self.response_rate
                ),
            ));
        }
        let seed = self
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(0x6368_616f_735f_u64));
        let message = self
            .error_message
            .unwrap_or_else(|| Arc::from("injected by tower-llm-chaos"));
        let mut error = ClassifiedError::new(self.error_kind, message);
        if let Some(retry_after) = self.error_retry_after {
            error = error.with_retry_after(retry_after);
        }
        let shared = Shared {
            error_below: self.error_rate,
            response_below: slices.min(1.0),
            latency_below: self.latency_rate,
            latency: self.latency,
            error,
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            response: self.response,
            stats: Default::default(),
        };
        Ok(ChaosLayer::from_parts(
            Arc::new(shared),
            ChaosSwitch::new(self.enabled),
        ))
    }
}

fn check_rate(field: &'static str, rate: f64) -> Result<(), ConfigError> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("rate {rate} is not a probability in 0..=1"),
        ))
    }
}
