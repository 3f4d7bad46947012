//! tower-llm-gateway: an OpenAI-compatible proxy that keeps answering while LLM providers
//! rate-limit, time out, overload or go down, built on axum, tower-http and the `tower-llm`
//! stack (fallback chain, circuit breakers, retries, bulkheads, stream guards per target).
//!
//! It serves `POST /v1/chat/completions` (JSON and SSE, routed by the body's `model`),
//! `GET /v1/models`, `GET /health` and `GET /metrics` (Prometheus), configured by one TOML file
//! ([`GatewayConfig`]: the library's `StackConfig` plus a `[gateway]` table and, for offline
//! demos and tests, providers served by embedded mock upstreams: `mock = "<fault profile>"`).
//!
//! Run it as a program (`cargo run --release -p tower-llm-gateway -- --config workspace.toml`,
//! from the workspace root `cargo run --release -p tower-llm-gateway` reads `workspace.toml`), or
//! start it from your own: here with one provider that fails and one that answers, on a free port.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_gateway::{Gateway, GatewayConfig, GatewayOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let config = GatewayConfig::from_toml_str(r#"
//!     [gateway]
//!     listen = "127.0.0.1:0"
//!
//!     [[providers]]
//!     name = "primary"
//!     mock = "status:503"
//!
//!     [[providers]]
//!     name = "secondary"
//!     mock = "healthy"
//!
//!     [[routes]]
//!     match = "*"
//!     targets = [{ provider = "primary" }, { provider = "secondary", model = "backup-model" }]
//! "#)?;
//! let gateway = Gateway::start(config, GatewayOptions::new().quiet(true)).await?;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let req = http::Request::post(format!("{}/chat/completions", gateway.base_url()))
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(
//!         br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
//!     )))?;
//! let res = client.request(req).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["x-llm-target"], "secondary/backup-model");
//! assert_eq!(res.headers()["x-llm-fallback"], "target");
//! assert!(res.headers().contains_key("x-request-id"));
//! let body = res.into_body().collect().await?.to_bytes();
//! assert!(String::from_utf8_lossy(&body).contains("backup-model"));
//!
//! gateway.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Security
//!
//! The defaults, and what to set in front of real providers:
//!
//! - **Client keys.** Without client keys the gateway refuses to start when a provider is real
//!   (a `base_url`): anyone who reached the port would spend the operator's API keys. Set keys
//!   (`[gateway] api_keys_env`, `api_keys_file`, `[[gateway.keys]]`), or
//!   `allow_unauthenticated = true` for a private network; without keys on a non-loopback
//!   address the gateway warns even then. Embedded mocks only (the shipped `workspace.toml`)
//!   start without keys. See [`security`].
//! - **Keys as digests.** An entry `sha256:<64 hex>` (or a `[[gateway.keys]]` table with `name`
//!   and `sha256`) holds a key's SHA-256, so the configuration can be committed; the raw keys
//!   stay with the clients. Every key is hashed and compared in constant time; its name (never
//!   the key) is in the logs and the `client` metric label, and scopes the cache tier (two
//!   clients never share a cached answer). SIGHUP (or
//!   [`Gateway::reload_keys`]) re-reads the keys; a reload that fails keeps the old set. See
//!   [`auth`].
//! - **Admin endpoints.** `/health` lists every model clients asked for and `/metrics` every
//!   target and client name. With admin keys (`[gateway] admin_keys_env`, `admin_keys_file`,
//!   `[[gateway.admin_keys]]`), `/metrics` answers 401 without one and `/health` only the
//!   overall status (same 200/503, for load balancers). **Recommended:** set admin keys
//!   whenever the port is reachable by anyone but operators, or keep the listener on loopback
//!   behind your own proxy.
//! - **Headers** cross by allow-list in both directions ([`headers`]): a client cannot pick the
//!   billed organisation or project, and never sees the provider's cookies, organisation or
//!   rate-limit headers.
//! - **Server limits** (`[gateway]`): `header_read_timeout_ms` (30 s; also the keep-alive idle
//!   limit), `body_timeout_ms` (30 s), `request_timeout_ms` (120 s), `max_connections` (1024;
//!   past it, new connections wait in the kernel's backlog), `[request] max_body_bytes`
//!   (1 MiB), and `shutdown_grace_ms` (10 s) for in-flight requests at shutdown, after which
//!   the health state is saved.
//! - **Bounded memory with pass-through models** (`[gateway]`): `metrics_idle_timeout_ms`
//!   (off by default; see [`metrics`] for why) drops a metric series not updated for that
//!   long, so the series of evicted pass-through targets go; `/v1/models` lists the models a route
//!   holds now (at most 256 per pass-through route), the status line at most 8 targets.
//!
//! # Modules
//!
//! - [`config`]: [`GatewayConfig`], the `[gateway]` table ([`GatewaySection`]) and the `mock`
//!   providers, beside the library's configuration.
//! - [`server`]: [`Gateway::start`] reads the keys, installs the Prometheus recorder, starts the
//!   embedded mocks, builds the stack and serves (hyper's HTTP/1 server under the server limits)
//!   until [`Gateway::shutdown`].
//! - [`handlers`]: the endpoints, and what `/v1/models` lists ([`handlers::model_ids`]).
//! - the tower-http layers around them: see [Layers](#layers).
//! - [`auth`]: client and admin keys (SHA-256 digests with names), through tower-http's
//!   `ValidateRequestHeaderLayer`, compared in constant time.
//! - [`security`]: whether the gateway may start without client keys.
//! - [`errors`]: OpenAI-shaped error responses with the right status.
//! - [`headers`]: the allow-lists of what is forwarded upstream and back.
//! - [`metrics`]: the Prometheus recorder (histogram buckets for LLM latencies), the gateway's
//!   own metrics (requests, request duration per route), and a table of every series
//!   `/metrics` shows.
//! - [`status`]: the live status line.
//! - [`cli`] (feature `cli`): the binary's command line.
//!
//! # Layers
//!
//! From the outside in: [`RequestIdLayer`](request_id::RequestIdLayer) (`x-request-id`, a UUID
//! when the client sent none; forwarded upstream, and the id back on the response), `TimeoutLayer`
//! (`[gateway] request_timeout_ms`, 504), the body limit (`[request] max_body_bytes`, 413: the
//! rest of an oversized body is read and discarded, up to 4 × the limit (at least 1 MiB) and
//! within `body_timeout_ms`, before the 413 goes out with `connection: close`, so a client still
//! sending reads it instead of a reset; past that the connection is closed; and a client
//! pausing longer than `[gateway] body_timeout_ms` while sending its body gets a 408), and on
//! `/v1/*`
//! `ValidateRequestHeaderLayer` with [`auth::ClientAuth`] (401). A chat request runs in the
//! handler's `gateway.request` span (with its request id; see [`telemetry`]); every other
//! request in tower-http's `TraceLayer` span (method, path and request id) around the router.
//! Every error a client sees is OpenAI-shaped (`{"error":{"message","type","param","code"}}`),
//! the layers' own included.
//!
//! # `/v1/models`
//!
//! An OpenAI client picks its `model` from this list, so it lists what a client may send and
//! get routed: each route whose `match` has no glob characters (an alias like `fast`, or an
//! exact model name), then each model requested so far on a route with pass-through targets.
//! A glob such as `*` or `gpt-*` is not a model and is not listed; nor are the upstream model
//! names of targets (a client does not send those). Entries are OpenAI-shaped:
//! `{"id","object":"model","created":<gateway start, Unix seconds>,"owned_by":"tower-llm"}`.

#![forbid(unsafe_code)]

pub mod auth;
mod body_limit;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
mod demo;
mod drain;
pub mod errors;
mod gated_body;
mod gated_future;
pub mod handlers;
pub mod headers;
mod hot_route;
pub mod metrics;
mod reload;
pub mod request_id;
mod router;
pub mod security;
mod serve;
pub mod server;
pub mod status;
pub mod telemetry;
mod wake;

pub use config::{GatewayConfig, GatewaySection};
pub use reload::KeyReload;
pub use server::{Gateway, GatewayOptions, GatewayStack};
pub use status::Totals;
