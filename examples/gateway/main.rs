//! The tower-llm gateway: an OpenAI-compatible resilient proxy, run from the workspace root.
//!
//! ```text
//! cargo run --release --example gateway -- [--config FILE] [--listen ADDR] [--quiet] [--log-format text|json]
//! ```
//!
//! It serves `POST /v1/chat/completions` (JSON and SSE, routed by `model`), `GET /v1/models`,
//! `GET /health` and `GET /metrics`, configured by `workspace.toml` (see the comments in that
//! file). The shipped `workspace.toml` runs offline against embedded mock upstreams with
//! scripted faults, so the status line shows failover, breakers and recovery within seconds.
//! SIGINT or SIGTERM stops it gracefully.
//!
//! The gateway is the `tower-llm-gateway` crate (also a binary of that name:
//! `cargo run --release -p tower-llm-gateway`); this example is its command line, and a program
//! of yours can start one with `tower_llm_gateway::Gateway::start`. Built as an example of the
//! workspace root, it gets the root's test dependencies (tokio's `test-util`, whose clock takes a
//! lock on every timer operation): the binary is the one to measure or deploy.

use std::process::ExitCode;

// jemalloc (the gateway crate's default `jemalloc` feature): RSS follows the live heap.
#[global_allocator]
static ALLOCATOR: tower_llm_gateway::cli::GatewayAllocator =
    tower_llm_gateway::cli::GATEWAY_ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    tower_llm_gateway::cli::main().await
}
