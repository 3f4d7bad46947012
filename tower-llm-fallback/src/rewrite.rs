//! Per-target request rewrites: model name, base URL, credentials, caps on `max_tokens` and
//! `temperature`.
//!
//! A rewrite is configured on a [`TargetConfig`](crate::TargetConfig) and compiled once when the
//! chain is built. It costs nothing when nothing is configured; the JSON body is only copied when
//! a member actually changes (a request that already names the target's model and respects its
//! caps is sent as it is).
//!
//! ```
//! use tower_llm_fallback::{Secret, TargetConfig};
//!
//! let secret = Secret::new("sk-test").unwrap();
//! assert_eq!(format!("{secret:?}"), "[redacted]");
//!
//! let target = TargetConfig::new("groq", "llama-3.1-8b-instant")
//!     .base_url("https://api.groq.com/openai/v1")
//!     .bearer(secret)
//!     .max_tokens(1024)
//!     .max_temperature(1.0);
//! # let _ = target;
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderMap;
use tower_llm_core::ConfigError;

use crate::json::{self, Splice};

/// A credential: printed as `[redacted]`, marked sensitive when sent as a header.
#[derive(Clone)]
pub struct Secret(HeaderValue);

impl Secret {
    /// A credential from its text. Fails when the text cannot be a header value.
    pub fn new(value: impl AsRef<str>) -> Result<Self, ConfigError> {
        let mut value = HeaderValue::from_str(value.as_ref())
            .map_err(|_| ConfigError::new("secret", "not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Secret(value))
    }

    /// Read a credential from the environment variable `var` (once, now).
    pub fn from_env(var: &str) -> Result<Self, ConfigError> {
        let value = std::env::var(var).map_err(|_| {
            ConfigError::new(
                "secret",
                format!("environment variable `{var}` is not set or not unicode"),
            )
        })?;
        if value.is_empty() {
            return Err(ConfigError::new(
                "secret",
                format!("environment variable `{var}` is empty"),
            ));
        }
        Secret::new(value).map_err(|_| {
            ConfigError::new(
                "secret",
                format!("environment variable `{var}` is not a valid header value"),
            )
        })
    }

    fn bearer(&self) -> Result<Self, ConfigError> {
        let mut bytes = Vec::with_capacity(self.0.len() + 7);
        bytes.extend_from_slice(b"Bearer ");
        bytes.extend_from_slice(self.0.as_bytes());
        let mut value = HeaderValue::from_bytes(&bytes)
            .map_err(|_| ConfigError::new("secret", "not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Secret(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a target's credential comes from (resolved when the chain is built).
#[derive(Clone, Debug)]
pub(crate) enum AuthSource {
    /// `Authorization: Bearer <env var>`.
    BearerEnv(String),
    /// `Authorization: Bearer <secret>`.
    Bearer(Secret),
    /// `<header>: <env var>` (`x-api-key`, `x-goog-api-key`, `api-key`).
    HeaderEnv(String, String),
    /// `<header>: <secret>`.
    Header(String, Secret),
}

/// Headers that carry provider credentials: removed before another target's credential is set,
/// so one provider's key never reaches another.
/// Parsed once (a `&str` name is parsed on every lookup).
const CREDENTIAL_HEADERS: [HeaderName; 4] = [
    AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

/// A compiled per-target rewrite.
#[derive(Clone, Default)]
pub(crate) struct RequestRewrite {
    /// The model, as a JSON string literal (with quotes), when the body's `model` is rewritten.
    model_json: Option<Vec<u8>>,
    max_tokens: Option<u64>,
    max_temperature: Option<f64>,
    base: Option<BaseUrl>,
    auth: Option<(HeaderName, Secret)>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for RequestRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: names only.
        f.debug_struct("RequestRewrite")
            .field(
                "model",
                &self.model_json.as_deref().map(String::from_utf8_lossy),
            )
            .field("max_tokens", &self.max_tokens)
            .field("max_temperature", &self.max_temperature)
            .field("base", &self.base)
            .field("auth_header", &self.auth.as_ref().map(|(name, _)| name))
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Clone, Debug)]
struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// The base path without a trailing `/`; empty when the base URL has no path.
    path: Arc<str>,
    /// For a plain `http` base URL, the `Host` header its requests carry, built once here; for
    /// `https`, `None`: the connection may turn out to be HTTP/2, which sends `:authority`
    /// instead, so the client derives the header only when it speaks HTTP/1.
    host: Option<HeaderValue>,
}

/// The request parts a rewrite may touch.
pub(crate) struct Parts<'a> {
    pub(crate) uri: &'a mut Uri,
    pub(crate) headers: &'a mut HeaderMap,
}

/// Why a rewrite could not be applied to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RewriteFailure {
    /// The body must be edited but is not buffered.
    NotBuffered,
    /// The URI could not be rebuilt (the request path is not valid for the base URL).
    Uri,
}

impl RequestRewrite {
    pub(crate) fn compile(
        model: Option<&str>,
        max_tokens: Option<u64>,
        max_temperature: Option<f64>,
        base_url: Option<&str>,
        auth: Option<&AuthSource>,
        headers: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let base = base_url.map(parse_base_url).transpose()?;
        let auth = auth.map(resolve_auth).transpose()?;
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::new("header", format!("`{name}` is not a header name"))
                })?;
                let value = HeaderValue::from_str(value).map_err(|_| {
                    ConfigError::new("header", format!("value of `{name}` is not a header value"))
                })?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if let Some(t) = max_temperature {
            if !t.is_finite() || t < 0.0 {
                return Err(ConfigError::new(
                    "max_temperature",
                    "must be a finite number ≥ 0",
                ));
            }
        }
        Ok(RequestRewrite {
            model_json: model.filter(|m| !m.is_empty()).map(json::encode_string),
            max_tokens,
            max_temperature,
            base,
            auth,
            headers,
        })
    }

    /// Whether the rewrite edits the JSON body (so the body must be buffered).
    pub(crate) fn edits_body(&self) -> bool {
        self.model_json.is_some() || self.max_tokens.is_some() || self.max_temperature.is_some()
    }

    /// Rewrite the URI and headers in place.
    pub(crate) fn apply_parts(
        &self,
        parts: Parts<'_>,
        request_base_path: &str,
    ) -> Result<(), RewriteFailure> {
        let mut authority_changed = false;
        if let Some(base) = &self.base {
            authority_changed = parts.uri.authority() != Some(&base.authority);
            if let Some(uri) = rebase(parts.uri, base, request_base_path)? {
                *parts.uri = uri;
            }
            if authority_changed {
                // A forwarded `Host` names the wrong host. Over plain HTTP the request speaks
                // HTTP/1, so the header is set here, as hyper-util would set it from the URI
                // (saving it a `format!` and a header parse per request); otherwise the client
                // derives it.
                match &base.host {
                    Some(host) => {
                        parts.headers.insert(HOST, host.clone());
                    }
                    None => {
                        parts.headers.remove(HOST);
                    }
                }
            }
        }
        if let Some((name, secret)) = &self.auth {
            strip_credentials(parts.headers);
            parts.headers.insert(name.clone(), secret.0.clone());
        } else if authority_changed {
            // A credential meant for the original host must not travel to another one.
            strip_credentials(parts.headers);
        }
        for (name, value) in &self.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        Ok(())
    }

    /// The rewritten body, or `None` when the body needs no change. `body` is `None` when the body
    /// is not buffered.
    pub(crate) fn apply_body(&self, body: Option<&Bytes>) -> Result<Option<Bytes>, RewriteFailure> {
        if !self.edits_body() {
            return Ok(None);
        }
        let body = body.ok_or(RewriteFailure::NotBuffered)?;
        // Not a JSON object: leave it alone, the upstream will answer with a 400.
        let Some(members) = json::find_members(
            body,
            [
                "model",
                "max_tokens",
                "max_completion_tokens",
                "temperature",
            ],
        ) else {
            return Ok(None);
        };
        let [model, max_tokens, max_completion, temperature] = members.values;
        let mut splices: [Option<Splice<'_>>; 4] = [None, None, None, None];
        if let Some(wanted) = &self.model_json {
            match model {
                Some(span) if body.get(span.clone()) == Some(wanted.as_slice()) => {}
                Some(span) => {
                    splices[0] = Some(Splice {
                        span,
                        bytes: Cow::Borrowed(wanted),
                    })
                }
                None => {
                    let at = members.open + 1;
                    let mut bytes = Vec::with_capacity(wanted.len() + 10);
                    bytes.extend_from_slice(b"\"model\":");
                    bytes.extend_from_slice(wanted);
                    if !members.empty {
                        bytes.push(b',');
                    }
                    splices[0] = Some(Splice {
                        span: at..at,
                        bytes: Cow::Owned(bytes),
                    });
                }
            }
        }
        if let Some(cap) = self.max_tokens {
            for (slot, span) in [(1, max_tokens), (2, max_completion)] {
                let over = span
                    .as_ref()
                    .and_then(|s| body.get(s.clone()))
                    .and_then(|v| serde_json::from_slice::<f64>(v).ok())
                    .is_some_and(|v| v > cap as f64);
                if let (true, Some(span)) = (over, span) {
                    splices[slot] = Some(Splice {
                        span,
                        bytes: Cow::Owned(cap.to_string().into_bytes()),
                    });
                }
            }
        }
        if let (Some(cap), Some(span)) = (self.max_temperature, temperature) {
            let over = body
                .get(span.clone())
                .and_then(|v| serde_json::from_slice::<f64>(v).ok())
                .is_some_and(|v| v > cap);
            if over {
                let bytes = serde_json::to_vec(&cap).unwrap_or_else(|_| b"0".to_vec());
                splices[3] = Some(Splice {
                    span,
                    bytes: Cow::Owned(bytes),
                });
            }
        }
        if splices.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Bytes::from(json::apply(body, &mut splices))))
    }
}

fn strip_credentials(headers: &mut HeaderMap) {
    // A request seldom carries one: a pass over its few names is cheaper than a hashed lookup
    // per credential name. Each removal takes every value of its name, so this ends.
    while let Some(name) = headers
        .keys()
        .find(|name| CREDENTIAL_HEADERS.contains(name))
        .cloned()
    {
        headers.remove(&name);
    }
}

fn parse_base_url(url: &str) -> Result<BaseUrl, ConfigError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ConfigError::new("base_url", format!("`{url}` is not a URL")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err(ConfigError::new(
            "base_url",
            format!("`{url}` needs a scheme and a host"),
        ));
    };
    if uri.query().is_some() {
        return Err(ConfigError::new(
            "base_url",
            format!("`{url}` must not have a query"),
        ));
    }
    let path = uri.path().trim_end_matches('/');
    let host = http_host(&scheme, &authority).map_err(|_| {
        ConfigError::new(
            "base_url",
            format!("`{url}` has a host that is not a header value"),
        )
    })?;
    Ok(BaseUrl {
        scheme,
        authority,
        path: path.into(),
        host,
    })
}

/// The `Host` header of requests to `authority` over plain `http` (`None` for other schemes):
/// the host, and the port unless it is 80; userinfo is never part of it. The same value
/// hyper-util's client derives from the URI.
fn http_host(
    scheme: &Scheme,
    authority: &Authority,
) -> Result<Option<HeaderValue>, http::header::InvalidHeaderValue> {
    if *scheme != Scheme::HTTP {
        return Ok(None);
    }
    let value = match authority.port_u16() {
        Some(port) if port != 80 => HeaderValue::from_str(&format!("{}:{port}", authority.host())),
        _ => HeaderValue::from_str(authority.host()),
    };
    value.map(Some)
}

/// `uri` moved onto `base`: scheme and authority replaced; when the base URL has a path, it
/// replaces the request's `request_base_path` prefix (or is prepended when the request path does
/// not start with it). `Ok(None)` when `uri` is already there (nothing to allocate).
fn rebase(
    uri: &Uri,
    base: &BaseUrl,
    request_base_path: &str,
) -> Result<Option<Uri>, RewriteFailure> {
    let same_origin =
        uri.scheme() == Some(&base.scheme) && uri.authority() == Some(&base.authority);
    let pq = if base.path.is_empty() {
        if same_origin {
            return Ok(None);
        }
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    } else {
        let path = uri.path();
        let prefix = request_base_path.trim_end_matches('/');
        let rest = match path.strip_prefix(prefix) {
            Some(rest) if !prefix.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
            _ => path,
        };
        let rest = if rest == "/" { "" } else { rest };
        let unchanged = path.len() == base.path.len() + rest.len()
            && path.starts_with(&*base.path)
            && path.ends_with(rest);
        if unchanged {
            if same_origin {
                return Ok(None);
            }
            // Only the origin changes (the gateway's requests carry a path and no origin):
            // the path and query are already right, shared rather than copied and parsed again.
            match uri.path_and_query() {
                Some(pq) => pq.clone(),
                None => PathAndQuery::from_static("/"),
            }
        } else {
            rebased_path(uri, base, rest)?
        }
    };
    Uri::builder()
        .scheme(base.scheme.clone())
        .authority(base.authority.clone())
        .path_and_query(pq)
        .build()
        .map(Some)
        .map_err(|_| RewriteFailure::Uri)
}

/// `base`'s path, then `rest`, then `uri`'s query.
fn rebased_path(uri: &Uri, base: &BaseUrl, rest: &str) -> Result<PathAndQuery, RewriteFailure> {
    let mut out = String::with_capacity(
        base.path.len() + rest.len() + uri.query().map_or(0, |q| q.len() + 1),
    );
    out.push_str(&base.path);
    out.push_str(rest);
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::from_maybe_shared(Bytes::from(out)).map_err(|_| RewriteFailure::Uri)
}

fn resolve_auth(auth: &AuthSource) -> Result<(HeaderName, Secret), ConfigError> {
    let header = |name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::new("auth_header", format!("`{name}` is not a header name")))
    };
    Ok(match auth {
        AuthSource::BearerEnv(var) => (AUTHORIZATION, Secret::from_env(var)?.bearer()?),
        AuthSource::Bearer(secret) => (AUTHORIZATION, secret.bearer()?),
        AuthSource::HeaderEnv(name, var) => (header(name)?, Secret::from_env(var)?),
        AuthSource::Header(name, secret) => (header(name)?, secret.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(model: Option<&str>, max_tokens: Option<u64>, temp: Option<f64>) -> RequestRewrite {
        RequestRewrite::compile(model, max_tokens, temp, None, None, &[]).unwrap()
    }

    /// `rw` applied to a request under the gateway's `/v1` prefix.
    fn apply_v1(rw: &RequestRewrite, uri: &mut Uri, headers: &mut HeaderMap) {
        rw.apply_parts(Parts { uri, headers }, "/v1").unwrap();
    }

    fn body(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn model_is_replaced_in_place_keeping_other_bytes() {
        let rw = rewrite(Some("llama-3.1-8b"), None, None);
        let src = body(
            r#"{"zeta":1, "model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"alpha":{"x":[1,2]}}"#,
        );
        let out = rw.apply_body(Some(&src)).unwrap().unwrap();
        assert_eq!(
            out,
            r#"{"zeta":1, "model":"llama-3.1-8b","messages":[{"role":"user","content":"hi"}],"alpha":{"x":[1,2]}}"#
        );
    }

    #[test]
    fn same_model_and_caps_within_bounds_do_not_copy() {
        let rw = rewrite(Some("gpt-4o"), Some(100), Some(1.0));
        let src = body(r#"{"model":"gpt-4o","max_tokens":50,"temperature":0.5}"#);
        assert_eq!(rw.apply_body(Some(&src)).unwrap(), None);
        assert_eq!(rewrite(None, None, None).apply_body(None).unwrap(), None);
    }

    #[test]
    fn caps_lower_values_and_model_is_inserted_when_missing() {
        let rw = rewrite(Some("m\"x"), Some(100), Some(0.7));
        let src =
            body(r#"{"max_tokens":4096,"max_completion_tokens":10,"temperature":1.3,"u":null}"#);
        let out = rw.apply_body(Some(&src)).unwrap().unwrap();
        assert_eq!(
            out,
            r#"{"model":"m\"x","max_tokens":100,"max_completion_tokens":10,"temperature":0.7,"u":null}"#
        );
        let empty = rw.apply_body(Some(&body("{}"))).unwrap().unwrap();
        assert_eq!(empty, r#"{"model":"m\"x"}"#);
    }

    #[test]
    fn unbuffered_body_cannot_be_rewritten_and_non_json_is_left_alone() {
        let rw = rewrite(Some("x"), None, None);
        assert_eq!(rw.apply_body(None), Err(RewriteFailure::NotBuffered));
        assert_eq!(rw.apply_body(Some(&body("not json"))).unwrap(), None);
    }

    #[test]
    fn base_url_replaces_the_request_base_path() {
        let base = parse_base_url("https://api.groq.com/openai/v1/").unwrap();
        let uri: Uri = "http://localhost:8080/v1/chat/completions?x=1"
            .parse()
            .unwrap();
        assert_eq!(
            rebase(&uri, &base, "/v1").unwrap().unwrap().to_string(),
            "https://api.groq.com/openai/v1/chat/completions?x=1"
        );
        let other: Uri = "http://localhost/chat/completions".parse().unwrap();
        assert_eq!(
            rebase(&other, &base, "/v1").unwrap().unwrap().to_string(),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        // `/v1x` is not under `/v1`.
        let odd: Uri = "http://localhost/v1x".parse().unwrap();
        assert_eq!(
            rebase(&odd, &base, "/v1").unwrap().unwrap().to_string(),
            "https://api.groq.com/openai/v1/v1x"
        );
        let origin_only = parse_base_url("http://127.0.0.1:9").unwrap();
        assert_eq!(
            rebase(&uri, &origin_only, "/v1")
                .unwrap()
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9/v1/chat/completions?x=1"
        );
        // Already there: no new URI.
        let local = parse_base_url("http://127.0.0.1:8080/v1").unwrap();
        let there: Uri = "http://127.0.0.1:8080/v1/chat/completions".parse().unwrap();
        assert_eq!(rebase(&there, &local, "/v1").unwrap(), None);
        let origin: Uri = "http://127.0.0.1:9/v1/x".parse().unwrap();
        assert_eq!(rebase(&origin, &origin_only, "/v1").unwrap(), None);
        // The path already right, another origin (or none: the gateway's requests): the path
        // and query are kept as they are.
        let elsewhere: Uri = "http://localhost:8080/v1/chat/completions?x=1"
            .parse()
            .unwrap();
        assert_eq!(
            rebase(&elsewhere, &local, "/v1")
                .unwrap()
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8080/v1/chat/completions?x=1"
        );
        let relative: Uri = "/v1/chat/completions".parse().unwrap();
        assert_eq!(
            rebase(&relative, &local, "/v1")
                .unwrap()
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        let relative_query: Uri = "/v1/chat/completions?api-version=1".parse().unwrap();
        assert_eq!(
            rebase(&relative_query, &base, "/v1")
                .unwrap()
                .unwrap()
                .to_string(),
            "https://api.groq.com/openai/v1/chat/completions?api-version=1"
        );
        assert!(parse_base_url("/v1").is_err());
        assert!(parse_base_url("http://h/v1?x=1").is_err());
    }

    #[test]
    fn host_follows_the_base_url_and_is_left_to_the_client_over_https() {
        let host_after = |base: &str, forwarded: Option<&'static str>| {
            let rw = RequestRewrite::compile(None, None, None, Some(base), None, &[]).unwrap();
            let mut uri: Uri = "http://gateway:8080/v1/chat/completions".parse().unwrap();
            let mut headers = HeaderMap::new();
            if let Some(host) = forwarded {
                headers.insert(HOST, HeaderValue::from_static(host));
            }
            apply_v1(&rw, &mut uri, &mut headers);
            headers.get(HOST).map(|v| v.to_str().unwrap().to_owned())
        };
        // What hyper-util derives from the URI: the port unless it is the scheme's default,
        // never the userinfo.
        assert_eq!(
            host_after("http://127.0.0.1:9/v1", None).as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(
            host_after("http://up:80/v1", Some("gateway:8080")).as_deref(),
            Some("up")
        );
        assert_eq!(host_after("http://up", None).as_deref(), Some("up"));
        assert_eq!(
            host_after("http://u:p@up:81", None).as_deref(),
            Some("up:81")
        );
        assert_eq!(
            host_after("http://[::1]:7/v1", None).as_deref(),
            Some("[::1]:7")
        );
        // Over https the connection may be HTTP/2 (`:authority`, no `Host`): the client decides.
        assert_eq!(
            host_after("https://api.openai.com/v1", Some("gateway:8080")),
            None
        );
        // The same origin: the request's own `Host` is kept.
        assert_eq!(
            host_after("http://gateway:8080/v1", Some("gateway:8080")).as_deref(),
            Some("gateway:8080")
        );
    }

    #[test]
    fn credentials_never_travel_to_another_host() {
        let rw = RequestRewrite::compile(
            None,
            None,
            None,
            Some("http://other:1/v1"),
            Some(&AuthSource::Header(
                "x-api-key".into(),
                Secret::new("k2").unwrap(),
            )),
            &[("anthropic-version".into(), "2023-06-01".into())],
        )
        .unwrap();
        let mut uri: Uri = "http://first/v1/chat/completions".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        headers.insert(HOST, HeaderValue::from_static("first"));
        apply_v1(&rw, &mut uri, &mut headers);
        assert_eq!(uri.to_string(), "http://other:1/v1/chat/completions");
        assert!(headers.get(AUTHORIZATION).is_none());
        assert_eq!(headers.get(HOST).unwrap(), "other:1", "the new host's");
        assert_eq!(headers.get("x-api-key").unwrap(), "k2");
        assert!(headers.get("x-api-key").unwrap().is_sensitive());
        assert_eq!(headers.get("anthropic-version").unwrap(), "2023-06-01");

        // No credential configured, other host: the caller's credential is removed too.
        let bare =
            RequestRewrite::compile(None, None, None, Some("http://third:1"), None, &[]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer k2"));
        headers.insert("x-api-key", HeaderValue::from_static("k3"));
        headers.insert("api-key", HeaderValue::from_static("k4"));
        headers.insert("x-goog-api-key", HeaderValue::from_static("k5"));
        headers.insert("x-request-id", HeaderValue::from_static("r1"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let mut uri: Uri = "http://first/v1/x".parse().unwrap();
        apply_v1(&bare, &mut uri, &mut headers);
        for credential in ["authorization", "x-api-key", "api-key", "x-goog-api-key"] {
            assert!(headers.get(credential).is_none(), "{credential}");
        }
        // Everything else stays (and the new host's `Host` is set).
        assert_eq!(headers.get("x-request-id").unwrap(), "r1");
        assert_eq!(headers.get("content-type").unwrap(), "application/json");
        assert_eq!(headers.len(), 3, "{headers:?}");
    }

    #[test]
    fn bearer_from_env_is_read_once_and_redacted() {
        std::env::set_var("TOWER_LLM_FALLBACK_TEST_KEY", "sk-env");
        let rw = RequestRewrite::compile(
            None,
            None,
            None,
            None,
            Some(&AuthSource::BearerEnv("TOWER_LLM_FALLBACK_TEST_KEY".into())),
            &[],
        )
        .unwrap();
        assert!(!format!("{rw:?}").contains("sk-env"));
        let mut uri: Uri = "http://h/v1/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        apply_v1(&rw, &mut uri, &mut headers);
        assert_eq!(headers.get(AUTHORIZATION).unwrap(), "Bearer sk-env");
        let missing = AuthSource::BearerEnv("TOWER_LLM_FALLBACK_SURELY_UNSET".into());
        let err = RequestRewrite::compile(None, None, None, None, Some(&missing), &[]).unwrap_err();
        assert!(err.message().contains("TOWER_LLM_FALLBACK_SURELY_UNSET"));
    }
}
