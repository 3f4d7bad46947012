//! [`RedisBreakers`]: circuit-breaker transitions shared through Redis.
//!
//! ```
//! use tower_llm_breaker::CircuitBreakerLayer;
//! use tower_llm_redis::{RedisConfig, SharedState};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let shared = SharedState::connect(RedisConfig::new("redis://127.0.0.1:6379/0")).unwrap();
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("openai/gpt-4o-mini")
//!     // Replicas whose breakers have the same name, scope and prefix share their state.
//!     .shared(shared.breakers("chat"))
//!     .build()
//!     .unwrap();
//! # let _ = breaker;
//! # }
//! ```
//!
//! | what | where in Redis |
//! |---|---|
//! | opened until a deadline | `PUBLISH <prefix>events`, and `SET <prefix>breaker:<scope>:<name> "open:<until unix ms>:<reason>" PX <time left>` |
//! | forced open | the same, `"forced"`, no TTL |
//! | closed | `PUBLISH <prefix>events`, and `DEL` of that key |
//! | who turns half-open when the deadline passes | `SET <prefix>lease:breaker:<scope>:<name> <process id> NX PX <probe lease>`, released (only by its holder) when the result is published |

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use tower_llm_breaker::shared::{BreakerEvent, SharedBreaker, SharedBreakers};
use tower_llm_breaker::OpenReason;

use crate::metrics as m;
use crate::state::{
    key, lock, unix_ms_now, Component, Envelope, Inner, LeaseGate, Op, SharedState, Store,
};

const CLASS: &str = "breaker";

const REASONS: [OpenReason; 7] = [
    OpenReason::ConsecutiveFailures,
    OpenReason::FailureRate,
    OpenReason::SlowCallRate,
    OpenReason::ProbeFailed,
    OpenReason::HalfOpenTimeout,
    OpenReason::Manual,
    OpenReason::Forced,
];

/// Breakers' transitions shared through Redis (from [`SharedState::breakers`]); see the
/// [module docs](self) for what is stored where.
pub struct RedisBreakers {
    inner: Arc<Inner>,
    scope: String,
    breakers: Mutex<HashMap<String, Vec<SharedBreaker>>>,
    gate: Arc<LeaseGate>,
    me: Weak<RedisBreakers>,
}

impl fmt::Debug for RedisBreakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBreakers")
            .field("scope", &self.scope)
            .field("status", &self.inner.status())
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// The shared breakers of `scope` (e.g. a route's name): replicas whose breakers have the
    /// same name in the same scope and key prefix share their transitions.
    pub fn breakers(&self, scope: &str) -> Arc<RedisBreakers> {
        let breakers = Arc::new_cyclic(|me| RedisBreakers {
            inner: Arc::clone(&self.inner),
            scope: scope.to_owned(),
            breakers: Mutex::new(HashMap::new()),
            gate: LeaseGate::new(),
            me: me.clone(),
        });
        let component: Arc<dyn Component> = breakers.clone();
        self.inner.register(Arc::downgrade(&component));
        breakers
    }
}

impl RedisBreakers {
    fn key(&self, name: &str) -> String {
        key(&self.inner.prefix, &[CLASS, &self.scope, name])
    }

    fn lease_key(&self, name: &str) -> String {
        key(&self.inner.prefix, &["lease", CLASS, &self.scope, name])
    }

    fn queue_publish(&self, name: &str, event: BreakerEvent, release_lease: bool) {
        let encoded = encode(event);
        let now = unix_ms_now();
        let store = match event {
            BreakerEvent::Opened { until_unix_ms, .. } => {
                if until_unix_ms <= now {
                    return;
                }
                Store::Set(encoded.clone(), Some(until_unix_ms - now))
            }
            BreakerEvent::ForcedOpen => Store::Set(encoded.clone(), None),
            _ => Store::Delete,
        };
        self.inner.queue(Op::Publish {
            envelope: Envelope {
                o: self.inner.origin,
                c: CLASS.to_owned(),
                s: self.scope.clone(),
                n: name.to_owned(),
                e: encoded,
            },
            key: self.key(name),
            store,
            lease: release_lease.then(|| self.lease_key(name)),
        });
    }

    fn apply(&self, name: &str, event: BreakerEvent) {
        let breakers = lock(&self.breakers);
        if let Some(breakers) = breakers.get(name) {
            for breaker in breakers {
                breaker.apply(event);
            }
            metrics::counter!(m::APPLIED_TOTAL, m::COMPONENT => CLASS).increment(1);
        }
    }
}

impl SharedBreakers for RedisBreakers {
    fn attach(&self, breaker: SharedBreaker) {
        let name = breaker.name().to_owned();
        let mut breakers = lock(&self.breakers);
        // Keyed breakers come and go (eviction): forget the dropped ones.
        breakers.retain(|_, list| {
            list.retain(SharedBreaker::is_alive);
            !list.is_empty()
        });
        breakers.entry(name.clone()).or_default().push(breaker);
        drop(breakers);
        if self.inner.is_up() {
            let component: Weak<dyn Component> = self.me.clone();
            self.inner.queue(Op::Read {
                key: self.key(&name),
                component,
                name,
            });
        }
    }

    fn publish(&self, breaker: &str, event: BreakerEvent) {
        let held = self.gate.clear(breaker);
        self.queue_publish(breaker, event, held);
    }

    fn may_half_open(&self, breaker: &str) -> bool {
        self.gate
            .may_probe(&self.inner, breaker, || self.lease_key(breaker))
    }
}

impl Component for RedisBreakers {
    fn address(&self) -> (&'static str, &str) {
        (CLASS, &self.scope)
    }

    fn on_event(&self, name: &str, event: &str) {
        let Some(event) = decode(event) else { return };
        self.gate.clear(name);
        self.apply(name, event);
    }

    fn keys(&self) -> Vec<(String, String)> {
        lock(&self.breakers)
            .keys()
            .map(|name| (name.clone(), self.key(name)))
            .collect()
    }

    fn on_stored(&self, name: &str, value: &str) {
        if let Some(event) = decode(value) {
            self.apply(name, event);
        }
    }

    fn republish(&self) {
        let current: Vec<(String, BreakerEvent)> = lock(&self.breakers)
            .iter()
            .filter_map(|(name, list)| {
                list.iter()
                    .find_map(SharedBreaker::current)
                    .map(|e| (name.clone(), e))
            })
            .collect();
        for (name, event) in current {
            self.queue_publish(&name, event, false);
        }
    }
}

fn encode(event: BreakerEvent) -> String {
    match event {
        BreakerEvent::Opened {
            until_unix_ms,
            reason,
        } => format!("open:{until_unix_ms}:{reason}"),
        BreakerEvent::ForcedOpen => "forced".to_owned(),
        _ => "closed".to_owned(),
    }
}

fn decode(text: &str) -> Option<BreakerEvent> {
    match text {
        "forced" => return Some(BreakerEvent::ForcedOpen),
        "closed" => return Some(BreakerEvent::Closed),
        _ => {}
    }
    let mut parts = text.strip_prefix("open:")?.splitn(2, ':');
    let until_unix_ms = parts.next()?.parse().ok()?;
    let reason = parts.next()?;
    let reason = REASONS.into_iter().find(|r| r.as_str() == reason)?;
    Some(BreakerEvent::Opened {
        until_unix_ms,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_encoding() {
        for reason in REASONS {
            let event = BreakerEvent::Opened {
                until_unix_ms: 1_700_000_000_123,
                reason,
            };
            assert_eq!(decode(&encode(event)), Some(event));
        }
        for event in [BreakerEvent::ForcedOpen, BreakerEvent::Closed] {
            assert_eq!(decode(&encode(event)), Some(event));
        }
        assert_eq!(decode("open:12:nonsense"), None);
        assert_eq!(decode("open"), None);
    }
}
