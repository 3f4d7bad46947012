//! Token-aware limits: what a request is estimated to cost ([`EstimateTokens`],
//! [`JsonBodyEstimate`]) and the per-partition budget that charges it.
//!
//! A call is charged its estimate when it is admitted. When the response says how many tokens
//! the call really used (`usage` in a JSON body or in the final SSE event, see
//! [`usage`](crate::usage)), the difference is refunded or debited, so the budget tracks real use;
//! a response that never says (an error, a stream dropped early) keeps the estimate.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::{BulkheadLayer, ErrorsOnly, JsonBodyEstimate, TokenLimit};
//! use tower_llm_core::{BulkheadFull, LimitKind, ReplayBody};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = BulkheadLayer::builder()
//!     .token_limit(TokenLimit::per_minute(1_000), JsonBodyEstimate::new())
//!     .release_on_response()
//!     .classifier(ErrorsOnly) // the responses are not HTTP responses
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(
//!     |_req: http::Request<ReplayBody<http_body_util::Empty<Bytes>>>| async { Ok::<_, std::convert::Infallible>(()) },
//! ));
//! // 40 bytes of JSON (10 prompt tokens) + max_tokens 600 = 610 tokens.
//! let request = || {
//!     let body = Bytes::from_static(br#"{"model":"m","max_tokens":600,"x":"xyz"}"#);
//!     assert_eq!(body.len(), 40);
//!     http::Request::new(ReplayBody::from_bytes(body))
//! };
//! svc.clone().oneshot(request()).await.unwrap();
//! let err = svc.clone().oneshot(request()).await.unwrap_err();
//! let full = err.downcast_ref::<BulkheadFull>().unwrap();
//! assert_eq!(full.limit(), LimitKind::Tokens);
//! // 220 more tokens are needed; the budget refills at 1000 tokens / 60 s.
//! assert_eq!(full.retry_after(), Some(Duration::from_millis(13_200)));
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tower_llm_core::ReplayableBody;

use crate::clock::{saturating_nanos, TokioClock};
use crate::config::TokenLimit;

/// Estimates how many tokens a request will use (prompt and completion), charged against a
/// [`TokenLimit`] when the call is admitted.
///
/// Implemented for closures `Fn(&Req) -> u64`, so a typed client can say
/// `|req: &ChatRequest| req.max_tokens + req.prompt_len() / 4`.
pub trait EstimateTokens<Req>: Clone + Send + Sync + 'static {
    /// The estimated token cost of `request`.
    fn estimate(&self, request: &Req) -> u64;
}

impl<F, Req> EstimateTokens<Req> for F
where
    F: Fn(&Req) -> u64 + Clone + Send + Sync + 'static,
{
    fn estimate(&self, request: &Req) -> u64 {
        self(request)
    }
}

/// The estimator of a bulkhead without token limits: every request costs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTokenEstimate;

impl<Req> EstimateTokens<Req> for NoTokenEstimate {
    fn estimate(&self, _request: &Req) -> u64 {
        0
    }
}

/// The default estimate for an OpenAI-, Anthropic- or Gemini-style JSON request: the completion
/// budget the request asks for (`max_completion_tokens`, `max_tokens`, `max_output_tokens` or
/// `generationConfig.maxOutputTokens`; [`default_completion_tokens`](Self::default_completion_tokens)
/// when none is given) plus the request body's size divided by 4 (about 4 bytes per token of
/// English; the JSON around the prompt makes it an over-estimate, which the `usage` correction
/// later refunds).
///
/// It reads the body through [`ReplayableBody::buffered`] (put
/// [`BufferRequestBodyLayer`](tower_llm_core::BufferRequestBodyLayer) above the bulkhead); for a
/// body that is not buffered it uses the body's exact size hint, if any, and the default
/// completion budget.
#[derive(Clone, Copy, Debug)]
pub struct JsonBodyEstimate {
    default_completion_tokens: u64,
    bytes_per_token: u64,
}

impl JsonBodyEstimate {
    /// Default completion budget when the request names none.
    pub const DEFAULT_COMPLETION_TOKENS: u64 = 1024;

    /// The default estimator: 4 bytes per prompt token, 1024 completion tokens when unspecified.
    pub const fn new() -> Self {
        JsonBodyEstimate {
            default_completion_tokens: Self::DEFAULT_COMPLETION_TOKENS,
            bytes_per_token: 4,
        }
    }

    /// Completion tokens assumed for a request that sets no maximum.
    pub const fn default_completion_tokens(mut self, tokens: u64) -> Self {
        self.default_completion_tokens = tokens;
        self
    }

    /// Bytes per prompt token (at least 1; default 4).
    pub const fn bytes_per_token(mut self, bytes: u64) -> Self {
        self.bytes_per_token = if bytes == 0 { 1 } else { bytes };
        self
    }

    /// The estimate for a JSON request body.
    pub fn estimate_json(&self, body: &[u8]) -> u64 {
        let completion = serde_json::from_slice::<RequestedCompletion>(body)
            .ok()
            .and_then(|r| r.max())
            .unwrap_or(self.default_completion_tokens);
        self.prompt_tokens(body.len() as u64)
            .saturating_add(completion)
    }

    fn prompt_tokens(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.bytes_per_token)
    }
}

impl Default for JsonBodyEstimate {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> EstimateTokens<http::Request<B>> for JsonBodyEstimate
where
    B: ReplayableBody,
{
    fn estimate(&self, request: &http::Request<B>) -> u64 {
        let body = request.body();
        match body.buffered() {
            Some(bytes) => self.estimate_json(bytes),
            None => {
                let hint = body.size_hint();
                let bytes = hint.exact().unwrap_or(hint.lower());
                self.prompt_tokens(bytes)
                    .saturating_add(self.default_completion_tokens)
            }
        }
    }
}

/// The completion limits a request body may name (every other field is skipped unread).
#[derive(Deserialize)]
struct RequestedCompletion {
    max_completion_tokens: Option<u64>,
    max_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
}

impl RequestedCompletion {
    fn max(&self) -> Option<u64> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .or(self.max_output_tokens)
            .or(self
                .generation_config
                .as_ref()
                .and_then(|g| g.max_output_tokens))
    }
}

/// The outcome of charging a token budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Charged.
    Charged,
    /// Not enough budget now; enough after this long.
    Wait(Duration),
    /// More than the whole budget: never admissible.
    TooLarge,
}

/// A partition's token budget: GCRA over a theoretical arrival time in nanoseconds, in one
/// atomic, so charges, refunds and debits are lock-free and exact.
///
/// The budget is full when `tat <= now`; a charge of `n` tokens moves `tat` forward by
/// `n * period / tokens`, and is allowed while `tat` stays within one period of now. A debit may
/// push `tat` further (debt: later calls wait until it is paid off).
pub(crate) struct TokenBudget {
    capacity: u64,
    period: u64,
    tat: AtomicU64,
    clock: TokioClock,
    max_wait: Duration,
}

impl TokenBudget {
    pub(crate) fn new(limit: &TokenLimit, clock: TokioClock) -> Self {
        TokenBudget {
            capacity: limit.tokens().max(1),
            period: saturating_nanos(limit.period()).max(1),
            tat: AtomicU64::new(0),
            clock,
            max_wait: limit.wait_bound(),
        }
    }

    /// The longest a call may wait for budget.
    pub(crate) fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Nanoseconds of refill that `tokens` tokens take (rounded up).
    fn cost(&self, tokens: u64) -> u64 {
        let nanos =
            (u128::from(tokens) * u128::from(self.period)).div_ceil(u128::from(self.capacity));
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Charge `tokens` now if the budget allows.
    pub(crate) fn try_charge(&self, tokens: u64) -> Charge {
        if tokens > self.capacity {
            return Charge::TooLarge;
        }
        let now = self.clock.elapsed_nanos();
        let cost = self.cost(tokens);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now).saturating_add(cost);
            let ahead = next - now;
            if ahead > self.period {
                return Charge::Wait(Duration::from_nanos(ahead - self.period));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Charge::Charged,
                Err(actual) => tat = actual,
            }
        }
    }

    /// Give `tokens` back (a call charged but not sent, or an over-estimate); never beyond a full
    /// budget.
    pub(crate) fn refund(&self, tokens: u64) {
        let now = self.clock.elapsed_nanos();
        let cost = self.cost(tokens);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat > now).then(|| tat.saturating_sub(cost).max(now))
            });
    }

    /// Charge `tokens` more unconditionally (an under-estimate); may leave the budget in debt.
    pub(crate) fn debit(&self, tokens: u64) {
        let now = self.clock.elapsed_nanos();
        let cost = self.cost(tokens);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(cost))
            });
    }

    /// Tokens available now (zero while in debt).
    pub(crate) fn available(&self) -> u64 {
        let now = self.clock.elapsed_nanos();
        let used = self.tat.load(Ordering::Acquire).saturating_sub(now);
        if used >= self.period {
            return 0;
        }
        let free =
            u128::from(self.period - used) * u128::from(self.capacity) / u128::from(self.period);
        u64::try_from(free).unwrap_or(u64::MAX)
    }

    /// Whether the budget is full (so dropping it loses nothing).
    pub(crate) fn is_idle(&self, now_nanos: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now_nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn budget(tokens: u64, period: Duration) -> TokenBudget {
        TokenBudget::new(&TokenLimit::new(tokens, period), TokioClock::new())
    }

    #[tokio::test(start_paused = true)]
    async fn charges_refills_and_refunds_exactly() {
        let b = budget(1000, Duration::from_secs(60));
        assert_eq!(b.available(), 1000);
        assert_eq!(b.try_charge(600), Charge::Charged);
        assert_eq!(b.available(), 400);
        // 500 needs 100 more tokens: 100 * 60 ms.
        assert_eq!(b.try_charge(500), Charge::Wait(Duration::from_secs(6)));
        assert_eq!(b.try_charge(1001), Charge::TooLarge);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.available(), 500);
        assert_eq!(b.try_charge(500), Charge::Charged);
        assert_eq!(b.available(), 0);
        b.refund(200);
        assert_eq!(b.available(), 200);
        // A refund never fills beyond the budget.
        b.refund(5000);
        assert_eq!(b.available(), 1000);
        assert!(b.is_idle(b.clock.elapsed_nanos()));
    }

    #[tokio::test(start_paused = true)]
    async fn debit_puts_the_budget_in_debt() {
        let b = budget(100, Duration::from_secs(10));
        assert_eq!(b.try_charge(100), Charge::Charged);
        b.debit(50);
        assert_eq!(b.available(), 0);
        // 150 tokens of use: 15 s until the budget is full again, so 10 tokens after 6 s.
        assert_eq!(b.try_charge(10), Charge::Wait(Duration::from_secs(6)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.try_charge(10), Charge::Charged);
    }

    #[test]
    fn json_estimate_reads_completion_limits() {
        let e = JsonBodyEstimate::new();
        let body = br#"{"model":"m","max_tokens":100}"#;
        assert_eq!(e.estimate_json(body), (body.len() as u64).div_ceil(4) + 100);
        let body = br#"{"max_completion_tokens":7,"max_tokens":100}"#;
        assert_eq!(e.estimate_json(body), (body.len() as u64).div_ceil(4) + 7);
        let body = br#"{"generationConfig":{"maxOutputTokens":64},"contents":[]}"#;
        assert_eq!(e.estimate_json(body), (body.len() as u64).div_ceil(4) + 64);
        let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            e.estimate_json(body),
            (body.len() as u64).div_ceil(4) + 1024
        );
        assert_eq!(e.estimate_json(b"not json"), 2 + 1024);
        let e = e.default_completion_tokens(10).bytes_per_token(0);
        assert_eq!(e.estimate_json(b"{}"), 2 + 10);
    }

    #[test]
    fn json_estimate_falls_back_to_the_size_hint() {
        let e = JsonBodyEstimate::new();
        let req = http::Request::new(http_body_util::Full::new(Bytes::from_static(&[b' '; 400])));
        assert_eq!(EstimateTokens::estimate(&e, &req), 100 + 1024);
    }
}
