//! Soak: the gateway binary under a steady mixed load for a long time while one of its two
//! providers cycles through outages, rate limits, resets, cut streams and stalls; memory, file
//! descriptors and client-visible errors sampled as it goes.
//!
//! ```text
//! cargo build --release -p tower-llm-gateway
//! cargo bench -p tower-llm-benches --bench soak -- [--secs 1800] [--rps 1000] [--sse-share 0.5]
//!     [--sample-secs 10] [--cycle-secs 60] [--random-models 0] [--resume prefill|replay|off]
//!     [--extra-toml TOML] [--gateway-bin PATH]
//! ```
//!
//! Two chaos mock upstreams run in this process (`tower_llm_chaos::MockUpstream`, on a runtime
//! of their own, healthy answers after 10 ms); the gateway binary runs as a child on a free
//! `127.0.0.1` port with its status line on (its stderr is drained; the last line is kept). The
//! route is `*` over `primary` (passing the model through) then `secondary` (`backup-model`).
//! The primary's fault profile repeats every `--cycle-secs` (the profile grammar has windows,
//! not repetition, so the windows are written out for the whole run, counted from the start of
//! the load): of each cycle, 0–13 % healthy, 13–27 % `status:503`, 27–33 % healthy, 33–47 %
//! `status:429:retry-after=1`, 47–53 % healthy, 53–63 % `reset`, 63–70 % healthy, 70–80 %
//! `cut-after:2`, 80–87 % healthy, 87–97 % `stall-after:2`, then healthy. The secondary is
//! always healthy. `--extra-toml` appends to the gateway's configuration (e.g.
//! `$'[bulkhead]\nmax_queued = 1024'`).
//!
//! Load: an open-loop pacer starts request `i` at `t0 + i / rps` (JSON and SSE chat requests
//! mixed by `--sse-share`, seeded), each on its own task over one pooled hyper-util client; with
//! `--random-models F` a share `F` of them asks for a model never seen before
//! (`soak-<16 hex digits>`), which the gateway's pass-through route turns into targets of their
//! own (the pass-through eviction path). Each answer is checked: a 200 JSON `chat.completion`,
//! or a 200 event stream ending with `[DONE]`, is a success; anything else is an error (5xx,
//! 4xx, a transport error, a stream ending with an error event, a body that is not what a 200
//! promises).
//!
//! Every `--sample-secs` it records the gateway's RSS (`VmRSS` of `/proc/<pid>/status`), its
//! open file descriptors (entries of `/proc/<pid>/fd`), the requests started and failed in the
//! interval, the most requests in flight at once, and the fullest the secondary's bulkhead got
//! (its `tower_llm_bulkhead_in_flight` / `_queued` gauges, read from `/metrics` every 100 ms),
//! how late the pacer ran (a late pacer sends what it owes in a burst) and the machine's steal
//! time (`/proc/stat`: a VM's CPUs waiting for the hypervisor).
//! Each unexpected error keeps its status and the start of its body (up to 40 examples), and
//! the gateway's first 2,000 `WARN`/`ERROR` log lines are printed at the end (the per-stream
//! "stream ended with an error event" warnings only counted). At the end: `GET /health` and the
//! gateway's last status line. Pass criteria, printed and checked (exit code 1 on a failure):
//!
//! - **memory**: after the warm-up (the first 2 minutes, or the first 20 % of a shorter run, and
//!   at least one fault cycle), RSS does not grow by 10 % or more: per fault cycle, its highest
//!   and its lowest sample; the median of the highs over the last third of the cycles is less
//!   than 10 % above the median of the highs over the first third, and the same for the lows.
//!   RSS rises in the fault phases (more requests in flight) and, with an allocator that returns
//!   freed memory, falls between them: a leak lifts the floor and the highs cycle after cycle,
//!   while one burst of requests in one stall phase is a single high sample that says nothing of
//!   growth (run D's only failure of the earlier rule, highest sample against the first cycle's
//!   high, was such a sample; the highest sample is still printed);
//! - **descriptors flat**: after the warm-up, max − min of the fd count ≤ 2 × the most requests
//!   in flight at once + 16. Each request in flight holds at most one client connection and one
//!   upstream connection in the gateway; idle pooled connections come and go with the load, and
//!   16 covers the fixed set (listener, epoll, timers, stdio, log pipe). A leak grows with the
//!   number of requests, not with the concurrency, and blows through this bound over a run;
//! - **no unexpected errors**: the 503, 429 and reset windows fail before the first byte, so
//!   failover to the healthy secondary must hide them. The route resumes cut streams on the
//!   secondary (`--resume`, default `prefill`, the gateway's default; the mocks do not declare
//!   prefill, so it replays), so the mid-stream faults (`cut-after`, `stall-after`) must be
//!   hidden too: every client-visible error is unexpected. With `--resume off` a stream already
//!   handed to the client cannot be finished elsewhere, so errors from requests whose lifetime
//!   overlaps a mid-stream fault window (widened by 1 s on each side plus the stream idle limit)
//!   are counted apart as injected. Streams finished on the secondary (their `: resumed on`
//!   comment) are counted;
//! - **nothing left hanging**: every request has ended 30 s after the load stopped;
//! - **sane at the end**: `/health` answers 200 with status `healthy` or `degraded`, and the last
//!   status line is a status line (`[   Ns] … req/s …`), printable, under 4 KiB.
//!
//! The table (time, RSS MiB, fds, req/s, errors) is printed as markdown for RESILIENCE.md. The
//! load is bounded by `--rps × --secs`, loopback only; the gateway is stopped (SIGTERM, SIGKILL
//! after 10 s) when the run ends, on a panic and on SIGINT/SIGTERM.

#![allow(missing_docs)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{spawn_gateway, stop_on_signal, wait_ready, HttpClient};
use tower_llm_chaos::{Fault, FaultProfile, MockUpstream};

/// Healthy answers of both mocks.
const HEALTHY: &str = "latency:10ms";

/// The stream idle limit of the soak's gateway: a stalled stream ends this long after its last
/// event.
const IDLE_MS: u64 = 3000;

struct Args {
    secs: u64,
    rps: u32,
    sse_share: f64,
    sample: Duration,
    cycle: Duration,
    random_models: f64,
    resume: String,
    /// TOML appended to the gateway's configuration (`--extra-toml`).
    extra_toml: String,
    gateway_bin: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        secs: 1800,
        rps: 1000,
        sse_share: 0.5,
        sample: Duration::from_secs(10),
        cycle: Duration::from_secs(60),
        random_models: 0.0,
        resume: "prefill".to_owned(),
        extra_toml: String::new(),
        gateway_bin: support::default_gateway_bin(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let secs = |v: String, name: &str| -> Result<u64, String> {
            v.parse().map_err(|_| format!("bad {name} `{v}`"))
        };
        let share = |v: String, name: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or(format!("{name} must be in 0..=1, not `{v}`"))
        };
        match arg.as_str() {
            "--secs" => args.secs = secs(value("--secs")?, "--secs")?,
            "--rps" => {
                args.rps = value("--rps")?
                    .parse()
                    .map_err(|_| "bad --rps".to_owned())?
            }
            "--sse-share" => args.sse_share = share(value("--sse-share")?, "--sse-share")?,
            "--sample-secs" => {
                args.sample = Duration::from_secs(secs(value("--sample-secs")?, "--sample-secs")?)
            }
            "--cycle-secs" => {
                args.cycle = Duration::from_secs(secs(value("--cycle-secs")?, "--cycle-secs")?)
            }
            "--random-models" => {
                args.random_models = share(value("--random-models")?, "--random-models")?
            }
            "--resume" => {
                args.resume = value("--resume")?;
                if !matches!(args.resume.as_str(), "prefill" | "replay" | "off") {
                    return Err("--resume must be prefill, replay or off".into());
                }
            }
            "--extra-toml" => args.extra_toml = value("--extra-toml")?,
            "--gateway-bin" => args.gateway_bin = value("--gateway-bin")?.into(),
            // Added by `cargo bench`.
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.secs < 20 || args.secs > 24 * 3600 {
        return Err("--secs must be 20..=86400".into());
    }
    if args.rps == 0 || args.rps > 20_000 {
        return Err("--rps must be 1..=20000".into());
    }
    if args.sample.is_zero() || args.sample.as_secs() > args.secs / 2 {
        return Err("--sample-secs must be 1..=secs/2".into());
    }
    if args.cycle.as_secs() < 10 {
        return Err("--cycle-secs must be at least 10".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// The fault cycle.

/// One phase of the cycle: from and until as fractions of the cycle, the fault, and whether it
/// strikes after the answer started (so it cannot be failed over).
struct Phase {
    from: f64,
    until: f64,
    fault: &'static str,
    mid_stream: bool,
}

const PHASES: &[Phase] = &[
    Phase {
        from: 0.13,
        until: 0.27,
        fault: "status:503",
        mid_stream: false,
    },
    Phase {
        from: 0.33,
        until: 0.47,
        fault: "status:429:retry-after=1",
        mid_stream: false,
    },
    Phase {
        from: 0.53,
        until: 0.63,
        fault: "reset",
        mid_stream: false,
    },
    Phase {
        from: 0.70,
        until: 0.80,
        fault: "cut-after:2",
        mid_stream: true,
    },
    Phase {
        from: 0.87,
        until: 0.97,
        fault: "stall-after:2",
        mid_stream: true,
    },
];

/// The fault windows of the whole run, on the load's clock: (from, until, phase).
fn windows(cycle: Duration, run: Duration) -> Vec<(Duration, Duration, &'static Phase)> {
    let mut out = Vec::new();
    let mut start = Duration::ZERO;
    while start < run {
        for phase in PHASES {
            out.push((
                start + cycle.mul_f64(phase.from),
                start + cycle.mul_f64(phase.until),
                phase,
            ));
        }
        start += cycle;
    }
    out
}

/// The primary's profile: the windows shifted by `lead` (how long the mock has run when the
/// load starts), healthy otherwise.
fn primary_profile(windows: &[(Duration, Duration, &Phase)], lead: Duration) -> FaultProfile {
    let mut profile = FaultProfile::new(Fault::parse(HEALTHY).expect("healthy fault"));
    for (from, until, phase) in windows {
        let fault = Fault::parse(phase.fault).expect("soak fault");
        profile = profile.window(*from + lead, Some(*until + lead), fault);
    }
    profile
}

/// Whether a request alive from `start` to `end` (load clock) overlaps a mid-stream window,
/// widened by 1 s each side and by the idle limit after it.
fn in_mid_stream_window(
    windows: &[(Duration, Duration, &Phase)],
    start: Duration,
    end: Duration,
) -> bool {
    let margin = Duration::from_secs(1);
    windows.iter().any(|(from, until, phase)| {
        phase.mid_stream
            && start < *until + margin + Duration::from_millis(IDLE_MS)
            && end + margin > *from
    })
}

// ---------------------------------------------------------------------------------------------
// The gateway.

fn gateway_config(primary: &str, secondary: &str, resume: &str) -> String {
    format!(
        r#"# Written by benches/soak.rs.
[gateway]
demo_requests_per_sec = 0
# Loopback only, no client keys: the mocks count as real providers (a `base_url`).
allow_unauthenticated = true

[request]
max_body_bytes = 1048576

[[providers]]
name = "primary"
base_url = "{primary}"

[[providers]]
name = "secondary"
base_url = "{secondary}"

[[routes]]
match = "*"
targets = [
  {{ provider = "primary", attempt_timeout_ms = 5000 }},
  {{ provider = "secondary", model = "backup-model", attempt_timeout_ms = 5000 }},
]
cache = false
static_answer = false
resume = "{resume}"

[stream]
ttft_ms = 5000
idle_ms = {IDLE_MS}
total_ms = 60000

# Seeded jitter: the same schedule of retries every run.
[retry]
seed = 7
"#
    )
}

/// `VmRSS` of `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine's steal time so far, in clock ticks of 10 ms (the `steal` column of the `cpu`
/// line of `/proc/stat`, Linux; 0 when unreadable): time a virtual machine's CPUs were ready to
/// run but the hypervisor ran something else.
fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.to_owned();
            line.split_whitespace().nth(8)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Open file descriptors of `pid` (Linux).
fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

// ---------------------------------------------------------------------------------------------
// The load.

const JSON_BODY: &str = r#"{"model":"MODEL","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}"#;
const SSE_BODY: &str = r#"{"model":"MODEL","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32,"stream":true}"#;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in `0..1` from `i` and a stream tag: the same every run.
fn unit(i: u64, tag: u64) -> f64 {
    (splitmix(i ^ tag.rotate_left(32)) >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// A whole stream, finished on the secondary after a cut (its `: resumed on` comment).
    Resumed,
    Status5xx,
    Status4xx,
    Transport,
    StreamError,
    Malformed,
}

/// At most this much of a failed answer is kept in its example.
const DETAIL_BYTES: usize = 400;

/// What a failed answer said: its status and the start of its body (a stream's error event),
/// printable, at most [`DETAIL_BYTES`].
fn detail(status: http::StatusCode, body: &[u8]) -> String {
    let from = body
        .windows(10)
        .position(|w| w == b"{\"error\":{")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&body[from..body.len().min(from + DETAIL_BYTES)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>();
    format!("{status}: {text}")
}

/// Send one request and read its whole answer: the outcome and, for a failure, what the
/// answer said.
async fn exchange(client: &HttpClient, url: &str, body: String, stream: bool) -> (Outcome, String) {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default();
    let res = match client.request(req).await {
        Ok(res) => res,
        Err(e) => return (Outcome::Transport, format!("request: {e:?}")),
    };
    let status = res.status();
    let body = match res.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return (Outcome::Transport, format!("{status}, body: {e:?}")),
    };
    let outcome = if status.is_server_error() {
        Outcome::Status5xx
    } else if !status.is_success() {
        Outcome::Status4xx
    } else if stream {
        if body.ends_with(b"data: [DONE]\n\n") {
            if body.windows(13).any(|w| w == b": resumed on ") {
                Outcome::Resumed
            } else {
                Outcome::Ok
            }
        } else if body.windows(10).any(|w| w == b"{\"error\":{") {
            Outcome::StreamError
        } else {
            Outcome::Malformed
        }
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v["object"] == "chat.completion" => Outcome::Ok,
            _ => Outcome::Malformed,
        }
    };
    match outcome {
        Outcome::Ok | Outcome::Resumed => (outcome, String::new()),
        _ => (outcome, detail(status, &body)),
    }
}

/// The lowest and highest RSS (KiB) of each fault cycle after the warm-up, in order.
fn rss_per_cycle(after: &[&Sample], warm_up: Duration, cycle: Duration) -> Vec<(u64, u64)> {
    let mut cycles: Vec<(u64, u64)> = Vec::new();
    let mut current = None;
    for s in after {
        let index = (s.at - warm_up).as_nanos() / cycle.as_nanos().max(1);
        if current != Some(index) {
            current = Some(index);
            cycles.push((s.rss_kib, s.rss_kib));
        } else if let Some(last) = cycles.last_mut() {
            last.0 = last.0.min(s.rss_kib);
            last.1 = last.1.max(s.rss_kib);
        }
    }
    cycles
}

/// The secondary's bulkhead gauges (in flight, queued) from the gateway's `/metrics`.
async fn secondary_bulkhead(client: &HttpClient, url: &str) -> Option<(u64, u64)> {
    let req = http::Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let res = client.request(req).await.ok()?;
    let body = res.into_body().collect().await.ok()?.to_bytes();
    let text = std::str::from_utf8(&body).ok()?;
    let gauge = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("secondary/"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0u64, |max, v| max.max(v as u64))
    };
    Some((
        gauge("tower_llm_bulkhead_in_flight{"),
        gauge("tower_llm_bulkhead_queued{"),
    ))
}

/// Counts of one sampling interval (reset at each sample).
#[derive(Default)]
struct Interval {
    started: AtomicU64,
    finished: AtomicU64,
    errors: AtomicU64,
    unexpected: AtomicU64,
    max_in_flight: AtomicU64,
    /// The most calls in flight and waiting at once in the secondary's bulkhead, sampled.
    secondary_in_flight: AtomicU64,
    secondary_queued: AtomicU64,
    /// The pacer's worst lateness (µs): how far behind its schedule it started a request.
    pacer_lag_us: AtomicU64,
}

#[derive(Default)]
struct Totals {
    by_outcome: Mutex<std::collections::BTreeMap<String, u64>>,
    resumed: AtomicU64,
    unexpected_examples: Mutex<Vec<String>>,
}

struct Load {
    interval: Interval,
    totals: Totals,
    in_flight: AtomicU64,
    /// Of those, streamed requests.
    in_flight_sse: AtomicU64,
    started_total: AtomicU64,
    finished_total: AtomicU64,
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    rps: f64,
    errors: u64,
    unexpected: u64,
    max_in_flight: u64,
    secondary_in_flight: u64,
    secondary_queued: u64,
    pacer_lag_us: u64,
    /// CPU time the hypervisor took from this machine in the interval (ms, all CPUs).
    steal_ms: u64,
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    if !args.gateway_bin.exists() {
        eprintln!(
            "soak: no gateway binary at {} (build it: cargo build --release -p tower-llm-gateway, or pass --gateway-bin PATH)",
            args.gateway_bin.display()
        );
        std::process::exit(2);
    }
    // The mocks on a runtime of their own, so the load's pacing does not wait behind them.
    let mocks_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("soak-mocks")
        .enable_all()
        .build()
        .expect("mock runtime");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.spawn(stop_on_signal("soak"));
    let (primary, secondary) = mocks_rt.block_on(async {
        let mock = || async {
            MockUpstream::builder()
                .profile(FaultProfile::parse(HEALTHY).expect("profile"))
                .max_logged_attempts(1000)
                .start()
                .await
                .expect("mock upstream")
        };
        (mock().await, mock().await)
    });
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let config = gateway_config(&primary.base_url(), &secondary.base_url(), &args.resume)
        + "\n"
        + &args.extra_toml
        + "\n";
    let mut gateway = match spawn_gateway(&args.gateway_bin, &config, "soak", false) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = rt.block_on(wait_ready(&mut gateway, &client)) {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
    let pid = gateway.pid();
    let url = format!("http://{}/v1/chat/completions", gateway.addr);
    let run = Duration::from_secs(args.secs);
    let windows = Arc::new(windows(args.cycle, run + args.cycle));
    // Whether the route finishes cut streams on the secondary: then no error is injected.
    let resumes = args.resume != "off";
    // The first 2 minutes, or 20 % of a shorter run, and at least one whole fault cycle: the
    // memory high-water mark is set by the fault phases (requests in flight pile up in them),
    // so the baseline is taken once every phase has been through once.
    let warm_up = Duration::from_secs(120).min(run / 5).max(args.cycle);
    eprintln!(
        "soak: gateway pid {pid} at {}; {} s at {} req/s, {:.0} % SSE, {} % new models; fault cycle {} s; warm-up {} s",
        gateway.addr,
        args.secs,
        args.rps,
        args.sse_share * 100.0,
        args.random_models * 100.0,
        args.cycle.as_secs(),
        warm_up.as_secs()
    );

    // The fault windows count from now.
    let t0 = Instant::now() + Duration::from_millis(20);
    primary.set_profile(primary_profile(
        &windows,
        primary.elapsed() + Duration::from_millis(20),
    ));

    let load = Arc::new(Load {
        interval: Interval::default(),
        totals: Totals::default(),
        in_flight: AtomicU64::new(0),
        in_flight_sse: AtomicU64::new(0),
        started_total: AtomicU64::new(0),
        finished_total: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));

    // The secondary's bulkhead gauges from `/metrics` every 100 ms (10 small requests a second
    // on top of the load): how full it gets, to tell a shed from other 503s.
    {
        let (load, stop, client) = (load.clone(), stop.clone(), client.clone());
        let url = format!("http://{}/metrics", gateway.addr);
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some((in_flight, queued)) = secondary_bulkhead(&client, &url).await {
                    let i = &load.interval;
                    i.secondary_in_flight
                        .fetch_max(in_flight, Ordering::Relaxed);
                    i.secondary_queued.fetch_max(queued, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    // The pacer: request i at t0 + i / rps.
    let pacer = {
        let (load, stop, windows, client, url) = (
            load.clone(),
            stop.clone(),
            windows.clone(),
            client.clone(),
            url.clone(),
        );
        let handle = rt.handle().clone();
        let (rps, sse_share, random_models) = (args.rps, args.sse_share, args.random_models);
        std::thread::spawn(move || {
            let interval = Duration::from_secs(1) / rps;
            let total = u64::from(rps) * run.as_secs();
            for i in 0..total {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let intended = t0 + interval * u32::try_from(i).unwrap_or(u32::MAX);
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                } else {
                    // Behind schedule: the requests it owes now go out in a burst.
                    let lag = u64::try_from((now - intended).as_micros()).unwrap_or(u64::MAX);
                    load.interval.pacer_lag_us.fetch_max(lag, Ordering::Relaxed);
                }
                let stream = unit(i, 1) < sse_share;
                let model = if unit(i, 2) < random_models {
                    format!("soak-{:016x}", splitmix(i ^ 0x50a4))
                } else {
                    "gpt-4o-mini".to_owned()
                };
                let body = if stream { SSE_BODY } else { JSON_BODY }.replace("MODEL", &model);
                let in_flight = load.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                if stream {
                    load.in_flight_sse.fetch_add(1, Ordering::Relaxed);
                }
                load.interval
                    .max_in_flight
                    .fetch_max(in_flight, Ordering::Relaxed);
                load.interval.started.fetch_add(1, Ordering::Relaxed);
                load.started_total.fetch_add(1, Ordering::Relaxed);
                let (load, windows, client, url) =
                    (load.clone(), windows.clone(), client.clone(), url.clone());
                handle.spawn(async move {
                    let start = t0.elapsed();
                    let (outcome, said) = exchange(&client, &url, body, stream).await;
                    let end = t0.elapsed();
                    load.in_flight.fetch_sub(1, Ordering::Relaxed);
                    if stream {
                        load.in_flight_sse.fetch_sub(1, Ordering::Relaxed);
                    }
                    load.interval.finished.fetch_add(1, Ordering::Relaxed);
                    load.finished_total.fetch_add(1, Ordering::Relaxed);
                    if outcome == Outcome::Resumed {
                        load.totals.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    if !matches!(outcome, Outcome::Ok | Outcome::Resumed) {
                        load.interval.errors.fetch_add(1, Ordering::Relaxed);
                        let injected =
                            !resumes && in_mid_stream_window(&windows, start, end);
                        let key = format!(
                            "{outcome:?} ({})",
                            if injected { "mid-stream window" } else { "unexpected" }
                        );
                        if let Ok(mut by) = load.totals.by_outcome.lock() {
                            *by.entry(key).or_default() += 1;
                        }
                        if !injected {
                            load.interval.unexpected.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut ex) = load.totals.unexpected_examples.lock() {
                                if ex.len() < 40 {
                                    ex.push(format!(
                                        "{outcome:?}, {} request started at {:.3} s, ended at {:.3} s: {said}",
                                        if stream { "SSE" } else { "JSON" },
                                        start.as_secs_f64(),
                                        end.as_secs_f64()
                                    ));
                                }
                            }
                        }
                    }
                });
            }
        })
    };

    // Sample every `sample` until the run ends.
    let mut samples: Vec<Sample> = Vec::new();
    let mut steal_before = steal_ticks();
    let mut next = t0 + args.sample;
    let mut last = t0;
    while next <= t0 + run {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let elapsed = last.elapsed();
        last = Instant::now();
        let steal_now = steal_ticks();
        let steal_ms = steal_now.saturating_sub(steal_before) * 10;
        steal_before = steal_now;
        let i = &load.interval;
        let started = i.started.swap(0, Ordering::Relaxed);
        i.finished.swap(0, Ordering::Relaxed);
        let sample = Sample {
            at: t0.elapsed(),
            rss_kib: rss_kib(pid).unwrap_or(0),
            fds: open_fds(pid).unwrap_or(0),
            rps: started as f64 / elapsed.as_secs_f64(),
            errors: i.errors.swap(0, Ordering::Relaxed),
            unexpected: i.unexpected.swap(0, Ordering::Relaxed),
            max_in_flight: i
                .max_in_flight
                .swap(load.in_flight.load(Ordering::Relaxed), Ordering::Relaxed),
            secondary_in_flight: i.secondary_in_flight.swap(0, Ordering::Relaxed),
            secondary_queued: i.secondary_queued.swap(0, Ordering::Relaxed),
            pacer_lag_us: i.pacer_lag_us.swap(0, Ordering::Relaxed),
            steal_ms,
        };
        eprintln!(
            "[{:>6.0} s] RSS {:.1} MiB, {} fds, {:.0} req/s, {} errors ({} unexpected), at most {} in flight; secondary's bulkhead at most {} in flight, {} queued; pacer late by at most {:.1} ms; {} ms stolen",
            sample.at.as_secs_f64(),
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            sample.rps,
            sample.errors,
            sample.unexpected,
            sample.max_in_flight,
            sample.secondary_in_flight,
            sample.secondary_queued,
            sample.pacer_lag_us as f64 / 1000.0,
            sample.steal_ms
        );
        samples.push(sample);
        next += args.sample;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = pacer.join();
    // Bounded wait for the stragglers (a stalled stream ends after the idle limit).
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let unfinished = load.in_flight.load(Ordering::Relaxed);
    let unfinished_sse = load.in_flight_sse.load(Ordering::Relaxed);
    // Errors of the requests that ended after the last sample.
    let late_errors = load.interval.errors.swap(0, Ordering::Relaxed);
    let late_unexpected = load.interval.unexpected.swap(0, Ordering::Relaxed);

    // The end: /health and the last status line.
    let health = rt.block_on(async {
        let req = http::Request::get(format!("http://{}/health", gateway.addr))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    });
    // Let one more status line come out after the load stopped.
    std::thread::sleep(Duration::from_millis(1500));
    let status_line = gateway.last_line().unwrap_or_default();
    let (notable, per_stream_warnings) = gateway.notable_lines();
    // Before the gateway stops: its end fails what is still in flight.
    let by_outcome = load
        .totals
        .by_outcome
        .lock()
        .map(|b| b.clone())
        .unwrap_or_default();
    drop(gateway);
    mocks_rt.block_on(async {
        primary.shutdown().await;
        secondary.shutdown().await;
    });
    drop(rt);

    // The table.
    println!(
        "\nSoak: {} s at {} req/s ({:.0} % SSE, {} % new models), primary faults cycling every {} s; {} requests, {} unfinished at the end.\n",
        args.secs,
        args.rps,
        args.sse_share * 100.0,
        args.random_models * 100.0,
        args.cycle.as_secs(),
        load.started_total.load(Ordering::Relaxed),
        unfinished
    );
    println!("| time (s) | RSS (MiB) | fds | req/s | errors | unexpected | max in flight | secondary's bulkhead: max in flight / queued | pacer late (ms) | stolen (ms) |");
    println!(
        "|---------:|----------:|----:|------:|-------:|-----------:|--------------:|------:|------:|------:|"
    );
    for s in &samples {
        println!(
            "| {:.0} | {:.1} | {} | {:.0} | {} | {} | {} | {} / {} | {:.1} | {} |",
            s.at.as_secs_f64(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.rps,
            s.errors,
            s.unexpected,
            s.max_in_flight,
            s.secondary_in_flight,
            s.secondary_queued,
            s.pacer_lag_us as f64 / 1000.0,
            s.steal_ms
        );
    }
    println!("\nErrors by outcome:");
    for (key, n) in by_outcome {
        println!("- {key}: {n}");
    }
    let examples = load
        .totals
        .unexpected_examples
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    for example in &examples {
        println!("  - unexpected: {example}");
    }
    if !notable.is_empty() {
        println!(
            "\nThe gateway's first WARN and ERROR lines ({}; and {per_stream_warnings} per-stream \"{}\" warnings, not shown):",
            notable.len(),
            support::PER_STREAM_WARNING
        );
        for line in &notable {
            println!("  {line}");
        }
    }

    // The criteria.
    // A sample of 0 is one that could not be read (`/proc` refused: under an overload the
    // load's own client can run out of descriptors); it is left out of the criteria.
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= warm_up && s.rss_kib > 0 && s.fds > 0)
        .collect();
    let mut failed = false;
    let mut verdict = |ok: bool, what: String| {
        println!("- {} {what}", if ok { "PASS" } else { "FAIL" });
        failed |= !ok;
    };
    println!("\nCriteria (after a {} s warm-up):", warm_up.as_secs());
    // Growth, not a peak: per fault cycle after the warm-up, the highest and the lowest RSS;
    // the median of each over the last third of the cycles against the same over the first
    // third. A leak lifts both (the floor too); a single high sample (a burst of requests in
    // flight in one stall phase) moves neither median.
    let cycles = rss_per_cycle(&after, warm_up, args.cycle);
    match (cycles.first(), cycles.last()) {
        (Some(_), Some(_)) => {
            let third = (cycles.len() / 3).max(1);
            let (early, late) = (&cycles[..third], &cycles[cycles.len() - third..]);
            let median = |of: &[(u64, u64)], pick: fn(&(u64, u64)) -> u64| {
                let mut v: Vec<u64> = of.iter().map(pick).collect();
                v.sort_unstable();
                v[v.len() / 2]
            };
            let growth =
                |from: u64, to: u64| (to as f64 - from as f64) / from.max(1) as f64 * 100.0;
            let (early_high, late_high) = (median(early, |c| c.1), median(late, |c| c.1));
            let (early_low, late_low) = (median(early, |c| c.0), median(late, |c| c.0));
            let (high_growth, low_growth) =
                (growth(early_high, late_high), growth(early_low, late_low));
            let mib = |kib: u64| kib as f64 / 1024.0;
            verdict(
                high_growth < 10.0 && low_growth < 10.0,
                format!(
                    "RSS per fault cycle, median over the first and the last {third} of {} cycles: highs {:.1} -> {:.1} MiB ({high_growth:+.1} %), lows {:.1} -> {:.1} MiB ({low_growth:+.1} %) (each < 10 %)",
                    cycles.len(),
                    mib(early_high),
                    mib(late_high),
                    mib(early_low),
                    mib(late_low),
                ),
            );
            let peak = after.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            println!(
                "  (the highest sample: {:.1} MiB, {:+.1} % over the first cycle's high)",
                mib(peak),
                growth(cycles[0].1, peak)
            );
            let fd_min = after.iter().map(|s| s.fds).min().unwrap_or(0);
            let fd_max = after.iter().map(|s| s.fds).max().unwrap_or(0);
            let peak = after.iter().map(|s| s.max_in_flight).max().unwrap_or(0);
            let bound = 2 * peak as usize + 16;
            verdict(
                fd_max - fd_min <= bound,
                format!(
                    "fds {fd_min}..={fd_max}: spread {} ≤ 2 × {peak} in flight + 16 = {bound}",
                    fd_max - fd_min
                ),
            );
        }
        _ => verdict(false, "no RSS sample after the warm-up".to_owned()),
    }
    let unexpected: u64 = samples.iter().map(|s| s.unexpected).sum::<u64>() + late_unexpected;
    let errors: u64 = samples.iter().map(|s| s.errors).sum::<u64>() + late_errors;
    verdict(
        unexpected == 0,
        format!(
            "{unexpected} unexpected errors ({errors} errors in all{}); {} streams resumed on the secondary",
            if resumes { "" } else { ", the rest in mid-stream fault windows" },
            load.totals.resumed.load(Ordering::Relaxed),
        ),
    );
    verdict(
        unfinished == 0,
        format!(
            "{unfinished} requests unfinished 30 s after the load ({unfinished_sse} streamed, {} JSON)",
            unfinished - unfinished_sse
        ),
    );
    match health {
        Ok((status, body)) => {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let overall = json["status"].as_str().unwrap_or("?").to_owned();
            let targets = json["targets"].as_array().map_or(0, Vec::len);
            verdict(
                status == 200 && (overall == "healthy" || overall == "degraded"),
                format!("/health: {status}, status {overall}, {targets} targets"),
            );
        }
        Err(e) => verdict(false, format!("/health: no answer ({e})")),
    }
    let printable = !status_line.chars().any(char::is_control);
    let is_status = status_line.trim_start().starts_with('[') && status_line.contains("req/s");
    verdict(
        is_status && printable && status_line.len() < 4096,
        format!(
            "last status line ({} bytes): {status_line}",
            status_line.len()
        ),
    );
    println!(
        "\ncargo bench -p tower-llm-benches --bench soak -- --secs {} --rps {} --sse-share {} --random-models {}",
        args.secs, args.rps, args.sse_share, args.random_models
    );
    if failed {
        std::process::exit(1);
    }
}
