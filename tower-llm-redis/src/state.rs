//! The connection to Redis every shared component of one process uses: a connection manager, a
//! key prefix, a timeout, a status, and the background tasks that subscribe and publish.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_redis::{RedisConfig, SharedState, SharedStateStatus};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Connecting never fails because Redis is down: the state starts `connecting` and every
//! // decision stays local until Redis answers.
//! let config = RedisConfig::new("redis://127.0.0.1:1/0")
//!     .key_prefix("my-app:")
//!     .timeout(Duration::from_millis(20));
//! let shared = SharedState::connect(config).unwrap();
//! assert_eq!(shared.key_prefix(), "my-app:");
//! assert_eq!(shared.timeout(), Duration::from_millis(20));
//! assert_ne!(shared.status(), SharedStateStatus::Connected);
//! assert!(shared.connection().is_none());
//! # }
//! ```
//!
//! # What runs in the background
//!
//! [`SharedState::connect`] spawns two tasks on the current tokio runtime, both ended when the
//! last clone of the handle is dropped:
//! - the **subscriber** holds a pub/sub connection on `<prefix>events`, applies what other
//!   replicas publish to the local state, and on every (re)connection re-reads the keys of the
//!   registered components and republishes what this process knows (so a Redis that restarted
//!   empty learns the current benches again);
//! - the **writer** executes what the components queue on a bounded channel (publish a
//!   transition, set or delete its key, take or release a probe lease), each operation cut at
//!   the timeout. Nothing on a request's path waits for it: a full queue drops the operation
//!   (counted in `tower_llm_redis_dropped_total`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_llm_core::ConfigError;

use crate::metrics as m;

/// The default [`RedisConfig::timeout`]: how long any decision waits for Redis before it is
/// taken on local state.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);
/// The default [`RedisConfig::key_prefix`].
pub const DEFAULT_KEY_PREFIX: &str = "tower-llm:";
/// The default [`RedisConfig::probe_lease`].
pub const DEFAULT_PROBE_LEASE: Duration = Duration::from_secs(15);
/// How many operations wait for the writer before new ones are dropped.
const QUEUE: usize = 1024;
/// The longest wait between two reconnection attempts of the subscriber.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where and how to reach Redis. Validated by [`SharedState::connect`].
#[derive(Clone)]
pub struct RedisConfig {
    url: String,
    key_prefix: String,
    timeout: Duration,
    probe_lease: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("probe_lease", &self.probe_lease)
            .finish()
    }
}

impl RedisConfig {
    /// Redis at `url` (`redis://[user:password@]host:port/db`), with the default prefix
    /// (`tower-llm:`), timeout (20 ms) and probe lease (15 s).
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            probe_lease: DEFAULT_PROBE_LEASE,
        }
    }

    /// The prefix of every key and channel (default `tower-llm:`): replicas that share state
    /// use the same one; unrelated deployments on one Redis use different ones.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long a decision waits for Redis before it is taken on local state (default 20 ms);
    /// also the timeout of every background operation.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the replica that won a probe lease has to send the probe and share its result
    /// before another replica may take the lease (default 15 s). The lease is released as soon
    /// as the result is published.
    pub fn probe_lease(mut self, lease: Duration) -> Self {
        self.probe_lease = lease;
        self
    }

    /// Check the settings without connecting: the URL parses, the timeout and lease are
    /// positive, the prefix has no whitespace. The error names the setting (`redis_url`,
    /// `key_prefix`, `timeout_ms`, `probe_lease`) and never shows a password.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client().map(drop)
    }

    fn client(&self) -> Result<redis::Client, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout_ms", "must be > 0"));
        }
        if self.probe_lease < Duration::from_millis(1) {
            return Err(ConfigError::new("probe_lease", "must be at least 1 ms"));
        }
        if self.key_prefix.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                "key_prefix",
                format!("{:?} contains whitespace", self.key_prefix),
            ));
        }
        redis::Client::open(self.url.as_str()).map_err(|e| {
            ConfigError::new(
                "redis_url",
                format!(
                    "{} is not a Redis URL ({}); expected redis://host:port/db",
                    redact(&self.url),
                    e.kind_description()
                ),
            )
        })
    }
}

trait KindDescription {
    fn kind_description(&self) -> &'static str;
}

impl KindDescription for redis::RedisError {
    fn kind_description(&self) -> &'static str {
        // The error's text may quote the URL (and its password): only its category is shown.
        match self.kind() {
            redis::ErrorKind::InvalidClientConfig => "invalid client configuration",
            _ => "not understood",
        }
    }
}

/// `redis://user:password@host` → `redis://***@host`: what logs, errors and health may show.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

/// Whether this process shares state through Redis right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedStateStatus {
    /// Not connected yet: decisions are local.
    Connecting,
    /// Subscribed, and the last operation succeeded: state is shared.
    Connected,
    /// Redis failed or is slower than the timeout: decisions are local until it answers again.
    Down,
}

impl SharedStateStatus {
    /// A stable `snake_case` name (`/health`, logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            SharedStateStatus::Connecting => "connecting",
            SharedStateStatus::Connected => "connected",
            SharedStateStatus::Down => "down",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => SharedStateStatus::Connected,
            2 => SharedStateStatus::Down,
            _ => SharedStateStatus::Connecting,
        }
    }
}

impl fmt::Display for SharedStateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `/health` shows of the shared state (no password: the URL is [redacted](redact)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SharedStateHealth {
    /// Whether state is shared right now.
    pub status: SharedStateStatus,
    /// The Redis URL, password redacted.
    pub redis_url: String,
    /// The key prefix.
    pub key_prefix: String,
    /// How many decisions were taken on local state because Redis failed or was slow.
    pub local_decisions: u64,
    /// How many operations failed or timed out.
    pub errors: u64,
}

/// The handle on Redis shared by every component of one process (cheap to clone).
///
/// Components built from it (the fallback chain's cooldowns, the breakers, the
/// rate limiter) use its [`connection`](Self::connection), [`key`](Self::key) scheme and
/// [`timeout`](Self::timeout), and feed its [`status`](Self::status) with
/// [`report`](Self::report).
#[derive(Clone)]
pub struct SharedState {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for SharedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedState")
            .field("redis_url", &self.inner.redacted_url)
            .field("key_prefix", &self.inner.prefix)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    client: redis::Client,
    pub(crate) prefix: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) lease: Duration,
    /// This process's id in published events (its own events come back through the
    /// subscription and are ignored).
    pub(crate) origin: u64,
    redacted_url: String,
    status: AtomicU8,
    local_decisions: AtomicU64,
    errors: AtomicU64,
    manager: Mutex<Option<ConnectionManager>>,
    components: Mutex<Vec<Weak<dyn Component>>>,
    ops: mpsc::Sender<Op>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedState {
    /// Validate `config` and start sharing: the background tasks connect (and reconnect)
    /// on their own, so this fails only for a bad configuration, never because Redis is down.
    /// Must be called within a tokio runtime.
    pub fn connect(config: RedisConfig) -> Result<SharedState, ConfigError> {
        let client = config.client()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "shared_state",
                "SharedState::connect must be called within a tokio runtime",
            )
        })?;
        let (ops, rx) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            client,
            prefix: Arc::from(config.key_prefix),
            timeout: config.timeout,
            lease: config.probe_lease,
            origin: origin_id(),
            redacted_url: redact(&config.url),
            status: AtomicU8::new(0),
            local_decisions: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            manager: Mutex::new(None),
            components: Mutex::new(Vec::new()),
            ops,
            tasks: Mutex::new(Vec::new()),
        });
        metrics::gauge!(m::UP).set(0.0);
        let subscriber = runtime.spawn(subscribe(Arc::downgrade(&inner)));
        let writer = runtime.spawn(write(Arc::downgrade(&inner), rx));
        lock(&inner.tasks).extend([subscriber, writer]);
        Ok(SharedState { inner })
    }

    /// The connection manager (it reconnects by itself), once a first connection succeeded;
    /// `None` before. Cut each command at [`timeout`](Self::timeout) and [`report`](Self::report)
    /// its outcome.
    pub fn connection(&self) -> Option<ConnectionManager> {
        self.inner.connection()
    }

    /// The prefix of every key and channel.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `<prefix><parts joined by ':'>`: the one key scheme of every component.
    pub fn key(&self, parts: &[&str]) -> String {
        key(&self.inner.prefix, parts)
    }

    /// How long a decision waits for Redis before it is taken on local state.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Whether state is shared right now.
    pub fn status(&self) -> SharedStateStatus {
        self.inner.status()
    }

    /// The status with its counters, for `/health`.
    pub fn health(&self) -> SharedStateHealth {
        SharedStateHealth {
            status: self.status(),
            redis_url: self.inner.redacted_url.clone(),
            key_prefix: self.inner.prefix.to_string(),
            local_decisions: self.inner.local_decisions.load(Ordering::Relaxed),
            errors: self.inner.errors.load(Ordering::Relaxed),
        }
    }

    /// Feed the status with the outcome of one Redis operation: an error or a timeout turns it
    /// `down` (decisions local) until an operation succeeds again.
    pub fn report(&self, ok: bool) {
        self.inner.report(ok);
    }

    /// Count a decision taken on local state because Redis failed or was slow.
    pub fn count_local_decision(&self, reason: &'static str) {
        self.inner.local_decision(reason);
    }
}

impl Inner {
    fn connection(&self) -> Option<ConnectionManager> {
        lock(&self.manager).clone()
    }

    pub(crate) fn status(&self) -> SharedStateStatus {
        SharedStateStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    pub(crate) fn is_up(&self) -> bool {
        self.status() == SharedStateStatus::Connected
    }

    fn set_status(&self, status: SharedStateStatus) {
        let old = self.status.swap(status as u8, Ordering::AcqRel);
        if old != status as u8 {
            metrics::gauge!(m::UP).set(f64::from(u8::from(status == SharedStateStatus::Connected)));
            match status {
                SharedStateStatus::Connected => {
                    tracing::info!(redis = %self.redacted_url, "shared state: connected to Redis")
                }
                _ => tracing::warn!(
                    redis = %self.redacted_url,
                    "shared state: Redis unavailable, decisions are local"
                ),
            }
        }
    }

    pub(crate) fn report(&self, ok: bool) {
        if ok {
            // Only the subscriber turns `connecting` into `connected` (state is shared only
            // while subscribed); a success clears a `down` an operation caused.
            let _ = self.status.compare_exchange(
                SharedStateStatus::Down as u8,
                SharedStateStatus::Connected as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if self.is_up() {
                metrics::gauge!(m::UP).set(1.0);
            }
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::ERRORS_TOTAL).increment(1);
            if self.is_up() {
                self.set_status(SharedStateStatus::Down);
            }
        }
    }

    pub(crate) fn local_decision(&self, reason: &'static str) {
        self.local_decisions.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::LOCAL_DECISIONS_TOTAL, m::REASON => reason).increment(1);
    }

    /// Queue an operation for the writer; dropped (and counted) when the queue is full.
    pub(crate) fn queue(&self, op: Op) -> bool {
        match self.ops.try_send(op) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!(m::DROPPED_TOTAL).increment(1);
                false
            }
        }
    }

    pub(crate) fn register(&self, component: Weak<dyn Component>) {
        let mut components = lock(&self.components);
        components.retain(|c| c.strong_count() > 0);
        components.push(component);
    }

    fn components(&self) -> Vec<Arc<dyn Component>> {
        lock(&self.components)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    pub(crate) fn channel(&self) -> String {
        key(&self.prefix, &["events"])
    }
}

pub(crate) fn key(prefix: &str, parts: &[&str]) -> String {
    let mut key =
        String::with_capacity(prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    key.push_str(prefix);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(':');
        }
        key.push_str(part);
    }
    key
}

/// Milliseconds since the Unix epoch: how deadlines cross processes (see the crate docs on
/// clock skew).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn origin_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), unix_ms_now()))
}

/// One event on the events channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The publishing process.
    pub(crate) o: u64,
    /// The component class (`cooldown`, `breaker`).
    pub(crate) c: String,
    /// The component's scope (a chain, a set of breakers).
    pub(crate) s: String,
    /// The target or breaker name.
    pub(crate) n: String,
    /// The event, in the component's own encoding.
    pub(crate) e: String,
}

/// A user of the shared state: applies remote events and takes part in resynchronisation.
pub(crate) trait Component: Send + Sync {
    /// The class and scope this component's events carry.
    fn address(&self) -> (&'static str, &str);
    /// Another replica published `event` for `name`.
    fn on_event(&self, name: &str, event: &str);
    /// The keys of the state this component may find in Redis, by name.
    fn keys(&self) -> Vec<(String, String)>;
    /// The value of `name`'s key, read at (re)connection.
    fn on_stored(&self, name: &str, value: &str);
    /// What this process knows and must republish after a (re)connection.
    fn republish(&self);
}

/// What the writer does.
pub(crate) enum Op {
    /// Publish an event; then set its key (with a TTL in ms, or none), or delete it; then
    /// release the lease of the same name if this process holds it.
    Publish {
        envelope: Envelope,
        key: String,
        store: Store,
        lease: Option<String>,
    },
    /// Read one key (a component attached after the connection) and hand its value over.
    Read {
        key: String,
        component: Weak<dyn Component>,
        name: String,
    },
    /// Take a probe lease (`SET NX PX`) and tell the gate who won.
    Lease {
        key: String,
        gate: Weak<LeaseGate>,
        name: String,
    },
}

/// What a published event does to its key.
pub(crate) enum Store {
    /// `SET key value PX ttl` (no `PX` when `None`).
    Set(String, Option<u64>),
    /// `DEL key`.
    Delete,
}

async fn timed<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Option<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e.kind_description(), "shared state: Redis operation failed");
            None
        }
        Err(_) => None,
    }
}

/// The writer task: executes queued operations, each cut at the timeout.
async fn write(inner: Weak<Inner>, mut rx: mpsc::Receiver<Op>) {
    while let Some(op) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Some(mut conn) = inner.connection() else {
            // Not connected yet: the state is republished on connection.
            if let Op::Lease { gate, name, .. } = op {
                if let Some(gate) = gate.upgrade() {
                    gate.settle(&name, None, inner.lease);
                }
            }
            continue;
        };
        let timeout = inner.timeout;
        match op {
            Op::Publish {
                envelope,
                key,
                store,
                lease,
            } => {
                let Ok(payload) = serde_json::to_string(&envelope) else {
                    continue;
                };
                let mut pipe = redis::pipe();
                match store {
                    Store::Set(value, Some(ttl)) => {
                        pipe.cmd("SET")
                            .arg(&key)
                            .arg(value)
                            .arg("PX")
                            .arg(ttl.max(1))
                            .ignore();
                    }
                    Store::Set(value, None) => {
                        pipe.cmd("SET").arg(&key).arg(value).ignore();
                    }
                    Store::Delete => {
                        pipe.cmd("DEL").arg(&key).ignore();
                    }
                }
                if let Some(lease) = lease {
                    pipe.cmd("EVAL")
                        .arg(RELEASE_LEASE)
                        .arg(1)
                        .arg(lease)
                        .arg(inner.origin)
                        .ignore();
                }
                pipe.cmd("PUBLISH")
                    .arg(inner.channel())
                    .arg(payload)
                    .ignore();
                let ok = timed(timeout, pipe.query_async::<()>(&mut conn))
                    .await
                    .is_some();
                inner.report(ok);
            }
            Op::Read {
                key,
                component,
                name,
            } => {
                let value: Option<Option<String>> =
                    timed(timeout, redis::cmd("GET").arg(&key).query_async(&mut conn)).await;
                inner.report(value.is_some());
                if let (Some(Some(value)), Some(component)) = (value, component.upgrade()) {
                    component.on_stored(&name, &value);
                }
            }
            Op::Lease { key, gate, name } => {
                let lease_ms = u64::try_from(inner.lease.as_millis()).unwrap_or(u64::MAX);
                let won: Option<Option<String>> = timed(
                    timeout,
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(inner.origin)
                        .arg("NX")
                        .arg("PX")
                        .arg(lease_ms)
                        .query_async(&mut conn),
                )
                .await;
                inner.report(won.is_some());
                if let Some(gate) = gate.upgrade() {
                    gate.settle(&name, won.map(|v| v.is_some()), inner.lease);
                }
            }
        }
    }
}

/// Deletes a lease only when this process holds it.
const RELEASE_LEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// The subscriber task: connects, subscribes, resynchronises, applies events; on any failure
/// marks the state down and starts over with a growing pause.
async fn subscribe(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let timeout = inner.timeout.max(Duration::from_millis(250));
        let connected = async {
            // A fresh manager at every (re)connection: the previous one finds out that Redis
            // came back only after a command of its own failed, and the resynchronisation
            // below must not be that command.
            {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(200);
                let manager = timed(
                    timeout,
                    ConnectionManager::new_with_config(inner.client.clone(), config),
                )
                .await?;
                *lock(&inner.manager) = Some(manager);
            }
            let mut pubsub = timed(timeout, inner.client.get_async_pubsub()).await?;
            timed(timeout, pubsub.subscribe(inner.channel())).await?;
            Some(pubsub)
        }
        .await;
        let Some(pubsub) = connected else {
            if inner.status() == SharedStateStatus::Connected {
                inner.set_status(SharedStateStatus::Down);
            }
            drop(inner);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = Duration::from_millis(50);
        resync(&inner).await;
        inner.set_status(SharedStateStatus::Connected);
        let channel_inner = Arc::downgrade(&inner);
        drop(inner);
        let mut messages = pubsub.into_on_message();
        // The stream ends when the connection breaks.
        while let Some(msg) = messages.next().await {
            let Some(inner) = channel_inner.upgrade() else {
                return;
            };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Ok(envelope) = serde_json::from_str::<Envelope>(&payload) else {
                continue;
            };
            if envelope.o == inner.origin {
                continue;
            }
            for component in inner.components() {
                let (class, scope) = component.address();
                if class == envelope.c && scope == envelope.s {
                    component.on_event(&envelope.n, &envelope.e);
                }
            }
        }
        if let Some(inner) = weak.upgrade() {
            inner.set_status(SharedStateStatus::Down);
        }
    }
}

/// After a (re)connection: read every registered component's keys and apply them, then
/// republish what this process knows.
async fn resync(inner: &Inner) {
    let Some(mut conn) = inner.connection() else {
        return;
    };
    for component in inner.components() {
        let keys = component.keys();
        if !keys.is_empty() {
            let names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
            let cmd = redis::cmd("MGET")
                .arg(keys.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>())
                .clone();
            let values: Option<Vec<Option<String>>> = timed(
                inner.timeout.max(Duration::from_millis(250)),
                cmd.query_async(&mut conn),
            )
            .await;
            inner.report(values.is_some());
            for (name, value) in names.iter().zip(values.unwrap_or_default()) {
                if let Some(value) = value {
                    component.on_stored(name, &value);
                }
            }
        }
        component.republish();
    }
}

/// Who may send the probe of each name, decided by leases in Redis (see
/// [`LeaseGate::may_probe`]).
#[derive(Debug)]
pub(crate) struct LeaseGate {
    leases: Mutex<HashMap<String, Lease>>,
}

#[derive(Clone, Copy, Debug)]
enum Lease {
    /// Asked Redis at this instant; no answer yet.
    Pending(Instant),
    /// This process holds the lease until then and has not used it yet.
    Mine(Instant),
    /// Another process holds it (at most) until then.
    Theirs(Instant),
    /// This process holds the lease (until then) and its probe is under way.
    Probing(Instant),
}

impl LeaseGate {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(LeaseGate {
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this process may send the probe of `name` now: `true` when it holds the lease,
    /// or when Redis is unavailable or did not answer within the timeout (the local decision);
    /// `false` while another process holds it or while asking Redis (at most the timeout).
    pub(crate) fn may_probe(
        self: &Arc<Self>,
        inner: &Inner,
        name: &str,
        lease_key: impl FnOnce() -> String,
    ) -> bool {
        if !inner.is_up() {
            inner.local_decision("redis_down");
            return true;
        }
        let now = Instant::now();
        let mut leases = lock(&self.leases);
        match leases.get(name).copied() {
            Some(Lease::Mine(until)) if now < until => {
                leases.insert(name.to_owned(), Lease::Probing(until));
                return true;
            }
            Some(Lease::Theirs(until)) if now < until => return false,
            Some(Lease::Pending(since)) if now < since + inner.timeout => return false,
            Some(Lease::Pending(_)) => {
                // Redis did not answer in time: decide locally.
                leases.remove(name);
                drop(leases);
                inner.local_decision("timeout");
                return true;
            }
            Some(Lease::Probing(until)) if now < until => {
                // Our probe ended without a verdict (dropped): another probe of ours may go.
                return true;
            }
            _ => {}
        }
        leases.insert(name.to_owned(), Lease::Pending(now));
        drop(leases);
        let queued = inner.queue(Op::Lease {
            key: lease_key(),
            gate: Arc::downgrade(self),
            name: name.to_owned(),
        });
        if !queued {
            lock(&self.leases).remove(name);
            inner.local_decision("queue_full");
            return true;
        }
        false
    }

    /// Redis answered a lease request: `Some(true)` won, `Some(false)` held by another
    /// process, `None` failed (the next request decides locally).
    pub(crate) fn settle(&self, name: &str, won: Option<bool>, lease: Duration) {
        let mut leases = lock(&self.leases);
        if !matches!(leases.get(name), Some(Lease::Pending(_))) {
            return;
        }
        let until = Instant::now() + lease;
        match won {
            Some(true) => leases.insert(name.to_owned(), Lease::Mine(until)),
            Some(false) => leases.insert(name.to_owned(), Lease::Theirs(until)),
            None => leases.remove(name),
        };
    }

    /// The probe's result of `name` is known (published by this process or another): the
    /// next lifted cooldown starts a new lease round. Returns whether this process held it.
    pub(crate) fn clear(&self, name: &str) -> bool {
        matches!(
            lock(&self.leases).remove(name),
            Some(Lease::Mine(_) | Lease::Probing(_))
        )
    }
}
