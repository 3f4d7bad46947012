//! Retry budgets: retries may add at most a fraction of the first-attempt traffic, plus a small
//! floor, so a total outage costs about 1.2 upstream calls per request instead of 3.
//!
//! [`RetryBudget`] is tower's `TpsBudget` idea (from Finagle) made lock-free: every first attempt
//! deposits a token, every retry (and hedge) withdraws `1 / retry_ratio` tokens, deposits expire
//! after `ttl`, and a reserve of `min_per_sec × ttl` retries keeps low-traffic clients able to
//! retry at all. The balance lives in ten time slots of packed atomics: deposits and withdrawals
//! are a compare-and-swap, never a lock. Clones share the same budget, so one budget cloned into
//! many services (or several retry layers) is one budget.
//!
//! Under races two withdrawals may both see the last token; the overdraft is bounded by the
//! number of threads and shows up as a negative balance that later deposits repay.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_retry::RetryBudget;
//!
//! // 20% of first attempts, no floor.
//! let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2).unwrap();
//! for _ in 0..10 {
//!     budget.deposit(); // ten first attempts...
//! }
//! assert!(budget.withdraw()); // ...pay for two retries
//! assert!(budget.withdraw());
//! assert!(!budget.withdraw());
//!
//! let shared = budget.clone();
//! shared.deposit();
//! assert!((budget.balance() - 0.2).abs() < 1e-9, "clones share one balance");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tower_llm_core::{ConfigError, Target};

/// Number of time slots the ttl window is split into.
const SLOTS: usize = 10;
/// Tokens one first attempt deposits (fixed point: fractional ratios need a finer unit).
const DEPOSIT: i64 = 1_000;
/// Bound on how many per-target budgets a keyed budget keeps; further targets share one.
const MAX_KEYS: usize = 1_024;

/// A retry budget shared by every clone. See the [module docs](self).
#[derive(Clone)]
pub struct RetryBudget {
    bucket: Arc<Bucket>,
}

struct Bucket {
    ttl: Duration,
    min_per_sec: u32,
    retry_ratio: f32,
    deposit: i64,
    withdraw: i64,
    reserve: i64,
    slot_nanos: u64,
    epoch: Instant,
    /// Each slot packs (window number: high 32 bits, signed balance: low 32 bits).
    slots: [AtomicU64; SLOTS],
}

/// How long a deposit of the default budget counts ([`RetryBudget::default_budget`]).
pub const DEFAULT_BUDGET_TTL: Duration = Duration::from_secs(10);
/// Retries per second the default budget always allows.
pub const DEFAULT_BUDGET_MIN_PER_SEC: u32 = 5;
/// Retries per first attempt the default budget allows beyond its floor (0.2 = 20%).
pub const DEFAULT_BUDGET_RETRY_RATIO: f32 = 0.2;

impl RetryBudget {
    /// A budget whose deposits last `ttl` (1 s to 60 s), which always allows `min_per_sec`
    /// retries per second on average, and beyond that `retry_ratio` retries per first attempt
    /// (0.2 = 20%; 0 to 1000).
    pub fn new(ttl: Duration, min_per_sec: u32, retry_ratio: f32) -> Result<Self, ConfigError> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "budget.ttl",
                format!("must be between 1s and 60s, got {ttl:?}"),
            ));
        }
        if !retry_ratio.is_finite() || !(0.0..=1000.0).contains(&retry_ratio) {
            return Err(ConfigError::new(
                "budget.retry_ratio",
                format!("must be between 0 and 1000, got {retry_ratio}"),
            ));
        }
        if min_per_sec > 1_000_000 {
            return Err(ConfigError::new(
                "budget.min_per_sec",
                format!("must be at most 1000000, got {min_per_sec}"),
            ));
        }
        Ok(Self::build(ttl, min_per_sec, retry_ratio))
    }

    /// The default budget: 20% of first attempts plus 5 retries per second, over 10 s
    /// ([`DEFAULT_BUDGET_TTL`], [`DEFAULT_BUDGET_MIN_PER_SEC`], [`DEFAULT_BUDGET_RETRY_RATIO`]).
    pub fn default_budget() -> Self {
        Self::build(
            DEFAULT_BUDGET_TTL,
            DEFAULT_BUDGET_MIN_PER_SEC,
            DEFAULT_BUDGET_RETRY_RATIO,
        )
    }

    fn build(ttl: Duration, min_per_sec: u32, retry_ratio: f32) -> Self {
        let (deposit, withdraw) = if retry_ratio <= 0.0 {
            // Deposits buy nothing; only the reserve pays for retries.
            (0, DEPOSIT)
        } else {
            let withdraw = (DEPOSIT as f64 / f64::from(retry_ratio)).round();
            (DEPOSIT, (withdraw as i64).max(1))
        };
        let reserve = (f64::from(min_per_sec) * ttl.as_secs_f64()).floor() as i64 * withdraw;
        let slot_nanos = u64::try_from(ttl.as_nanos() / SLOTS as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        // Start every slot in a window that is long expired.
        let stale = pack(u32::MAX / 2, 0);
        RetryBudget {
            bucket: Arc::new(Bucket {
                ttl,
                min_per_sec,
                retry_ratio,
                deposit,
                withdraw,
                reserve,
                slot_nanos,
                epoch: Instant::now(),
                slots: std::array::from_fn(|_| AtomicU64::new(stale)),
            }),
        }
    }

    /// How long a deposit counts.
    pub fn ttl(&self) -> Duration {
        self.bucket.ttl
    }

    /// The retries per second always allowed.
    pub fn min_per_sec(&self) -> u32 {
        self.bucket.min_per_sec
    }

    /// The retries allowed per first attempt.
    pub fn retry_ratio(&self) -> f32 {
        self.bucket.retry_ratio
    }

    /// Record a first attempt.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Record a first attempt made at `now` (saves a clock read on the hot path).
    pub(crate) fn deposit_at(&self, now: Instant) {
        let amount = self.bucket.deposit;
        if amount != 0 {
            self.bucket.add_at(amount, now);
        }
    }

    /// Take the tokens for one retry; `false` when the budget cannot afford it.
    pub fn withdraw(&self) -> bool {
        let b = &*self.bucket;
        if b.sum() < b.withdraw {
            return false;
        }
        b.add(-b.withdraw);
        true
    }

    /// How many retries the budget could pay for now (fractional; negative after an overdraft).
    pub fn balance(&self) -> f64 {
        self.bucket.sum() as f64 / self.bucket.withdraw as f64
    }

    /// Whether two handles share one balance.
    pub fn same_as(&self, other: &RetryBudget) -> bool {
        Arc::ptr_eq(&self.bucket, &other.bucket)
    }

    /// A fresh budget with the same settings (its own balance).
    pub fn fresh(&self) -> RetryBudget {
        Self::build(
            self.bucket.ttl,
            self.bucket.min_per_sec,
            self.bucket.retry_ratio,
        )
    }
}

impl Default for RetryBudget {
    /// See [`RetryBudget::default_budget`].
    fn default() -> Self {
        Self::default_budget()
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.bucket.ttl)
            .field("min_per_sec", &self.bucket.min_per_sec)
            .field("retry_ratio", &self.bucket.retry_ratio)
            .field("balance", &self.balance())
            .finish()
    }
}

const fn pack(window: u32, value: i32) -> u64 {
    ((window as u64) << 32) | (value as u32 as u64)
}

const fn unpack(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

impl Bucket {
    /// The current window number (wraps after 2^32 windows: 13 years at the smallest ttl).
    fn window(&self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        (elapsed / u128::from(self.slot_nanos)) as u32
    }

    fn add(&self, amount: i64) {
        self.add_at(amount, Instant::now());
    }

    fn add_at(&self, amount: i64, now: Instant) {
        let window = self.window(now);
        let slot = &self.slots[window as usize % SLOTS];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_window, value) = unpack(current);
            let base = if slot_window == window {
                i64::from(value)
            } else {
                0
            };
            let updated = (base + amount).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            match slot.compare_exchange_weak(
                current,
                pack(window, updated),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Reserve plus every live slot (a slot is live for `SLOTS` windows).
    fn sum(&self) -> i64 {
        let window = self.window(Instant::now());
        self.slots.iter().fold(self.reserve, |sum, slot| {
            let (slot_window, value) = unpack(slot.load(Ordering::Acquire));
            if window.wrapping_sub(slot_window) < SLOTS as u32 {
                sum.saturating_add(i64::from(value))
            } else {
                sum
            }
        })
    }
}

/// How a retry layer's calls share budgets: see `RetryConfigBuilder::budget`,
/// `budget_per_target` and `no_budget`.
#[derive(Clone)]
pub(crate) enum Budgets {
    Unlimited,
    Shared(RetryBudget),
    PerTarget(Arc<KeyedBudgets>),
}

pub(crate) struct KeyedBudgets {
    /// The settings template; also the budget of calls without a target and of targets beyond
    /// the key bound.
    template: RetryBudget,
    by_target: RwLock<HashMap<Target, RetryBudget>>,
}

impl Budgets {
    pub(crate) fn per_target(template: RetryBudget) -> Self {
        Budgets::PerTarget(Arc::new(KeyedBudgets {
            template,
            by_target: RwLock::new(HashMap::new()),
        }))
    }

    /// The budget a call to `target` draws on.
    pub(crate) fn for_target(&self, target: Option<&Target>) -> Option<RetryBudget> {
        match self {
            Budgets::Unlimited => None,
            Budgets::Shared(b) => Some(b.clone()),
            Budgets::PerTarget(keyed) => Some(keyed.get(target)),
        }
    }

    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Budgets::Unlimited => "unlimited",
            Budgets::Shared(_) => "shared",
            Budgets::PerTarget(_) => "per_target",
        }
    }

    /// The shared budget, or the template of per-target budgets.
    pub(crate) fn template(&self) -> Option<&RetryBudget> {
        match self {
            Budgets::Unlimited => None,
            Budgets::Shared(b) => Some(b),
            Budgets::PerTarget(k) => Some(&k.template),
        }
    }

    /// The budget calls to `target` draw on, without creating one.
    pub(crate) fn peek(&self, target: &Target) -> Option<RetryBudget> {
        match self {
            Budgets::Unlimited => None,
            Budgets::Shared(b) => Some(b.clone()),
            Budgets::PerTarget(keyed) => keyed.read().get(target).cloned(),
        }
    }

    /// The targets that have a budget of their own, and their budgets (empty unless per target).
    pub(crate) fn by_target(&self) -> Vec<(Target, RetryBudget)> {
        match self {
            Budgets::PerTarget(keyed) => keyed
                .read()
                .iter()
                .map(|(t, b)| (t.clone(), b.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl KeyedBudgets {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Target, RetryBudget>> {
        self.by_target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, target: Option<&Target>) -> RetryBudget {
        let Some(target) = target else {
            return self.template.clone();
        };
        {
            let map = self
                .by_target
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(b) = map.get(target) {
                return b.clone();
            }
        }
        let mut map = self
            .by_target
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(target) {
            return b.clone();
        }
        if map.len() >= MAX_KEYS {
            return self.template.clone();
        }
        let fresh = self.template.fresh();
        map.insert(target.clone(), fresh.clone());
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert_eq!(
            RetryBudget::new(Duration::from_millis(10), 1, 0.2)
                .unwrap_err()
                .field(),
            "budget.ttl"
        );
        assert_eq!(
            RetryBudget::new(Duration::from_secs(61), 1, 0.2)
                .unwrap_err()
                .field(),
            "budget.ttl"
        );
        assert_eq!(
            RetryBudget::new(Duration::from_secs(1), 1, f32::NAN)
                .unwrap_err()
                .field(),
            "budget.retry_ratio"
        );
        assert_eq!(
            RetryBudget::new(Duration::from_secs(1), 1, -1.0)
                .unwrap_err()
                .field(),
            "budget.retry_ratio"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_and_floor() {
        // 1 retry/s floor over 10 s = 10 retries of reserve, plus 20% of 50 deposits = 10.
        let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.2).unwrap();
        for _ in 0..50 {
            budget.deposit();
        }
        let allowed = (0..100).take_while(|_| budget.withdraw()).count();
        assert_eq!(allowed, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ratio_only_reserve() {
        let budget = RetryBudget::new(Duration::from_secs(1), 3, 0.0).unwrap();
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!((0..100).take_while(|_| budget.withdraw()).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_ttl() {
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 1.0).unwrap();
        budget.deposit();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!budget.withdraw());

        budget.deposit();
        budget.deposit();
        tokio::time::advance(Duration::from_millis(850)).await;
        assert!(budget.withdraw(), "850ms later the deposits still count");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(!budget.withdraw(), "after the ttl they are gone");
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_expire_too() {
        // The floor refills: a withdrawal made against the reserve is forgotten after the ttl.
        let budget = RetryBudget::new(Duration::from_secs(1), 2, 0.2).unwrap();
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        tokio::time::advance(Duration::from_millis(1_100)).await;
        assert!(budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn per_target_budgets_are_separate() {
        let budgets =
            Budgets::per_target(RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap());
        let a = Target::new("openai", "gpt-4o");
        let b = Target::new("groq", "llama");
        budgets.for_target(Some(&a)).unwrap().deposit();
        assert!(budgets
            .for_target(Some(&a))
            .unwrap()
            .same_as(&budgets.for_target(Some(&a)).unwrap()));
        assert!(!budgets.for_target(Some(&b)).unwrap().withdraw());
        assert!(budgets.for_target(Some(&a)).unwrap().withdraw());
        assert!(!budgets.for_target(None).unwrap().withdraw());
    }

    #[test]
    fn pack_round_trips() {
        for (w, v) in [(0, 0), (7, -5), (u32::MAX, i32::MIN), (12, i32::MAX)] {
            assert_eq!(unpack(pack(w, v)), (w, v));
        }
    }

    #[test]
    fn concurrent_deposits_are_all_counted() {
        // Real time, no runtime: four threads hammer one budget.
        let budget = RetryBudget::new(Duration::from_secs(60), 0, 1.0).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let b = budget.clone();
                s.spawn(move || (0..1000).for_each(|_| b.deposit()));
            }
        });
        assert!((budget.balance() - 4000.0).abs() < 1e-9);
    }
}
