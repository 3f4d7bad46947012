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
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tower_llm::config::{ConfigDocument, ConfigFileError, StackConfig};

/// `[gateway]`: the proxy's listener, client keys, server-side timeouts and demo traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewaySection {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: String,
    /// Environment variable holding the comma-separated client keys; unset = no client auth.
    pub api_keys_env: Option<String>,
    /// How long a request may take until its response starts (for a stream, until its first
    /// event), in milliseconds; then the client gets an OpenAI-shaped 504. Default 120 000: the
    /// chain bounds each target's attempts (`attempt_timeout_ms`), so this is the backstop for
    /// a route with many slow targets, not the usual way a request ends. A stream's body is
    /// bounded by `[stream] total_ms`.
    pub request_timeout_ms: u64,
    /// How long the client may take to send its request body, in milliseconds, before it gets an
    /// OpenAI-shaped 408 (a client trickling its body holds a connection). Default 30 000.
    pub body_timeout_ms: u64,
    /// Requests per second the gateway sends itself, for the offline demo (0 = none).
    pub demo_requests_per_sec: u32,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: "127.0.0.1:8080".to_owned(),
            api_keys_env: None,
            request_timeout_ms: 120_000,
            body_timeout_ms: 30_000,
            demo_requests_per_sec: 0,
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
        Self::from_toml_str(&source)
    }

    /// Take `[gateway]` and the providers' `mock` keys out of `doc`, then read the rest as the
    /// library's configuration.
    pub fn from_document(mut doc: ConfigDocument) -> Result<Self, ConfigFileError> {
        let gateway: GatewaySection = doc.take_section("gateway")?.unwrap_or_default();
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
        ] {
            if value == 0 {
                return Err(doc.error_at(key, "must be at least 1 (milliseconds)"));
            }
        }
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
        })
    }

    /// The fault profile of provider `name`, when it is an embedded mock upstream.
    pub fn mock(&self, name: &str) -> Option<&str> {
        self.mocks
            .iter()
            .find(|(provider, _)| provider == name)
            .map(|(_, profile)| profile.as_str())
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
