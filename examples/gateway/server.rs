//! Starting and stopping the gateway: embedded mock upstreams, the stack, the axum server, the
//! status line and the demo traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_llm::core::BoxError;
use tower_llm::{Stack, StackBuilder};
use tower_llm_chaos::{FaultProfile, MockUpstream};

use super::auth::ClientKeys;
use super::config::GatewayConfig;
use super::handlers::{router, AppState};
use super::status::{status_line, Counters, Totals};

/// The gateway's stack: requests arrive as buffered bytes, upstream answers are hyper bodies.
pub type GatewayStack = Stack<Full<Bytes>, hyper::body::Incoming>;

/// How to run the gateway, beyond its configuration file.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// Listen here instead of `[gateway] listen` (`127.0.0.1:0` picks a free port).
    pub listen: Option<SocketAddr>,
    /// No status line.
    pub quiet: bool,
}

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    stack: GatewayStack,
    mocks: BTreeMap<String, MockUpstream>,
    counters: Arc<Counters>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.addr)
            .field("mocks", &self.mocks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The process-wide Prometheus recorder (installed once; every gateway in the process renders it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

impl Gateway {
    /// Start the embedded mock upstreams, build the stack and serve. Configuration problems
    /// (a bad mock profile, a missing API key variable) are errors naming the key and line.
    pub async fn start(
        config: GatewayConfig,
        options: GatewayOptions,
    ) -> Result<Gateway, BoxError> {
        let mut mocks = BTreeMap::new();
        let mut builder = StackBuilder::new(&config.stack);
        for (name, profile) in &config.mocks {
            let profile =
                FaultProfile::parse(profile).map_err(|e| config.mock_error(name, e.to_string()))?;
            let mock = MockUpstream::builder().profile(profile).start().await?;
            builder = builder.provider_url(name.clone(), mock.base_url());
            mocks.insert(name.clone(), mock);
        }
        let stack: GatewayStack = builder.build_http()?;

        let keys = match &config.gateway.api_keys_env {
            Some(var) => {
                let list = std::env::var(var).map_err(|_| {
                    config.stack.error_at(
                        "gateway.api_keys_env",
                        format!("environment variable `{var}` is not set"),
                    )
                })?;
                let keys = ClientKeys::parse(&list);
                if !keys.enabled() {
                    return Err(config
                        .stack
                        .error_at(
                            "gateway.api_keys_env",
                            format!("environment variable `{var}` holds no key"),
                        )
                        .into());
                }
                keys
            }
            None => ClientKeys::default(),
        };
        let keys = Arc::new(keys);
        let counters = Arc::new(Counters::default());
        let metrics = metrics_handle();
        let state = AppState {
            stack: stack.clone(),
            keys: Arc::clone(&keys),
            max_body_bytes: config.stack.request.max_body_bytes,
            counters: Arc::clone(&counters),
            metrics: metrics.clone(),
        };

        let listen = match options.listen {
            Some(addr) => addr,
            None => config.listen,
        };
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(state);
        let server = tokio::spawn(async move {
            // TCP_NODELAY on every accepted connection: streamed events are small writes that
            // Nagle's algorithm would otherwise hold back until the client's delayed ACK.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });

        let mut background = Vec::new();
        if !options.quiet {
            background.push(tokio::spawn(status_task(
                stack.clone(),
                Arc::clone(&counters),
                metrics,
            )));
        }
        let rps = config.gateway.demo_requests_per_sec;
        if rps > 0 {
            background.push(tokio::spawn(demo_traffic(addr, rps, Arc::clone(&keys))));
        }
        Ok(Gateway {
            addr,
            stack,
            mocks,
            counters,
            shutdown: Some(tx),
            server,
            background,
        })
    }

    /// Where the gateway listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL clients use: `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The embedded mock upstream of provider `name`.
    pub fn mock(&self, name: &str) -> Option<&MockUpstream> {
        self.mocks.get(name)
    }

    /// The stack (health, breakers, manual resets).
    pub fn stack(&self) -> &GatewayStack {
        &self.stack
    }

    /// Traffic counters since start.
    pub fn totals(&self) -> Totals {
        self.counters.totals()
    }

    /// Stop accepting connections, let in-flight requests finish, stop the mocks and save the
    /// health state if `[health] file` is set (returns the path written).
    pub async fn shutdown(mut self) -> Result<Option<PathBuf>, BoxError> {
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await??;
        let saved = self.stack.save_health()?;
        for (_, mock) in std::mem::take(&mut self.mocks) {
            mock.shutdown().await;
        }
        Ok(saved)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        self.server.abort();
    }
}

/// Print the status line to stderr once a second.
async fn status_task(stack: GatewayStack, counters: Arc<Counters>, metrics: PrometheusHandle) {
    let started = tokio::time::Instant::now();
    let mut previous = counters.totals();
    let mut last = started;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let totals = counters.totals();
        eprintln!(
            "{}",
            status_line(now - started, now - last, totals, previous, &stack.health())
        );
        metrics.run_upkeep();
        previous = totals;
        last = now;
    }
}

/// The offline demo: `rps` chat requests a second to the gateway itself, mostly for
/// `gpt-4o-mini`, every fourth for `broken-model`, every fifth streamed.
async fn demo_traffic(addr: SocketAddr, rps: u32, keys: Arc<ClientKeys>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let period = Duration::from_secs(1) / rps.max(1);
    let mut tick = tokio::time::interval(period);
    let auth = keys
        .first()
        .and_then(|k| http::HeaderValue::from_bytes(&[b"Bearer ".as_slice(), k].concat()).ok());
    for n in 0u64.. {
        tick.tick().await;
        let model = if n % 4 == 3 {
            "broken-model"
        } else {
            "gpt-4o-mini"
        };
        let stream = n % 5 == 4;
        let body = serde_json::json!({
            "model": model,
            "stream": stream,
            "messages": [{ "role": "user", "content": "Say hello." }],
        })
        .to_string();
        let mut req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &auth {
            req = req.header(http::header::AUTHORIZATION, auth.clone());
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(res) = client.request(req).await {
                let _ = res.into_body().collect().await;
            }
        });
    }
}
