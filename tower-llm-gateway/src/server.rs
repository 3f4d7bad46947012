//! Starting and stopping the gateway: the Prometheus recorder, client and admin keys (with the
//! [`security`](crate::security) check), embedded mock upstreams, the stack, the server (see
//! the server limits in [`GatewaySection`](crate::GatewaySection)), key reloads on SIGHUP, the
//! status line and the demo traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tower_llm::client::UpstreamClientBuilder;
use tower_llm::core::BoxError;
use tower_llm::{Stack, StackBuilder};
use tower_llm_chaos::{FaultProfile, MockUpstream};

use crate::auth::KeyStore;
use crate::config::GatewayConfig;
use crate::demo::demo_traffic;
use crate::handlers::AppState;
use crate::metrics::{prometheus_handle_with_idle_timeout, Telemetry};
use crate::reload::{KeyReload, KeyReloader};
use crate::router::{router, Limits};
use crate::security::{check_exposure, Exposure};
use crate::serve::{serve, ServeLimits};
use crate::status::{status_task, Counters, Totals};
use crate::telemetry::InjectTraceContext;

/// The gateway's stack: requests arrive as buffered bytes, upstream answers are the default
/// client's bodies (hyper's, their HTTP/1.1 connection driven by whoever reads them).
pub type GatewayStack = Stack<Full<Bytes>, tower_llm::client::UpstreamBody>;

/// How to run the gateway, beyond its configuration file.
///
/// ```
/// use tower_llm_gateway::GatewayOptions;
///
/// let options = GatewayOptions::new().listen("127.0.0.1:0".parse().unwrap()).quiet(true);
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    listen: Option<SocketAddr>,
    quiet: bool,
    reload_on_sighup: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            listen: None,
            quiet: false,
            reload_on_sighup: true,
        }
    }
}

impl GatewayOptions {
    /// The defaults: listen on `[gateway] listen`, print the status line, reload the keys on
    /// SIGHUP.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reload the client and admin keys on SIGHUP (Unix; default on). An embedder that keeps
    /// SIGHUP for itself turns it off and calls [`Gateway::reload_keys`].
    pub fn reload_on_sighup(mut self, reload: bool) -> Self {
        self.reload_on_sighup = reload;
        self
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
    metrics: Telemetry,
    keys: Arc<KeyReloader>,
    warnings: Vec<String>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
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
    /// Read the client and admin keys, refuse to serve real providers unauthenticated (see
    /// [`security`](crate::security)), install the Prometheus recorder, start the embedded mock
    /// upstreams, build the stack and serve. Configuration problems (a bad mock profile, a
    /// missing key variable or file, a refused start) are errors naming the key; a listener that
    /// cannot bind is an I/O error.
    pub async fn start(
        config: GatewayConfig,
        options: GatewayOptions,
    ) -> Result<Gateway, BoxError> {
        let client_keys = config.client_keys()?;
        let admin_keys = config.admin_keys()?;
        let listen = options.listen.unwrap_or(config.listen);
        let real = config.real_providers();
        let warning = check_exposure(&Exposure {
            real_providers: &real,
            keys: client_keys.enabled(),
            allow_unauthenticated: config.gateway.allow_unauthenticated,
            listen,
        })
        .map_err(|why| config.stack.error_at("gateway.allow_unauthenticated", why))?;
        let mut warnings = Vec::new();
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
            warnings.push(warning);
        }
        let demo_key = client_keys.demo_key().map(str::to_owned);
        let client = Arc::new(KeyStore::new(client_keys));
        let admin = Arc::new(KeyStore::new(admin_keys));

        // Before the stack: the stack's breakers register their metric handles when they are
        // built (the routes whose targets all name a model are built right below), with
        // whatever recorder is installed then. The first gateway of the process sets the idle
        // timeout.
        let metrics = prometheus_handle_with_idle_timeout(config.gateway.metrics_idle_timeout());

        let mut mocks = BTreeMap::new();
        // Answers are forwarded, not read: the chains' `FallbackReport` extension and the retry
        // layers' `Attempt` / `RetryAttempts` would be built for nothing (the `x-llm-target` and
        // `x-llm-fallback` headers name the answering target to clients; retries are counted
        // in the metrics and traces either way).
        let mut builder = StackBuilder::new(&config.stack)
            .fallback_reports(false)
            .retry_attempt_extensions(false);
        let mut upstream = UpstreamClientBuilder::new(&config.stack);
        for (name, profile) in &config.mocks {
            let profile =
                FaultProfile::parse(profile).map_err(|e| config.mock_error(name, e.to_string()))?;
            let mock = MockUpstream::builder()
                .profile(profile)
                .max_logged_attempts(config.gateway.mock_logged_attempts)
                .start()
                .await?;
            builder = builder.provider_url(name.clone(), mock.base_url());
            upstream = upstream.provider_url(name.clone(), mock.base_url());
            mocks.insert(name.clone(), mock);
        }
        // As `build_http`, with each attempt's `traceparent` set on its way out.
        let upstream = InjectTraceContext::new(upstream.build()?);
        let stack: GatewayStack = builder.build_with_client(upstream)?;
        let metrics = Telemetry::new(metrics, &stack);

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
            headers: config.headers.clone(),
            admin: Arc::clone(&admin),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            anonymous_answered: Arc::default(),
        };
        let app = router(state, Arc::clone(&client), limits);

        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let max_connections = usize::try_from(config.gateway.max_connections).unwrap_or(usize::MAX);
        let permits = Arc::new(Semaphore::new(max_connections));
        let (stop, stopped) = watch::channel(false);
        let serve_limits = ServeLimits {
            header_read_timeout: config.gateway.header_read_timeout(),
            grace: config.gateway.shutdown_grace(),
        };
        let server = tokio::spawn(serve(
            listener,
            app,
            serve_limits,
            Arc::clone(&permits),
            stopped,
        ));

        let rps = config.gateway.demo_requests_per_sec;
        let keys = Arc::new(KeyReloader::new(config, client, admin));
        let mut background = vec![tokio::spawn(metrics_upkeep(metrics.clone()))];
        if options.reload_on_sighup {
            if let Some(task) = crate::reload::on_sighup(Arc::clone(&keys)) {
                background.push(task);
            }
        }
        if !options.quiet {
            background.push(tokio::spawn(status_task(
                stack.clone(),
                Arc::clone(&counters),
            )));
        }
        if rps > 0 {
            background.push(tokio::spawn(demo_traffic(addr, rps, demo_key)));
        }
        Ok(Gateway {
            addr,
            stack,
            mocks,
            counters,
            metrics,
            keys,
            warnings,
            permits,
            max_connections,
            stop,
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

    /// The warnings logged at start (e.g. a non-loopback listener without client keys).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Connections open now (at most `[gateway] max_connections`).
    pub fn open_connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.permits.available_permits())
    }

    /// Read the client and admin keys again, as SIGHUP does: from the configuration file when
    /// the gateway was started from one ([`GatewayConfig::from_file`]: its `[gateway]` key
    /// settings, the variables and files they name), else from the same settings as at start.
    /// The new sets replace the old ones for the next requests; requests already let in are
    /// not affected. On error (an unreadable file, a bad entry, no client key left while keys
    /// were on: a reload never turns authentication off) the keys in use stay.
    pub fn reload_keys(&self) -> Result<KeyReload, BoxError> {
        self.keys.reload()
    }

    /// Key reloads that succeeded since start.
    pub fn key_reloads(&self) -> u64 {
        self.keys.reloads()
    }

    /// Stop accepting connections, let in-flight requests finish within `[gateway]
    /// shutdown_grace_ms` (then close their connections), stop the mocks and save the health
    /// state if `[health] file` is set (returns the path written).
    pub async fn shutdown(mut self) -> Result<Option<PathBuf>, BoxError> {
        for task in self.background.drain(..) {
            task.abort();
        }
        let _ = self.stop.send(true);
        (&mut self.server).await?;
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

/// The exporter's periodic upkeep (drains histogram samples between scrapes).
async fn metrics_upkeep(metrics: Telemetry) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        metrics.run_upkeep();
    }
}
