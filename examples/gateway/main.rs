//! The tower-llm gateway: an OpenAI-compatible resilient proxy.
//!
//! ```text
//! cargo run --release --example gateway -- [--config FILE] [--listen ADDR] [--quiet]
//! ```
//!
//! It serves `POST /v1/chat/completions` (JSON and SSE, routed by `model`), `GET /v1/models`,
//! `GET /health` and `GET /metrics`, configured by `workspace.toml` (see the comments in that
//! file). The shipped `workspace.toml` runs offline against embedded mock upstreams with
//! scripted faults, so the status line shows failover, breakers and recovery within seconds.
//! SIGINT or SIGTERM stops it gracefully: no new connections, in-flight requests finish, the
//! health state is saved when `[health] file` is set.

#[path = "app.rs"]
mod app;

use std::net::SocketAddr;
use std::process::ExitCode;

use app::config::GatewayConfig;
use app::server::{Gateway, GatewayOptions};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

const USAGE: &str = "usage: gateway [--config FILE] [--listen ADDR] [--quiet]

  --config FILE   configuration (default: workspace.toml)
  --listen ADDR   listen address, overriding [gateway] listen (e.g. 127.0.0.1:9000)
  --quiet         no status line on stderr";

struct Args {
    config: String,
    listen: Option<SocketAddr>,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: "workspace.toml".to_owned(),
        listen: None,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => args.config = it.next().ok_or("--config needs a file")?,
            "--listen" => {
                let addr = it.next().ok_or("--listen needs an address")?;
                args.listen = Some(
                    addr.parse()
                        .map_err(|_| format!("`{addr}` is not an address like 127.0.0.1:8080"))?,
                );
            }
            "--quiet" | "-q" => args.quiet = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Warnings and escalations in the log; each failover is on the status line already, so the
    // fallback's per-attempt warnings are left out.
    let filter = Targets::new()
        .with_default(Level::WARN)
        .with_target("tower_llm_fallback::future", Level::ERROR);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // No colour codes in files and pipes.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    let config = match GatewayConfig::from_file(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {}: {e}", args.config);
            return ExitCode::from(2);
        }
    };
    let options = GatewayOptions {
        listen: args.listen,
        quiet: args.quiet,
    };
    let gateway = match Gateway::start(config.clone(), options).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("error: {}: {e}", args.config);
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "tower-llm gateway on {} ({})",
        gateway.base_url(),
        args.config
    );
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
        "  health: curl -s http://{}/health   metrics: http://{}/metrics",
        gateway.addr(),
        gateway.addr()
    );

    wait_for_signal().await;
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

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
