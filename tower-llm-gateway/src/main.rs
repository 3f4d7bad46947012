//! `tower-llm-gateway`: the OpenAI-compatible resilient proxy (see the crate's README).
//!
//! ```text
//! tower-llm-gateway [--config FILE] [--listen ADDR] [--quiet] [--log-format text|json]
//! ```

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tower_llm_gateway::cli::main().await
}
