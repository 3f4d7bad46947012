//! The declarative configuration of a tower-llm stack: providers, routes and policies, loaded
//! from TOML (the gateway's `workspace.toml`).
//!
//! Every key is checked: an unknown key, a route that names a missing provider, a bad glob, a
//! negative timeout or a rate outside `0..=1` is rejected with an error that names the key and
//! the line.
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
//! mock = "healthy"
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
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// A configuration file was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFileError {
    key: String,
    line: Option<usize>,
    message: String,
}

impl ConfigFileError {
    fn at(source: &str, key: impl Into<String>, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        ConfigFileError {
            key: key.into(),
            line: span.map(|s| line_of(source, s.start)),
            message: message.into(),
        }
    }

    /// The dotted path of the offending key (`routes[0].targets[1].provider`), or `""` when the
    /// file could not be parsed far enough to tell.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The 1-based line of the offending value, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            (false, None) => write!(f, "`{}`: {}", self.key, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}

fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The whole configuration: `[gateway]`, `[[providers]]`, `[[routes]]` and the policy sections.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// The gateway's own settings (ignored by library users).
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Upstream providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Routes by requested model; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Streaming limits.
    #[serde(default)]
    pub stream: StreamSection,
    /// Circuit breaker per target.
    #[serde(default)]
    pub breaker: BreakerSection,
    /// Retries per target.
    #[serde(default)]
    pub retry: RetrySection,
    /// Concurrency and client-side rate limits per target.
    #[serde(default)]
    pub bulkhead: BulkheadSection,
    /// Cooldowns per target by error kind.
    #[serde(default)]
    pub cooldown: CooldownSection,
    /// The cache tier.
    #[serde(default)]
    pub cache: CacheSection,
    /// The static tier: an answer of last resort.
    #[serde(default, rename = "static")]
    pub static_answer: StaticSection,
    /// When and where failures are escalated.
    #[serde(default)]
    pub escalation: EscalationSection,
    /// Health persistence across restarts.
    #[serde(default)]
    pub health: HealthSection,
}

/// `[gateway]`: the proxy's listener and client-facing limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Environment variable holding the comma-separated client keys; unset = no client auth.
    #[serde(default)]
    pub api_keys_env: Option<String>,
    /// Largest request body accepted (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: default_listen(),
            api_keys_env: None,
            max_body_bytes: default_max_body(),
        }
    }
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_owned())
}

fn default_max_body() -> u64 {
    4 * 1024 * 1024
}

/// `[[providers]]`: one upstream, real (`base_url`) or embedded (`mock`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider's name, used by routes and in `x-llm-target`.
    pub name: Spanned<String>,
    /// Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    #[serde(default)]
    pub base_url: Option<Spanned<String>>,
    /// A scripted fault profile for an embedded mock upstream (see `tower-llm-chaos`).
    #[serde(default)]
    pub mock: Option<Spanned<String>>,
    /// Environment variable holding the API key, sent upstream as a Bearer token.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Header the key goes in (`authorization` sends `Bearer <key>`; any other header gets the
    /// bare key, e.g. `x-api-key`).
    #[serde(default)]
    pub auth_header: Option<String>,
}

/// `[[routes]]`: which targets serve the models a glob matches.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Glob on the requested model (`*`, `?`, `[abc]`).
    #[serde(rename = "match")]
    pub pattern: Spanned<String>,
    /// Targets in order of preference.
    pub targets: Vec<TargetConfig>,
    /// Serve cached answers when every target failed (needs `[cache] enabled`).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Serve the static answer when nothing else answered (needs `[static] content`).
    #[serde(default = "yes")]
    pub static_answer: bool,
    #[serde(skip)]
    compiled: Option<glob::Pattern>,
}

fn yes() -> bool {
    true
}

/// One entry of a route's `targets`: a provider plus an upstream model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The provider's name.
    pub provider: Spanned<String>,
    /// Upstream model; absent = the requested model passes through.
    #[serde(default)]
    pub model: Option<String>,
    /// Timeout of one attempt on this target (non-streaming), in milliseconds.
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// Tier: targets of the same tier share load; tiers are tried in order. Defaults to the
    /// target's position.
    #[serde(default)]
    pub tier: Option<u32>,
    /// Weight inside its tier.
    #[serde(default = "one")]
    pub weight: u32,
    /// Context window in tokens: a context-length failure moves only to larger targets.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Cap on `max_tokens` sent to this target.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Cap on `temperature` sent to this target.
    #[serde(default)]
    pub temperature: Option<Spanned<f64>>,
    /// The target accepts an assistant prefill, so a cut stream may continue on it.
    #[serde(default)]
    pub supports_prefill: bool,
}

fn one() -> u32 {
    1
}

/// `[stream]`: limits on streamed answers, in milliseconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    /// Time to the first event.
    #[serde(default = "d_ttft")]
    pub ttft_ms: u64,
    /// Longest gap between events.
    #[serde(default = "d_idle")]
    pub idle_ms: u64,
    /// Whole stream.
    #[serde(default = "d_total")]
    pub total_ms: u64,
}

impl Default for StreamSection {
    fn default() -> Self {
        StreamSection {
            ttft_ms: d_ttft(),
            idle_ms: d_idle(),
            total_ms: d_total(),
        }
    }
}

fn d_ttft() -> u64 {
    10_000
}
fn d_idle() -> u64 {
    30_000
}
fn d_total() -> u64 {
    120_000
}

/// `[breaker]`: one circuit breaker per target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Whether breakers are used.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failure rate (0..=1) over the window that opens the breaker.
    #[serde(default = "d_rate")]
    pub failure_rate: Spanned<f64>,
    /// Window size in calls.
    #[serde(default = "d_window")]
    pub window: u32,
    /// Calls needed in the window before the rate counts.
    #[serde(default = "d_min_calls")]
    pub min_calls: u32,
    /// Consecutive failures that open the breaker (0 = off).
    #[serde(default = "d_consecutive")]
    pub consecutive_failures: u32,
    /// First open duration, doubled per re-open.
    #[serde(default = "d_open")]
    pub open_ms: u64,
    /// Cap on the open duration.
    #[serde(default = "d_open_max")]
    pub max_open_ms: u64,
    /// Probes admitted in half-open.
    #[serde(default = "d_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            enabled: true,
            failure_rate: d_rate(),
            window: d_window(),
            min_calls: d_min_calls(),
            consecutive_failures: d_consecutive(),
            open_ms: d_open(),
            max_open_ms: d_open_max(),
            half_open_probes: d_probes(),
        }
    }
}

fn d_rate() -> Spanned<f64> {
    Spanned::new(0..0, 0.5)
}
fn d_window() -> u32 {
    20
}
fn d_min_calls() -> u32 {
    10
}
fn d_consecutive() -> u32 {
    5
}
fn d_open() -> u64 {
    5_000
}
fn d_open_max() -> u64 {
    60_000
}
fn d_probes() -> u32 {
    2
}

/// `[retry]`: retries on the same target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Whether retries are used.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Attempts per target, the first included.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// Base of the decorrelated-jitter backoff.
    #[serde(default = "d_base")]
    pub base_ms: u64,
    /// Cap on one backoff.
    #[serde(default = "d_max_delay")]
    pub max_delay_ms: u64,
    /// Longest server-requested delay honoured; above it the target is given up.
    #[serde(default = "d_server_delay")]
    pub max_server_delay_ms: u64,
    /// Retries allowed as a fraction (0..=1) of first attempts.
    #[serde(default = "d_budget")]
    pub budget_ratio: Spanned<f64>,
    /// Retries always allowed per second.
    #[serde(default = "d_floor")]
    pub budget_floor_per_sec: u32,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            enabled: true,
            max_attempts: d_attempts(),
            base_ms: d_base(),
            max_delay_ms: d_max_delay(),
            max_server_delay_ms: d_server_delay(),
            budget_ratio: d_budget(),
            budget_floor_per_sec: d_floor(),
        }
    }
}

fn d_attempts() -> u32 {
    3
}
fn d_base() -> u64 {
    250
}
fn d_max_delay() -> u64 {
    8_000
}
fn d_server_delay() -> u64 {
    60_000
}
fn d_budget() -> Spanned<f64> {
    Spanned::new(0..0, 0.2)
}
fn d_floor() -> u32 {
    5
}

/// `[bulkhead]`: isolation and client-side limits per target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadSection {
    /// Whether the bulkhead is used.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Calls in flight per target.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: u32,
    /// Calls waiting per target.
    #[serde(default = "d_queued")]
    pub max_queued: u32,
    /// Longest wait for a slot.
    #[serde(default = "d_wait")]
    pub max_wait_ms: u64,
    /// Requests per minute per target (absent = unlimited).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute per target (absent = unlimited).
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

impl Default for BulkheadSection {
    fn default() -> Self {
        BulkheadSection {
            enabled: true,
            max_in_flight: d_in_flight(),
            max_queued: d_queued(),
            max_wait_ms: d_wait(),
            requests_per_minute: None,
            tokens_per_minute: None,
        }
    }
}

fn d_in_flight() -> u32 {
    64
}
fn d_queued() -> u32 {
    128
}
fn d_wait() -> u64 {
    1_000
}

/// `[cooldown]`: how long a target is skipped after a failure, by kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooldownSection {
    /// After a rate limit without a server delay.
    #[serde(default = "d_cd_rate")]
    pub rate_limited_ms: u64,
    /// After a timeout.
    #[serde(default = "d_cd_timeout")]
    pub timeout_ms: u64,
    /// First cooldown after an unknown failure (doubling).
    #[serde(default = "d_cd_unknown")]
    pub unknown_base_ms: u64,
    /// Cap for unknown failures.
    #[serde(default = "d_cd_unknown_max")]
    pub unknown_max_ms: u64,
}

impl Default for CooldownSection {
    fn default() -> Self {
        CooldownSection {
            rate_limited_ms: d_cd_rate(),
            timeout_ms: d_cd_timeout(),
            unknown_base_ms: d_cd_unknown(),
            unknown_max_ms: d_cd_unknown_max(),
        }
    }
}

fn d_cd_rate() -> u64 {
    60_000
}
fn d_cd_timeout() -> u64 {
    30_000
}
fn d_cd_unknown() -> u64 {
    5_000
}
fn d_cd_unknown_max() -> u64 {
    80_000
}

/// `[cache]`: successful answers kept to serve when every target failed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Whether the cache tier is used.
    #[serde(default)]
    pub enabled: bool,
    /// Entries kept at most.
    #[serde(default = "d_entries")]
    pub max_entries: u32,
    /// Bytes kept at most.
    #[serde(default = "d_bytes")]
    pub max_bytes: u64,
    /// Age after which an entry is not served.
    #[serde(default = "d_ttl")]
    pub ttl_ms: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: false,
            max_entries: d_entries(),
            max_bytes: d_bytes(),
            ttl_ms: d_ttl(),
        }
    }
}

fn d_entries() -> u32 {
    1_000
}
fn d_bytes() -> u64 {
    16 * 1024 * 1024
}
fn d_ttl() -> u64 {
    3_600_000
}

/// `[static]`: the answer of last resort.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSection {
    /// The answer's text; absent = no static tier.
    #[serde(default)]
    pub content: Option<String>,
}

/// `[escalation]`: when a person should look.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationSection {
    /// Directory for JSON escalation records; absent = log only.
    #[serde(default)]
    pub dir: Option<String>,
    /// Escalate when one error kind repeats this many times in a row.
    #[serde(default = "d_repeat")]
    pub repeated_kind: u32,
    /// Escalate when failures within `window_ms` exceed this.
    #[serde(default = "d_window_failures")]
    pub window_failures: u32,
    /// The window for `window_failures`.
    #[serde(default = "d_escalation_window")]
    pub window_ms: u64,
}

impl Default for EscalationSection {
    fn default() -> Self {
        EscalationSection {
            dir: None,
            repeated_kind: d_repeat(),
            window_failures: d_window_failures(),
            window_ms: d_escalation_window(),
        }
    }
}

fn d_repeat() -> u32 {
    5
}
fn d_window_failures() -> u32 {
    20
}
fn d_escalation_window() -> u64 {
    60_000
}

/// `[health]`: health persistence.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// JSON file the health state is saved to on shutdown and restored from at start.
    #[serde(default)]
    pub file: Option<String>,
}

impl StackConfig {
    /// Parse and validate a TOML document.
    pub fn from_toml_str(source: &str) -> Result<Self, ConfigFileError> {
        let mut config: StackConfig = toml::from_str(source).map_err(|e| {
            let message = e.message().to_owned();
            let key = unknown_or_invalid_key(source, e.span());
            ConfigFileError::at(source, key, e.span(), message)
        })?;
        config.validate(source)?;
        Ok(config)
    }

    /// Read, parse and validate a TOML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigFileError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigFileError::at("", "", None, format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml_str(&source)
    }

    /// The first route whose glob matches `model`.
    pub fn route_for(&self, model: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.matches(model))
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name.get_ref() == name)
    }

    fn validate(&mut self, src: &str) -> Result<(), ConfigFileError> {
        let err = |key: String, span: Range<usize>, msg: String| {
            Err(ConfigFileError::at(src, key, Some(span).filter(|s| s.end > 0), msg))
        };
        let listen = &self.gateway.listen;
        if listen.get_ref().parse::<SocketAddr>().is_err() {
            return err(
                "gateway.listen".into(),
                listen.span(),
                format!("`{}` is not an address like 127.0.0.1:8080", listen.get_ref()),
            );
        }
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let name = p.name.get_ref();
            if name.is_empty() {
                return err(format!("providers[{i}].name"), p.name.span(), "must not be empty".into());
            }
            if !names.insert(name.clone()) {
                return err(
                    format!("providers[{i}].name"),
                    p.name.span(),
                    format!("provider `{name}` is defined twice"),
                );
            }
            match (&p.base_url, &p.mock) {
                (None, None) => {
                    return err(
                        format!("providers[{i}]"),
                        p.name.span(),
                        format!("provider `{name}` needs `base_url` or `mock`"),
                    )
                }
                (Some(_), Some(mock)) => {
                    return err(
                        format!("providers[{i}].mock"),
                        mock.span(),
                        "set either `base_url` or `mock`, not both".into(),
                    )
                }
                (Some(url), None) => {
                    let ok = url
                        .get_ref()
                        .parse::<http::Uri>()
                        .ok()
                        .filter(|u| matches!(u.scheme_str(), Some("http") | Some("https")) && u.authority().is_some());
                    if ok.is_none() {
                        return err(
                            format!("providers[{i}].base_url"),
                            url.span(),
                            format!("`{}` is not an http(s) URL", url.get_ref()),
                        );
                    }
                }
                (None, Some(_)) => {}
            }
        }
        for (i, route) in self.routes.iter_mut().enumerate() {
            match glob::Pattern::new(route.pattern.get_ref()) {
                Ok(p) => route.compiled = Some(p),
                Err(e) => {
                    return err(
                        format!("routes[{i}].match"),
                        route.pattern.span(),
                        format!("bad glob `{}`: {}", route.pattern.get_ref(), e.msg),
                    )
                }
            }
            if route.targets.is_empty() {
                return err(
                    format!("routes[{i}].targets"),
                    route.pattern.span(),
                    "a route needs at least one target".into(),
                );
            }
            for (j, t) in route.targets.iter().enumerate() {
                if !names.contains(t.provider.get_ref()) {
                    return err(
                        format!("routes[{i}].targets[{j}].provider"),
                        t.provider.span(),
                        format!("no provider named `{}`", t.provider.get_ref()),
                    );
                }
                if t.attempt_timeout_ms == Some(0) {
                    return err(
                        format!("routes[{i}].targets[{j}].attempt_timeout_ms"),
                        t.provider.span(),
                        "must be greater than zero".into(),
                    );
                }
                if let Some(temp) = &t.temperature {
                    if !(0.0..=2.0).contains(temp.get_ref()) {
                        return err(
                            format!("routes[{i}].targets[{j}].temperature"),
                            temp.span(),
                            "must be within 0..=2".into(),
                        );
                    }
                }
            }
        }
        for (key, rate) in [
            ("breaker.failure_rate", &self.breaker.failure_rate),
            ("retry.budget_ratio", &self.retry.budget_ratio),
        ] {
            if !(0.0..=1.0).contains(rate.get_ref()) {
                return err(key.into(), rate.span(), format!("{} is outside 0..=1", rate.get_ref()));
            }
        }
        let zero_checks: [(&str, u64); 8] = [
            ("stream.ttft_ms", self.stream.ttft_ms),
            ("stream.idle_ms", self.stream.idle_ms),
            ("stream.total_ms", self.stream.total_ms),
            ("breaker.window", u64::from(self.breaker.window)),
            ("breaker.open_ms", self.breaker.open_ms),
            ("retry.max_attempts", u64::from(self.retry.max_attempts)),
            ("bulkhead.max_in_flight", u64::from(self.bulkhead.max_in_flight)),
            ("gateway.max_body_bytes", self.gateway.max_body_bytes),
        ];
        for (key, value) in zero_checks {
            if value == 0 {
                let span = key_span(src, key);
                return Err(ConfigFileError::at(src, key, span, "must be greater than zero"));
            }
        }
        if self.breaker.min_calls > self.breaker.window {
            let span = key_span(src, "breaker.min_calls");
            return Err(ConfigFileError::at(
                src,
                "breaker.min_calls",
                span,
                format!("{} is above the window of {}", self.breaker.min_calls, self.breaker.window),
            ));
        }
        Ok(())
    }
}

impl RouteConfig {
    /// Whether this route serves `model`.
    pub fn matches(&self, model: &str) -> bool {
        match &self.compiled {
            Some(p) => p.matches(model),
            None => glob::Pattern::new(self.pattern.get_ref()).is_ok_and(|p| p.matches(model)),
        }
    }
}

/// Best effort: the key at a parse error's span (`unknown field` errors point at the key).
fn unknown_or_invalid_key(source: &str, span: Option<Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let text = source.get(span).unwrap_or("");
    let key: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    key
}

/// The span of the value of `section.key` (for defaults the span is unknown: `None`).
fn key_span(source: &str, dotted: &str) -> Option<Range<usize>> {
    let (section, key) = dotted.split_once('.')?;
    let header = format!("[{section}]");
    let start = source.find(&header)?;
    let rest = &source[start..];
    let mut offset = start;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        if i == 0 {
            offset += line.len();
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            return None;
        }
        if let Some(after) = trimmed.strip_prefix(key) {
            if after.trim_start().starts_with('=') {
                return Some(offset..offset + line.len());
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> ConfigFileError {
        StackConfig::from_toml_str(src).unwrap_err()
    }

    const PROVIDER: &str = "[[providers]]\nname = \"p\"\nmock = \"healthy\"\n";

    #[test]
    fn empty_config_gets_defaults() {
        let c = StackConfig::from_toml_str("").unwrap();
        assert_eq!(c.gateway.listen.get_ref(), "127.0.0.1:8080");
        assert_eq!(c.breaker.window, 20);
        assert_eq!(c.retry.max_attempts, 3);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[gateway]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n");
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.key(), "listne");
        assert!(e.message().contains("unknown field"), "{e}");
    }

    #[test]
    fn negative_timeout_is_rejected_with_line() {
        let src = format!("{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = [\n  {{ provider = \"p\", attempt_timeout_ms = -5 }},\n]\n");
        let e = err(&src);
        assert_eq!(e.line(), Some(7), "{e}");
    }

    #[test]
    fn bad_glob_is_rejected() {
        let src = format!("{PROVIDER}[[routes]]\nmatch = \"gpt-[\"\ntargets = [{{ provider = \"p\" }}]\n");
        let e = err(&src);
        assert_eq!(e.key(), "routes[0].match");
        assert_eq!(e.line(), Some(5));
        assert!(e.message().contains("bad glob"));
    }

    #[test]
    fn rate_outside_unit_interval_is_rejected() {
        let e = err("[breaker]\nfailure_rate = 1.5\n");
        assert_eq!(e.key(), "breaker.failure_rate");
        assert_eq!(e.line(), Some(2));
    }

    #[test]
    fn zero_values_are_rejected_with_line() {
        let e = err("[stream]\nttft_ms = 10\nidle_ms = 0\n");
        assert_eq!(e.key(), "stream.idle_ms");
        assert_eq!(e.line(), Some(3));
    }

    #[test]
    fn min_calls_above_window_is_rejected() {
        let e = err("[breaker]\nwindow = 5\nmin_calls = 6\n");
        assert_eq!(e.key(), "breaker.min_calls");
        assert_eq!(e.line(), Some(3));
    }

    #[test]
    fn provider_needs_exactly_one_source() {
        let e = err("[[providers]]\nname = \"p\"\n");
        assert!(e.message().contains("needs `base_url` or `mock`"));
        let e = err("[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nmock = \"healthy\"\n");
        assert_eq!(e.key(), "providers[0].mock");
        let e = err("[[providers]]\nname = \"p\"\nbase_url = \"ftp://x\"\n");
        assert_eq!(e.key(), "providers[0].base_url");
        let e = err(&format!("{PROVIDER}{PROVIDER}"));
        assert!(e.message().contains("defined twice"));
    }

    #[test]
    fn first_matching_route_wins() {
        let src = format!(
            "{PROVIDER}[[routes]]\nmatch = \"gpt-4*\"\ntargets = [{{ provider = \"p\", model = \"a\" }}]\n\
             [[routes]]\nmatch = \"*\"\ntargets = [{{ provider = \"p\", model = \"b\" }}]\n"
        );
        let c = StackConfig::from_toml_str(&src).unwrap();
        assert_eq!(c.route_for("gpt-4o").unwrap().targets[0].model.as_deref(), Some("a"));
        assert_eq!(c.route_for("claude").unwrap().targets[0].model.as_deref(), Some("b"));
    }
}
