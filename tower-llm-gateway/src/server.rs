//! Starting and stopping the gateway: the Prometheus recorder, embedded mock upstreams, the
//! stack, the axum server, the status line and the demo traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_llm::core::BoxError;
use tower_llm::{Stack, StackBuilder};
use tower_llm_chaos::{FaultProfile, MockUpstream};

use crate::auth::ClientKeys;
use crate::config::GatewayConfig;
use crate::demo::demo_traffic;
use crate::handlers::AppState;
use crate::metrics::prometheus_handle;
use crate::router::{router, Limits};
use crate::status::{status_task, Counters, Totals};

/// The gateway's stack: requests arrive as buffered bytes, upstream answers are hyper bodies.
pub type GatewayStack = Stack<Full<Bytes>, hyper::body::Incoming>;

/// How to run the gateway, beyond its configuration file.
///
/// ```
/// use tower_llm_gateway::GatewayOptions;
///
/// let options = GatewayOptions::new().listen("127.0.0.1:0".parse().unwrap()).quiet(true);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    listen: Option<SocketAddr>,
    quiet: bool,
}

impl GatewayOptions {
    /// The defaults: listen on `[gateway] listen`, print the status line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listen on `addr` instead of `[gateway] listen` (`127.0.0.1:0` picks a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// No status line on stderr.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }
}

/// A running gateway: started by [`Gateway::start`], stopped by [`Gateway::shutdown`] (or,
/// abruptly, by dropping it).
pub struct Gateway {
    addr: SocketAddr,
    stack: GatewayStack,
    mocks: BTreeMap<String, MockUpstream>,
    counters: Arc<Counters>,
    metrics: PrometheusHandle,
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

impl Gateway {
    /// Install the Prometheus recorder, start the embedded mock upstreams, build the stack and
    /// serve. Configuration problems (a bad mock profile, a missing API key variable) are errors
    /// naming the key and line; a listener that cannot bind is an I/O error.
    pub async fn start(
        config: GatewayConfig,
        options: GatewayOptions,
    ) -> Result<Gateway, BoxError> {
        // First: the stack's breakers register their metric handles when they are built (the
        // routes whose targets all name a model are built right below), with whatever recorder
        // is installed then.
        let metrics = prometheus_handle();
        let keys = Arc::new(client_keys(&config)?);

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

        let counters = Arc::new(Counters::default());
        let limits = Limits {
            max_body_bytes: config.stack.request.max_body_bytes,
            request_timeout: config.gateway.request_timeout(),
            body_timeout: config.gateway.body_timeout(),
        };
        let state = AppState {
            stack: stack.clone(),
            max_body_bytes: limits.max_body_bytes,
            body_timeout: limits.body_timeout,
            counters: Arc::clone(&counters),
            metrics: metrics.clone(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let app = router(state, Arc::clone(&keys), limits);

        let listener = TcpListener::bind(options.listen.unwrap_or(config.listen)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
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

        let mut background = vec![tokio::spawn(metrics_upkeep(metrics.clone()))];
        if !options.quiet {
            background.push(tokio::spawn(status_task(
                stack.clone(),
                Arc::clone(&counters),
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
            metrics,
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

    /// The Prometheus text `/metrics` serves.
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
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

/// The client keys named by `[gateway] api_keys_env` (none: authentication off).
fn client_keys(config: &GatewayConfig) -> Result<ClientKeys, BoxError> {
    let Some(var) = &config.gateway.api_keys_env else {
        return Ok(ClientKeys::default());
    };
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
    Ok(keys)
}

/// The exporter's periodic upkeep (drains histogram samples between scrapes).
async fn metrics_upkeep(metrics: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        metrics.run_upkeep();
    }
}
