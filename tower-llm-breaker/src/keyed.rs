//! Keyed breakers: one breaker per key taken from the request.
//!
//! The default key is the [`Target`] request extension that a fallback layer above sets on each
//! attempt, so every provider/model gets its own breaker. Requests without a key share one
//! *unkeyed* breaker named after the configuration.
//!
//! The number of keys is bounded ([`KeyedCircuitBreakerLayerBuilder::max_keys`], default
//! [`DEFAULT_MAX_KEYS`]). When a new key arrives at the bound, the oldest key whose breaker is
//! CLOSED is evicted (a closed breaker carries only recent statistics; open, half-open and
//! manually set breakers are kept). If every breaker is in another state, the new key's calls go
//! through a shared *overflow* breaker (`<name>:overflow`), with a `warn` event the first time
//! and the [`KEY_OVERFLOW_TOTAL`](crate::metrics::KEY_OVERFLOW_TOTAL) counter each time.
//!
//! ```
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_llm_breaker::{KeyedCircuitBreakerLayer, State};
//! use tower_llm_core::Target;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // Every key's breaker gets these settings (and is named after its key).
//! let layer = KeyedCircuitBreakerLayer::builder().consecutive_failures(2).build().unwrap();
//! let breakers = layer.handle();
//! let mut client = ServiceBuilder::new().layer(layer).service(service_fn(|req: http::Request<()>| async move {
//!     let bad = req.extensions().get::<Target>().is_some_and(|t| t.provider() == "bad");
//!     let status = if bad { 500 } else { 200 };
//!     Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(()).unwrap())
//! }));
//! let request = |provider: &str| {
//!     let mut req = http::Request::new(());
//!     req.extensions_mut().insert(Target::new(provider, "m"));
//!     req
//! };
//! for _ in 0..2 {
//!     client.ready().await.unwrap().call(request("bad")).await.unwrap();
//!     client.ready().await.unwrap().call(request("good")).await.unwrap();
//! }
//! assert_eq!(breakers.keys(), [Target::new("bad", "m"), Target::new("good", "m")]);
//! assert_eq!(breakers.get(&Target::new("bad", "m")).unwrap().state(), State::Open);
//! assert_eq!(breakers.get(&Target::new("good", "m")).unwrap().state(), State::Closed);
//! assert!(client.ready().await.unwrap().call(request("bad")).await.is_err());
//! assert!(client.ready().await.unwrap().call(request("good")).await.is_ok());
//!
//! // Admin actions, through the handle.
//! breakers.reset_all();
//! assert!(client.ready().await.unwrap().call(request("bad")).await.is_ok());
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_llm_core::{
    BoxError, Classify, ConfigError, HttpBudget, HttpClassifier, KindSet, ReadBudget, Target,
};
use tower_service::Service;

use crate::config::{forward_settings, CircuitBreakerConfig, CircuitBreakerConfigBuilder};
use crate::future::ResponseFuture;
use crate::handle::{BreakerHandle, BreakerSnapshot};
use crate::state::{Breaker, Listener, State, StateChange};
use crate::sync::{lock, read, write, AtomicBool, Mutex, Ordering, RwLock, RwLockReadGuard};

/// The default bound on the number of keys.
pub const DEFAULT_MAX_KEYS: usize = 1024;

/// Takes the breaker key from a request; `None` means the unkeyed breaker.
pub trait KeyFn<Req, K>: Clone + Send + Sync + 'static {
    /// The key of `req`.
    fn key(&self, req: &Req) -> Option<K>;
}

/// The default key: the [`Target`] extension of an `http::Request`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetKey;

impl<B> KeyFn<http::Request<B>, Target> for TargetKey {
    fn key(&self, req: &http::Request<B>) -> Option<Target> {
        req.extensions().get::<Target>().cloned()
    }
}

impl<Req, K, F> KeyFn<Req, K> for F
where
    F: Fn(&Req) -> Option<K> + Clone + Send + Sync + 'static,
{
    fn key(&self, req: &Req) -> Option<K> {
        self(req)
    }
}

/// What a key must be: hashable, and printable (its `Display` is the breaker's name).
pub trait BreakerKey: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static {}

impl<K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static> BreakerKey for K {}

struct Registry<K> {
    config: CircuitBreakerConfig,
    max_keys: usize,
    map: RwLock<Keys<K>>,
    unkeyed: Arc<Breaker>,
    overflow: Arc<Breaker>,
    listeners: Mutex<Vec<Listener>>,
    overflow_warned: AtomicBool,
}

struct Keys<K> {
    breakers: HashMap<K, Arc<Breaker>>,
    /// Insertion order, for eviction.
    order: VecDeque<K>,
}

impl<K: BreakerKey> Registry<K> {
    fn new(config: CircuitBreakerConfig, max_keys: usize) -> Self {
        let overflow_name: Arc<str> = Arc::from(format!("{}:overflow", config.name()));
        Registry {
            unkeyed: Breaker::new_arc(config.clone()),
            overflow: Breaker::new_arc(config.with_name(overflow_name)),
            config,
            max_keys,
            map: RwLock::new(Keys {
                breakers: HashMap::new(),
                order: VecDeque::new(),
            }),
            listeners: Mutex::new(Vec::new()),
            overflow_warned: AtomicBool::new(false),
        }
    }

    /// The breaker for `key`, created on first use.
    fn breaker(&self, key: Option<K>) -> Arc<Breaker> {
        let Some(key) = key else {
            return Arc::clone(&self.unkeyed);
        };
        {
            let keys = read(&self.map);
            if let Some(b) = keys.breakers.get(&key) {
                return Arc::clone(b);
            }
        }
        let mut keys = write(&self.map);
        if let Some(b) = keys.breakers.get(&key) {
            return Arc::clone(b);
        }
        if keys.breakers.len() >= self.max_keys && !evict_one_closed(&mut keys) {
            drop(keys);
            ::metrics::counter!(crate::metrics::KEY_OVERFLOW_TOTAL, "target" => self.config.name().to_owned())
                .increment(1);
            if !self.overflow_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    breaker = %self.config.name(),
                    max_keys = self.max_keys,
                    "keyed circuit breaker: every breaker is busy at the key bound; new keys share the overflow breaker"
                );
            }
            return Arc::clone(&self.overflow);
        }
        let breaker = Breaker::new_arc(self.config.with_name(Arc::from(key.to_string())));
        for listener in lock(&self.listeners).iter() {
            breaker.add_listener(Arc::clone(listener));
        }
        keys.breakers.insert(key.clone(), Arc::clone(&breaker));
        keys.order.push_back(key);
        breaker
    }

    fn read(&self) -> RwLockReadGuard<'_, Keys<K>> {
        read(&self.map)
    }
}

/// Evict the oldest key whose breaker is closed; false if there is none.
fn evict_one_closed<K: BreakerKey>(keys: &mut Keys<K>) -> bool {
    let position = keys.order.iter().position(|k| {
        keys.breakers
            .get(k)
            .is_some_and(|b| b.state() == State::Closed)
    });
    match position.and_then(|i| keys.order.remove(i)) {
        Some(key) => {
            keys.breakers.remove(&key);
            true
        }
        None => false,
    }
}

/// Builds a [`KeyedCircuitBreakerLayer`]: the settings every key's breaker gets, the key, the
/// bound on keys, how calls are classified and counted, and how requests are read;
/// [`build`](Self::build) validates every setting.
///
/// ```
/// use tower_llm_breaker::KeyedCircuitBreakerLayer;
/// use tower_llm_core::{ErrorKind, KindSet, NoBudget};
///
/// #[derive(Clone)]
/// struct Req { tenant: &'static str }
///
/// let layer = KeyedCircuitBreakerLayer::builder()
///     .name("tenants")
///     .consecutive_failures(3)
///     // The key type is inferred from the service's use; named here, as nothing calls it.
///     .key_fn::<String, _>(|req: &Req| Some(req.tenant.to_owned()))
///     .max_keys(100)
///     .failures(KindSet::counts_against_breaker().without(ErrorKind::InvalidResponse))
///     .read_budget(NoBudget)
///     .build()
///     .unwrap();
/// assert_eq!(layer.handle().max_keys(), 100);
/// assert_eq!(layer.handle().config().consecutive_failures(), Some(3));
/// ```
pub struct KeyedCircuitBreakerLayerBuilder<
    K = Target,
    F = TargetKey,
    C = HttpClassifier,
    R = HttpBudget,
> {
    settings: CircuitBreakerConfigBuilder,
    key_fn: F,
    max_keys: usize,
    classifier: C,
    failures: KindSet,
    reader: R,
    _key: PhantomData<fn() -> K>,
}

impl Default for KeyedCircuitBreakerLayerBuilder {
    fn default() -> Self {
        KeyedCircuitBreakerLayerBuilder {
            settings: CircuitBreakerConfigBuilder::default(),
            key_fn: TargetKey,
            max_keys: DEFAULT_MAX_KEYS,
            classifier: HttpClassifier::default(),
            failures: KindSet::counts_against_breaker(),
            reader: HttpBudget,
            _key: PhantomData,
        }
    }
}

impl KeyedCircuitBreakerLayerBuilder {
    /// A builder with the defaults: one breaker per [`Target`] with the default settings of
    /// [`CircuitBreakerConfig`], at most [`DEFAULT_MAX_KEYS`] of them, [`HttpClassifier`],
    /// [`KindSet::counts_against_breaker`], [`HttpBudget`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K, F, C, R> KeyedCircuitBreakerLayerBuilder<K, F, C, R> {
    forward_settings!("The layer's name: the name (and `target` metric label) of the breaker of requests without a key, `<name>:overflow` for the overflow breaker, and the `target` label of the key-overflow counter. Each key's breaker is named after its key. Default `default`.");

    /// Take keys with `key_fn` (a [`KeyFn`], e.g. a closure `|req: &Req| Some(key)`).
    pub fn key_fn<K2, F2>(self, key_fn: F2) -> KeyedCircuitBreakerLayerBuilder<K2, F2, C, R> {
        KeyedCircuitBreakerLayerBuilder {
            settings: self.settings,
            key_fn,
            max_keys: self.max_keys,
            classifier: self.classifier,
            failures: self.failures,
            reader: self.reader,
            _key: PhantomData,
        }
    }

    /// The bound on the number of keys (see [`KeyedCircuitBreakerLayer`] for what happens at the
    /// bound). Default [`DEFAULT_MAX_KEYS`].
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Classify responses and errors with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayerBuilder<K, F, C2, R> {
        KeyedCircuitBreakerLayerBuilder {
            settings: self.settings,
            key_fn: self.key_fn,
            max_keys: self.max_keys,
            classifier,
            failures: self.failures,
            reader: self.reader,
            _key: PhantomData,
        }
    }

    /// The kinds of failure that count against a breaker (the rule of
    /// [`CircuitBreakerLayerBuilder::failures`](crate::CircuitBreakerLayerBuilder::failures)).
    /// Default: [`KindSet::counts_against_breaker`].
    pub fn failures(mut self, failures: KindSet) -> Self {
        self.failures = failures;
        self
    }

    /// Read the [`AttemptBudget`](tower_llm_core::AttemptBudget) of requests with `reader`, a
    /// [`ReadBudget`]: [`HttpBudget`] (the default) for `http::Request`s,
    /// [`NoBudget`](tower_llm_core::NoBudget) for a typed client's requests (which then are
    /// never probes).
    pub fn read_budget<R2>(self, reader: R2) -> KeyedCircuitBreakerLayerBuilder<K, F, C, R2> {
        KeyedCircuitBreakerLayerBuilder {
            settings: self.settings,
            key_fn: self.key_fn,
            max_keys: self.max_keys,
            classifier: self.classifier,
            failures: self.failures,
            reader,
            _key: PhantomData,
        }
    }

    /// Validate every setting and build the layer.
    pub fn build(self) -> Result<KeyedCircuitBreakerLayer<K, F, C, R>, ConfigError>
    where
        K: BreakerKey,
    {
        let config = self.settings.build()?;
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        Ok(KeyedCircuitBreakerLayer {
            registry: Arc::new(Registry::new(config, self.max_keys)),
            key_fn: self.key_fn,
            classifier: self.classifier,
            failures: self.failures,
            reader: self.reader,
        })
    }
}

impl<K, F, C, R> fmt::Debug for KeyedCircuitBreakerLayerBuilder<K, F, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayerBuilder")
            .field("settings", &self.settings)
            .field("max_keys", &self.max_keys)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// Applies one circuit breaker per key. Every service the layer wraps, and every clone, shares
/// the breakers. Built with [`KeyedCircuitBreakerLayer::builder`].
///
/// The default key is the [`Target`] request extension a fallback layer above sets on each
/// attempt; requests without a key share one *unkeyed* breaker named after the layer. The number
/// of keys is bounded ([`max_keys`](KeyedCircuitBreakerLayerBuilder::max_keys)): at the bound, a
/// new key evicts the oldest key whose breaker is closed; if every breaker is in another state,
/// the new key's calls go through a shared *overflow* breaker (`<name>:overflow`), counted by
/// [`KEY_OVERFLOW_TOTAL`](crate::metrics::KEY_OVERFLOW_TOTAL).
///
/// `R` reads the [`AttemptBudget`](tower_llm_core::AttemptBudget) of a request: a call marked as
/// a fallback chain's probe is admitted by its key's breaker even while that breaker is open, as
/// its half-open trial (see [Below a fallback chain](crate#below-a-fallback-chain)).
pub struct KeyedCircuitBreakerLayer<K = Target, F = TargetKey, C = HttpClassifier, R = HttpBudget> {
    registry: Arc<Registry<K>>,
    key_fn: F,
    classifier: C,
    failures: KindSet,
    reader: R,
}

impl KeyedCircuitBreakerLayer {
    /// A builder, starting from the defaults of [`KeyedCircuitBreakerLayerBuilder::new`].
    pub fn builder() -> KeyedCircuitBreakerLayerBuilder {
        KeyedCircuitBreakerLayerBuilder::new()
    }

    /// One breaker per [`Target`] with the default settings (named after its target), at most
    /// [`DEFAULT_MAX_KEYS`] of them.
    pub fn new() -> Self {
        KeyedCircuitBreakerLayer {
            registry: Arc::new(Registry::new(
                CircuitBreakerConfig::default(),
                DEFAULT_MAX_KEYS,
            )),
            key_fn: TargetKey,
            classifier: HttpClassifier::default(),
            failures: KindSet::counts_against_breaker(),
            reader: HttpBudget,
        }
    }
}

impl Default for KeyedCircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, F, C, R> KeyedCircuitBreakerLayer<K, F, C, R> {
    /// A handle on all the breakers (owned: take it before the layer goes into a
    /// `ServiceBuilder`).
    pub fn handle(&self) -> KeyedBreakerHandle<K> {
        KeyedBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// The kinds of failure that count against a breaker.
    pub fn failures(&self) -> KindSet {
        self.failures
    }
}

impl<K, F: Clone, C: Clone, R: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C, R> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            registry: Arc::clone(&self.registry),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
            failures: self.failures,
            reader: self.reader.clone(),
        }
    }
}

impl<S, K, F: Clone, C: Clone, R: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C, R> {
    type Service = KeyedCircuitBreaker<S, K, F, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            registry: Arc::clone(&self.registry),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
            failures: self.failures,
            reader: self.reader.clone(),
        }
    }
}

impl<K: BreakerKey, F, C, R> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("name", &self.registry.config.name())
            .field("max_keys", &self.registry.max_keys)
            .finish_non_exhaustive()
    }
}

/// A service guarded by one circuit breaker per key. Built by [`KeyedCircuitBreakerLayer`].
///
/// `poll_ready` only polls the inner service (the key is not known before `call`); `call` picks
/// the key's breaker and rejects with [`BreakerOpen`](tower_llm_core::BreakerOpen) without calling
/// the inner service when it is open, unless the request is marked (as read by `R`) as a
/// fallback chain's probe: then an open breaker turns half-open and lets it through
/// ([`BreakerHandle::try_acquire_probe`]).
pub struct KeyedCircuitBreaker<S, K = Target, F = TargetKey, C = HttpClassifier, R = HttpBudget> {
    inner: S,
    registry: Arc<Registry<K>>,
    key_fn: F,
    classifier: C,
    failures: KindSet,
    reader: R,
}

impl<S, K, F, C, R> KeyedCircuitBreaker<S, K, F, C, R> {
    /// A handle on all the breakers.
    pub fn handle(&self) -> KeyedBreakerHandle<K> {
        KeyedBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, K, F, C, R> Service<Req> for KeyedCircuitBreaker<S, K, F, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: BreakerKey,
    F: KeyFn<Req, K>,
    C: Classify<S::Response>,
    R: ReadBudget<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.registry.breaker(self.key_fn.key(&req));
        let reader = &self.reader;
        match breaker.acquire(|| reader.budget(&req).is_some_and(|b| b.is_probe())) {
            Ok(permit) => {
                let (classifier, failures) = (self.classifier.clone(), self.failures);
                ResponseFuture::called(&mut self.inner, req, permit, classifier, failures)
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

impl<S: Clone, K, F: Clone, C: Clone, R: Clone> Clone for KeyedCircuitBreaker<S, K, F, C, R> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
            failures: self.failures,
            reader: self.reader.clone(),
        }
    }
}

impl<S: fmt::Debug, K: BreakerKey, F, C, R> fmt::Debug for KeyedCircuitBreaker<S, K, F, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("name", &self.registry.config.name())
            .finish_non_exhaustive()
    }
}

/// A handle on the breakers of a keyed layer.
pub struct KeyedBreakerHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> Clone for KeyedBreakerHandle<K> {
    fn clone(&self) -> Self {
        KeyedBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<K: BreakerKey> KeyedBreakerHandle<K> {
    /// The settings of every key's breaker (named after the layer).
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.registry.config
    }

    /// The breaker of `key`, if it exists.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.registry
            .read()
            .breakers
            .get(key)
            .map(|b| BreakerHandle {
                breaker: Arc::clone(b),
            })
    }

    /// The breaker of `key`, created if needed (subject to the bound, like a call).
    pub fn get_or_create(&self, key: K) -> BreakerHandle {
        BreakerHandle {
            breaker: self.registry.breaker(Some(key)),
        }
    }

    /// The breaker of requests without a key.
    pub fn unkeyed(&self) -> BreakerHandle {
        BreakerHandle {
            breaker: Arc::clone(&self.registry.unkeyed),
        }
    }

    /// The breaker shared by new keys while the bound is reached.
    pub fn overflow(&self) -> BreakerHandle {
        BreakerHandle {
            breaker: Arc::clone(&self.registry.overflow),
        }
    }

    /// The keys that have a breaker, oldest first.
    pub fn keys(&self) -> Vec<K> {
        self.registry.read().order.iter().cloned().collect()
    }

    /// How many keys have a breaker.
    pub fn len(&self) -> usize {
        self.registry.read().breakers.len()
    }

    /// Whether no key has a breaker yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on the number of keys.
    pub fn max_keys(&self) -> usize {
        self.registry.max_keys
    }

    /// Snapshots of every keyed breaker (oldest key first), then of the unkeyed and overflow
    /// breakers when they were used.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        let handles: Vec<BreakerHandle> = {
            let keys = self.registry.read();
            keys.order
                .iter()
                .filter_map(|k| keys.breakers.get(k))
                .map(|b| BreakerHandle {
                    breaker: Arc::clone(b),
                })
                .collect()
        };
        let mut out: Vec<BreakerSnapshot> = handles.iter().map(BreakerHandle::snapshot).collect();
        for extra in [self.unkeyed(), self.overflow()] {
            let snapshot = extra.snapshot();
            if snapshot.calls > 0
                || snapshot.generation > 1
                || snapshot.not_permitted > 0
                || snapshot.ignored > 0
            {
                out.push(snapshot);
            }
        }
        out
    }

    /// Call `listener` on every transition of every breaker, present and future.
    pub fn on_state_change(&self, listener: impl Fn(&StateChange) + Send + Sync + 'static) {
        let listener: Listener = Arc::new(listener);
        // Hold the registry's write lock so no breaker is created between the two steps.
        let keys = write(&self.registry.map);
        lock(&self.registry.listeners).push(Arc::clone(&listener));
        for b in keys.breakers.values() {
            b.add_listener(Arc::clone(&listener));
        }
        self.registry.unkeyed.add_listener(Arc::clone(&listener));
        self.registry.overflow.add_listener(listener);
    }

    /// Reset every breaker (closed, empty window).
    pub fn reset_all(&self) {
        let handles: Vec<Arc<Breaker>> = self.registry.read().breakers.values().cloned().collect();
        for b in handles {
            b.force(State::Closed, None);
        }
        self.registry.unkeyed.force(State::Closed, None);
        self.registry.overflow.force(State::Closed, None);
    }
}

impl<K: BreakerKey> fmt::Debug for KeyedBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerHandle")
            .field("name", &self.registry.config.name())
            .field("keys", &self.len())
            .finish()
    }
}
