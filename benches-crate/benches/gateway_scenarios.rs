//! Outage scenarios through the real gateway binary, over loopback, in real time.
//!
//! ```text
//! cargo build --release -p tower-llm-gateway
//! cargo bench -p tower-llm-benches --bench gateway_scenarios -- [--only SUBSTRING]
//!     [--variants defaults,shipped] [--gateway-bin PATH] [--jitter-ms N]
//! ```
//!
//! The same scenarios as `tests/scenarios.rs` (which drives the facade's `Stack` in-process on a
//! paused clock), but what a user of the gateway lives through: for each scenario and variant,
//! this bench starts two chaos mock upstreams in-process (`tower_llm_chaos::MockUpstream`, on
//! this bench's multi-thread tokio runtime, real time), writes a gateway configuration pointing
//! at them to a temporary file, spawns the gateway binary on a free `127.0.0.1` port, waits for
//! `GET /health` to answer 200, and then drives `POST /v1/chat/completions` with the scenario
//! driver (`tower_llm_chaos::scenario`, 16 closed-loop clients over a hyper-util `Client`, or one
//! streamed request every 4 s for the long outage). A fresh gateway per run, so no scenario sees
//! another's cooldowns or breakers.
//!
//! **Clocks.** A mock's fault windows count from the mock's start, the report's timeline from
//! the driver's start. The mocks start healthy (`default=latency:50ms`); once the gateway is
//! ready, right before the driver starts, each mock's profile is replaced with the scenario's,
//! its windows shifted by the mock's `elapsed()` at that moment, so the fault is on from 4 s to
//! 10 s of the driver's clock. The attempt logs are converted to the driver's clock from the
//! offset measured after the run (`UpstreamCalls::from_mock`); the difference between the two
//! offsets (the time between setting the profile and the driver's first instant) is printed on
//! stderr for each run and is a few microseconds.
//!
//! Two variants, as in `tests/scenarios.rs`: `defaults` (two providers, one route `*` over
//! them, `attempt_timeout_ms = 2000` per target, every other section at its default) and
//! `shipped` (the repository's `workspace.toml`, its two `mock = …` providers pointed at the
//! scenario's mocks, `attempt_timeout_ms = 2000` per target, demo traffic off). Both seed the
//! retry jitter (`[retry] seed = 7`) like the tests; the figures still vary from run to run,
//! since real time is not reproducible.
//!
//! **Bunching.** The mocks answer healthy requests in exactly 50 ms. On a paused clock the 16
//! clients keep the stagger they start with; in real time, clients whose answers come back in
//! the same millisecond (one timer tick, or a moment a busy machine did not run the process) go
//! on together, so over a run they bunch up (stderr shows how much, just before the fault), and
//! a bunch that reaches the primary as the fault starts, or just after a probe lifted its bench,
//! adds primary calls a spread-out load would not make. `--jitter-ms N` waits a random 0..N ms
//! before each request (seeded; counted in the latencies) to keep the clients spread; the
//! default is none, as in the paused-clock suite.
//!
//! Everything runs on loopback only; every gateway process is stopped (SIGTERM, SIGKILL after
//! 10 s) when its run ends, also on an error or a panic, and on SIGINT/SIGTERM to this bench. A whole run takes about 7 minutes: 7 scenarios of
//! 16 s and one of 80 s, per variant.

#![allow(missing_docs)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{spawn_gateway, stop_on_signal, wait_ready, HttpClient};
use tower_llm_chaos::scenario::{Load, Outage, Scenario, ScenarioReport, Timeline, UpstreamCalls};
use tower_llm_chaos::{FaultProfile, MockHandle, MockUpstream};

/// Healthy answers take 50 ms, as in `tests/scenarios.rs`.
const HEALTHY: &str = "default=latency:50ms";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// Providers, one route, every other section at the library's defaults.
    Defaults,
    /// The shipped `workspace.toml`, its mock providers pointed at the scenario's mocks.
    Shipped,
}

impl Variant {
    fn parse(name: &str) -> Result<Variant, String> {
        match name.trim() {
            "defaults" => Ok(Variant::Defaults),
            "shipped" => Ok(Variant::Shipped),
            other => Err(format!("unknown variant `{other}` (defaults, shipped)")),
        }
    }
}

struct Args {
    only: Option<String>,
    variants: Vec<Variant>,
    gateway_bin: PathBuf,
    /// Wait a random 0..jitter before each request (0: none).
    jitter: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        only: None,
        variants: vec![Variant::Defaults, Variant::Shipped],
        gateway_bin: support::default_gateway_bin(),
        jitter: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--only" => args.only = Some(value("--only")?),
            "--variants" => {
                args.variants = value("--variants")?
                    .split(',')
                    .filter(|v| !v.trim().is_empty())
                    .map(Variant::parse)
                    .collect::<Result<_, _>>()?
            }
            "--gateway-bin" => args.gateway_bin = value("--gateway-bin")?.into(),
            "--jitter-ms" => {
                let ms: u64 = value("--jitter-ms")?
                    .parse()
                    .map_err(|_| "bad --jitter-ms")?;
                if ms > 1000 {
                    return Err("--jitter-ms must be 0..=1000".into());
                }
                args.jitter = Duration::from_millis(ms);
            }
            // Added by `cargo bench`.
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.variants.is_empty() {
        return Err("--variants names no variant".into());
    }
    Ok(args)
}

/// The command that reproduces this run, for the table's caption.
fn command_line() -> String {
    let mut line = "cargo bench -p tower-llm-benches --bench gateway_scenarios".to_owned();
    let extra: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .map(|a| {
            if a.contains([' ', ',', '%']) || a.is_empty() {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect();
    if !extra.is_empty() {
        line.push_str(" -- ");
        line.push_str(&extra.join(" "));
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Scenarios: the list of tests/scenarios.rs.

struct Case {
    scenario: Scenario,
    /// The fault on the primary (and on the secondary for `Outage::Both`) during the timeline's
    /// fault window.
    fault: &'static str,
}

fn six_second(name: &str) -> Scenario {
    Scenario::new(name).load(Load::closed(16))
}

fn cases() -> Vec<Case> {
    let secs = Duration::from_secs;
    vec![
        Case {
            scenario: six_second("primary 503"),
            fault: "status:503",
        },
        Case {
            scenario: six_second("primary 429 retry-after: 3"),
            fault: "status:429:retry-after=3",
        },
        Case {
            scenario: six_second("primary hangs"),
            fault: "hang",
        },
        Case {
            scenario: six_second("primary resets before headers"),
            fault: "reset",
        },
        Case {
            scenario: six_second("primary 30 % 500s"),
            fault: "fraction:0.3:seed=7:status:500",
        },
        Case {
            // 401 from 4 s to the end of the run: auth failures bench until reset.
            scenario: six_second("primary 401").timeline(Timeline::new(
                secs(16),
                secs(4),
                secs(16),
            )),
            fault: "status:401",
        },
        Case {
            scenario: six_second("both providers 503").outage(Outage::Both),
            fault: "status:503",
        },
        Case {
            scenario: Scenario::new("primary 503 for 60 s, streamed, 1 request / 4 s")
                .load(Load::paced(secs(4)).stream(true))
                .timeline(Timeline::new(secs(80), secs(4), secs(64))),
            fault: "status:503",
        },
    ]
}

/// The scenario's profile for a mock: `fault` in the timeline's window, healthy otherwise, the
/// window shifted by `lead` (how long the mock has been running when the driver starts).
fn profile(timeline: Timeline, fault: &str, lead: Duration) -> FaultProfile {
    let text = format!(
        "{}ms-{}ms = {fault}; {HEALTHY}",
        timeline.fault_from.as_millis(),
        timeline.fault_until.as_millis()
    );
    let parsed = FaultProfile::parse(&text).expect("scenario fault profile");
    let mut shifted = FaultProfile::new(parsed.default_fault().clone());
    for (model, fault) in parsed.routes() {
        shifted = shifted.route(model.clone(), fault.clone());
    }
    for window in parsed.schedule() {
        shifted = shifted.window(
            window.from + lead,
            window.until.map(|until| until + lead),
            window.fault.clone(),
        );
    }
    shifted
}

// ---------------------------------------------------------------------------------------------
// Gateway configurations.

fn gateway_config(variant: Variant, primary: &str, secondary: &str) -> String {
    match variant {
        Variant::Defaults => format!(
            r#"# Written by benches/gateway_scenarios.rs (variant: defaults).
[gateway]
demo_requests_per_sec = 0
# Loopback only, no client keys: the mocks count as real providers (a `base_url`).
allow_unauthenticated = true

[[providers]]
name = "primary"
base_url = "{primary}"

[[providers]]
name = "secondary"
base_url = "{secondary}"

[[routes]]
match = "*"
targets = [
  {{ provider = "primary", attempt_timeout_ms = 2000 }},
  {{ provider = "secondary", attempt_timeout_ms = 2000 }},
]

# Seeded jitter, as in tests/scenarios.rs (the default is a random seed).
[retry]
seed = 7
"#
        ),
        Variant::Shipped => shipped_config(primary, secondary),
    }
}

/// Replace `from` by `to` in `text`, asserting `from` is there exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "workspace.toml changed: expected `{from}` exactly once"
    );
    text.replacen(from, to, 1)
}

/// The shipped `workspace.toml`, pointed at the mocks, 2 s per target, no demo traffic, seeded
/// jitter.
fn shipped_config(primary: &str, secondary: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workspace.toml");
    let shipped = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // Each provider's `mock = "…"` line becomes `base_url = "<mock URL>"`.
    let mut text = String::with_capacity(shipped.len());
    let mut provider = None;
    let mut replaced = Vec::new();
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("[[providers]]") {
            provider = Some(String::new());
        } else if trimmed.starts_with('[') {
            provider = None;
        }
        if let (Some(name), Some(rest)) = (provider.as_mut(), trimmed.strip_prefix("name = ")) {
            *name = rest.trim().trim_matches('"').to_owned();
        }
        if let (Some(name), true) = (provider.as_ref(), trimmed.starts_with("mock = ")) {
            let url = match name.as_str() {
                "primary" => primary,
                "secondary" => secondary,
                other => panic!("workspace.toml: unexpected mock provider `{other}`"),
            };
            text.push_str(&format!("base_url = \"{url}\"\n"));
            replaced.push(name.clone());
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    assert_eq!(
        replaced,
        ["primary", "secondary"],
        "workspace.toml changed: expected a `mock = …` line for primary, then secondary"
    );
    let text = replace_once(
        &text,
        r#"targets = [
  { provider = "primary" },
  { provider = "secondary", model = "backup-model", attempt_timeout_ms = 5000 },
]"#,
        r#"targets = [
  { provider = "primary", attempt_timeout_ms = 2000 },
  { provider = "secondary", model = "backup-model", attempt_timeout_ms = 2000 },
]"#,
    );
    let text = replace_once(
        &text,
        "\ndemo_requests_per_sec = 2\n",
        // Loopback only: the mocks now count as real providers (a `base_url`).
        "\ndemo_requests_per_sec = 0\nallow_unauthenticated = true\n",
    );
    let text = replace_once(&text, "\n[retry]\n", "\n[retry]\nseed = 7\n");
    assert!(!text.contains("\nmock = "), "a mock provider is left");
    text
}

// ---------------------------------------------------------------------------------------------
// One run.

async fn mock() -> MockUpstream {
    MockUpstream::builder()
        .profile(FaultProfile::parse(HEALTHY).expect("profile"))
        .max_logged_attempts(1_000_000)
        .start()
        .await
        .expect("mock upstream")
}

/// The offset between `mock`'s clock and the run's, measured now (as `UpstreamCalls::from_mock`
/// does).
fn lead_of(mock: &MockHandle, run_started: tokio::time::Instant) -> Option<Duration> {
    let mock_started = tokio::time::Instant::now().checked_sub(mock.elapsed())?;
    run_started.checked_duration_since(mock_started)
}

/// The client, waiting a random `0..max` before each request when `max` is not zero (seeded,
/// so a run's delays are always the same). Real upstreams answer in varying times; the mocks
/// answer healthy requests in exactly 50 ms, and in real time closed-loop clients whose timers
/// fire in the same millisecond stay together, so they bunch up over a run. A small jitter keeps
/// them spread, as the paused-clock suite's clients are; it is part of the measured latency.
fn jittered(
    client: HttpClient,
    max: Duration,
) -> impl tower::Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let client = client.clone();
        // splitmix64 of a shared counter: uniform enough, and the same sequence every run.
        let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut z = n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let delay = Duration::from_nanos(if nanos == 0 { 0 } else { z % nanos });
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            client.request(req).await
        }
    })
}

/// The primary's calls during the fault, on the driver's clock: `4.001 503, 4.003 503, …` (the
/// first 40; `-` for no response head).
fn primary_calls_in_fault(
    mock: &MockHandle,
    run: &tower_llm_chaos::scenario::Run,
    t: Timeline,
) -> String {
    let Some(lead) = lead_of(mock, run.started) else {
        return "?".to_owned();
    };
    let calls: Vec<String> = mock
        .attempts()
        .iter()
        .filter_map(|a| Some((a.at.checked_sub(lead)?, a.status)))
        .filter(|(at, _)| t.in_fault(*at))
        .map(|(at, status)| {
            let status = status.map_or("-".to_owned(), |s| s.to_string());
            format!("{:.3} {status}", at.as_secs_f64())
        })
        .collect();
    let shown = calls.len().min(40);
    let more = if calls.len() > shown { ", …" } else { "" };
    format!("{}{more}", calls[..shown].join(", "))
}

/// How bunched the clients' requests were just before the fault: over the 500 ms before it,
/// how many requests started, in how many distinct milliseconds, and the most in one.
fn clumping(run: &tower_llm_chaos::scenario::Run, t: Timeline) -> String {
    let from = t.fault_from.saturating_sub(Duration::from_millis(500));
    let mut per_ms = std::collections::BTreeMap::<u128, usize>::new();
    for sample in run
        .samples
        .iter()
        .filter(|s| s.start >= from && s.start < t.fault_from)
    {
        *per_ms.entry(sample.start.as_millis()).or_default() += 1;
    }
    format!(
        "in the 500 ms before the fault: {} requests started, in {} distinct ms, at most {} in one ms",
        per_ms.values().sum::<usize>(),
        per_ms.len(),
        per_ms.values().max().copied().unwrap_or(0)
    )
}

async fn run_case(
    args: &Args,
    variant: Variant,
    case: &Case,
    tag: &str,
) -> Result<ScenarioReport, String> {
    let primary = mock().await;
    let secondary = mock().await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let config = gateway_config(variant, &primary.base_url(), &secondary.base_url());
    let mut gateway = spawn_gateway(
        &args.gateway_bin,
        &config,
        &format!("scenarios-{tag}"),
        true,
    )?;
    // After the banner, the gateway's stderr is its log of the run.
    let (ready, banner) = wait_ready(&mut gateway, &client).await?;
    // Nothing reached the mocks yet (health checks stay in the gateway); start the logs empty.
    let early = primary.attempt_count() + secondary.attempt_count();
    primary.clear_attempts();
    secondary.clear_attempts();

    let uri: http::Uri = format!("http://{}/v1/chat/completions", gateway.addr)
        .parse()
        .map_err(|e| format!("bad gateway URI: {e}"))?;
    let scenario = {
        let mut scenario = case.scenario.clone();
        scenario.load = scenario.load.clone().uri(uri);
        scenario.name = format!("{} ({variant:?})", case.scenario.name);
        scenario
    };
    let t = scenario.timeline;

    // Shift the fault windows so they count from the driver's start, then start the driver.
    let primary_lead = primary.elapsed();
    primary.set_profile(profile(t, case.fault, primary_lead));
    let secondary_lead = secondary.elapsed();
    if scenario.outage == Outage::Both {
        secondary.set_profile(profile(t, case.fault, secondary_lead));
    }
    let run = scenario.drive(jittered(client.clone(), args.jitter)).await;

    // The exact offsets, measured after the run from the driver's start.
    let skew = |mock: &MockUpstream, used: Duration| {
        lead_of(&mock.handle(), run.started).map(|exact| {
            exact.as_secs_f64() * 1e6 - used.as_secs_f64() * 1e6 // µs, > 0: the fault came early
        })
    };
    let (primary_skew, secondary_skew) = (
        skew(&primary, primary_lead),
        skew(&secondary, secondary_lead),
    );
    let primary_calls = UpstreamCalls::from_mock(&primary.handle(), &run);
    let secondary_calls = UpstreamCalls::from_mock(&secondary.handle(), &run);
    let report = scenario.report(&run, &primary_calls, &secondary_calls);
    let primary_log = primary_calls_in_fault(&primary.handle(), &run, t);
    let clumps = clumping(&run, t);

    let (log_lines, first_lines) = gateway.log_since(banner);
    eprintln!(
        "  gateway ready in {:.0} ms; mocks started {:.0} / {:.0} ms before the driver; fault window offset error {} / {} µs; {early} calls before the start; gateway log: {log_lines} lines",
        ready.as_secs_f64() * 1e3,
        primary_lead.as_secs_f64() * 1e3,
        secondary_lead.as_secs_f64() * 1e3,
        primary_skew.map_or("?".to_owned(), |s| format!("{s:.0}")),
        secondary_skew.map_or("?".to_owned(), |s| format!("{s:.0}")),
    );
    for line in first_lines {
        eprintln!("    gateway: {line}");
    }
    eprintln!("  {clumps}");
    eprintln!("  primary calls in the fault (s since the start, status): {primary_log}");
    eprintln!("  {report}");
    drop(gateway);
    primary.shutdown().await;
    secondary.shutdown().await;
    Ok(report)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("gateway_scenarios: {e}");
            std::process::exit(2);
        }
    };
    if !args.gateway_bin.exists() {
        eprintln!(
            "gateway_scenarios: no gateway binary at {} (build it: cargo build --release -p tower-llm-gateway, or pass --gateway-bin PATH)",
            args.gateway_bin.display()
        );
        std::process::exit(2);
    }
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| {
            args.only
                .as_deref()
                .is_none_or(|only| c.scenario.name.contains(only))
        })
        .collect();
    if cases.is_empty() {
        eprintln!(
            "gateway_scenarios: no scenario name contains {:?}",
            args.only
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.spawn(stop_on_signal("gateway_scenarios"));
    let started = Instant::now();
    let mut reports = Vec::new();
    for &variant in &args.variants {
        for (i, case) in cases.iter().enumerate() {
            eprintln!(
                "{} ({variant:?}): {} s run, fault `{}`",
                case.scenario.name,
                case.scenario.timeline.run.as_secs(),
                case.fault
            );
            let tag = format!("{variant:?}-{i}").to_lowercase();
            match rt.block_on(run_case(&args, variant, case, &tag)) {
                Ok(report) => reports.push(report),
                Err(e) => {
                    eprintln!("gateway_scenarios: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    drop(rt);

    println!(
        "\nOutage scenarios through the gateway binary ({}), real time, loopback, client jitter {} ms; {:.0} s in all.\n",
        args.gateway_bin.display(),
        args.jitter.as_millis(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", ScenarioReport::markdown_header());
    for report in &reports {
        println!("{}", report.markdown_row());
    }
    println!("\n{}", command_line());
}
