//! Unit tests of faults and error replies.

use std::time::UNIX_EPOCH;

use serde_json::Value;

use super::*;

#[test]
fn builders_refine_only_error_replies() {
    assert_eq!(Fault::Hang.retry_after_secs(3), Fault::Hang);
    let converted = Fault::ContextLengthExceeded.shape(ErrorShape::Anthropic);
    assert_eq!(
        converted,
        Fault::Status(ErrorReply::context_length_exceeded().shape(ErrorShape::Anthropic))
    );
    let flapping = Fault::flapping(Duration::from_secs(1), Fault::status(503)).retry_after_secs(1);
    assert_eq!(
        flapping,
        Fault::flapping(
            Duration::from_secs(1),
            Fault::status(503).retry_after_secs(1)
        )
    );
}

#[test]
fn invalid_headers_make_the_fault_invalid() {
    let fault = Fault::status(429).header("bad header", "x");
    assert!(fault
        .validate()
        .unwrap_err()
        .reason()
        .contains("header name"));
    let fault = Fault::status(429).header("x-ok", "bad\nvalue");
    assert!(fault
        .validate()
        .unwrap_err()
        .reason()
        .contains("header value"));
    assert!(Fault::status(1000).validate().is_err());
    assert!(Fault::flapping(Duration::ZERO, Fault::status(99))
        .validate()
        .is_err());
}

#[test]
fn flapping_resolves_by_time() {
    let f = Fault::flapping(Duration::from_secs(10), Fault::Hang);
    assert_eq!(f.resolve(Duration::from_secs(9), 1), &Fault::Hang);
    assert_eq!(f.resolve(Duration::from_secs(10), 1), &Fault::Healthy);
}

fn hits(fault: &Fault, seqs: std::ops::RangeInclusive<u64>) -> usize {
    seqs.filter(|&seq| fault.resolve(Duration::ZERO, seq) != &Fault::Healthy)
        .count()
}

#[test]
fn fraction_hits_its_rate_over_10_000_requests() {
    for (per_mille, seed) in [(300, 0), (300, 1), (50, 9), (500, u64::MAX), (950, 3)] {
        let fault = Fault::fraction(per_mille, Fault::status(500)).with_seed(seed);
        let n = hits(&fault, 1..=10_000);
        let expected = usize::from(per_mille) * 10;
        // Binomial sd at 10 000 draws is at most 50; allow a little over 3 sd.
        assert!(n.abs_diff(expected) <= 170, "{per_mille}‰ seed {seed}: {n}");
    }
    assert_eq!(hits(&Fault::fraction(0, Fault::Hang), 1..=10_000), 0);
    assert_eq!(
        hits(&Fault::fraction(1000, Fault::Hang), 1..=10_000),
        10_000
    );
}

#[test]
fn fraction_is_reproducible_and_seeded() {
    let a = Fault::fraction(300, Fault::status(500)).with_seed(11);
    let b = Fault::fraction(300, Fault::status(500)).with_seed(11);
    let c = Fault::fraction(300, Fault::status(500)).with_seed(12);
    let pick = |f: &Fault| -> Vec<bool> {
        (1..=1_000)
            .map(|seq| f.resolve(Duration::ZERO, seq) != &Fault::Healthy)
            .collect()
    };
    assert_eq!(pick(&a), pick(&b));
    assert_ne!(pick(&a), pick(&c));
    // Hit requests get the inner fault itself.
    let hit = (1..).find(|&seq| fraction_hit(300, 11, seq)).unwrap_or(0);
    assert_eq!(a.resolve(Duration::ZERO, hit), &Fault::status(500));
}

#[test]
fn fraction_nests_with_flapping_and_validates() {
    let f = Fault::flapping(
        Duration::from_secs(5),
        Fault::fraction(1000, Fault::status(503)),
    );
    assert_eq!(f.resolve(Duration::from_secs(1), 4), &Fault::status(503));
    assert_eq!(f.resolve(Duration::from_secs(5), 4), &Fault::Healthy);
    let f = Fault::fraction(1000, Fault::flapping(Duration::from_secs(5), Fault::Hang));
    assert_eq!(f.resolve(Duration::from_secs(1), 4), &Fault::Hang);
    assert!(Fault::fraction(1001, Fault::Hang).validate().is_err());
    assert!(Fault::fraction(10, Fault::status(99)).validate().is_err());
    assert!(Fault::fraction(1000, Fault::Hang).validate().is_ok());
    assert_eq!(
        Fault::fraction(300, Fault::status(429)).retry_after_secs(1),
        Fault::fraction(300, Fault::status(429).retry_after_secs(1))
    );
    assert_eq!(
        Fault::flapping(Duration::ZERO, Fault::fraction(1, Fault::Hang)).with_seed(3),
        Fault::flapping(Duration::ZERO, Fault::fraction(1, Fault::Hang).with_seed(3))
    );
    assert_eq!(Fault::Hang.with_seed(3), Fault::Hang);
}

#[test]
fn gemini_delay_in_body() {
    let reply = ErrorReply::new(429)
        .shape(ErrorShape::Gemini)
        .retry_after(RetryAfter::Millis(1500));
    let body: Value = serde_json::from_slice(&reply.body(SystemTime::now())).unwrap();
    assert_eq!(body["error"]["details"][0]["retryDelay"], "1.500s");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert!(reply
        .response_headers(SystemTime::now())
        .iter()
        .all(|(n, _)| n.as_str() != "retry-after-ms"));
}

#[test]
fn dates_are_whole_seconds_and_clamped() {
    let at = UNIX_EPOCH + Duration::from_millis(1_500);
    assert_eq!(
        RetryAfter::date(at),
        RetryAfter::Date(UNIX_EPOCH + Duration::from_secs(1))
    );
    let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
    let (_, value) = RetryAfter::Date(far).header_at(SystemTime::now());
    assert_eq!(value, "Fri, 31 Dec 9999 23:59:59 GMT");
}
