//! `tower-llm-gateway`: the OpenAI-compatible resilient proxy (see the crate's README).
//!
//! ```text
//! tower-llm-gateway [--config FILE] [--listen ADDR] [--quiet] [--log-format text|json]
//! ```

use std::process::ExitCode;

// jemalloc (the gateway crate's default `jemalloc` feature): RSS follows the live heap.
#[global_allocator]
static ALLOCATOR: tower_llm_gateway::cli::GatewayAllocator =
    tower_llm_gateway::cli::GATEWAY_ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    tower_llm_gateway::cli::main().await
}
