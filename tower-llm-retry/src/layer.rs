//! [`RetryLayer`]: wraps a service in [`Retry`].
//!
//! Every service the layer builds, and every clone of them, shares one state (budget, latency
//! histogram, RNG seed sequence) through an `Arc`.
//!
//! ```
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_retry::{CloneReplay, RetryLayer};
//! use tower_llm_core::{Classification, Classify};
//!
//! // A typed client: requests are `Clone`, responses classify themselves.
//! #[derive(Clone)]
//! struct ChatRequest(&'static str);
//! struct ChatResponse(&'static str);
//!
//! #[derive(Clone)]
//! struct AlwaysOk;
//! impl Classify<ChatResponse> for AlwaysOk {
//!     fn classify_response(&self, _: &ChatResponse) -> Classification {
//!         Classification::Success
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = RetryLayer::builder().classifier(AlwaysOk).replay(CloneReplay).build().unwrap();
//! let client = layer.layer(service_fn(|req: ChatRequest| async move {
//!     Ok::<_, std::convert::Infallible>(ChatResponse(req.0))
//! }));
//! let res = client.oneshot(ChatRequest("hello")).await.unwrap();
//! assert_eq!(res.0, "hello");
//! # }
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tower_layer::Layer;
use tower_llm_core::HttpClassifier;

use crate::budget::{Budgets, RetryBudget};
use crate::config::{RetryConfig, RetryLayerBuilder};
use crate::hedge::LatencyTracker;
use crate::policy::Rules;
use crate::replay::HttpReplay;
use crate::service::Retry;

/// State shared by a layer, its services and their clones.
pub(crate) struct Shared<C, R> {
    pub(crate) config: RetryConfig,
    pub(crate) rules: Rules,
    pub(crate) budgets: Budgets,
    pub(crate) classifier: C,
    pub(crate) replay: R,
    pub(crate) latency: Option<LatencyTracker>,
    /// Whether a call keeps a copy of its request (it can retry or hedge).
    pub(crate) keeps_copy: bool,
    seed: u64,
    calls: AtomicU64,
}

impl<C, R> Shared<C, R> {
    /// A seed for one call's RNG: the layer's seed mixed with a call counter, so a seeded layer
    /// is reproducible and concurrent calls still jitter apart.
    pub(crate) fn call_seed(&self) -> u64 {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        splitmix64(self.seed ^ splitmix64(n))
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Applies [`Retry`] to a service. Build one with [`RetryLayer::builder`]; [`RetryLayer::new`]
/// has the defaults.
pub struct RetryLayer<C = HttpClassifier, R = HttpReplay> {
    shared: Arc<Shared<C, R>>,
}

impl RetryLayer {
    /// A layer with the defaults: 3 attempts, decorrelated jitter from 250 ms capped at 8 s,
    /// server delays honoured up to 60 s, 30 s per attempt, a 20% + 5/s budget.
    pub fn new() -> Self {
        RetryLayer::from_parts(
            RetryConfig::default(),
            Budgets::Shared(RetryBudget::default()),
            HttpClassifier::default(),
            HttpReplay::default(),
        )
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, R> RetryLayer<C, R> {
    pub(crate) fn from_parts(
        config: RetryConfig,
        budgets: Budgets,
        classifier: C,
        replay: R,
    ) -> Self {
        let seed = config
            .seed()
            .unwrap_or_else(|| RandomState::new().hash_one(0x0072_6574_7279_u64));
        let latency = config.hedging().map(|_| LatencyTracker::new());
        let keeps_copy = config.max_attempts() > 1 || config.hedging().is_some();
        RetryLayer {
            shared: Arc::new(Shared {
                rules: config.rules(),
                config,
                budgets,
                classifier,
                replay,
                latency,
                keeps_copy,
                seed,
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// The budget shared by every call (or the template of per-target budgets); `None` without
    /// a budget.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budgets.template()
    }
}

impl<C, R> Clone for RetryLayer<C, R> {
    fn clone(&self) -> Self {
        RetryLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C, R> fmt::Debug for RetryLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.shared.config)
            .field("budget", &self.shared.budgets.describe())
            .finish()
    }
}

impl<S, C, R> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::clone(&self.shared))
    }
}
