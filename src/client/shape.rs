//! What a preset adds to each request of a target, below the chain's rewrite (base URL, key):
//! Anthropic's `anthropic-version` header, Azure's deployment path and `api-version`.
//!
//! It wraps whatever client the stack is built over, so presets behave the same with
//! [`StackBuilder::build_with_client`](crate::stack::StackBuilder::build_with_client).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri};
use tower::Service;
use tower_llm_core::Target;

use crate::config::StackConfig;

/// The request shaping of every provider whose preset needs one.
#[derive(Clone, Default)]
pub(crate) struct Shapes {
    providers: HashMap<String, ProviderShape>,
}

#[derive(Clone)]
struct ProviderShape {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Azure's deployment style: the base path (`/openai`) and `api-version=…`.
    azure: Option<(String, String)>,
}

impl Shapes {
    /// The shaping of `config`'s providers; `urls` are the builder's base URL overrides.
    pub(crate) fn new(config: &StackConfig, urls: &HashMap<String, String>) -> Shapes {
        let mut providers = HashMap::new();
        for p in &config.providers {
            let headers: Vec<_> = p
                .kind
                .map(|kind| kind.headers())
                .unwrap_or_default()
                .iter()
                .map(|(name, value)| {
                    (
                        HeaderName::from_static(name),
                        HeaderValue::from_static(value),
                    )
                })
                .collect();
            let base = p.resolved_base_url(urls.get(&p.name).map(String::as_str));
            let azure = base.as_deref().and_then(|base| {
                let version = p.azure_api_version(base)?;
                let path = base
                    .parse::<Uri>()
                    .ok()?
                    .path()
                    .trim_end_matches('/')
                    .to_owned();
                Some((path, format!("api-version={version}")))
            });
            if !headers.is_empty() || azure.is_some() {
                providers.insert(p.name.clone(), ProviderShape { headers, azure });
            }
        }
        Shapes { providers }
    }

    /// `client` with `target`'s shaping (a pass-through when its provider needs none).
    pub(crate) fn wrap<S>(&self, target: &Target, client: S) -> Shaped<S> {
        let shape = self.providers.get(target.provider()).map(|p| {
            let azure = p.azure.as_ref().and_then(|(base, query)| {
                let model = target.model();
                (!model.is_empty()).then(|| Azure {
                    base: base.clone(),
                    deployment: format!("{base}/deployments/{}", encode_segment(model)),
                    query: query.clone(),
                })
            });
            Arc::new(TargetShape {
                headers: p.headers.clone(),
                azure,
            })
        });
        Shaped {
            inner: client,
            shape,
        }
    }
}

struct TargetShape {
    headers: Vec<(HeaderName, HeaderValue)>,
    azure: Option<Azure>,
}

struct Azure {
    /// The base URL's path (`/openai`), which the chain put in front of the request's path.
    base: String,
    /// `{base}/deployments/{model}`.
    deployment: String,
    /// `api-version=…`.
    query: String,
}

/// A client with a target's preset shaping applied to each request.
#[derive(Clone)]
pub(crate) struct Shaped<S> {
    inner: S,
    shape: Option<Arc<TargetShape>>,
}

impl<S, B> Service<Request<B>> for Shaped<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(shape) = &self.shape {
            for (name, value) in &shape.headers {
                req.headers_mut().insert(name.clone(), value.clone());
            }
            if let Some(azure) = &shape.azure {
                if let Some(uri) = azure.uri(req.uri()) {
                    *req.uri_mut() = uri;
                }
            }
        }
        self.inner.call(req)
    }
}

impl Azure {
    /// `/openai/chat/completions` → `/openai/deployments/{model}/chat/completions?api-version=…`
    /// (a path already under `deployments/`, or an `api-version` already given, is kept).
    fn uri(&self, uri: &Uri) -> Option<Uri> {
        let path = uri.path();
        let rest = path.strip_prefix(&self.base)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let mut out = String::with_capacity(path.len() + self.deployment.len() + 32);
        if rest.starts_with("/deployments/") {
            out.push_str(path);
        } else {
            out.push_str(&self.deployment);
            out.push_str(rest);
        }
        match uri.query() {
            Some(q) if q.split('&').any(|kv| kv.starts_with("api-version=")) => {
                out.push('?');
                out.push_str(q);
            }
            Some(q) => {
                out.push('?');
                out.push_str(q);
                out.push('&');
                out.push_str(&self.query);
            }
            None => {
                out.push('?');
                out.push_str(&self.query);
            }
        }
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(out).ok()?);
        Uri::from_parts(parts).ok()
    }
}

/// `s` as one path segment: unreserved characters kept, everything else percent-encoded.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure() -> Azure {
        Azure {
            base: "/openai".into(),
            deployment: "/openai/deployments/gpt-4o".into(),
            query: "api-version=2024-10-21".into(),
        }
    }

    #[test]
    fn azure_paths() {
        let a = azure();
        let cases = [
            (
                "https://r.openai.azure.com/openai/chat/completions",
                "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            ),
            (
                "https://r.openai.azure.com/openai/embeddings?x=1",
                "https://r.openai.azure.com/openai/deployments/gpt-4o/embeddings?x=1&api-version=2024-10-21",
            ),
            (
                "https://r.openai.azure.com/openai/chat/completions?api-version=2025-01-01",
                "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01",
            ),
            (
                "https://r.openai.azure.com/openai/deployments/other/chat/completions",
                "https://r.openai.azure.com/openai/deployments/other/chat/completions?api-version=2024-10-21",
            ),
        ];
        for (from, to) in cases {
            let got = a.uri(&from.parse().unwrap()).unwrap();
            assert_eq!(got.to_string(), to, "{from}");
        }
        // Not under the base path: left alone.
        assert!(a.uri(&"https://r/other/chat".parse().unwrap()).is_none());
        assert!(a.uri(&"https://r/openaix".parse().unwrap()).is_none());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("gpt-4o_mini.v1~"), "gpt-4o_mini.v1~");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
