//! Routes at run time: the fallback chain of each route, built at start when its targets name
//! their models, per requested model otherwise; and the health state saved across restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tower_llm_core::{BoxError, ConfigError, Target};
use tower_llm_fallback::{
    Escalation, EscalationEvent, FallbackHandle, FallbackLayer, HealthSnapshot, JsonDirEscalation,
    LogEscalation, TargetConfig as ChainTarget,
};

use super::plan::{Plan, RoutePlan, TargetPlan};
use super::target::Targets;
use super::{lock, RouteService, MAX_MODELS_PER_ROUTE};
use crate::config::OnCorrupt;
use crate::error::{check_model_name, InvalidReason, InvalidRequest, NoRoute, TooManyModels};

/// One fallback chain: a route's, or a pass-through route's for one requested model.
pub(super) struct Chain<ReqB, ResB> {
    /// The chain's name in the saved health (`gpt-*`, or `* -> gpt-4o` per requested model).
    pub(super) key: Arc<str>,
    pub(super) service: RouteService<ReqB, ResB>,
    pub(super) handle: FallbackHandle,
    /// The names of the targets it uses (one use each in [`Targets`]).
    pub(super) targets: Arc<[String]>,
    /// The targets named after the requested model (pass-through): only this chain sends them
    /// requests, so their bulkheads tell whether it is busy.
    pub(super) own_targets: Arc<[String]>,
}

impl<ReqB, ResB> Clone for Chain<ReqB, ResB> {
    fn clone(&self) -> Self {
        Chain {
            key: self.key.clone(),
            service: self.service.clone(),
            handle: self.handle.clone(),
            targets: self.targets.clone(),
            own_targets: self.own_targets.clone(),
        }
    }
}

/// Held by a request from routing until its chain's future ends: a chain with a request
/// holding one is not evicted.
#[derive(Debug)]
pub(super) struct InUse(#[allow(dead_code)] Arc<()>);

/// One requested model's chain on a pass-through route.
pub(super) struct ModelChain<ReqB, ResB> {
    pub(super) chain: Chain<ReqB, ResB>,
    /// The route's use clock when a request last picked this chain.
    last_used: AtomicU64,
    /// Cloned by each request routed here ([`InUse`]); one reference = no request in flight.
    in_use: Arc<()>,
}

/// The chains of a pass-through route, by requested model, with a use clock for eviction.
pub(super) struct PerModel<ReqB, ResB> {
    /// Keyed by the requested model with foldhash: every request looks its model up here, and
    /// SipHash (the std default) costs several times more per lookup. The map is bounded
    /// ([`MAX_MODELS_PER_ROUTE`]) and randomly seeded, so chosen names cannot pile up.
    pub(super) map: RwLock<HashMap<Arc<str>, ModelChain<ReqB, ResB>, foldhash::fast::RandomState>>,
    clock: AtomicU64,
}

impl<ReqB, ResB> Default for PerModel<ReqB, ResB> {
    fn default() -> Self {
        PerModel {
            map: RwLock::default(),
            clock: AtomicU64::new(0),
        }
    }
}

/// The chains of one route.
pub(super) enum RouteChains<ReqB, ResB> {
    /// Every target names its model: one chain, built at start, read without a lock.
    Fixed(Chain<ReqB, ResB>),
    /// A target passes the requested model through: one chain per requested model, built on
    /// first use (at most [`MAX_MODELS_PER_ROUTE`]; the least recently used idle one is evicted
    /// to make room).
    PerModel(PerModel<ReqB, ResB>),
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
                RouteChains::PerModel(models) => out.extend(
                    models
                        .map
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .values()
                        .map(|m| m.chain.clone()),
                ),
            }
        }
        out
    }

    /// The models of the per-model chains, route by route, each route's sorted.
    pub(super) fn requested_models(&self) -> Vec<String> {
        let mut out = Vec::new();
        for route in &self.routes {
            if let RouteChains::PerModel(models) = route {
                let map = models.map.read().unwrap_or_else(PoisonError::into_inner);
                let mut models: Vec<String> = map.keys().map(|m| m.to_string()).collect();
                models.sort_unstable();
                out.extend(models);
            }
        }
        out
    }

    /// The chain serving `model`: the first route whose glob matches; with the request's
    /// [`InUse`] mark when the chain is one of a pass-through route's (evictable) chains.
    ///
    /// The model name is checked first ([`check_model_name`]): an invalid one creates nothing.
    pub(super) fn service_for(
        &self,
        model: &str,
    ) -> Result<(RouteService<ReqB, ResB>, Option<InUse>), BoxError> {
        check_model_name(model).map_err(|e| InvalidRequest::new(InvalidReason::ModelName(e)))?;
        let (index, plan) = self
            .plan
            .routes
            .iter()
            .enumerate()
            .find(|(_, plan)| plan.glob.matches(model))
            .ok_or_else(|| NoRoute::new(model))?;
        match self.routes.get(index) {
            Some(RouteChains::Fixed(chain)) => Ok((chain.service.clone(), None)),
            Some(RouteChains::PerModel(models)) => self.per_model(index, plan, models, model),
            None => Err(NoRoute::new(model).into()),
        }
    }

    /// A pass-through route's chain for `model`. A hit costs a read lock, a map lookup and two
    /// atomic operations; a miss on a full route scans the route's chains once for the least
    /// recently used idle one and evicts it.
    fn per_model(
        &self,
        index: usize,
        plan: &RoutePlan,
        models: &PerModel<ReqB, ResB>,
        model: &str,
    ) -> Result<(RouteService<ReqB, ResB>, Option<InUse>), BoxError> {
        let hit = |m: &ModelChain<ReqB, ResB>| {
            let tick = models.clock.fetch_add(1, Ordering::Relaxed);
            m.last_used.store(tick, Ordering::Relaxed);
            (m.chain.service.clone(), Some(InUse(Arc::clone(&m.in_use))))
        };
        if let Some(m) = models
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
        {
            return Ok(hit(m));
        }
        // Marks are cloned under the read lock only, so under the write lock an idle chain
        // stays idle until it is removed.
        let mut map = models.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = map.get(model) {
            return Ok(hit(m));
        }
        let victim = if map.len() >= MAX_MODELS_PER_ROUTE {
            let victim = map
                .iter()
                .filter(|(_, m)| {
                    Arc::strong_count(&m.in_use) == 1
                        && !self
                            .targets
                            .busy(m.chain.own_targets.iter().map(String::as_str))
                })
                .min_by_key(|(_, m)| m.last_used.load(Ordering::Relaxed))
                .map(|(name, _)| Arc::clone(name));
            match victim {
                Some(victim) => Some(victim),
                None => {
                    return Err(
                        TooManyModels::new(plan.pattern.clone(), MAX_MODELS_PER_ROUTE).into(),
                    )
                }
            }
        } else {
            None
        };
        // Build first: a failed build leaves the route as it was.
        let chain = self.build(index, Some(model))?;
        if let Some(evicted) = victim.and_then(|name| map.remove(&name)) {
            self.release(&evicted.chain);
            tracing::debug!(
                route = %plan.pattern,
                evicted = %evicted.chain.key.escape_debug(),
                "evicted the least recently used idle model's chain"
            );
        }
        let entry = ModelChain {
            chain,
            last_used: AtomicU64::new(models.clock.fetch_add(1, Ordering::Relaxed)),
            in_use: Arc::new(()),
        };
        let ready = hit(&entry);
        map.insert(model.into(), entry);
        Ok(ready)
    }

    /// Give back the uses of a chain's targets: an entry no other chain uses goes (its breaker,
    /// bulkhead, retry budget).
    fn release(&self, chain: &Chain<ReqB, ResB>) {
        for name in chain.targets.iter() {
            self.targets.release(name);
        }
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
            .report_extension(self.plan.reports)
            .resume(plan.resume)
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
        let mut used: Vec<String> = Vec::with_capacity(plan.targets.len());
        let mut own: Vec<String> = Vec::new();
        // Whatever fails from here on gives back the targets taken so far: a failed build
        // leaves no breaker, bulkhead or health entry behind.
        let give_back = |used: &[String]| {
            for name in used {
                self.targets.release(name);
            }
        };
        for t in &plan.targets {
            let (chain_target, model) = match self.chain_target(t, requested) {
                Ok(x) => x,
                Err(e) => {
                    give_back(&used);
                    return Err(e);
                }
            };
            let target = Target::new(t.provider.clone(), model);
            let service = match self.targets.service(&target) {
                Ok(service) => service,
                Err(e) => {
                    give_back(&used);
                    return Err(e);
                }
            };
            let name = target.to_string();
            if t.model.is_none() {
                own.push(name.clone());
            }
            used.push(name);
            services.push((chain_target.target_name(), service));
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
        let key: Arc<str> = match requested {
            Some(model) => format!("{} -> {model}", plan.pattern).into(),
            None => plan.pattern.as_str().into(),
        };
        if let Some(shared) = &self.plan.layers.shared_state {
            // Replicas share a chain's cooldowns by its key (the route, and the requested model
            // for a pass-through route).
            builder = builder.shared_cooldowns(shared.cooldowns(&key));
        }
        let built = builder
            .build()
            .and_then(|layer| Ok((layer.handle(), layer.services(services)?)));
        let (handle, service) = match built {
            Ok(built) => built,
            Err(e) => {
                give_back(&used);
                return Err(e);
            }
        };
        if let Some(saved) = lock(&self.saved).remove(&*key) {
            handle.restore_snapshot(&saved);
        }
        Ok(Chain {
            key,
            service,
            handle,
            targets: used.into(),
            own_targets: own.into(),
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
        if let Some(params) = &provider.prefill {
            target = target.supports_prefill(true).prefill_params(params.clone());
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

/// The saved health; nothing when the file does not exist (a first start). A file that cannot
/// be read or parsed is an error naming the path, or with [`OnCorrupt::MoveAside`] is renamed to
/// `<file>.corrupt-<unix seconds>` (with a warning) and nothing is restored.
pub(super) fn load_saved(
    path: &Path,
    on_corrupt: OnCorrupt,
) -> Result<HashMap<String, HealthSnapshot>, String> {
    let problem = match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<SavedHealth>(&bytes) {
            Ok(saved) => return Ok(saved.chains),
            Err(e) => format!("cannot parse `{}`: {e}", path.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => format!("cannot read `{}`: {e}", path.display()),
    };
    match on_corrupt {
        OnCorrupt::Fail => Err(format!(
            "{problem}; fix or remove the file, or set `[health] on_corrupt = \"move_aside\"` \
             to start without it"
        )),
        OnCorrupt::MoveAside => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{secs}"));
            let aside = PathBuf::from(aside);
            std::fs::rename(path, &aside).map_err(|e| {
                format!(
                    "{problem}; and cannot move it to `{}`: {e}",
                    aside.display()
                )
            })?;
            tracing::warn!(
                path = %path.display(),
                moved_to = %aside.display(),
                problem = %problem,
                "health file unreadable: moved aside, starting without saved health"
            );
            Ok(HashMap::new())
        }
    }
}

/// Drop the saved entries the configuration no longer has: chains of routes that are gone (or
/// whose requested model another route now serves), and targets a chain no longer calls.
/// Returns `(chains, targets)` dropped.
pub(super) fn expire_stale(
    plan: &Plan,
    saved: &mut HashMap<String, HealthSnapshot>,
) -> (usize, usize) {
    let (mut chains, mut targets) = (0, 0);
    saved.retain(|key, snapshot| {
        let Some(expected) = expected_targets(plan, key) else {
            chains += 1;
            return false;
        };
        let before = snapshot.targets.len();
        snapshot
            .targets
            .retain(|t| expected.iter().any(|name| *name == *t.name));
        targets += before - snapshot.targets.len();
        true
    });
    (chains, targets)
}

/// The target names of the chain saved under `key`, when the configuration still has it.
fn expected_targets(plan: &Plan, key: &str) -> Option<Vec<String>> {
    let (index, requested) = plan.routes.iter().enumerate().find_map(|(i, route)| {
        if route.passthrough {
            let model = key
                .strip_prefix(route.pattern.as_str())?
                .strip_prefix(" -> ")?;
            Some((i, Some(model)))
        } else {
            (key == route.pattern).then_some((i, None))
        }
    })?;
    if let Some(model) = requested {
        // The model must still be routed here (the first matching route wins) and be a name
        // the stack accepts.
        check_model_name(model).ok()?;
        let first = plan.routes.iter().position(|r| r.glob.matches(model))?;
        if first != index {
            return None;
        }
    }
    let route = plan.routes.get(index)?;
    Some(
        route
            .targets
            .iter()
            .filter_map(|t| {
                let model = t.model.as_deref().or(requested)?;
                Some(Target::new(t.provider.clone(), model).to_string())
            })
            .collect(),
    )
}
