//! Regression tests, one per root cause of "a 6-second outage costs a minute", through the
//! facade's public API over loopback (chaos mocks, paused clock). `tests/scenarios.rs` measures
//! the whole timelines; each test here pins one mechanism.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_llm::core::{AllTargetsFailed, ErrorKind};
use tower_llm::StackConfig;
use tower_llm_chaos::MockUpstream;

mod two_providers;

use two_providers::{config_text, mock, TestStack};

/// The two-provider stack with `extra` sections.
fn stack(primary: &MockUpstream, secondary: &MockUpstream, extra: &str) -> TestStack {
    let config = StackConfig::from_toml_str(&config_text(extra)).expect("config");
    two_providers::stack(&config, primary, secondary)
}

/// Ask for a completion (`stream` for SSE); the answer's `x-llm-target`, or the error.
async fn ask(stack: &TestStack, stream: bool) -> Result<String, tower::BoxError> {
    let body = if stream {
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
    } else {
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#
    };
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let res = stack.clone().oneshot(req).await?;
    let target = res
        .headers()
        .get("x-llm-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    res.into_body().collect().await?;
    Ok(target)
}

const PRIMARY: &str = "primary/gpt-4o";
const SECONDARY: &str = "secondary/gpt-4o";

/// Retries that waited were cut by the chain's 2 s and recorded as timeouts, benching the primary
/// for 30 s although it answered 503 at once. Now: one call (the secondary can answer), recorded
/// as what it was, benched for about a second.
#[tokio::test(start_paused = true)]
async fn a_fast_503_is_recorded_as_overloaded_and_fails_over_without_retrying() {
    let primary = mock("status:503").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "[retry]\nmax_attempts = 3\n");
    let start = Instant::now();
    assert_eq!(ask(&stack, false).await.unwrap(), SECONDARY);
    assert!(start.elapsed() < Duration::from_millis(100), "no backoff");
    assert_eq!(primary.attempt_count(), 1, "failed over, not retried");
    let health = stack.health();
    let p = health.target(PRIMARY).unwrap();
    assert_eq!(p.last_error.as_ref().unwrap().kind, ErrorKind::Overloaded);
    let cooldown = p.cooldown.as_ref().unwrap();
    assert_eq!(cooldown.kind, ErrorKind::Overloaded);
}

/// When the primary is the last target standing, retries still happen, within its 2 s, and a
/// cut after a 503 is recorded as the 503.
#[tokio::test(start_paused = true)]
async fn the_last_target_is_retried_within_its_budget_and_recorded_honestly() {
    let primary = mock("status:503").await;
    let secondary = mock("status:401").await;
    // The chain does not bench transient failures here, so the primary stays callable.
    let stack = stack(
        &primary,
        &secondary,
        "[retry]\nmax_attempts = 5\nbase_ms = 400\nmax_delay_ms = 400\n[cooldown]\ntransient_min_ms = 0\n",
    );
    // Bench the secondary (auth: until reset) so the primary is the only target left.
    let _ = ask(&stack, false).await;
    primary.clear_attempts();
    tokio::time::advance(Duration::from_secs(10)).await;
    let start = Instant::now();
    let err = ask(&stack, false).await.unwrap_err();
    assert!(err.is::<AllTargetsFailed>(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "never waits past the 2 s budget"
    );
    assert!(primary.attempt_count() >= 2, "retried on the last target");
    let p = stack.health();
    let p = p.target(PRIMARY).unwrap();
    assert_eq!(p.last_error.as_ref().unwrap().kind, ErrorKind::Overloaded);
}

/// The primary's breaker sat open while the chain's cooldown kept every call, probes included,
/// away from it. Now the chain's probe passes an open breaker, and its success closes it.
#[tokio::test(start_paused = true)]
async fn the_chains_probe_passes_an_open_breaker_and_closes_it() {
    let primary = mock("0s-3s = status:503; default = healthy").await;
    let secondary = mock("healthy").await;
    // A breaker that stays open a minute on its own clock.
    let stack = stack(
        &primary,
        &secondary,
        "[breaker]\nconsecutive_failures = 2\nopen_ms = 60000\nmax_open_ms = 60000\n",
    );
    // Concurrent failures open the breaker.
    let asks: Vec<_> = (0..4).map(|_| ask(&stack, false)).collect();
    for target in futures_util::future::join_all(asks).await {
        assert_eq!(target.unwrap(), SECONDARY);
    }
    let breaker = stack.breaker(PRIMARY).unwrap();
    assert_eq!(breaker.state(), tower_llm::breaker::State::Open);
    // The primary recovers at 3 s; the breaker alone would keep it out until 60 s.
    let start = Instant::now();
    let mut back = None;
    while start.elapsed() < Duration::from_secs(10) {
        if ask(&stack, false).await.unwrap() == PRIMARY {
            back = Some(start.elapsed());
            break;
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let back = back.expect("back on the primary");
    assert!(back <= Duration::from_secs(5), "back after {back:?}");
    assert_eq!(breaker.state(), tower_llm::breaker::State::Closed);
}

/// With both providers down for 6 s, every request got 503 for another 55 s. Now panic mode
/// probes each target every 500 ms and answers resume within a second of the recovery.
#[tokio::test(start_paused = true)]
async fn when_both_are_down_answers_resume_within_a_second_of_recovery() {
    let primary = mock("0s-6s = status:503; default = healthy").await;
    let secondary = mock("0s-6s = status:503; default = healthy").await;
    let stack = stack(&primary, &secondary, "");
    let start = Instant::now();
    let mut retry_after = Vec::new();
    let resumed = loop {
        match ask(&stack, false).await {
            Ok(_) => break start.elapsed(),
            Err(err) => {
                if let Some(all) = err.downcast_ref::<AllTargetsFailed>() {
                    retry_after.extend(all.retry_after());
                }
            }
        }
        tokio::time::advance(Duration::from_millis(50)).await;
    };
    assert!(resumed >= Duration::from_secs(6));
    assert!(
        resumed <= Duration::from_secs(7),
        "answers resumed {resumed:?} after the start (the outage ended at 6 s)"
    );
    // Clients are told when the next probe is, not the longest cooldown.
    assert!(!retry_after.is_empty());
    assert!(retry_after.iter().all(|d| *d <= Duration::from_millis(500)));
    // Probes at a bounded rate: about two a second per target, one call each.
    let calls = primary.attempt_count() + secondary.attempt_count();
    assert!(calls <= 2 * 13 + 4, "{calls} upstream calls in 6 s");
}

/// During a minute-long outage the primary was probed at 0, 4, 8, 16, 28 and 48 s, each probe
/// followed by retries. Now probes are one call each, at most 5 s apart, and the primary is back
/// within 5 s of its recovery.
#[tokio::test(start_paused = true)]
async fn a_long_outage_is_probed_at_most_every_five_seconds_one_call_each() {
    let primary = mock("0s-60s = status:503; default = healthy").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "[retry]\nmax_attempts = 3\n");
    let start = Instant::now();
    let mut back = None;
    while start.elapsed() < Duration::from_secs(80) {
        let target = ask(&stack, true).await.unwrap();
        if target == PRIMARY && back.is_none() {
            back = Some(start.elapsed());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let back = back.expect("the primary came back");
    assert!(back >= Duration::from_secs(60));
    assert!(back <= Duration::from_secs(65), "back at {back:?}");
    let calls: Vec<Duration> = primary
        .attempts()
        .iter()
        .filter(|a| a.at < Duration::from_secs(60))
        .map(|a| a.at)
        .collect();
    // Each probe is a single call: no two calls within a second of each other.
    for pair in calls.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(1), "calls {pair:?}");
        assert!(gap <= Duration::from_secs(6), "calls {pair:?}");
    }
}

/// A `429 retry-after: 3` made the retry layer wait until the chain cut it at 2 s. Now the
/// failure comes back at once, the secondary answers, and the primary is benched for exactly
/// the server's 3 s.
#[tokio::test(start_paused = true)]
async fn a_rate_limit_fails_over_at_once_and_benches_for_exactly_the_servers_delay() {
    let primary = mock("0s-2s = status:429:retry-after=3; default = healthy").await;
    let secondary = mock("healthy").await;
    let stack = stack(
        &primary,
        &secondary,
        "[retry]\nmax_server_delay_ms = 5000\n",
    );
    let start = Instant::now();
    assert_eq!(ask(&stack, false).await.unwrap(), SECONDARY);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no wait for the server's delay"
    );
    assert_eq!(primary.attempt_count(), 1);
    let p = stack.health();
    assert_eq!(
        p.target(PRIMARY).unwrap().cooldown.as_ref().unwrap().kind,
        ErrorKind::RateLimited
    );
    tokio::time::advance(Duration::from_millis(2999)).await;
    assert_eq!(
        ask(&stack, false).await.unwrap(),
        SECONDARY,
        "still benched"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        ask(&stack, false).await.unwrap(),
        PRIMARY,
        "probed when it lifts"
    );
    assert_eq!(primary.attempt_count(), 2);
}

/// A silent primary was tried twice before the fallback (61 s, 21.6 s to an answer). Now a
/// silent target is left at its deadline, once, for JSON and for a stream that never starts.
#[tokio::test(start_paused = true)]
async fn a_silent_target_is_tried_once_then_left_at_its_deadline() {
    for (fault, stream) in [("hang", false), ("slow-first-token:20s", true)] {
        let primary = mock(fault).await;
        let secondary = mock("healthy").await;
        let stack = stack(&primary, &secondary, "[retry]\nmax_attempts = 3\n");
        let start = Instant::now();
        assert_eq!(ask(&stack, stream).await.unwrap(), SECONDARY, "{fault}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
            "{fault}: {took:?}"
        );
        assert_eq!(primary.attempt_count(), 1, "{fault}: one call");
        let p = stack.health();
        let p = p.target(PRIMARY).unwrap();
        assert_eq!(
            p.last_error.as_ref().unwrap().kind,
            ErrorKind::Timeout,
            "{fault}"
        );
        // Benched for a second, not 30 s: probed again after it.
        tokio::time::advance(Duration::from_millis(700)).await;
        let _ = ask(&stack, stream).await;
        assert_eq!(primary.attempt_count(), 1, "{fault}: still benched");
        tokio::time::advance(Duration::from_millis(300)).await;
        let _ = ask(&stack, stream).await;
        assert_eq!(primary.attempt_count(), 2, "{fault}: probed after 1 s");
    }
}
