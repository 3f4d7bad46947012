//! Unit tests of the configuration and its validation.

use super::*;

#[test]
fn defaults_follow_design() {
    let c = CircuitBreakerConfig::builder().build().unwrap();
    assert_eq!(c.failure_rate_threshold(), Some(0.5));
    assert_eq!(c.sliding_window(), SlidingWindow::Count(20));
    assert_eq!(c.minimum_calls(), 10);
    assert_eq!(c.consecutive_failures(), Some(5));
    assert_eq!(c.open_duration(), Duration::from_secs(5));
    assert_eq!(c.max_open_duration(), Duration::from_secs(60));
    assert_eq!(c.permitted_calls_in_half_open(), 2);
    assert_eq!(c.slow_call_duration(), None);
    assert_eq!(c.max_wait_in_half_open(), None);
}

#[test]
fn open_duration_doubles_to_the_cap() {
    let c = CircuitBreakerConfig::default();
    let secs: Vec<u64> = (0..7).map(|n| c.open_duration_for(n).as_secs()).collect();
    assert_eq!(secs, [5, 10, 20, 40, 60, 60, 60]);
    assert_eq!(c.open_duration_for(u32::MAX), Duration::from_secs(60));
    // A long base duration raises the default cap instead of failing validation.
    let long = CircuitBreakerConfig::builder()
        .open_duration(Duration::from_secs(600))
        .build()
        .unwrap();
    assert_eq!(long.max_open_duration(), Duration::from_secs(600));
}

#[test]
fn every_bad_value_is_a_config_error() {
    let b = CircuitBreakerConfig::builder;
    let cases: Vec<(CircuitBreakerConfigBuilder, &str)> = vec![
        (b().name(""), "name"),
        (b().failure_rate_threshold(-0.1), "failure_rate_threshold"),
        (
            b().failure_rate_threshold(f64::NAN),
            "failure_rate_threshold",
        ),
        (
            b().sliding_window(SlidingWindow::Count(0)),
            "sliding_window",
        ),
        (
            b().sliding_window(SlidingWindow::Count(MAX_COUNT_WINDOW + 1)),
            "sliding_window",
        ),
        (
            b().sliding_window(SlidingWindow::Time(Duration::ZERO)),
            "sliding_window",
        ),
        (
            b().sliding_window(SlidingWindow::Time(Duration::from_millis(1500))),
            "sliding_window",
        ),
        (b().minimum_calls(0), "minimum_calls"),
        (b().minimum_calls(21), "minimum_calls"),
        (b().consecutive_failures(0), "consecutive_failures"),
        (b().slow_calls(Duration::ZERO, 0.5), "slow_calls"),
        (b().slow_calls(Duration::from_secs(1), 2.0), "slow_calls"),
        (b().open_duration(Duration::ZERO), "open_duration"),
        (
            b().open_duration_multiplier(0.5),
            "open_duration_multiplier",
        ),
        (
            b().open_duration_multiplier(f64::INFINITY),
            "open_duration_multiplier",
        ),
        (
            b().max_open_duration(Duration::from_secs(1)),
            "max_open_duration",
        ),
        (b().jitter(1.5), "jitter"),
        (
            b().permitted_calls_in_half_open(0),
            "permitted_calls_in_half_open",
        ),
        (
            b().max_wait_in_half_open(Duration::ZERO),
            "max_wait_in_half_open",
        ),
    ];
    for (builder, field) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(!err.message().is_empty());
    }
    // A minimum above the time window's seconds is fine: it counts calls, not buckets.
    assert!(b()
        .sliding_window(SlidingWindow::Time(Duration::from_secs(5)))
        .minimum_calls(100)
        .build()
        .is_ok());
}
