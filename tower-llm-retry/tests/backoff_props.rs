//! Property tests: every backoff delay stays within `[0, max_delay]`, deterministic strategies
//! never shrink, and no configuration or retry number panics.

use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tower_llm_retry::backoff::{Backoff, BackoffKind, Jitter};

fn kind() -> impl Strategy<Value = BackoffKind> {
    prop_oneof![
        Just(BackoffKind::Constant),
        Just(BackoffKind::Linear),
        Just(BackoffKind::Exponential),
        Just(BackoffKind::Fibonacci),
        Just(BackoffKind::DecorrelatedJitter),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)]
}

fn build(kind: BackoffKind, base: Duration) -> Backoff {
    match kind {
        BackoffKind::Constant => Backoff::constant(base),
        BackoffKind::Linear => Backoff::linear(base),
        BackoffKind::Exponential => Backoff::exponential(base),
        BackoffKind::Fibonacci => Backoff::fibonacci(base),
        BackoffKind::DecorrelatedJitter => Backoff::decorrelated_jitter(base),
    }
}

/// Any duration, from zero to `Duration::MAX`, biased towards realistic values.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..120_000).prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::ZERO),
        Just(Duration::MAX),
    ]
}

/// Any multiplier, including the ones validation rejects.
fn multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        1.0f64..10.0,
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-2.0),
    ]
}

fn retry() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..64, Just(10_000u32), any::<u32>(), Just(u32::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_delay_is_within_zero_and_max(
        kind in kind(),
        base in duration(),
        multiplier in multiplier(),
        max in duration(),
        jitter in jitter(),
        retry in retry(),
        previous in proptest::option::of(duration()),
        seed in any::<u64>(),
    ) {
        let backoff = build(kind, base).with_multiplier(multiplier).with_max_delay(max).with_jitter(jitter);
        let mut rng = SmallRng::seed_from_u64(seed);
        let delay = backoff.delay(retry, previous, &mut rng);
        prop_assert!(delay <= max, "{delay:?} > {max:?} for {backoff:?} at {retry}");
    }

    #[test]
    fn delays_of_valid_configs_never_shrink_without_jitter(
        kind in prop_oneof![
            Just(BackoffKind::Constant),
            Just(BackoffKind::Linear),
            Just(BackoffKind::Exponential),
            Just(BackoffKind::Fibonacci),
        ],
        base_ms in 0u64..10_000,
        multiplier in 1.0f64..8.0,
        max_s in 10u64..600,
        from in prop_oneof![0u32..100, 9_900u32..10_100, (u32::MAX - 100)..u32::MAX],
    ) {
        let backoff = build(kind, Duration::from_millis(base_ms))
            .with_multiplier(multiplier)
            .with_max_delay(Duration::from_secs(max_s));
        prop_assert!(backoff.validate().is_ok());
        let mut rng = SmallRng::seed_from_u64(0);
        let mut previous = backoff.delay(from, None, &mut rng);
        for retry in from.saturating_add(1)..from.saturating_add(40) {
            let delay = backoff.delay(retry, None, &mut rng);
            prop_assert!(delay >= previous, "{backoff:?}: retry {retry} gave {delay:?} after {previous:?}");
            prop_assert!(delay <= Duration::from_secs(max_s));
            previous = delay;
        }
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_max(
        base_ms in 0u64..5_000,
        extra_ms in 0u64..60_000,
        multiplier in 1.0f64..10.0,
        seed in any::<u64>(),
    ) {
        let base = Duration::from_millis(base_ms);
        let max = base + Duration::from_millis(extra_ms);
        let backoff = Backoff::decorrelated_jitter(base).with_multiplier(multiplier).with_max_delay(max);
        prop_assert!(backoff.validate().is_ok());
        let mut previous = None;
        for delay in backoff.delays(seed).take(50) {
            prop_assert!(delay >= base && delay <= max, "{delay:?} outside [{base:?}, {max:?}]");
            // Each delay is at most `multiplier` times the previous one (or the base).
            let bound = previous.unwrap_or(base).mul_f64(multiplier).min(max);
            prop_assert!(delay <= bound + Duration::from_nanos(1), "{delay:?} above {bound:?}");
            previous = Some(delay);
        }
    }

    #[test]
    fn equal_jitter_keeps_at_least_half(
        kind in prop_oneof![Just(BackoffKind::Constant), Just(BackoffKind::Linear), Just(BackoffKind::Exponential), Just(BackoffKind::Fibonacci)],
        base_ms in 0u64..2_000,
        retry in 1u32..50,
        seed in any::<u64>(),
    ) {
        let plain = build(kind, Duration::from_millis(base_ms));
        let jittered = plain.with_jitter(Jitter::Equal);
        let mut rng = SmallRng::seed_from_u64(seed);
        let full = plain.delay(retry, None, &mut rng);
        let delay = jittered.delay(retry, None, &mut rng);
        prop_assert!(delay >= full / 2 && delay <= full, "{delay:?} outside [{:?}, {full:?}]", full / 2);
    }
}
