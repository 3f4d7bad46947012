//! The declarative configuration of a tower-llm stack: providers, routes and policies, loaded
//! from TOML (the gateway's `workspace.toml` is one) or built in code.
//!
//! Every key is checked: an unknown key, a route that names a missing provider, a bad glob, a
//! negative or zero timeout, a rate outside `0..=1`, a value a layer's crate rejects: each is a
//! [`ConfigFileError`] that names the key (its full dotted path) and the line.
//!
//! ```
//! use tower_llm::config::StackConfig;
//!
//! let config = StackConfig::from_toml_str(r#"
//! [[providers]]
//! name = "primary"
//! base_url = "http://127.0.0.1:9101/v1"
//!
//! [[providers]]
//! name = "secondary"
//! base_url = "http://127.0.0.1:9102/v1"
//!
//! [[routes]]
//! match = "gpt-*"
//! targets = [
//!   { provider = "primary" },
//!   { provider = "secondary", model = "backup-model", attempt_timeout_ms = 5000 },
//! ]
//! "#).unwrap();
//! let route = config.route_for("gpt-4o").unwrap();
//! assert_eq!(route.targets[1].model.as_deref(), Some("backup-model"));
//!
//! let err = StackConfig::from_toml_str(r#"
//! [[routes]]
//! match = "*"
//! targets = [{ provider = "nowhere" }]
//! "#).unwrap_err();
//! assert_eq!(err.key(), "routes[0].targets[0].provider");
//! assert_eq!(err.line(), Some(4));
//! assert!(err.to_string().contains("no provider named `nowhere`"));
//!
//! let err = StackConfig::from_toml_str("[retry]\nmax_atempts = 3\n").unwrap_err();
//! assert_eq!(err.key(), "retry.max_atempts");
//! assert_eq!(err.line(), Some(2));
//!
//! // A value the breaker crate rejects is reported on the key that set it.
//! let err = StackConfig::from_toml_str("[breaker]\nmin_calls = 0\n").unwrap_err();
//! assert_eq!((err.key(), err.line()), ("breaker.min_calls", Some(2)));
//! ```
//!
//! A program that keeps its own settings in the same file takes them out with a
//! [`ConfigDocument`] before the library reads the rest.

mod document;
mod error;
mod keys;
pub(crate) mod layers;
mod pattern;
pub mod provider;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

pub use document::ConfigDocument;
pub use error::ConfigFileError;
pub use pattern::{ModelPattern, PatternError};
pub use provider::{
    ProviderKind, TlsRoots, ANTHROPIC_VERSION, AZURE_API_VERSION, DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_HTTP2, DEFAULT_POOL_IDLE_TIMEOUT_MS, DEFAULT_POOL_MAX_IDLE_PER_HOST,
    DEFAULT_TCP_KEEPALIVE_MS,
};
pub use schema::{
    BreakerSection, BulkheadSection, CacheSection, CooldownSection, EscalationSection,
    HealthSection, OnCorrupt, ProviderConfig, RequestSection, ResumeSetting, RetrySection,
    RouteConfig, SharedStateSection, StackConfig, StaticSection, StreamSection, TargetConfig,
    TierSelection,
};

impl StackConfig {
    /// The "standard" configuration for one provider (and optionally a fallback provider):
    /// the crates' defaults everywhere, one catch-all route whose first target (provider
    /// `primary`) passes the requested model through and whose second (provider `fallback`, if
    /// given) answers with `fallback_model`.
    ///
    /// ```
    /// use tower_llm::config::StackConfig;
    ///
    /// let config = StackConfig::standard(
    ///     "http://127.0.0.1:9101/v1",
    ///     Some(("http://127.0.0.1:9102/v1", "backup-model")),
    /// ).unwrap();
    /// assert_eq!(config.routes[0].targets.len(), 2);
    /// assert_eq!(config.breaker.consecutive_failures, 5);
    /// let err = StackConfig::standard("not a url", None).unwrap_err();
    /// assert_eq!(err.key(), "providers[0].base_url");
    /// ```
    pub fn standard(
        primary_url: &str,
        fallback: Option<(&str, &str)>,
    ) -> Result<Self, ConfigFileError> {
        let mut config = StackConfig::default();
        config.providers.push(ProviderConfig {
            base_url: Some(primary_url.to_owned()),
            ..ProviderConfig::new("primary")
        });
        let mut targets = vec![TargetConfig::new("primary")];
        if let Some((url, model)) = fallback {
            config.providers.push(ProviderConfig {
                base_url: Some(url.to_owned()),
                ..ProviderConfig::new("fallback")
            });
            targets.push(TargetConfig {
                model: Some(model.to_owned()),
                ..TargetConfig::new("fallback")
            });
        }
        config.routes.push(RouteConfig::new("*", targets));
        config.validate()?;
        Ok(config)
    }

    /// Parse and validate a TOML document that holds the library's schema only (see
    /// [`ConfigDocument`] for a file with sections of your own).
    pub fn from_toml_str(source: &str) -> Result<Self, ConfigFileError> {
        ConfigDocument::parse(source)?.into_stack_config()
    }

    /// Read, parse and validate a TOML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigFileError> {
        ConfigDocument::from_file(path)?.into_stack_config()
    }

    /// The first route whose glob matches `model`.
    pub fn route_for(&self, model: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.matches(model))
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// An error about `key` (a dotted path as in [`ConfigFileError::key`]), with the line of that
    /// key in the file this configuration was read from, when it is there.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigFileError {
        ConfigFileError::locate(self.source.as_ref().map(|s| &*s.0), key, message)
    }
}
