//! The gateway's configuration: its own `[gateway]` table and each provider's `mock` profile,
//! taken out of the file with [`ConfigDocument`]; the rest is the library's [`StackConfig`].
//!
//! ```
//! use tower_llm_gateway::GatewayConfig;
//!
//! let config = GatewayConfig::from_toml_str(r#"
//! [gateway]
//! listen = "127.0.0.1:9000"
//!
//! [[providers]]
//! name = "local"
//! mock = "healthy"
//!
//! [[routes]]
//! match = "*"
//! targets = [{ provider = "local" }]
//! "#).unwrap();
//! assert_eq!(config.listen.port(), 9000);
//! assert_eq!(config.mock("local"), Some("healthy"));
//! assert_eq!(config.gateway.request_timeout_ms, 120_000);
//!
//! // Errors name the key and its line.
//! let err = GatewayConfig::from_toml_str("[gateway]\nlisten = \"localhost\"\n").unwrap_err();
//! assert_eq!((err.key(), err.line()), ("gateway.listen", Some(2)));
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tower_llm::config::{ConfigDocument, ConfigFileError, StackConfig};

use crate::auth::{ClientKeys, KeyError};
use crate::headers::{check_request_header, check_response_header, HeaderPolicy};
use crate::telemetry::TelemetrySection;

/// The keys of a `[[gateway.keys]]`-like table, or the index of the bad entry and why.
fn hashed_keys(list: &[HashedKey]) -> Result<ClientKeys, (usize, KeyError)> {
    let mut keys = ClientKeys::default();
    for (i, key) in list.iter().enumerate() {
        keys.add_hashed(&key.name, &key.sha256)
            .map_err(|e| (i, e))?;
    }
    Ok(keys)
}

/// Shortest non-zero `[gateway] metrics_idle_timeout_ms` (a shorter one would drop series
/// between two scrapes).
pub const MIN_METRICS_IDLE_TIMEOUT_MS: u64 = 1000;

/// Largest `[gateway] demo_requests_per_sec`.
pub const MAX_DEMO_REQUESTS_PER_SEC: u32 = 10_000;

/// One `[[gateway.keys]]` (or `[[gateway.admin_keys]]`) entry: a key known by its SHA-256 only,
/// so the file can be committed.
///
/// ```toml
/// [[gateway.keys]]
/// name = "billing-service"
/// sha256 = "9b94dc1a51a38769f135edf04033ad7f2f487b6c25929be7a861cfc1ab10cf98"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HashedKey {
    /// The name in logs and metrics (letters, digits, `_`, `-`, `.`; at most 64 bytes).
    pub name: String,
    /// The key's SHA-256, 64 hex digits (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
}

/// `[gateway]`: the proxy's listener, client and admin keys, header policy, server limits and
/// demo traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewaySection {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: String,
    /// Environment variable holding client keys, comma-separated: `KEY`, `sha256:<hex>`, or
    /// either after `NAME=` (see [`ClientKeys::parse`]).
    pub api_keys_env: Option<String>,
    /// File of client keys, one entry per line in the same format (`#` comments); re-read on
    /// SIGHUP. A relative path is relative to the working directory.
    pub api_keys_file: Option<String>,
    /// Client keys by digest (`[[gateway.keys]]`, committable).
    pub keys: Vec<HashedKey>,
    /// Serve real providers (a `base_url`) to clients without keys. Without client keys and
    /// without this, the gateway refuses to start in front of a real provider. Default false.
    pub allow_unauthenticated: bool,
    /// Environment variable of admin keys (same format as `api_keys_env`); with admin keys set,
    /// `/metrics` needs one and `/health` without one shows only the overall status.
    pub admin_keys_env: Option<String>,
    /// File of admin keys, as `api_keys_file`.
    pub admin_keys_file: Option<String>,
    /// Admin keys by digest (`[[gateway.admin_keys]]`).
    pub admin_keys: Vec<HashedKey>,
    /// Client headers forwarded upstream besides the defaults (see [`crate::headers`]).
    pub forward_request_headers: Vec<String>,
    /// Upstream headers forwarded to clients besides the defaults (see [`crate::headers`]).
    pub forward_response_headers: Vec<String>,
    /// How long a request may take until its response starts (for a stream, until its first
    /// event), in milliseconds; then the client gets an OpenAI-shaped 504. Default 120 000: the
    /// chain bounds each target's attempts (`attempt_timeout_ms`), so this is the backstop for
    /// a route with many slow targets, not the usual way a request ends. A stream's body is
    /// bounded by `[stream] total_ms`.
    pub request_timeout_ms: u64,
    /// How long the client may take to send its request body, in milliseconds, before it gets an
    /// OpenAI-shaped 408 (a client trickling its body holds a connection). Default 30 000.
    pub body_timeout_ms: u64,
    /// How long a connection may wait for a complete request head, in milliseconds: from the
    /// connection's start, and on a keep-alive connection from the end of the previous answer,
    /// so this is also the keep-alive idle limit. Then the connection is closed. Default 30 000.
    pub header_read_timeout_ms: u64,
    /// Connections served at once (default 1024). Past it the gateway stops accepting: new
    /// connections wait in the kernel's backlog until one closes.
    pub max_connections: u32,
    /// On shutdown, how long in-flight requests may take to finish, in milliseconds (default
    /// 10 000); then their connections are closed, the health state is saved and the gateway
    /// stops.
    pub shutdown_grace_ms: u64,
    /// Requests each embedded mock upstream keeps in its attempt log (default 1000; the oldest
    /// are dropped).
    pub mock_logged_attempts: usize,
    /// Requests per second the gateway sends itself, for the offline demo (0 = none, at most
    /// 10 000). With client keys on, it presents the first key given raw (keys given only by
    /// digest: its requests get 401).
    pub demo_requests_per_sec: u32,
    /// How long a metric series may go without an update before `/metrics` drops it, in
    /// milliseconds (default `0`: keep every series; else at least 1000). Pass-through targets
    /// are created per requested model and evicted beyond 256 per route: without a timeout the
    /// series of every evicted target stay in the registry for good. The other side, and why it
    /// is off by default: a series whose handle a live target holds (its breaker's) does not
    /// come back after it was dropped, and the breaker's state gauge changes only on
    /// transitions, so a healthy breaker's state would leave `/metrics` after the timeout.
    /// Read once per process, by the first gateway to start (the recorder is process-global).
    pub metrics_idle_timeout_ms: u64,
    /// How the `tower-llm-gateway` binary writes its logs: `"text"` (default, human-readable
    /// lines on stderr) or `"json"` (one JSON object per line on stdout, for a log shipper). The
    /// command line's `--log-format` wins. Read by the binary's `cli` module; an embedder that
    /// starts a [`Gateway`](crate::Gateway) itself sets up its own subscriber.
    pub log_format: LogFormat,
}

/// `[gateway] log_format`: how the binary writes its logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines on stderr, next to the status line.
    #[default]
    Text,
    /// One JSON object per line on stdout (`timestamp`, `level`, `target`, `fields.message`
    /// and the event's other fields), leaving stderr to the status line.
    Json,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: "127.0.0.1:8080".to_owned(),
            api_keys_env: None,
            api_keys_file: None,
            keys: Vec::new(),
            allow_unauthenticated: false,
            admin_keys_env: None,
            admin_keys_file: None,
            admin_keys: Vec::new(),
            forward_request_headers: Vec::new(),
            forward_response_headers: Vec::new(),
            request_timeout_ms: 120_000,
            body_timeout_ms: 30_000,
            header_read_timeout_ms: 30_000,
            max_connections: 1024,
            shutdown_grace_ms: 10_000,
            mock_logged_attempts: 1000,
            demo_requests_per_sec: 0,
            metrics_idle_timeout_ms: 0,
            log_format: LogFormat::Text,
        }
    }
}

impl GatewaySection {
    /// [`request_timeout_ms`](Self::request_timeout_ms) as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`body_timeout_ms`](Self::body_timeout_ms) as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// [`header_read_timeout_ms`](Self::header_read_timeout_ms) as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`metrics_idle_timeout_ms`](Self::metrics_idle_timeout_ms) as a duration; `None` (keep
    /// forever) for 0.
    pub fn metrics_idle_timeout(&self) -> Option<Duration> {
        (self.metrics_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(self.metrics_idle_timeout_ms))
    }

    /// [`shutdown_grace_ms`](Self::shutdown_grace_ms) as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// The whole gateway configuration: `[gateway]`, the mock providers and the library's part.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// `[gateway]`.
    pub gateway: GatewaySection,
    /// `[gateway] listen`, parsed.
    pub listen: SocketAddr,
    /// `(provider, fault profile)` of each provider served by an embedded mock upstream
    /// (`mock = "..."`, in the grammar of `tower-llm-chaos`), in the file's order.
    pub mocks: Vec<(String, String)>,
    /// The library's part: providers, routes, policies.
    pub stack: StackConfig,
    /// The header policy of `[gateway] forward_request_headers` / `forward_response_headers`.
    pub headers: HeaderPolicy,
    /// The file this configuration was read from ([`from_file`](Self::from_file)); a key reload
    /// re-reads its key settings.
    pub source_path: Option<PathBuf>,
    /// `[telemetry]`: the optional OTLP trace exporter (see [`crate::telemetry`]).
    pub telemetry: TelemetrySection,
}

impl GatewayConfig {
    /// Parse and validate a TOML document.
    pub fn from_toml_str(source: &str) -> Result<Self, ConfigFileError> {
        Self::from_document(ConfigDocument::parse(source)?)
    }

    /// Read, parse and validate a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigFileError::new("", None, format!("cannot read {}: {e}", path.display()))
        })?;
        let mut config = Self::from_toml_str(&source)?;
        config.source_path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Take `[gateway]` and the providers' `mock` keys out of `doc`, then read the rest as the
    /// library's configuration.
    pub fn from_document(mut doc: ConfigDocument) -> Result<Self, ConfigFileError> {
        let gateway: GatewaySection = doc.take_section("gateway")?.unwrap_or_default();
        let telemetry: TelemetrySection = doc.take_section("telemetry")?.unwrap_or_default();
        telemetry
            .check()
            .map_err(|(key, why)| doc.error_at(key, why))?;
        let mocks: Vec<(String, String)> = doc.take_provider_keys("mock")?;
        let listen = gateway.listen.parse().map_err(|_| {
            doc.error_at(
                "gateway.listen",
                format!("`{}` is not an address like 127.0.0.1:8080", gateway.listen),
            )
        })?;
        for (key, value) in [
            ("gateway.request_timeout_ms", gateway.request_timeout_ms),
            ("gateway.body_timeout_ms", gateway.body_timeout_ms),
            (
                "gateway.header_read_timeout_ms",
                gateway.header_read_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(doc.error_at(key, "must be at least 1 (milliseconds)"));
            }
        }
        if (1..MIN_METRICS_IDLE_TIMEOUT_MS).contains(&gateway.metrics_idle_timeout_ms) {
            return Err(doc.error_at(
                "gateway.metrics_idle_timeout_ms",
                format!(
                    "must be 0 (keep every series) or at least {MIN_METRICS_IDLE_TIMEOUT_MS} (milliseconds)"
                ),
            ));
        }
        if gateway.max_connections == 0 {
            return Err(doc.error_at("gateway.max_connections", "must be at least 1"));
        }
        if gateway.demo_requests_per_sec > MAX_DEMO_REQUESTS_PER_SEC {
            return Err(doc.error_at(
                "gateway.demo_requests_per_sec",
                format!(
                    "{} is more than the demo's limit of {MAX_DEMO_REQUESTS_PER_SEC} requests a second",
                    gateway.demo_requests_per_sec
                ),
            ));
        }
        for (key, list) in [
            ("gateway.keys", &gateway.keys),
            ("gateway.admin_keys", &gateway.admin_keys),
        ] {
            hashed_keys(list)
                .map_err(|(i, e)| doc.error_at(&format!("{key}[{i}]"), e.to_string()))?;
        }
        let request: Vec<&str> = gateway
            .forward_request_headers
            .iter()
            .map(String::as_str)
            .collect();
        let response: Vec<&str> = gateway
            .forward_response_headers
            .iter()
            .map(String::as_str)
            .collect();
        for (i, name) in request.iter().enumerate() {
            check_request_header(name)
                .map_err(|e| doc.error_at(&format!("gateway.forward_request_headers[{i}]"), e))?;
        }
        for (i, name) in response.iter().enumerate() {
            check_response_header(name)
                .map_err(|e| doc.error_at(&format!("gateway.forward_response_headers[{i}]"), e))?;
        }
        let headers =
            HeaderPolicy::new(&request, &response).map_err(|e| doc.error_at("gateway", e))?;
        let stack = doc.into_stack_config()?;
        for (i, provider) in stack.providers.iter().enumerate() {
            let mock = mocks.iter().any(|(name, _)| *name == provider.name);
            match (&provider.base_url, mock) {
                (None, false) => {
                    return Err(stack.error_at(
                        &format!("providers[{i}]"),
                        format!("provider `{}` needs `base_url` or `mock`", provider.name),
                    ))
                }
                (Some(_), true) => {
                    return Err(stack.error_at(
                        &format!("providers[{i}].mock"),
                        "set either `base_url` or `mock`, not both",
                    ))
                }
                _ => {}
            }
        }
        Ok(GatewayConfig {
            gateway,
            listen,
            mocks,
            stack,
            headers,
            source_path: None,
            telemetry,
        })
    }

    /// The fault profile of provider `name`, when it is an embedded mock upstream.
    pub fn mock(&self, name: &str) -> Option<&str> {
        self.mocks
            .iter()
            .find(|(provider, _)| provider == name)
            .map(|(_, profile)| profile.as_str())
    }

    /// The providers that are real upstreams (a `base_url`, not an embedded `mock`).
    pub fn real_providers(&self) -> Vec<&str> {
        self.stack
            .providers
            .iter()
            .filter(|p| p.base_url.is_some())
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The client keys: `[gateway] api_keys_env`, `api_keys_file` and `[[gateway.keys]]`
    /// together (empty: none configured). A variable or file that is named but missing, empty
    /// or malformed is an error naming its key.
    pub fn client_keys(&self) -> Result<ClientKeys, ConfigFileError> {
        let g = &self.gateway;
        self.load_keys(
            ("gateway.api_keys_env", g.api_keys_env.as_deref()),
            ("gateway.api_keys_file", g.api_keys_file.as_deref()),
            ("gateway.keys", &g.keys),
        )
    }

    /// The admin keys: `[gateway] admin_keys_env`, `admin_keys_file` and
    /// `[[gateway.admin_keys]]` together (empty: `/health` and `/metrics` are open).
    pub fn admin_keys(&self) -> Result<ClientKeys, ConfigFileError> {
        let g = &self.gateway;
        self.load_keys(
            ("gateway.admin_keys_env", g.admin_keys_env.as_deref()),
            ("gateway.admin_keys_file", g.admin_keys_file.as_deref()),
            ("gateway.admin_keys", &g.admin_keys),
        )
    }

    fn load_keys(
        &self,
        env: (&str, Option<&str>),
        file: (&str, Option<&str>),
        table: (&str, &[HashedKey]),
    ) -> Result<ClientKeys, ConfigFileError> {
        let mut keys = hashed_keys(table.1).map_err(|(i, e)| {
            self.stack
                .error_at(&format!("{}[{i}]", table.0), e.to_string())
        })?;
        if let (key, Some(var)) = env {
            let list = std::env::var(var).map_err(|_| {
                self.stack
                    .error_at(key, format!("environment variable `{var}` is not set"))
            })?;
            let found = ClientKeys::parse(&list).map_err(|e| {
                self.stack
                    .error_at(key, format!("environment variable `{var}`: {e}"))
            })?;
            if found.is_empty() {
                return Err(self
                    .stack
                    .error_at(key, format!("environment variable `{var}` holds no key")));
            }
            keys.extend(found)
                .map_err(|e| self.stack.error_at(key, format!("`{var}`: {e}")))?;
        }
        if let (key, Some(path)) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| self.stack.error_at(key, format!("cannot read {path}: {e}")))?;
            let found = ClientKeys::parse_lines(&text)
                .map_err(|e| self.stack.error_at(key, format!("{path}: {e}")))?;
            if found.is_empty() {
                return Err(self.stack.error_at(key, format!("{path} holds no key")));
            }
            keys.extend(found)
                .map_err(|e| self.stack.error_at(key, format!("{path}: {e}")))?;
        }
        Ok(keys)
    }

    /// An error about provider `name`'s `mock` key, with its line.
    pub fn mock_error(&self, name: &str, message: impl Into<String>) -> ConfigFileError {
        let index = self
            .stack
            .providers
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_default();
        self.stack
            .error_at(&format!("providers[{index}].mock"), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_idle_timeout_is_validated_and_zero_keeps_series() {
        let config = GatewayConfig::from_toml_str("[gateway]\n").unwrap();
        assert_eq!(config.gateway.metrics_idle_timeout(), None);
        let config =
            GatewayConfig::from_toml_str("[gateway]\nmetrics_idle_timeout_ms = 600000\n").unwrap();
        assert_eq!(
            config.gateway.metrics_idle_timeout(),
            Some(Duration::from_secs(600))
        );
        let config =
            GatewayConfig::from_toml_str("[gateway]\nmetrics_idle_timeout_ms = 0\n").unwrap();
        assert_eq!(config.gateway.metrics_idle_timeout(), None);
        let err =
            GatewayConfig::from_toml_str("[gateway]\nmetrics_idle_timeout_ms = 10\n").unwrap_err();
        assert_eq!(
            (err.key(), err.line()),
            ("gateway.metrics_idle_timeout_ms", Some(2))
        );
        assert!(err.to_string().contains("at least 1000"), "{err}");
    }

    #[test]
    fn log_format_is_text_by_default_and_names_its_key_when_wrong() {
        let config = GatewayConfig::from_toml_str("[gateway]\n").unwrap();
        assert_eq!(config.gateway.log_format, LogFormat::Text);
        let config = GatewayConfig::from_toml_str("[gateway]\nlog_format = \"json\"\n").unwrap();
        assert_eq!(config.gateway.log_format, LogFormat::Json);
        let err = GatewayConfig::from_toml_str("[gateway]\nlog_format = \"yaml\"\n").unwrap_err();
        assert_eq!((err.key(), err.line()), ("gateway.log_format", Some(2)));
        assert!(err.to_string().contains("json"), "{err}");
    }
}
