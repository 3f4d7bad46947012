//! The seed cases of issue 5, over real loopback HTTP: hyper-util's client against two chaos mock
//! upstreams (two providers), through `BufferRequestBodyLayer` → fallback → `InspectErrorBodyLayer`.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::{advance, Instant};
use tower_llm_chaos::{hold_auto_advance, Fault, CANONICAL_ANSWER};
use tower_llm_core::{AllTargetsFailed, ErrorKind};
use tower_llm_fallback::{
    is_skipped, CacheConfig, EscalationPolicy, FallbackKind, FallbackLayer, JsonDirEscalation,
    JsonFileStore, OverallHealth, Secret, StaticAnswer, TargetConfig,
};

const PRIMARY: &str = "primary";
const SECONDARY: &str = "secondary";

fn two_targets(primary_url: &str, secondary_url: &str) -> tower_llm_fallback::FallbackLayerBuilder {
    FallbackLayer::builder()
        .target(
            TargetConfig::new("provider-a", "model-a")
                .name(PRIMARY)
                .base_url(primary_url)
                .bearer(Secret::new("key-a").unwrap())
                .attempt_timeout(Duration::from_secs(5))
                .context_window(8_000),
        )
        .target(
            TargetConfig::new("provider-b", "model-b")
                .name(SECONDARY)
                .base_url(secondary_url)
                .auth_header("x-api-key", Secret::new("key-b").unwrap())
                .max_tokens(100)
                .attempt_timeout(Duration::from_secs(30))
                .context_window(128_000),
        )
}

#[tokio::test(start_paused = true)]
async fn primary_healthy_answers_and_the_fallback_is_never_called() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::Healthy).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url()).build().unwrap();
    let svc = stack(layer);

    for _ in 0..3 {
        let res = ask(&svc, &a.completions_url(), chat("alias", false))
            .await
            .unwrap();
        let (parts, report, body) = read(res).await;
        assert_eq!(parts.status, 200);
        assert_eq!(header(&parts, "x-llm-target"), PRIMARY);
        assert_eq!(header(&parts, "x-llm-fallback"), "none");
        assert_eq!(report.fallback, FallbackKind::None);
        assert!(report.attempts.is_empty());
        let attempt = a.attempts().last().cloned().unwrap();
        // Byte for byte what the primary sent: its model, its usage.
        assert_eq!(body, expected_json(&attempt, "model-a"));
    }
    assert_eq!(b.attempt_count(), 0, "the fallback is never called");
    // The primary got its own model, its own key and nothing of the caller's.
    let seen = &a.attempts()[0];
    assert_eq!(seen.model, "model-a");
    assert_eq!(seen.headers["authorization"], "Bearer key-a");
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["user"], "u-1", "unknown members survive the rewrite");
    assert_eq!(sent["temperature"], 0.2);
}

#[tokio::test(start_paused = true)]
async fn primary_fails_and_the_secondary_answers_saying_so() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::status(500)).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url()).build().unwrap();
    let handle = layer.handle();
    let svc = stack(layer);

    let body = r#"{"model":"alias","max_tokens":4096,"messages":[{"role":"user","content":"hi"}]}"#;
    let res = ask(&svc, &a.completions_url(), body.to_owned())
        .await
        .unwrap();
    let (parts, report, bytes) = read(res).await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&parts, "x-llm-target"), SECONDARY);
    assert_eq!(header(&parts, "x-llm-fallback"), "target");
    assert_eq!(report.fallback, FallbackKind::Target);
    assert_eq!(report.target.as_deref(), Some(SECONDARY));
    assert_eq!(report.tier, Some(1));
    assert_eq!(report.upstream.as_ref().unwrap().model(), "model-b");
    assert_eq!(report.attempts.len(), 1);
    let failed = &report.attempts[0];
    assert_eq!(
        (failed.attempt, failed.kind, failed.status),
        (1, ErrorKind::ServerError, Some(500))
    );
    assert_eq!(failed.target.as_ref().unwrap().provider(), "provider-a");

    // The answer is the secondary's, byte for byte: its model, the usage of that call only.
    let seen = b.attempts()[0].clone();
    assert_eq!(bytes, expected_json(&seen, "model-b"));
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["model"], "model-b");
    assert_eq!(answer["choices"][0]["message"]["content"], CANONICAL_ANSWER);

    // The secondary's rewrite: model, cap, its own credential, not the primary's or the caller's.
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["model"], "model-b");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(seen.headers["x-api-key"], "key-b");
    assert!(seen.headers.get("authorization").is_none());

    let health = handle.health();
    assert_eq!(health.status, OverallHealth::Degraded);
    let primary = health.target(PRIMARY).unwrap();
    assert!(!primary.available);
    assert_eq!(
        primary.cooldown.as_ref().unwrap().kind,
        ErrorKind::ServerError
    );
    assert_eq!(primary.last_error.as_ref().unwrap().status, Some(500));
}

#[tokio::test(start_paused = true)]
async fn both_fail_with_every_attempt_listed_and_escalated() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::status(503)).await;
    let b = mock(Fault::status(502)).await;
    let dir = scratch("escalations");
    let hook = JsonDirEscalation::new(&dir).unwrap();
    let layer = two_targets(&a.base_url(), &b.base_url())
        .escalation(hook.clone())
        // No rate limit: one record per failed request.
        .escalation_policy(
            EscalationPolicy::new()
                .repeated_kind(0)
                .rate_limit_window(Duration::ZERO),
        )
        .build()
        .unwrap();
    let svc = stack(layer);

    let err = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap_err();
    let all = err
        .downcast_ref::<AllTargetsFailed>()
        .expect("AllTargetsFailed");
    let rows: Vec<_> = all
        .attempts()
        .iter()
        .map(|r| (r.attempt, r.kind, r.status))
        .collect();
    assert_eq!(
        rows,
        [
            (1, ErrorKind::Overloaded, Some(503)),
            (2, ErrorKind::ServerError, Some(502))
        ]
    );
    assert!(all
        .to_string()
        .starts_with("all targets failed (2 attempt(s))"));
    assert!(all.last().unwrap().to_string().contains("secondary"));

    // Both are benched now: the next request skips them without calling either, and says so.
    let err = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap_err();
    let all = err.downcast_ref::<AllTargetsFailed>().unwrap();
    assert_eq!(all.attempts().len(), 2);
    assert!(all.attempts().iter().all(is_skipped));
    assert_eq!(
        all.attempts()[0].retry_after,
        Some(Duration::from_millis(500))
    );
    assert_eq!((a.attempt_count(), b.attempt_count()), (1, 1));

    // Records are written by the hook's writer thread.
    hook.flush();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "one escalation record per failed request");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(record["reason"]["type"], "all_targets_failed");
    assert_eq!(record["attempts"].as_array().unwrap().len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(start_paused = true)]
async fn both_fail_and_the_cache_then_the_static_tier_answer() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::Healthy).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url())
        .cache(CacheConfig::new().ttl(Duration::from_secs(60)))
        .static_answer(StaticAnswer::new("Sorry, try again soon.").model("offline"))
        .build()
        .unwrap();
    let svc = stack(layer);

    // A healthy answer fills the cache.
    let res = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    let (_, report, original) = read(res).await;
    assert_eq!(report.fallback, FallbackKind::None);

    a.set_default_fault(Fault::status(503));
    b.set_default_fault(Fault::ResetBeforeHeaders);
    advance(Duration::from_secs(5)).await;

    // Same question from the same end user (`user` is part of the key since issue 15; member
    // order is not): the cached answer.
    let same = chat("alias", false).replace(
        r#""temperature":0.2,"stream":false"#,
        r#""stream":false,"temperature":0.2"#,
    );
    assert_ne!(same, chat("alias", false));
    let res = ask(&svc, &a.completions_url(), same).await.unwrap();
    let (parts, report, cached) = read(res).await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&parts, "x-llm-fallback"), "cache");
    assert_eq!(header(&parts, "x-llm-target"), PRIMARY);
    assert_eq!(header(&parts, "age"), "5");
    assert_eq!(report.fallback, FallbackKind::Cache);
    assert_eq!(report.cache_age, Some(Duration::from_secs(5)));
    let kinds: Vec<_> = report.attempts.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [ErrorKind::Overloaded, ErrorKind::Transport]);
    let cached: serde_json::Value = serde_json::from_slice(&cached).unwrap();
    let original: serde_json::Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(
        cached["model"], "model-a",
        "the model that produced the answer"
    );
    assert_eq!(cached["choices"], original["choices"]);
    assert_eq!(
        cached["usage"]["total_tokens"], 0,
        "no tokens were spent for a cached answer"
    );

    // A streaming request for the same question gets the cached answer re-framed as SSE.
    let res = ask(&svc, &a.completions_url(), chat("alias", true))
        .await
        .unwrap();
    let (parts, report, sse) = read(res).await;
    assert_eq!(header(&parts, "content-type"), "text/event-stream");
    assert_eq!(report.fallback, FallbackKind::Cache);
    assert!(
        report.attempts.iter().all(is_skipped),
        "both targets are cooling down"
    );
    assert_eq!(sse_content(&sse), CANONICAL_ANSWER);
    assert!(sse.ends_with(b"data: [DONE]\n\n"));

    // Another question: nothing cached, the static answer in the caller's shape.
    let res = ask(&svc, &a.completions_url(), chat("other", false))
        .await
        .unwrap();
    let (parts, report, body) = read(res).await;
    assert_eq!(header(&parts, "x-llm-fallback"), "static");
    assert_eq!(header(&parts, "x-llm-target"), "static");
    assert_eq!(report.fallback, FallbackKind::Static);
    assert_eq!(report.attempts.len(), 2);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["model"], "offline");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Sorry, try again soon."
    );
    let res = ask(&svc, &a.completions_url(), chat("other", true))
        .await
        .unwrap();
    let (_, _, sse) = read(res).await;
    assert_eq!(sse_content(&sse), "Sorry, try again soon.");

    // The cache entry expires with its TTL.
    advance(Duration::from_secs(60)).await;
    let res = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    let (parts, _, _) = read(res).await;
    assert_eq!(header(&parts, "x-llm-fallback"), "static");
}

#[tokio::test(start_paused = true)]
async fn primary_401_is_tried_once_then_skipped_until_reset() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::status(401)).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url()).build().unwrap();
    let handle = layer.handle();
    let svc = stack(layer);

    let res = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    let (parts, report, _) = read(res).await;
    assert_eq!(header(&parts, "x-llm-target"), SECONDARY);
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(
        (report.attempts[0].kind, report.attempts[0].status),
        (ErrorKind::Auth, Some(401))
    );
    assert_eq!(a.attempt_count(), 1, "exactly one primary attempt");

    // Later requests skip the primary, however much time passes.
    for wait in [
        Duration::ZERO,
        Duration::from_secs(120),
        Duration::from_secs(24 * 3600),
    ] {
        advance(wait).await;
        let res = ask(&svc, &a.completions_url(), chat("alias", false))
            .await
            .unwrap();
        let (parts, report, _) = read(res).await;
        assert_eq!(header(&parts, "x-llm-target"), SECONDARY);
        assert_eq!(report.skipped().count(), 1);
        assert_eq!(report.attempts[0].kind, ErrorKind::Auth);
        assert_eq!(report.attempts[0].retry_after, None, "until reset");
        assert_eq!(a.attempt_count(), 1);
    }
    let primary = handle.health().target(PRIMARY).cloned().unwrap();
    assert!(!primary.available);
    assert_eq!(primary.cooldown.as_ref().unwrap().until_unix_ms, None);

    // Fixed key: reset by hand, and the primary is back at once.
    a.set_default_fault(Fault::Healthy);
    assert!(handle.reset_target(PRIMARY));
    let res = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    let (parts, report, _) = read(res).await;
    assert_eq!(header(&parts, "x-llm-target"), PRIMARY);
    assert_eq!(report.fallback, FallbackKind::None);
    assert_eq!(a.attempt_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_primary_is_benched_for_the_server_delay_then_probed() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::status(429).retry_after_secs(3)).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url()).build().unwrap();
    let svc = stack(layer);
    let start = Instant::now();

    let res = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    let (parts, report, _) = read(res).await;
    assert_eq!(header(&parts, "x-llm-target"), SECONDARY);
    let limited = &report.attempts[0];
    assert_eq!(
        (limited.kind, limited.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(3)))
    );

    // The limit is lifted upstream at once, but the primary stays benched for the 3 s it asked.
    a.set_default_fault(Fault::Healthy);
    advance(Duration::from_millis(2_900)).await;
    let res = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    let (parts, report, _) = read(res).await;
    assert_eq!(header(&parts, "x-llm-target"), SECONDARY);
    assert!(is_skipped(&report.attempts[0]));
    assert_eq!(
        report.attempts[0].retry_after,
        Some(Duration::from_millis(100))
    );
    assert_eq!(a.attempt_count(), 1);

    // At 3 s the next request probes the primary, which answers: back in service.
    advance(Duration::from_millis(100)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let res = ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    let (parts, report, _) = read(res).await;
    assert_eq!(header(&parts, "x-llm-target"), PRIMARY);
    assert_eq!(report.fallback, FallbackKind::None);
    assert_eq!(a.attempt_count(), 2);
    assert_eq!(
        a.attempts()[1].at - a.attempts()[0].at,
        Duration::from_secs(3)
    );
}

#[tokio::test(start_paused = true)]
async fn only_one_probe_goes_out_when_a_cooldown_lifts() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::status(429).retry_after_secs(1)).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url()).build().unwrap();
    let svc = stack(layer);
    ask(&svc, &a.completions_url(), chat("alias", false))
        .await
        .unwrap();
    a.set_default_fault(Fault::Latency(Duration::from_millis(500)));
    advance(Duration::from_secs(1)).await;

    // Five requests at once when the cooldown lifts: one probe, four go to the secondary.
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            let url = a.completions_url();
            tokio::spawn(
                async move { read(ask(&svc, &url, chat("alias", false)).await.unwrap()).await },
            )
        })
        .collect();
    a.wait_for_attempts(2).await;
    advance(Duration::from_millis(500)).await;
    let mut targets = Vec::new();
    for r in requests {
        let (parts, _, _) = r.await.unwrap();
        targets.push(header(&parts, "x-llm-target").to_owned());
    }
    targets.sort();
    assert_eq!(
        targets,
        [PRIMARY, SECONDARY, SECONDARY, SECONDARY, SECONDARY]
    );
    assert_eq!(a.attempt_count(), 2, "one failed attempt, one probe");
}

#[tokio::test(start_paused = true)]
async fn flapping_primary_is_covered_then_back_within_one_probe() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::flapping(Duration::from_secs(10), Fault::status(503))).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url()).build().unwrap();
    let svc = stack(layer);
    let start = Instant::now();

    let mut served = Vec::new();
    while start.elapsed() < Duration::from_secs(30) {
        let res = ask(&svc, &a.completions_url(), chat("alias", false))
            .await
            .unwrap();
        let (parts, _, body) = read(res).await;
        assert_eq!(parts.status, 200, "every request is answered");
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], CANONICAL_ANSWER);
        served.push((start.elapsed(), header(&parts, "x-llm-target").to_owned()));
        advance(Duration::from_millis(500)).await;
    }
    // During the outage the secondary answers.
    assert!(served
        .iter()
        .filter(|(t, _)| *t < Duration::from_secs(10))
        .all(|(_, who)| who == SECONDARY));
    // After the recovery the first call to the primary succeeds, and it keeps the traffic.
    let primary_calls = a.attempts();
    let first_after = primary_calls
        .iter()
        .position(|c| c.at >= Duration::from_secs(10))
        .expect("the primary is probed after it recovered");
    assert_eq!(
        primary_calls[first_after].status,
        Some(200),
        "back within one probe"
    );
    assert!(primary_calls[..first_after]
        .iter()
        .all(|c| c.status == Some(503)));
    let back_at = primary_calls[first_after].at;
    assert!(served
        .iter()
        .filter(|(t, _)| *t >= back_at)
        .all(|(_, who)| who == PRIMARY));
    // Probes during the outage: about one a second at most (a quarter of the outage so far,
    // at least 500 ms), so the primary is back within a quarter of the outage after it ends.
    assert!(first_after <= 11, "{first_after} failed probes");
    assert!(back_at <= Duration::from_millis(12_500), "{back_at:?}");
}

#[tokio::test(start_paused = true)]
async fn health_survives_a_save_and_restore_through_the_file_store() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::status(401)).await;
    let b = mock(Fault::status(429).retry_after_secs(120)).await;
    let c = mock(Fault::Healthy).await;
    let build = || {
        two_targets(&a.base_url(), &b.base_url())
            .target(
                TargetConfig::new("provider-c", "model-c")
                    .name("tertiary")
                    .base_url(c.base_url()),
            )
            .build()
            .unwrap()
    };
    let dir = scratch("health");
    let store = JsonFileStore::new(dir.join("health.json"));

    let layer = build();
    let handle = layer.handle();
    let svc = stack(layer);
    let (_, report, _) = read(
        ask(&svc, &a.completions_url(), chat("alias", false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(report.target.as_deref(), Some("tertiary"));
    handle.save(&store).unwrap();
    let saved = handle.health();
    assert_eq!(saved.status, OverallHealth::Degraded);

    // "Restart": a new chain from the same configuration, restored from the file.
    advance(Duration::from_secs(20)).await;
    let layer = build();
    let restored_handle = layer.handle();
    assert_eq!(restored_handle.restore(&store).unwrap(), 3);
    let restored = restored_handle.health();
    for (before, after) in saved.targets.iter().zip(&restored.targets) {
        assert_eq!(before.name, after.name);
        assert_eq!(before.requests, after.requests);
        assert_eq!(before.failures, after.failures);
        assert_eq!(before.consecutive_failures, after.consecutive_failures);
        assert_eq!(before.recent_errors, after.recent_errors);
        assert_eq!(before.last_error, after.last_error);
        assert_eq!(before.available, after.available);
        assert_eq!(
            before.cooldown.as_ref().map(|c| c.kind),
            after.cooldown.as_ref().map(|c| c.kind)
        );
    }
    let auth = restored.target(PRIMARY).unwrap().cooldown.clone().unwrap();
    assert_eq!((auth.kind, auth.until_unix_ms), (ErrorKind::Auth, None));
    let limited = restored
        .target(SECONDARY)
        .unwrap()
        .cooldown
        .clone()
        .unwrap();
    let saved_until = saved
        .target(SECONDARY)
        .unwrap()
        .cooldown
        .clone()
        .unwrap()
        .until_unix_ms
        .unwrap();
    // The wall-clock end is kept (give or take the real time the test took).
    assert!(limited.until_unix_ms.unwrap().abs_diff(saved_until) < 2_000);

    // The restored chain skips the benched targets without calling them.
    let svc = stack(layer);
    let (_, report, _) = read(
        ask(&svc, &a.completions_url(), chat("alias", false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(report.target.as_deref(), Some("tertiary"));
    assert_eq!(report.skipped().count(), 2);
    assert_eq!((a.attempt_count(), b.attempt_count()), (1, 1));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(start_paused = true)]
async fn context_length_moves_only_to_a_larger_context_target() {
    let _hold = hold_auto_advance();
    let upstream = tower_llm_chaos::MockUpstream::builder()
        .route("ctx-8k", Fault::ContextLengthExceeded)
        .route("ctx-4k", Fault::Healthy)
        .route("ctx-128k", Fault::Healthy)
        .start()
        .await
        .unwrap();
    let url = upstream.base_url();
    let chain = |larger: bool| {
        let mut builder = FallbackLayer::builder()
            .target(
                TargetConfig::new("p", "ctx-8k")
                    .base_url(&url)
                    .context_window(8_000),
            )
            .target(
                TargetConfig::new("p", "ctx-4k")
                    .base_url(&url)
                    .context_window(4_000),
            );
        if larger {
            builder = builder.target(
                TargetConfig::new("p", "ctx-128k")
                    .base_url(&url)
                    .context_window(128_000),
            );
        }
        builder.build().unwrap()
    };

    let layer = chain(true);
    let handle = layer.handle();
    let svc = stack(layer);
    let (parts, report, body) = read(
        ask(&svc, &upstream.completions_url(), chat("alias", false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&parts, "x-llm-target"), "p/ctx-128k");
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(
        (report.attempts[0].kind, report.attempts[0].status),
        (ErrorKind::ContextLength, Some(400))
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["model"], "ctx-128k");
    let models: Vec<_> = upstream
        .attempts()
        .iter()
        .map(|a| a.model.clone())
        .collect();
    assert_eq!(
        models,
        ["ctx-8k", "ctx-128k"],
        "the smaller window is never tried"
    );
    assert!(
        handle.health().target("p/ctx-8k").unwrap().available,
        "the request was too long, not the target broken"
    );

    // No larger window anywhere: the provider's 400 comes back unchanged.
    upstream.clear_attempts();
    let svc = stack(chain(false));
    let (parts, report, body) = read(
        ask(&svc, &upstream.completions_url(), chat("alias", false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 400);
    assert_eq!(header(&parts, "x-llm-target"), "p/ctx-8k");
    assert!(report.attempts.is_empty());
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("context_length_exceeded"));
    assert_eq!(upstream.attempt_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn content_policy_is_returned_unchanged() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::ContentPolicyViolation).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url()).build().unwrap();
    let handle = layer.handle();
    let svc = stack(layer);
    let (parts, report, body) = read(
        ask(&svc, &a.completions_url(), chat("alias", false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 400);
    assert_eq!(header(&parts, "x-llm-target"), PRIMARY);
    assert_eq!(header(&parts, "x-llm-fallback"), "none");
    assert!(report.attempts.is_empty());
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("content_policy_violation"));
    assert_eq!(b.attempt_count(), 0, "no failover on a policy refusal");
    assert!(handle.health().target(PRIMARY).unwrap().available);
}

#[tokio::test(start_paused = true)]
async fn streaming_commits_only_after_the_first_event() {
    let _hold = hold_auto_advance();
    // Healthy stream: the caller receives exactly what the primary sent, peeked prefix included.
    let a = mock(Fault::Healthy).await;
    let b = mock(Fault::Healthy).await;
    let svc = stack(two_targets(&a.base_url(), &b.base_url()).build().unwrap());
    let (parts, report, body) = read(
        ask(&svc, &a.completions_url(), chat("alias", true))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(header(&parts, "content-type"), "text/event-stream");
    assert_eq!(report.fallback, FallbackKind::None);
    assert_eq!(body, expected_sse(&a.attempts()[0], "model-a"));

    // First event is an error: fail over, and the caller sees only the secondary's stream.
    a.set_default_fault(Fault::FirstEventError);
    let (parts, report, body) = read(
        ask(&svc, &a.completions_url(), chat("alias", true))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(header(&parts, "x-llm-target"), SECONDARY);
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(
        (report.attempts[0].kind, report.attempts[0].status),
        (ErrorKind::ServerError, Some(200))
    );
    assert_eq!(body, expected_sse(&b.attempts()[0], "model-b"));
    assert_eq!(sse_content(&body), CANONICAL_ANSWER);
}

#[tokio::test(start_paused = true)]
async fn streaming_without_a_first_event_in_time_fails_over() {
    // No hold here: the paused clock runs to the primary's 5 s attempt timeout by itself.
    let a = mock(Fault::SlowFirstToken(Duration::from_secs(60))).await;
    let b = mock(Fault::Healthy).await;
    let svc = stack(two_targets(&a.base_url(), &b.base_url()).build().unwrap());
    let start = Instant::now();
    let (parts, report, body) = read(
        ask(&svc, &a.completions_url(), chat("alias", true))
            .await
            .unwrap(),
    )
    .await;
    let took = start.elapsed();
    assert_eq!(header(&parts, "x-llm-target"), SECONDARY);
    assert_eq!(report.attempts[0].kind, ErrorKind::Timeout);
    assert_eq!(report.attempts[0].elapsed, Duration::from_secs(5));
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(sse_content(&body), CANONICAL_ANSWER);
    assert!(body.ends_with(b"data: [DONE]\n\n"));
}

/// Ask for a chat with `model` through `svc`, check the answer carries no `FallbackReport`, and
/// return its `x-llm-target`, its `x-llm-fallback` and its body.
async fn ask_unreported(svc: &Stack, url: &str, model: &str) -> (String, String, bytes::Bytes) {
    let res = ask(svc, url, chat(model, false)).await.unwrap();
    let (parts, body) = res.into_parts();
    assert_eq!(parts.status, 200);
    assert!(
        parts
            .extensions
            .get::<tower_llm_fallback::FallbackReport>()
            .is_none(),
        "no report when it is turned off"
    );
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    let name = |h: &str| header(&parts, h).to_owned();
    (name("x-llm-target"), name("x-llm-fallback"), bytes)
}

/// With the report turned off (a proxy that forwards answers and reads no report), answers carry
/// the same headers and bodies and no `FallbackReport`: from the first target, after a failover,
/// from the cache and from the static tier.
#[tokio::test(start_paused = true)]
async fn without_the_report_answers_still_name_their_target_in_headers() {
    let _hold = hold_auto_advance();
    let a = mock(Fault::Healthy).await;
    let b = mock(Fault::Healthy).await;
    let layer = two_targets(&a.base_url(), &b.base_url())
        .report_extension(false)
        .cache(CacheConfig::new().ttl(Duration::from_secs(60)))
        .static_answer(StaticAnswer::new("Sorry, try again soon.").model("offline"))
        .build()
        .unwrap();
    let svc = stack(layer);
    let url = a.completions_url();

    let (target, kind, bytes) = ask_unreported(&svc, &url, "alias").await;
    assert_eq!((target.as_str(), kind.as_str()), (PRIMARY, "none"));
    let seen = a.attempts().last().cloned().unwrap();
    assert_eq!(bytes, expected_json(&seen, "model-a"));

    // The primary fails: the secondary answers, and says so in the header.
    a.set_default_fault(Fault::status(500));
    let (target, kind, _) = ask_unreported(&svc, &url, "other").await;
    assert_eq!((target.as_str(), kind.as_str()), (SECONDARY, "target"));

    // Both fail: the first question is answered from the cache, a new one by the static tier.
    b.set_default_fault(Fault::status(500));
    let (target, kind, _) = ask_unreported(&svc, &url, "alias").await;
    assert_eq!((target.as_str(), kind.as_str()), (PRIMARY, "cache"));
    let (target, kind, _) = ask_unreported(&svc, &url, "third").await;
    assert_eq!((target.as_str(), kind.as_str()), ("static", "static"));
}
