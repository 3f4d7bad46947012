//! Unit tests of target health: admission, benching, probes, snapshots.

use super::*;
use proptest::prelude::*;

/// The names a gateway's `/health` serves: stable, and what `as_str` says.
#[test]
fn overall_health_names_and_counts() {
    for (status, name) in [
        (OverallHealth::Healthy, "healthy"),
        (OverallHealth::Degraded, "degraded"),
        (OverallHealth::Unhealthy, "unhealthy"),
    ] {
        assert_eq!(status.as_str(), name);
        assert_eq!(serde_json::to_value(status).unwrap(), name);
        assert_eq!(
            serde_json::from_value::<OverallHealth>(name.into()).unwrap(),
            status
        );
    }
    assert_eq!(OverallHealth::from_available(0, 0), OverallHealth::Healthy);
    assert_eq!(OverallHealth::from_available(3, 3), OverallHealth::Healthy);
    assert_eq!(OverallHealth::from_available(1, 3), OverallHealth::Degraded);
    assert_eq!(
        OverallHealth::from_available(0, 3),
        OverallHealth::Unhealthy
    );
}

fn policy() -> CooldownPolicy {
    CooldownPolicy::default()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fail(
    s: &TargetState,
    kind: ErrorKind,
    retry_after: Option<Duration>,
    probe: bool,
    started: Instant,
    now: Instant,
) -> Failed {
    s.on_failure(
        FailedCall {
            kind,
            retry_after,
            status: None,
            probe,
            started,
        },
        &policy(),
        now,
    )
}

fn skip_after(a: Admission) -> Option<Duration> {
    match a {
        Admission::Skip { retry_after, .. } => retry_after,
        other => panic!("expected a skip, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn one_probe_after_cooldown_and_success_clears() {
    let s = TargetState::default();
    let p = policy();
    let t0 = Instant::now();
    assert!(matches!(s.admit(t0, &p), Admission::Open));
    fail(&s, ErrorKind::RateLimited, Some(secs(3)), false, t0, t0);
    match s.admit(t0 + secs(1), &p) {
        Admission::Skip { kind, retry_after } => {
            assert_eq!(kind, ErrorKind::RateLimited);
            assert_eq!(retry_after, Some(secs(2)));
        }
        other => panic!("{other:?}"),
    }
    let t3 = t0 + secs(3);
    assert!(s.is_available(t3));
    assert!(matches!(s.admit(t3, &p), Admission::Probe));
    assert!(!s.is_available(t3));
    assert_eq!(skip_after(s.admit(t3, &p)), None);
    s.on_success(true, Instant::now());
    assert!(matches!(s.admit(t3, &p), Admission::Open));
    let snap = s.snapshot("a", &Target::new("p", "m"), 0, t3, SystemTime::now());
    assert_eq!(snap.requests, 2);
    assert_eq!(snap.failures, 1);
    assert_eq!(snap.consecutive_failures, 0);
    assert!(snap.cooldown.is_none());
    assert_eq!(snap.recent_errors.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn auth_stays_benched_until_reset_even_after_a_late_success() {
    let s = TargetState::default();
    let p = policy();
    let now = Instant::now();
    fail(&s, ErrorKind::Auth, None, false, now, now);
    s.on_success(false, Instant::now());
    assert_eq!(skip_after(s.admit(now + secs(86_400), &p)), None);
    // Not even panic mode probes it.
    assert_eq!(skip_after(s.admit_in_panic(now + secs(86_400), &p)), None);
    s.reset();
    assert!(matches!(s.admit(now, &p), Admission::Open));
}

#[tokio::test(start_paused = true)]
async fn released_probe_lets_the_next_request_probe() {
    let s = TargetState::default();
    let p = policy();
    let now = Instant::now();
    fail(&s, ErrorKind::ServerError, None, false, now, now);
    let later = now + secs(30);
    assert!(matches!(s.admit(later, &p), Admission::Probe));
    s.release_probe();
    assert!(matches!(s.admit(later, &p), Admission::Probe));
}

#[tokio::test(start_paused = true)]
async fn the_cooldown_grows_with_the_outage_not_with_the_failed_calls() {
    let s = TargetState::default();
    let p = policy();
    let t0 = Instant::now();
    // Sixteen calls in flight fail at once: one outage, a 1 s cooldown, not 2^15 × base.
    for _ in 0..16 {
        let failed = fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
        assert_eq!(failed.benched_for, Some(secs(1)));
    }
    // Probes keep failing: the cooldown is a quarter of the outage, capped at 5 s (every
    // cooldown sees a request skipped at its start: traffic is dense, no early probe).
    let mut now = t0;
    let mut gaps = Vec::new();
    for _ in 0..12 {
        let wait = skip_after(s.admit(now, &p)).unwrap_or_default();
        now += wait;
        assert!(matches!(s.admit(now, &p), Admission::Probe));
        gaps.push(wait.as_millis());
        fail(&s, ErrorKind::Overloaded, None, true, now, now);
    }
    assert_eq!(
        gaps,
        [1000, 1000, 1000, 1000, 1000, 1250, 1562, 1953, 2441, 3051, 3814, 4768]
    );
    now += secs(600);
    assert!(matches!(s.admit(now, &p), Admission::Probe));
    let failed = fail(&s, ErrorKind::Timeout, None, true, now, now);
    assert_eq!(failed.benched_for, Some(secs(5)));
}

#[tokio::test(start_paused = true)]
async fn a_silent_probe_does_not_hold_back_the_next_one() {
    let s = TargetState::default();
    let p = policy();
    let t0 = Instant::now();
    // Calls started at 0 time out at 2 s: benched 1 s from then.
    fail(&s, ErrorKind::Timeout, None, false, t0, t0 + secs(2));
    let t = t0 + secs(3);
    assert!(matches!(s.admit(t0 + ms(2100), &p), Admission::Skip { .. }));
    assert!(matches!(s.admit(t - ms(1), &p), Admission::Skip { .. }));
    assert!(matches!(s.admit(t, &p), Admission::Probe));
    // The probe hangs; the next one may start a quarter of the outage (3 s), at least 1 s,
    // after it.
    assert_eq!(skip_after(s.admit(t + ms(100), &p)), Some(ms(900)));
    assert!(matches!(s.admit(t + secs(1), &p), Admission::Probe));
    // Not more often than that.
    assert!(matches!(s.admit(t + ms(1001), &p), Admission::Skip { .. }));
    // The first probe fails at its attempt timeout: its cooldown counts from its start.
    fail(&s, ErrorKind::Timeout, None, true, t, t + secs(2));
    // In panic mode, one probe at a time.
    assert_eq!(skip_after(s.admit_in_panic(t + secs(2), &p)), None);
    // A fast failure (503) is probed one at a time.
    let s = TargetState::default();
    fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
    assert!(matches!(s.admit(t0 + secs(1), &p), Admission::Probe));
    assert_eq!(skip_after(s.admit(t0 + secs(9), &p)), None);
}

#[tokio::test(start_paused = true)]
async fn failures_of_calls_sent_before_the_recovery_do_not_bench_again() {
    let s = TargetState::default();
    let p = policy();
    let t0 = Instant::now();
    fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
    let back = t0 + secs(1);
    assert!(matches!(s.admit(back, &p), Admission::Probe));
    tokio::time::advance(secs(1)).await;
    s.on_success(true, Instant::now());
    // A call sent at 0.5 s fails now: counted, not benched.
    let late = fail(
        &s,
        ErrorKind::Timeout,
        None,
        false,
        t0 + ms(500),
        back + ms(10),
    );
    assert_eq!(late.benched_for, None);
    assert!(matches!(s.admit(back + ms(10), &p), Admission::Open));
    let snap = s.snapshot("a", &Target::new("p", "m"), 0, back, SystemTime::now());
    assert_eq!(snap.failures, 2);
    // A call sent after the recovery does bench.
    let fresh = fail(
        &s,
        ErrorKind::Overloaded,
        None,
        false,
        back + ms(20),
        back + ms(30),
    );
    assert_eq!(fresh.benched_for, Some(secs(1)));
}

#[tokio::test(start_paused = true)]
async fn successes_of_calls_sent_before_the_failure_do_not_lift_the_bench() {
    let s = TargetState::default();
    let t0 = Instant::now();
    // Sixteen calls in flight; the first to come back failed, the others come back healthy.
    tokio::time::advance(ms(50)).await;
    fail(
        &s,
        ErrorKind::Overloaded,
        None,
        false,
        t0 + ms(49),
        t0 + ms(50),
    );
    for _ in 0..15 {
        s.on_success(false, t0);
    }
    assert!(!s.is_available(t0 + ms(60)), "still benched");
    // A call sent after the failure that succeeds does lift it.
    s.on_success(false, t0 + ms(51));
    assert!(s.is_available(t0 + ms(60)));
}

#[tokio::test(start_paused = true)]
async fn the_first_request_of_a_sparse_route_may_probe_in_the_last_quarter() {
    let s = TargetState::default();
    let p = policy();
    let t0 = Instant::now();
    // Failing for a minute: benched 5 s after this probe fails.
    fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
    let t = t0 + secs(60);
    assert!(matches!(s.admit(t, &p), Admission::Probe));
    fail(&s, ErrorKind::Overloaded, None, true, t, t);
    // The next request comes 4 s later (one every 4 s): it may probe (4 s ≥ ¾ of 5 s).
    assert!(s.is_available(t + secs(4)));
    assert!(matches!(s.admit(t + secs(4), &p), Admission::Probe));
    fail(
        &s,
        ErrorKind::Overloaded,
        None,
        true,
        t + secs(4),
        t + secs(4),
    );
    // Dense traffic: a request skipped early in the cooldown, then none early at the end.
    let t = t + secs(4);
    assert!(matches!(s.admit(t + ms(10), &p), Admission::Skip { .. }));
    assert!(matches!(s.admit(t + secs(4), &p), Admission::Skip { .. }));
    assert!(matches!(s.admit(t + secs(5), &p), Admission::Probe));
    // A server's delay is waited for in full, sparse traffic or not.
    let s = TargetState::default();
    fail(&s, ErrorKind::Overloaded, Some(secs(8)), false, t0, t0);
    assert!(matches!(s.admit(t0 + secs(7), &p), Admission::Skip { .. }));
}

#[tokio::test(start_paused = true)]
async fn panic_mode_probes_every_interval_one_at_a_time() {
    let s = TargetState::default();
    let p = policy();
    let t0 = Instant::now();
    // Failing for a minute: a 5 s cooldown.
    fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
    let t = t0 + secs(60);
    assert!(matches!(s.admit(t, &p), Admission::Probe));
    fail(&s, ErrorKind::Overloaded, None, true, t, t);
    assert_eq!(skip_after(s.admit(t, &p)), Some(secs(5)));
    // In panic, the next probe 500 ms after the last one.
    assert_eq!(skip_after(s.admit_in_panic(t + ms(100), &p)), Some(ms(400)));
    assert!(matches!(
        s.admit_in_panic(t + ms(500), &p),
        Admission::Probe
    ));
    assert_eq!(skip_after(s.admit_in_panic(t + ms(1500), &p)), None);
    // Rate limits keep the server's delay, panic or not.
    let s = TargetState::default();
    fail(&s, ErrorKind::RateLimited, Some(secs(3)), false, t0, t0);
    assert_eq!(
        skip_after(s.admit_in_panic(t0 + secs(1), &p)),
        Some(secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_below_benches_until_its_probe_within_the_cap() {
    let s = TargetState::default();
    let p = policy();
    let t0 = Instant::now();
    s.on_breaker_open(secs(40), &p, t0);
    // Capped by the adaptive cooldown (no outage recorded by the chain yet: 1 s).
    assert_eq!(skip_after(s.admit(t0, &p)), Some(secs(1)));
    assert!(matches!(s.admit(t0 + secs(1), &p), Admission::Probe));
    let snap = s.snapshot("a", &Target::new("p", "m"), 0, t0, SystemTime::now());
    assert_eq!(snap.requests, 0);
    // A breaker that is about to let a probe through: nothing to bench.
    let s = TargetState::default();
    s.on_breaker_open(Duration::ZERO, &p, t0);
    assert!(matches!(s.admit(t0, &p), Admission::Open));
}

#[tokio::test(start_paused = true)]
async fn snapshot_restore_round_trip_maps_times() {
    let s = TargetState::default();
    let p = policy();
    let now = Instant::now();
    let wall = SystemTime::now();
    for _ in 0..60 {
        fail(&s, ErrorKind::ServerError, Some(secs(60)), false, now, now);
    }
    let snap = s.snapshot("a", &Target::new("p", "m"), 0, now, wall);
    assert_eq!(snap.recent_errors.len(), RECENT_ERRORS);
    let until = snap.cooldown.as_ref().unwrap().until_unix_ms.unwrap();
    assert_eq!(until, unix_ms(wall) + 60_000);
    let json = serde_json::to_string(&snap).unwrap();
    let back: TargetHealth = serde_json::from_str(&json).unwrap();
    let restored = TargetState::default();
    let later = now + secs(5);
    restored.restore(&back, later, wall + secs(20));
    assert!(matches!(
        restored.admit(later, &p),
        Admission::Skip { retry_after: Some(d), .. } if d == secs(40)
    ));
    assert!(matches!(
        restored.admit(later + secs(40), &p),
        Admission::Probe
    ));
    assert_eq!(
        restored
            .snapshot("a", &back.target, 0, later, wall)
            .failures,
        60
    );
}

#[derive(Debug, Clone)]
enum Op {
    Admit(u64),
    Panic(u64),
    Success,
    Failure(usize, Option<u64>),
    Release,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..12_000).prop_map(Op::Admit),
        (0u64..12_000).prop_map(Op::Panic),
        Just(Op::Success),
        (0usize..12, proptest::option::of(0u64..100)).prop_map(|(k, r)| Op::Failure(k, r)),
        Just(Op::Release),
        Just(Op::Reset),
    ]
}

proptest! {
    // Probes overlap only for a target benched for a timeout, a skip always names a kind
    // that benched the target, an unbenched target is always admitted, and no bench of a
    // transient kind without a server delay outlasts the probe cap.
    #[test]
    fn probes_and_caps(ops in prop::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let s = TargetState::default();
            let p = policy();
            let mut now = Instant::now();
            let mut probes = 0u32;
            // A server delay or a non-transient bench may legitimately outlast the cap.
            let mut long_bench = false;
            for op in ops {
                match op {
                    Op::Admit(step) | Op::Panic(step) => {
                        now += Duration::from_millis(step);
                        let panic = matches!(op, Op::Panic(_));
                        let silent = s.lock().bench.is_some_and(|b| b.kind == ErrorKind::Timeout);
                        let admission = if panic { s.admit_in_panic(now, &p) } else { s.admit(now, &p) };
                        match admission {
                            Admission::Probe => {
                                probes += 1;
                                prop_assert!(probes == 1 || (silent && !panic), "{probes} probes");
                            }
                            Admission::Open => prop_assert!(s.snapshot("a", &Target::new("p", "m"), 0, now, SystemTime::now()).cooldown.is_none()),
                            Admission::Skip { retry_after, .. } => {
                                prop_assert!(s.benched.load(Ordering::Acquire));
                                if let Some(d) = retry_after {
                                    prop_assert!(d <= Duration::from_secs(3600));
                                }
                            }
                        }
                    }
                    Op::Success => {
                        s.on_success(probes > 0, now);
                        probes = probes.saturating_sub(1);
                    }
                    Op::Failure(k, r) => {
                        let kind = ErrorKind::ALL[k];
                        let failed = fail(&s, kind, r.map(Duration::from_secs), probes > 0, now, now);
                        probes = probes.saturating_sub(1);
                        long_bench |= r.is_some() || !is_transient(kind);
                        if !long_bench {
                            if let Some(d) = failed.benched_for {
                                prop_assert!(d <= p.probe_interval_cap(), "{kind}: {d:?}");
                            }
                        }
                    }
                    Op::Release => {
                        if probes > 0 {
                            s.release_probe();
                            probes -= 1;
                        }
                    }
                    Op::Reset => {
                        s.reset();
                        probes = 0;
                        long_bench = false;
                    }
                }
            }
            Ok(())
        })?;
    }
}
