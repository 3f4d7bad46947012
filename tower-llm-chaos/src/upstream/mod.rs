//! A mock OpenAI-compatible upstream on loopback, with scripted faults.
//!
//! [`MockUpstream::builder`] configures which [`Fault`] each request gets — by time window since
//! start, by requested model, or by default (see [`FaultProfile`] for the precedence) — and
//! [`start`](MockUpstreamBuilder::start) binds `127.0.0.1:0` and spawns the server onto the
//! current tokio runtime, so its timers share a paused test clock. Every request to
//! `POST /v1/chat/completions` (or any other path ending in `/chat/completions`, as providers'
//! base URLs make them: `/openai/v1/chat/completions`) is logged as an [`Attempt`], with the
//! HTTP version it came in, its path and query and its headers.
//!
//! With the `tls` feature, `MockUpstreamBuilder::tls` serves it over TLS, HTTP/2 offered by
//! ALPN (see `MockTls`).
//!
//! Healthy answers carry [`CANONICAL_ANSWER`](crate::CANONICAL_ANSWER), or
//! [`ALTERNATE_ANSWER`](crate::ALTERNATE_ANSWER) with
//! [`answer(Answer::Alternate)`](MockUpstreamBuilder::answer). A final assistant message (an
//! assistant prefill) is ignored by default; [`prefill`](MockUpstreamBuilder::prefill) makes the
//! mock continue the text after it or reject it (see [`Prefill`]). Both can change at run time
//! ([`MockHandle::set_answer`], [`MockHandle::set_prefill`]). For load and latency benches,
//! [`answer_tokens`](MockUpstreamBuilder::answer_tokens) makes every answer longer (the answer's
//! tokens repeated) and [`token_interval`](MockUpstreamBuilder::token_interval) paces a stream's
//! events, as a model generating tokens does.
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_chaos::{Fault, MockUpstream, CANONICAL_ANSWER};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = MockUpstream::builder()
//!     .route("gpt-limited", Fault::status(429).retry_after_secs(2))
//!     .start()
//!     .await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//!
//! let ask = |model: &str| {
//!     http::Request::post(upstream.completions_url())
//!         .header("content-type", "application/json")
//!         .body(Full::from(format!(r#"{{"model":"{model}","messages":[]}}"#)))
//!         .unwrap()
//! };
//!
//! let res = client.request(ask("gpt-4o")).await?;
//! assert_eq!(res.status(), 200);
//! let body: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
//! assert_eq!(body["choices"][0]["message"]["content"], CANONICAL_ANSWER);
//!
//! let res = client.request(ask("gpt-limited")).await?;
//! assert_eq!(res.status(), 429);
//! assert_eq!(res.headers()["retry-after"], "2");
//!
//! let attempts = upstream.attempts();
//! assert_eq!(attempts.len(), 2);
//! assert_eq!((attempts[1].model.as_str(), attempts[1].fault), ("gpt-limited", "status"));
//! upstream.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod body;
mod prefill;
mod respond;
mod server;
#[cfg(feature = "tls")]
mod tls;

pub use prefill::{Prefill, PREFILL_REJECTED_MESSAGE};
#[cfg(feature = "tls")]
pub use tls::MockTls;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::canonical::Answer;
use crate::{Fault, FaultProfile};

use body::MockBody;

/// The path the mock serves (any path ending in [`COMPLETIONS_SUFFIX`] is served too).
pub const COMPLETIONS_PATH: &str = "/v1/chat/completions";

/// Requests whose path ends with this are chat completions.
pub const COMPLETIONS_SUFFIX: &str = "/chat/completions";

/// Default bound on a request body: larger bodies get a 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// One request the mock upstream received on a chat completions path, in arrival order.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The HTTP version of the request: `HTTP/2.0` when the client and the mock's TLS agreed on
    /// `h2`, `HTTP/1.1` otherwise.
    pub version: http::Version,
    /// The request path (`/v1/chat/completions`, `/openai/deployments/gpt-4o/chat/completions`).
    pub path: String,
    /// The query string, without the `?`.
    pub query: Option<String>,
    /// 1-based number of the request since the upstream started (also in the completion id,
    /// `chatcmpl-mock-{seq}`); requests rejected as bad (400, 413, a rejected prefill) get 0.
    pub seq: u64,
    /// When the request arrived, since the upstream started (`tokio::time`, so paused clocks apply).
    pub at: Duration,
    /// The requested model (empty when the body had none).
    pub model: String,
    /// Whether the request asked for a stream (`"stream": true`).
    pub stream: bool,
    /// The [`Fault::name`] applied, or `bad_request` / `payload_too_large` / `invalid_fault` /
    /// `prefill_rejected` (see [`Prefill::Reject`]) for requests the mock rejected itself.
    pub fault: &'static str,
    /// The status sent, or `None` when no response head was sent (`hang`, `reset`).
    pub status: Option<u16>,
    /// The request headers as received.
    pub headers: HeaderMap,
    /// The request body as received (bounded by the body limit; empty for a 413).
    pub body: Bytes,
}

type AttemptHook = Arc<dyn Fn(&Attempt) + Send + Sync>;

/// Builds and starts a [`MockUpstream`]; see the [module docs](self).
#[must_use = "call `.start().await` to run the upstream"]
pub struct MockUpstreamBuilder {
    profile: FaultProfile,
    listen: SocketAddr,
    max_body_bytes: usize,
    max_logged_attempts: Option<usize>,
    on_attempt: Option<AttemptHook>,
    prefill: Prefill,
    answer: Answer,
    answer_tokens: Option<usize>,
    token_interval: Duration,
    #[cfg(feature = "tls")]
    tls: Option<MockTls>,
}

impl fmt::Debug for MockUpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstreamBuilder")
            .field("profile", &self.profile)
            .field("listen", &self.listen)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_logged_attempts", &self.max_logged_attempts)
            .field("on_attempt", &self.on_attempt.is_some())
            .field("prefill", &self.prefill)
            .field("answer", &self.answer)
            .field("answer_tokens", &self.answer_tokens)
            .field("token_interval", &self.token_interval)
            .field("tls", &self.scheme())
            .finish()
    }
}

impl Default for MockUpstreamBuilder {
    fn default() -> Self {
        MockUpstreamBuilder {
            profile: FaultProfile::default(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_logged_attempts: None,
            on_attempt: None,
            prefill: Prefill::default(),
            answer: Answer::default(),
            answer_tokens: None,
            token_interval: Duration::ZERO,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl MockUpstreamBuilder {
    /// The fault for every request that no schedule window or model route matches (default:
    /// [`Fault::Healthy`]).
    pub fn default_fault(mut self, fault: Fault) -> Self {
        self.profile.default = fault;
        self
    }

    /// Requests for `model` (exact match) get `fault`, outside schedule windows.
    pub fn route(mut self, model: impl Into<String>, fault: Fault) -> Self {
        self.profile = self.profile.route(model, fault);
        self
    }

    /// Every request arriving in `[from, until)` since start gets `fault`, whatever its model.
    pub fn schedule(mut self, from: Duration, until: Duration, fault: Fault) -> Self {
        self.profile = self.profile.window(from, Some(until), fault);
        self
    }

    /// Every request arriving `from` since start or later gets `fault`.
    pub fn schedule_from(mut self, from: Duration, fault: Fault) -> Self {
        self.profile = self.profile.window(from, None, fault);
        self
    }

    /// Replace the schedule, routes and default with `profile` (for instance parsed from a
    /// config file's text).
    pub fn profile(mut self, profile: FaultProfile) -> Self {
        self.profile = profile;
        self
    }

    /// Listen on `addr` instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Answer request bodies larger than `bytes` with 413 (default 1 MiB).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Keep only the most recent `n` attempts in the log (default: all of them). The count of
    /// [`attempt_count`](MockUpstream::attempt_count) still includes every attempt. Long-running
    /// mocks (the binary, load tests) bound the log with this.
    pub fn max_logged_attempts(mut self, n: usize) -> Self {
        self.max_logged_attempts = Some(n);
        self
    }

    /// What to do with an assistant prefill: ignore it (the default, as OpenAI does), continue
    /// the answer text after it, or reject it with 400; see [`Prefill`].
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }

    /// Which text healthy answers carry (default [`Answer::Canonical`]); [`Answer::Alternate`]
    /// plays a provider that answers the same request differently.
    pub fn answer(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }

    /// Healthy answers carry `n` tokens instead of the answer's own count: its tokens repeated
    /// from the start as often as needed (a stream then has `n` content events, then the finish
    /// event and `[DONE]`; usage counts `n` completion tokens). Faults that count content events
    /// (`cut-after`, `stall-after`) count in this longer answer. `None` (the default) sends the
    /// answer as it is.
    ///
    /// ```
    /// use tower_llm_chaos::MockUpstream;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// // 500 content events per streamed answer, 20 ms apart.
    /// let upstream = MockUpstream::builder()
    ///     .answer_tokens(500)
    ///     .token_interval(std::time::Duration::from_millis(20))
    ///     .start()
    ///     .await?;
    /// # upstream.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn answer_tokens(mut self, n: usize) -> Self {
        self.answer_tokens = Some(n);
        self
    }

    /// Streamed answers wait `interval` (`tokio::time`) before each event after the first
    /// content event (the finish event included; `[DONE]` follows the finish event at once), as
    /// a model producing one token every `interval` does. Zero (the default) sends the events
    /// back to back. Non-streamed answers are not delayed.
    pub fn token_interval(mut self, interval: Duration) -> Self {
        self.token_interval = interval;
        self
    }

    /// Call `hook` with every attempt as it is logged (the binary prints them).
    pub fn on_attempt(mut self, hook: impl Fn(&Attempt) + Send + Sync + 'static) -> Self {
        self.on_attempt = Some(Arc::new(hook));
        self
    }

    /// Serve over TLS with `tls`'s certificate (HTTP/2 offered unless [`MockTls::http2`] turned
    /// it off): [`base_url`](MockUpstream::base_url) is then `https://127.0.0.1:PORT/v1`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: MockTls) -> Self {
        self.tls = Some(tls);
        self
    }

    fn scheme(&self) -> &'static str {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return "https";
        }
        "http"
    }

    /// Bind the listener and spawn the server onto the current tokio runtime.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when a fault is invalid (see
    /// [`Fault::validate`]) and with [`io::ErrorKind::Other`] outside a tokio runtime.
    pub async fn start(self) -> io::Result<MockUpstream> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("MockUpstream::start must run inside a tokio runtime"))?;
        self.profile
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let scheme = self.scheme();
        #[cfg(feature = "tls")]
        let tls = self.tls.as_ref().map(MockTls::acceptor).transpose()?;
        #[cfg(not(feature = "tls"))]
        let tls: Option<server::Acceptor> = None;
        let listener = tokio::net::TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let started = Instant::now();
        let (count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            started,
            faults: RwLock::new(Faults::new(
                self.profile,
                started,
                self.prefill,
                self.answer,
            )),
            log: Mutex::new(VecDeque::new()),
            max_logged_attempts: self.max_logged_attempts,
            on_attempt: self.on_attempt,
            count,
            seq: AtomicU64::new(0),
            open_connections: AtomicUsize::new(0),
            accepted_connections: AtomicUsize::new(0),
            max_body_bytes: self.max_body_bytes,
            answer_tokens: self.answer_tokens,
            token_interval: self.token_interval,
        });
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(server::serve(listener, shared.clone(), tls, stopped));
        tracing::debug!(%addr, "mock upstream started");
        Ok(MockUpstream {
            handle: MockHandle {
                shared,
                addr,
                scheme,
            },
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// The faults in force and how answers are made, changeable at run time.
struct Faults {
    schedule: Vec<(Duration, Option<Duration>, Arc<Fault>)>,
    routes: HashMap<String, Arc<Fault>>,
    default: Arc<Fault>,
    flap_epoch: Instant,
    prefill: Prefill,
    answer: Answer,
}

impl Faults {
    fn new(profile: FaultProfile, flap_epoch: Instant, prefill: Prefill, answer: Answer) -> Self {
        Faults {
            schedule: profile
                .schedule
                .into_iter()
                .map(|w| (w.from, w.until, Arc::new(w.fault)))
                .collect(),
            routes: profile
                .routes
                .into_iter()
                .map(|(model, fault)| (model, Arc::new(fault)))
                .collect(),
            default: Arc::new(profile.default),
            flap_epoch,
            prefill,
            answer,
        }
    }

    /// The rule's fault for request `seq` (see [`FaultProfile::pick_request`]).
    fn pick(&self, model: &str, elapsed: Duration, seq: u64) -> &Arc<Fault> {
        let window = self.schedule.iter().find(|(from, until, fault)| {
            elapsed >= *from && until.is_none_or(|until| elapsed < until) && !fault.misses(seq)
        });
        if let Some((_, _, fault)) = window {
            return fault;
        }
        match self.routes.get(model) {
            Some(fault) if !fault.misses(seq) => fault,
            _ => &self.default,
        }
    }
}

pub(crate) struct Shared {
    started: Instant,
    faults: RwLock<Faults>,
    log: Mutex<VecDeque<Attempt>>,
    max_logged_attempts: Option<usize>,
    on_attempt: Option<AttemptHook>,
    count: watch::Sender<usize>,
    seq: AtomicU64,
    open_connections: AtomicUsize,
    /// Every client connection accepted since the start (open or closed since).
    accepted_connections: AtomicUsize,
    max_body_bytes: usize,
    /// [`MockUpstreamBuilder::answer_tokens`].
    answer_tokens: Option<usize>,
    /// [`MockUpstreamBuilder::token_interval`].
    token_interval: Duration,
}

impl Shared {
    /// The fault for request `seq` for `model` arriving at `now`, and the time since the flap
    /// epoch.
    fn pick(&self, model: &str, now: Instant, seq: u64) -> (Arc<Fault>, Duration) {
        let faults = self.faults.read().unwrap_or_else(PoisonError::into_inner);
        let fault = faults
            .pick(model, now.saturating_duration_since(self.started), seq)
            .clone();
        (fault, now.saturating_duration_since(faults.flap_epoch))
    }

    /// The prefill behaviour and answer text in force.
    fn answering(&self) -> (Prefill, Answer) {
        let faults = self.faults.read().unwrap_or_else(PoisonError::into_inner);
        (faults.prefill, faults.answer)
    }

    fn update(&self, f: impl FnOnce(&mut Faults)) {
        let mut faults = self.faults.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut faults);
    }

    /// Whether anyone will look at attempt details (so they are worth copying).
    fn wants_attempts(&self) -> bool {
        self.on_attempt.is_some() || self.max_logged_attempts != Some(0)
    }

    fn record(&self, attempt: Attempt) {
        tracing::debug!(
            seq = attempt.seq,
            model = %attempt.model,
            stream = attempt.stream,
            fault = attempt.fault,
            status = attempt.status,
            "mock upstream attempt"
        );
        if let Some(hook) = &self.on_attempt {
            hook(&attempt);
        }
        if self.max_logged_attempts != Some(0) {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(max) = self.max_logged_attempts {
                while log.len() >= max {
                    log.pop_front();
                }
            }
            log.push_back(attempt);
        }
        self.count.send_modify(|count| *count += 1);
    }
}

/// A cloneable handle to a running [`MockUpstream`]: read its log and change its faults from
/// anywhere. It does not keep the server running.
#[derive(Clone)]
pub struct MockHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    scheme: &'static str,
}

impl fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHandle")
            .field("addr", &self.addr)
            .field("attempts", &self.attempt_count())
            .finish()
    }
}

impl MockHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1` (`https://` when served over TLS): an OpenAI client's base URL.
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", self.scheme, self.addr)
    }

    /// `http://127.0.0.1:PORT/v1/chat/completions` (`https://` when served over TLS).
    pub fn completions_url(&self) -> String {
        format!("{}://{}{COMPLETIONS_PATH}", self.scheme, self.addr)
    }

    /// Every logged attempt, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        let log = self
            .shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    /// How many attempts arrived since start (or since [`clear_attempts`](Self::clear_attempts)).
    pub fn attempt_count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Resolves once at least `n` attempts arrived (counting from the last
    /// [`clear_attempts`](Self::clear_attempts)).
    pub async fn wait_for_attempts(&self, n: usize) {
        let mut count = self.shared.count.subscribe();
        // The sender lives in `shared`, which `self` keeps alive: this cannot fail.
        let _ = count.wait_for(|count| *count >= n).await;
    }

    /// Empty the log and reset the count to zero.
    pub fn clear_attempts(&self) {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shared.count.send_replace(0);
    }

    /// Replace the default fault from now on.
    pub fn set_default_fault(&self, fault: Fault) {
        self.shared.update(|f| f.default = Arc::new(fault));
    }

    /// Route requests for `model` to `fault` from now on (replacing an earlier route).
    pub fn route_model(&self, model: impl Into<String>, fault: Fault) {
        let model = model.into();
        self.shared.update(|f| {
            f.routes.insert(model, Arc::new(fault));
        });
    }

    /// Remove the route for `model`, if any.
    pub fn unroute_model(&self, model: &str) {
        self.shared.update(|f| {
            f.routes.remove(model);
        });
    }

    /// Add a schedule window `[from, until)` since start (after the existing ones).
    pub fn add_window(&self, from: Duration, until: Option<Duration>, fault: Fault) {
        self.shared
            .update(|f| f.schedule.push((from, until, Arc::new(fault))));
    }

    /// Replace the schedule, routes and default with `profile` (the flap epoch, the prefill
    /// behaviour and the answer text are kept).
    pub fn set_profile(&self, profile: FaultProfile) {
        self.shared
            .update(|f| *f = Faults::new(profile, f.flap_epoch, f.prefill, f.answer));
    }

    /// Continue, ignore or reject assistant prefills from now on; see [`Prefill`].
    pub fn set_prefill(&self, prefill: Prefill) {
        self.shared.update(|f| f.prefill = prefill);
    }

    /// Answer with `answer`'s text from now on.
    pub fn set_answer(&self, answer: Answer) {
        self.shared.update(|f| f.answer = answer);
    }

    /// Restart the down period of every [`Fault::Flapping`] from now.
    pub fn reset_flap(&self) {
        self.shared.update(|f| f.flap_epoch = Instant::now());
    }

    /// How long the upstream has been running (`tokio::time`).
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// How many client connections are open right now (hung and stalled ones included).
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Acquire)
    }

    /// How many client connections were accepted since the upstream started, open or closed
    /// since: with [`open_connections`](Self::open_connections), whether a client reused its
    /// connections or opened new ones (each a TCP and, over TLS, a handshake).
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted_connections.load(Ordering::Acquire)
    }
}

impl AsRef<MockHandle> for MockHandle {
    fn as_ref(&self) -> &MockHandle {
        self
    }
}

/// A running mock OpenAI-compatible upstream; see the [module docs](self).
///
/// Dropping it stops the server (its open connections are closed); [`shutdown`](Self::shutdown)
/// does the same and waits for it. Every method of [`MockHandle`] is available here too.
pub struct MockUpstream {
    handle: MockHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MockUpstream").field(&self.handle).finish()
    }
}

impl MockUpstream {
    /// A builder: healthy for every model unless configured otherwise.
    pub fn builder() -> MockUpstreamBuilder {
        MockUpstreamBuilder::default()
    }

    /// Start a mock upstream running `profile` on `127.0.0.1:0`.
    pub async fn start(profile: FaultProfile) -> io::Result<MockUpstream> {
        MockUpstream::builder().profile(profile).start().await
    }

    /// A cloneable handle for reading the log and changing faults.
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// `http://127.0.0.1:PORT/v1` (`https://` when served over TLS): an OpenAI client's base URL.
    pub fn base_url(&self) -> String {
        self.handle.base_url()
    }

    /// `http://127.0.0.1:PORT/v1/chat/completions`.
    pub fn completions_url(&self) -> String {
        self.handle.completions_url()
    }

    /// Every logged attempt, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.handle.attempts()
    }

    /// How many attempts arrived since start (or since [`clear_attempts`](Self::clear_attempts)).
    pub fn attempt_count(&self) -> usize {
        self.handle.attempt_count()
    }

    /// Resolves once at least `n` attempts arrived.
    pub async fn wait_for_attempts(&self, n: usize) {
        self.handle.wait_for_attempts(n).await
    }

    /// Empty the log and reset the count to zero.
    pub fn clear_attempts(&self) {
        self.handle.clear_attempts()
    }

    /// Replace the default fault from now on.
    pub fn set_default_fault(&self, fault: Fault) {
        self.handle.set_default_fault(fault)
    }

    /// Route requests for `model` to `fault` from now on.
    pub fn route_model(&self, model: impl Into<String>, fault: Fault) {
        self.handle.route_model(model, fault)
    }

    /// Remove the route for `model`, if any.
    pub fn unroute_model(&self, model: &str) {
        self.handle.unroute_model(model)
    }

    /// Add a schedule window `[from, until)` since start.
    pub fn add_window(&self, from: Duration, until: Option<Duration>, fault: Fault) {
        self.handle.add_window(from, until, fault)
    }

    /// Replace the schedule, routes and default with `profile`.
    pub fn set_profile(&self, profile: FaultProfile) {
        self.handle.set_profile(profile)
    }

    /// Continue, ignore or reject assistant prefills from now on; see [`Prefill`].
    pub fn set_prefill(&self, prefill: Prefill) {
        self.handle.set_prefill(prefill)
    }

    /// Answer with `answer`'s text from now on.
    pub fn set_answer(&self, answer: Answer) {
        self.handle.set_answer(answer)
    }

    /// Restart the down period of every [`Fault::Flapping`] from now.
    pub fn reset_flap(&self) {
        self.handle.reset_flap()
    }

    /// How long the upstream has been running.
    pub fn elapsed(&self) -> Duration {
        self.handle.elapsed()
    }

    /// How many client connections are open right now.
    pub fn open_connections(&self) -> usize {
        self.handle.open_connections()
    }

    /// How many client connections were accepted since the upstream started (see
    /// [`MockHandle::accepted_connections`]).
    pub fn accepted_connections(&self) -> usize {
        self.handle.accepted_connections()
    }

    /// Stop accepting, close every open connection and wait for the server task to end.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl AsRef<MockHandle> for MockUpstream {
    fn as_ref(&self) -> &MockHandle {
        &self.handle
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Dropping the sender tells the server task to stop; it closes its connections itself.
        self.stop.take();
    }
}
