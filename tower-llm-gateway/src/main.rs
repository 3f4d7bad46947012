//! `tower-llm-gateway`: the OpenAI-compatible resilient proxy (see the crate's README).
//!
//! ```text
//! tower-llm-gateway [--config FILE] [--listen ADDR] [--quiet]
//! ```

use std::process::ExitCode;

// mimalloc gives freed memory back to the OS: the process's RSS follows the memory in use, not
// glibc's high-water mark after a burst of concurrent requests (RESILIENCE.md, soak).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tower_llm_gateway::cli::main().await
}
