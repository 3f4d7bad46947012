//! What users live through: outage timelines through the whole stack.
//!
//! 16 closed-loop clients drive the facade's [`Stack`] (fallback chain → breaker → retry →
//! bulkhead → stream guard → client) against two chaos mock upstreams on loopback; the fault is
//! on the primary (or on both) from t = 4 s to t = 10 s of a 16 s run. Each scenario runs twice:
//! with the library's defaults (every section left out) and with the shipped `workspace.toml`,
//! both with `attempt_timeout_ms = 2000` per target, as the issue that set these targets
//! measured, and a seeded retry jitter (`[retry] seed`) so every run gives the same figures. The thresholds are the ones `RESILIENCE.md` reports; run
//! `cargo test --test scenarios -- --nocapture` to print the table.
//!
//! Time is tokio's paused clock: mocks, stack and clients share one current-thread runtime, so a
//! 16 s run takes a second or two and every figure is reproducible.

use std::time::Duration;

use serde::de::IgnoredAny;
use tower_llm::config::ConfigDocument;
use tower_llm::StackConfig;
use tower_llm_chaos::scenario::{Load, Outage, Scenario, ScenarioReport, Timeline};

mod two_providers;

use two_providers::mock;

/// Healthy answers take 50 ms (and keep a paused clock moving, see the scenario module docs).
const HEALTHY: &str = "default=latency:50ms";

#[derive(Clone, Copy, Debug)]
enum Variant {
    /// Providers, one route, every other section at the library's defaults.
    Defaults,
    /// The shipped `workspace.toml`, its mock providers pointed at the scenario's mocks.
    Shipped,
}

fn config(variant: Variant) -> StackConfig {
    let text = match variant {
        // Seeded jitter, so that a run is reproducible (the default is a random seed).
        Variant::Defaults => two_providers::config_text("[retry]\nseed = 7\n"),
        Variant::Shipped => {
            let shipped = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workspace.toml"),
            )
            .expect("workspace.toml");
            let targets = r#"targets = [
  { provider = "primary" },
  { provider = "secondary", model = "backup-model", attempt_timeout_ms = 5000 },
]"#;
            assert!(shipped.contains(targets), "the shipped route changed");
            assert!(shipped.contains("\n[retry]\n"));
            shipped
                .replace("\n[retry]\n", "\n[retry]\nseed = 7\n")
                .replace(
                    targets,
                    r#"targets = [
  { provider = "primary", attempt_timeout_ms = 2000 },
  { provider = "secondary", model = "backup-model", attempt_timeout_ms = 2000 },
]"#,
                )
        }
    };
    // The gateway's own keys (`[gateway]`, each provider's `mock`) are not the library's: the
    // scenario points the providers at its own mocks instead.
    let mut doc = ConfigDocument::parse(&text).expect("scenario configuration");
    doc.take_section::<IgnoredAny>("gateway")
        .expect("[gateway]");
    doc.take_provider_keys::<IgnoredAny>("mock")
        .expect("mock providers");
    doc.into_stack_config().expect("scenario configuration")
}

/// Run `scenario` with `fault` on the primary (and on the secondary when both are down).
async fn run(variant: Variant, scenario: Scenario, fault: &str) -> ScenarioReport {
    let t = scenario.timeline;
    let window = format!(
        "{}ms-{}ms = {fault}; {HEALTHY}",
        t.fault_from.as_millis(),
        t.fault_until.as_millis()
    );
    let primary = mock(&window).await;
    let secondary = match scenario.outage {
        Outage::Both => mock(&window).await,
        _ => mock(HEALTHY).await,
    };
    let stack = two_providers::stack(&config(variant), &primary, &secondary);
    let name = format!("{} ({variant:?})", scenario.name);
    let mut report = scenario.run(stack, &primary, &secondary).await;
    report.name = name;
    println!("{}", report.markdown_row());
    primary.shutdown().await;
    secondary.shutdown().await;
    report
}

fn six_second(name: &str) -> Scenario {
    Scenario::new(name).load(Load::closed(16))
}

fn secs(report: &Option<Duration>) -> f64 {
    report.map_or(f64::INFINITY, |d| d.as_secs_f64())
}

/// The requirements every primary-only outage shares.
fn primary_outage(r: &ScenarioReport, p99: f64, back: f64) {
    assert_eq!(r.unfinished, 0, "{r}");
    assert_eq!(r.success_rate_when_up, 1.0, "every request answered: {r}");
    assert!(
        secs(&r.p99_during_fault) <= p99,
        "p99 during the fault: {r}"
    );
    let allowed = r.in_flight_at_fault_start + 6;
    assert!(
        r.primary_calls_during_fault <= allowed,
        "primary calls during the fault {} > {allowed}: {r}",
        r.primary_calls_during_fault
    );
    assert!(secs(&r.recovery) <= back, "back on the primary: {r}");
}

macro_rules! both_variants {
    ($($name:ident => $body:expr;)*) => {
        mod defaults {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    let check: fn(Variant) -> _ = $body;
                    check(Variant::Defaults).await;
                }
            )*
        }
        mod shipped {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    let check: fn(Variant) -> _ = $body;
                    check(Variant::Shipped).await;
                }
            )*
        }
    };
}

both_variants! {
    primary_503_for_six_seconds => |v| Box::pin(async move {
        let r = run(v, six_second("primary 503"), "status:503").await;
        primary_outage(&r, 0.25, 2.0);
    });
    primary_429_retry_after_3 => |v| Box::pin(async move {
        let r = run(v, six_second("primary 429 retry-after: 3"), "status:429:retry-after=3").await;
        primary_outage(&r, 0.25, 3.5);
    });
    primary_hangs => |v| Box::pin(async move {
        let r = run(v, six_second("primary hangs"), "hang").await;
        primary_outage(&r, 2.5, 2.0);
    });
    primary_resets_before_headers => |v| Box::pin(async move {
        let r = run(v, six_second("primary resets before headers"), "reset").await;
        primary_outage(&r, 0.25, 2.0);
    });
    primary_fails_30_percent_with_500 => |v| Box::pin(async move {
        let r = run(v, six_second("primary 30 % 500s"), "fraction:0.3:seed=7:status:500").await;
        assert_eq!(r.unfinished, 0, "{r}");
        assert_eq!(r.success_rate_when_up, 1.0, "{r}");
        assert!(secs(&r.p99_during_fault) <= 0.25, "{r}");
        assert!(secs(&r.recovery) <= 2.0, "{r}");
    });
    primary_401_always => |v| Box::pin(async move {
        // 401 from 4 s to the end of the run: auth failures bench until reset.
        let scenario = six_second("primary 401")
            .timeline(Timeline::new(Duration::from_secs(16), Duration::from_secs(4), Duration::from_secs(16)));
        let r = run(v, scenario, "status:401").await;
        assert_eq!(r.success_rate_when_up, 1.0, "{r}");
        // No primary call after the first 401s came back: only the requests in flight then.
        assert!(r.primary_calls_during_fault <= r.in_flight_at_fault_start, "{r}");
        assert!(r.primary_calls_during_fault >= 1, "{r}");
    });
    both_providers_503_for_six_seconds => |v| Box::pin(async move {
        let scenario = six_second("both providers 503").outage(Outage::Both);
        let r = run(v, scenario, "status:503").await;
        assert!(r.upstream_calls_per_request <= 1.05, "calls per request: {r}");
        assert!(secs(&r.resumed) <= 1.0, "answers again after the recovery: {r}");
        assert_eq!(r.unfinished, 0, "{r}");
    });
    primary_503_for_sixty_seconds_streamed => |v| Box::pin(async move {
        let scenario = Scenario::new("primary 503 for 60 s, streamed, 1 request / 4 s")
            .load(Load::paced(Duration::from_secs(4)).stream(true))
            .timeline(Timeline::new(Duration::from_secs(80), Duration::from_secs(4), Duration::from_secs(64)));
        let r = run(v, scenario, "status:503").await;
        assert_eq!(r.success_rate_when_up, 1.0, "{r}");
        assert!(secs(&r.recovery) <= 5.0, "back on the primary: {r}");
        // One probe per 5 s at most over the minute, and one call each (no retries on a probe).
        assert!(r.primary_calls_during_fault <= 1 + 60 / 4, "{r}");
    });
}

#[test]
fn print_the_table_header() {
    // `cargo test --test scenarios -- --nocapture --test-threads 1` prints a table for
    // RESILIENCE.md: this header, then one row per scenario.
    println!("{}", ScenarioReport::markdown_header());
}
