//! Provider presets (`kind = "openai"`, …) and per-provider connection settings.
//!
//! A preset fills in what a provider's documentation says: its OpenAI-compatible base URL, how
//! the key is sent, the environment variable it is usually kept in, and any header or query
//! parameter the provider requires. Every key written in `[[providers]]` wins over the preset.
//!
//! | `kind` | default `base_url` | key header | default `api_key_env` | also sent | documentation |
//! |---|---|---|---|---|---|
//! | `openai` | `https://api.openai.com/v1` | `Authorization: Bearer` | `OPENAI_API_KEY` | | <https://platform.openai.com/docs/api-reference/authentication> |
//! | `anthropic` | `https://api.anthropic.com/v1` | `x-api-key` | `ANTHROPIC_API_KEY` | `anthropic-version: 2023-06-01` | <https://platform.claude.com/docs/en/api/openai-sdk>, <https://docs.anthropic.com/en/api/versioning> |
//! | `azure` | none: your resource, `https://{resource}.openai.azure.com` | `api-key` | `AZURE_OPENAI_API_KEY` | `?api-version=2024-10-21`, deployment paths | <https://learn.microsoft.com/azure/ai-foundry/openai/reference>, <https://learn.microsoft.com/azure/ai-foundry/openai/api-version-lifecycle> |
//! | `gemini` | `https://generativelanguage.googleapis.com/v1beta/openai` | `Authorization: Bearer` | `GEMINI_API_KEY` | | <https://ai.google.dev/gemini-api/docs/openai> |
//! | `groq` | `https://api.groq.com/openai/v1` | `Authorization: Bearer` | `GROQ_API_KEY` | | <https://console.groq.com/docs/openai> |
//! | `openrouter` | `https://openrouter.ai/api/v1` | `Authorization: Bearer` | `OPENROUTER_API_KEY` | | <https://openrouter.ai/docs/quickstart> |
//! | `mistral` | `https://api.mistral.ai/v1` | `Authorization: Bearer` | `MISTRAL_API_KEY` | | <https://docs.mistral.ai/api/> |
//! | `vllm` | `http://localhost:8000/v1` | `Authorization: Bearer` | none (`vllm serve --api-key` is optional) | | <https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html> |
//! | `ollama` | `http://localhost:11434/v1` | `Authorization: Bearer` (if `api_key_env` is set) | none (a local Ollama ignores keys) | | <https://docs.ollama.com/api/openai-compatibility> |
//!
//! **Azure** has two request styles. With a base URL that ends in `/openai/v1` (the "v1 API",
//! `https://{resource}.openai.azure.com/openai/v1`) requests keep OpenAI's paths and need no
//! `api-version`. Otherwise (the deployment style, the default: `base_url` is the resource,
//! `https://{resource}.openai.azure.com`, with `/openai` added when it has no path) each
//! target's model names its deployment: `/v1/chat/completions` for model `gpt-4o` is sent to
//! `/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21` (`api_version` changes
//! the version).
//!
//! ```
//! use tower_llm::config::{ProviderKind, StackConfig};
//!
//! let config = StackConfig::from_toml_str(r#"
//! [[providers]]
//! name = "openai"
//! kind = "openai"
//!
//! [[providers]]
//! name = "claude"
//! kind = "anthropic"
//! api_key_env = "MY_CLAUDE_KEY"   # explicit keys win over the preset
//! http2 = true
//! connect_timeout_ms = 3000
//!
//! [[routes]]
//! match = "*"
//! targets = [{ provider = "openai" }, { provider = "claude", model = "claude-sonnet-4-5" }]
//! "#).unwrap();
//! let openai = config.provider("openai").unwrap();
//! assert_eq!(openai.resolved_base_url(None).as_deref(), Some("https://api.openai.com/v1"));
//! assert_eq!(openai.resolved_api_key_env(), Some("OPENAI_API_KEY"));
//! let claude = config.provider("claude").unwrap();
//! assert_eq!(claude.kind, Some(ProviderKind::Anthropic));
//! assert_eq!(claude.resolved_api_key_env(), Some("MY_CLAUDE_KEY"));
//! assert_eq!(claude.resolved_auth_header(), Some("x-api-key"));
//!
//! let err = StackConfig::from_toml_str(
//!     "[[providers]]\nname = \"p\"\nkind = \"openai\"\napi_version = \"2024-10-21\"\n",
//! ).unwrap_err();
//! assert_eq!(err.key(), "providers[0].api_version");
//! ```
//!
//! **Connection settings** (every provider, preset or not): `connect_timeout_ms` (TCP connect
//! and TLS handshake, default [`DEFAULT_CONNECT_TIMEOUT_MS`]), `pool_idle_timeout_ms` (an idle
//! pooled connection is closed after it, default [`DEFAULT_POOL_IDLE_TIMEOUT_MS`]),
//! `pool_max_idle_per_host` (default [`DEFAULT_POOL_MAX_IDLE_PER_HOST`], no limit; 0 keeps no
//! idle connection), `tcp_keepalive_ms` (TCP keep-alive idle time, default
//! [`DEFAULT_TCP_KEEPALIVE_MS`]; 0 turns it off), `http2` (offer HTTP/2 by ALPN on https, default
//! [`DEFAULT_HTTP2`], `false`: see there why; plain `http` is always HTTP/1.1), `tls_roots`
//! (`"webpki"`, Mozilla's roots bundled in the binary, the default; or `"native"`, the
//! platform's store) and `ca_file` (a PEM file of
//! extra trusted CAs, for private gateways and tests). Connections are pooled per client:
//! [`StackBuilder::build_http`](crate::stack::StackBuilder::build_http) builds one client for
//! each distinct set of these settings, shared by the providers that have it (see
//! [`client`](crate::client)).

use serde::Deserialize;

use super::schema::ProviderConfig;

/// Default `connect_timeout_ms`: TCP connect plus TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default `pool_idle_timeout_ms` (hyper-util's default, 90 s).
pub const DEFAULT_POOL_IDLE_TIMEOUT_MS: u64 = 90_000;
/// Default `pool_max_idle_per_host`: no limit (hyper-util's and reqwest's default). The pool
/// then holds as many connections as the host had answers in flight at its peak, each closed
/// after `pool_idle_timeout_ms` unused, so a burst finds the connections of the burst before
/// instead of opening them again: with HTTP/1.1, the https default, one connection carries one
/// answer at a time, and a new one to an https provider costs a TLS handshake (~1.1 M
/// instructions here, and a round trip or two before the request leaves). A limit below the
/// answers in flight (it was 32, under the bulkhead's default of 64 per target) made every
/// burst past it open the difference again.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = usize::MAX;
/// Default `tcp_keepalive_ms`: a dead peer under a long stream is noticed by the kernel.
pub const DEFAULT_TCP_KEEPALIVE_MS: u64 = 60_000;
/// Default `http2`: HTTP/1.1 to https upstreams, one connection per answer in flight, as the
/// providers' official SDKs connect. HTTP/2 (`http2 = true`) puts every answer to a host on one
/// connection: one reset or `GOAWAY` ends them all, and past the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (often 100–250) further requests wait for a stream to end,
/// which with minute-long streams is a stall (hyper-util's client opens no second connection).
/// It also costs more per request (measured in BENCHMARKS.md, "https upstreams").
pub const DEFAULT_HTTP2: bool = false;
/// The `api-version` an Azure provider sends unless `api_version` says otherwise: the latest GA
/// version of Azure OpenAI's data-plane inference API.
pub const AZURE_API_VERSION: &str = "2024-10-21";
/// The `anthropic-version` header an Anthropic provider sends.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `kind`: a provider preset (see the [module docs](crate::config::provider) for what each fills in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI.
    OpenAi,
    /// Anthropic's OpenAI SDK compatibility endpoint.
    Anthropic,
    /// Azure OpenAI (deployment paths and `api-version`, or the v1 API).
    Azure,
    /// Google's Gemini API, OpenAI compatibility endpoint.
    Gemini,
    /// Groq.
    Groq,
    /// OpenRouter.
    OpenRouter,
    /// Mistral AI.
    Mistral,
    /// A local vLLM server (`vllm serve`).
    Vllm,
    /// A local Ollama server.
    Ollama,
}

impl ProviderKind {
    /// The provider's OpenAI-compatible base URL (`None` for Azure: it is your resource's).
    pub fn default_base_url(self) -> Option<&'static str> {
        Some(match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com/v1",
            ProviderKind::Azure => return None,
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com/v1beta/openai",
            ProviderKind::Groq => "https://api.groq.com/openai/v1",
            ProviderKind::OpenRouter => "https://openrouter.ai/api/v1",
            ProviderKind::Mistral => "https://api.mistral.ai/v1",
            ProviderKind::Vllm => "http://localhost:8000/v1",
            ProviderKind::Ollama => "http://localhost:11434/v1",
        })
    }

    /// The environment variable the key is usually kept in (`None`: no key by default).
    pub fn default_api_key_env(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("OPENAI_API_KEY"),
            ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            ProviderKind::Azure => Some("AZURE_OPENAI_API_KEY"),
            ProviderKind::Gemini => Some("GEMINI_API_KEY"),
            ProviderKind::Groq => Some("GROQ_API_KEY"),
            ProviderKind::OpenRouter => Some("OPENROUTER_API_KEY"),
            ProviderKind::Mistral => Some("MISTRAL_API_KEY"),
            ProviderKind::Vllm | ProviderKind::Ollama => None,
        }
    }

    /// The header the key goes in (`None`: `Authorization: Bearer`).
    pub fn auth_header(self) -> Option<&'static str> {
        match self {
            ProviderKind::Anthropic => Some("x-api-key"),
            ProviderKind::Azure => Some("api-key"),
            _ => None,
        }
    }

    /// Headers every request to the provider carries (not credentials).
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ProviderKind::Anthropic => &[("anthropic-version", ANTHROPIC_VERSION)],
            _ => &[],
        }
    }
}

/// `tls_roots`: which certificate authorities an https provider's certificate may chain to (a
/// `ca_file` adds to them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsRoots {
    /// Mozilla's root program, bundled in the binary (`webpki-roots`): the same everywhere.
    #[default]
    Webpki,
    /// The platform's trust store (`rustls-native-certs`): what the machine's administrator
    /// trusts, corporate CAs included.
    Native,
}

impl ProviderConfig {
    /// The provider's base URL: `override_url` (a URL given to
    /// [`StackBuilder::provider_url`](crate::stack::StackBuilder::provider_url)), else
    /// `base_url`, else the preset's. An Azure base URL without a path gets `/openai`.
    pub fn resolved_base_url(&self, override_url: Option<&str>) -> Option<String> {
        let url = override_url
            .or(self.base_url.as_deref())
            .or_else(|| self.kind.and_then(ProviderKind::default_base_url))?;
        if self.kind == Some(ProviderKind::Azure) && override_url.is_none() {
            if let Ok(uri) = url.parse::<http::Uri>() {
                if matches!(uri.path(), "" | "/") {
                    return Some(format!("{}/openai", url.trim_end_matches('/')));
                }
            }
        }
        Some(url.to_owned())
    }

    /// The environment variable of the key: `api_key_env`, else the preset's.
    pub fn resolved_api_key_env(&self) -> Option<&str> {
        self.api_key_env
            .as_deref()
            .or_else(|| self.kind.and_then(ProviderKind::default_api_key_env))
    }

    /// The header of the key: `auth_header`, else the preset's (`None`: `Authorization: Bearer`).
    pub fn resolved_auth_header(&self) -> Option<&str> {
        self.auth_header
            .as_deref()
            .or_else(|| self.kind.and_then(ProviderKind::auth_header))
    }

    /// Azure's deployment style: the `api-version` to send (`None` for every other provider, and
    /// for an Azure base URL on the v1 API, `…/openai/v1`).
    pub(crate) fn azure_api_version(&self, base_url: &str) -> Option<&str> {
        if self.kind != Some(ProviderKind::Azure) {
            return None;
        }
        let path = base_url
            .parse::<http::Uri>()
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        if path.ends_with("/openai/v1") {
            return None;
        }
        Some(self.api_version.as_deref().unwrap_or(AZURE_API_VERSION))
    }
}

/// The checks of a provider's preset and connection keys, as `(key, message)`.
pub(super) fn check(i: usize, p: &ProviderConfig) -> Result<(), (String, String)> {
    let key = |field: &str| format!("providers[{i}].{field}");
    if let Some(version) = &p.api_version {
        if p.kind != Some(ProviderKind::Azure) {
            return Err((
                key("api_version"),
                "only an Azure provider (`kind = \"azure\"`) takes an `api_version`".into(),
            ));
        }
        let query_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if version.is_empty() || !version.chars().all(query_safe) {
            return Err((
                key("api_version"),
                format!("`{version}` is not an API version (letters, digits, `-`, `.`, `_`)"),
            ));
        }
    }
    for (field, value) in [
        ("connect_timeout_ms", p.connect_timeout_ms),
        ("pool_idle_timeout_ms", p.pool_idle_timeout_ms),
    ] {
        if value == Some(0) {
            return Err((key(field), "must be greater than zero".into()));
        }
    }
    if p.ca_file.as_deref() == Some("") {
        return Err((key("ca_file"), "must name a PEM file".into()));
    }
    Ok(())
}
