//! Client keys: `Authorization: Bearer <key>`, checked by tower-http's
//! [`ValidateRequestHeaderLayer`] with [`ClientAuth`] as its validator, each key compared in
//! constant time ([`subtle`]).
//!
//! A request without a known key gets an OpenAI-shaped 401 (`invalid_api_key`) with
//! `www-authenticate: Bearer`, and never reaches a provider. The gateway checks keys on
//! `/v1/*` (chat completions and models); `/health` and `/metrics` are for operators and stay
//! open (bind the listener to a private address, or put them behind your own proxy).
//!
//! ```
//! use tower_llm_gateway::auth::ClientKeys;
//!
//! let keys = ClientKeys::parse("key-1, key-2");
//! let mut headers = http::HeaderMap::new();
//! assert!(!keys.allows(&headers));
//! headers.insert("authorization", "Bearer key-2".parse().unwrap());
//! assert!(keys.allows(&headers));
//! // Off when no key is set: every client is let in.
//! assert!(ClientKeys::default().allows(&http::HeaderMap::new()));
//! ```
//!
//! [`ValidateRequestHeaderLayer`]: tower_http::validate_request::ValidateRequestHeaderLayer

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, Request, Response};
use subtle::{Choice, ConstantTimeEq};
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use crate::errors;

/// The keys clients may present. Empty = client authentication is off.
#[derive(Clone, Default)]
pub struct ClientKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        f.debug_struct("ClientKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

impl ClientKeys {
    /// Keys from a comma-separated list (blank entries ignored).
    pub fn parse(list: &str) -> Self {
        ClientKeys {
            keys: list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().to_vec())
                .collect(),
        }
    }

    /// Whether client authentication is on.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The first key (the demo traffic uses it).
    pub fn first(&self) -> Option<&[u8]> {
        self.keys.first().map(Vec::as_slice)
    }

    /// Whether the request's `Authorization: Bearer <key>` names one of the keys (always, when
    /// authentication is off). Every key is compared, each with `subtle`'s constant-time
    /// equality, so the time taken says nothing about which key matched or how much of one did
    /// (only, as with any comparison, whether the lengths differ).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if !self.enabled() {
            return true;
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        let mut ok = Choice::from(0);
        for key in &self.keys {
            ok |= presented.ct_eq(key);
        }
        ok.into()
    }
}

/// The validator of [`ValidateRequestHeaderLayer`]: lets a request through when
/// [`ClientKeys::allows`] it, answers [`errors::unauthorized`] otherwise.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    keys: Arc<ClientKeys>,
}

impl ClientAuth {
    /// A validator over `keys`.
    pub fn new(keys: Arc<ClientKeys>) -> Self {
        ClientAuth { keys }
    }

    /// The layer: `ValidateRequestHeaderLayer::custom(ClientAuth::new(keys))`.
    pub fn layer(keys: Arc<ClientKeys>) -> ValidateRequestHeaderLayer<ClientAuth> {
        ValidateRequestHeaderLayer::custom(ClientAuth::new(keys))
    }
}

impl<B> ValidateRequest<B> for ClientAuth {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<Body>> {
        if self.keys.allows(request.headers()) {
            Ok(())
        } else {
            Err(errors::unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn compares_whole_keys() {
        let keys = ClientKeys::parse("secret, other-key,,");
        assert!(keys.allows(&bearer("secret")));
        assert!(keys.allows(&bearer("other-key")));
        assert!(!keys.allows(&bearer("secreT")));
        assert!(!keys.allows(&bearer("secret2")));
        assert!(!keys.allows(&bearer("")));
        assert!(!keys.allows(&HeaderMap::new()));
        assert_eq!(format!("{keys:?}"), "ClientKeys { count: 2 }");
    }

    #[test]
    fn the_validator_answers_an_openai_shaped_401() {
        let mut auth = ClientAuth::new(Arc::new(ClientKeys::parse("k")));
        let mut req = Request::new(());
        let res = auth.validate(&mut req).unwrap_err();
        assert_eq!(res.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        *req.headers_mut() = bearer("k");
        assert!(auth.validate(&mut req).is_ok());
    }
}
