//! What the real-time gateway benches share (`gateway_load`, `gateway_scenarios`, `soak`): where
//! the built binaries are, stopping a child process, and a gateway binary run on a free loopback
//! port with a configuration written to a temporary file (stopped when dropped, also on a panic,
//! and on SIGINT/SIGTERM to the bench), with its stderr drained into a bounded log.

#![allow(dead_code)] // each bench uses a part of it

use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// The benches' HTTP client: hyper-util's pooled client, plain HTTP.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long to wait for a new gateway's `GET /health` to answer 200.
pub const READY_WITHIN: Duration = Duration::from_secs(20);

/// How many of a gateway's first stderr lines are kept.
const KEPT_LINES: usize = 1000;

/// Cargo's target directory (`CARGO_TARGET_DIR`, else the workspace's `target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The gateway's release binary (`cargo build --release -p tower-llm-gateway`; not the example,
/// whose tokio carries the workspace's test-only `test-util` clock).
pub fn default_gateway_bin() -> PathBuf {
    target_dir().join("release/tower-llm-gateway")
}

/// Stop `child`: SIGTERM first (the gateway shuts down gracefully, a profiler wrapping it writes
/// its output), SIGKILL if it is still running 10 s later. Returns whether it had to be killed.
pub fn stop_child(child: &mut Child) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return false;
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    true
}

/// A free port on 127.0.0.1 (bound, then released for the gateway).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// How many of a gateway's `WARN` and `ERROR` lines are kept.
const KEPT_NOTABLE: usize = 2000;

/// The per-stream warning a cut or stalled attempt writes: counted, not kept (in a soak there
/// are thousands, and they would crowd out the breaker and escalation lines).
pub const PER_STREAM_WARNING: &str = "stream ended with an error event";

/// A gateway's stderr: its first lines, how many there were, the last one, and its first
/// `WARN`/`ERROR` lines (the status line drowns them out of `first` in a long run) but for the
/// per-stream warnings, which are only counted.
#[derive(Default)]
pub struct GatewayLog {
    pub first: Vec<String>,
    pub count: usize,
    pub last: Option<String>,
    pub notable: Vec<String>,
    pub per_stream_warnings: usize,
}

/// A running gateway: stopped (SIGTERM, then SIGKILL after 10 s) and its configuration file
/// removed when dropped, also while unwinding from a panic.
pub struct GatewayProcess {
    pub child: Child,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<GatewayLog>>,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
        let id = self.child.id();
        running().retain(|&(pid, _)| pid != id);
        if stop_child(&mut self.child) {
            eprintln!("  killed the gateway (pid {id}) after 10 s");
        }
    }
}

impl GatewayProcess {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many lines its start-up banner took, once the banner's last line (`  health: …`)
    /// was read.
    pub fn banner_len(&self) -> Option<usize> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let last = log.first.iter().position(|l| l.starts_with("  health: "))?;
        Some(last + 1)
    }

    /// Its stderr from line `from` on: how many lines, and the first few.
    pub fn log_since(&self, from: usize) -> (usize, Vec<String>) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let lines = log.first.iter().skip(from).take(5).cloned().collect();
        (log.count.saturating_sub(from), lines)
    }

    /// Its first `WARN` and `ERROR` lines (at most 2,000) but the per-stream warnings, and how
    /// many of those there were.
    pub fn notable_lines(&self) -> (Vec<String>, usize) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        (log.notable.clone(), log.per_stream_warnings)
    }

    /// The last line it wrote to stderr.
    pub fn last_line(&self) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.last.clone()
    }
}

/// The gateways running now (pid, configuration file), for [`stop_on_signal`].
fn running() -> std::sync::MutexGuard<'static, Vec<(u32, PathBuf)>> {
    static RUNNING: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// On SIGINT or SIGTERM, stop the running gateways and exit: the [`GatewayProcess`] guards
/// cover returns and panics, not signals (a terminal's Ctrl-C reaches the gateway too, a
/// `kill` of the bench alone does not). Spawn it on the bench's runtime.
#[cfg(unix)]
pub async fn stop_on_signal(bench: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    for (pid, config) in running().drain(..) {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = std::fs::remove_file(config);
    }
    eprintln!("{bench}: interrupted; stopped the gateway");
    std::process::exit(130);
}

#[cfg(not(unix))]
pub async fn stop_on_signal(_bench: &'static str) {}

/// Start the gateway binary `bin` with `config_text` (written to a temporary file named after
/// `tag`) on a free loopback port; `--quiet` turns its status line off.
pub fn spawn_gateway(
    bin: &Path,
    config_text: &str,
    tag: &str,
    quiet: bool,
) -> Result<GatewayProcess, String> {
    let config = std::env::temp_dir().join(format!(
        "tower-llm-gateway-{tag}-{}.toml",
        std::process::id()
    ));
    std::fs::File::create(&config)
        .and_then(|mut f| f.write_all(config_text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut command = Command::new(bin);
    command
        .arg("--config")
        .arg(&config)
        .args(["--listen", &addr.to_string()]);
    if quiet {
        command.arg("--quiet");
    }
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&config);
            return Err(format!(
                "cannot start {}: {e} (build it first: cargo build --release -p tower-llm-gateway)",
                bin.display()
            ));
        }
    };
    running().push((child.id(), config.clone()));
    let log = Arc::new(Mutex::new(GatewayLog::default()));
    if let Some(stderr) = child.stderr.take() {
        let log = log.clone();
        // Keep draining its stderr so it never blocks on a full pipe; keep the first lines and
        // the last one.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.first.len() < KEPT_LINES {
                    log.first.push(line.clone());
                }
                if line.contains(" ERROR ") || line.contains(" WARN ") {
                    if line.contains(PER_STREAM_WARNING) {
                        log.per_stream_warnings += 1;
                    } else if log.notable.len() < KEPT_NOTABLE {
                        log.notable.push(line.clone());
                    }
                }
                log.count += 1;
                log.last = Some(line);
            }
        });
    }
    Ok(GatewayProcess {
        child,
        config,
        addr,
        log,
    })
}

/// Poll `GET /health` until it answers 200 and the start-up banner has been read; returns how
/// long that took and the banner's length in lines.
pub async fn wait_ready(
    gateway: &mut GatewayProcess,
    client: &HttpClient,
) -> Result<(Duration, usize), String> {
    let started = Instant::now();
    let url = format!("http://{}/health", gateway.addr);
    loop {
        if let Ok(Some(status)) = gateway.child.try_wait() {
            let (_, lines) = gateway.log_since(0);
            return Err(format!(
                "the gateway exited ({status}) before it was ready: {}",
                lines.join(" / ")
            ));
        }
        let request = http::Request::get(url.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        if let Ok(Ok(res)) =
            tokio::time::timeout(Duration::from_secs(1), client.request(request)).await
        {
            let status = res.status();
            let _ = res.into_body().collect().await;
            if let (http::StatusCode::OK, Some(banner)) = (status, gateway.banner_len()) {
                return Ok((started.elapsed(), banner));
            }
        }
        if started.elapsed() > READY_WITHIN {
            return Err(format!(
                "the gateway at {} was not ready within {READY_WITHIN:?}",
                gateway.addr
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
