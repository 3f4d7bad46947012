//! Building a chain: tiers of targets, cooldowns, cache and static tiers, escalation.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_fallback::{CacheConfig, FallbackLayer, Selection, StaticAnswer, TargetConfig};
//!
//! let layer = FallbackLayer::builder()
//!     // Tier 0: the primary.
//!     .target(TargetConfig::new("openai", "gpt-4o-mini").attempt_timeout(Duration::from_secs(5)))
//!     // Tier 1: a pool of two deployments, weighted 3:1.
//!     .pool(
//!         Selection::Weighted,
//!         [
//!             TargetConfig::new("azure-east", "gpt-4o-mini").base_url("http://east.example/v1").weight(3),
//!             TargetConfig::new("azure-west", "gpt-4o-mini").base_url("http://west.example/v1"),
//!         ],
//!     )
//!     // Tier 2: a small model elsewhere.
//!     .target(TargetConfig::new("local", "llama3.2:3b").base_url("http://127.0.0.1:11434/v1"))
//!     .cache(CacheConfig::new().ttl(Duration::from_secs(300)))
//!     .static_answer(StaticAnswer::new("We are having trouble answering right now."))
//!     .seed(7)
//!     .build()
//!     .unwrap();
//! assert_eq!(layer.handle().health().targets.len(), 4);
//!
//! // Invalid configuration is an error, never a panic.
//! let err = FallbackLayer::builder().build().unwrap_err();
//! assert_eq!(err.field(), "targets");
//! ```

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use tower_llm_core::{ConfigError, HttpClassifier};

use crate::cache::{CacheConfig, ResponseCache};
use crate::chain::{Shared, Tier, MAX_TARGETS};
use crate::cooldown::CooldownPolicy;
use crate::escalation::{Escalation, EscalationPolicy, Escalator, LogEscalation};
use crate::layer::FallbackLayer;
use crate::resume::ResumeConfig;
use crate::shared::{CooldownTarget, SharedCooldowns, Sharing};
use crate::static_tier::StaticAnswer;
use crate::target::TargetConfig;

/// How a tier with several targets picks one for a request (only available targets are picked;
/// when the pick fails, the tier's other available targets are tried before the next tier).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selection {
    /// In configuration order.
    #[default]
    Ordered,
    /// At random, in proportion to each target's [`weight`](TargetConfig::weight) (seedable with
    /// [`FallbackLayerBuilder::seed`]).
    Weighted,
    /// The target with the fewest calls in flight from this chain (ties: configuration order).
    LeastLoaded,
}

/// Builder of a [`FallbackLayer`] (from [`FallbackLayer::builder`]); see the
/// [module docs](self). [`build`](Self::build) validates every value.
pub struct FallbackLayerBuilder<C = HttpClassifier> {
    tiers: Vec<(Selection, Vec<TargetConfig>)>,
    cooldowns: CooldownPolicy,
    cache: Option<CacheConfig>,
    static_answer: Option<StaticAnswer>,
    escalation: Box<dyn Escalation>,
    escalation_policy: EscalationPolicy,
    classifier: C,
    request_base_path: String,
    resume: ResumeConfig,
    seed: Option<u64>,
    shared_cooldowns: Option<Arc<dyn SharedCooldowns>>,
    report: bool,
}

impl<C> std::fmt::Debug for FallbackLayerBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayerBuilder")
            .field("tiers", &self.tiers)
            .field("cooldowns", &self.cooldowns)
            .field("cache", &self.cache)
            .field("static_answer", &self.static_answer.is_some())
            .field("escalation_policy", &self.escalation_policy)
            .field("resume", &self.resume)
            .field("shared_cooldowns", &self.shared_cooldowns)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl Default for FallbackLayerBuilder {
    fn default() -> Self {
        FallbackLayerBuilder {
            tiers: Vec::new(),
            cooldowns: CooldownPolicy::default(),
            cache: None,
            static_answer: None,
            escalation: Box::new(LogEscalation),
            escalation_policy: EscalationPolicy::default(),
            classifier: HttpClassifier::default(),
            request_base_path: "/v1".to_owned(),
            resume: ResumeConfig::default(),
            seed: None,
            shared_cooldowns: None,
            report: true,
        }
    }
}

impl FallbackLayerBuilder {
    /// An empty chain with the defaults: `HttpClassifier`, DESIGN.md cooldowns, no cache, no
    /// static answer, escalations logged through `tracing`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C> FallbackLayerBuilder<C> {
    /// Append a tier holding the single target `target`.
    pub fn target(mut self, target: TargetConfig) -> Self {
        self.tiers.push((Selection::Ordered, vec![target]));
        self
    }

    /// Append a tier of several targets (deployments of one model, say), picked by `selection`.
    pub fn pool(
        mut self,
        selection: Selection,
        targets: impl IntoIterator<Item = TargetConfig>,
    ) -> Self {
        self.tiers.push((selection, targets.into_iter().collect()));
        self
    }

    /// The cooldown per error kind (default: [`CooldownPolicy::default`]).
    pub fn cooldowns(mut self, policy: CooldownPolicy) -> Self {
        self.cooldowns = policy;
        self
    }

    /// Turn on the cache tier.
    pub fn cache(mut self, config: CacheConfig) -> Self {
        self.cache = Some(config);
        self
    }

    /// Turn on the static tier.
    pub fn static_answer(mut self, answer: StaticAnswer) -> Self {
        self.static_answer = Some(answer);
        self
    }

    /// The escalation hook (default: [`LogEscalation`]).
    pub fn escalation(mut self, hook: impl Escalation) -> Self {
        self.escalation = Box::new(hook);
        self
    }

    /// When escalations fire (default: [`EscalationPolicy::default`]).
    pub fn escalation_policy(mut self, policy: EscalationPolicy) -> Self {
        self.escalation_policy = policy;
        self
    }

    /// The request path prefix a target's [`base_url`](TargetConfig::base_url) path replaces
    /// (default `/v1`; empty: the base path is prepended to the whole request path).
    pub fn request_base_path(mut self, path: impl Into<String>) -> Self {
        self.request_base_path = path.into();
        self
    }

    /// Seed the random choice in weighted pools (default: a random seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How a committed stream that is cut or stalls is resumed on another target (default:
    /// [`ResumeConfig::default`], by prefill where a target declared
    /// [`supports_prefill`](TargetConfig::supports_prefill), by replay elsewhere); see
    /// [`resume`](crate::resume).
    pub fn resume(mut self, config: ResumeConfig) -> Self {
        self.resume = config;
        self
    }

    /// Classify responses and errors with `classifier` instead of [`HttpClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> FallbackLayerBuilder<C2> {
        FallbackLayerBuilder {
            tiers: self.tiers,
            cooldowns: self.cooldowns,
            cache: self.cache,
            static_answer: self.static_answer,
            escalation: self.escalation,
            escalation_policy: self.escalation_policy,
            classifier,
            request_base_path: self.request_base_path,
            resume: self.resume,
            seed: self.seed,
            shared_cooldowns: self.shared_cooldowns,
            report: self.report,
        }
    }

    /// Whether answers carry the [`FallbackReport`](crate::FallbackReport) extension (the
    /// default: on). The `x-llm-target` and `x-llm-fallback` headers are set either way.
    ///
    /// Turn it off when nothing reads the report (a proxy that forwards the answer, as the
    /// gateway does): it costs up to three allocations per answer (the report's box, and the
    /// extension map's box and table when the answer has no extensions yet), and keeps the
    /// list of attempts alive with the answer.
    ///
    /// ```
    /// use tower_llm_fallback::{FallbackLayer, TargetConfig};
    ///
    /// let layer = FallbackLayer::builder()
    ///     .target(TargetConfig::new("primary", "gpt-4o"))
    ///     .report_extension(false)
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn report_extension(mut self, on: bool) -> Self {
        self.report = on;
        self
    }

    /// Share the chain's cooldowns with other replicas through `shared` (e.g. Redis, with
    /// `tower-llm-redis`): a bench one replica decides is applied by all, and one replica
    /// probes a lifted cooldown. Without it (the default) each process learns alone; see
    /// [`shared`](crate::shared).
    pub fn shared_cooldowns(mut self, shared: Arc<dyn SharedCooldowns>) -> Self {
        self.shared_cooldowns = Some(shared);
        self
    }

    /// Validate the configuration and build the layer. Credentials named by environment variable
    /// are read now.
    pub fn build(self) -> Result<FallbackLayer<C>, ConfigError> {
        let count: usize = self.tiers.iter().map(|(_, t)| t.len()).sum();
        if count == 0 {
            return Err(ConfigError::new(
                "targets",
                "a chain needs at least one target",
            ));
        }
        if count > MAX_TARGETS {
            return Err(ConfigError::new(
                "targets",
                format!("at most {MAX_TARGETS} targets per chain"),
            ));
        }
        if self.tiers.iter().any(|(_, t)| t.is_empty()) {
            return Err(ConfigError::new("pool", "a pool needs at least one target"));
        }
        if !(self.request_base_path.is_empty() || self.request_base_path.starts_with('/')) {
            return Err(ConfigError::new(
                "request_base_path",
                "must be empty or start with `/`",
            ));
        }
        self.cooldowns.validate()?;
        self.escalation_policy.validate()?;
        self.resume.validate()?;
        if let Some(cache) = &self.cache {
            cache.validate()?;
        }
        let mut names = HashSet::new();
        let mut targets = Vec::with_capacity(count);
        let mut tiers = Vec::with_capacity(self.tiers.len());
        for (tier_index, (selection, configs)) in self.tiers.iter().enumerate() {
            let mut members = Vec::with_capacity(configs.len());
            for config in configs {
                let target = config.compile(tier_index)?;
                if !names.insert(target.name.clone()) {
                    return Err(ConfigError::new(
                        "target",
                        format!("duplicate target name `{}`", target.name),
                    ));
                }
                members.push(targets.len());
                targets.push(target);
            }
            tiers.push(Tier {
                selection: *selection,
                members: members.into(),
            });
        }
        let seed = self
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(std::time::SystemTime::now()));
        if let Some(sharing) = &self.shared_cooldowns {
            for target in &targets {
                target.state.share(Sharing {
                    name: target.name.clone(),
                    shared: Arc::clone(sharing),
                });
                sharing.attach(CooldownTarget::new(target.name.clone(), &target.state));
            }
        }
        let mut shared = Shared::new(
            targets.into(),
            tiers.into(),
            self.cooldowns,
            self.cache.map(ResponseCache::new),
            self.static_answer,
            Escalator::new(self.escalation, self.escalation_policy),
            self.request_base_path.trim_end_matches('/').into(),
            self.resume,
            seed,
        );
        shared.report = self.report;
        Ok(FallbackLayer::from_parts(shared, self.classifier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_configuration() {
        let dup = FallbackLayerBuilder::new()
            .target(TargetConfig::new("a", "m"))
            .target(TargetConfig::new("a", "m"))
            .build()
            .unwrap_err();
        assert_eq!(dup.field(), "target");
        assert!(dup.message().contains("duplicate"));
        let empty_pool = FallbackLayerBuilder::new()
            .pool(Selection::Weighted, [])
            .build()
            .unwrap_err();
        assert_eq!(empty_pool.field(), "targets");
        let too_many = (0..65).fold(FallbackLayerBuilder::new(), |b, i| {
            b.target(TargetConfig::new("p", format!("m{i}")))
        });
        assert_eq!(too_many.build().unwrap_err().field(), "targets");
        let zero_timeout = FallbackLayerBuilder::new()
            .target(TargetConfig::new("a", "m").attempt_timeout(std::time::Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(zero_timeout.field(), "attempt_timeout");
        let bad_url = FallbackLayerBuilder::new()
            .target(TargetConfig::new("a", "m").base_url("not a url"))
            .build()
            .unwrap_err();
        assert_eq!(bad_url.field(), "base_url");
        assert!(bad_url.message().contains("target `a/m`"));
        let path = FallbackLayerBuilder::new()
            .target(TargetConfig::new("a", "m"))
            .request_base_path("v1")
            .build()
            .unwrap_err();
        assert_eq!(path.field(), "request_base_path");
        let cache = FallbackLayerBuilder::new()
            .target(TargetConfig::new("a", "m"))
            .cache(CacheConfig::new().max_entries(0))
            .build()
            .unwrap_err();
        assert_eq!(cache.field(), "cache");
    }
}
