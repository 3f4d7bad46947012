//! The scenario driver over real loopback HTTP: two mocks, a tiny failover service, paused time.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::BoxError;
use tower_llm_chaos::scenario::{Load, Outage, Pace, Scenario, Timeline, UpstreamCalls};
use tower_llm_chaos::{Fault, MockUpstream, CANONICAL_ANSWER};

type Failover =
    tower::util::BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// Try the primary, then the secondary on anything but a 2xx; label the answer like the
/// library's fallback does.
fn failover(primary: &MockUpstream, secondary: &MockUpstream) -> Failover {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let targets = [
        ("primary/gpt-4o", "none", primary.completions_url()),
        ("secondary/gpt-4o", "target", secondary.completions_url()),
    ];
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request<Full<Bytes>>| {
        let (client, targets) = (client.clone(), targets.clone());
        async move {
            let body = req.into_body();
            let mut last: Option<Result<Response<Incoming>, BoxError>> = None;
            for (target, fallback, url) in targets {
                let attempt = Request::post(url).body(body.clone())?;
                match client.request(attempt).await {
                    Ok(mut res) if res.status().is_success() => {
                        res.headers_mut().insert("x-llm-target", target.parse()?);
                        res.headers_mut()
                            .insert("x-llm-fallback", fallback.parse()?);
                        return Ok(res);
                    }
                    Ok(res) => last = Some(Ok(res)),
                    Err(error) => last = Some(Err(error.into())),
                }
            }
            last.unwrap_or_else(|| Err("no target".into()))
        }
    }))
}

async fn mock(profile: &str) -> MockUpstream {
    MockUpstream::start(profile.parse().expect("profile"))
        .await
        .expect("start the mock")
}

#[tokio::test(start_paused = true)]
async fn sixteen_clients_through_a_six_second_primary_outage() {
    let primary = mock("4s-10s=status:500; default=latency:50ms").await;
    let secondary = mock("latency:50ms").await;
    let wall = std::time::Instant::now();
    // Clients in lockstep (no stagger), so every figure below is exact arithmetic.
    let report = Scenario::new("primary 500s, 16 clients")
        .load(Load::closed(16).stagger(Duration::ZERO))
        .run(failover(&primary, &secondary), &primary, &secondary)
        .await;
    eprintln!("{report}\n(wall time {:?})", wall.elapsed());

    // 16 clients, 50 ms per request, 16 s: 5 120 requests, all answered.
    assert_eq!(report.requests, 16 * 320);
    assert_eq!(report.answered, report.requests);
    assert_eq!((report.failed, report.served_by_tier), (0, 0));
    assert_eq!(report.success_rate_when_up, 1.0);
    assert_eq!(report.requests_during_fault, 16 * 120);
    assert_eq!(report.p50_during_fault, Some(Duration::from_millis(50)));
    assert_eq!(report.p99_during_fault, Some(Duration::from_millis(50)));
    // The naive failover keeps calling the broken primary: one call each, plus the secondary.
    assert_eq!(report.primary_calls_during_fault, 16 * 120);
    assert_eq!(report.upstream_calls_per_request, 2.0);
    assert_eq!(report.upstream_calls, 16 * 320 + 16 * 120);
    // Requests started at 3.95 s end at 4 s exactly: none is in flight across the fault start.
    assert_eq!(report.in_flight_at_fault_start, 0);
    assert_eq!(report.recovery, Some(Duration::from_millis(50)));
    assert_eq!(report.resumed, Some(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn streamed_answers_are_judged_whole() {
    // The primary cuts every stream after 3 tokens during the fault; the failover only looks at
    // the status, so users get broken answers from it.
    let primary = mock("1s-2s=cut-after:3; default=latency:50ms").await;
    let secondary = mock("latency:50ms").await;
    let scenario = Scenario::new("cut streams")
        .load(Load::closed(4).stream(true))
        .timeline(Timeline::new(
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ));
    let run = scenario.drive(failover(&primary, &secondary)).await;
    let report = scenario.report(
        &run,
        &UpstreamCalls::from_mock(&primary.handle(), &run),
        &UpstreamCalls::from_mock(&secondary.handle(), &run),
    );
    eprintln!("{report}");

    let cut: Vec<_> = run.samples.iter().filter(|s| !s.answered).collect();
    assert!(!cut.is_empty());
    for sample in &cut {
        assert!(Timeline::new(
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(2)
        )
        .in_fault(sample.start));
        assert_eq!(sample.status, Some(200));
        assert!(sample.error.is_some(), "{sample:?}");
        assert_eq!(sample.target.as_deref(), Some("primary/gpt-4o"));
    }
    assert_eq!(report.failed, cut.len());
    assert_eq!(report.answered + report.failed, report.requests);
    // Outside the fault every stream was whole.
    assert!(run
        .samples
        .iter()
        .filter(|s| !(Duration::from_secs(1)..Duration::from_secs(2)).contains(&s.start))
        .all(|s| s.answered));
}

#[tokio::test(start_paused = true)]
async fn paced_requests_are_independent() {
    // Each request takes 3 s, one is sent every second: they overlap.
    let primary = mock("latency:3s").await;
    let secondary = mock("healthy").await;
    let report = Scenario::new("paced")
        .load(Load::paced(Duration::from_secs(1)).stream(true))
        .timeline(Timeline::new(
            Duration::from_secs(10),
            Duration::from_secs(4),
            Duration::from_secs(6),
        ))
        .run(failover(&primary, &secondary), &primary, &secondary)
        .await;
    assert_eq!(report.requests, 10);
    assert_eq!(report.answered, 10);
    assert_eq!(report.requests_during_fault, 2);
    assert_eq!(report.p99_during_fault, Some(Duration::from_secs(3)));
    // Started at 2 and 3 s, still running at 4 s (the one started at 1 s ends at 4 s exactly).
    assert_eq!(report.in_flight_at_fault_start, 2);
    assert_eq!(report.upstream_calls, 10);
}

#[tokio::test(start_paused = true)]
async fn a_thirty_percent_fraction_fault_costs_a_third_more_calls() {
    let primary = mock("4s-10s=fraction:0.3:status:500; default=latency:50ms").await;
    let secondary = mock("latency:50ms").await;
    let scenario = Scenario::new("primary fails 30 %");
    let first = scenario
        .run(failover(&primary, &secondary), &primary, &secondary)
        .await;
    eprintln!("{first}");
    assert_eq!(first.answered, first.requests);
    let failover_share =
        first.secondary_calls_during_fault as f64 / first.primary_calls_during_fault as f64;
    assert!((0.25..0.35).contains(&failover_share), "{failover_share}");
    assert!((1.25..1.35).contains(&first.upstream_calls_per_request));
    // The 70 % the fraction does not hit fall through to `default=latency:50ms`.
    assert_eq!(first.p50_during_fault, Some(Duration::from_millis(50)));
    assert_eq!(first.requests_during_fault, 16 * 120);

    // Same seed, same sequence numbers: the same requests fail again.
    let primary_again = mock("4s-10s=fraction:0.3:status:500; default=latency:50ms").await;
    let secondary_again = mock("latency:50ms").await;
    let again = scenario
        .run(
            failover(&primary_again, &secondary_again),
            &primary_again,
            &secondary_again,
        )
        .await;
    let statuses =
        |m: &MockUpstream| -> Vec<Option<u16>> { m.attempts().iter().map(|a| a.status).collect() };
    assert_eq!(statuses(&primary), statuses(&primary_again));
    assert_eq!(
        first.secondary_calls_during_fault,
        again.secondary_calls_during_fault
    );
}

#[tokio::test(start_paused = true)]
async fn hung_requests_are_given_up_after_the_drain() {
    let primary = MockUpstream::builder()
        .schedule(Duration::from_secs(1), Duration::from_secs(2), Fault::Hang)
        .default_fault(Fault::Latency(Duration::from_millis(100)))
        .start()
        .await
        .expect("start the mock");
    let secondary = mock("latency:100ms").await;
    let report = Scenario::new("hang, both down")
        .load(Load::closed(2).stagger(Duration::ZERO))
        .outage(Outage::Both)
        .timeline(Timeline::new(
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ))
        .drain(Duration::from_secs(5))
        .run(failover(&primary, &secondary), &primary, &secondary)
        .await;
    eprintln!("{report}");
    // Both clients hang at 1 s and stay hung until 3 s + 5 s.
    assert_eq!(report.unfinished, 2);
    assert_eq!(report.failed, 2);
    assert_eq!(report.requests, 2 * 10 + 2);
    assert_eq!(report.success_rate_when_up, 1.0);
    assert_eq!(report.p50_during_fault, Some(Duration::from_secs(7)));
    assert_eq!(report.resumed, None);
}

#[tokio::test(start_paused = true)]
async fn clients_pause_after_errors_so_time_moves() {
    // A service that fails at once: without the pause a closed loop would spin at time zero.
    let always_down = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("connection refused"))
    });
    let scenario = Scenario::new("refused")
        .load(Load::closed(3).error_pause(Duration::from_millis(100)))
        .timeline(Timeline::new(
            Duration::from_secs(1),
            Duration::ZERO,
            Duration::from_secs(1),
        ));
    let run = scenario.drive(always_down).await;
    assert_eq!(run.samples.len(), 3 * 10);
    assert!(run.samples.iter().all(|s| s.status.is_none()
        && s.error.as_deref() == Some("connection refused")
        && s.finished));
    assert_eq!(run.samples[3].start, Duration::from_millis(100));

    // A static tier answers at once too: it is served, not answered, and the client pauses.
    let static_tier = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
        res.headers_mut()
            .insert("x-llm-fallback", "static".parse().expect("header"));
        Ok::<_, Infallible>(res)
    });
    let run = scenario.drive(static_tier).await;
    assert_eq!(run.samples.len(), 3 * 10);
    let report = scenario.report(&run, &UpstreamCalls::default(), &UpstreamCalls::default());
    assert_eq!(
        (report.served_by_tier, report.answered, report.failed),
        (30, 0, 0)
    );
    assert_eq!(scenario.load.pace, Pace::Closed { clients: 3 });
}

#[tokio::test(start_paused = true)]
async fn json_answers_must_carry_the_canonical_text() {
    let wrong = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let body = serde_json::json!({"choices": [{"message": {"content": "not it"}}]});
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
    });
    let right = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let body = serde_json::json!({"choices": [{"message": {"content": CANONICAL_ANSWER}}]});
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
    });
    let scenario = Scenario::new("in process")
        .load(Load::closed(1))
        .timeline(Timeline::new(
            Duration::from_millis(100),
            Duration::ZERO,
            Duration::ZERO,
        ));
    let run = scenario.drive(wrong).await;
    assert!(run
        .samples
        .iter()
        .all(|s| s.status == Some(200) && !s.answered));
    let run = scenario.drive(right).await;
    assert_eq!(run.samples.len(), 10);
    assert!(run.samples.iter().all(|s| s.answered && s.target.is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_plain_hyper_client_drives_a_url() {
    // The gateway case: no stack in-process, the client sends every request to one URL.
    let upstream = mock("latency:100ms").await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let scenario = Scenario::new("over loopback")
        .load(
            Load::closed(2)
                .stream(true)
                .uri(upstream.completions_url().parse().expect("uri")),
        )
        .timeline(Timeline::new(
            Duration::from_secs(1),
            Duration::ZERO,
            Duration::ZERO,
        ));
    let run = scenario.drive(client).await;
    assert_eq!(run.samples.len(), 20);
    // Answered, though no `x-llm-target` says by whom.
    assert!(run.samples.iter().all(|s| s.answered && s.target.is_none()));
    let body: serde_json::Value =
        serde_json::from_slice(&upstream.attempts()[0].body).expect("JSON request");
    assert_eq!(
        body,
        serde_json::json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
        })
    );
}
