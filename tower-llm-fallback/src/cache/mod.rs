//! The cache tier: earlier successful answers, served only when every live target failed.
//!
//! When a cache is configured, successful non-streaming answers (2xx, a JSON object) are read
//! whole before they are returned and stored under a key of the *client* and the *normalized
//! request*:
//!
//! - **The client**: the request's [`CacheScope`] extension, which the embedder sets (the
//!   gateway sets it from the client key's name); requests of different scopes never share an
//!   answer. A request without one is in the process-wide unscoped space: every unscoped
//!   caller of the chain shares answers, which is right for one application embedding the
//!   stack and wrong for a multi-tenant proxy (set the extension there).
//! - **The request**: its JSON object as the caller sent it (so `model` is the caller's alias,
//!   before any per-target rewrite), member order ignored, without the members that do not
//!   change the answer: `stream`, `stream_options`, `metadata`, `store`, `service_tier`,
//!   `prompt_cache_key`. Everything else (messages, sampling parameters, tools, response
//!   format, and `user` and `safety_identifier`, which name the end user) is part of the key.
//!
//! The key is a 128-bit SipHash-2-4 digest under a random key per cache ([`request_key`]),
//! computed in one pass over the body: no `serde_json::Value` of the request (about 16× its size)
//! and no copy of it; memory does not grow with the body. Each JSON value is hashed with a tag
//! for its type; an array hashes its elements' digests in order; an object adds up (wrapping)
//! the digests of its members (name and value), so member order does not matter. Strings and
//! numbers are hashed as written: `"A"` and `"\u0041"`, or `1` and `1.0`, are different keys (a
//! miss, never a wrong hit).
//!
//! The cache is bounded by entries and by bytes (16 per key, and the bodies), evicts the oldest entry first,
//! and entries expire after a TTL (tokio time). A cached answer is served with
//! `x-llm-fallback: cache`, an `age` header, and zero `usage` (no tokens were spent for it); its
//! `model` is the model that originally produced it. A streaming request may be served a cached
//! plain-text answer re-framed as SSE.
//!
//! Buffering the answer also validates it: a 2xx whose body is not JSON counts as an
//! `InvalidResponse` failure of the target, and the chain moves on.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_fallback::{CacheConfig, FallbackLayer, TargetConfig};
//!
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     .cache(CacheConfig::new().max_entries(500).max_bytes(8 << 20).ttl(Duration::from_secs(600)))
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! ```

mod key;
mod siphash;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tower_llm_core::{ConfigError, Target};

use crate::json::{self, Splice};

pub use key::{request_key, CacheHashKey, MAX_DEPTH};

/// Top-level members of a request that do not change the answer, left out of the cache key.
pub const IGNORED_REQUEST_MEMBERS: [&str; 6] = [
    "stream",
    "stream_options",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
];

/// The default [`CacheConfig::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 1024;
/// The default [`CacheConfig::max_bytes`].
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;
/// The default [`CacheConfig::max_entry_bytes`].
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1 << 20;
/// The default [`CacheConfig::ttl`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// Whose cached answers a request may get: a request extension the embedder sets, typically
/// from the authenticated client (a client key's name or hash, never the key itself). Requests
/// with different scopes never share a cached answer; requests without one share the unscoped
/// space (see the [module docs](self)).
///
/// ```
/// use tower_llm_fallback::CacheScope;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(CacheScope::new("team-a"));
/// assert_eq!(req.extensions().get::<CacheScope>().unwrap().as_str(), "team-a");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheScope(Arc<str>);

impl CacheScope {
    /// The scope named `id`.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        CacheScope(id.into())
    }

    /// The scope's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Configuration of the cache tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    max_entries: usize,
    max_bytes: usize,
    max_entry_bytes: usize,
    ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            ttl: DEFAULT_TTL,
        }
    }
}

impl CacheConfig {
    /// 1024 entries, 16 MiB, 1 MiB per answer, 10 minutes TTL.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many entries.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// At most this many bytes of keys and answers in total.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// Answers larger than this are neither buffered for the cache nor stored (default 1 MiB).
    pub fn max_entry_bytes(mut self, n: usize) -> Self {
        self.max_entry_bytes = n;
        self
    }

    /// How long an answer may be served after it was stored.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 || self.max_bytes == 0 || self.max_entry_bytes == 0 {
            return Err(ConfigError::new(
                "cache",
                "entry and byte bounds must be > 0",
            ));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::new("cache", "ttl must be > 0"));
        }
        Ok(())
    }

    pub(crate) fn entry_limit(&self) -> usize {
        self.max_entry_bytes.min(self.max_bytes)
    }

    /// The bounds: entries, bytes, bytes per answer, and the TTL.
    pub fn limits(&self) -> (usize, usize, usize, Duration) {
        (
            self.max_entries,
            self.max_bytes,
            self.max_entry_bytes,
            self.ttl,
        )
    }
}

/// Bytes a key takes in the cache's byte bound.
const KEY_BYTES: usize = std::mem::size_of::<u128>();

/// Whether `bytes` is one JSON document.
pub(crate) fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// What [`ResponseCache::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Stored.
    Stored,
    /// Valid, but not stored (too large).
    Skipped,
    /// Not a JSON object: not an answer.
    NotJson,
}

/// One stored answer.
#[derive(Clone, Debug)]
pub(crate) struct CachedAnswer {
    /// The answer's JSON with `usage` zeroed.
    pub(crate) body: Bytes,
    /// The name of the target that produced it.
    pub(crate) target_name: Arc<str>,
    /// Its provider and model.
    pub(crate) target: Target,
    pub(crate) stored_at: Instant,
}

#[derive(Debug)]
struct Entry {
    answer: CachedAnswer,
    expires_at: Instant,
    seq: u64,
    size: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<u128, Entry>,
    /// Insertion order (key, seq); stale pairs (key re-inserted or removed) are skipped.
    order: VecDeque<(u128, u64)>,
    bytes: usize,
    seq: u64,
}

/// The answer cache.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    config: CacheConfig,
    /// The digest's secret key, random for each cache.
    hash_key: CacheHashKey,
    inner: Mutex<Inner>,
}

impl ResponseCache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        ResponseCache {
            config,
            hash_key: CacheHashKey::random(),
            inner: Mutex::default(),
        }
    }

    /// The key of `body` sent by `scope` in this cache.
    pub(crate) fn key(&self, body: &[u8], scope: Option<&CacheScope>) -> Option<u128> {
        request_key(self.hash_key, body, scope)
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Store `body` (a successful answer) under `key`. Answers that are not JSON objects are not
    /// stored.
    pub(crate) fn insert(
        &self,
        key: u128,
        body: &Bytes,
        target_name: Arc<str>,
        target: Target,
        now: Instant,
    ) -> Insert {
        let Some(body) = zero_usage(body) else {
            return Insert::NotJson;
        };
        let size = KEY_BYTES + body.len();
        if size > self.config.max_bytes || body.len() > self.config.max_entry_bytes {
            return Insert::Skipped;
        }
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let entry = Entry {
            answer: CachedAnswer {
                body,
                target_name,
                target,
                stored_at: now,
            },
            expires_at: crate::health::after(now, self.config.ttl),
            seq,
            size,
        };
        if let Some(old) = inner.map.insert(key, entry) {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        inner.order.push_back((key, seq));
        while inner.map.len() > self.config.max_entries || inner.bytes > self.config.max_bytes {
            let Some((oldest, oldest_seq)) = inner.order.pop_front() else {
                break;
            };
            let current = inner.map.get(&oldest).map(|e| e.seq);
            if current == Some(oldest_seq) {
                if let Some(evicted) = inner.map.remove(&oldest) {
                    inner.bytes -= evicted.size;
                }
            }
        }
        // Keep the order queue from growing with stale pairs when one key is stored repeatedly.
        if inner.order.len() > 2 * inner.map.len() + 16 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
        Insert::Stored
    }

    /// The answer stored under `key`, if it has not expired.
    pub(crate) fn get(&self, key: u128, now: Instant) -> Option<CachedAnswer> {
        let mut inner = self.lock();
        let expired = match inner.map.get(&key) {
            None => return None,
            Some(entry) if now < entry.expires_at => return Some(entry.answer.clone()),
            Some(_) => true,
        };
        if expired {
            if let Some(old) = inner.map.remove(&key) {
                inner.bytes -= old.size;
            }
        }
        None
    }

    #[cfg(test)]
    fn stats(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.map.len(), inner.bytes)
    }
}

const ZERO_USAGE: &[u8] = br#"{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}"#;

/// `body` with its top-level `usage` replaced by zeros, or `None` when it is not a JSON object.
fn zero_usage(body: &Bytes) -> Option<Bytes> {
    let members = json::find_members(body, ["usage"])?;
    // Validate the whole document once: a 2xx that is not JSON must not be cached.
    if !is_json(body) {
        return None;
    }
    let [usage] = members.values;
    match usage {
        None => Some(body.clone()),
        Some(span) => Some(Bytes::from(json::apply(
            body,
            &mut [Some(Splice {
                span,
                bytes: Cow::Borrowed(ZERO_USAGE),
            })],
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: usize) -> Bytes {
        Bytes::from(format!(
            r#"{{"id":"x","model":"m","choices":[],"usage":{{"prompt_tokens":{n},"completion_tokens":1,"total_tokens":{}}}}}"#,
            n + 1
        ))
    }

    #[test]
    fn key_ignores_transport_members_and_key_order_but_not_user_or_scope() {
        let cache = ResponseCache::new(CacheConfig::new());
        let key = |body: &[u8], scope: Option<&CacheScope>| cache.key(body, scope);
        let a = key(br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true,"user":"u1","temperature":0.2}"#, None);
        let b = key(br#"{"temperature":0.2,"messages":[{"content":"hi","role":"user"}],"model":"gpt","user":"u1","metadata":{"x":1}}"#, None);
        assert!(a.is_some());
        assert_eq!(a, b);
        let other_user = key(br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"user":"u2","temperature":0.2}"#, None);
        assert_ne!(a, other_user, "the end user is part of the key");
        let c = key(
            br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"user":"u1","temperature":0.3}"#,
            None,
        );
        assert_ne!(a, c);
        let scoped = key(br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"user":"u1","temperature":0.2}"#, Some(&CacheScope::new("tenant-a")));
        assert_ne!(a, scoped, "the client is part of the key");
        assert_eq!(key(b"[1]", None), None);
        assert_eq!(key(b"nope", None), None);
        // Each cache has a key of its own.
        let other = ResponseCache::new(CacheConfig::new());
        assert_ne!(a, other.key(br#"{"temperature":0.2,"messages":[{"content":"hi","role":"user"}],"model":"gpt","user":"u1"}"#, None));
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_bounds_and_zero_usage() {
        let cache = ResponseCache::new(
            CacheConfig::new()
                .max_entries(2)
                .ttl(Duration::from_secs(10)),
        );
        let now = Instant::now();
        let t = Target::new("p", "m");
        assert_eq!(
            cache.insert(1, &answer(5), "a".into(), t.clone(), now),
            Insert::Stored
        );
        let got = cache.get(1, now + Duration::from_secs(9)).unwrap();
        assert_eq!(
            got.body,
            r#"{"id":"x","model":"m","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#
        );
        assert!(cache.get(1, now + Duration::from_secs(10)).is_none());
        assert_eq!(cache.stats(), (0, 0));

        for i in 0..5u8 {
            assert_eq!(
                cache.insert(u128::from(i), &answer(1), "a".into(), t.clone(), now),
                Insert::Stored
            );
        }
        assert_eq!(cache.stats().0, 2);
        assert!(cache.get(4, now).is_some());
        assert!(cache.get(3, now).is_some());
        assert!(cache.get(0, now).is_none());
        let not_json = Bytes::from_static(b"not json");
        assert_eq!(
            cache.insert(9, &not_json, "a".into(), t, now),
            Insert::NotJson
        );
    }

    #[tokio::test(start_paused = true)]
    async fn byte_bound_evicts_oldest_and_repeated_keys_do_not_leak() {
        let one = answer(1).len() + KEY_BYTES;
        let cache = ResponseCache::new(
            CacheConfig::new()
                .max_bytes(one * 3)
                .max_entry_bytes(one * 3),
        );
        let now = Instant::now();
        let t = Target::new("p", "m");
        for i in 0..4u8 {
            cache.insert(u128::from(i), &answer(1), "a".into(), t.clone(), now);
        }
        let (entries, bytes) = cache.stats();
        assert_eq!(entries, 3);
        assert!(bytes <= one * 3);
        for _ in 0..1000 {
            cache.insert(9, &answer(1), "a".into(), t.clone(), now);
        }
        assert!(cache.lock().order.len() <= 2 * 3 + 17);
        assert!(cache.stats().1 <= one * 3);
    }
}
