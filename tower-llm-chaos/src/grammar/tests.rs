//! Unit tests of the text form.

use std::time::Duration;

use super::values::{decode, parse_duration, DisplayDuration, Encoded};
use super::*;

#[test]
fn durations_parse_and_print_exactly() {
    for (text, d) in [
        ("3s", Duration::from_secs(3)),
        ("250ms", Duration::from_millis(250)),
        ("1m30s", Duration::from_secs(90)),
        ("2h", Duration::from_secs(7200)),
        ("7ns", Duration::from_nanos(7)),
        ("1s500ms", Duration::from_millis(1500)),
    ] {
        assert_eq!(parse_duration(text).unwrap(), d, "{text}");
        assert_eq!(parse_duration(&DisplayDuration(d).to_string()).unwrap(), d);
    }
    assert_eq!(DisplayDuration(Duration::from_secs(90)).to_string(), "90s");
    assert_eq!(
        DisplayDuration(Duration::from_millis(1500)).to_string(),
        "1500ms"
    );
    assert_eq!(
        DisplayDuration(Duration::MAX).to_string(),
        "18446744073709551615999999999ns"
    );
    assert_eq!(
        parse_duration("18446744073709551615999999999ns").unwrap(),
        Duration::MAX
    );
    for bad in [
        "",
        "3",
        "s",
        "3x",
        "-3s",
        "3 s",
        "99999999999999999999999h",
        "1.5s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn percent_codec() {
    let text = Encoded("a:b;c=d%e f\u{e9}".as_bytes()).to_string();
    assert_eq!(text, "a%3Ab%3Bc%3Dd%25e%20f%C3%A9");
    assert_eq!(decode(&text).unwrap(), "a:b;c=d%e f\u{e9}".as_bytes());
    assert!(decode("%4").is_err());
    assert!(decode("%zz").is_err());
}

#[test]
fn errors_name_the_part() {
    let cases = [
        ("nope", "nope"),
        ("latency", "latency"),
        ("latency:3", "3"),
        ("latency:3s:4s", "4s"),
        ("hang:1", "1"),
        ("status:abc", "abc"),
        ("status:100", "100"),
        ("status:429:shape=azure", "azure"),
        ("status:429:speed=1", "speed"),
        ("status:429:retry-after", "retry-after"),
        (
            "status:429:retry-after=1:retry-after-ms=5",
            "retry-after-ms=5",
        ),
        ("status:429:header=bad name=1", "bad name"),
        ("status:429:retry-after-date=tomorrow", "tomorrow"),
        ("cut-after:-1", "-1"),
        ("flapping:10s", "flapping:10s"),
        ("fraction:0.3", "fraction:0.3"),
        ("fraction:1.5:hang", "1.5"),
        ("fraction:2:hang", "2"),
        ("fraction:0.3333:hang", "0.3333"),
        ("fraction:.3:hang", ".3"),
        ("fraction:0.:hang", "0."),
        ("fraction:-0.1:hang", "-0.1"),
        ("fraction:0.3:seed=x:hang", "x"),
        ("fraction:0.3:seed=1", "fraction:0.3:seed=1"),
        ("fraction:0.3:nope", "nope"),
    ];
    for (input, part) in cases {
        let err = parse_fault(input).unwrap_err();
        assert_eq!(err.part(), part, "{input}: {err}");
    }
    let err = parse_profile("hang; 20s-10s=healthy").unwrap_err();
    assert_eq!((err.clause(), err.part()), (Some(2), "20s-10s"));
    let err = parse_profile("model a=hang; model a=reset").unwrap_err();
    assert_eq!(err.reason(), "model routed twice");
    let err = parse_profile("hang; default=healthy").unwrap_err();
    assert_eq!(err.reason(), "default given twice");
}

#[test]
fn nesting_is_bounded() {
    let deep = "flapping:1s:".repeat(MAX_NESTING + 1) + "hang";
    assert!(parse_fault(&deep).unwrap_err().reason().contains("nested"));
    let ok = "flapping:1s:".repeat(MAX_NESTING) + "hang";
    assert!(parse_fault(&ok).is_ok());
    let deep = "fraction:0.5:flapping:1s:".repeat(MAX_NESTING / 2 + 1) + "hang";
    assert!(parse_fault(&deep).unwrap_err().reason().contains("nested"));
}

#[test]
fn fractions_parse_and_print() {
    for (text, per_mille, seed, printed) in [
        ("fraction:0.3:status:500", 300, 0, "fraction:0.3:status:500"),
        (
            "fraction:0.30:status:500",
            300,
            0,
            "fraction:0.3:status:500",
        ),
        (
            "fraction: 0.05 : seed = 7 : status:500",
            50,
            7,
            "fraction:0.05:seed=7:status:500",
        ),
        (
            "fraction:0.001:status:500",
            1,
            0,
            "fraction:0.001:status:500",
        ),
        ("fraction:1:status:500", 1000, 0, "fraction:1:status:500"),
        (
            "fraction:1.000:status:500",
            1000,
            0,
            "fraction:1:status:500",
        ),
        ("fraction:0:status:500", 0, 0, "fraction:0:status:500"),
        (
            "fraction:00.5:status:500",
            500,
            0,
            "fraction:0.5:status:500",
        ),
        (
            "fraction:0.5:seed=18446744073709551615:status:500",
            500,
            u64::MAX,
            "fraction:0.5:seed=18446744073709551615:status:500",
        ),
    ] {
        let fault = parse_fault(text).unwrap();
        assert_eq!(
            fault,
            Fault::fraction(per_mille, Fault::status(500)).with_seed(seed),
            "{text}"
        );
        assert_eq!(fault.to_string(), printed);
        assert_eq!(parse_fault(printed).unwrap(), fault);
    }
    let nested = parse_fault("fraction:0.3:status:429:retry-after=1:code=a%3Ab").unwrap();
    assert_eq!(
        nested,
        Fault::fraction(300, Fault::status(429).retry_after_secs(1).code("a:b"))
    );
    assert_eq!(parse_fault(&nested.to_string()).unwrap(), nested);
    let p = parse_profile("4s-10s=fraction:0.3:status:500; default=latency:50ms").unwrap();
    assert_eq!(
        p.to_string(),
        "4s-10s=fraction:0.3:status:500; default=latency:50ms"
    );
}

#[test]
fn windows_and_dates() {
    let p = parse_profile("-5s=hang; 5s-=reset").unwrap();
    assert_eq!(p.schedule()[0].from, Duration::ZERO);
    assert_eq!(p.schedule()[1].until, None);
    assert_eq!(p.to_string(), "0s-5s=hang; 5s-=reset; default=healthy");
    let f = parse_fault("status:503:retry-after-date=@-5").unwrap();
    assert_eq!(f.to_string(), "status:503:retry-after-date=@-5");
    let f = parse_fault("status:503:retry-after-date=+1m").unwrap();
    assert_eq!(
        f,
        Fault::status(503).retry_after_date_in(Duration::from_secs(60))
    );
}
