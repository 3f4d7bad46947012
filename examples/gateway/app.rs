//! The gateway's server logic, shared by `main.rs` and the root integration tests
//! (`tests/gateway*.rs` include this file with `#[path = "../examples/gateway/app.rs"]`).
//!
//! - [`config`]: the gateway's `[gateway]` table and `mock` providers, beside the library's
//!   configuration.
//! - [`server`]: [`server::Gateway::start`] starts embedded mocks, builds the stack, and serves
//!   the axum router until [`server::Gateway::shutdown`].
//! - [`handlers`]: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`, `GET /metrics`.
//! - [`errors`]: OpenAI-shaped error responses with the right status.
//! - [`headers`]: what is forwarded upstream and back (hop-by-hop and credentials are not).
//! - [`auth`]: client keys, compared in constant time.
//! - [`status`]: the live status line.

#[path = "auth.rs"]
pub mod auth;
#[path = "config.rs"]
pub mod config;
#[path = "errors.rs"]
pub mod errors;
#[path = "handlers.rs"]
pub mod handlers;
#[path = "headers.rs"]
pub mod headers;
#[path = "server.rs"]
pub mod server;
#[path = "status.rs"]
pub mod status;
