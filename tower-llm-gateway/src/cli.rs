//! The command line of the `tower-llm-gateway` binary and of `examples/gateway` (feature `cli`,
//! on by default).
//!
//! ```text
//! tower-llm-gateway [--config FILE] [--listen ADDR] [--quiet] [--log-format text|json]
//! ```
//!
//! [`main`] is the whole program: it parses the arguments ([`Args`], with `clap`), loads the
//! configuration, sets up logging ([`init_logging_as`]), starts the [`Gateway`], prints where it
//! listens, reloads the client and admin keys on SIGHUP, and on SIGINT or SIGTERM shuts it down
//! gracefully (no new connections, in-flight requests finish within `[gateway]
//! shutdown_grace_ms`, the health state is saved when `[health] file` is set). Exit status: 0 after
//! a clean shutdown (and for `--help` and `--version`), 2 for a bad argument or configuration,
//! 1 for an error while shutting down.
//!
//! Logs are human-readable lines on stderr by default. `--log-format json` (or `[gateway]
//! log_format = "json"`; the flag wins) writes them as JSON lines on stdout instead, one object
//! per event (`timestamp`, `level`, `target`, `fields` with `message` and the event's other
//! fields), so a log shipper reads stdout whole while the banner and the status line stay on
//! stderr for humans. No event carries a key: the gateway logs client key names, never keys.
//!
//! With `[telemetry] otlp_endpoint` set, the request and attempt spans also go to that
//! OpenTelemetry collector ([`init_logging_with`], [`telemetry`](crate::telemetry)); the spans
//! still held are sent before the process exits.
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     tower_llm_gateway::cli::main().await
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::Layer;

pub use crate::config::LogFormat;

/// The global allocator of the gateway binaries: jemalloc with the `jemalloc` feature (on by
/// default), the system allocator without it.
///
/// jemalloc gives freed pages back to the system after a short decay, so the process's RSS
/// follows its live heap. With glibc's malloc the gateway kept the high-water mark of every
/// fault phase (more requests in flight, larger connection buffers) and its RSS crept from 23 to
/// 28 MiB over a 30-minute soak while the live heap stayed flat (RESILIENCE.md, "Soak"). Only
/// binaries choose an allocator; a program embedding a [`Gateway`] keeps its own.
///
/// ```no_run
/// #[global_allocator]
/// static ALLOCATOR: tower_llm_gateway::cli::GatewayAllocator = tower_llm_gateway::cli::GATEWAY_ALLOCATOR;
///
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     tower_llm_gateway::cli::main().await
/// }
/// ```
#[cfg(feature = "jemalloc")]
pub type GatewayAllocator = tikv_jemallocator::Jemalloc;
/// The global allocator of the gateway binaries: the system allocator (feature `jemalloc` off).
#[cfg(not(feature = "jemalloc"))]
pub type GatewayAllocator = std::alloc::System;

/// The value of [`GatewayAllocator`] for a `#[global_allocator]` static.
#[cfg(feature = "jemalloc")]
pub const GATEWAY_ALLOCATOR: GatewayAllocator = tikv_jemallocator::Jemalloc;
/// The value of [`GatewayAllocator`] for a `#[global_allocator]` static.
#[cfg(not(feature = "jemalloc"))]
pub const GATEWAY_ALLOCATOR: GatewayAllocator = std::alloc::System;
use crate::{Gateway, GatewayConfig, GatewayOptions};

/// tower-llm gateway: an OpenAI-compatible proxy that keeps answering while LLM providers fail.
///
/// Serves POST /v1/chat/completions (JSON and SSE), GET /v1/models, GET /health and
/// GET /metrics, configured by a TOML file (see the comments in workspace.toml).
#[derive(Clone, Debug, Parser)]
#[command(name = "tower-llm-gateway", version)]
#[non_exhaustive]
pub struct Args {
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = "workspace.toml")]
    pub config: PathBuf,
    /// Listen address, overriding `[gateway] listen` (e.g. 127.0.0.1:9000).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// No status line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Log format, overriding `[gateway] log_format`: `text` (on stderr) or `json` (JSON lines
    /// on stdout; the status line stays on stderr).
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The whole program: parse the process's arguments, load the configuration, set up logging
/// (`--log-format`, else `[gateway] log_format`), serve as [`run`] does.
pub async fn main() -> ExitCode {
    // `--help`, `--version` and bad arguments print and exit here (0, 0 and 2).
    let args = Args::parse();
    let config = match load(&args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    #[cfg(feature = "otlp")]
    {
        // `[telemetry] otlp_endpoint`: spans go to the collector next to the logs, and the
        // ones still held are sent before the process exits.
        let traces = match crate::telemetry::OtlpTraces::start(&config.telemetry) {
            Ok(traces) => traces,
            Err(e) => {
                eprintln!("error: {}: {e}", args.config.display());
                return ExitCode::from(2);
            }
        };
        init_logging_with(
            args.log_format.unwrap_or(config.gateway.log_format),
            traces.as_ref(),
        );
        let code = serve(args, config).await;
        if let Some(traces) = traces {
            if let Err(e) = traces.shutdown().await {
                eprintln!("warning: the last spans could not be sent: {e}");
            }
        }
        code
    }
    #[cfg(not(feature = "otlp"))]
    {
        init_logging_as(args.log_format.unwrap_or(config.gateway.log_format));
        serve(args, config).await
    }
}

/// [`init_logging_as`] with [`LogFormat::Text`].
pub fn init_logging() {
    init_logging_as(LogFormat::Text);
}

/// Install the process's log subscriber, unless one is installed already. It keeps warnings
/// and errors (escalations included) and the gateway's own notices (a key reload); the fallback
/// chain's per-attempt warnings are left out, as each failover is on the status line already.
/// [`LogFormat::Text`]: lines on stderr, without colour codes when stderr is not a terminal.
/// [`LogFormat::Json`]: one JSON object per line on stdout.
pub fn init_logging_as(format: LogFormat) {
    #[cfg(feature = "otlp")]
    init_logging_with(format, None);
    #[cfg(not(feature = "otlp"))]
    {
        let _ = tracing_subscriber::registry()
            .with(log_layer(format))
            .try_init();
    }
}

/// [`init_logging_as`], plus the request and attempt spans to `traces` (the OTLP exporter of
/// `[telemetry]`) when given. The log filter applies to the logs only.
#[cfg(feature = "otlp")]
pub fn init_logging_with(format: LogFormat, traces: Option<&crate::telemetry::OtlpTraces>) {
    let registry = tracing_subscriber::registry().with(log_layer(format));
    // Without the exporter nothing records the request and attempt spans (the logs keep
    // warnings): they must be disabled where they are created, not created and entered on every
    // poll of a streamed body. An absent `Option` layer would keep them on: `None` registers an
    // interest in every callsite.
    let _ = match traces {
        Some(traces) => registry.with(traces.layer()).try_init(),
        None => registry.try_init(),
    };
}

/// The log lines in `format`, filtered (see [`init_logging_as`]).
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = Targets::new()
        .with_default(Level::WARN)
        .with_target("tower_llm_gateway::reload", Level::INFO)
        .with_target("tower_llm_fallback::future", Level::ERROR);
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .with_filter(filter)
            .boxed(),
    }
}

/// Load the configuration, start the gateway, wait for SIGINT or SIGTERM, shut down. Logging is
/// the caller's (see [`init_logging_as`]).
pub async fn run(args: Args) -> ExitCode {
    match load(&args) {
        Ok(config) => serve(args, config).await,
        Err(code) => code,
    }
}

/// The configuration `--config` names; on error, the reason on stderr and exit status 2.
fn load(args: &Args) -> Result<GatewayConfig, ExitCode> {
    GatewayConfig::from_file(&args.config).map_err(|e| {
        eprintln!("error: {}: {e}", args.config.display());
        ExitCode::from(2)
    })
}

/// Start the gateway for `config`, wait for SIGINT or SIGTERM, shut down.
async fn serve(args: Args, config: GatewayConfig) -> ExitCode {
    let source = args.config.display().to_string();
    // Listened for before the gateway serves: once the banner says it is up, SIGTERM means a
    // clean shutdown, not the default action (the process killed mid-request).
    let signals = ShutdownSignals::install();
    let mut options = GatewayOptions::new().quiet(args.quiet);
    if let Some(addr) = args.listen {
        options = options.listen(addr);
    }
    let gateway = match Gateway::start(config.clone(), options).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return ExitCode::from(2);
        }
    };
    print_banner(&gateway, &config, &source);

    signals.recv().await;
    let totals = gateway.totals();
    eprintln!(
        "shutting down ({} requests, {} fallbacks, {} errors; {}): finishing in-flight requests",
        totals.requests,
        totals.fallbacks,
        totals.errors,
        gateway.stack().health().status.as_str()
    );
    match gateway.shutdown().await {
        Ok(Some(path)) => eprintln!("health state saved to {}", path.display()),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error during shutdown: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Where the gateway listens, its providers, and what to try. The first line,
/// `tower-llm gateway on http://ADDR/v1 (FILE)`, is what scripts wait for.
fn print_banner(gateway: &Gateway, config: &GatewayConfig, source: &str) {
    eprintln!("tower-llm gateway on {} ({source})", gateway.base_url());
    for provider in &config.stack.providers {
        match (config.mock(&provider.name), gateway.mock(&provider.name)) {
            (Some(profile), Some(mock)) => eprintln!(
                "  provider {:<10} embedded mock at {} — {}",
                provider.name,
                mock.base_url(),
                profile
            ),
            _ => eprintln!(
                "  provider {:<10} {}",
                provider.name,
                provider.base_url.as_deref().unwrap_or_default()
            ),
        }
    }
    eprintln!(
        "  try: curl -s -i {}/chat/completions -H 'content-type: application/json' \\\n       -d '{{\"model\":\"broken-model\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
        gateway.base_url()
    );
    eprintln!(
        "  health: curl -s http://{}/health   metrics: http://{}/metrics   models: {}/models",
        gateway.addr(),
        gateway.addr(),
        gateway.base_url()
    );
}

/// SIGINT (Ctrl-C) and, on Unix, SIGTERM, listened for from [`install`](Self::install) on.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Take over SIGINT and SIGTERM now (a handler that cannot be installed is left out: then
    /// that signal keeps its default action).
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignals {}
        }
    }

    /// Wait for the first of them.
    async fn recv(self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.interrupt.is_none() && self.terminate.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                () = next(self.interrupt) => {}
                () = next(self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["gw", "--listen", "127.0.0.1:9000", "-q"]).unwrap();
        assert_eq!(args.config, PathBuf::from("workspace.toml"));
        assert_eq!(args.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert!(args.quiet);
        assert_eq!(args.log_format, None);
        let args = Args::try_parse_from(["gw", "--log-format", "json"]).unwrap();
        assert_eq!(args.log_format, Some(LogFormat::Json));
        let err = Args::try_parse_from(["gw", "--log-format", "yaml"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Args::try_parse_from(["gw", "--listen", "localhost"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let help = Args::try_parse_from(["gw", "--help"]).unwrap_err();
        assert_eq!(help.exit_code(), 0);
    }
}
