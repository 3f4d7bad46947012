//! What is retried, and when the layer stops.
//!
//! A failed attempt is classified by the layer's [`Classify`](tower_llm_core::Classify)
//! implementation into a [`Failure`]; then, in this order:
//!
//! 1. its kind must be in the layer's [`KindSet`]
//!    ([`retry_on`](crate::RetryLayerBuilder::retry_on); default [`KindSet::retryable`]:
//!    `RateLimited`, `Overloaded`, `ServerError`, `Timeout`, `Transport`, `InvalidResponse`,
//!    `Unknown`; never `Auth`, `QuotaExhausted`, `ContextLength`, `ContentPolicy`,
//!    `BadRequest`), else [`StopReason::NotRetryable`];
//! 2. a local rejection ([`Origin::Local`]: a breaker or bulkhead below refused the call without
//!    calling the target) is not retried unless `retry_local_rejections(true)`: retrying into an
//!    open breaker before its `retry_after` is pointless, and waiting for it is better left to a
//!    fallback layer, which can use another target at once ([`StopReason::LocalRejection`]);
//! 3. a timeout is retried at most once per call by default: a silent target is better failed over
//!    ([`StopReason::TimeoutLimit`]);
//! 4. the attempts must not be used up ([`StopReason::AttemptsExhausted`]);
//! 5. the request must be replayable ([`StopReason::NotReplayable`]);
//! 6. the delay is the server's (`Retry-After` and every other signal core parses) when it gave
//!    one, else the backoff's; a server delay above the cap (60 s by default) stops the layer so
//!    a fallback above can move on, the delay still attached to the returned response or error
//!    ([`StopReason::ServerDelayTooLong`]);
//! 7. the next attempt must start before the overall deadline ([`StopReason::DeadlineTooClose`]);
//! 8. the retry budget must afford it ([`StopReason::BudgetExhausted`]).
//!
//! ```
//! use tower_llm_core::{ErrorKind, KindSet};
//! use tower_llm_retry::RetryLayer;
//!
//! // Do not retry unknown failures; retry quota errors (a provider whose quota resets quickly).
//! let retry_on = KindSet::retryable().without(ErrorKind::Unknown).with(ErrorKind::QuotaExhausted);
//! let layer = RetryLayer::builder().retry_on(retry_on).build().unwrap();
//! assert!(!layer.config().retry_on().contains(ErrorKind::Unknown));
//! assert!(layer.config().retry_on().contains(ErrorKind::QuotaExhausted));
//! assert!(!layer.config().retry_on().contains(ErrorKind::ContextLength));
//! ```

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;
use tower_llm_core::{AttemptRecord, ErrorKind, Failure, KindSet, NotReplayable, Origin};

use crate::backoff::Backoff;
use crate::budget::RetryBudget;

/// Why the layer stopped retrying and returned what it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The failure's kind is not retried (`Auth`, `ContextLength`, ...).
    NotRetryable(ErrorKind),
    /// A local layer below (breaker, bulkhead) rejected the call; not retried.
    LocalRejection(ErrorKind),
    /// A timeout was already retried as often as allowed.
    TimeoutLimit {
        /// How many timeouts a call may retry.
        max: u32,
    },
    /// Every allowed attempt was made.
    AttemptsExhausted {
        /// The attempt limit.
        max: u32,
    },
    /// The request cannot be sent again.
    NotReplayable(NotReplayable),
    /// The server asked for a longer delay than the layer waits.
    ServerDelayTooLong {
        /// The delay the server asked for.
        requested: Duration,
        /// The longest server delay the layer honours.
        cap: Duration,
    },
    /// The next attempt would start at or after the overall deadline.
    DeadlineTooClose,
    /// The retry budget cannot afford another attempt.
    BudgetExhausted,
    /// The inner service failed while getting ready for the next attempt.
    ServiceNotReady,
    /// A layer above asked for a single call: the attempt is a probe of a benched target, or
    /// another target remains and failing over is faster than backing off (see
    /// [`AttemptBudget`](tower_llm_core::AttemptBudget)).
    SingleCall,
}

impl StopReason {
    /// A stable `snake_case` name, used as the `reason` label in metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            StopReason::NotRetryable(_) => "not_retryable",
            StopReason::LocalRejection(_) => "local_rejection",
            StopReason::TimeoutLimit { .. } => "timeout_limit",
            StopReason::AttemptsExhausted { .. } => "attempts_exhausted",
            StopReason::NotReplayable(_) => "not_replayable",
            StopReason::ServerDelayTooLong { .. } => "server_delay_too_long",
            StopReason::DeadlineTooClose => "deadline",
            StopReason::BudgetExhausted => "budget_exhausted",
            StopReason::ServiceNotReady => "service_not_ready",
            StopReason::SingleCall => "single_call",
        }
    }

    /// Whether the layer had nothing to do: the failure was not of a kind it retries.
    pub const fn is_pass_through(&self) -> bool {
        matches!(
            self,
            StopReason::NotRetryable(_) | StopReason::LocalRejection(_) | StopReason::SingleCall
        )
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::NotRetryable(kind) => write!(f, "{kind} is not retried"),
            StopReason::LocalRejection(kind) => {
                write!(f, "a local rejection ({kind}) is left to the layer above")
            }
            StopReason::TimeoutLimit { max } => {
                write!(f, "a timeout is retried at most {max} time(s)")
            }
            StopReason::AttemptsExhausted { max } => write!(f, "all {max} attempt(s) used"),
            StopReason::NotReplayable(why) => write!(f, "not retried: {why}"),
            StopReason::ServerDelayTooLong { requested, cap } => write!(
                f,
                "the server asked to wait {:.3}s, more than the {:.3}s this layer waits",
                requested.as_secs_f64(),
                cap.as_secs_f64()
            ),
            StopReason::DeadlineTooClose => f.write_str("the next attempt would miss the deadline"),
            StopReason::BudgetExhausted => f.write_str("the retry budget is exhausted"),
            StopReason::ServiceNotReady => f.write_str("the inner service failed to become ready"),
            StopReason::SingleCall => f.write_str(
                "the layer above asked for a single call (a probe, or another target remains)",
            ),
        }
    }
}

/// The attempt log of one call, attached as a response extension (by
/// [`HttpReplay`](crate::HttpReplay)) whenever at least one attempt failed: on a success after
/// retries, and on a failed response the layer returns as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryAttempts {
    attempts: Vec<AttemptRecord>,
    stopped: Option<StopReason>,
}

impl RetryAttempts {
    pub(crate) fn new(attempts: Vec<AttemptRecord>, stopped: Option<StopReason>) -> Self {
        RetryAttempts { attempts, stopped }
    }

    /// Every failed attempt, in order.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    /// Why the layer stopped, when the returned response is a failure (`None` on success).
    pub fn stopped(&self) -> Option<StopReason> {
        self.stopped
    }

    /// Take the records.
    pub fn into_attempts(self) -> Vec<AttemptRecord> {
        self.attempts
    }
}

/// The settings [`decide`] needs (a subset of [`RetryConfig`](crate::RetryConfig)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_server_delay: Duration,
    pub(crate) retry_on: KindSet,
    pub(crate) max_timeout_retries: u32,
    pub(crate) retry_local_rejections: bool,
}

/// The per-call state of retry decisions.
#[derive(Debug, Default)]
pub(crate) struct CallState {
    /// Sequential attempts started (first attempt and retries; hedges not included).
    pub(crate) sequential: u32,
    pub(crate) timeout_retries: u32,
    pub(crate) previous_delay: Option<Duration>,
    pub(crate) rng: Option<SmallRng>,
}

/// What to do after every in-flight attempt of a round failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Retry(Duration),
    Stop(StopReason),
}

/// Whether a failure may be retried at all (steps 1 and 2): `Err` ends the call at once, even
/// while hedges are in flight.
pub(crate) fn admissible(rules: &Rules, failure: &Failure) -> Result<(), StopReason> {
    if !rules.retry_on.contains(failure.kind) {
        return Err(StopReason::NotRetryable(failure.kind));
    }
    if failure.origin == Origin::Local && !rules.retry_local_rejections {
        return Err(StopReason::LocalRejection(failure.kind));
    }
    Ok(())
}

/// What bounds the next retry of a call besides the rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits<'a> {
    pub(crate) replayable: Result<(), NotReplayable>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) now: Instant,
    pub(crate) budget: Option<&'a RetryBudget>,
}

/// Decide on the failure that ended a round (steps 1 to 8 of the module docs). Withdraws from
/// the budget only when the answer is [`Decision::Retry`].
pub(crate) fn decide(
    rules: &Rules,
    failure: &Failure,
    state: &mut CallState,
    limits: Limits<'_>,
    seed: impl FnOnce() -> u64,
) -> Decision {
    let Limits {
        replayable,
        deadline,
        now,
        budget,
    } = limits;
    if let Err(reason) = admissible(rules, failure) {
        return Decision::Stop(reason);
    }
    let is_timeout = failure.kind == ErrorKind::Timeout;
    if is_timeout && state.timeout_retries >= rules.max_timeout_retries {
        return Decision::Stop(StopReason::TimeoutLimit {
            max: rules.max_timeout_retries,
        });
    }
    if state.sequential >= rules.max_attempts {
        return Decision::Stop(StopReason::AttemptsExhausted {
            max: rules.max_attempts,
        });
    }
    if let Err(why) = replayable {
        return Decision::Stop(StopReason::NotReplayable(why));
    }
    let (delay, computed) = match failure.retry_after {
        Some(requested) if requested > rules.max_server_delay => {
            return Decision::Stop(StopReason::ServerDelayTooLong {
                requested,
                cap: rules.max_server_delay,
            })
        }
        Some(requested) => (requested, false),
        None => {
            let rng = state
                .rng
                .get_or_insert_with(|| SmallRng::seed_from_u64(seed()));
            (
                rules
                    .backoff
                    .delay(state.sequential, state.previous_delay, rng),
                true,
            )
        }
    };
    if let Some(deadline) = deadline {
        if now.checked_add(delay).is_none_or(|at| at >= deadline) {
            return Decision::Stop(StopReason::DeadlineTooClose);
        }
    }
    if let Some(budget) = budget {
        if !budget.withdraw() {
            return Decision::Stop(StopReason::BudgetExhausted);
        }
    }
    if computed {
        state.previous_delay = Some(delay);
    }
    if is_timeout {
        state.timeout_retries += 1;
    }
    Decision::Retry(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            max_attempts: 3,
            backoff: Backoff::constant(Duration::from_millis(100)),
            max_server_delay: Duration::from_secs(60),
            retry_on: KindSet::retryable(),
            max_timeout_retries: 1,
            retry_local_rejections: false,
        }
    }

    fn run(failure: Failure, state: &mut CallState) -> Decision {
        decide(&rules(), &failure, state, limits(Ok(()), None, None), || 1)
    }

    fn limits(
        replayable: Result<(), NotReplayable>,
        deadline: Option<Instant>,
        budget: Option<&RetryBudget>,
    ) -> Limits<'_> {
        Limits {
            replayable,
            deadline,
            now: Instant::now(),
            budget,
        }
    }

    fn first() -> CallState {
        CallState {
            sequential: 1,
            ..CallState::default()
        }
    }

    #[test]
    fn non_retryable_kinds_stop_at_once() {
        for kind in [
            ErrorKind::Auth,
            ErrorKind::QuotaExhausted,
            ErrorKind::ContextLength,
            ErrorKind::ContentPolicy,
            ErrorKind::BadRequest,
        ] {
            assert_eq!(
                run(Failure::new(kind), &mut first()),
                Decision::Stop(StopReason::NotRetryable(kind))
            );
        }
    }

    #[test]
    fn the_kind_set_decides_what_is_retried() {
        let mut custom = rules();
        custom.retry_on = KindSet::retryable()
            .without(ErrorKind::Overloaded)
            .with(ErrorKind::QuotaExhausted);
        let decide_one = |kind| {
            decide(
                &custom,
                &Failure::new(kind),
                &mut first(),
                limits(Ok(()), None, None),
                || 1,
            )
        };
        assert_eq!(
            decide_one(ErrorKind::Overloaded),
            Decision::Stop(StopReason::NotRetryable(ErrorKind::Overloaded))
        );
        assert!(matches!(
            decide_one(ErrorKind::QuotaExhausted),
            Decision::Retry(_)
        ));
        assert!(matches!(
            decide_one(ErrorKind::ServerError),
            Decision::Retry(_)
        ));
    }

    #[test]
    fn server_delay_replaces_backoff_within_the_cap() {
        let f = Failure::new(ErrorKind::RateLimited).with_retry_after(Some(Duration::from_secs(2)));
        assert_eq!(
            run(f, &mut first()),
            Decision::Retry(Duration::from_secs(2))
        );
        let f =
            Failure::new(ErrorKind::RateLimited).with_retry_after(Some(Duration::from_secs(61)));
        assert_eq!(
            run(f, &mut first()),
            Decision::Stop(StopReason::ServerDelayTooLong {
                requested: Duration::from_secs(61),
                cap: Duration::from_secs(60)
            })
        );
        assert_eq!(
            run(Failure::new(ErrorKind::Overloaded), &mut first()),
            Decision::Retry(Duration::from_millis(100))
        );
    }

    #[test]
    fn timeout_is_retried_once() {
        let mut state = first();
        assert!(matches!(
            run(Failure::new(ErrorKind::Timeout), &mut state),
            Decision::Retry(_)
        ));
        state.sequential = 2;
        assert_eq!(
            run(Failure::new(ErrorKind::Timeout), &mut state),
            Decision::Stop(StopReason::TimeoutLimit { max: 1 })
        );
        // Other kinds still retry.
        assert!(matches!(
            run(Failure::new(ErrorKind::ServerError), &mut state),
            Decision::Retry(_)
        ));
    }

    #[test]
    fn attempts_local_replay_deadline_budget() {
        let mut state = CallState {
            sequential: 3,
            ..CallState::default()
        };
        assert_eq!(
            run(Failure::new(ErrorKind::ServerError), &mut state),
            Decision::Stop(StopReason::AttemptsExhausted { max: 3 })
        );
        assert_eq!(
            run(Failure::local(ErrorKind::Overloaded), &mut first()),
            Decision::Stop(StopReason::LocalRejection(ErrorKind::Overloaded))
        );
        let f = Failure::new(ErrorKind::ServerError);
        let stop = decide(
            &rules(),
            &f,
            &mut first(),
            limits(Err(NotReplayable::Streaming), None, None),
            || 1,
        );
        assert_eq!(
            stop,
            Decision::Stop(StopReason::NotReplayable(NotReplayable::Streaming))
        );
        let now = Instant::now();
        let tight = Some(now + Duration::from_millis(50));
        let stop = decide(
            &rules(),
            &f,
            &mut first(),
            limits(Ok(()), tight, None),
            || 1,
        );
        assert_eq!(stop, Decision::Stop(StopReason::DeadlineTooClose));
        let empty = RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap();
        let stop = decide(
            &rules(),
            &f,
            &mut first(),
            limits(Ok(()), None, Some(&empty)),
            || 1,
        );
        assert_eq!(stop, Decision::Stop(StopReason::BudgetExhausted));
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            StopReason::NotRetryable(ErrorKind::Auth).to_string(),
            "auth is not retried"
        );
        assert_eq!(
            StopReason::NotReplayable(NotReplayable::OverLimit { limit: 10 }).to_string(),
            "not retried: request body is larger than the 10-byte replay limit"
        );
        assert_eq!(StopReason::BudgetExhausted.as_str(), "budget_exhausted");
    }
}
