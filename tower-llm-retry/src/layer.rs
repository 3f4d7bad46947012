//! [`RetryLayer`]: wraps a service in [`Retry`].
//!
//! Every service the layer builds (each call of [`Layer::layer`], as axum's `Router::layer`
//! makes per route), and every clone of them, shares one state (budget, counters, latency
//! histogram, RNG seed sequence) through an `Arc`; [`RetryLayer::handle`] reaches it.
//!
//! ```
//! use std::time::Duration;
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
//! let layer = RetryLayer::builder()
//!     .max_attempts(2)
//!     .attempt_timeout(Duration::from_secs(20))
//!     .classifier(AlwaysOk)
//!     .replay(CloneReplay)
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//! let client = layer.layer(service_fn(|req: ChatRequest| async move {
//!     Ok::<_, std::convert::Infallible>(ChatResponse(req.0))
//! }));
//! let res = client.oneshot(ChatRequest("hello")).await.unwrap();
//! assert_eq!(res.0, "hello");
//! assert_eq!(handle.stats().calls, 1);
//! # }
//! ```

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tower_layer::Layer;
use tower_llm_core::{HttpClassifier, Target};

use crate::budget::{Budgets, RetryBudget};
use crate::config::{RetryConfig, RetryLayerBuilder};
use crate::handle::{Counters, RetryHandle};
use crate::hedge::LatencyTracker;
use crate::metrics::TargetCounters;
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
    pub(crate) counters: Arc<Counters>,
    seed: u64,
    calls: AtomicU64,
    /// The counters of the first target the layer saw (one layer per target, as in the facade's
    /// stack), registered on the first call so the hot path never builds a metric key.
    first_target: OnceLock<(Option<Target>, TargetCounters)>,
}

impl<C, R> Shared<C, R> {
    pub(crate) fn handle(&self) -> RetryHandle {
        RetryHandle {
            config: self.config.clone(),
            budgets: self.budgets.clone(),
            counters: Arc::clone(&self.counters),
        }
    }

    /// The counters of `target`: held ones for the layer's first target, registered on the spot
    /// for another (a layer shared by several targets).
    pub(crate) fn counters_for(&self, target: &Option<Target>) -> Cow<'_, TargetCounters> {
        let (first, counters) = self
            .first_target
            .get_or_init(|| (target.clone(), TargetCounters::register(target)));
        if first == target {
            Cow::Borrowed(counters)
        } else {
            Cow::Owned(TargetCounters::register(target))
        }
    }

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
///
/// Every service the layer wraps, and every clone of the layer and of those services, shares
/// one state: the budget, the counters ([`handle`](Self::handle)), the hedging latencies.
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
                counters: Arc::default(),
                seed,
                calls: AtomicU64::new(0),
                first_target: OnceLock::new(),
            }),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// A handle on the state every service of this layer shares: configuration, budget(s),
    /// counters (owned: take it before the layer goes into a `ServiceBuilder`).
    pub fn handle(&self) -> RetryHandle {
        self.shared.handle()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_of_one_layer_share_the_state() {
        let layer = RetryLayer::new();
        // As axum's `Router::layer` does: one call of `layer` per route.
        let a = layer.layer(());
        let b = layer.clone().layer(());
        assert!(Arc::ptr_eq(&a.handle().counters, &layer.handle().counters));
        let (ab, bb) = (a.handle().budget().unwrap(), b.handle().budget().unwrap());
        assert!(ab.same_as(&bb));
    }
}
