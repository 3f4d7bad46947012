//! [`BulkheadLayer`] and its builder, [`BulkheadLayerBuilder`].
//!
//! The layer owns the bulkhead's state (its partitions, limits and counters) behind an `Arc`:
//! every service it wraps, every clone of those services and every clone of the layer share it.
//! Under axum's `Router::layer`, which wraps each route separately, all routes draw on one set of
//! permits; for independent bulkheads, build one layer each. [`BulkheadLayer::handle`] reads the
//! state before the layer disappears into a `ServiceBuilder` chain.
//!
//! Waits are bounded by the maximum wait and by the deadline of the attempt, when the request
//! carries an [`AttemptBudget`](tower_llm_core::AttemptBudget) (see
//! [the crate docs](crate#the-attempts-deadline)). The budget is read with
//! [`HttpBudget`] by default; a typed client whose requests are not
//! `http::Request`s builds with
//! [`.read_budget(NoBudget)`](BulkheadLayerBuilder::read_budget).
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::{AdaptiveConcurrency, BulkheadLayer, ByTarget, RateLimit};
//! use tower_llm_core::HttpClassifier;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = BulkheadLayer::builder()
//!     .name("llm")
//!     .partition_by(ByTarget::new())       // one partition per provider/model
//!     .max_partitions(256)
//!     .max_concurrent(32)
//!     .max_queued(64)
//!     .max_wait(Duration::from_millis(500))
//!     .rate_limit(RateLimit::per_minute(3_000).burst(50))
//!     .adaptive(AdaptiveConcurrency::new(Duration::from_secs(5)).min_limit(4))
//!     .classifier(HttpClassifier::default()) // what counts as load shedding (the default)
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();                 // before the layer moves into the chain
//! let client = ServiceBuilder::new().layer(layer).service(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! }));
//! let res = client.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(handle.name(), "llm");
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;
use tower_llm_core::{ConfigError, HttpBudget, HttpClassifier};

use crate::body::{ReleaseOnBodyEnd, ReleaseOnResponse, ReleaseWithUsage};
use crate::config::{
    AdaptiveConcurrency, PartitionConfig, PartitionConfigBuilder, PartitionOverflow, RateLimit,
    TargetLabel, TokenLimit, DEFAULT_MAX_PARTITIONS,
};
use crate::handle::BulkheadHandle;
use crate::key::{Global, Partitioner};
use crate::partition::{Overrides, Shared, TableLayout};
use crate::service::Bulkhead;
use crate::shared::SharedLimiter;
use crate::tokens::NoTokenEstimate;

/// Applies [`Bulkhead`]: one bulkhead, shared by every service the layer wraps. Build with
/// [`BulkheadLayer::builder`], or [`BulkheadLayer::new`] for the defaults (one partition: 64 in
/// flight, 512 queued, 1 s maximum wait).
///
/// The state lives in the layer (an `Arc`): [`Layer::layer`] only wraps, so every service it
/// returns, and every clone of the layer, draws on the same permits, rate and token budgets
/// (see the [module docs](self)).
///
/// Type parameters, each set by a builder method: `K` the [`Partitioner`]
/// ([`partition_by`](BulkheadLayerBuilder::partition_by)), `E` the token estimator
/// ([`token_limit`](BulkheadLayerBuilder::token_limit)), `C` the classifier of adaptive
/// concurrency ([`classifier`](BulkheadLayerBuilder::classifier): [`HttpClassifier`] by default,
/// [`ErrorsOnly`](crate::ErrorsOnly) or your own for a typed client), `R` how long a response
/// holds its permit ([`release_on_response`](BulkheadLayerBuilder::release_on_response)), `D`
/// how the attempt's deadline is read from a request
/// ([`read_budget`](BulkheadLayerBuilder::read_budget): [`HttpBudget`] by default; `NoBudget`
/// for a typed client).
pub struct BulkheadLayer<
    K: Partitioner = Global,
    E = NoTokenEstimate,
    C = HttpClassifier,
    R = ReleaseOnBodyEnd,
    D = HttpBudget,
> {
    shared: Arc<Shared<K::Key>>,
    partitioner: K,
    estimator: E,
    classifier: C,
    hold: R,
    budget: D,
}

impl BulkheadLayer {
    /// A bulkhead with the default limits and one partition.
    pub fn new() -> Self {
        let shared = Shared::new(
            Arc::from(DEFAULT_NAME),
            PartitionConfig::default(),
            TableLayout {
                single: true,
                label: TargetLabel::default(),
                max_partitions: DEFAULT_MAX_PARTITIONS,
                overflow: PartitionOverflow::default(),
                overrides: None,
                limiter: None,
            },
        );
        BulkheadLayer {
            shared: Arc::new(shared),
            partitioner: Global,
            estimator: NoTokenEstimate,
            classifier: HttpClassifier::default(),
            hold: ReleaseOnBodyEnd,
            budget: HttpBudget,
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> BulkheadLayerBuilder {
        BulkheadLayerBuilder {
            name: Arc::from(DEFAULT_NAME),
            partition: PartitionConfig::builder(),
            max_partitions: DEFAULT_MAX_PARTITIONS,
            overflow: PartitionOverflow::default(),
            label: TargetLabel::default(),
            overrides: None,
            limiter: None,
            partitioner: Global,
            estimator: NoTokenEstimate,
            classifier: HttpClassifier::default(),
            hold: ReleaseOnBodyEnd,
            budget: HttpBudget,
        }
    }
}

impl Default for BulkheadLayer {
    fn default() -> Self {
        Self::new()
    }
}

const DEFAULT_NAME: &str = "bulkhead";

impl<K: Partitioner, E, C, R, D> BulkheadLayer<K, E, C, R, D> {
    /// An owned handle on the bulkhead's live state (partitions, in flight, queued, token
    /// corrections), shared with every service this layer wraps. Take it before the layer moves
    /// into a `ServiceBuilder` chain.
    pub fn handle(&self) -> BulkheadHandle<K::Key> {
        BulkheadHandle::new(Arc::clone(&self.shared))
    }
}

impl<K: Partitioner, E: Clone, C: Clone, R: Clone, D: Clone> Clone
    for BulkheadLayer<K, E, C, R, D>
{
    /// A layer on the same bulkhead (the state is shared, not copied).
    fn clone(&self) -> Self {
        BulkheadLayer {
            shared: Arc::clone(&self.shared),
            partitioner: self.partitioner.clone(),
            estimator: self.estimator.clone(),
            classifier: self.classifier.clone(),
            hold: self.hold.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<K: Partitioner, E, C, R, D> fmt::Debug for BulkheadLayer<K, E, C, R, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("name", &self.shared.name)
            .field("defaults", self.shared.defaults())
            .finish_non_exhaustive()
    }
}

impl<S, K: Partitioner, E: Clone, C: Clone, R: Clone, D: Clone> Layer<S>
    for BulkheadLayer<K, E, C, R, D>
{
    type Service = Bulkhead<S, K, E, C, R, D>;

    /// Wrap `inner` in this layer's bulkhead (shared: no new state).
    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::from_parts(
            inner,
            Arc::clone(&self.shared),
            self.partitioner.clone(),
            self.estimator.clone(),
            self.classifier.clone(),
            self.hold.clone(),
            self.budget.clone(),
        )
    }
}

/// Builds a [`BulkheadLayer`]; [`build`](Self::build) validates every value.
pub struct BulkheadLayerBuilder<
    K: Partitioner = Global,
    E = NoTokenEstimate,
    C = HttpClassifier,
    R = ReleaseOnBodyEnd,
    D = HttpBudget,
> {
    name: Arc<str>,
    partition: PartitionConfigBuilder,
    max_partitions: usize,
    overflow: PartitionOverflow,
    label: TargetLabel,
    overrides: Option<Overrides<K::Key>>,
    limiter: Option<Arc<dyn SharedLimiter>>,
    partitioner: K,
    estimator: E,
    classifier: C,
    hold: R,
    budget: D,
}

impl<K: Partitioner, E, C, R, D> fmt::Debug for BulkheadLayerBuilder<K, E, C, R, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayerBuilder")
            .field("name", &self.name)
            .field("partition", &self.partition)
            .field("max_partitions", &self.max_partitions)
            .field("overflow", &self.overflow)
            .field("target_label", &self.label)
            .field("shared_limiter", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl<K: Partitioner, E, C, R, D> BulkheadLayerBuilder<K, E, C, R, D> {
    /// The bulkhead's name (default `bulkhead`): the name in errors and snapshots, and the
    /// `target` label of its [metrics](crate::metrics) when unpartitioned (or labelled by
    /// [`TargetLabel::Name`]). A bulkhead that guards one target is named after it
    /// (`openai/gpt-4o-mini`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Calls allowed in flight at once per partition (default 64).
    pub fn max_concurrent(mut self, max: usize) -> Self {
        self.partition = self.partition.max_concurrent(max);
        self
    }

    /// Calls allowed to wait for a permit per partition (default 128; 0 disables waiting).
    pub fn max_queued(mut self, max: usize) -> Self {
        self.partition = self.partition.max_queued(max);
        self
    }

    /// Longest wait for a concurrency permit (default 1 s; zero disables waiting).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.partition = self.partition.max_wait(wait);
        self
    }

    /// Limit the request rate per partition.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.partition = self.partition.rate_limit(limit);
        self
    }

    /// Take each partition's request-rate and token decisions in `limiter`, a store shared with
    /// other replicas (such as `tower-llm-redis`'s `RedisLimiter`), instead of in this process
    /// alone. The partition's own [`rate_limit`](Self::rate_limit) and
    /// [`token_limit`](Self::token_limit) are the quota asked for, and the local decision
    /// whenever the limiter cannot decide (its store down or slow): see [`shared`](crate::shared).
    /// The concurrency limit stays local.
    pub fn shared_limiter(mut self, limiter: impl SharedLimiter) -> Self {
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// [`shared_limiter`](Self::shared_limiter) with a limiter already behind an `Arc` (one
    /// limiter, and its connection, for many bulkheads).
    pub fn shared_limiter_arc(mut self, limiter: Arc<dyn SharedLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Bound the number of partitions of a keyed bulkhead (default 1024). When a new key arrives
    /// at the bound, idle partitions (nothing in flight or waiting, rate and token state full)
    /// are evicted first (at most one sweep per second); then the
    /// [`partition_overflow`](Self::partition_overflow) policy applies.
    pub fn max_partitions(mut self, max: usize) -> Self {
        self.max_partitions = max;
        self
    }

    /// What happens to keys beyond [`max_partitions`](Self::max_partitions) (default: a shared
    /// `overflow` partition).
    pub fn partition_overflow(mut self, overflow: PartitionOverflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// What the `target` label of the bulkhead's [metrics](crate::metrics) names (default
    /// [`TargetLabel::Partition`]: each partition's key). Label a bulkhead whose keys clients
    /// choose by its name, so its series stay bounded.
    pub fn target_label(mut self, label: TargetLabel) -> Self {
        self.label = label;
        self
    }

    /// Give chosen partitions their own limits: `config(key)` is asked once, when the partition
    /// is created; `None` means the defaults. Set after [`partition_by`](Self::partition_by),
    /// which resets it (the key type changes).
    pub fn partition_config<F>(mut self, config: F) -> Self
    where
        F: Fn(&K::Key) -> Option<PartitionConfig> + Send + Sync + 'static,
    {
        self.overrides = Some(Arc::new(config));
        self
    }

    /// Split calls into partitions by `partitioner` (default [`Global`]: one partition).
    pub fn partition_by<K2: Partitioner>(
        self,
        partitioner: K2,
    ) -> BulkheadLayerBuilder<K2, E, C, R, D> {
        BulkheadLayerBuilder {
            name: self.name,
            partition: self.partition,
            max_partitions: self.max_partitions,
            overflow: self.overflow,
            label: self.label,
            overrides: None,
            limiter: self.limiter,
            partitioner,
            estimator: self.estimator,
            classifier: self.classifier,
            hold: self.hold,
            budget: self.budget,
        }
    }

    /// Limit tokens per period per partition, estimating each request with `estimator`
    /// ([`JsonBodyEstimate`](crate::JsonBodyEstimate) for JSON bodies, or a closure).
    pub fn token_limit<E2>(
        self,
        limit: TokenLimit,
        estimator: E2,
    ) -> BulkheadLayerBuilder<K, E2, C, R, D> {
        let mut next = self.estimate_tokens(estimator);
        next.partition = next.partition.token_limit(limit);
        next
    }

    /// Estimate request tokens with `estimator`, for partitions given a token limit by
    /// [`partition_config`](Self::partition_config) only.
    pub fn estimate_tokens<E2>(self, estimator: E2) -> BulkheadLayerBuilder<K, E2, C, R, D> {
        BulkheadLayerBuilder {
            name: self.name,
            partition: self.partition,
            max_partitions: self.max_partitions,
            overflow: self.overflow,
            label: self.label,
            overrides: self.overrides,
            limiter: self.limiter,
            partitioner: self.partitioner,
            estimator,
            classifier: self.classifier,
            hold: self.hold,
            budget: self.budget,
        }
    }

    /// Let each partition's concurrency limit adapt to the target (AIMD): calls slower than the
    /// latency threshold, and calls the [`classifier`](Self::classifier) says the target shed
    /// (rate limited, overloaded, timed out), lower it. For partitions given their own limits by
    /// [`partition_config`](Self::partition_config), adaptive or not, set it there.
    pub fn adaptive(mut self, adaptive: AdaptiveConcurrency) -> Self {
        self.partition = self.partition.adaptive(adaptive);
        self
    }

    /// Classify responses and errors with `classifier`, for adaptive concurrency (default
    /// [`HttpClassifier`]; a typed client passes its own, or [`ErrorsOnly`](crate::ErrorsOnly)
    /// to count every response as a success and classify errors only). Not consulted unless a
    /// partition is [adaptive](Self::adaptive).
    pub fn classifier<C2>(self, classifier: C2) -> BulkheadLayerBuilder<K, E, C2, R, D> {
        BulkheadLayerBuilder {
            name: self.name,
            partition: self.partition,
            max_partitions: self.max_partitions,
            overflow: self.overflow,
            label: self.label,
            overrides: self.overrides,
            limiter: self.limiter,
            partitioner: self.partitioner,
            estimator: self.estimator,
            classifier,
            hold: self.hold,
            budget: self.budget,
        }
    }

    /// Release the permit as soon as the response is returned (for non-HTTP responses, or when
    /// bodies are read elsewhere). The default keeps it in the HTTP body until it ends.
    pub fn release_on_response(self) -> BulkheadLayerBuilder<K, E, C, ReleaseOnResponse, D> {
        self.hold_permit(ReleaseOnResponse)
    }

    /// Release the permit when the response is returned, correcting the token charge with
    /// `usage(&response)` (for typed clients whose responses carry usage).
    pub fn release_with_usage<F>(
        self,
        usage: F,
    ) -> BulkheadLayerBuilder<K, E, C, ReleaseWithUsage<F>, D> {
        self.hold_permit(ReleaseWithUsage::new(usage))
    }

    /// Decide how long responses hold their permit with a custom [`HoldPermit`](crate::HoldPermit).
    pub fn hold_permit<R2>(self, hold: R2) -> BulkheadLayerBuilder<K, E, C, R2, D> {
        BulkheadLayerBuilder {
            name: self.name,
            partition: self.partition,
            max_partitions: self.max_partitions,
            overflow: self.overflow,
            label: self.label,
            overrides: self.overrides,
            limiter: self.limiter,
            partitioner: self.partitioner,
            estimator: self.estimator,
            classifier: self.classifier,
            hold,
            budget: self.budget,
        }
    }

    /// Read each request's [`AttemptBudget`](tower_llm_core::AttemptBudget) with `reader`
    /// (default [`HttpBudget`]: the extension of an `http::Request`). A typed client, whose
    /// requests carry no budget, passes [`NoBudget`](tower_llm_core::NoBudget); a wrapper type
    /// that carries one implements [`ReadBudget`](tower_llm_core::ReadBudget).
    ///
    /// No wait goes past the budget's deadline: see the [crate docs](crate#the-attempts-deadline).
    pub fn read_budget<D2>(self, reader: D2) -> BulkheadLayerBuilder<K, E, C, R, D2> {
        BulkheadLayerBuilder {
            name: self.name,
            partition: self.partition,
            max_partitions: self.max_partitions,
            overflow: self.overflow,
            label: self.label,
            overrides: self.overrides,
            limiter: self.limiter,
            partitioner: self.partitioner,
            estimator: self.estimator,
            classifier: self.classifier,
            hold: self.hold,
            budget: reader,
        }
    }

    /// Validate and build the layer, and with it the bulkhead's state, which every service the
    /// layer wraps shares. (Metrics are registered by each partition's first call.)
    pub fn build(self) -> Result<BulkheadLayer<K, E, C, R, D>, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.max_partitions == 0 {
            return Err(ConfigError::new("max_partitions", "must be at least 1"));
        }
        let shared = Shared::new(
            self.name,
            self.partition.build()?,
            TableLayout {
                single: self.partitioner.is_single(),
                label: self.label,
                max_partitions: self.max_partitions,
                overflow: self.overflow,
                overrides: self.overrides,
                limiter: self.limiter,
            },
        );
        Ok(BulkheadLayer {
            shared: Arc::new(shared),
            partitioner: self.partitioner,
            estimator: self.estimator,
            classifier: self.classifier,
            hold: self.hold,
            budget: self.budget,
        })
    }
}
