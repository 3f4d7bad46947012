//! Admission of one call into its partition: request rate, then token budget, then concurrency.
//!
//! The order keeps waiting cheap: a call waiting for its rate or token turn holds no concurrency
//! slot. A rate permit, once taken, is spent even if a later limit rejects the call (governor
//! cannot give one back; erring on the side of sending less is what a client-side limit is for);
//! a token charge is refunded if the call is rejected or cancelled before it is sent.
//!
//! [`try_admit`] decides synchronously in `call`; only when a call has to wait does it become a
//! boxed [`Pending::admit`] future (the wait path allocates, the happy path does not).
//!
//! A partition with a [shared limiter](crate::shared) asks it first, on the wait path (it has a
//! round trip to make): its verdict replaces the local rate and token stages, and when it cannot
//! decide ([`SharedUnavailable`](crate::shared::SharedUnavailable)) the local stages run as
//! without it. Tokens charged to the shared budget are refunded and corrected there.
//!
//! # The attempt's deadline
//!
//! A call may carry the deadline of its attempt (an
//! [`AttemptBudget`](tower_llm_core::AttemptBudget)). No wait goes past it: a rate or token wait
//! that would end at or after it is not started (the call is rejected at once, with the time
//! until the next permit as `retry_after`), a full partition's queue is not joined once it has
//! passed, and a queued wait ends at the earlier of the maximum wait and the deadline. The
//! deadline is read only on the wait path, so the happy path reads neither the request's
//! extensions nor the clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_llm_core::{BulkheadFull, LimitKind};

use crate::partition::{Enqueue, Partition, Ticket};
use crate::permit::Permit;
use crate::shared::{SharedUnavailable, SharedVerdict};
use crate::tokens::Charge;

/// The boxed wait of a call that could not be admitted at once.
pub(crate) type Admission = Pin<Box<dyn Future<Output = Result<Permit, BulkheadFull>> + Send>>;

/// The outcome of trying to admit a call without waiting.
pub(crate) enum Admit {
    /// Admitted.
    Now(Permit),
    /// Rejected.
    Rejected(BulkheadFull),
    /// Must wait (within the limits' bounds).
    Wait(Pending),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Shared,
    Rate,
    Tokens,
    Concurrency,
}

/// A call waiting for admission at some stage. Refunds its token charge if dropped unadmitted.
pub(crate) struct Pending {
    partition: Arc<Partition>,
    tokens: u64,
    charged: u64,
    /// `charged` was charged to the shared limiter.
    charged_shared: bool,
    stage: Stage,
    /// The attempt's deadline, if the request carries one: no wait goes past it.
    deadline: Option<Instant>,
}

/// Whether a wait of `wait` from `now` ends strictly before `deadline` (always, without one) —
/// the rule of [`AttemptBudget::fits`](tower_llm_core::AttemptBudget::fits).
fn fits(deadline: Option<Instant>, now: Instant, wait: Duration) -> bool {
    deadline.is_none_or(|deadline| now.checked_add(wait).is_some_and(|end| end < deadline))
}

/// Whether a wait of `wait` may start now: within `max_wait` and ending before the deadline.
/// The deadline (and the clock) is read only when the wait is within `max_wait`.
fn may_wait_for(
    wait: Duration,
    max_wait: Duration,
    deadline: impl FnOnce() -> Option<Instant>,
) -> Result<Option<Instant>, ()> {
    if wait > max_wait {
        return Err(());
    }
    let deadline = deadline();
    if deadline.is_some_and(|_| !fits(deadline, Instant::now(), wait)) {
        return Err(());
    }
    Ok(deadline)
}

/// Try to admit a call estimated at `tokens` tokens into `partition` without waiting.
/// `deadline` gives the attempt's deadline, if any; it is called only if the call would wait.
#[inline]
pub(crate) fn try_admit(
    partition: Arc<Partition>,
    tokens: u64,
    deadline: impl FnOnce() -> Option<Instant>,
) -> Admit {
    // The common case first: no rate or token limit, and a free slot.
    if partition.rate.is_none() && partition.tokens.is_none() && partition.try_acquire() {
        return Admit::Now(Permit::new(partition, 0));
    }
    try_admit_limited(partition, tokens, deadline)
}

#[inline(never)]
fn try_admit_limited(
    partition: Arc<Partition>,
    tokens: u64,
    deadline: impl FnOnce() -> Option<Instant>,
) -> Admit {
    if partition.shared.is_some() {
        // The shared decision takes a round trip: always the wait path.
        let deadline = deadline();
        return Admit::Wait(Pending::new(partition, tokens, 0, Stage::Shared, deadline));
    }
    if let Some(rate) = &partition.rate {
        if let Err(wait) = rate.check() {
            return match may_wait_for(wait, rate.max_wait(), deadline) {
                Ok(deadline) => {
                    Admit::Wait(Pending::new(partition, tokens, 0, Stage::Rate, deadline))
                }
                Err(()) => {
                    Admit::Rejected(partition.reject(LimitKind::Rate, Duration::ZERO, Some(wait)))
                }
            };
        }
    }
    let mut charged = 0;
    if let Some(budget) = &partition.tokens {
        match budget.try_charge(tokens) {
            Charge::Charged => charged = tokens,
            Charge::Wait(wait) => {
                return match may_wait_for(wait, budget.max_wait(), deadline) {
                    Ok(deadline) => {
                        Admit::Wait(Pending::new(partition, tokens, 0, Stage::Tokens, deadline))
                    }
                    Err(()) => Admit::Rejected(partition.reject(
                        LimitKind::Tokens,
                        Duration::ZERO,
                        Some(wait),
                    )),
                };
            }
            Charge::TooLarge => {
                return Admit::Rejected(partition.reject(
                    LimitKind::RequestTooLarge,
                    Duration::ZERO,
                    None,
                ));
            }
        }
    }
    if partition.try_acquire() {
        return Admit::Now(Permit::new(partition, charged));
    }
    let limit = if !partition.may_wait() {
        LimitKind::Concurrency
    } else if partition.queue_full() {
        // Turned away without allocating a wait: overload storms stay cheap.
        LimitKind::Queue
    } else {
        let deadline = deadline();
        if deadline.is_some_and(|d| d <= Instant::now()) {
            // The attempt is out of time: waiting is not allowed, as with no queue at all.
            LimitKind::Concurrency
        } else {
            return Admit::Wait(Pending::new(
                partition,
                tokens,
                charged,
                Stage::Concurrency,
                deadline,
            ));
        }
    };
    refund(&partition, charged);
    Admit::Rejected(partition.reject(limit, Duration::ZERO, None))
}

fn refund(partition: &Partition, tokens: u64) {
    partition.refund_tokens(tokens, false);
}

impl Pending {
    fn new(
        partition: Arc<Partition>,
        tokens: u64,
        charged: u64,
        stage: Stage,
        deadline: Option<Instant>,
    ) -> Self {
        Pending {
            partition,
            tokens,
            charged,
            charged_shared: false,
            stage,
            deadline,
        }
    }

    /// Wait for admission, within each limit's bound.
    pub(crate) fn into_future(self) -> Admission {
        Box::pin(self.admit())
    }

    async fn admit(mut self) -> Result<Permit, BulkheadFull> {
        let start = Instant::now();
        let result = self.wait_stages(start).await;
        let waited = start.elapsed();
        self.partition.metrics.waited(waited, result.is_ok());
        match result {
            Ok(()) => Ok(Permit::charged(
                Arc::clone(&self.partition),
                std::mem::take(&mut self.charged),
                self.charged_shared,
            )),
            Err((limit, retry_after)) => Err(self.partition.reject(limit, waited, retry_after)),
        }
    }

    /// Pass every remaining stage; on success the caller holds a concurrency slot.
    async fn wait_stages(&mut self, start: Instant) -> Result<(), (LimitKind, Option<Duration>)> {
        if self.stage == Stage::Shared {
            if self.shared_stage(start).await? {
                self.stage = Stage::Concurrency;
                if self.partition.try_acquire() {
                    return Ok(());
                }
                if !self.partition.may_wait() {
                    return Err((LimitKind::Concurrency, None));
                }
            } else {
                self.stage = Stage::Rate;
            }
        }
        if self.stage == Stage::Rate {
            if let Some(rate) = &self.partition.rate {
                loop {
                    match rate.check() {
                        Ok(()) => break,
                        Err(wait)
                            if start.elapsed().saturating_add(wait) <= rate.max_wait()
                                && fits(self.deadline, Instant::now(), wait) =>
                        {
                            tokio::time::sleep(wait).await;
                        }
                        Err(wait) => return Err((LimitKind::Rate, Some(wait))),
                    }
                }
            }
            self.stage = Stage::Tokens;
        }
        if self.stage == Stage::Tokens {
            if let Some(budget) = &self.partition.tokens {
                let since = Instant::now();
                loop {
                    match budget.try_charge(self.tokens) {
                        Charge::Charged => break,
                        Charge::TooLarge => return Err((LimitKind::RequestTooLarge, None)),
                        Charge::Wait(wait)
                            if since.elapsed().saturating_add(wait) <= budget.max_wait()
                                && fits(self.deadline, Instant::now(), wait) =>
                        {
                            tokio::time::sleep(wait).await;
                        }
                        Charge::Wait(wait) => return Err((LimitKind::Tokens, Some(wait))),
                    }
                }
                self.charged = self.tokens;
            }
            self.stage = Stage::Concurrency;
            if self.partition.try_acquire() {
                return Ok(());
            }
            if !self.partition.may_wait() {
                return Err((LimitKind::Concurrency, None));
            }
        }
        let now = Instant::now();
        // `None`: no deadline (a `max_wait` too large for the clock, e.g. `Duration::MAX`).
        let mut deadline = now.checked_add(self.partition.max_wait);
        if let Some(attempt) = self.deadline {
            if attempt <= now {
                // Out of time before queueing (an earlier stage took the rest): take a free slot
                // if there is one, but do not queue.
                return if self.partition.try_acquire() {
                    Ok(())
                } else {
                    Err((LimitKind::Concurrency, None))
                };
            }
            deadline = Some(deadline.map_or(attempt, |d| d.min(attempt)));
        }
        let may_wait = deadline.map(|d| d.saturating_duration_since(now));
        let ticket = match self.partition.enqueue(may_wait) {
            Enqueue::Acquired => return Ok(()),
            Enqueue::Full => return Err((LimitKind::Queue, None)),
            Enqueue::TooSlow => return Err((LimitKind::ExpectedWait, None)),
            Enqueue::Queued(ticket) => ticket,
        };
        let mut place = Place {
            partition: &self.partition,
            ticket,
            settled: false,
        };
        let granted = match deadline {
            Some(deadline) => matches!(
                tokio::time::timeout_at(deadline, &mut place.ticket.granted).await,
                Ok(Ok(()))
            ),
            None => matches!((&mut place.ticket.granted).await, Ok(())),
        };
        // A slot handed over at the very moment the wait ended still counts.
        let admitted = granted || place.partition.leave(&mut place.ticket);
        place.settled = true;
        if admitted {
            Ok(())
        } else {
            Err((LimitKind::MaxWait, None))
        }
    }
}

impl Pending {
    /// Ask the shared limiter, waiting (within the limit's bound and the deadline) while it says
    /// to: `Ok(true)` admitted (tokens charged there), `Ok(false)` it cannot decide (the local
    /// stages decide instead).
    async fn shared_stage(
        &mut self,
        start: Instant,
    ) -> Result<bool, (LimitKind, Option<Duration>)> {
        let Some(shared) = &self.partition.shared else {
            return Ok(false);
        };
        loop {
            match shared.admit(self.tokens).await {
                Ok(SharedVerdict::Admitted) => {
                    if shared.quota.tokens.is_some() {
                        self.charged = self.tokens;
                        self.charged_shared = true;
                    }
                    return Ok(true);
                }
                Ok(SharedVerdict::TooLarge) => return Err((LimitKind::RequestTooLarge, None)),
                Ok(SharedVerdict::Wait { limit, wait }) => {
                    let limit = if limit == LimitKind::Tokens {
                        LimitKind::Tokens
                    } else {
                        LimitKind::Rate
                    };
                    let max_wait = match limit {
                        LimitKind::Tokens => self.partition.tokens.as_ref().map(|t| t.max_wait()),
                        _ => self.partition.rate.as_ref().map(|r| r.max_wait()),
                    }
                    .unwrap_or(Duration::ZERO);
                    if start.elapsed().saturating_add(wait) <= max_wait
                        && fits(self.deadline, Instant::now(), wait)
                    {
                        tokio::time::sleep(wait).await;
                    } else {
                        return Err((limit, Some(wait)));
                    }
                }
                Err(SharedUnavailable) => return Ok(false),
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.partition
            .refund_tokens(self.charged, self.charged_shared);
    }
}

/// A place in the wait queue; if the wait is abandoned (the call's future dropped), leaves the
/// queue, releasing a slot that was handed over in the meantime.
struct Place<'a> {
    partition: &'a Partition,
    ticket: Ticket,
    settled: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.settled && self.partition.leave(&mut self.ticket) {
            self.partition.release();
        }
    }
}
