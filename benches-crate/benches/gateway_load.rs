//! Gateway load generator: drives the gateway example on loopback against the chaos mock upstream
//! (healthy), and sends the same load straight to the mock, for JSON and for SSE answers.
//!
//! ```text
//! export CARGO_TARGET_DIR=/work/targets/benches
//! cargo build --release --example gateway -p tower-llm
//! cargo build --release --bin mock-upstream -p tower-llm-chaos
//! cargo bench -p tower-llm-benches --bench gateway_load -- [--rates 1000,5000] [--secs 5]
//!     [--connections 32] [--client-threads 2] [--bodies json,sse] [--gateway-bin PATH]
//!     [--mock-bin PATH]
//! ```
//!
//! Three processes on loopback: this generator (hyper-util's pooled client on a tokio runtime),
//! `mock-upstream` (tower-llm-chaos, healthy profile) and the gateway (its own config, written to
//! a temporary file: one route, the mock as primary and as fallback target, breaker, retry and
//! bulkhead on with the shipped settings, no cache or static tier, no demo traffic). Each
//! measurement runs against the mock directly and through the gateway, one after the other, so
//! both see the same machine:
//!
//! - **fixed rate** (open loop): a pacer thread starts request `i` at `t0 + i / rate` whatever
//!   earlier requests are doing; latency runs from that *intended* start to the end of the body,
//!   so a stall delays every request scheduled behind it (no coordinated omission). The pacer's
//!   own lag (actual minus intended start) is reported too;
//! - **max throughput** (closed loop): `--connections` tasks each send their next request as soon
//!   as the previous answer's body has ended; latency from each send.
//!
//! Every answer is checked (200, and for SSE a body ending with `data: [DONE]`). Bounded: at most
//! `rate × secs` requests per fixed-rate run and `secs` seconds per closed-loop run, loopback only.

#![allow(missing_docs)]

mod support;

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{stop_child, target_dir, HttpClient};
use tower_llm_benches::latency::Latencies;

const JSON_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words, and nothing else at all, please."}],"max_tokens":32}"#;
const SSE_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words, and nothing else at all, please."}],"max_tokens":32,"stream":true}"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Json,
    Sse,
}

impl Answer {
    fn name(self) -> &'static str {
        match self {
            Answer::Json => "JSON",
            Answer::Sse => "SSE",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Answer::Json => JSON_BODY,
            Answer::Sse => SSE_BODY,
        }
    }
}

struct Args {
    rates: Vec<u32>,
    secs: u64,
    connections: usize,
    client_threads: usize,
    gateway_bin: PathBuf,
    mock_bin: PathBuf,
    answers: Vec<Answer>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rates: vec![1000, 5000],
        secs: 5,
        connections: 32,
        client_threads: 2,
        gateway_bin: target_dir().join("release/examples/gateway"),
        mock_bin: target_dir().join("release/mock-upstream"),
        answers: vec![Answer::Json, Answer::Sse],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--rates" => {
                args.rates = value("--rates")?
                    .split(',')
                    .map(|r| r.trim().parse().map_err(|_| format!("bad rate `{r}`")))
                    .collect::<Result<_, _>>()?
            }
            "--secs" => args.secs = value("--secs")?.parse().map_err(|_| "bad --secs")?,
            "--connections" => {
                args.connections = value("--connections")?
                    .parse()
                    .map_err(|_| "bad --connections")?
            }
            "--client-threads" => {
                args.client_threads = value("--client-threads")?
                    .parse()
                    .map_err(|_| "bad --client-threads")?
            }
            "--gateway-bin" => args.gateway_bin = value("--gateway-bin")?.into(),
            "--mock-bin" => args.mock_bin = value("--mock-bin")?.into(),
            "--bodies" => {
                args.answers = value("--bodies")?
                    .split(',')
                    .map(|b| match b.trim() {
                        "json" => Ok(Answer::Json),
                        "sse" => Ok(Answer::Sse),
                        other => Err(format!("bad body kind `{other}` (json, sse)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            // Added by `cargo bench`.
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.secs == 0 || args.secs > 60 || args.connections == 0 || args.connections > 512 {
        return Err("--secs must be 1..=60 and --connections 1..=512".into());
    }
    if args.rates.iter().any(|&r| r == 0 || r > 50_000) {
        return Err("rates must be 1..=50000 req/s".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// A child process killed (by its own handle) when dropped.
struct Process {
    child: Child,
    name: &'static str,
}

impl Drop for Process {
    fn drop(&mut self) {
        if stop_child(&mut self.child) {
            eprintln!("killed {}", self.name);
        } else {
            eprintln!("stopped {}", self.name);
        }
    }
}

/// Start `mock-upstream` on a free loopback port; returns it and its address.
fn start_mock(bin: &PathBuf) -> Result<(Process, SocketAddr), String> {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e} (build it first)", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let process = Process {
        child,
        name: "mock-upstream",
    };
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .ok_or("mock-upstream exited before listening")?
            .map_err(|e| e.to_string())?;
        if let Some(addr) = line.strip_prefix("mock-upstream listening on ") {
            break addr
                .trim()
                .parse()
                .map_err(|_| format!("bad address in `{line}`"))?;
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((process, addr))
}

fn gateway_config(mock: SocketAddr) -> String {
    format!(
        r#"# Written by benches/gateway_load.rs.
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0
# Loopback only, no client keys: the mock counts as a real provider (a `base_url`).
allow_unauthenticated = true

[request]
max_body_bytes = 1048576

[[providers]]
name = "primary"
base_url = "http://{mock}/v1"

[[providers]]
name = "secondary"
base_url = "http://{mock}/v1"

[[routes]]
match = "*"
targets = [
  {{ provider = "primary" }},
  {{ provider = "secondary", model = "backup-model", attempt_timeout_ms = 5000 }},
]
cache = false
static_answer = false

[stream]
ttft_ms = 10000
idle_ms = 30000
total_ms = 120000

[breaker]
enabled = true
failure_rate = 0.5
window = 20
min_calls = 10
consecutive_failures = 5
open_ms = 5000
max_open_ms = 60000
half_open_probes = 2

[retry]
enabled = true
max_attempts = 2
base_ms = 100
max_delay_ms = 2000
max_server_delay_ms = 5000
attempt_timeout_ms = 30000
budget_ratio = 0.2
budget_floor_per_sec = 5

[bulkhead]
enabled = true
max_in_flight = 64
max_queued = 128
max_wait_ms = 1000

[cache]
enabled = false
"#
    )
}

/// Start the gateway on a free loopback port with [`gateway_config`]; returns it and its base URL.
fn start_gateway(bin: &PathBuf, mock: SocketAddr) -> Result<(Process, String), String> {
    let path = std::env::temp_dir().join(format!(
        "tower-llm-gateway-load-{}.toml",
        std::process::id()
    ));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(gateway_config(mock).as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e} (build it first)", bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let process = Process {
        child,
        name: "gateway",
    };
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .ok_or("the gateway exited before listening")?
            .map_err(|e| e.to_string())?;
        if let Some(rest) = line.strip_prefix("tower-llm gateway on ") {
            break rest
                .split_whitespace()
                .next()
                .ok_or(format!("bad line `{line}`"))?
                .to_owned();
        }
        eprintln!("gateway: {line}");
    };
    // Keep draining (and showing) its log.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("gateway: {line}");
        }
    });
    let _ = std::fs::remove_file(&path);
    Ok((process, base))
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat` (clock ticks of
/// 10 ms; Linux only, `None` elsewhere).
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU time of the three processes: this generator, the mock upstream, the gateway.
#[derive(Clone, Copy, Default)]
struct Cpu([Duration; 3]);

fn cpu_now(pids: &[String; 3]) -> Cpu {
    let mut out = Cpu::default();
    for (slot, pid) in out.0.iter_mut().zip(pids) {
        *slot = cpu_time(pid).unwrap_or_default();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Requests.

fn chat_request(url: &str, answer: Answer) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-load-0000000000000000")
        .body(Full::new(Bytes::from_static(answer.body().as_bytes())))
        .unwrap_or_default()
}

/// Send one request and read its whole answer; whether it was a good one.
async fn exchange(client: &HttpClient, url: &str, answer: Answer) -> bool {
    let res = match client.request(chat_request(url, answer)).await {
        Ok(res) => res,
        Err(_) => return false,
    };
    if res.status() != 200 {
        return false;
    }
    match res.into_body().collect().await {
        Ok(body) => {
            let body = body.to_bytes();
            match answer {
                Answer::Json => body.starts_with(b"{"),
                Answer::Sse => body.ends_with(b"data: [DONE]\n\n"),
            }
        }
        Err(_) => false,
    }
}

struct Run {
    label: String,
    sent: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Latencies,
    lag: Option<Latencies>,
    /// CPU time used during the run by the generator, the mock and the gateway.
    cpu: Cpu,
}

impl Run {
    fn rps(&self) -> f64 {
        (self.sent - self.errors) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Open loop: request `i` starts at `t0 + i / rate`.
fn fixed_rate(
    rt: &tokio::runtime::Runtime,
    client: &HttpClient,
    url: &str,
    answer: Answer,
    rate: u32,
    secs: u64,
) -> Run {
    let total = u64::from(rate) * secs;
    let results = Arc::new(Mutex::new(Latencies::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut lag = Latencies::with_capacity(total as usize);
    let interval = Duration::from_secs(1) / rate;
    let t0 = Instant::now() + Duration::from_millis(10);
    for i in 0..total {
        let intended = t0 + interval * u32::try_from(i).unwrap_or(u32::MAX);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        lag.record(Instant::now().saturating_duration_since(intended));
        let (client, url) = (client.clone(), url.to_owned());
        let (results, errors, done) = (results.clone(), errors.clone(), done.clone());
        rt.spawn(async move {
            let ok = exchange(&client, &url, answer).await;
            let latency = intended.elapsed();
            if ok {
                if let Ok(mut r) = results.lock() {
                    r.record(latency);
                }
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Release);
        });
    }
    // Bounded wait for the stragglers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Acquire) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = t0.elapsed();
    let unfinished = total - done.load(Ordering::Acquire);
    let latencies = results.lock().map(|r| r.clone()).unwrap_or_default();
    Run {
        label: format!("{rate} req/s"),
        sent: total,
        errors: errors.load(Ordering::Relaxed) + unfinished,
        elapsed,
        latencies,
        lag: Some(lag),
        cpu: Cpu::default(),
    }
}

/// Closed loop: `connections` tasks, each sending its next request when the last one is done.
fn max_throughput(
    rt: &tokio::runtime::Runtime,
    client: &HttpClient,
    url: &str,
    answer: Answer,
    connections: usize,
    secs: u64,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.to_owned(), stop.clone());
            rt.spawn(async move {
                let mut latencies = Latencies::with_capacity(100_000);
                let mut sent = 0u64;
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    sent += 1;
                    if exchange(&client, &url, answer).await {
                        latencies.record(start.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, sent, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        label: format!("max, {connections} conns"),
        sent: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Latencies::default(),
        lag: None,
        cpu: Cpu::default(),
    };
    for task in tasks {
        if let Ok((latencies, sent, errors)) = rt.block_on(task) {
            run.latencies.merge(&latencies);
            run.sent += sent;
            run.errors += errors;
        }
    }
    run.elapsed = t0.elapsed();
    run
}

fn cpu_delta(before: Cpu, after: Cpu) -> Cpu {
    let mut out = Cpu::default();
    for ((slot, b), a) in out.0.iter_mut().zip(before.0).zip(after.0) {
        *slot = a.saturating_sub(b);
    }
    out
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_row(to: &str, answer: Answer, run: &mut Run) {
    let lag = run
        .lag
        .as_mut()
        .map_or("-".to_owned(), |l| format!("{:.0}", us(l.quantile(0.99))));
    println!(
        "| {to:<8} | {:<5} | {:<16} | {:>7} | {:>5} | {:>9.0} | {:>8.0} | {:>8.0} | {:>8.0} | {:>8.0} | {:>9} |",
        answer.name(),
        run.label,
        run.sent,
        run.errors,
        run.rps(),
        us(run.latencies.quantile(0.5)),
        us(run.latencies.quantile(0.99)),
        us(run.latencies.quantile(0.999)),
        us(run.latencies.quantile(1.0)),
        lag,
    );
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("gateway_load: {e}");
            std::process::exit(2);
        }
    };
    let (mock, mock_addr) = match start_mock(&args.mock_bin) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("gateway_load: {e}");
            std::process::exit(2);
        }
    };
    let (gateway, gateway_base) = match start_gateway(&args.gateway_bin, mock_addr) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gateway_load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()
        .expect("runtime");
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build_http();
    let targets = [
        ("direct", format!("http://{mock_addr}/v1/chat/completions")),
        ("gateway", format!("{gateway_base}/chat/completions")),
    ];
    eprintln!("mock upstream at {mock_addr}, gateway at {gateway_base}");
    let pids = [
        "self".to_owned(),
        mock.child.id().to_string(),
        gateway.child.id().to_string(),
    ];

    // Sanity and warm-up: every target answers both kinds, connections pooled.
    for (to, url) in &targets {
        for &answer in &args.answers {
            let mut warm = max_throughput(&rt, &client, url, answer, args.connections, 1);
            if warm.errors > 0 || warm.sent == 0 {
                eprintln!(
                    "gateway_load: warm-up against {to} ({}) had {} errors of {}",
                    answer.name(),
                    warm.errors,
                    warm.sent
                );
                std::process::exit(1);
            }
            eprintln!(
                "warm-up {to} {}: {:.0} req/s, p50 {:.0} µs",
                answer.name(),
                warm.rps(),
                us(warm.latencies.quantile(0.5))
            );
        }
    }

    println!("\n| to       | body  | load             |    sent | errs  |     req/s |  p50 µs  |  p99 µs  | p99.9 µs |  max µs  | lag p99 µs |");
    println!("|----------|-------|------------------|---------|-------|-----------|----------|----------|----------|----------|-----------|");
    let mut summary = Vec::new();
    for &answer in &args.answers {
        for &rate in &args.rates {
            let mut pair = Vec::new();
            for (to, url) in &targets {
                let before = cpu_now(&pids);
                let mut run = fixed_rate(&rt, &client, url, answer, rate, args.secs);
                run.cpu = cpu_delta(before, cpu_now(&pids));
                print_row(to, answer, &mut run);
                pair.push(run);
            }
            summary.push((answer, pair));
        }
        let mut pair = Vec::new();
        for (to, url) in &targets {
            let before = cpu_now(&pids);
            let mut run = max_throughput(&rt, &client, url, answer, args.connections, args.secs);
            run.cpu = cpu_delta(before, cpu_now(&pids));
            print_row(to, answer, &mut run);
            pair.push(run);
        }
        summary.push((answer, pair));
    }

    println!("\nCPU time per answered request, µs (from /proc/<pid>/stat, 10 ms ticks), and CPU use over the run:");
    println!(
        "| body  | load             | to       | generator | mock | gateway | total | cores busy |"
    );
    println!(
        "|-------|------------------|----------|-----------|------|---------|-------|------------|"
    );
    for (answer, pair) in &summary {
        for (run, to) in pair.iter().zip(["direct", "gateway"]) {
            let answered = (run.sent - run.errors).max(1) as f64;
            let per = |d: Duration| us(d) / answered;
            let total: Duration = run.cpu.0.iter().sum();
            println!(
                "| {:<5} | {:<16} | {to:<8} | {:>9.1} | {:>4.1} | {:>7.1} | {:>5.1} | {:>10.2} |",
                answer.name(),
                run.label,
                per(run.cpu.0[0]),
                per(run.cpu.0[1]),
                per(run.cpu.0[2]),
                per(total),
                total.as_secs_f64() / run.elapsed.as_secs_f64(),
            );
        }
    }

    println!("\ngateway overhead (gateway minus direct; throughput as gateway / direct):");
    println!("| body  | load             | Δp50 µs | Δp99 µs | Δp99.9 µs | throughput |");
    println!("|-------|------------------|---------|---------|-----------|------------|");
    for (answer, mut pair) in summary {
        if let [direct, via] = pair.as_mut_slice() {
            println!(
                "| {:<5} | {:<16} | {:>7.0} | {:>7.0} | {:>9.0} | {:>9.1}% |",
                answer.name(),
                via.label,
                us(via.latencies.quantile(0.5)) - us(direct.latencies.quantile(0.5)),
                us(via.latencies.quantile(0.99)) - us(direct.latencies.quantile(0.99)),
                us(via.latencies.quantile(0.999)) - us(direct.latencies.quantile(0.999)),
                100.0 * via.rps() / direct.rps(),
            );
        }
    }
    drop(rt);
    drop(gateway);
    drop(mock);
}
