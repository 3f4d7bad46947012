//! Client and admin keys: `Authorization: Bearer <key>`, checked by tower-http's
//! [`ValidateRequestHeaderLayer`] with [`ClientAuth`] as its validator.
//!
//! A key is known by its SHA-256 digest only: a raw key given in the environment is hashed when
//! it is read, and a key given as `sha256:<64 hex digits>` (in the environment, a keys file or a
//! `[[gateway.keys]]` table) never existed in the gateway at all, so a configuration holding
//! digests can be committed. A presented key is hashed, then compared with every digest in
//! constant time ([`subtle`]): the time taken says nothing about which key matched, how much of
//! one did, or how long the keys are.
//!
//! Each key has a name, used in logs (the request span's `client` field) and in the gateway's
//! metric (label `client`), never the key: the name given with it (`NAME=KEY`,
//! `NAME=sha256:...`, `name = "..."`), or else `key-` and the first 8 hex digits of its digest.
//!
//! A request without a known key gets an OpenAI-shaped 401 (`invalid_api_key`) with
//! `www-authenticate: Bearer`, and never reaches a provider. The keys live in a [`KeyStore`]:
//! read once per request, replaced whole by a reload (SIGHUP, or
//! [`Gateway::reload_keys`](crate::Gateway::reload_keys)), so a request in flight keeps the
//! decision it got.
//!
//! ```
//! use tower_llm_gateway::auth::ClientKeys;
//!
//! // `alice` as a raw key, `bob` by the SHA-256 of the key "bob-key"
//! // (`printf %s bob-key | sha256sum`).
//! let keys = ClientKeys::parse(
//!     "alice=key-1, bob=sha256:9b94dc1a51a38769f135edf04033ad7f2f487b6c25929be7a861cfc1ab10cf98",
//! )
//! .unwrap();
//! let mut headers = http::HeaderMap::new();
//! assert!(keys.authenticate(&headers).is_none());
//! headers.insert("authorization", "Bearer key-1".parse().unwrap());
//! assert_eq!(keys.authenticate(&headers).unwrap().as_str(), "alice");
//! headers.insert("authorization", "Bearer bob-key".parse().unwrap());
//! assert_eq!(keys.authenticate(&headers).unwrap().as_str(), "bob");
//! // Never a key in `Debug`.
//! assert_eq!(format!("{keys:?}"), r#"ClientKeys { names: ["alice", "bob"] }"#);
//! // Off when no key is set: every client is let in.
//! assert!(ClientKeys::default().allows(&http::HeaderMap::new()));
//! ```
//!
//! [`ValidateRequestHeaderLayer`]: tower_http::validate_request::ValidateRequestHeaderLayer

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use axum::body::Body;
use http::{HeaderMap, Request, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use crate::errors;
use crate::metrics::AnsweredCounter;

/// The prefix of a key given by its digest: `sha256:` and 64 hex digits.
pub const SHA256_PREFIX: &str = "sha256:";

/// Longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The name of an authenticated client: a request extension set by [`ClientAuth`], used for the
/// log span, the metric label and the cache tier's client identity. Never a key.
#[derive(Clone)]
pub struct ClientName(Arc<ClientInner>);

struct ClientInner {
    name: Box<str>,
    /// This client's most frequent `requests_total` series, held once registered.
    answered: AnsweredCounter,
}

impl ClientName {
    fn new(name: &str) -> Self {
        ClientName(Arc::new(ClientInner {
            name: name.into(),
            answered: AnsweredCounter::default(),
        }))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// This client's `requests_total{outcome="success",fallback="none",status="200"}`.
    pub(crate) fn answered(&self) -> &AnsweredCounter {
        &self.0.answered
    }
}

impl PartialEq for ClientName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ClientName {}

impl Hash for ClientName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientName").field(&self.as_str()).finish()
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key list that could not be read; the message names the entry, never its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

#[derive(Clone)]
struct KeyEntry {
    name: ClientName,
    digest: [u8; 32],
}

/// The keys clients (or operators) may present, as SHA-256 digests with names. Empty =
/// authentication is off.
#[derive(Clone, Default)]
pub struct ClientKeys {
    keys: Vec<KeyEntry>,
    /// The first key given raw, for the demo traffic (which calls the gateway like a client).
    demo_key: Option<Arc<str>>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: never a key, nor a digest.
        f.debug_struct("ClientKeys")
            .field("names", &self.names())
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    // Hex digits only (`from_str_radix` alone would take a `+`).
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// `key-` and the first 8 hex digits of `digest`: the name of a key given without one.
fn default_name(digest: &[u8; 32]) -> String {
    let mut name = String::from("key-");
    for b in &digest[..4] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

impl ClientKeys {
    /// Keys from a comma-separated list (the format of `[gateway] api_keys_env`; blank entries
    /// ignored). Each entry is `KEY`, `sha256:<64 hex digits>` (the key's SHA-256), or either
    /// one after `NAME=` (`NAME` of letters, digits, `_`, `-` and `.`, at most 64 bytes). A raw
    /// key is visible ASCII; one holding `=` before its end must be given with a name. Errors
    /// name the entry by number, never its text.
    pub fn parse(list: &str) -> Result<Self, KeyError> {
        let mut keys = ClientKeys::default();
        for (i, entry) in list.split(',').enumerate() {
            keys.add_entry(entry, &format!("entry {}", i + 1))?;
        }
        Ok(keys)
    }

    /// Keys from a file's text (the format of `[gateway] api_keys_file`): one entry per line,
    /// as in [`parse`](Self::parse); blank lines and lines starting with `#` are ignored.
    pub fn parse_lines(text: &str) -> Result<Self, KeyError> {
        let mut keys = ClientKeys::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            keys.add_entry(line, &format!("line {}", i + 1))?;
        }
        Ok(keys)
    }

    /// Add the key named `name` whose SHA-256 is `sha256` (64 hex digits; a `[[gateway.keys]]`
    /// entry).
    pub fn add_hashed(&mut self, name: &str, sha256: &str) -> Result<(), KeyError> {
        if !valid_name(name) {
            return Err(KeyError(format!(
                "`name` must be 1 to {MAX_NAME_LEN} letters, digits, `_`, `-` or `.`"
            )));
        }
        let hex = sha256.strip_prefix(SHA256_PREFIX).unwrap_or(sha256);
        let digest = parse_digest(hex)
            .ok_or_else(|| KeyError("`sha256` must be 64 hex digits".to_owned()))?;
        self.push(Some(name), digest, "this key")
    }

    /// Add every key of `other` (names and keys must stay unique).
    pub fn extend(&mut self, other: ClientKeys) -> Result<(), KeyError> {
        for key in other.keys {
            self.push(
                Some(key.name.as_str()),
                key.digest,
                &format!("`{}`", key.name),
            )?;
        }
        if self.demo_key.is_none() {
            self.demo_key = other.demo_key;
        }
        Ok(())
    }

    fn add_entry(&mut self, entry: &str, at: &str) -> Result<(), KeyError> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Ok(());
        }
        // `NAME=SECRET`, unless what follows the first `=` is empty or another `=` (base64
        // padding of a raw key).
        let (name, secret) = match entry.split_once('=') {
            Some((name, rest))
                if valid_name(name) && !rest.is_empty() && !rest.starts_with('=') =>
            {
                (Some(name), rest.trim())
            }
            _ => (None, entry),
        };
        let (digest, raw) = match secret.strip_prefix(SHA256_PREFIX) {
            Some(hex) => {
                let digest = parse_digest(hex).ok_or_else(|| {
                    KeyError(format!(
                        "{at}: `{SHA256_PREFIX}` must be followed by 64 hex digits"
                    ))
                })?;
                (digest, false)
            }
            None => {
                if !secret.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(KeyError(format!(
                        "{at}: a key must be visible ASCII (no spaces or control characters)"
                    )));
                }
                (Sha256::digest(secret.as_bytes()).into(), true)
            }
        };
        self.push(name, digest, at)?;
        if raw && self.demo_key.is_none() {
            self.demo_key = Some(Arc::from(secret));
        }
        Ok(())
    }

    fn push(&mut self, name: Option<&str>, digest: [u8; 32], at: &str) -> Result<(), KeyError> {
        let name = name.map_or_else(|| default_name(&digest), str::to_owned);
        if self.keys.iter().any(|k| k.digest == digest) {
            return Err(KeyError(format!("{at}: the same key is given twice")));
        }
        if self.keys.iter().any(|k| k.name.as_str() == name) {
            return Err(KeyError(format!("{at}: the name `{name}` is used twice")));
        }
        self.keys.push(KeyEntry {
            name: ClientName::new(&name),
            digest,
        });
        Ok(())
    }

    /// Whether authentication is on (at least one key).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The first key given raw (the demo traffic presents it); `None` when every key is given
    /// by its digest.
    pub(crate) fn demo_key(&self) -> Option<&str> {
        self.demo_key.as_deref()
    }

    /// The name of the key the request's `Authorization: Bearer <key>` presents, if it is one
    /// of these. The presented key is hashed, then compared with every digest in constant time,
    /// and the match is selected without a branch.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<ClientName> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, key) in self.keys.iter().enumerate() {
            let equal = digest.ct_eq(&key.digest);
            index = u32::conditional_select(&index, &u32::try_from(i).unwrap_or(u32::MAX), equal);
            found |= equal;
        }
        if bool::from(found) {
            self.keys.get(index as usize).map(|k| k.name.clone())
        } else {
            None
        }
    }

    /// Whether the request may pass: always when authentication is off, else when
    /// [`authenticate`](Self::authenticate) finds its key.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        !self.enabled() || self.authenticate(headers).is_some()
    }
}

/// The key set in use, replaced whole by a reload. Each request reads it once.
#[derive(Debug, Default)]
pub struct KeyStore {
    current: RwLock<Arc<ClientKeys>>,
}

impl KeyStore {
    /// A store holding `keys`.
    pub fn new(keys: ClientKeys) -> Self {
        KeyStore {
            current: RwLock::new(Arc::new(keys)),
        }
    }

    /// The keys in use now.
    pub fn current(&self) -> Arc<ClientKeys> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Use `keys` from now on (requests already let in are not affected).
    pub fn replace(&self, keys: ClientKeys) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }
}

/// The validator of [`ValidateRequestHeaderLayer`]: lets a request through when its key is in
/// the [`KeyStore`] (or authentication is off), with its [`ClientName`] as a request extension
/// and in the request span's `client` field; answers [`errors::unauthorized`] otherwise.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    keys: Arc<KeyStore>,
}

impl ClientAuth {
    /// A validator over `keys`.
    pub fn new(keys: Arc<KeyStore>) -> Self {
        ClientAuth { keys }
    }

    /// The layer: `ValidateRequestHeaderLayer::custom(ClientAuth::new(keys))`.
    pub fn layer(keys: Arc<KeyStore>) -> ValidateRequestHeaderLayer<ClientAuth> {
        ValidateRequestHeaderLayer::custom(ClientAuth::new(keys))
    }
}

impl<B> ValidateRequest<B> for ClientAuth {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<Body>> {
        let keys = self.keys.current();
        if !keys.enabled() {
            return Ok(());
        }
        match keys.authenticate(request.headers()) {
            Some(name) => {
                tracing::Span::current().record("client", name.as_str());
                request.extensions_mut().insert(name);
                Ok(())
            }
            None => Err(errors::unauthorized()),
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

    fn sha256_hex(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn compares_whole_keys() {
        let keys = ClientKeys::parse("secret, other-key,,").unwrap();
        assert_eq!(
            keys.authenticate(&bearer("secret")).unwrap().as_str(),
            default_name(&Sha256::digest(b"secret").into())
        );
        assert!(keys.allows(&bearer("other-key")));
        assert!(!keys.allows(&bearer("secreT")));
        assert!(!keys.allows(&bearer("secret2")));
        assert!(!keys.allows(&bearer("")));
        assert!(!keys.allows(&HeaderMap::new()));
        let debug = format!("{keys:?}");
        assert!(
            !debug.contains("secret") && debug.contains("key-"),
            "{debug}"
        );
    }

    #[test]
    fn hashed_and_named_keys() {
        let list = format!(
            "alice=sha256:{}, bob=raw-bob, sha256:{}, padded==",
            sha256_hex("alice-key"),
            sha256_hex("anon-key")
        );
        let keys = ClientKeys::parse(&list).unwrap();
        assert_eq!(keys.len(), 4);
        let name = |k: &str| keys.authenticate(&bearer(k)).map(|n| n.to_string());
        assert_eq!(name("alice-key").as_deref(), Some("alice"));
        assert_eq!(name("raw-bob").as_deref(), Some("bob"));
        assert_eq!(
            name("anon-key"),
            Some(default_name(&Sha256::digest(b"anon-key").into()))
        );
        // Base64 padding is part of the key, not a name separator.
        assert!(name("padded==").is_some());
        // The digest itself is not a key.
        assert_eq!(name(&format!("sha256:{}", sha256_hex("alice-key"))), None);
        // Only a raw key can be presented by the demo traffic.
        assert_eq!(keys.demo_key(), Some("raw-bob"));
    }

    #[test]
    fn bad_entries_are_named_by_number_never_by_text() {
        for (list, message) in [
            (
                "ok, sha256:abc",
                "entry 2: `sha256:` must be followed by 64 hex digits",
            ),
            ("a=k1, a=k2", "entry 2: the name `a` is used twice"),
            ("k1, x=k1", "entry 2: the same key is given twice"),
            ("x=k\u{7}ey", "entry 1: a key must be visible ASCII"),
        ] {
            let err = ClientKeys::parse(list).unwrap_err().to_string();
            assert!(err.starts_with(message), "{err}");
            assert!(!err.contains("k1") && !err.contains("abc"), "{err}");
        }
        let err = ClientKeys::parse_lines("# comment\n\nk1\nsha256:zz\n").unwrap_err();
        assert!(err.to_string().starts_with("line 4:"), "{err}");
        let mut keys = ClientKeys::default();
        assert!(keys.add_hashed("bad name", &sha256_hex("x")).is_err());
        assert!(keys.add_hashed("ok", "1234").is_err());
        let plus = format!("+{}", &sha256_hex("x")[1..]);
        assert!(
            keys.add_hashed("ok", &plus).is_err(),
            "a sign is not a hex digit"
        );
        keys.add_hashed("ok", &sha256_hex("x")).unwrap();
        assert!(keys.allows(&bearer("x")));
    }

    #[test]
    fn the_validator_answers_an_openai_shaped_401_and_names_the_client() {
        let store = Arc::new(KeyStore::new(ClientKeys::parse("carol=k").unwrap()));
        let mut auth = ClientAuth::new(Arc::clone(&store));
        let mut req = Request::new(());
        let res = auth.validate(&mut req).unwrap_err();
        assert_eq!(res.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        *req.headers_mut() = bearer("k");
        assert!(auth.validate(&mut req).is_ok());
        assert_eq!(
            req.extensions().get::<ClientName>().unwrap().as_str(),
            "carol"
        );
        // A replaced set applies to the next request.
        store.replace(ClientKeys::parse("dave=k2").unwrap());
        assert!(auth.validate(&mut req).is_err());
    }
}
