//! Routes at run time: the fallback chain of each route, built at start when its targets name
//! their models, per requested model otherwise; and the health state saved across restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tower_llm_core::{BoxError, ConfigError, Target};
use tower_llm_fallback::{
    Escalation, EscalationEvent, FallbackHandle, FallbackLayer, HealthSnapshot, JsonDirEscalation,
    LogEscalation, TargetConfig as ChainTarget,
};

use super::plan::{Plan, RoutePlan, TargetPlan};
use super::target::Targets;
use super::{lock, RouteService, MAX_MODELS_PER_ROUTE};
use crate::error::{NoRoute, TooManyModels};

/// One fallback chain: a route's, or a pass-through route's for one requested model.
pub(super) struct Chain<ReqB, ResB> {
    /// The chain's name in the saved health (`gpt-*`, or `* -> gpt-4o` per requested model).
    pub(super) key: Arc<str>,
    pub(super) service: RouteService<ReqB, ResB>,
    pub(super) handle: FallbackHandle,
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

/// The chains of one route.
pub(super) enum RouteChains<ReqB, ResB> {
    /// Every target names its model: one chain, built at start, read without a lock.
    Fixed(Chain<ReqB, ResB>),
    /// A target passes the requested model through: one chain per requested model, built on
    /// first use (at most [`MAX_MODELS_PER_ROUTE`]).
    PerModel(RwLock<HashMap<Arc<str>, Chain<ReqB, ResB>>>),
}

/// Builds chains: the plan, the shared target stacks, and the health restored from a file.
pub(super) struct Chains<ReqB, ResB> {
    pub(super) plan: Plan,
    pub(super) targets: Targets<ReqB, ResB>,
    /// Chain health restored from `[health] file`, by chain key, until the chain exists.
    pub(super) saved: Mutex<HashMap<String, HealthSnapshot>>,
    /// The chains of each route, in the plan's order.
    pub(super) routes: Vec<RouteChains<ReqB, ResB>>,
}

impl<ReqB, ResB> Chains<ReqB, ResB> {
    /// Every chain built so far.
    pub(super) fn all(&self) -> Vec<Chain<ReqB, ResB>> {
        let mut out = Vec::new();
        for route in &self.routes {
            match route {
                RouteChains::Fixed(chain) => out.push(chain.clone()),
                RouteChains::PerModel(map) => out.extend(
                    map.read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .values()
                        .cloned(),
                ),
            }
        }
        out
    }

    /// The models of the per-model chains, route by route, each route's sorted.
    pub(super) fn requested_models(&self) -> Vec<String> {
        let mut out = Vec::new();
        for route in &self.routes {
            if let RouteChains::PerModel(map) = route {
                let map = map.read().unwrap_or_else(PoisonError::into_inner);
                let mut models: Vec<String> = map.keys().map(|m| m.to_string()).collect();
                models.sort_unstable();
                out.extend(models);
            }
        }
        out
    }

    /// The chain serving `model`: the first route whose glob matches.
    pub(super) fn service_for(&self, model: &str) -> Result<RouteService<ReqB, ResB>, BoxError> {
        let (index, plan) = self
            .plan
            .routes
            .iter()
            .enumerate()
            .find(|(_, plan)| plan.glob.matches(model))
            .ok_or_else(|| NoRoute::new(model))?;
        match self.routes.get(index) {
            Some(RouteChains::Fixed(chain)) => Ok(chain.service.clone()),
            Some(RouteChains::PerModel(map)) => self.per_model(index, plan, map, model),
            None => Err(NoRoute::new(model).into()),
        }
    }

    fn per_model(
        &self,
        index: usize,
        plan: &RoutePlan,
        map: &RwLock<HashMap<Arc<str>, Chain<ReqB, ResB>>>,
        model: &str,
    ) -> Result<RouteService<ReqB, ResB>, BoxError> {
        if let Some(chain) = map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
        {
            return Ok(chain.service.clone());
        }
        let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(chain) = map.get(model) {
            return Ok(chain.service.clone());
        }
        if map.len() >= MAX_MODELS_PER_ROUTE {
            return Err(TooManyModels::new(plan.pattern.clone(), MAX_MODELS_PER_ROUTE).into());
        }
        let chain = self.build(index, Some(model))?;
        let service = chain.service.clone();
        map.insert(model.into(), chain);
        Ok(service)
    }

    /// Build route `index`'s chain (for the requested model `requested` when the route passes
    /// models through).
    pub(super) fn build(
        &self,
        index: usize,
        requested: Option<&str>,
    ) -> Result<Chain<ReqB, ResB>, ConfigError> {
        let plan = self
            .plan
            .routes
            .get(index)
            .ok_or_else(|| ConfigError::new("routes", "route out of range"))?;
        let mut builder = FallbackLayer::builder()
            .cooldowns(self.plan.cooldowns.clone())
            .escalation_policy(self.plan.escalation_policy.clone());
        builder = match &self.plan.escalation_dir {
            Some(dir) => builder.escalation(SharedEscalation(Arc::clone(dir))),
            None => builder.escalation(LogEscalation),
        };
        if let (true, Some(cache)) = (plan.cache, &self.plan.cache) {
            builder = builder.cache(cache.clone());
        }
        if let (true, Some(answer)) = (plan.static_answer, &self.plan.static_answer) {
            builder = builder.static_answer(answer.clone());
        }
        let mut services = Vec::with_capacity(plan.targets.len());
        let mut tiers: BTreeMap<u32, Vec<ChainTarget>> = BTreeMap::new();
        for t in &plan.targets {
            let (chain_target, model) = self.chain_target(t, requested)?;
            let target = Target::new(t.provider.clone(), model);
            services.push((chain_target.target_name(), self.targets.service(&target)?));
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
            Some(model) => format!("{} -> {model}", plan.pattern).into(),
            None => plan.pattern.as_str().into(),
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

    /// The chain's view of one target (where and how requests for it are sent), and its
    /// upstream model.
    fn chain_target(
        &self,
        t: &TargetPlan,
        requested: Option<&str>,
    ) -> Result<(ChainTarget, Arc<str>), ConfigError> {
        let provider =
            self.plan.providers.get(&*t.provider).ok_or_else(|| {
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
        let mut target = ChainTarget::new(t.provider.clone(), model.clone())
            .base_url(provider.base_url.clone())
            .attempt_timeout(t.attempt_timeout)
            .weight(t.weight);
        if keep {
            target = target.keep_request_model();
        }
        if let Some((header, secret)) = &provider.auth {
            target = match header {
                None => target.bearer(secret.clone()),
                Some(h) => target.auth_header(h.as_str(), secret.clone()),
            };
        }
        if let Some(n) = t.context_window {
            target = target.context_window(n);
        }
        if let Some(n) = t.max_tokens {
            target = target.max_tokens(n);
        }
        if let Some(x) = t.max_temperature {
            target = target.max_temperature(x);
        }
        Ok((target, model))
    }
}

/// A JSON-directory escalation hook shared by every chain.
struct SharedEscalation(Arc<JsonDirEscalation>);

impl Escalation for SharedEscalation {
    fn escalate(&self, event: &EscalationEvent) {
        self.0.escalate(event);
    }
}

/// The `[health] file`: each chain's health by chain key.
#[derive(Serialize, Deserialize)]
pub(super) struct SavedHealth {
    pub(super) chains: HashMap<String, HealthSnapshot>,
}

/// The saved health, or nothing when the file is absent or unreadable (with a warning).
pub(super) fn load_saved(path: &Path) -> HashMap<String, HealthSnapshot> {
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
