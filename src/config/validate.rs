//! [`StackConfig::validate`]: what only the facade knows (providers, routes, globs, the ranges
//! it documents), then every crate's own validation of the settings the sections make, with the
//! crate's setting mapped back to its TOML key.

use std::collections::HashSet;

use super::schema::{ProviderConfig, RouteConfig};
use super::{layers, ConfigFileError, StackConfig};

/// A key and what is wrong with it; the line is looked up at the end.
type Invalid = (String, String);

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Result<(), Invalid> {
    Err((key.into(), message.into()))
}

impl StackConfig {
    /// Check the whole configuration: every provider and route, every value's range, and every
    /// crate's validation of the layers the sections configure. The error names the key (a
    /// dotted path) and, when the configuration was read from TOML, its line.
    ///
    /// [`from_toml_str`](Self::from_toml_str), [`from_file`](Self::from_file) and
    /// [`StackBuilder`](crate::stack::StackBuilder) call it; call it yourself for a
    /// configuration built in code.
    ///
    /// ```
    /// use tower_llm::config::StackConfig;
    ///
    /// let mut config = StackConfig::default();
    /// config.breaker.half_open_probes = 0;
    /// let err = config.validate().unwrap_err();
    /// assert_eq!(err.key(), "breaker.half_open_probes");
    /// assert_eq!(err.line(), None); // not read from a file
    /// ```
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        self.check()
            .map_err(|(key, message)| self.error_at(&key, message))
    }

    fn check(&self) -> Result<(), Invalid> {
        let names = check_providers(&self.providers)?;
        for (i, route) in self.routes.iter().enumerate() {
            check_route(i, route, &names)?;
        }
        self.check_values()?;
        layers::check(self)
    }

    /// The values no crate checks before the stack is built, or that the facade bounds more
    /// tightly than the crate.
    fn check_values(&self) -> Result<(), Invalid> {
        if !(0.0..=1.0).contains(&self.retry.budget_ratio) {
            return invalid(
                "retry.budget_ratio",
                format!("{} is outside 0..=1", self.retry.budget_ratio),
            );
        }
        let positive: [(&str, u64); 6] = [
            ("request.max_body_bytes", self.request.max_body_bytes),
            ("retry.base_ms", self.retry.base_ms),
            ("retry.attempt_timeout_ms", self.retry.attempt_timeout_ms),
            ("cache.ttl_ms", self.cache.ttl_ms),
            (
                "cooldown.max_probe_interval_ms",
                self.cooldown.max_probe_interval_ms,
            ),
            (
                "cooldown.panic_probe_interval_ms",
                self.cooldown.panic_probe_interval_ms,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be greater than zero");
            }
        }
        let cd = &self.cooldown;
        if cd.transient_min_ms > cd.max_probe_interval_ms {
            return invalid(
                "cooldown.transient_min_ms",
                format!(
                    "{} is above `cooldown.max_probe_interval_ms` ({})",
                    cd.transient_min_ms, cd.max_probe_interval_ms
                ),
            );
        }
        if self.escalation.window_failures > 0 && self.escalation.window_ms == 0 {
            return invalid("escalation.window_ms", "must be greater than zero");
        }
        if self.escalation.max_files == 0 {
            return invalid("escalation.max_files", "must be greater than zero");
        }
        let resumes = self
            .routes
            .iter()
            .any(|r| r.resume != super::schema::ResumeSetting::Off);
        if resumes && self.stream.resume_max_text_bytes == 0 {
            return invalid(
                "stream.resume_max_text_bytes",
                "must be greater than zero (or set resume = \"off\" on every route)",
            );
        }
        if resumes && self.stream.resume_budget_ms == Some(0) {
            return invalid(
                "stream.resume_budget_ms",
                "must be greater than zero (or set resume = \"off\" on every route)",
            );
        }
        for (i, p) in self.providers.iter().enumerate() {
            if p.prefill_params.is_some() && !p.supports_prefill {
                return invalid(
                    format!("providers[{i}].prefill_params"),
                    "set only with supports_prefill = true",
                );
            }
        }
        if self.cache.enabled && (self.cache.max_entries == 0 || self.cache.max_bytes == 0) {
            return invalid(
                "cache.max_entries",
                "the cache needs room for at least one entry",
            );
        }
        Ok(())
    }
}

/// Names, URLs and credentials of the providers; returns the names.
fn check_providers(providers: &[ProviderConfig]) -> Result<HashSet<&str>, Invalid> {
    let mut names = HashSet::new();
    for (i, p) in providers.iter().enumerate() {
        let key = |field: &str| format!("providers[{i}].{field}");
        let name = p.name.as_str();
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            invalid(
                key("name"),
                "must be non-empty, without `/` or control characters",
            )?;
        }
        if !names.insert(name) {
            invalid(key("name"), format!("provider `{name}` is defined twice"))?;
        }
        if let Some(url) = &p.base_url {
            if !is_http_url(url) {
                invalid(key("base_url"), format!("`{url}` is not an http(s) URL"))?;
            }
        }
        if p.api_key_env.as_deref() == Some("") {
            invalid(key("api_key_env"), "must name an environment variable")?;
        }
        if let Some(header) = &p.auth_header {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                invalid(
                    key("auth_header"),
                    format!("`{header}` is not a header name"),
                )?;
            }
        }
        super::provider::check(i, p)?;
    }
    Ok(names)
}

/// Route `i`: its glob and its targets.
fn check_route(i: usize, route: &RouteConfig, names: &HashSet<&str>) -> Result<(), Invalid> {
    if let Err(e) = super::ModelPattern::new(&route.pattern) {
        invalid(
            format!("routes[{i}].match"),
            format!("bad glob `{}`: {}", route.pattern, e.message()),
        )?;
    }
    if route.targets.is_empty() {
        invalid(
            format!("routes[{i}].targets"),
            "a route needs at least one target",
        )?;
    }
    let mut seen = HashSet::new();
    for (j, t) in route.targets.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].targets[{j}].{field}");
        if !names.contains(t.provider.as_str()) {
            invalid(
                key("provider"),
                format!("no provider named `{}`", t.provider),
            )?;
        }
        if !seen.insert((t.provider.as_str(), t.model.as_deref())) {
            invalid(
                key("provider"),
                "the same provider and model appear twice in this route",
            )?;
        }
        if t.model.as_deref() == Some("") {
            invalid(
                key("model"),
                "must not be empty (leave it out to pass the requested model through)",
            )?;
        }
        if t.attempt_timeout_ms == Some(0) {
            invalid(key("attempt_timeout_ms"), "must be greater than zero")?;
        }
        if let Some(temp) = t.max_temperature {
            if !(0.0..=2.0).contains(&temp) {
                invalid(key("max_temperature"), "must be within 0..=2")?;
            }
        }
    }
    Ok(())
}

fn is_http_url(url: &str) -> bool {
    url.parse::<http::Uri>().ok().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http") | Some("https")) && u.authority().is_some()
    })
}
