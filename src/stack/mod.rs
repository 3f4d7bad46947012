//! From a validated [`StackConfig`] to a ready service: [`StackBuilder`] and [`Stack`].
//!
//! For each route the stack builds a fallback chain over the route's targets, and for each
//! target (provider + upstream model) one per-target stack, shared by every route that names it:
//!
//! ```text
//! BufferRequestBody            the body becomes replayable (up to `[request] max_body_bytes`);
//!                              its `model` picks the route
//! └─ Fallback (per route)      tiers, cooldowns, cache and static tiers, escalation, x-llm-* headers
//!    └─ per target (shared by every route that names it):
//!       CircuitBreaker         one per target
//!       └─ Retry               backoff with jitter, server delays, a retry budget per target
//!          └─ Bulkhead         in-flight, queue, request and token limits per target
//!             └─ StreamGuard   `[stream]` first-token, idle and total limits; no truncated stream;
//!                              a non-stream answer read whole under them (stall/cut = failed attempt)
//!                └─ InspectErrorBody  provider error codes for the classifiers above
//!                   └─ client  UpstreamClient (HTTP/1.1 connections driven by the answer's
//!                              reader), or any service you supply
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
//! **Routes.** A route whose targets all name their model has one chain, built with the stack
//! (configuration errors surface then, and `/health` lists its targets from the start) and read
//! without a lock on every request. A route with a pass-through target builds one chain per
//! requested model, on first use.
//!
//! **Pass-through targets.** A target without a `model` sends the requested model upstream;
//! each requested model is then a target of its own (`primary/gpt-4o`, `primary/gpt-4o-mini`),
//! with its own breaker, bulkhead, retry budget and cooldowns, so one failing model does not
//! bench its provider's other models. A route tracks at most [`MAX_MODELS_PER_ROUTE`] models;
//! a new one then evicts the least recently used model whose chain is idle (no request between
//! routing and its answer's head, and nothing in flight or queued in the bulkheads of its
//! pass-through targets, which a streamed answer holds until it ends; with bulkheads off, a
//! model whose answer is still streaming may be evicted, and that stream ends normally). The
//! evicted chain's cooldowns and counters go, and so do the breaker, bulkhead and retry budget
//! of each of its targets no other chain uses. Their metric series stay in the recorder (the
//! `metrics` facade cannot remove a series; a Prometheus exporter drops idle ones with its
//! `idle_timeout`). Only when every model has a request in flight is a new one refused
//! ([`TooManyModels`](crate::TooManyModels)).
//!
//! **Model names.** A requested model name is checked before anything is created for it
//! ([`check_model_name`](crate::check_model_name): at most 256 bytes, printable Unicode);
//! an invalid one is an [`InvalidRequest`](crate::InvalidRequest) with
//! [`InvalidReason::ModelName`](crate::InvalidReason::ModelName).
//!
//! **Streams.** Each target's [`StreamGuardLayer`](tower_llm_core::StreamGuardLayer) (with the `[stream]` limits) holds a streamed
//! answer back until its first event: a stream that does not start within the first-token limit,
//! starts with an error event or ends before any answer is a failed attempt, which retry retries
//! and the chain fails over. After the first event the guard ends a cut, stalled or broken stream
//! with an OpenAI-shaped SSE `error` event and no `[DONE]`, never a silent truncation, and
//! finishes a stream that has its `finish_reason` but no `[DONE]`. A non-stream answer is read
//! whole by the same guard, under the same limits, before it is handed on (up to
//! `[stream] max_buffered_body_bytes`): a JSON body that stalls or is cut is a failed attempt
//! (`timeout` / `transport`) the chain fails over, never a hang or a broken `200`. It sits below the bulkhead so
//! a stream holds its permit until it ends.
//!
//! **TLS.** [`StackBuilder::build_http`] builds over [`UpstreamClient`](crate::client::UpstreamClient):
//! `http` and (with the `tls` feature, default on) `https` with HTTP/2 by ALPN, each provider's
//! roots, `ca_file` and connection settings. Without the feature, pass a TLS-capable client to
//! [`StackBuilder::build_with_client`]. Either way, provider presets (`kind`) shape requests the
//! same (Anthropic's version header, Azure's deployment paths).
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

mod future;
mod plan;
mod route;
mod target;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Either;
use hyper_util::client::legacy::Client;
use tower::util::BoxCloneSyncService;
use tower::Service;
use tower_llm_breaker::BreakerHandle;
use tower_llm_bulkhead::PermitBody;
use tower_llm_core::{BoxError, GuardedBody, ReplayBody, Target};
use tower_llm_fallback::{Fallback, FallbackBody, HealthSnapshot};
use tower_llm_redis::SharedState;

pub use future::StackFuture;

use crate::config::{layers, StackConfig};
use crate::health::{self, StackHealth, TargetParts};
use crate::ConfigFileError;
use plan::Plan;
use route::{expire_stale, load_saved, Chains, RouteChains, SavedHealth};
use target::{MakeTarget, Targets};

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
/// type-erased so targets with different settings share a type.
pub type TargetService<ReqB, ResB> =
    BoxCloneSyncService<Request<ReplayBody<ReqB>>, Response<TargetBody<ResB>>, BoxError>;

/// One route's fallback chain over its targets' stacks.
pub type RouteService<ReqB, ResB> = Fallback<TargetService<ReqB, ResB>>;

/// hyper-util's legacy client over the default [`Connector`](crate::client::Connector) (https
/// with the `tls` feature): what [`UpstreamClient`](crate::client::UpstreamClient) sends the
/// requests that may negotiate HTTP/2 with.
pub type HttpClient<ReqB> = Client<crate::client::Connector, ReplayBody<ReqB>>;

/// Builds a [`Stack`] from a [`StackConfig`].
pub struct StackBuilder<'a> {
    config: &'a StackConfig,
    urls: HashMap<String, String>,
    shared_state: Option<SharedState>,
    reports: bool,
    retry_extensions: bool,
}

impl fmt::Debug for StackBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("providers", &self.config.providers.len())
            .field("routes", &self.config.routes.len())
            .field("urls", &self.urls)
            .field("shared_state", &self.shared_state)
            .field("reports", &self.reports)
            .field("retry_extensions", &self.retry_extensions)
            .finish()
    }
}

impl<'a> StackBuilder<'a> {
    /// Start from a configuration (validated again when the stack is built).
    pub fn new(config: &'a StackConfig) -> Self {
        StackBuilder {
            config,
            urls: HashMap::new(),
            shared_state: None,
            reports: true,
            retry_extensions: true,
        }
    }

    /// Whether answers carry the fallback chain's
    /// [`FallbackReport`](tower_llm_fallback::FallbackReport) extension (on by default). The
    /// `x-llm-target` and `x-llm-fallback` headers name the answering target either way; a
    /// proxy that forwards answers and reads no report (the gateway) turns it off and saves up
    /// to three allocations per answer. See
    /// [`FallbackLayerBuilder::report_extension`](tower_llm_fallback::FallbackLayerBuilder::report_extension).
    pub fn fallback_reports(mut self, on: bool) -> Self {
        self.reports = on;
        self
    }

    /// Whether the targets' retry layers set the [`Attempt`](tower_llm_retry::Attempt)
    /// extension on retried requests and the [`RetryAttempts`](tower_llm_retry::RetryAttempts)
    /// log on answers that follow a failed attempt (on by default). Metrics, traces and the
    /// records of a [`RetriesExhausted`](tower_llm_core::RetriesExhausted) error are the same
    /// either way; a proxy that reads neither extension (the gateway) turns them off and saves
    /// a retried call up to six allocations. See
    /// [`HttpReplay::attempt_extensions`](tower_llm_retry::HttpReplay::attempt_extensions).
    pub fn retry_attempt_extensions(mut self, on: bool) -> Self {
        self.retry_extensions = on;
        self
    }

    /// Share state with other replicas through `shared` instead of connecting to
    /// `[shared_state] redis_url` (e.g. one connection for several stacks, or across a
    /// configuration reload). See [`Stack::shared_state`].
    pub fn shared_state(mut self, shared: SharedState) -> Self {
        self.shared_state = Some(shared);
        self
    }

    /// Send provider `name`'s requests to `base_url`, whatever the configuration says. Needed
    /// for a provider without `base_url` (the gateway's `mock = "..."` providers: whoever starts
    /// the mock upstream passes its URL here).
    pub fn provider_url(mut self, name: impl Into<String>, base_url: impl Into<String>) -> Self {
        self.urls.insert(name.into(), base_url.into());
        self
    }

    /// Build over the default [`UpstreamClient`](crate::client::UpstreamClient): `http`, and
    /// `https` with the `tls` feature (HTTP/2 by ALPN), each provider's connection settings, and
    /// `TCP_NODELAY` set (without it, small SSE writes wait for the peer's delayed ACK: ~40 ms
    /// per stream on Linux).
    pub fn build_http<ReqB>(
        self,
    ) -> Result<Stack<ReqB, crate::client::UpstreamBody>, ConfigFileError>
    where
        ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        ReqB::Error: Into<BoxError>,
    {
        let client = crate::client::UpstreamClientBuilder::new(self.config)
            .provider_urls(&self.urls)
            .build::<ReplayBody<ReqB>>()?;
        self.build_with_client(client)
    }

    /// Build over any client service: a hyper client with a TLS connector, a test double, a
    /// client with its own middleware. Requests reach it with an absolute URI (the target's base
    /// URL) and the target's credentials.
    pub fn build_with_client<ReqB, ResB, S>(
        self,
        client: S,
    ) -> Result<Stack<ReqB, ResB>, ConfigFileError>
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
        config.validate()?;
        // `[shared_state]`: connecting never fails because Redis is down (decisions stay local
        // until it answers), only for a bad setting or outside a tokio runtime.
        let shared_state = match (self.shared_state, config.shared_state.redis_config()) {
            (Some(shared), _) => Some(shared),
            (None, Some(redis)) => Some(SharedState::connect(redis).map_err(|e| {
                let (key, message) = layers::section_error("shared_state", &e);
                config.error_at(&key, message)
            })?),
            (None, None) => None,
        };
        let mut plan = Plan::new(config, &self.urls, shared_state)?;
        plan.reports = self.reports;
        plan.layers.retry_extensions = self.retry_extensions;
        // Provider presets' request shaping (headers, Azure paths) right above the client.
        let shapes = crate::client::shape::Shapes::new(config, &self.urls);
        let make: MakeTarget<ReqB, ResB> = {
            let layers = plan.layers.clone();
            Arc::new(move |target: &Target| {
                layers.target_stack(target, shapes.wrap(target, client.clone()))
            })
        };
        let saved = match &config.health.file {
            Some(file) => {
                let mut saved = load_saved(Path::new(file), config.health.on_corrupt)
                    .map_err(|message| config.error_at("health.file", message))?;
                let (chains, targets) = expire_stale(&plan, &mut saved);
                if chains + targets > 0 {
                    tracing::info!(
                        path = %file,
                        chains,
                        targets,
                        "saved health: dropped entries the configuration no longer has"
                    );
                }
                saved
            }
            None => HashMap::new(),
        };
        let mut chains = Chains {
            plan,
            targets: Targets::new(make),
            saved: Mutex::new(saved),
            routes: Vec::with_capacity(config.routes.len()),
        };
        // Build what does not depend on the requested model now: configuration errors surface
        // here, `/health` lists these targets from the start, and requests read these chains
        // without a lock.
        for index in 0..chains.plan.routes.len() {
            let route = if chains.plan.routes[index].passthrough {
                RouteChains::PerModel(Default::default())
            } else {
                let chain = chains.build(index, None).map_err(|e| {
                    let (key, message) = layers::chain_error(index, &e);
                    config.error_at(&key, message)
                })?;
                RouteChains::Fixed(chain)
            };
            chains.routes.push(route);
        }
        Ok(Stack {
            inner: Arc::new(Inner {
                chains,
                body_limit: usize::try_from(config.request.max_body_bytes).unwrap_or(usize::MAX),
                health_file: config.health.file.as_ref().map(PathBuf::from),
            }),
        })
    }
}

/// A ready stack: a `tower::Service<http::Request<ReqB>>` that reads each request's `model`,
/// picks the first matching route and calls its fallback chain. Clones share every breaker,
/// bulkhead, budget, cooldown and cache.
///
/// Errors: [`NoRoute`](crate::NoRoute) (no route matches the model),
/// [`InvalidRequest`](crate::InvalidRequest) (no JSON `model`, or a body over
/// `[request] max_body_bytes`), [`TooManyModels`](crate::TooManyModels), and whatever the chain
/// returns ([`AllTargetsFailed`](tower_llm_core::AllTargetsFailed) when no target answered).
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
            .field("routes", &self.inner.chains.routes.len())
            .field("targets", &lock(&self.inner.chains.targets.entries).len())
            .finish()
    }
}

struct Inner<ReqB, ResB> {
    chains: Chains<ReqB, ResB>,
    /// Request bodies are buffered up to this many bytes (`[request] max_body_bytes`).
    body_limit: usize,
    health_file: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<ReqB, ResB> Stack<ReqB, ResB> {
    /// The route globs, in order.
    pub fn route_patterns(&self) -> Vec<String> {
        self.inner
            .chains
            .plan
            .routes
            .iter()
            .map(|r| r.pattern.clone())
            .collect()
    }

    /// The models of the chains that routes with pass-through targets hold now, in route order
    /// (each has its own chain, created by its first request; at most [`MAX_MODELS_PER_ROUTE`]
    /// per route, the least recently used idle one evicted to make room). A route whose targets
    /// all name their model tracks no requested models.
    pub fn requested_models(&self) -> Vec<String> {
        self.inner.chains.requested_models()
    }

    /// The handle on Redis this stack shares state through (`[shared_state]`, or the one given
    /// to [`StackBuilder::shared_state`]): its [`status`](SharedState::status) says whether
    /// state is shared right now; its [`connection`](SharedState::connection),
    /// [`key`](SharedState::key) scheme and [`timeout`](SharedState::timeout) serve other
    /// shared components. `None` when sharing is off.
    pub fn shared_state(&self) -> Option<&SharedState> {
        self.inner.chains.plan.layers.shared_state.as_ref()
    }

    /// Every known target's health, and the overall status.
    pub fn health(&self) -> StackHealth {
        let parts: BTreeMap<String, TargetParts> = lock(&self.inner.chains.targets.entries)
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
            .chains
            .all()
            .iter()
            .map(|c| c.handle.health())
            .collect();
        let mut health = health::merge(parts, &chains);
        health.shared_state = self.shared_state().map(SharedState::health);
        health
    }

    /// The breaker of the target named `name` (`provider/model`), if it exists yet.
    pub fn breaker(&self, name: &str) -> Option<BreakerHandle> {
        lock(&self.inner.chains.targets.entries)
            .get(name)
            .and_then(|e| e.breaker.clone())
    }

    /// Lift the cooldown of the target named `name` in every route (an `Auth` cooldown lifts only
    /// this way, unless `[cooldown] auth_ms` is set) and close its breaker. Returns whether the
    /// target exists.
    pub fn reset_target(&self, name: &str) -> bool {
        let mut found = false;
        for chain in self.inner.chains.all() {
            found |= chain.handle.reset_target(name);
        }
        if let Some(breaker) = self.breaker(name) {
            breaker.reset();
            found = true;
        }
        found
    }

    /// Save every chain's health to `[health] file`, atomically
    /// ([`write_atomic`](tower_llm_fallback::write_atomic): a uniquely named temporary file,
    /// flushed, renamed, the directory flushed; concurrent saves never leave a partial file).
    /// Returns the path written, or `None` when no file is configured. It blocks on disk I/O:
    /// from async code, call it in `tokio::task::spawn_blocking`.
    pub fn save_health(&self) -> Result<Option<PathBuf>, BoxError> {
        let Some(path) = &self.inner.health_file else {
            return Ok(None);
        };
        let mut all: HashMap<String, HealthSnapshot> = lock(&self.inner.chains.saved).clone();
        for chain in self.inner.chains.all() {
            all.insert(chain.key.to_string(), chain.handle.health());
        }
        let bytes = serde_json::to_vec_pretty(&SavedHealth { chains: all })?;
        tower_llm_fallback::write_atomic(path, &bytes)?;
        Ok(Some(path.clone()))
    }

    /// The fallback chain serving `model` (created on first use for routes with pass-through
    /// targets; a request sent to it directly does not keep that chain from being evicted).
    /// Errors as the stack's: an invalid model name, no route, or a full route. Requests sent
    /// to it directly need a buffered body
    /// ([`BufferRequestBodyLayer`](tower_llm_core::BufferRequestBodyLayer)).
    pub fn route_service(&self, model: &str) -> Result<RouteService<ReqB, ResB>, BoxError> {
        self.inner
            .chains
            .service_for(model)
            .map(|(service, _)| service)
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
        StackFuture::new(Arc::clone(&self.inner), req, None)
    }
}

impl<ReqB, ResB> Stack<ReqB, ResB>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    /// Call the stack with a request whose body's `model` the caller has read already (a proxy
    /// that labels or checks requests by model before calling): the request is routed by
    /// `model` and its body is not parsed a second time. Everything else is as for
    /// [`call`](Service::call): the body is buffered up to the limit, and an empty or invalid
    /// model name, a model no route serves or a full route is the same error.
    ///
    /// `model` must be the body's own: pass-through targets forward the body as it is.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use tower_llm::{StackBuilder, StackConfig};
    ///
    /// let config = StackConfig::from_toml_str(r#"
    ///     [[providers]]
    ///     name = "p"
    ///     base_url = "http://127.0.0.1:9/v1"
    ///     [[routes]]
    ///     match = "gpt-*"
    ///     targets = [{ provider = "p" }]
    /// "#).unwrap();
    /// let stack = StackBuilder::new(&config).build_http::<Full<Bytes>>().unwrap();
    ///
    /// let body = r#"{"model":"llama","messages":[]}"#;
    /// let req = http::Request::post("/v1/chat/completions")
    ///     .body(Full::new(Bytes::from(body)))
    ///     .unwrap();
    /// // "llama" matches no route: refused before anything is sent.
    /// let err = stack.call_with_model("llama", req).await.unwrap_err();
    /// assert!(err.downcast_ref::<tower_llm::NoRoute>().is_some());
    /// # }
    /// ```
    pub fn call_with_model(
        &self,
        model: impl Into<String>,
        req: Request<ReqB>,
    ) -> StackFuture<ReqB, ResB> {
        StackFuture::new(Arc::clone(&self.inner), req, Some(model.into()))
    }

    /// [`call_with_model`](Self::call_with_model) for a request whose body is in memory already
    /// (a proxy that read it whole, within its own limit, to find the `model`): the request is
    /// routed here, with no step that buffers the body (no boxed future for it), and handed to
    /// its chain at the future's first poll. The same errors, from the returned future: a body
    /// over the stack's `[request] max_body_bytes`, an empty or invalid model name, a model no
    /// route serves, a full route. Nothing is sent before the first poll.
    ///
    /// The chain's attempt spans take the span current at that first poll as their parent
    /// (the request's span, for a future run with `.instrument(span)`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use tower_llm::{StackBuilder, StackConfig};
    ///
    /// let config = StackConfig::from_toml_str(r#"
    ///     [[providers]]
    ///     name = "p"
    ///     base_url = "http://127.0.0.1:9/v1"
    ///     [[routes]]
    ///     match = "gpt-*"
    ///     targets = [{ provider = "p" }]
    /// "#).unwrap();
    /// let stack = StackBuilder::new(&config).build_http::<Full<Bytes>>().unwrap();
    ///
    /// let body = Bytes::from_static(br#"{"model":"llama","messages":[]}"#);
    /// let req = http::Request::post("/v1/chat/completions").body(body).unwrap();
    /// // "llama" matches no route: refused before anything is sent.
    /// let err = stack.call_buffered("llama", req).await.unwrap_err();
    /// assert!(err.downcast_ref::<tower_llm::NoRoute>().is_some());
    /// # }
    /// ```
    pub fn call_buffered(
        &self,
        model: impl Into<String>,
        req: Request<Bytes>,
    ) -> StackFuture<ReqB, ResB> {
        StackFuture::buffered(&self.inner, req, model.into())
    }
}

#[cfg(test)]
mod tests;
