//! Errors shared by every tower-llm layer.
//!
//! They live here, not in the pattern crates, so that any layer can recognise another's error
//! (a fallback skipping a target whose breaker is open, a retry honouring a bulkhead's
//! `retry_after`) without the crates depending on each other. [`crate::classify_error`] maps each
//! of them to a [`Failure`](crate::Failure).
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_core::{classify_error, BreakerOpen, ErrorKind, Origin};
//!
//! let err: tower_llm_core::BoxError =
//!     Box::new(BreakerOpen::new("openai/gpt-4o", "5 consecutive failures", Duration::from_secs(5)));
//! assert_eq!(
//!     err.to_string(),
//!     "circuit breaker `openai/gpt-4o` is open (5 consecutive failures); next probe in 5.000s"
//! );
//! let failure = classify_error(&*err);
//! assert_eq!(failure.kind, ErrorKind::Overloaded);
//! assert_eq!(failure.origin, Origin::Local);
//! assert_eq!(failure.retry_after, Some(Duration::from_secs(5)));
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::{ErrorKind, Target};

/// The boxed error type every tower-llm service returns, as in `tower`.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// A configuration value was rejected when a layer was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    message: String,
}

impl ConfigError {
    /// A rejection of `field` (the builder method or config key) for the reason `message`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            field,
            message: message.into(),
        }
    }

    /// The builder method or config key that was rejected.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why it was rejected.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl Error for ConfigError {}

/// A circuit breaker rejected the call without calling the inner service.
#[derive(Clone, Debug)]
pub struct BreakerOpen {
    cause: BreakerOpenCause,
    probe: NextProbe,
}

/// When the breaker admits a probe: a fixed delay, or an instant (so that a rejection costs no
/// clock read; the delay is computed when asked for).
#[derive(Clone, Copy, Debug)]
enum NextProbe {
    In(Duration),
    At(tokio::time::Instant),
}

impl BreakerOpen {
    /// Breaker `breaker` is open because of `reason`; it will let a probe through in `retry_after`.
    pub fn new(
        breaker: impl Into<Arc<str>>,
        reason: impl Into<Arc<str>>,
        retry_after: Duration,
    ) -> Self {
        BreakerOpen::from_cause(BreakerOpenCause::new(breaker, reason), retry_after)
    }

    /// A rejection for `cause`, built once per breaker and reason: making the error then costs
    /// one reference-count increment, not one per string.
    pub fn from_cause(cause: BreakerOpenCause, retry_after: Duration) -> Self {
        BreakerOpen {
            cause,
            probe: NextProbe::In(retry_after),
        }
    }

    /// A rejection for `cause` by a breaker that lets a probe through at `probe_at`:
    /// [`retry_after`](Self::retry_after) is then the time left until that instant when it is
    /// read (so the rejection itself needs no clock).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower_llm_core::{BreakerOpen, BreakerOpenCause};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let cause = BreakerOpenCause::new("openai", "5 consecutive failures");
    /// let open = BreakerOpen::until(cause, Instant::now() + Duration::from_secs(5));
    /// assert_eq!(open.retry_after(), Duration::from_secs(5));
    /// tokio::time::advance(Duration::from_secs(2)).await;
    /// assert_eq!(open.retry_after(), Duration::from_secs(3));
    /// # }
    /// ```
    pub fn until(cause: BreakerOpenCause, probe_at: tokio::time::Instant) -> Self {
        BreakerOpen {
            cause,
            probe: NextProbe::At(probe_at),
        }
    }

    /// The breaker's name (for a keyed breaker, its key).
    pub fn breaker(&self) -> &str {
        self.cause.breaker()
    }

    /// Why the breaker opened, in words.
    pub fn reason(&self) -> &str {
        self.cause.reason()
    }

    /// How long until the breaker admits a probe (zero when it is half-open and full of probes).
    pub fn retry_after(&self) -> Duration {
        match self.probe {
            NextProbe::In(delay) => delay,
            NextProbe::At(at) => at.saturating_duration_since(tokio::time::Instant::now()),
        }
    }
}

/// Which breaker rejected and why: the part of a [`BreakerOpen`] that every rejection of one
/// breaker for one reason shares. Cloning it is one reference-count increment.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_core::{BreakerOpen, BreakerOpenCause};
///
/// let cause = BreakerOpenCause::new("openai/gpt-4o", "5 consecutive failures");
/// let open = BreakerOpen::from_cause(cause.clone(), Duration::from_secs(5));
/// assert_eq!(open.breaker(), "openai/gpt-4o");
/// assert_eq!(open.reason(), cause.reason());
///
/// // All the reasons of one breaker in one allocation (one reference count).
/// let causes = BreakerOpenCause::for_reasons("openai", ["probe failed", "opened by hand"]);
/// assert_eq!(causes[1].reason(), "opened by hand");
/// ```
#[derive(Clone)]
pub struct BreakerOpenCause {
    table: Arc<CauseTable>,
    index: usize,
}

/// A breaker's name and reasons. Aligned to 128 bytes so that its reference count, which every
/// rejection touches, shares no cache line with other data.
#[repr(align(128))]
struct CauseTable {
    breaker: Arc<str>,
    reasons: Box<[Arc<str>]>,
}

impl BreakerOpenCause {
    /// Breaker `breaker` rejects because of `reason`.
    pub fn new(breaker: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Self {
        let table = CauseTable {
            breaker: breaker.into(),
            reasons: Box::new([reason.into()]),
        };
        BreakerOpenCause {
            table: Arc::new(table),
            index: 0,
        }
    }

    /// One cause per reason of breaker `breaker`, in order, all sharing one allocation.
    pub fn for_reasons<R: Into<Arc<str>>>(
        breaker: impl Into<Arc<str>>,
        reasons: impl IntoIterator<Item = R>,
    ) -> Vec<BreakerOpenCause> {
        let table = Arc::new(CauseTable {
            breaker: breaker.into(),
            reasons: reasons.into_iter().map(Into::into).collect(),
        });
        (0..table.reasons.len())
            .map(|index| BreakerOpenCause {
                table: Arc::clone(&table),
                index,
            })
            .collect()
    }

    /// The breaker's name.
    pub fn breaker(&self) -> &str {
        &self.table.breaker
    }

    /// The reason, in words.
    pub fn reason(&self) -> &str {
        self.table.reasons.get(self.index).map_or("", |r| r)
    }
}

impl fmt::Debug for BreakerOpenCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerOpenCause")
            .field("breaker", &self.breaker())
            .field("reason", &self.reason())
            .finish()
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker `{}` is open ({}); next probe in {:.3}s",
            self.breaker(),
            self.reason(),
            self.retry_after().as_secs_f64()
        )
    }
}

impl Error for BreakerOpen {}

/// Which limit of a bulkhead or client-side limiter rejected a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Every concurrency permit is taken and waiting is not allowed.
    Concurrency,
    /// The wait queue is full.
    Queue,
    /// The calls already waiting would take longer to drain (at the rate the queue has been
    /// draining, and no faster than one call per the time it has not moved while calls kept
    /// joining it) than this call may wait: turned away at once rather than after its whole
    /// wait.
    ExpectedWait,
    /// The call waited for a permit as long as it may.
    MaxWait,
    /// The bound on the number of partitions (keys) is reached.
    Partitions,
    /// The client-side request-rate limit is reached.
    Rate,
    /// The client-side token-per-minute budget is spent.
    Tokens,
    /// The request alone is larger than the whole token budget: it can never be admitted.
    RequestTooLarge,
}

impl LimitKind {
    /// A stable `snake_case` name, used as a `reason` label in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitKind::Concurrency => "concurrency",
            LimitKind::Queue => "queue",
            LimitKind::ExpectedWait => "expected_wait",
            LimitKind::MaxWait => "max_wait",
            LimitKind::Partitions => "partitions",
            LimitKind::Rate => "rate",
            LimitKind::Tokens => "tokens",
            LimitKind::RequestTooLarge => "request_too_large",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bulkhead or client-side limiter rejected the call without calling the inner service.
#[derive(Clone, Debug)]
pub struct BulkheadFull {
    bulkhead: Arc<str>,
    limit: LimitKind,
    in_flight: usize,
    waited: Duration,
    retry_after: Option<Duration>,
}

impl BulkheadFull {
    /// Bulkhead `bulkhead` rejected a call on `limit` with `in_flight` calls running after
    /// the caller `waited`.
    pub fn new(
        bulkhead: impl Into<Arc<str>>,
        limit: LimitKind,
        in_flight: usize,
        waited: Duration,
    ) -> Self {
        BulkheadFull {
            bulkhead: bulkhead.into(),
            limit,
            in_flight,
            waited,
            retry_after: None,
        }
    }

    /// The earliest time a retry could be admitted, when the limiter knows it (rate and token limits).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The bulkhead's name (for a partitioned bulkhead, the partition key).
    pub fn bulkhead(&self) -> &str {
        &self.bulkhead
    }

    /// Which limit rejected the call.
    pub fn limit(&self) -> LimitKind {
        self.limit
    }

    /// How many calls were in flight when this one was rejected.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How long the call waited before it was rejected.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// When a permit is expected, if known (usable as `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead `{}` rejected the call: {} limit reached with {} in flight after waiting {:.3}s",
            self.bulkhead,
            self.limit,
            self.in_flight,
            self.waited.as_secs_f64()
        )?;
        if let Some(after) = self.retry_after {
            write!(f, "; retry in {:.3}s", after.as_secs_f64())?;
        }
        Ok(())
    }
}

impl Error for BulkheadFull {}

/// An attempt took longer than its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTimeout {
    after: Duration,
}

impl AttemptTimeout {
    /// An attempt that was abandoned after `after`.
    pub fn new(after: Duration) -> Self {
        AttemptTimeout { after }
    }

    /// The timeout that expired.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for AttemptTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt timed out after {:.3}s",
            self.after.as_secs_f64()
        )
    }
}

impl Error for AttemptTimeout {}

/// An error that already knows its kind: what a layer returns when it turns a bad response (an
/// SSE `error` event, an unparsable body, a stream cut mid-answer) into an error.
#[derive(Clone, Debug)]
pub struct ClassifiedError {
    kind: ErrorKind,
    retry_after: Option<Duration>,
    message: Arc<str>,
}

impl ClassifiedError {
    /// An error of `kind` described by `message` (no prompt or completion text in it).
    pub fn new(kind: ErrorKind, message: impl Into<Arc<str>>) -> Self {
        ClassifiedError {
            kind,
            retry_after: None,
            message: message.into(),
        }
    }

    /// Attach a server-requested delay.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The server-requested delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ClassifiedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl Error for ClassifiedError {}

/// One failed attempt, as reported by retry and fallback layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// 1-based attempt number within the call.
    pub attempt: u32,
    /// The target the attempt went to, when known.
    pub target: Option<Target>,
    /// What went wrong.
    pub kind: ErrorKind,
    /// The HTTP status, when the attempt got a response.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// The server-requested delay, when one was given.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for AttemptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.attempt)?;
        if let Some(target) = &self.target {
            write!(f, " {target}")?;
        }
        write!(f, ": {}", self.kind)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        write!(f, " after {}ms", self.elapsed.as_millis())?;
        if let Some(after) = self.retry_after {
            write!(f, ", retry-after {}ms", after.as_millis())?;
        }
        Ok(())
    }
}

fn write_attempts(f: &mut fmt::Formatter<'_>, attempts: &[AttemptRecord]) -> fmt::Result {
    for (i, attempt) in attempts.iter().enumerate() {
        f.write_str(if i == 0 { ": " } else { "; " })?;
        write!(f, "{attempt}")?;
    }
    Ok(())
}

/// A retry layer gave up: every attempt failed, or the next one was not allowed.
#[derive(Debug)]
pub struct RetriesExhausted {
    attempts: Vec<AttemptRecord>,
    last: BoxError,
    reason: Option<Arc<str>>,
}

impl RetriesExhausted {
    /// Give up after `attempts`, the last of which failed with `last`.
    pub fn new(attempts: Vec<AttemptRecord>, last: BoxError) -> Self {
        RetriesExhausted {
            attempts,
            last,
            reason: None,
        }
    }

    /// Say why the layer stopped (attempts used up, budget exhausted, body not replayable, ...).
    pub fn with_reason(mut self, reason: impl Into<Arc<str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Why the layer stopped, when it said.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Every attempt made, in order.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    /// The last attempt's error.
    pub fn last(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.last
    }

    /// Take the last attempt's error.
    pub fn into_last(self) -> BoxError {
        self.last
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gave up after {} attempt(s)", self.attempts.len())?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        write_attempts(f, &self.attempts)?;
        write!(f, "; last error: {}", self.last)
    }
}

impl Error for RetriesExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.last)
    }
}

/// A fallback chain ran out of targets.
#[derive(Debug)]
pub struct AllTargetsFailed {
    attempts: Vec<AttemptRecord>,
    last: Option<BoxError>,
}

impl AllTargetsFailed {
    /// Every target was tried (or skipped); `last` is the last error seen, if any target was called.
    pub fn new(attempts: Vec<AttemptRecord>, last: Option<BoxError>) -> Self {
        AllTargetsFailed { attempts, last }
    }

    /// Every attempt made, in order.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    /// The last error, when a target was called and failed with an error.
    pub fn last(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.last.as_deref()
    }

    /// The shortest delay any attempt named: for a chain whose targets are all benched, the time
    /// until the next probe (what a `retry-after` header should say). `None` when no attempt
    /// named one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.attempts.iter().filter_map(|a| a.retry_after).min()
    }
}

impl fmt::Display for AllTargetsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all targets failed ({} attempt(s))", self.attempts.len())?;
        write_attempts(f, &self.attempts)
    }
}

impl Error for AllTargetsFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.last.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
