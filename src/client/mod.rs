//! The default upstream client: [`UpstreamClient`], what
//! [`StackBuilder::build_http`](crate::stack::StackBuilder::build_http) builds the stack over.
//!
//! It speaks `http` and, with the `tls` feature (default on), `https` through rustls (`ring`
//! provider): Mozilla's roots bundled by default (`tls_roots = "native"` for the platform's
//! store), plus each provider's `ca_file`; HTTP/1.1 unless a provider sets `http2 = true` (then
//! HTTP/2 when the upstream offers it by ALPN; why it is not the default:
//! [`DEFAULT_HTTP2`]), streams working over either. Each provider's
//! connection settings (`connect_timeout_ms`, `pool_idle_timeout_ms`, `pool_max_idle_per_host`,
//! `tcp_keepalive_ms`, see [`config`](crate::config) and its
//! [defaults](crate::config::DEFAULT_CONNECT_TIMEOUT_MS)) apply: connections are pooled per
//! client, so there is one client per distinct set of settings, and each request goes to the
//! client of its target's provider (the chain's [`Target`] request extension).
//!
//! **HTTP/1.1 connections are driven by the answer's reader.** For `http` upstreams, and `https`
//! ones without `http2 = true`, a connection is not run in a task of its own: the request's
//! response future, then the answer's [`UpstreamBody`], poll it whenever they have nothing at
//! hand. A streamed answer's events then never cross tasks (no wake-up of a connection task per
//! event, and back), and every event already read from the socket is handed on in the same poll,
//! so a server writing the answer on (the gateway's) sends them together. The connection and the
//! body it feeds wake each other as they go (the head handed over, each read, each frame taken):
//! they are polled with a waker of their own, so those wake-ups are polled again within the
//! same poll instead of waking the reader's task, which would send it through the scheduler once
//! per answer and per read of a stream (a server can do the same for its connections:
//! [`PollAgain`]). Idle connections wait
//! in the client's pool, are checked before reuse, and are closed after `pool_idle_timeout_ms` or
//! when the peer closes them; a request that a reused connection could not send goes out once
//! more on a new one. `https` upstreams with `http2 = true` (which may negotiate HTTP/2) go
//! through hyper-util's client, whose connection tasks multiplex the answers of many readers.
//!
//! A connection that cannot be made fails the request with an I/O error: `TimedOut` after
//! `connect_timeout_ms` (a `timeout` failure, a silent target), otherwise a `transport` failure,
//! which benches the target like a refused connection; its message says why. A failed TLS
//! handshake is a [`TlsError`] (unknown issuer, name mismatch, …) in the error's sources. Without
//! the `tls` feature a provider with an `https` URL stops [`build`](UpstreamClientBuilder::build)
//! with the key and the reason: bring your own client to
//! [`StackBuilder::build_with_client`](crate::stack::StackBuilder::build_with_client).
//!
//! ```
//! use std::net::SocketAddr;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use tower_llm::client::UpstreamClientBuilder;
//! use tower_llm::config::StackConfig;
//! use tower_llm::stack::StackBuilder;
//! use tower_llm_chaos::MockUpstream;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let upstream = MockUpstream::builder().start().await?;
//! // A local Ollama by its preset (`http://localhost:11434/v1`), reached here at the mock's
//! // address: `connect_to` sends every connection to `localhost` there.
//! let config = StackConfig::from_toml_str(r#"
//! [[providers]]
//! name = "local"
//! kind = "ollama"
//! connect_timeout_ms = 2000
//!
//! [[routes]]
//! match = "*"
//! targets = [{ provider = "local", model = "llama3.2" }]
//! "#)?;
//! let client = UpstreamClientBuilder::new(&config)
//!     .connect_to("localhost", upstream.addr())
//!     .build()?;
//! let stack = StackBuilder::new(&config).build_with_client::<Full<Bytes>, _, _>(client)?;
//!
//! let req = http::Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"any","messages":[]}"#)))?;
//! let res = stack.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! let attempt = &upstream.attempts()[0];
//! assert_eq!(attempt.path, "/v1/chat/completions");
//! assert_eq!(attempt.headers["host"], "localhost:11434");
//! assert_eq!(attempt.model, "llama3.2");
//! # Ok(()) }
//! ```

mod again;
mod connect;
mod driven;
pub(crate) mod shape;
#[cfg(feature = "tls")]
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response};
use http_body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;
use tower_llm_core::{BoxError, Target};

pub use again::PollAgain;
pub use connect::{Connection, Connector};
pub use driven::UpstreamBody;
#[cfg(feature = "tls")]
pub use tls::TlsError;

use crate::config::{
    ProviderConfig, StackConfig, TlsRoots, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_HTTP2,
    DEFAULT_POOL_IDLE_TIMEOUT_MS, DEFAULT_POOL_MAX_IDLE_PER_HOST, DEFAULT_TCP_KEEPALIVE_MS,
};
use crate::ConfigFileError;

/// hyper-util's legacy client over a [`Connector`]: what [`UpstreamClient`] sends `https`
/// requests that may negotiate HTTP/2 with.
pub type ProviderHttpClient<B> = Client<Connector, B>;

/// The default upstream client: one client per distinct set of providers' connection settings,
/// each request sent by its target provider's (see the [module docs](self)). Clones share the
/// clients and their connection pools.
pub struct UpstreamClient<B: Body + 'static> {
    inner: Arc<Clients<B>>,
}

/// The client of one set of connection settings: HTTP/1.1 connections driven by their answers'
/// readers (`http`, and `https` without HTTP/2), hyper-util's client for `https` that may
/// negotiate HTTP/2.
struct SettingsClient<B: Body + 'static> {
    driven: Arc<driven::Pool<B>>,
    spawned: ProviderHttpClient<B>,
    http2: bool,
}

impl<B: Body + 'static> Clone for SettingsClient<B> {
    fn clone(&self) -> Self {
        SettingsClient {
            driven: Arc::clone(&self.driven),
            spawned: self.spawned.clone(),
            http2: self.http2,
        }
    }
}

struct Clients<B: Body + 'static> {
    /// Each provider's client (clones share their pools); looked up per request, hence
    /// foldhash rather than SipHash.
    by_provider: HashMap<String, SettingsClient<B>, foldhash::fast::RandomState>,
    /// The default settings' client: for requests without a known provider.
    default: SettingsClient<B>,
    /// Distinct clients, the default one included.
    count: usize,
}

impl<B: Body + 'static> Clone for UpstreamClient<B> {
    fn clone(&self) -> Self {
        UpstreamClient {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Body + 'static> fmt::Debug for UpstreamClient<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("providers", &self.inner.by_provider.len())
            .field("clients", &self.inner.count)
            .finish()
    }
}

impl<B: Body + 'static> UpstreamClient<B> {
    /// How many clients (distinct connection settings, the default one included) it holds.
    pub fn client_count(&self) -> usize {
        self.inner.count
    }
}

/// The response future of [`UpstreamClient`].
pub type UpstreamFuture =
    Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, BoxError>> + Send>>;

impl<B> Service<Request<B>> for UpstreamClient<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<UpstreamBody>;
    type Error = BoxError;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: connections are made per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = req
            .extensions()
            .get::<Target>()
            .and_then(|t| self.inner.by_provider.get(t.provider()))
            .unwrap_or(&self.inner.default);
        if client.http2 && req.uri().scheme() == Some(&Scheme::HTTPS) {
            let answer = client.spawned.request(req);
            return Box::pin(async move { Ok(answer.await?.map(UpstreamBody::spawned)) });
        }
        Box::pin(Arc::clone(&client.driven).send(req))
    }
}

/// Builds an [`UpstreamClient`] from a configuration's providers.
#[derive(Debug)]
#[must_use = "call `.build()`"]
pub struct UpstreamClientBuilder<'a> {
    config: &'a StackConfig,
    urls: HashMap<String, String>,
    connect_to: HashMap<String, SocketAddr>,
}

impl<'a> UpstreamClientBuilder<'a> {
    /// A builder for `config`'s providers.
    pub fn new(config: &'a StackConfig) -> Self {
        UpstreamClientBuilder {
            config,
            urls: HashMap::new(),
            connect_to: HashMap::new(),
        }
    }

    /// Provider `name`'s base URL is `url`, whatever the configuration says (as
    /// [`StackBuilder::provider_url`](crate::stack::StackBuilder::provider_url): give both the
    /// same URLs).
    pub fn provider_url(mut self, name: impl Into<String>, url: impl Into<String>) -> Self {
        self.urls.insert(name.into(), url.into());
        self
    }

    pub(crate) fn provider_urls(mut self, urls: &HashMap<String, String>) -> Self {
        self.urls
            .extend(urls.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// Connect to `addr` whenever a URL names `host` (any port), instead of resolving it; TLS
    /// still verifies the certificate against `host`. For a provider behind a fixed address or
    /// a local proxy, and for tests that serve a real provider's host name on loopback.
    pub fn connect_to(mut self, host: impl Into<String>, addr: SocketAddr) -> Self {
        self.connect_to.insert(host.into(), addr);
        self
    }

    /// Validate the configuration and build one client per distinct set of connection
    /// settings. Errors name the key: an `https` provider without the `tls` feature, a
    /// `ca_file` that cannot be read or holds no certificate, an empty platform trust store.
    pub fn build<B>(self) -> Result<UpstreamClient<B>, ConfigFileError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let config = self.config;
        config.validate()?;
        let overrides = Arc::new(self.connect_to);
        let mut built: HashMap<Settings, SettingsClient<B>> = HashMap::new();
        let mut by_provider = HashMap::default();
        let defaults = Settings::default();
        // The defaults use no file and the bundled roots: nothing that can fail.
        let default =
            client(&defaults, &overrides).map_err(|(key, msg)| config.error_at(key, msg))?;
        built.insert(defaults, default.clone());
        for (i, p) in config.providers.iter().enumerate() {
            let url = p.resolved_base_url(self.urls.get(&p.name).map(String::as_str));
            check_scheme(config, i, p, url.as_deref(), cfg!(feature = "tls"))?;
            let settings = Settings::of(p);
            let shared = match built.get(&settings) {
                Some(shared) => shared.clone(),
                None => {
                    let new = client(&settings, &overrides).map_err(|(key, msg)| {
                        config.error_at(&format!("providers[{i}].{key}"), msg)
                    })?;
                    built.insert(settings, new.clone());
                    new
                }
            };
            by_provider.insert(p.name.clone(), shared);
        }
        Ok(UpstreamClient {
            inner: Arc::new(Clients {
                by_provider,
                default,
                count: built.len(),
            }),
        })
    }
}

/// Without the `tls` feature (`tls` false), an `https` provider cannot be reached: say so now.
fn check_scheme(
    config: &StackConfig,
    i: usize,
    p: &ProviderConfig,
    url: Option<&str>,
    tls: bool,
) -> Result<(), ConfigFileError> {
    let Some(url) = url else { return Ok(()) };
    let https = url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if https && !tls {
        let key = if p.base_url.is_some() {
            "base_url"
        } else {
            "kind"
        };
        return Err(config.error_at(
            &format!("providers[{i}].{key}"),
            format!(
                "`{url}` is https, but tower-llm was built without its `tls` feature: enable \
                 it, or pass a TLS-capable client to StackBuilder::build_with_client"
            ),
        ));
    }
    Ok(())
}

/// One provider's connection settings, resolved (providers with equal settings share a client).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Settings {
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    tcp_keepalive: Option<Duration>,
    http2: bool,
    roots: TlsRoots,
    ca_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::of(&ProviderConfig::new(""))
    }
}

impl Settings {
    fn of(p: &ProviderConfig) -> Settings {
        let keepalive = p.tcp_keepalive_ms.unwrap_or(DEFAULT_TCP_KEEPALIVE_MS);
        Settings {
            connect_timeout: Duration::from_millis(
                p.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
            ),
            pool_idle_timeout: Duration::from_millis(
                p.pool_idle_timeout_ms
                    .unwrap_or(DEFAULT_POOL_IDLE_TIMEOUT_MS),
            ),
            pool_max_idle_per_host: p
                .pool_max_idle_per_host
                .unwrap_or(DEFAULT_POOL_MAX_IDLE_PER_HOST),
            tcp_keepalive: (keepalive > 0).then(|| Duration::from_millis(keepalive)),
            http2: p.http2.unwrap_or(DEFAULT_HTTP2),
            roots: p.tls_roots.unwrap_or_default(),
            ca_file: p.ca_file.as_ref().map(PathBuf::from),
        }
    }
}

/// The client of one set of settings; the error is `(key, message)`.
fn client<B>(
    settings: &Settings,
    overrides: &Arc<HashMap<String, SocketAddr>>,
) -> Result<SettingsClient<B>, (&'static str, String)>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let tcp = connect::Tcp {
        timeout: settings.connect_timeout,
        keepalive: settings.tcp_keepalive,
        overrides: Arc::clone(overrides),
    };
    #[cfg(feature = "tls")]
    let connector = Connector::new(
        tcp,
        tls::client_config(settings.roots, settings.ca_file.as_deref(), settings.http2)?,
    );
    #[cfg(not(feature = "tls"))]
    let connector = Connector::new(tcp);
    let driven = driven::Pool::new(
        connector.clone(),
        settings.pool_max_idle_per_host,
        settings.pool_idle_timeout,
    );
    let spawned = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        // The idle timeout needs a timer to take effect.
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);
    Ok(SettingsClient {
        driven,
        spawned,
        http2: settings.http2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str, tls: bool) -> Result<(), ConfigFileError> {
        let config = StackConfig::from_toml_str(toml).unwrap();
        let p = &config.providers[0];
        check_scheme(&config, 0, p, p.resolved_base_url(None).as_deref(), tls)
    }

    /// Without the `tls` feature an https provider stops the build, naming the key and why.
    #[test]
    fn https_without_the_tls_feature_stops_the_build() {
        let preset = "[[providers]]\nname = \"p\"\nkind = \"openai\"\n";
        let err = check(preset, false).unwrap_err();
        assert_eq!(err.key(), "providers[0].kind");
        assert!(
            err.to_string().contains("without its `tls` feature"),
            "{err}"
        );
        assert!(check(preset, true).is_ok());

        let url = "[[providers]]\nname = \"q\"\nbase_url = \"https://example.test/v1\"\n";
        let err = check(url, false).unwrap_err();
        assert_eq!((err.key(), err.line()), ("providers[0].base_url", Some(3)));
        let plain = "[[providers]]\nname = \"q\"\nbase_url = \"http://example.test/v1\"\n";
        assert!(check(plain, false).is_ok());
    }
}
