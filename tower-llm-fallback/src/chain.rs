//! The chain's shared state and the walk over its tiers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tower_llm_core::{AttemptRecord, ErrorKind};

use crate::cache::ResponseCache;
use crate::config::Selection;
use crate::cooldown::CooldownPolicy;
use crate::escalation::Escalator;
use crate::health::{Admission, HealthSnapshot};
use crate::resume::ResumeConfig;
use crate::static_tier::StaticAnswer;
use crate::target::TargetRuntime;

/// The most targets one chain holds (tried targets are tracked in a `u64` bit set).
pub const MAX_TARGETS: usize = 64;

/// One tier: targets tried before the next tier's.
#[derive(Debug)]
pub(crate) struct Tier {
    pub(crate) selection: Selection,
    pub(crate) members: Box<[usize]>,
}

/// Everything every clone of a chain shares, except the services.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) targets: Box<[TargetRuntime]>,
    pub(crate) tiers: Box<[Tier]>,
    pub(crate) cooldowns: CooldownPolicy,
    pub(crate) cache: Option<ResponseCache>,
    pub(crate) static_answer: Option<StaticAnswer>,
    pub(crate) escalator: Escalator,
    pub(crate) request_base_path: Box<str>,
    /// Whether a request must be kept for a later attempt or tier (false for a lone target with
    /// no cache and no static answer: the request is then moved, not copied).
    pub(crate) retains_request: bool,
    /// How committed streams that fail are resumed.
    pub(crate) resume: ResumeConfig,
    /// Whether answers carry the `FallbackReport` extension.
    pub(crate) report: bool,
    rng: AtomicU64,
}

/// Where one request is in the chain.
#[derive(Clone, Debug, Default)]
pub(crate) struct Walk {
    tier: usize,
    tried: u64,
    /// After a context-length failure: only targets with a larger declared window.
    floor: Option<u64>,
    /// Whether the chain was in panic mode (no target callable) when this request looked;
    /// decided once per request, the first time a target had to be skipped.
    panic: Option<bool>,
}

/// The next thing to do for a request.
#[derive(Debug)]
pub(crate) enum Step {
    /// Call target `idx` (as the probe of its lifted cooldown when `probe`).
    Call { idx: usize, probe: bool },
    /// Target skipped: benched.
    Skip(AttemptRecord),
    /// No target left.
    End,
}

impl Walk {
    /// Only targets with a declared context window larger than `window` from now on.
    pub(crate) fn raise_floor(&mut self, window: Option<u64>) {
        let window = window.unwrap_or(0);
        self.floor = Some(self.floor.map_or(window, |f| f.max(window)));
    }
}

fn bit(idx: usize) -> u64 {
    1u64 << (idx % MAX_TARGETS)
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        targets: Box<[TargetRuntime]>,
        tiers: Box<[Tier]>,
        cooldowns: CooldownPolicy,
        cache: Option<ResponseCache>,
        static_answer: Option<StaticAnswer>,
        escalator: Escalator,
        request_base_path: Box<str>,
        resume: ResumeConfig,
        seed: u64,
    ) -> Self {
        let retains_request = targets.len() > 1 || cache.is_some() || static_answer.is_some();
        Shared {
            targets,
            tiers,
            cooldowns,
            cache,
            static_answer,
            escalator,
            request_base_path,
            retains_request,
            resume,
            report: true,
            rng: AtomicU64::new(seed),
        }
    }

    /// splitmix64 over an atomic counter: lock-free, and reproducible from the seed when calls
    /// happen in a fixed order (tests).
    fn random(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn eligible(&self, walk: &Walk, idx: usize) -> bool {
        walk.tried & bit(idx) == 0
            && match walk.floor {
                None => true,
                Some(floor) => self
                    .targets
                    .get(idx)
                    .and_then(|t| t.context_window)
                    .is_some_and(|w| w > floor),
            }
    }

    /// Whether any target is still eligible for this request.
    pub(crate) fn any_left(&self, walk: &Walk) -> bool {
        (0..self.targets.len()).any(|i| self.eligible(walk, i))
    }

    /// Whether a target other than `idx`, not tried yet by this request, could be called now:
    /// then an attempt on `idx` is a single call (failing over beats backing off).
    pub(crate) fn another_available(&self, walk: &Walk, idx: usize, now: Instant) -> bool {
        self.targets
            .iter()
            .enumerate()
            .any(|(i, t)| i != idx && self.eligible(walk, i) && t.state.is_available(now))
    }

    /// Panic mode: no target of the chain can be called now.
    fn in_panic(&self, walk: &mut Walk, now: Instant) -> bool {
        *walk
            .panic
            .get_or_insert_with(|| !self.targets.iter().any(|t| t.state.is_available(now)))
    }

    /// An available, eligible member of `tier`, chosen by the tier's selection.
    fn pick(&self, tier: &Tier, walk: &Walk, now: Instant) -> Option<usize> {
        let live = |i: &&usize| {
            self.eligible(walk, **i)
                && self
                    .targets
                    .get(**i)
                    .is_some_and(|t| t.state.is_available(now))
        };
        match tier.selection {
            Selection::Ordered => tier.members.iter().find(live).copied(),
            Selection::LeastLoaded => tier
                .members
                .iter()
                .filter(live)
                .min_by_key(|i| {
                    self.targets
                        .get(**i)
                        .map_or(usize::MAX, |t| t.state.in_flight())
                })
                .copied(),
            Selection::Weighted => {
                let weight = |i: usize| u64::from(self.targets.get(i).map_or(0, |t| t.weight));
                let total: u64 = tier.members.iter().filter(live).map(|i| weight(*i)).sum();
                if total == 0 {
                    return tier.members.iter().find(live).copied();
                }
                let mut point = self.random() % total;
                let mut first = None;
                for i in tier.members.iter().filter(live) {
                    first = first.or(Some(*i));
                    let w = weight(*i);
                    if point < w {
                        return Some(*i);
                    }
                    point -= w;
                }
                // Availability changed between the two passes: take any live member.
                first
            }
        }
    }

    fn admit(&self, walk: &mut Walk, idx: usize, now: Instant) -> Step {
        walk.tried |= bit(idx);
        let Some(target) = self.targets.get(idx) else {
            return Step::End;
        };
        let mut admission = target.state.admit(now, &self.cooldowns);
        if matches!(admission, Admission::Skip { .. }) && self.in_panic(walk, now) {
            admission = target.state.admit_in_panic(now, &self.cooldowns);
        }
        match admission {
            Admission::Open => Step::Call { idx, probe: false },
            Admission::Probe => Step::Call { idx, probe: true },
            Admission::Skip { kind, retry_after } => {
                Step::Skip(skip_record(target, kind, retry_after))
            }
        }
    }

    /// The next step for a request at `walk`.
    pub(crate) fn next(&self, walk: &mut Walk, now: Instant) -> Step {
        while let Some(tier) = self.tiers.get(walk.tier) {
            if let Some(idx) = self.pick(tier, walk, now) {
                return self.admit(walk, idx, now);
            }
            // Nothing live in this tier: list its benched members as skipped, then move on.
            if let Some(idx) = tier
                .members
                .iter()
                .copied()
                .find(|i| self.eligible(walk, *i))
            {
                return self.admit(walk, idx, now);
            }
            walk.tier += 1;
        }
        Step::End
    }

    pub(crate) fn snapshot(&self) -> HealthSnapshot {
        let now = Instant::now();
        let wall = SystemTime::now();
        HealthSnapshot::new(
            self.targets
                .iter()
                .map(|t| t.state.snapshot(&t.name, &t.target, t.tier, now, wall))
                .collect(),
        )
    }
}

fn skip_record(
    target: &TargetRuntime,
    kind: ErrorKind,
    retry_after: Option<Duration>,
) -> AttemptRecord {
    metrics::counter!(
        crate::metrics::SKIPPED_TOTAL,
        crate::metrics::TARGET => target.name.clone(),
        crate::metrics::KIND => kind.as_str()
    )
    .increment(1);
    AttemptRecord {
        attempt: 0,
        target: Some(target.target.clone()),
        kind,
        status: None,
        elapsed: Duration::ZERO,
        retry_after,
    }
}
