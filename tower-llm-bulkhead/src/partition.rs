//! Partitions: one set of limits each, and the bounded table that holds them.
//!
//! The concurrency limit of a partition is a hand-written semaphore with a lock-free fast path:
//! calls in flight and calls waiting share one atomic word, so an admission or a release with
//! nobody waiting is a single compare-and-swap. Only when calls wait does a short mutex guard
//! the FIFO wait queue; a release then hands its slot straight to the oldest waiter (no barging:
//! while anyone waits, newcomers queue behind them), which keeps the maximum wait meaningful.
//! (tokio's `Semaphore`, used by tower's `ConcurrencyLimit`, takes its waiter mutex on every
//! release.)

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;
use tower_llm_core::{BulkheadFull, LimitKind};

use crate::adaptive::{Aimd, Signal};
use crate::clock::{saturating_nanos, TokioClock};
use crate::config::{PartitionConfig, PartitionOverflow, TargetLabel};
use crate::key::PartitionKey;
use crate::metrics::{PartitionMetrics, OVERFLOW_TARGET};
use crate::rate::RequestRate;
use crate::shared::{signed, SharedLimiter, SharedLimits};
use crate::tokens::TokenBudget;

/// One `waiting` in the packed state word.
const ONE_WAITING: u64 = 1 << 32;

fn unpack(state: u64) -> (usize, usize) {
    ((state & 0xffff_ffff) as usize, (state >> 32) as usize)
}

/// The limits and live state of one partition.
pub(crate) struct Partition {
    pub(crate) name: Arc<str>,
    /// Calls in flight (low 32 bits) and calls waiting (high 32 bits).
    state: AtomicU64,
    /// The concurrency limit (moves when adaptive).
    limit: AtomicUsize,
    max_queued: usize,
    pub(crate) max_wait: Duration,
    queue: Mutex<WaitQueue>,
    clock: TokioClock,
    pub(crate) rate: Option<RequestRate>,
    pub(crate) tokens: Option<TokenBudget>,
    /// Where the rate and token decisions are taken first, when shared between replicas.
    pub(crate) shared: Option<SharedLimits>,
    adaptive: Option<Aimd>,
    pub(crate) metrics: PartitionMetrics,
}

#[derive(Default)]
struct WaitQueue {
    next_id: u64,
    waiters: VecDeque<Waiter>,
    drain: Drain,
}

/// How fast the wait queue drains: the interval between consecutive hand-overs while calls
/// wait, smoothed. Read and written under the queue's lock only (the lock-free paths never touch
/// it).
///
/// Only hand-overs of one queue episode are compared: the wait from the moment a queue forms to
/// its first hand-over is the rest of a call already running, which says nothing of the rate
/// (after a burst it is most of a call's length, and would read as a slot freed per call length).
///
/// A queue that stops moving overrides the estimate: a partition whose slots all hang (an
/// upstream stalling its streams) would otherwise keep admitting waiters up to `max_queued` on an
/// old or missing measurement, each to wait its whole maximum wait before failing over. The
/// standstill is counted in arrival time, not wall time: each gap between two calls joining
/// (or between a hand-over and the next call) adds at most [`STILL_STEP`], so a pause of the
/// process or the machine, after which the piled-up arrivals and hand-overs all run at once,
/// reads as one step rather than as a stuck queue (soak run G: calls turned away after an 8 s
/// steal storm). And it counts only once it is both longer than [`STILL_FLOOR`] and, when the
/// drain is measured, [`STILL_OVER_ESTIMATE`] times the estimate: hand-overs come in clumps, and
/// the time since the last one says little about the next until it is far longer than usual.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Drain {
    /// Smoothed nanoseconds between hand-overs; 0 until measured.
    interval: u64,
    /// The last hand-over of the current queue episode (ns on the partition's clock).
    mark: Option<u64>,
    /// When the last hand-over happened (ns).
    last: u64,
    /// How long the queue has not moved, in arrival time (ns): see [`Drain::arrived`].
    still: u64,
    /// The last arrival or hand-over (ns), where the next gap is counted from.
    seen: u64,
}

/// The weight of a new sample in the smoothed drain interval, as a shift (1/16: hand-overs come
/// in clumps, and at 1/8 the estimate swung enough to admit calls that then timed out).
const DRAIN_SMOOTHING_SHIFT: u32 = 4;

/// The longest sample taken, in multiples of the current estimate.
const DRAIN_MAX_STEP: u64 = 4;

/// The most one gap between arrivals adds to a queue's standstill, in ns (1 ms; see [`Drain`]).
const STILL_STEP: u64 = 1_000_000;

/// The shortest standstill taken into account, in ns (10 ms): shorter ones are scheduling noise.
const STILL_FLOOR: u64 = 10_000_000;

/// How many times the measured drain interval a standstill must last to override it.
const STILL_OVER_ESTIMATE: u64 = 8;

/// How long a drain measurement stays valid after the last hand-over: older, a queue that forms
/// starts unmeasured (the load it was measured under may be gone).
const DRAIN_MEMORY: Duration = Duration::from_secs(1);

impl Drain {
    /// The queue formed (its first waiter is joining) at `now`.
    pub(crate) fn formed(&mut self, now: u64) {
        self.mark = None;
        self.still = 0;
        self.seen = now;
        if now.saturating_sub(self.last) > saturating_nanos(DRAIN_MEMORY) {
            self.interval = 0;
        }
    }

    /// A slot was handed to a waiter at `now`.
    pub(crate) fn handed_over(&mut self, now: u64) {
        if let Some(mark) = self.mark {
            let sample = now.saturating_sub(mark).max(1);
            self.interval = if self.interval == 0 {
                sample
            } else {
                // One long gap (the process or the machine paused: every hand-over then waits
                // at once) moves the estimate a little, not twenty-fold right when the calls
                // that piled up in the pause arrive; a real slowdown still lifts it by up to
                // 3/16 per hand-over.
                let sample = sample.min(self.interval.saturating_mul(DRAIN_MAX_STEP));
                let old = self.interval;
                (old - (old >> DRAIN_SMOOTHING_SHIFT) + (sample >> DRAIN_SMOOTHING_SHIFT)).max(1)
            };
        }
        self.mark = Some(now);
        self.last = now;
        self.still = 0;
        self.seen = now;
    }

    /// A call is joining the queue at `now` (after [`Drain::formed`] for the first one): the
    /// standstill grows by the gap since the last arrival or hand-over, up to [`STILL_STEP`].
    pub(crate) fn arrived(&mut self, now: u64) {
        self.still = self
            .still
            .saturating_add(now.saturating_sub(self.seen).min(STILL_STEP));
        self.seen = self.seen.max(now);
    }

    /// The expected wait, in nanoseconds, of a call joining behind `ahead` waiters: `ahead + 1`
    /// drain intervals, an interval being the measured one or, when the queue has stood still
    /// long enough to override it (see [`Drain`]), the standstill. `None` while neither is known
    /// (nothing measured and no standstill yet: a burst arriving at once queues whole).
    pub(crate) fn expected_wait(&self, ahead: usize) -> Option<u64> {
        let overrides = self.still >= STILL_FLOOR
            && self.still > self.interval.saturating_mul(STILL_OVER_ESTIMATE);
        let interval = if overrides { self.still } else { self.interval };
        (interval != 0).then(|| interval.saturating_mul(ahead as u64 + 1))
    }
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

/// A place in a partition's wait queue; [`Partition::leave`] must be called unless granted.
pub(crate) struct Ticket {
    id: u64,
    pub(crate) granted: oneshot::Receiver<()>,
}

/// The outcome of joining the wait queue.
pub(crate) enum Enqueue {
    /// A slot was free after all.
    Acquired,
    /// Waiting: the ticket's receiver resolves when a slot is handed over.
    Queued(Ticket),
    /// The queue is full (`max_queued` calls wait).
    Full,
    /// The calls already waiting would take longer to drain than the call may wait.
    TooSlow,
}

impl Partition {
    /// A partition named `name` whose metrics are labelled `target`; `shared`: the shared
    /// limiter and this partition's scope in it.
    pub(crate) fn new(
        target: &Arc<str>,
        name: Arc<str>,
        config: &PartitionConfig,
        clock: TokioClock,
        shared: Option<(&Arc<dyn SharedLimiter>, Arc<str>)>,
    ) -> Self {
        let metrics = PartitionMetrics::new(target, config.max_concurrent);
        Partition {
            state: AtomicU64::new(0),
            limit: AtomicUsize::new(config.max_concurrent),
            max_queued: config.max_queued,
            max_wait: config.max_wait,
            queue: Mutex::new(WaitQueue::default()),
            clock,
            rate: config.rate.as_ref().map(|r| RequestRate::new(r, clock)),
            tokens: config.tokens.as_ref().map(|t| TokenBudget::new(t, clock)),
            shared: shared.and_then(|(limiter, scope)| SharedLimits::new(limiter, scope, config)),
            adaptive: config.adaptive.as_ref().map(|a| Aimd::new(a, clock)),
            metrics,
            name,
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, WaitQueue> {
        // Nothing panics while holding the lock, but a poisoned queue is still consistent.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls in flight.
    pub(crate) fn in_flight(&self) -> usize {
        unpack(self.state.load(Ordering::Acquire)).0
    }

    /// Calls waiting for a slot.
    pub(crate) fn queued(&self) -> usize {
        unpack(self.state.load(Ordering::Acquire)).1
    }

    /// The current concurrency limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Whether a full partition may make calls wait at all.
    pub(crate) fn may_wait(&self) -> bool {
        self.max_queued > 0 && !self.max_wait.is_zero()
    }

    /// Whether the wait queue is full right now (a hint; [`enqueue`](Self::enqueue) decides).
    pub(crate) fn queue_full(&self) -> bool {
        self.queued() >= self.max_queued
    }

    /// Whether this partition tracks usage-based token corrections.
    pub(crate) fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Take a slot if one is free and nobody waits (the lock-free fast path).
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let (in_flight, waiting) = unpack(state);
            if waiting != 0 || in_flight >= limit {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.metrics.in_flight().increment(1.0);
                    return true;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Take a slot, or join the wait queue if it has room: fewer than `max_queued` calls wait,
    /// and (when `may_wait` is set) the calls ahead are expected to drain within it.
    pub(crate) fn enqueue(&self, may_wait: Option<Duration>) -> Enqueue {
        let mut queue = self.lock_queue();
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let (in_flight, waiting) = unpack(state);
            let limit = self.limit.load(Ordering::Acquire);
            let (next, queued) = if waiting == 0 && in_flight < limit {
                (state + 1, false)
            } else if waiting >= self.max_queued {
                return Enqueue::Full;
            } else {
                let now = self.clock.elapsed_nanos();
                if queue.waiters.is_empty() {
                    queue.drain.formed(now);
                }
                queue.drain.arrived(now);
                if let (Some(may_wait), Some(expected)) =
                    (may_wait, queue.drain.expected_wait(waiting))
                {
                    if expected > saturating_nanos(may_wait) {
                        return Enqueue::TooSlow;
                    }
                }
                (state + ONE_WAITING, true)
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if queued => {
                    let (grant, granted) = oneshot::channel();
                    let id = queue.next_id;
                    queue.next_id = queue.next_id.wrapping_add(1);
                    queue.waiters.push_back(Waiter { id, grant });
                    self.metrics.queued().increment(1.0);
                    return Enqueue::Queued(Ticket { id, granted });
                }
                Ok(_) => {
                    self.metrics.in_flight().increment(1.0);
                    return Enqueue::Acquired;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Leave the wait queue (timed out or cancelled). Returns `true` when a slot had been handed
    /// over in the meantime: the caller then holds it and must use or release it.
    pub(crate) fn leave(&self, ticket: &mut Ticket) -> bool {
        let mut queue = self.lock_queue();
        if ticket.granted.try_recv().is_ok() {
            return true;
        }
        if let Some(pos) = queue.waiters.iter().position(|w| w.id == ticket.id) {
            queue.waiters.remove(pos);
            self.state.fetch_sub(ONE_WAITING, Ordering::AcqRel);
            self.metrics.queued().decrement(1.0);
        }
        false
    }

    /// Give a slot back: to the oldest waiter if any, else to the partition.
    #[inline]
    pub(crate) fn release(&self) {
        // The common case: nobody waits, one compare-and-swap.
        let state = self.state.load(Ordering::Acquire);
        if unpack(state).1 == 0
            && self
                .state
                .compare_exchange(state, state - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.metrics.in_flight().decrement(1.0);
            return;
        }
        self.release_contended();
    }

    #[inline(never)]
    fn release_contended(&self) {
        loop {
            let state = self.state.load(Ordering::Acquire);
            let (in_flight, waiting) = unpack(state);
            let limit = self.limit.load(Ordering::Acquire);
            if waiting == 0 || in_flight > limit {
                if self
                    .state
                    .compare_exchange_weak(state, state - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.metrics.in_flight().decrement(1.0);
                    return;
                }
            } else if self.hand_off() {
                return;
            }
        }
    }

    /// Hand the caller's slot to the oldest waiter. `false` when there is nobody to hand it to
    /// (any more) and the caller still holds it.
    fn hand_off(&self) -> bool {
        let mut queue = self.lock_queue();
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let (in_flight, waiting) = unpack(state);
            let limit = self.limit.load(Ordering::Acquire);
            if waiting == 0 || in_flight > limit || queue.waiters.is_empty() {
                return false;
            }
            match self.state.compare_exchange(
                state,
                state - ONE_WAITING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.metrics.queued().decrement(1.0);
                    let now = self.clock.elapsed_nanos();
                    queue.drain.handed_over(now);
                    // Waiters leave the queue under this lock before dropping their receiver, so
                    // the send succeeds; if it did not, the caller still holds the slot.
                    return queue
                        .waiters
                        .pop_front()
                        .is_some_and(|w| w.grant.send(()).is_ok());
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Admit waiters into slots the limit has room for (after the limit grew).
    fn admit_waiters(&self) {
        let mut queue = self.lock_queue();
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let (in_flight, waiting) = unpack(state);
            let limit = self.limit.load(Ordering::Acquire);
            if waiting == 0 || in_flight >= limit || queue.waiters.is_empty() {
                return;
            }
            let next = state - ONE_WAITING + 1;
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.metrics.queued().decrement(1.0);
                    self.metrics.in_flight().increment(1.0);
                    let sent = queue
                        .waiters
                        .pop_front()
                        .is_some_and(|w| w.grant.send(()).is_ok());
                    if !sent {
                        self.state.fetch_sub(1, Ordering::AcqRel);
                        self.metrics.in_flight().decrement(1.0);
                    }
                    state = self.state.load(Ordering::Acquire);
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Feed one completed call to the adaptive limit, if this partition adapts.
    pub(crate) fn adapt(&self, signal: impl FnOnce(&Aimd) -> Signal) {
        let Some(aimd) = &self.adaptive else { return };
        let signal = signal(aimd);
        let limit = self.limit.load(Ordering::Acquire);
        let Some(next) = aimd.next_limit(signal, limit, self.in_flight()) else {
            return;
        };
        if self
            .limit
            .compare_exchange(limit, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.metrics.limit_moved(limit, next);
        if next > limit {
            tracing::trace!(partition = %self.name, limit = next, "adaptive concurrency limit raised");
            self.admit_waiters();
        } else {
            tracing::debug!(partition = %self.name, limit = next, "adaptive concurrency limit lowered");
        }
    }

    /// Correct the token budget after a call estimated at `estimated` tokens reported `actual`:
    /// the shared budget when the call was charged there (`shared`), else the local one.
    pub(crate) fn correct_tokens(&self, estimated: u64, actual: u64, shared: bool) {
        let Some(budget) = &self.tokens else { return };
        if shared {
            if let Some(limits) = &self.shared {
                limits.adjust(signed(actual).saturating_sub(signed(estimated)));
            }
        } else if actual < estimated {
            budget.refund(estimated - actual);
        } else if actual > estimated {
            budget.debit(actual - estimated);
        }
        if actual < estimated {
            self.metrics.corrected(true, estimated - actual);
        } else if actual > estimated {
            self.metrics.corrected(false, actual - estimated);
        }
    }

    /// Give back `tokens` charged for a call that was not sent.
    pub(crate) fn refund_tokens(&self, tokens: u64, shared: bool) {
        if tokens == 0 {
            return;
        }
        match (&self.shared, &self.tokens) {
            (Some(limits), _) if shared => limits.adjust(-signed(tokens)),
            (_, Some(budget)) if !shared => budget.refund(tokens),
            _ => {}
        }
    }

    /// Whether this partition is adaptive.
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// A rejection on `limit`, recorded in metrics and traced.
    #[cold]
    #[inline(never)]
    pub(crate) fn reject(
        &self,
        limit: LimitKind,
        waited: Duration,
        retry_after: Option<Duration>,
    ) -> BulkheadFull {
        let in_flight = self.in_flight();
        self.metrics.rejected(limit);
        tracing::debug!(
            partition = %self.name,
            limit = limit.as_str(),
            in_flight,
            waited_ms = waited.as_millis() as u64,
            retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
            "bulkhead rejected a call"
        );
        let full = BulkheadFull::new(Arc::clone(&self.name), limit, in_flight, waited);
        match retry_after {
            Some(after) => full.with_retry_after(after),
            None => full,
        }
    }

    /// Nothing in flight or waiting, and rate and token state back to full.
    fn is_idle(&self, now: u64) -> bool {
        self.state.load(Ordering::Acquire) == 0
            && self.rate.as_ref().is_none_or(|r| r.is_idle(now))
            && self.tokens.as_ref().is_none_or(|t| t.is_idle(now))
    }

    pub(crate) fn snapshot(&self) -> PartitionSnapshot {
        PartitionSnapshot {
            partition: Arc::clone(&self.name),
            in_flight: self.in_flight(),
            queued: self.queued(),
            limit: self.limit(),
            tokens_available: self.tokens.as_ref().map(TokenBudget::available),
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Nothing is in flight or waiting (permits and waiters hold the partition); its limit
        // leaves the gauge it was added to.
        self.metrics.dropped(self.limit());
    }
}

/// The state of one partition at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionSnapshot {
    /// The partition's name (its key, or the bulkhead's name when unpartitioned).
    pub partition: Arc<str>,
    /// Calls holding a permit.
    pub in_flight: usize,
    /// Calls waiting for a permit.
    pub queued: usize,
    /// The current concurrency limit.
    pub limit: usize,
    /// Tokens left in the budget, when the partition has a token limit.
    pub tokens_available: Option<u64>,
}

/// The shared limiter's scope of partition `partition` of bulkhead `bulkhead`.
fn shared_scope(bulkhead: &str, partition: &str) -> Arc<str> {
    Arc::from(format!("{bulkhead}/{partition}"))
}

/// Limits for particular partitions, by key.
pub(crate) type Overrides<K> = Arc<dyn Fn(&K) -> Option<PartitionConfig> + Send + Sync>;

/// How often, at most, a full table looks for idle partitions to evict.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Shards of a keyed table (each its own lock).
const SHARDS: usize = 16;

/// The state every clone of one bulkhead service shares.
pub(crate) struct Shared<K> {
    pub(crate) name: Arc<str>,
    label: TargetLabel,
    defaults: PartitionConfig,
    overrides: Option<Overrides<K>>,
    clock: TokioClock,
    table: Table<K>,
    limiter: Option<Arc<dyn SharedLimiter>>,
}

enum Table<K> {
    Single(Arc<Partition>),
    Keyed(Box<Keyed<K>>),
}

/// A key with its hash, computed once with the table's `RandomState` (keys may come from
/// clients, so the hash stays keyed): the hash picks the shard and is the in-shard hash, so a
/// lookup hashes the key once.
struct Prehashed<K> {
    hash: u64,
    key: K,
}

impl<K: PartialEq> PartialEq for Prehashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Prehashed<K> {}

impl<K> Hash for Prehashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The in-shard hasher: passes the precomputed hash through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Prehashed`; fold anything else in rather than lose it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ShardMap<K> = HashMap<Prehashed<K>, Arc<Partition>, BuildHasherDefault<PassThrough>>;

struct Keyed<K> {
    shards: [RwLock<ShardMap<K>>; SHARDS],
    hasher: RandomState,
    len: AtomicUsize,
    max: usize,
    overflow: Option<Arc<Partition>>,
    next_sweep: AtomicU64,
}

/// How a [`Shared`] table is laid out.
pub(crate) struct TableLayout<K> {
    pub(crate) single: bool,
    pub(crate) label: TargetLabel,
    pub(crate) max_partitions: usize,
    pub(crate) overflow: PartitionOverflow,
    pub(crate) overrides: Option<Overrides<K>>,
    pub(crate) limiter: Option<Arc<dyn SharedLimiter>>,
}

impl<K: PartitionKey> Shared<K> {
    pub(crate) fn new(name: Arc<str>, defaults: PartitionConfig, layout: TableLayout<K>) -> Self {
        let clock = TokioClock::new();
        let label = layout.label;
        let table = if layout.single {
            Table::Single(Arc::new(Partition::new(
                &name,
                Arc::clone(&name),
                &defaults,
                clock,
                layout.limiter.as_ref().map(|l| (l, Arc::clone(&name))),
            )))
        } else {
            let overflow = match layout.overflow {
                PartitionOverflow::Shared => {
                    let overflow: Arc<str> = Arc::from(OVERFLOW_TARGET);
                    let target = match label {
                        TargetLabel::Partition => Arc::clone(&overflow),
                        TargetLabel::Name => Arc::clone(&name),
                    };
                    let scope = shared_scope(&name, &overflow);
                    Some(Arc::new(Partition::new(
                        &target,
                        overflow,
                        &defaults,
                        clock,
                        layout.limiter.as_ref().map(|l| (l, scope)),
                    )))
                }
                PartitionOverflow::Reject => None,
            };
            Table::Keyed(Box::new(Keyed {
                shards: std::array::from_fn(|_| RwLock::new(ShardMap::default())),
                hasher: RandomState::new(),
                len: AtomicUsize::new(0),
                max: layout.max_partitions,
                overflow,
                next_sweep: AtomicU64::new(0),
            }))
        };
        Shared {
            name,
            label,
            defaults,
            overrides: layout.overrides,
            clock,
            table,
            limiter: layout.limiter,
        }
    }

    /// The limits of partitions without their own.
    pub(crate) fn defaults(&self) -> &PartitionConfig {
        &self.defaults
    }

    /// The one partition of an unpartitioned bulkhead.
    pub(crate) fn single(&self) -> Option<&Arc<Partition>> {
        match &self.table {
            Table::Single(p) => Some(p),
            Table::Keyed(_) => None,
        }
    }

    /// The partition for `key`, created on first use.
    pub(crate) fn partition(&self, key: K) -> Result<Arc<Partition>, BulkheadFull> {
        let keyed = match &self.table {
            Table::Single(p) => return Ok(Arc::clone(p)),
            Table::Keyed(keyed) => keyed,
        };
        let key = keyed.prehash(key);
        let shard = keyed.shard(&key);
        if let Some(p) = read(shard).get(&key) {
            return Ok(Arc::clone(p));
        }
        let mut key = Some(key);
        for attempt in 0..2 {
            let mut map = write(shard);
            let Some(k) = key.take() else { break };
            if let Some(p) = map.get(&k) {
                return Ok(Arc::clone(p));
            }
            if keyed.reserve() {
                let name: Arc<str> = Arc::from(k.key.to_string());
                let config = self
                    .overrides
                    .as_ref()
                    .and_then(|f| f(&k.key))
                    .unwrap_or_else(|| self.defaults.clone());
                let target = match self.label {
                    TargetLabel::Partition => Arc::clone(&name),
                    TargetLabel::Name => Arc::clone(&self.name),
                };
                let shared = self
                    .limiter
                    .as_ref()
                    .map(|l| (l, shared_scope(&self.name, &name)));
                let partition =
                    Arc::new(Partition::new(&target, name, &config, self.clock, shared));
                map.insert(k, Arc::clone(&partition));
                return Ok(partition);
            }
            key = Some(k);
            drop(map);
            if attempt == 0 && !keyed.sweep(self.clock) {
                break;
            }
        }
        match &keyed.overflow {
            Some(overflow) => Ok(Arc::clone(overflow)),
            None => {
                let target = match self.label {
                    TargetLabel::Partition => Arc::from(OVERFLOW_TARGET),
                    TargetLabel::Name => Arc::clone(&self.name),
                };
                crate::metrics::rejected(target, LimitKind::Partitions);
                tracing::debug!(bulkhead = %self.name, max_partitions = keyed.max, "bulkhead rejected a call: partition bound reached");
                Err(BulkheadFull::new(
                    Arc::clone(&self.name),
                    LimitKind::Partitions,
                    0,
                    Duration::ZERO,
                ))
            }
        }
    }

    /// The partition for `key` if it exists (never creates one).
    pub(crate) fn existing(&self, key: &K) -> Option<Arc<Partition>> {
        match &self.table {
            Table::Single(p) => Some(Arc::clone(p)),
            Table::Keyed(keyed) => {
                let key = keyed.prehash(key.clone());
                read(keyed.shard(&key)).get(&key).cloned()
            }
        }
    }

    /// Every partition (the overflow partition last).
    pub(crate) fn partitions(&self) -> Vec<Arc<Partition>> {
        match &self.table {
            Table::Single(p) => vec![Arc::clone(p)],
            Table::Keyed(keyed) => {
                let mut all: Vec<Arc<Partition>> = keyed
                    .shards
                    .iter()
                    .flat_map(|s| read(s).values().cloned().collect::<Vec<_>>())
                    .collect();
                all.extend(keyed.overflow.iter().cloned());
                all
            }
        }
    }
}

impl<K: PartitionKey> Keyed<K> {
    fn prehash(&self, key: K) -> Prehashed<K> {
        Prehashed {
            hash: self.hasher.hash_one(&key),
            key,
        }
    }

    fn shard(&self, key: &Prehashed<K>) -> &RwLock<ShardMap<K>> {
        // Bits 32..36: the in-shard table uses the low bits (bucket) and the top 7 (tag).
        &self.shards[((key.hash >> 32) % SHARDS as u64) as usize]
    }

    /// Count one more partition if the bound allows.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Evict idle partitions nobody references, at most once per [`SWEEP_INTERVAL`]. Returns
    /// whether any was evicted.
    fn sweep(&self, clock: TokioClock) -> bool {
        let now = clock.elapsed_nanos();
        let due = self.next_sweep.load(Ordering::Acquire);
        if now < due
            || self
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(saturating_nanos(SWEEP_INTERVAL)),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
        {
            return false;
        }
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let mut map = write(shard);
            let before = map.len();
            // Only the table holds an idle partition: no permit, waiter or lookup can be using it
            // (lookups clone under this lock).
            map.retain(|_, p| !(Arc::strong_count(p) == 1 && p.is_idle(now)));
            evicted += before - map.len();
        }
        self.len.fetch_sub(evicted, Ordering::AcqRel);
        if evicted > 0 {
            tracing::debug!(evicted, "bulkhead evicted idle partitions");
        }
        evicted > 0
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{saturating_nanos, Drain, DRAIN_MEMORY, STILL_FLOOR, STILL_STEP};

    #[test]
    fn the_first_hand_over_of_an_episode_is_not_a_sample() {
        let mut drain = Drain::default();
        drain.formed(0);
        assert_eq!(drain.expected_wait(0), None);
        // 9 ms from forming to the first hand-over: the rest of a running call, not a rate.
        drain.handed_over(9_000_000);
        assert_eq!(drain.expected_wait(0), None);
        drain.handed_over(9_200_000);
        assert_eq!(drain.expected_wait(0), Some(200_000));
        assert_eq!(drain.expected_wait(9), Some(2_000_000));
    }

    #[test]
    fn a_measurement_is_forgotten_after_a_quiet_second() {
        let mut drain = Drain::default();
        drain.formed(0);
        drain.handed_over(1_000);
        drain.handed_over(2_000);
        let memory = saturating_nanos(DRAIN_MEMORY);
        drain.formed(2_000 + memory);
        assert_eq!(drain.expected_wait(0), Some(1_000), "within a second: kept");
        drain.formed(2_001 + memory);
        assert_eq!(drain.expected_wait(0), None, "older: forgotten");
    }

    #[test]
    fn one_pause_barely_moves_the_estimate() {
        let mut drain = Drain::default();
        drain.formed(0);
        let mut now = 0;
        for _ in 0..10 {
            now += 160_000;
            drain.handed_over(now);
        }
        assert_eq!(drain.expected_wait(0), Some(160_000));
        // A 50 ms pause of the whole machine, then the next hand-over.
        now += 50_000_000;
        drain.handed_over(now);
        assert_eq!(drain.expected_wait(0), Some(160_000 + 3 * 160_000 / 16));
    }

    /// `count` calls joining `gap` ns apart after `now`; returns the time of the last.
    fn arrivals(drain: &mut Drain, mut now: u64, count: usize, gap: u64) -> u64 {
        for _ in 0..count {
            now += gap;
            drain.arrived(now);
        }
        now
    }

    #[test]
    fn a_queue_that_does_not_move_drains_no_faster_than_it_stands_still() {
        let mut drain = Drain::default();
        // Formed at 1 ms, unmeasured: a burst arriving in the same instant queues whole...
        drain.formed(1_000_000);
        drain.arrived(1_000_000);
        assert_eq!(drain.expected_wait(300), None);
        // ...and so does what arrives in the next 9 ms, under the floor...
        let now = arrivals(&mut drain, 1_000_000, 9, 1_000_000);
        assert_eq!(drain.expected_wait(9), None);
        // ...but 10 ms of calls joining with nothing handed over: 9 ahead read as 100 ms.
        let now = arrivals(&mut drain, now, 1, 1_000_000);
        assert_eq!(drain.expected_wait(9), Some(10 * STILL_FLOOR));
        // Measured at 200 us a hand-over: 12 ms of calls joining without one is far more than
        // 8 estimates, so it overrides them; the next hand-over clears it.
        drain.handed_over(now + 20_000_000);
        drain.handed_over(now + 20_200_000);
        assert_eq!(drain.expected_wait(0), Some(200_000));
        arrivals(&mut drain, now + 20_200_000, 12, 1_000_000);
        assert_eq!(drain.expected_wait(1), Some(2 * 12_000_000));
        drain.handed_over(now + 40_000_000);
        assert!(drain.expected_wait(1).unwrap() < 1_000_000);
    }

    #[test]
    fn a_standstill_shorter_than_eight_estimates_does_not_override_them() {
        let mut drain = Drain::default();
        drain.formed(0);
        // Hand-overs 2 ms apart (a slow upstream); 14 ms without one is a clump, not a stop.
        let mut now = 0;
        for _ in 0..20 {
            now += 2_000_000;
            drain.handed_over(now);
        }
        arrivals(&mut drain, now, 14, 1_000_000);
        assert_eq!(drain.expected_wait(0), Some(2_000_000));
        arrivals(&mut drain, now + 14_000_000, 3, 1_000_000);
        assert_eq!(drain.expected_wait(0), Some(17_000_000));
    }

    #[test]
    fn a_pause_of_the_process_is_one_step_of_a_standstill() {
        let mut drain = Drain::default();
        drain.formed(0);
        drain.arrived(0);
        // 300 ms in which nothing ran, then 200 calls that piled up arrive 20 us apart.
        let now = arrivals(&mut drain, 300_000_000, 1, 0);
        arrivals(&mut drain, now, 200, 20_000);
        assert_eq!(
            drain.expected_wait(200),
            None,
            "1 ms + 4 ms: under the floor"
        );
        let mut drain = Drain::default();
        drain.formed(0);
        drain.arrived(0);
        // Calls joining steadily 3 ms apart: each adds 1 ms, and past the floor it counts.
        arrivals(&mut drain, 0, 4, 3_000_000);
        assert_eq!(drain.expected_wait(0), None);
        arrivals(&mut drain, 12_000_000, 6, 3_000_000);
        assert_eq!(drain.expected_wait(0), Some(10 * STILL_STEP));
    }

    proptest! {
        /// The smoothed interval stays within the samples' range (less the fixed-point rounding)
        /// and the expected wait grows with the calls ahead.
        #[test]
        fn the_estimate_stays_within_the_samples(
            gaps in proptest::collection::vec(1u64..50_000_000, 2..200),
            ahead in 0usize..10_000,
            later in 0u64..3_000_000,
        ) {
            let mut drain = Drain::default();
            let mut now = 1u64;
            drain.formed(now);
            drain.arrived(now);
            for gap in &gaps {
                now += gap;
                drain.handed_over(now);
            }
            let samples = &gaps[1..];
            let lo = *samples.iter().min().unwrap();
            let hi = *samples.iter().max().unwrap();
            let one = drain.expected_wait(0).unwrap();
            prop_assert!(one <= hi && one + 32 >= lo, "{one} outside {lo}..={hi}");
            let wait = drain.expected_wait(ahead).unwrap();
            prop_assert!(wait >= drain.expected_wait(ahead.saturating_sub(1)).unwrap());
            prop_assert_eq!(wait, one.saturating_mul(ahead as u64 + 1));
            // Calls joining `later` ns apart with no hand-over since: each gap counts up to
            // 1 ms, and the standstill overrides the estimate past the floor and 8 estimates.
            let count = 20;
            let mut at = now;
            for _ in 0..count {
                at += later;
                drain.arrived(at);
            }
            let still = later.min(STILL_STEP) * count;
            let interval = if still >= STILL_FLOOR && still > one * 8 { still } else { one };
            prop_assert_eq!(
                drain.expected_wait(ahead).unwrap(),
                interval.saturating_mul(ahead as u64 + 1)
            );
        }
    }
}
