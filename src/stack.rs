//! From a validated [`StackConfig`] to a ready service: [`StackBuilder`] and [`Stack`].
//!
//! For each route the stack builds a fallback chain over the route's targets, and for each
//! target (provider + upstream model) one per-target stack, shared by every route that names it:
//!
//! ```text
//! BufferRequestBody            the request body becomes replayable (bounded), its `model` routes it
//! └─ Fallback (per route)      tiers, cooldowns, cache and static tiers, escalation, x-llm-* headers
//!    └─ per target:
//!       CircuitBreaker         one per target
//!       └─ Retry               backoff with jitter, server delays, a retry budget per target
//!          └─ Bulkhead         in-flight, queue, request and token limits per target
//!             └─ StreamGuard        first-token, idle and total limits; no truncated stream passes
//!                └─ InspectErrorBody   provider error codes for the classifiers above
//!                   └─ client  hyper-util's legacy client, or any service you supply
//! ```
//!
//! **Time and health across the layers.** The chain sets each attempt's
//! [`AttemptBudget`](tower_llm_core::AttemptBudget) (deadline, probe, single call); retry,
//! bulkhead and breaker below honour it. The chain's cooldowns decide when a target is probed;
//! the breaker lets that probe through. See the [crate docs](crate) for the six rules.
//!
//! **Breaker above retry.** The breaker sees one outcome per call of the chain to the target:
//! a call that succeeded after a retry is a success, a call whose retries were exhausted is one
//! failure. Below retry it would count every attempt, so one bad minute with three attempts per
//! call would open it three times faster, and an open breaker would be hit by retries that can
//! never pass. Above retry, an open breaker also rejects before any retry starts, and the chain
//! moves on at once (a breaker rejection is a local failure: it counts nothing against the target,
//! and benches it only until the breaker's next probe).
//!
//! **Pass-through targets.** A target without a `model` sends the requested model upstream;
//! each requested model is then a target of its own (`primary/gpt-4o`, `primary/gpt-4o-mini`),
//! with its own breaker, bulkhead, retry budget and cooldowns, so one failing model does not
//! bench its provider's other models. A route tracks at most [`MAX_MODELS_PER_ROUTE`] models.
//!
//! **Streams.** Each target's [`StreamGuardLayer`] (with the `[stream]` limits) holds a streamed
//! answer back until its first event: a stream that does not start within the first-token limit,
//! starts with an error event or ends before any answer is a failed attempt, which retry retries
//! and the chain fails over. After the first event the guard ends a cut, stalled or broken stream
//! with an OpenAI-shaped SSE `error` event and no `[DONE]`, never a silent truncation, and
//! finishes a stream that has its `finish_reason` but no `[DONE]`. It sits below the bulkhead so
//! a stream holds its permit until it ends.
//!
//! **TLS.** [`StackBuilder::build_http`] uses hyper-util's plain-HTTP connector (enough for local
//! servers and the embedded mocks). For `https` base URLs, build a client with a TLS connector
//! (for example `hyper-rustls`) and pass it to [`StackBuilder::build_with_client`].
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_llm::config::StackConfig;
//! use tower_llm::stack::StackBuilder;
//! use tower_llm_chaos::{FaultProfile, MockUpstream};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let primary = MockUpstream::start(FaultProfile::parse("status:503")?).await?;
//! let secondary = MockUpstream::start(FaultProfile::parse("healthy")?).await?;
//! let config = StackConfig::standard(&primary.base_url(), Some((&secondary.base_url(), "backup-model")))?;
//! let stack = StackBuilder::new(&config).build_http::<Full<Bytes>>()?;
//!
//! let req = http::Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#)))?;
//! let res = stack.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["x-llm-target"], "fallback/backup-model");
//! assert_eq!(res.headers()["x-llm-fallback"], "target");
//! let body = res.into_body().collect().await?.to_bytes();
//! assert!(body.windows(14).any(|w| w == b"\"backup-model\""));
//!
//! let health = stack.health();
//! assert_eq!(health.target("primary/gpt-4o").unwrap().failures, 1);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body::Body;
use http_body_util::Either;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pin_project::pin_project;
use serde::Deserialize;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_breaker::{BreakerHandle, CircuitBreakerLayer, SlidingWindow};
use tower_llm_bulkhead::{
    AllCalls, BulkheadHandle, BulkheadLayer, Global, JsonBodyEstimate, PermitBody, RateLimit,
    TokenLimit,
};
use tower_llm_core::{
    BoxError, ConfigError, ErrorKind, GuardedBody, InspectErrorBodyLayer, ReplayBody,
    StreamGuardLayer, Target,
};
use tower_llm_fallback::{
    CacheConfig, Cooldown, CooldownPolicy, Escalation, EscalationEvent, EscalationPolicy, Fallback,
    FallbackBody, FallbackHandle, FallbackLayer, HealthSnapshot, JsonDirEscalation, LogEscalation,
    Secret, Selection, StaticAnswer, TargetConfig as ChainTarget,
};
use tower_llm_retry::{Backoff, RetryBudget, RetryLayer};

use crate::config::{StackConfig, TierSelection};
use crate::error::{InvalidReason, InvalidRequest, NoRoute, TooManyModels};
use crate::health::{self, StackHealth, TargetParts};

/// Distinct requested models a route with pass-through targets tracks at most.
pub const MAX_MODELS_PER_ROUTE: usize = 256;

/// The response body of one target's stack: the bulkhead's permit rides in it when bulkheads
/// are on.
pub type TargetBody<ResB> =
    Either<PermitBody<GuardedBody<ReplayBody<ResB>>>, GuardedBody<ReplayBody<ResB>>>;

/// The response body of a [`Stack`] (a peeked stream prefix, or a cached or static answer, in
/// front of the target's body).
pub type StackBody<ResB> = FallbackBody<TargetBody<ResB>>;

/// One target's stack (breaker, retry, bulkhead, stream guard, error-body inspection, client),
/// type-erased so
/// targets with different settings share a type.
pub type TargetService<ReqB, ResB> =
    BoxCloneSyncService<Request<ReplayBody<ReqB>>, Response<TargetBody<ResB>>, BoxError>;

/// One route's fallback chain over its targets' stacks.
pub type RouteService<ReqB, ResB> = Fallback<TargetService<ReqB, ResB>>;

/// hyper-util's legacy client over plain HTTP, as [`StackBuilder::build_http`] builds it.
pub type HttpClient<ReqB> = Client<HttpConnector, ReplayBody<ReqB>>;

/// Builds a [`Stack`] from a [`StackConfig`].
pub struct StackBuilder<'a> {
    config: &'a StackConfig,
    urls: HashMap<String, String>,
}

impl fmt::Debug for StackBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("providers", &self.config.providers.len())
            .field("routes", &self.config.routes.len())
            .field("urls", &self.urls)
            .finish()
    }
}

impl<'a> StackBuilder<'a> {
    /// Start from a validated configuration.
    pub fn new(config: &'a StackConfig) -> Self {
        StackBuilder {
            config,
            urls: HashMap::new(),
        }
    }

    /// Send provider `name`'s requests to `base_url`, whatever the configuration says. Needed
    /// for `mock = "..."` providers: whoever starts the mock upstream passes its URL here.
    pub fn provider_url(mut self, name: impl Into<String>, base_url: impl Into<String>) -> Self {
        self.urls.insert(name.into(), base_url.into());
        self
    }

    /// Build over hyper-util's legacy client with a plain-HTTP connector and `TCP_NODELAY` set
    /// (without it, small SSE writes wait for the peer's delayed ACK: ~40 ms per stream on Linux).
    pub fn build_http<ReqB>(
        self,
    ) -> Result<Stack<ReqB, hyper::body::Incoming>, crate::ConfigFileError>
    where
        ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        ReqB::Error: Into<BoxError>,
    {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient<ReqB> = Client::builder(TokioExecutor::new()).build(connector);
        self.build_with_client(client)
    }

    /// Build over any client service: a hyper client with a TLS connector, a test double, a
    /// client with its own middleware. Requests reach it with an absolute URI (the target's base
    /// URL) and the target's credentials.
    pub fn build_with_client<ReqB, ResB, S>(
        self,
        client: S,
    ) -> Result<Stack<ReqB, ResB>, crate::ConfigFileError>
    where
        S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        ReqB::Error: Into<BoxError>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let config = self.config;
        let plan = Plan::new(config, &self.urls)?;
        let make: MakeTarget<ReqB, ResB> = {
            let plan = plan.clone();
            Arc::new(move |target: &Target| plan.target_stack(target, client.clone()))
        };
        let saved = match &config.health.file {
            Some(file) => load_saved(Path::new(file)),
            None => HashMap::new(),
        };
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| RouteRuntime {
                pattern: route.pattern.get_ref().clone(),
                index,
                passthrough: route.targets.iter().any(|t| t.model.is_none()),
                fixed: Mutex::new(None),
                by_model: RwLock::new(HashMap::new()),
            })
            .collect();
        let inner = Arc::new(Inner {
            plan,
            routes,
            targets: Mutex::new(BTreeMap::new()),
            make,
            saved: Mutex::new(saved),
            body_limit: usize::try_from(config.gateway.max_body_bytes).unwrap_or(usize::MAX),
            health_file: config.health.file.as_ref().map(PathBuf::from),
        });
        // Build what does not depend on the requested model now: configuration errors surface
        // here, and `/health` lists these targets from the start.
        for route in &inner.routes {
            if !route.passthrough {
                inner.fixed_chain(route).map_err(|e| {
                    config.error_at(&format!("routes[{}]", route.index), e.to_string())
                })?;
            }
        }
        Ok(Stack { inner })
    }
}

type MakeTarget<ReqB, ResB> =
    Arc<dyn Fn(&Target) -> Result<TargetEntry<ReqB, ResB>, ConfigError> + Send + Sync>;

/// A ready stack: a `tower::Service<http::Request<ReqB>>` that reads each request's `model`,
/// picks the first matching route and calls its fallback chain. Clones share every breaker,
/// bulkhead, budget, cooldown and cache.
///
/// Errors: [`NoRoute`] (no route matches the model), [`InvalidRequest`] (no JSON `model`, or
/// a body over the buffer limit), [`TooManyModels`], and whatever the chain returns
/// ([`AllTargetsFailed`](tower_llm_core::AllTargetsFailed) when no target answered).
pub struct Stack<ReqB, ResB> {
    inner: Arc<Inner<ReqB, ResB>>,
}

impl<ReqB, ResB> Clone for Stack<ReqB, ResB> {
    fn clone(&self) -> Self {
        Stack {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<ReqB, ResB> fmt::Debug for Stack<ReqB, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("routes", &self.inner.routes.len())
            .field("targets", &lock(&self.inner.targets).len())
            .finish()
    }
}

struct Inner<ReqB, ResB> {
    plan: Plan,
    routes: Vec<RouteRuntime<ReqB, ResB>>,
    /// Every target's stack, by name (`provider/model`).
    targets: Mutex<BTreeMap<String, TargetEntry<ReqB, ResB>>>,
    make: MakeTarget<ReqB, ResB>,
    /// Chain health restored from `[health] file`, by chain key, until the chain exists.
    saved: Mutex<HashMap<String, HealthSnapshot>>,
    /// Request bodies are buffered up to this many bytes (`[gateway] max_body_bytes`).
    body_limit: usize,
    health_file: Option<PathBuf>,
}

struct RouteRuntime<ReqB, ResB> {
    pattern: String,
    index: usize,
    passthrough: bool,
    fixed: Mutex<Option<Chain<ReqB, ResB>>>,
    by_model: RwLock<HashMap<Arc<str>, Chain<ReqB, ResB>>>,
}

struct Chain<ReqB, ResB> {
    key: Arc<str>,
    service: RouteService<ReqB, ResB>,
    handle: FallbackHandle,
}

impl<ReqB, ResB> Clone for Chain<ReqB, ResB> {
    fn clone(&self) -> Self {
        Chain {
            key: self.key.clone(),
            service: self.service.clone(),
            handle: self.handle.clone(),
        }
    }
}

struct TargetEntry<ReqB, ResB> {
    target: Target,
    breaker: Option<BreakerHandle>,
    bulkhead: Option<BulkheadHandle<AllCalls>>,
    service: TargetService<ReqB, ResB>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<ReqB, ResB> Stack<ReqB, ResB> {
    /// The route globs, in order (a gateway lists them on `/v1/models`).
    pub fn route_patterns(&self) -> Vec<String> {
        self.inner
            .routes
            .iter()
            .map(|r| r.pattern.clone())
            .collect()
    }

    /// Every known target's health, and the overall status.
    pub fn health(&self) -> StackHealth {
        let parts: BTreeMap<String, TargetParts> = lock(&self.inner.targets)
            .iter()
            .map(|(name, entry)| {
                (
                    name.clone(),
                    TargetParts {
                        provider: entry.target.provider().to_owned(),
                        model: entry.target.model().to_owned(),
                        breaker: entry.breaker.as_ref().map(BreakerHandle::snapshot),
                        in_flight: entry.bulkhead.as_ref().map_or(0, |b| b.in_flight()),
                        queued: entry.bulkhead.as_ref().map_or(0, |b| b.queued()),
                    },
                )
            })
            .collect();
        let chains: Vec<HealthSnapshot> = self
            .inner
            .chains()
            .iter()
            .map(|c| c.handle.health())
            .collect();
        health::merge(parts, &chains)
    }

    /// The breaker of the target named `name` (`provider/model`), if it exists yet.
    pub fn breaker(&self, name: &str) -> Option<BreakerHandle> {
        lock(&self.inner.targets)
            .get(name)
            .and_then(|e| e.breaker.clone())
    }

    /// Lift the cooldown of the target named `name` in every route (an `Auth` cooldown lifts only
    /// this way, unless `[cooldown] auth_ms` is set) and close its breaker. Returns whether the
    /// target exists.
    pub fn reset_target(&self, name: &str) -> bool {
        let mut found = false;
        for chain in self.inner.chains() {
            found |= chain.handle.reset_target(name);
        }
        if let Some(breaker) = self.breaker(name) {
            breaker.reset();
            found = true;
        }
        found
    }

    /// Save every chain's health to `[health] file` (atomically: a temporary file, then a
    /// rename). Returns the path written, or `None` when no file is configured.
    pub fn save_health(&self) -> Result<Option<PathBuf>, BoxError> {
        let Some(path) = &self.inner.health_file else {
            return Ok(None);
        };
        let mut all: HashMap<String, HealthSnapshot> = lock(&self.inner.saved).clone();
        for chain in self.inner.chains() {
            all.insert(chain.key.to_string(), chain.handle.health());
        }
        let bytes = serde_json::to_vec_pretty(&SavedHealth { chains: all })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(Some(path.clone()))
    }

    /// The fallback chain serving `model` (created on first use for routes with pass-through
    /// targets). Requests sent to it directly need a buffered body
    /// ([`BufferRequestBodyLayer`](tower_llm_core::BufferRequestBodyLayer)).
    pub fn route_service(&self, model: &str) -> Result<RouteService<ReqB, ResB>, BoxError> {
        self.inner.chain_for(model).map(|c| c.service)
    }
}

impl<ReqB, ResB> Inner<ReqB, ResB> {
    fn chains(&self) -> Vec<Chain<ReqB, ResB>> {
        let mut out = Vec::new();
        for route in &self.routes {
            if let Some(chain) = lock(&route.fixed).as_ref() {
                out.push(chain.clone());
            }
            let map = route
                .by_model
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            out.extend(map.values().cloned());
        }
        out
    }

    fn chain_for(&self, model: &str) -> Result<Chain<ReqB, ResB>, BoxError> {
        let route = self
            .routes
            .iter()
            .zip(self.plan.routes.iter())
            .find(|(_, plan)| plan.glob.matches(model))
            .map(|(route, _)| route)
            .ok_or_else(|| NoRoute::new(model))?;
        if !route.passthrough {
            return self.fixed_chain(route).map_err(Into::into);
        }
        {
            let map = route
                .by_model
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(chain) = map.get(model) {
                return Ok(chain.clone());
            }
        }
        let mut map = route
            .by_model
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(chain) = map.get(model) {
            return Ok(chain.clone());
        }
        if map.len() >= MAX_MODELS_PER_ROUTE {
            return Err(TooManyModels::new(route.pattern.clone(), MAX_MODELS_PER_ROUTE).into());
        }
        let chain = self.build_chain(route, Some(model))?;
        map.insert(model.into(), chain.clone());
        Ok(chain)
    }

    fn fixed_chain(
        &self,
        route: &RouteRuntime<ReqB, ResB>,
    ) -> Result<Chain<ReqB, ResB>, ConfigError> {
        let mut fixed = lock(&route.fixed);
        if let Some(chain) = fixed.as_ref() {
            return Ok(chain.clone());
        }
        let chain = self.build_chain(route, None)?;
        *fixed = Some(chain.clone());
        Ok(chain)
    }

    fn build_chain(
        &self,
        route: &RouteRuntime<ReqB, ResB>,
        requested: Option<&str>,
    ) -> Result<Chain<ReqB, ResB>, ConfigError> {
        let plan = self
            .plan
            .routes
            .get(route.index)
            .ok_or_else(|| ConfigError::new("routes", "route out of range"))?;
        let mut builder = FallbackLayer::builder()
            .cooldowns(self.plan.cooldowns.clone())
            .escalation_policy(self.plan.escalation_policy.clone());
        builder = match &self.plan.escalation_dir {
            Some(dir) => builder.escalation(SharedEscalation(Arc::clone(dir))),
            None => builder.escalation(LogEscalation),
        };
        if plan.cache {
            if let Some(cache) = &self.plan.cache {
                builder = builder.cache(cache.clone());
            }
        }
        if plan.static_answer {
            if let Some(answer) = &self.plan.static_answer {
                builder = builder.static_answer(answer.clone());
            }
        }
        let mut services = Vec::with_capacity(plan.targets.len());
        let mut tiers: BTreeMap<u32, Vec<ChainTarget>> = BTreeMap::new();
        for t in &plan.targets {
            let provider = self.plan.providers.get(&*t.provider).ok_or_else(|| {
                ConfigError::new("provider", format!("no provider `{}`", t.provider))
            })?;
            let (model, keep) = match (&t.model, requested) {
                (Some(model), _) => (model.clone(), false),
                (None, Some(requested)) => (Arc::<str>::from(requested), true),
                (None, None) => {
                    return Err(ConfigError::new(
                        "model",
                        "a pass-through target needs a model",
                    ))
                }
            };
            let target = Target::new(t.provider.clone(), model.clone());
            let mut chain_target = ChainTarget::new(t.provider.clone(), model)
                .base_url(provider.base_url.clone())
                .attempt_timeout(t.attempt_timeout)
                .weight(t.weight);
            if keep {
                chain_target = chain_target.keep_request_model();
            }
            if let Some((header, secret)) = &provider.auth {
                chain_target = match header {
                    None => chain_target.bearer(secret.clone()),
                    Some(h) => chain_target.auth_header(h.as_str(), secret.clone()),
                };
            }
            if let Some(n) = t.context_window {
                chain_target = chain_target.context_window(n);
            }
            if let Some(n) = t.max_tokens {
                chain_target = chain_target.max_tokens(n);
            }
            if let Some(x) = t.max_temperature {
                chain_target = chain_target.max_temperature(x);
            }
            let name = chain_target.target_name();
            services.push((name, self.target_service(&target)?));
            tiers.entry(t.tier).or_default().push(chain_target);
        }
        for (_, members) in tiers {
            builder = if members.len() == 1 {
                members
                    .into_iter()
                    .fold(builder, |b, target| b.target(target))
            } else {
                builder.pool(plan.selection, members)
            };
        }
        let layer = builder.build()?;
        let handle = layer.handle();
        let service = layer.services(services)?;
        let key: Arc<str> = match requested {
            Some(model) => format!("{} -> {model}", route.pattern).into(),
            None => route.pattern.clone().into(),
        };
        if let Some(saved) = lock(&self.saved).remove(&*key) {
            handle.restore_snapshot(&saved);
        }
        Ok(Chain {
            key,
            service,
            handle,
        })
    }

    fn target_service(&self, target: &Target) -> Result<TargetService<ReqB, ResB>, ConfigError> {
        let name = target.to_string();
        let mut targets = lock(&self.targets);
        if let Some(entry) = targets.get(&name) {
            return Ok(entry.service.clone());
        }
        let entry = (self.make)(target)?;
        let service = entry.service.clone();
        targets.insert(name, entry);
        Ok(service)
    }
}

/// A JSON-directory escalation hook shared by every chain.
struct SharedEscalation(Arc<JsonDirEscalation>);

impl Escalation for SharedEscalation {
    fn escalate(&self, event: &EscalationEvent) {
        self.0.escalate(event);
    }
}

#[derive(serde::Serialize, Deserialize)]
struct SavedHealth {
    chains: HashMap<String, HealthSnapshot>,
}

fn load_saved(path: &Path) -> HashMap<String, HealthSnapshot> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<SavedHealth>(&bytes) {
            Ok(saved) => saved.chains,
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "ignoring unreadable health file");
                HashMap::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot read health file");
            HashMap::new()
        }
    }
}

/// Everything the configuration says, resolved once: URLs, secrets, policies.
#[derive(Clone)]
struct Plan {
    providers: Arc<HashMap<String, ProviderPlan>>,
    routes: Arc<[RoutePlan]>,
    cooldowns: CooldownPolicy,
    escalation_policy: EscalationPolicy,
    escalation_dir: Option<Arc<JsonDirEscalation>>,
    cache: Option<CacheConfig>,
    static_answer: Option<StaticAnswer>,
    breaker: Option<BreakerPlan>,
    retry: Option<RetryPlan>,
    bulkhead: Option<BulkheadPlan>,
    stream_guard: StreamGuardLayer,
}

#[derive(Clone)]
struct ProviderPlan {
    base_url: String,
    /// `None` header = `Authorization: Bearer`.
    auth: Option<(Option<HeaderName>, Secret)>,
}

struct RoutePlan {
    glob: glob::Pattern,
    targets: Vec<TargetPlan>,
    selection: Selection,
    cache: bool,
    static_answer: bool,
}

struct TargetPlan {
    provider: Arc<str>,
    model: Option<Arc<str>>,
    attempt_timeout: Duration,
    tier: u32,
    weight: u32,
    context_window: Option<u64>,
    max_tokens: Option<u64>,
    max_temperature: Option<f64>,
}

#[derive(Clone)]
struct BreakerPlan {
    failure_rate: f64,
    window: u32,
    min_calls: u32,
    consecutive: u32,
    open: Duration,
    max_open: Duration,
    probes: u32,
}

impl BreakerPlan {
    fn layer(&self, name: &str) -> Result<CircuitBreakerLayer, ConfigError> {
        let builder = CircuitBreakerLayer::builder()
            .name(name)
            .failure_rate_threshold(self.failure_rate)
            .sliding_window(SlidingWindow::Count(self.window))
            .minimum_calls(self.min_calls)
            .open_duration(self.open)
            .max_open_duration(self.max_open)
            .permitted_calls_in_half_open(self.probes);
        let builder = if self.consecutive == 0 {
            builder.no_consecutive_failures()
        } else {
            builder.consecutive_failures(self.consecutive)
        };
        builder.build()
    }
}

#[derive(Clone)]
struct RetryPlan {
    max_attempts: u32,
    backoff: Backoff,
    max_server_delay: Duration,
    attempt_timeout: Duration,
    budget: (u32, f32),
    seed: Option<u64>,
}

#[derive(Clone)]
struct BulkheadPlan {
    max_in_flight: usize,
    max_queued: usize,
    max_wait: Duration,
    rpm: Option<u32>,
    tpm: Option<u64>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Plan {
    fn new(
        config: &StackConfig,
        urls: &HashMap<String, String>,
    ) -> Result<Self, crate::ConfigFileError> {
        let mut providers = HashMap::new();
        for (i, p) in config.providers.iter().enumerate() {
            let name = p.name.get_ref();
            let base_url = match (urls.get(name), &p.base_url) {
                (Some(url), _) => url.clone(),
                (None, Some(url)) => url.get_ref().clone(),
                (None, None) => {
                    return Err(config.error_at(
                        &format!("providers[{i}].mock"),
                        format!(
                            "provider `{name}` is a mock upstream: start it and pass its URL to \
                             StackBuilder::provider_url"
                        ),
                    ))
                }
            };
            let auth = match &p.api_key_env {
                None => None,
                Some(var) => {
                    let secret = Secret::from_env(var.get_ref()).map_err(|e| {
                        config.error_at(&format!("providers[{i}].api_key_env"), e.message())
                    })?;
                    let header = match &p.auth_header {
                        Some(h) if !h.get_ref().eq_ignore_ascii_case("authorization") => {
                            Some(HeaderName::from_bytes(h.get_ref().as_bytes()).map_err(|_| {
                                config.error_at(
                                    &format!("providers[{i}].auth_header"),
                                    "not a header name",
                                )
                            })?)
                        }
                        _ => None,
                    };
                    Some((header, secret))
                }
            };
            providers.insert(name.clone(), ProviderPlan { base_url, auth });
        }

        let retry_section = &config.retry;
        let per_attempt = ms(retry_section.attempt_timeout_ms);
        // A target's default time in the chain (retries included): one attempt's timeout.
        let default_target_budget = per_attempt;
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let glob = glob::Pattern::new(r.pattern.get_ref())
                .map_err(|e| config.error_at(&format!("routes[{i}].match"), e.msg))?;
            let targets = r
                .targets
                .iter()
                .enumerate()
                .map(|(j, t)| TargetPlan {
                    provider: t.provider.get_ref().as_str().into(),
                    model: t.model.as_deref().map(Arc::from),
                    attempt_timeout: t.attempt_timeout_ms.map_or(default_target_budget, ms),
                    tier: t.tier.unwrap_or(u32::try_from(j).unwrap_or(u32::MAX)),
                    weight: t.weight,
                    context_window: t.context_window,
                    max_tokens: t.max_tokens,
                    max_temperature: t.max_temperature.as_ref().map(|x| *x.get_ref()),
                })
                .collect();
            routes.push(RoutePlan {
                glob,
                targets,
                selection: match r.selection {
                    TierSelection::Ordered => Selection::Ordered,
                    TierSelection::Weighted => Selection::Weighted,
                    TierSelection::LeastLoaded => Selection::LeastLoaded,
                },
                cache: r.cache,
                static_answer: r.static_answer,
            });
        }

        let cd = &config.cooldown;
        let mut cooldowns = CooldownPolicy::default()
            .max_probe_interval(ms(cd.max_probe_interval_ms))
            .panic_probe_interval(ms(cd.panic_probe_interval_ms))
            .max_server_delay(ms(cd.max_server_delay_ms))
            .with(
                ErrorKind::Auth,
                cd.auth_ms
                    .map_or(Cooldown::UntilReset, |n| Cooldown::Fixed(ms(n))),
            );
        for (kind, n) in [
            (ErrorKind::RateLimited, cd.rate_limited_ms),
            (ErrorKind::QuotaExhausted, cd.quota_ms),
        ] {
            let row = if n == 0 {
                Cooldown::None
            } else {
                Cooldown::ServerDelayOr(ms(n))
            };
            cooldowns = cooldowns.with(kind, row);
        }
        let transient = if cd.transient_min_ms == 0 {
            Cooldown::None
        } else {
            Cooldown::Adaptive {
                min: ms(cd.transient_min_ms),
                max: ms(cd.max_probe_interval_ms),
            }
        };
        for kind in ErrorKind::ALL
            .into_iter()
            .filter(|k| tower_llm_fallback::is_transient(*k))
        {
            cooldowns = cooldowns.with(kind, transient);
        }
        let esc = &config.escalation;
        let escalation_policy = EscalationPolicy::new()
            .all_targets_failed(esc.all_targets_failed)
            .repeated_kind(esc.repeated_kind)
            .failure_burst(esc.window_failures, ms(esc.window_ms));
        let escalation_dir = match &esc.dir {
            Some(dir) => Some(Arc::new(JsonDirEscalation::new(dir).map_err(|e| {
                config.error_at("escalation.dir", format!("cannot use `{dir}`: {e}"))
            })?)),
            None => None,
        };

        let cache = config.cache.enabled.then(|| {
            CacheConfig::new()
                .max_entries(usize::try_from(config.cache.max_entries).unwrap_or(usize::MAX))
                .max_bytes(usize::try_from(config.cache.max_bytes).unwrap_or(usize::MAX))
                .ttl(ms(config.cache.ttl_ms))
        });
        let static_answer = config.static_answer.content.as_ref().map(|content| {
            let answer = StaticAnswer::new(content.as_str());
            match &config.static_answer.model {
                Some(model) => answer.model(model.as_str()),
                None => answer,
            }
        });

        let b = &config.breaker;
        let breaker = b.enabled.then(|| BreakerPlan {
            failure_rate: *b.failure_rate.get_ref(),
            window: b.window,
            min_calls: b.min_calls,
            consecutive: b.consecutive_failures,
            open: ms(b.open_ms),
            max_open: ms(b.max_open_ms),
            probes: b.half_open_probes,
        });
        if let Some(breaker) = &breaker {
            breaker
                .layer("check")
                .map_err(|e| section_error(config, "breaker", &e))?;
        }

        let retry = retry_section.enabled.then(|| RetryPlan {
            max_attempts: retry_section.max_attempts,
            backoff: Backoff::decorrelated_jitter(ms(retry_section.base_ms))
                .with_max_delay(ms(retry_section.max_delay_ms)),
            max_server_delay: ms(retry_section.max_server_delay_ms),
            attempt_timeout: per_attempt,
            budget: (
                retry_section.budget_floor_per_sec,
                *retry_section.budget_ratio.get_ref() as f32,
            ),
            seed: retry_section.seed,
        });
        let bh = &config.bulkhead;
        let bulkhead = bh.enabled.then(|| BulkheadPlan {
            max_in_flight: usize::try_from(bh.max_in_flight).unwrap_or(usize::MAX),
            max_queued: usize::try_from(bh.max_queued).unwrap_or(usize::MAX),
            max_wait: ms(bh.max_wait_ms),
            rpm: bh.requests_per_minute,
            tpm: bh.tokens_per_minute,
        });

        let stream_guard = StreamGuardLayer::builder()
            .ttft(ms(config.stream.ttft_ms))
            .idle(ms(config.stream.idle_ms))
            .total(ms(config.stream.total_ms))
            .build()
            .map_err(|e| section_error(config, "stream", &e))?;

        let plan = Plan {
            stream_guard,
            providers: Arc::new(providers),
            routes: routes.into(),
            cooldowns,
            escalation_policy,
            escalation_dir,
            cache,
            static_answer,
            breaker,
            retry,
            bulkhead,
        };
        // Check the per-target layers once, so their errors name the configuration's keys.
        if let Some(retry) = &plan.retry {
            plan.retry_layer(retry, "check")
                .map_err(|e| section_error(config, "retry", &e))?;
        }
        if let Some(bulkhead) = &plan.bulkhead {
            plan.bulkhead_layer(bulkhead, "check")
                .map_err(|e| section_error(config, "bulkhead", &e))?;
        }
        Ok(plan)
    }

    fn retry_layer(&self, retry: &RetryPlan, name: &str) -> Result<RetryLayer, ConfigError> {
        let mut builder = RetryLayer::builder()
            .max_attempts(retry.max_attempts)
            .backoff(retry.backoff)
            .max_server_delay(retry.max_server_delay)
            .attempt_timeout(retry.attempt_timeout)
            .budget(RetryBudget::new(
                Duration::from_secs(10),
                retry.budget.0,
                retry.budget.1,
            )?);
        if let Some(seed) = retry.seed {
            // One seed per target, stable across runs.
            let salt = name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            builder = builder.seed(seed ^ salt);
        }
        builder.build()
    }

    fn bulkhead_layer(
        &self,
        plan: &BulkheadPlan,
        name: &str,
    ) -> Result<BulkheadLayer<Global, JsonBodyEstimate>, ConfigError> {
        let mut builder = BulkheadLayer::builder()
            .name(name)
            .max_concurrent(plan.max_in_flight)
            .max_queued(plan.max_queued)
            .max_wait(plan.max_wait);
        if let Some(rpm) = plan.rpm {
            builder = builder.rate_limit(RateLimit::per_minute(rpm).max_wait(plan.max_wait));
        }
        let builder = match plan.tpm {
            Some(tpm) => builder.token_limit(
                TokenLimit::per_minute(tpm).max_wait(plan.max_wait),
                JsonBodyEstimate::new(),
            ),
            None => builder.estimate_tokens(JsonBodyEstimate::new()),
        };
        builder.build()
    }

    /// One target's stack over `client`: breaker → retry → bulkhead → inspect → client.
    fn target_stack<ReqB, ResB, S>(
        &self,
        target: &Target,
        client: S,
    ) -> Result<TargetEntry<ReqB, ResB>, ConfigError>
    where
        S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        ReqB::Error: Into<BoxError>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let name = target.to_string();
        let inspected = ServiceBuilder::new()
            .layer(self.stream_guard)
            .layer(InspectErrorBodyLayer::new())
            .service(client);
        let (limited, bulkhead): (TargetService<ReqB, ResB>, _) = match &self.bulkhead {
            Some(plan) => {
                let svc = tower::Layer::layer(&self.bulkhead_layer(plan, &name)?, inspected);
                let handle = svc.handle();
                let svc =
                    svc.map_response(|res: Response<PermitBody<GuardedBody<ReplayBody<ResB>>>>| {
                        res.map(Either::Left)
                    });
                (BoxCloneSyncService::new(svc), Some(handle))
            }
            None => {
                let svc = inspected.map_response(|res: Response<GuardedBody<ReplayBody<ResB>>>| {
                    res.map(Either::Right)
                });
                (BoxCloneSyncService::new(svc), None)
            }
        };
        let retried: TargetService<ReqB, ResB> = match &self.retry {
            Some(retry) => BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(self.retry_layer(retry, &name)?)
                    .service(limited),
            ),
            None => limited,
        };
        let (service, breaker) = match &self.breaker {
            Some(plan) => {
                let layer = plan.layer(&name)?;
                let handle = layer.handle();
                let svc = ServiceBuilder::new().layer(layer).service(retried);
                (BoxCloneSyncService::new(svc), Some(handle))
            }
            None => (retried, None),
        };
        Ok(TargetEntry {
            target: target.clone(),
            breaker,
            bulkhead,
            service,
        })
    }
}

fn section_error(config: &StackConfig, section: &str, e: &ConfigError) -> crate::ConfigFileError {
    config.error_at(&format!("{section}.{}", e.field()), e.message().to_owned())
}

#[derive(Deserialize)]
struct ModelOnly<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

/// The `model` of a JSON chat request.
fn requested_model(body: &[u8]) -> Result<String, InvalidRequest> {
    let parsed: ModelOnly<'_> =
        serde_json::from_slice(body).map_err(|_| InvalidRequest::new(InvalidReason::NotJson))?;
    match parsed.model {
        Some(model) if !model.is_empty() => Ok(model.into_owned()),
        _ => Err(InvalidRequest::new(InvalidReason::NoModel)),
    }
}

/// The future of a routing step: the buffered request and the chain that serves it.
type Prepare<ReqB, ResB> = Pin<
    Box<
        dyn Future<Output = Result<(RouteService<ReqB, ResB>, Request<ReplayBody<ReqB>>), BoxError>>
            + Send,
    >,
>;

/// Response future of [`Stack`]: buffers the body and picks the route, then runs the chain.
#[pin_project]
pub struct StackFuture<ReqB, ResB> {
    #[pin]
    state: StackState<ReqB, ResB>,
}

// The chain's future is stored inline, not boxed: one allocation fewer per call.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = StackStateProj)]
enum StackState<ReqB, ResB> {
    Preparing {
        prepare: Prepare<ReqB, ResB>,
    },
    Calling {
        #[pin]
        call: ChainFuture<ReqB, ResB>,
    },
}

impl<ReqB, ResB> fmt::Debug for StackFuture<ReqB, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackFuture").finish_non_exhaustive()
    }
}

type ChainFuture<ReqB, ResB> = tower_llm_fallback::ResponseFuture<
    TargetService<ReqB, ResB>,
    ReplayBody<ReqB>,
    TargetBody<ResB>,
    tower_llm_core::HttpClassifier,
>;

impl<ReqB, ResB> Future for StackFuture<ReqB, ResB>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<StackBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StackStateProj::Preparing { prepare } => {
                    let (mut chain, req) = match prepare.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(ready)) => ready,
                    };
                    // A chain is always ready (see `Fallback::poll_ready`).
                    let call = chain.call(req);
                    this.state.set(StackState::Calling { call });
                }
                StackStateProj::Calling { call } => return call.poll(cx),
            }
        }
    }
}

impl<ReqB, ResB> Service<Request<ReqB>> for Stack<ReqB, ResB>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<StackBody<ResB>>;
    type Error = BoxError;
    type Future = StackFuture<ReqB, ResB>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Every chain is always ready; each attempt waits for its target within its timeout.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        StackFuture {
            state: StackState::Preparing {
                prepare: Box::pin(prepare(Arc::clone(&self.inner), req)),
            },
        }
    }
}

/// Buffer the body, read its `model`, and find the chain of the first matching route.
async fn prepare<ReqB, ResB>(
    inner: Arc<Inner<ReqB, ResB>>,
    req: Request<ReqB>,
) -> Result<(RouteService<ReqB, ResB>, Request<ReplayBody<ReqB>>), BoxError>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let limit = inner.body_limit;
    let body = ReplayBody::buffer(body, limit).await?;
    let model = match body.bytes() {
        Some(bytes) => requested_model(bytes)?,
        None => return Err(InvalidRequest::new(InvalidReason::TooLarge(limit)).into()),
    };
    let chain = inner.chain_for(&model)?;
    Ok((chain.service, Request::from_parts(parts, body)))
}
