//! A request-rate and token limiter shared by replicas through Redis: [`RedisLimiter`], the
//! bulkhead's [`SharedLimiter`] on Redis.
//!
//! Three replicas each configured with `600 requests/minute` admit 600 a minute between them
//! rather than 1,800: every admission runs one Lua script on Redis that applies the partition's
//! GCRA (the same algorithm as the local limiter) to a state all replicas share.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_llm_bulkhead::{BulkheadLayer, JsonBodyEstimate, RateLimit, TokenLimit};
//! use tower_llm_redis::limiter::RedisLimiter;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/0")?;
//! let connection = redis::aio::ConnectionManager::new(client).await?;
//! let limiter = RedisLimiter::builder(connection)
//!     .key_prefix("my-app:")
//!     .timeout(Duration::from_millis(20)) // then the local limits decide
//!     .build();
//! let layer = BulkheadLayer::builder()
//!     .name("openai/gpt-4o-mini") // the same name in every replica: it names the shared state
//!     .rate_limit(RateLimit::per_minute(600).burst(30))
//!     .token_limit(TokenLimit::per_minute(200_000), JsonBodyEstimate::new())
//!     .shared_limiter(limiter.clone())
//!     .build()?;
//! # let _ = layer;
//! assert!(limiter.is_shared());
//! # Ok(())
//! # }
//! ```
//!
//! # One round trip per admission
//!
//! Each admission is one `EVALSHA` (the script is loaded once, and again after a Redis restart:
//! then that admission takes two round trips). The script reads Redis's own clock (`TIME`), so
//! the replicas' clocks do not matter, and decides the rate and the token budget together: a call
//! the token budget turns away spends no request-rate permit. The alternative, leasing small
//! batches of permits to each replica, saves round trips but lets every replica hold a batch the
//! others cannot use (over-admission of up to `replicas × batch` after an idle period, and
//! unfairness under load); with loopback round trips of tens of microseconds (see
//! `BENCHMARKS.md`, "Shared rate and token limits") the exact decision costs less than an LLM
//! call's jitter.
//!
//! **Staleness and over-admission bound.** While Redis answers, the shared state is exact: every
//! admission is decided on the current state, atomically, so across all replicas the limiter
//! admits at most what one local limiter would (`burst + requests × elapsed / period`; 630 in a
//! minute for 600/minute with a burst of 30). The only extra admissions come from the fallback
//! below.
//!
//! # When Redis is down or slow
//!
//! An admission waits at most [`timeout`](RedisLimiterBuilder::timeout) (default 20 ms) for its
//! script; on an error or a timeout it answers [`SharedUnavailable`] and the bulkhead decides with
//! its local limits: nothing fails because Redis failed. The limiter then stops asking Redis for
//! [`recheck`](RedisLimiterBuilder::recheck) (default 250 ms: later admissions go local at once,
//! without paying the timeout), after which one admission probes Redis; the first answer makes the
//! limiter shared again. Each local decision counts in
//! [`LOCAL_ADMISSIONS_TOTAL`] and [`SHARED`] is 0 while local.
//!
//! **What the local fallback admits: each replica's own full limit** — the bulkhead's own
//! `rate_limit` and `token_limit`, the quota the shared state applies to all replicas together. A
//! replica cut from Redis cannot know how many peers are still serving (a share such as
//! `limit / 3` would throttle a lone survivor to a third of the quota); the fallback keeps
//! serving at the configured limit and the provider's own limits (answered with 429s, which the
//! fallback chain honours) remain the backstop. While Redis is down, `n` replicas may therefore
//! admit up to `n ×` the limit (plus each local limiter's burst). To cap that, configure a
//! smaller local limit per replica and share a larger one (see
//! [`RedisLimiterBuilder::quota_scale`]).
//!
//! Corrections of the token budget ([`SharedLimiter::adjust_tokens`]) are sent in the background
//! and dropped while Redis is down; an admission cancelled after its script ran keeps its charge
//! (the limiter errs on the side of sending less). A Redis that restarts empty starts from a full
//! budget.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::time::Instant;

use crate::state::SharedState;
use crate::{DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT};
use tower_llm_bulkhead::shared::{
    SharedAdmission, SharedAsk, SharedLimiter, SharedQuota, SharedUnavailable, SharedVerdict,
};
use tower_llm_bulkhead::LimitKind;

/// Gauge: 1 while the limiter's decisions are shared through Redis, 0 while they are local.
pub const SHARED: &str = "tower_llm_redis_limiter_shared";
/// Counter, label `reason` (`error`, `timeout`, `redis_down`): admissions decided by the local
/// limits because Redis failed (`error`), was slower than the timeout (`timeout`), or had failed
/// within the last recheck interval (`redis_down`).
pub const LOCAL_ADMISSIONS_TOTAL: &str = "tower_llm_redis_limiter_local_admissions_total";
/// Every metric of this module.
pub const ALL: [&str; 2] = [SHARED, LOCAL_ADMISSIONS_TOTAL];

/// The default [`RedisLimiterBuilder::recheck`].
pub const DEFAULT_RECHECK: Duration = Duration::from_millis(250);

/// GCRA on Redis's clock, in microseconds. KEYS: the rate key, the token key. ARGV: the rate's
/// interval and burst (interval 0: no rate limit), the token capacity and period (capacity 0: no
/// token limit), the tokens asked. Answers {1, 0} admitted, {2, wait} rate, {3, wait} tokens,
/// {4, 0} more tokens than the whole budget. Both states are written only when both allow.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local rate_tat = nil
if interval > 0 then
  local window = interval * tonumber(ARGV[2])
  local tat = tonumber(redis.call('GET', KEYS[1])) or 0
  rate_tat = math.max(tat, now) + interval
  if rate_tat - now > window then
    return {2, math.ceil(rate_tat - now - window)}
  end
end
local capacity = tonumber(ARGV[3])
if capacity > 0 then
  local asked = tonumber(ARGV[5])
  if asked > capacity then
    return {4, 0}
  end
  local period = tonumber(ARGV[4])
  local tat = tonumber(redis.call('GET', KEYS[2])) or 0
  local next_tat = math.max(tat, now) + asked * period / capacity
  if next_tat - now > period then
    return {3, math.ceil(next_tat - now - period)}
  end
  redis.call('SET', KEYS[2], string.format('%.17g', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
if rate_tat then
  redis.call('SET', KEYS[1], string.format('%.17g', rate_tat), 'PX', math.ceil((rate_tat - now) / 1000) + 1)
end
return {1, 0}
";

/// Moves the token budget's GCRA state by ARGV[1] tokens (negative: refund, never beyond a full
/// budget), with ARGV[2] = capacity and ARGV[3] = period in microseconds. KEYS: the token key.
const ADJUST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local delta = tonumber(ARGV[1]) * tonumber(ARGV[3]) / tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local next_tat
if delta >= 0 then
  next_tat = math.max(tat, now) + delta
else
  if tat <= now then
    return 0
  end
  next_tat = math.max(tat + delta, now)
end
if next_tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.17g', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 1
";

/// The bulkhead's [`SharedLimiter`] on Redis (cheap to clone: clones share one state); see the
/// [module docs](self).
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    prefix: String,
    timeout: Duration,
    recheck: Duration,
    scale: f64,
    origin: Instant,
    /// Zero while shared; else one more than the instant (nanoseconds since `origin`) from which
    /// the next admission may probe Redis.
    down_until: AtomicU64,
    admit: Script,
    adjust: Script,
    round_trips: AtomicU64,
    local_admissions: AtomicU64,
    shared_gauge: Gauge,
    local_error: Counter,
    local_timeout: Counter,
    local_down: Counter,
}

/// Where the limiter's connection comes from.
enum Source {
    /// A connection of its own.
    Manager(ConnectionManager),
    /// The process's [`SharedState`]: its connection once connected, its status fed with each
    /// outcome and its local-decision counter with each local admission.
    Shared(SharedState),
}

impl Source {
    fn connection(&self) -> Option<ConnectionManager> {
        match self {
            Source::Manager(connection) => Some(connection.clone()),
            Source::Shared(state) => state.connection(),
        }
    }

    fn report(&self, ok: bool) {
        if let Source::Shared(state) = self {
            state.report(ok);
        }
    }

    fn local_decision(&self, why: Local) {
        if let Source::Shared(state) = self {
            state.count_local_decision(match why {
                Local::Timeout => "timeout",
                Local::Error | Local::Down => "redis_down",
            });
        }
    }
}

/// Builds a [`RedisLimiter`].
pub struct RedisLimiterBuilder {
    source: Source,
    prefix: String,
    timeout: Duration,
    recheck: Duration,
    scale: f64,
}

impl RedisLimiter {
    /// A limiter on `connection` with the defaults (prefix `tower-llm:`, 20 ms timeout, 250 ms
    /// recheck).
    pub fn new(connection: ConnectionManager) -> Self {
        Self::builder(connection).build()
    }

    /// A builder on `connection`.
    pub fn builder(connection: ConnectionManager) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            source: Source::Manager(connection),
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            recheck: DEFAULT_RECHECK,
            scale: 1.0,
        }
    }

    /// A limiter on the process's [`SharedState`] (the `[shared_state]` of the configuration):
    /// its connection (admissions are local until it has connected), key prefix and timeout;
    /// each Redis outcome feeds its status, and each local admission its
    /// `tower_llm_redis_local_decisions_total`.
    pub fn from_shared_state(state: &SharedState) -> Self {
        Self::builder_from_shared_state(state).build()
    }

    /// A builder starting from [`from_shared_state`](Self::from_shared_state)'s settings.
    pub fn builder_from_shared_state(state: &SharedState) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            source: Source::Shared(state.clone()),
            prefix: state.key_prefix().to_owned(),
            timeout: state.timeout(),
            recheck: DEFAULT_RECHECK,
            scale: 1.0,
        }
    }

    /// Whether decisions are shared right now (false after a Redis failure, until Redis answers
    /// again).
    pub fn is_shared(&self) -> bool {
        self.inner.down_until.load(Ordering::Acquire) == 0
    }

    /// Round trips to Redis made so far (admissions and corrections, answered or not).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Admissions left to the local limits so far because Redis failed or was slow.
    pub fn local_admissions(&self) -> u64 {
        self.inner.local_admissions.load(Ordering::Relaxed)
    }

    /// The Redis key holding `scope`'s request-rate state.
    pub fn rate_key(&self, scope: &str) -> String {
        self.inner.key(scope, "rate")
    }

    /// The Redis key holding `scope`'s token-budget state.
    pub fn token_key(&self, scope: &str) -> String {
        self.inner.key(scope, "tokens")
    }
}

impl RedisLimiterBuilder {
    /// The prefix of every key (default `tower-llm:`): keys are
    /// `<prefix>limiter:{<scope>}:rate` and `…:tokens` (the braces keep both keys of one scope
    /// in one Redis Cluster slot, as the script needs).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long an admission waits for Redis before the local limits decide (default
    /// [`DEFAULT_TIMEOUT`], 20 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long after a failure admissions stay local before one probes Redis again (default
    /// 250 ms).
    pub fn recheck(mut self, recheck: Duration) -> Self {
        self.recheck = recheck;
        self
    }

    /// Share `scale ×` each bulkhead's own limits (default 1, values below 1 are 1): a bulkhead
    /// whose local limit is a replica's share (`600/minute ÷ 3 replicas = 200/minute`) asks Redis
    /// for the whole quota (`scale = 3` shares 600/minute), so the fallback admits only that
    /// share per replica while Redis is down.
    pub fn quota_scale(mut self, scale: u32) -> Self {
        self.scale = f64::from(scale.max(1));
        self
    }

    /// The limiter.
    pub fn build(self) -> RedisLimiter {
        RedisLimiter {
            inner: Arc::new(Inner {
                source: self.source,
                prefix: self.prefix,
                timeout: self.timeout,
                recheck: self.recheck,
                scale: self.scale,
                origin: Instant::now(),
                down_until: AtomicU64::new(0),
                admit: Script::new(ADMIT),
                adjust: Script::new(ADJUST),
                round_trips: AtomicU64::new(0),
                local_admissions: AtomicU64::new(0),
                shared_gauge: {
                    let gauge = metrics::gauge!(SHARED);
                    gauge.set(1.0);
                    gauge
                },
                local_error: metrics::counter!(LOCAL_ADMISSIONS_TOTAL, "reason" => "error"),
                local_timeout: metrics::counter!(LOCAL_ADMISSIONS_TOTAL, "reason" => "timeout"),
                local_down: metrics::counter!(LOCAL_ADMISSIONS_TOTAL, "reason" => "redis_down"),
            }),
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("key_prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("recheck", &self.inner.recheck)
            .field("shared", &self.is_shared())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiterBuilder")
            .field("key_prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("recheck", &self.recheck)
            .finish_non_exhaustive()
    }
}

/// Why an admission was left to the local limits.
#[derive(Clone, Copy)]
enum Local {
    Error,
    Timeout,
    Down,
}

impl Inner {
    fn key(&self, scope: &str, kind: &str) -> String {
        format!("{}limiter:{{{scope}}}:{kind}", self.prefix)
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether this admission may ask Redis: always while shared; after a failure, once the
    /// recheck interval has passed, one admission at a time (the probe).
    fn may_ask(&self) -> bool {
        let until = self.down_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_nanos();
        if now.saturating_add(1) < until {
            return false;
        }
        let next = self.next_recheck(now);
        self.down_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn next_recheck(&self, now: u64) -> u64 {
        let recheck = u64::try_from(self.recheck.as_nanos()).unwrap_or(u64::MAX);
        now.saturating_add(recheck).saturating_add(1).max(1)
    }

    /// Redis answered.
    fn answered(&self) {
        self.source.report(true);
        if self.down_until.swap(0, Ordering::AcqRel) != 0 {
            self.shared_gauge.set(1.0);
            tracing::info!("shared rate limiter: Redis answers again, decisions are shared");
        }
    }

    /// Redis failed or was slow: decide locally until the next recheck.
    fn failed(&self, why: Local, error: Option<&redis::RedisError>) {
        self.source.report(false);
        let next = self.next_recheck(self.now_nanos());
        if self.down_until.swap(next, Ordering::AcqRel) == 0 {
            self.shared_gauge.set(0.0);
            // The error kind names the failure, never the URL or its password.
            tracing::warn!(
                reason = why.as_str(),
                error = ?error.map(|e| e.kind()),
                "shared rate limiter: Redis unavailable, decisions are local"
            );
        }
    }

    fn local(&self, why: Local) -> Result<SharedVerdict, SharedUnavailable> {
        self.local_admissions.fetch_add(1, Ordering::Relaxed);
        self.source.local_decision(why);
        match why {
            Local::Error => self.local_error.increment(1),
            Local::Timeout => self.local_timeout.increment(1),
            Local::Down => self.local_down.increment(1),
        }
        Err(SharedUnavailable)
    }

    fn scaled(&self, n: f64) -> f64 {
        n * self.scale
    }
}

impl Local {
    fn as_str(self) -> &'static str {
        match self {
            Local::Error => "error",
            Local::Timeout => "timeout",
            Local::Down => "redis_down",
        }
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl SharedLimiter for RedisLimiter {
    fn admit(&self, ask: SharedAsk<'_>) -> SharedAdmission {
        let inner = Arc::clone(&self.inner);
        if !inner.may_ask() {
            return Box::pin(std::future::ready(inner.local(Local::Down)));
        }
        let Some(mut connection) = inner.source.connection() else {
            // A shared state that has not connected yet.
            return Box::pin(std::future::ready(inner.local(Local::Down)));
        };
        let quota = *ask.quota;
        let keys = (inner.key(ask.scope, "rate"), inner.key(ask.scope, "tokens"));
        let tokens = ask.tokens;
        Box::pin(async move {
            // The quota scaled up: the rate's interval shrinks, bursts and budgets grow.
            let (interval, burst) = quota.rate.map_or((0.0, 0.0), |r| {
                (
                    micros(r.interval) / inner.scale,
                    inner.scaled(f64::from(r.burst)).floor(),
                )
            });
            let (capacity, period) = quota.tokens.map_or((0.0, 0.0), |t| {
                (inner.scaled(t.capacity as f64).floor(), micros(t.period))
            });
            let mut invocation = inner.admit.prepare_invoke();
            invocation
                .key(&keys.0)
                .key(&keys.1)
                .arg(interval)
                .arg(burst)
                .arg(capacity)
                .arg(period)
                .arg(tokens);
            inner.round_trips.fetch_add(1, Ordering::Relaxed);
            let answer = tokio::time::timeout(
                inner.timeout,
                invocation.invoke_async::<(i64, i64)>(&mut connection),
            )
            .await;
            match answer {
                Ok(Ok((code, wait_us))) => {
                    inner.answered();
                    let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
                    match code {
                        1 => Ok(SharedVerdict::Admitted),
                        2 => Ok(SharedVerdict::Wait {
                            limit: LimitKind::Rate,
                            wait,
                        }),
                        3 => Ok(SharedVerdict::Wait {
                            limit: LimitKind::Tokens,
                            wait,
                        }),
                        4 => Ok(SharedVerdict::TooLarge),
                        _ => inner.local(Local::Error),
                    }
                }
                Ok(Err(error)) => {
                    inner.failed(Local::Error, Some(&error));
                    inner.local(Local::Error)
                }
                Err(_elapsed) => {
                    inner.failed(Local::Timeout, None);
                    inner.local(Local::Timeout)
                }
            }
        })
    }

    fn adjust_tokens(&self, scope: &str, quota: &SharedQuota, tokens: i64) {
        let Some(budget) = quota.tokens else { return };
        if tokens == 0 || !self.is_shared() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        let Some(mut connection) = inner.source.connection() else {
            return;
        };
        let key = inner.key(scope, "tokens");
        runtime.spawn(async move {
            let capacity = inner.scaled(budget.capacity as f64).floor();
            let mut invocation = inner.adjust.prepare_invoke();
            invocation
                .key(&key)
                .arg(tokens)
                .arg(capacity)
                .arg(micros(budget.period));
            inner.round_trips.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout(
                inner.timeout,
                invocation.invoke_async::<i64>(&mut connection),
            )
            .await
            {
                Ok(Ok(_)) => inner.answered(),
                Ok(Err(error)) => inner.failed(Local::Error, Some(&error)),
                Err(_elapsed) => inner.failed(Local::Timeout, None),
            }
        });
    }
}
