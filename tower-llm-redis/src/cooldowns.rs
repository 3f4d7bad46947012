//! [`RedisCooldowns`]: a fallback chain's cooldowns shared through Redis.
//!
//! ```
//! use tower_llm_fallback::{FallbackLayer, TargetConfig};
//! use tower_llm_redis::{RedisConfig, SharedState};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let shared = SharedState::connect(RedisConfig::new("redis://127.0.0.1:6379/0")).unwrap();
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     .target(TargetConfig::new("groq", "llama-3.1-8b-instant"))
//!     // Replicas that build the chain `chat` with the same prefix share its cooldowns.
//!     .shared_cooldowns(shared.cooldowns("chat"))
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! # }
//! ```
//!
//! | what | where in Redis |
//! |---|---|
//! | a bench (kind, end) | `PUBLISH <prefix>events`, and `SET <prefix>cooldown:<scope>:<target> "bench:<kind>:<until unix ms \| reset>" PX <time left>` |
//! | a recovery | `PUBLISH <prefix>events`, and `DEL` of that key |
//! | who probes a lifted cooldown | `SET <prefix>lease:cooldown:<scope>:<target> <process id> NX PX <probe lease>`, released (only by its holder) when the probe's result is published |

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use tower_llm_core::ErrorKind;
use tower_llm_fallback::shared::{CooldownEvent, CooldownTarget, SharedCooldowns};

use crate::metrics as m;
use crate::state::{
    key, lock, unix_ms_now, Component, Envelope, Inner, LeaseGate, Op, SharedState, Store,
};

const CLASS: &str = "cooldown";

/// A chain's cooldowns shared through Redis (from [`SharedState::cooldowns`]); see the
/// [module docs](self) for what is stored where.
pub struct RedisCooldowns {
    inner: Arc<Inner>,
    scope: String,
    targets: Mutex<HashMap<String, Vec<CooldownTarget>>>,
    gate: Arc<LeaseGate>,
    me: Weak<RedisCooldowns>,
}

impl fmt::Debug for RedisCooldowns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCooldowns")
            .field("scope", &self.scope)
            .field("status", &self.inner.status())
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// The shared cooldowns of the chain `scope` (a route's name): replicas whose chains use
    /// the same scope and key prefix share benches, recoveries and probes by target name.
    pub fn cooldowns(&self, scope: &str) -> Arc<RedisCooldowns> {
        let cooldowns = Arc::new_cyclic(|me| RedisCooldowns {
            inner: Arc::clone(&self.inner),
            scope: scope.to_owned(),
            targets: Mutex::new(HashMap::new()),
            gate: LeaseGate::new(),
            me: me.clone(),
        });
        let component: Arc<dyn Component> = cooldowns.clone();
        self.inner.register(Arc::downgrade(&component));
        cooldowns
    }
}

impl RedisCooldowns {
    fn key(&self, name: &str) -> String {
        key(&self.inner.prefix, &[CLASS, &self.scope, name])
    }

    fn lease_key(&self, name: &str) -> String {
        key(&self.inner.prefix, &["lease", CLASS, &self.scope, name])
    }

    fn queue_publish(&self, name: &str, event: CooldownEvent, release_lease: bool) {
        let encoded = encode(event);
        let now = unix_ms_now();
        let store = match event {
            CooldownEvent::Benched {
                until_unix_ms: Some(until),
                ..
            } => {
                if until <= now {
                    return;
                }
                Store::Set(encoded.clone(), Some(until - now))
            }
            CooldownEvent::Benched { .. } => Store::Set(encoded.clone(), None),
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

    fn apply(&self, name: &str, event: CooldownEvent) {
        let targets = lock(&self.targets);
        if let Some(targets) = targets.get(name) {
            for target in targets {
                target.apply(event);
            }
            metrics::counter!(m::APPLIED_TOTAL, m::COMPONENT => CLASS).increment(1);
        }
    }
}

impl SharedCooldowns for RedisCooldowns {
    fn attach(&self, target: CooldownTarget) {
        let name = target.name().to_owned();
        let mut targets = lock(&self.targets);
        let list = targets.entry(name.clone()).or_default();
        list.retain(CooldownTarget::is_alive);
        list.push(target);
        drop(targets);
        // Built after the connection: read the target's current bench now (at connection,
        // every registered target is read anyway).
        if self.inner.is_up() {
            let component: Weak<dyn Component> = self.me.clone();
            self.inner.queue(Op::Read {
                key: self.key(&name),
                component,
                name,
            });
        }
    }

    fn publish(&self, target: &str, event: CooldownEvent) {
        let held = self.gate.clear(target);
        self.queue_publish(target, event, held);
    }

    fn may_probe(&self, target: &str) -> bool {
        self.gate
            .may_probe(&self.inner, target, || self.lease_key(target))
    }
}

impl Component for RedisCooldowns {
    fn address(&self) -> (&'static str, &str) {
        (CLASS, &self.scope)
    }

    fn on_event(&self, name: &str, event: &str) {
        let Some(event) = decode(event) else { return };
        // A result is known: the next lifted cooldown starts a new lease round.
        self.gate.clear(name);
        self.apply(name, event);
    }

    fn keys(&self) -> Vec<(String, String)> {
        lock(&self.targets)
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
        let current: Vec<(String, CooldownEvent)> = lock(&self.targets)
            .iter()
            .filter_map(|(name, targets)| {
                targets
                    .iter()
                    .find_map(CooldownTarget::current)
                    .map(|e| (name.clone(), e))
            })
            .collect();
        for (name, event) in current {
            self.queue_publish(&name, event, false);
        }
    }
}

fn encode(event: CooldownEvent) -> String {
    match event {
        CooldownEvent::Benched {
            kind,
            until_unix_ms: Some(until),
        } => format!("bench:{kind}:{until}"),
        CooldownEvent::Benched {
            kind,
            until_unix_ms: None,
        } => format!("bench:{kind}:reset"),
        _ => "recovered".to_owned(),
    }
}

fn decode(text: &str) -> Option<CooldownEvent> {
    if text == "recovered" {
        return Some(CooldownEvent::Recovered);
    }
    let mut parts = text.strip_prefix("bench:")?.splitn(2, ':');
    let kind = parts.next()?;
    let kind = ErrorKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    let until_unix_ms = match parts.next()? {
        "reset" => None,
        ms => Some(ms.parse().ok()?),
    };
    Some(CooldownEvent::Benched {
        kind,
        until_unix_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_encoding() {
        for event in [
            CooldownEvent::Recovered,
            CooldownEvent::Benched {
                kind: ErrorKind::RateLimited,
                until_unix_ms: Some(1_700_000_000_123),
            },
            CooldownEvent::Benched {
                kind: ErrorKind::Auth,
                until_unix_ms: None,
            },
        ] {
            assert_eq!(decode(&encode(event)), Some(event));
        }
        assert_eq!(decode("bench:nonsense:1"), None);
        assert_eq!(decode("bench:rate_limited:soon"), None);
        assert_eq!(decode(""), None);
    }
}
