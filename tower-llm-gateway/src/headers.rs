//! Which headers cross the gateway: allow-lists in both directions ([`HeaderPolicy`]).
//!
//! A header crosses only when it is on the list; everything else stays on its side. The lists
//! are short on purpose: the gateway calls providers with the operator's keys, so a client must
//! not choose whose account pays or steer the provider beyond its request body, and a client
//! must not see the operator's account (organisation, rate-limit counters) or receive the
//! provider's cookies.
//!
//! **Upstream** ([`DEFAULT_REQUEST_HEADERS`]), and why each:
//! - `content-type`: the body's media type (the upstream parses it as JSON);
//! - `accept`: JSON or `text/event-stream`, as the client negotiates;
//! - `user-agent`: the client's SDK and version, which providers use to work around SDK quirks;
//! - `x-request-id`: the gateway's correlation id (set when the client sent none), so a request
//!   can be followed from the client through the gateway to the provider's logs;
//! - `idempotency-key`: lets a provider that supports it deduplicate a client's own retries.
//!
//! Not forwarded, among others: `openai-organization` and `openai-project` (they pick the
//! account and project billed), credentials (`authorization`, `cookie`, `x-api-key`, ...: a
//! client key is for the gateway; the stack sets each target's own credential), `forwarded` /
//! `x-forwarded-*` (the client's address is not the provider's business), `accept-encoding`
//! (the stack reads error bodies and stream events, so answers must come uncompressed), and
//! hop-by-hop headers. The upstream request's `content-length` is the length of the body the
//! gateway sends: the client's header is kept only when it states exactly that length
//! ([`HeaderPolicy::retain_upstream_request_headers_for_body`]), otherwise hyper writes it.
//! `[gateway] forward_request_headers` adds names (e.g. `traceparent`);
//! the credentials, `host`, `content-length`, `accept-encoding` and hop-by-hop headers can
//! never be added. With the OTLP exporter on (`[telemetry]`, see [`crate::telemetry`]) the
//! gateway continues a client's `traceparent` itself and sets each upstream attempt's own,
//! replacing a forwarded one (never sent twice), whatever this list says.
//!
//! **Back to the client** ([`DEFAULT_RESPONSE_HEADERS`]), and why each:
//! - `content-type`: JSON or an SSE stream;
//! - `cache-control`: an SSE answer's `no-cache` keeps proxies between the gateway and the
//!   client from buffering the stream;
//! - `x-llm-target`, `x-llm-fallback`: the gateway's own account of who answered.
//!
//! Not forwarded: `set-cookie`, `openai-organization`, `openai-project`, `openai-version`,
//! `openai-processing-ms`, `x-ratelimit-*`, `anthropic-ratelimit-*` (the operator's account and
//! its limits), the upstream's `x-request-id` (the client gets the gateway's id, the one in the
//! gateway's logs and sent upstream), and `retry-after`: an upstream's delay is about the
//! operator's account at one provider, while the gateway fails over; when it cannot answer it
//! sets its own `retry-after` on its 429 and 503. `[gateway] forward_response_headers` adds
//! names; hop-by-hop headers and `content-length` (hyper frames the body) can never be added.
//!
//! ```
//! use http::HeaderMap;
//! use tower_llm_gateway::headers::HeaderPolicy;
//!
//! let policy = HeaderPolicy::new(&["traceparent"], &[]).unwrap();
//! let mut client = HeaderMap::new();
//! client.insert("content-type", "application/json".parse().unwrap());
//! client.insert("openai-organization", "org-someone-else".parse().unwrap());
//! client.insert("traceparent", "00-abc-def-01".parse().unwrap());
//! let upstream = policy.upstream_request_headers(&client);
//! let names: Vec<&str> = upstream.keys().map(|k| k.as_str()).collect();
//! assert_eq!(names, ["content-type", "traceparent"]);
//!
//! // Credentials can never be forwarded.
//! assert!(HeaderPolicy::new(&["authorization"], &[]).is_err());
//! ```

use http::header::{self, HeaderMap, HeaderName};
use tower_llm::fallback::{X_LLM_FALLBACK, X_LLM_TARGET};

/// The client headers forwarded upstream by default (see the [module docs](self) for why each).
pub const DEFAULT_REQUEST_HEADERS: [&str; 5] = [
    "content-type",
    "accept",
    "user-agent",
    "x-request-id",
    "idempotency-key",
];

/// The upstream headers forwarded to the client by default (see the [module docs](self)).
pub const DEFAULT_RESPONSE_HEADERS: [&str; 4] = [
    "content-type",
    "cache-control",
    "x-llm-target",
    "x-llm-fallback",
];

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Never forwarded upstream, whatever the configuration says (besides hop-by-hop headers).
const NEVER_UPSTREAM: [HeaderName; 8] = [
    header::AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
    header::HOST,
    header::CONTENT_LENGTH,
    header::ACCEPT_ENCODING,
];

/// Which headers cross the gateway, each way; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct HeaderPolicy {
    request: Vec<HeaderName>,
    response: Vec<HeaderName>,
}

impl Default for HeaderPolicy {
    /// The default lists, nothing added.
    fn default() -> Self {
        HeaderPolicy {
            request: DEFAULT_REQUEST_HEADERS
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect(),
            response: vec![
                header::CONTENT_TYPE,
                header::CACHE_CONTROL,
                X_LLM_TARGET,
                X_LLM_FALLBACK,
            ],
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// `name` as a header name allowed upstream, or why not.
pub fn check_request_header(name: &str) -> Result<HeaderName, String> {
    let parsed = parse_name(name)?;
    if NEVER_UPSTREAM.contains(&parsed) || is_hop_by_hop(&parsed) {
        return Err(format!(
            "`{parsed}` is never forwarded upstream (a credential, hop-by-hop, or set by the gateway)"
        ));
    }
    Ok(parsed)
}

/// `name` as a header name allowed back to clients, or why not.
pub fn check_response_header(name: &str) -> Result<HeaderName, String> {
    let parsed = parse_name(name)?;
    if parsed == header::CONTENT_LENGTH || is_hop_by_hop(&parsed) {
        return Err(format!(
            "`{parsed}` is never forwarded to clients (hop-by-hop, or set by the gateway)"
        ));
    }
    Ok(parsed)
}

fn parse_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a header name", name.escape_debug()))
}

impl HeaderPolicy {
    /// The default lists plus `request` (forwarded upstream) and `response` (forwarded back);
    /// names are checked with [`check_request_header`] and [`check_response_header`].
    pub fn new(request: &[&str], response: &[&str]) -> Result<Self, String> {
        let mut policy = HeaderPolicy::default();
        for name in request {
            let name = check_request_header(name)?;
            if !policy.request.contains(&name) {
                policy.request.push(name);
            }
        }
        for name in response {
            let name = check_response_header(name)?;
            if !policy.response.contains(&name) {
                policy.response.push(name);
            }
        }
        Ok(policy)
    }

    /// The names forwarded upstream.
    pub fn request_headers(&self) -> &[HeaderName] {
        &self.request
    }

    /// The names forwarded back to clients.
    pub fn response_headers(&self) -> &[HeaderName] {
        &self.response
    }

    /// The client's headers that go upstream: the allowed ones, less any the `Connection`
    /// header names (hop-by-hop for this message).
    pub fn upstream_request_headers(&self, client: &HeaderMap) -> HeaderMap {
        keep(client, &self.request)
    }

    /// Drop from the client's `headers`, in place, every header that does not go upstream:
    /// what is left is [`upstream_request_headers`](Self::upstream_request_headers) of them,
    /// without copying the kept ones into a new map.
    pub fn retain_upstream_request_headers(&self, headers: &mut HeaderMap) {
        retain(headers, &self.request, None);
    }

    /// As [`retain_upstream_request_headers`](Self::retain_upstream_request_headers), for a
    /// request whose body goes upstream as `body_len` bytes: the client's `content-length` is
    /// kept when it is the one value of its name and states exactly that length. It is the
    /// header the upstream request needs; otherwise hyper writes it again, an allocation per
    /// request. Any other `content-length` is dropped, as before.
    pub fn retain_upstream_request_headers_for_body(
        &self,
        headers: &mut HeaderMap,
        body_len: usize,
    ) {
        let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
        let states_len = match (lengths.next(), lengths.next()) {
            (Some(value), None) => is_decimal(value.as_bytes(), body_len),
            _ => false,
        };
        retain(
            headers,
            &self.request,
            states_len.then_some(&header::CONTENT_LENGTH),
        );
    }

    /// The upstream's headers that go back to the client (the rest are dropped).
    pub fn client_response_headers(&self, upstream: &mut HeaderMap) {
        retain(upstream, &self.response, None);
    }
}

/// Whether `value` is `n` written in decimal as hyper writes a length: digits only, no sign, no
/// leading zero (other spellings are dropped, and hyper writes its own).
fn is_decimal(value: &[u8], n: usize) -> bool {
    if value.is_empty() || value.len() > 20 || (value[0] == b'0' && value.len() > 1) {
        return false;
    }
    let mut parsed: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return false;
        }
        let Some(next) = parsed
            .checked_mul(10)
            .and_then(|p| p.checked_add(u64::from(b - b'0')))
        else {
            return false;
        };
        parsed = next;
    }
    u64::try_from(n) == Ok(parsed)
}

/// The names `map`'s `Connection` header lists (hop-by-hop for this message).
fn connection_named(map: &HeaderMap) -> Vec<HeaderName> {
    // Most messages have no `Connection` header: then no list is built.
    if !map.contains_key(header::CONNECTION) {
        return Vec::new();
    }
    map.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Drop from `map` every header not named in `allowed` (or `also`) or named by its `Connection`
/// header: the same headers as [`keep`] leaves, each name's values in order.
fn retain(map: &mut HeaderMap, allowed: &[HeaderName], also: Option<&HeaderName>) {
    let is_allowed = |name: &HeaderName| allowed.contains(name) || also == Some(name);
    let mut dropped = Dropped::default();
    let mut has_connection = false;
    for name in map.keys() {
        if is_allowed(name) {
            continue;
        }
        // Never allowed (hop-by-hop): seen here, so most messages, which have none, are not
        // looked up for it.
        has_connection |= name == header::CONNECTION;
        if !dropped.push(name) {
            return copy_allowed(map, allowed, also);
        }
    }
    if has_connection {
        // Allowed names the `Connection` header lists are hop-by-hop for this message.
        let named = connection_named(map);
        for name in map.keys() {
            if is_allowed(name) && named.contains(name) && !dropped.push(name) {
                return copy_allowed(map, allowed, also);
            }
        }
    }
    for name in dropped.names.iter().flatten() {
        map.remove(name);
    }
}

/// The names [`retain`] removes in place. A message usually drops a few (`host`,
/// `content-length`, a credential, `date`): removing those is cheaper than copying every kept
/// header into a new map. Past `FEW` it copies instead ([`copy_allowed`]), which bounds the
/// work for a message full of unknown headers.
#[derive(Default)]
struct Dropped {
    names: [Option<HeaderName>; Dropped::FEW],
    count: usize,
}

impl Dropped {
    const FEW: usize = 8;

    /// Note `name` for removal; `false` when the list is full.
    fn push(&mut self, name: &HeaderName) -> bool {
        let Some(slot) = self.names.get_mut(self.count) else {
            return false;
        };
        *slot = Some(name.clone());
        self.count += 1;
        true
    }
}

/// [`retain`]'s rare path: `map` replaced by a copy of its allowed headers.
#[cold]
fn copy_allowed(map: &mut HeaderMap, allowed: &[HeaderName], also: Option<&HeaderName>) {
    // The list with `also` is built here only.
    let mut all = allowed.to_vec();
    all.extend(also.cloned());
    *map = keep(map, &all);
}

/// The headers of `from` named in `allowed` and not named by its `Connection` header.
fn keep(from: &HeaderMap, allowed: &[HeaderName]) -> HeaderMap {
    kept(from, allowed, &connection_named(from))
}

/// The headers of `from` named in `allowed` and not in `connection_named`, copied.
fn kept(from: &HeaderMap, allowed: &[HeaderName], connection_named: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(allowed.len());
    // One pass over the message's headers, each compared with the short allowed list: cheaper
    // than a hash lookup per allowed name, most of which a message does not carry.
    for (name, value) in from {
        if allowed.contains(name) && !connection_named.contains(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_allowed_headers_go_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, x-secret-hop, user-agent".parse().unwrap(),
        );
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-foo", "1".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer client".parse().unwrap());
        h.insert("openai-organization", "org-x".parse().unwrap());
        h.insert("openai-project", "proj-x".parse().unwrap());
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert(header::USER_AGENT, "sdk/1".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        let out = HeaderPolicy::default().upstream_request_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // `user-agent` is allowed, but this message's `Connection` names it.
        assert_eq!(names, ["content-type", "x-request-id"]);
    }

    #[test]
    fn only_allowed_headers_come_back_with_every_value() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append("x-ratelimit-remaining-requests", "9".parse().unwrap());
        h.append("x-extra", "1".parse().unwrap());
        h.append("x-extra", "2".parse().unwrap());
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        let policy = HeaderPolicy::new(&[], &["X-Extra"]).unwrap();
        policy.client_response_headers(&mut h);
        let extra: Vec<_> = h.get_all("x-extra").iter().collect();
        assert_eq!(extra, ["1", "2"]);
        assert_eq!(h.len(), 3, "{h:?}");
    }

    /// `h` with `extra` unknown names added, kept in place: checked against the copying
    /// [`keep`] of the same message.
    fn retained_with(mut h: HeaderMap, allowed: &[HeaderName], extra: usize) -> HeaderMap {
        for i in 0..extra {
            h.append(
                HeaderName::from_bytes(format!("x-drop-{i}").as_bytes()).unwrap(),
                "1".parse().unwrap(),
            );
        }
        let copied = keep(&h, allowed);
        retain(&mut h, allowed, None);
        assert_eq!(h, copied, "{extra} names dropped");
        h
    }

    #[test]
    fn in_place_takes_the_same_headers_whatever_the_number_dropped() {
        let allowed = [header::CONTENT_TYPE, header::USER_AGENT];
        for extra in [0, 1, 7, 8, 9, 40] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            h.append(header::USER_AGENT, "a".parse().unwrap());
            h.append(header::USER_AGENT, "b".parse().unwrap());
            let h = retained_with(h, &allowed, extra);
            assert_eq!(h.len(), 3);
            let agents: Vec<_> = h.get_all(header::USER_AGENT).iter().collect();
            assert_eq!(agents, ["a", "b"]);
        }
    }

    #[test]
    fn in_place_drops_the_connection_named_whatever_the_number_dropped() {
        // The `Connection` header and the names it lists fill the in-place list at every
        // point: before it is read, while the listed names are added, and not at all.
        let allowed = [header::CONTENT_TYPE, header::USER_AGENT, header::ACCEPT];
        for extra in [0, 5, 6, 7, 8] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            h.insert(header::USER_AGENT, "a".parse().unwrap());
            h.insert(header::ACCEPT, "*/*".parse().unwrap());
            h.insert(header::CONNECTION, "user-agent, accept".parse().unwrap());
            let h = retained_with(h, &allowed, extra);
            let names: Vec<_> = h.keys().collect();
            assert_eq!(names, [header::CONTENT_TYPE], "{extra} names dropped");
        }
    }

    #[test]
    fn the_body_length_is_kept_only_when_the_client_stated_it_exactly() {
        let policy = HeaderPolicy::default();
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            h.insert(header::HOST, "gateway".parse().unwrap());
            for v in values {
                h.append(header::CONTENT_LENGTH, v.parse().unwrap());
            }
            h
        };
        let mut h = with(&["17"]);
        policy.retain_upstream_request_headers_for_body(&mut h, 17);
        let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(lengths, ["17"]);
        assert!(!h.contains_key(header::HOST));
        // Another length, another spelling, two values, none: dropped (hyper writes its own).
        for (values, len) in [
            (&["16"][..], 17),
            (&["017"], 17),
            (&["+17"], 17),
            (&[" 17"], 17),
            (&["17", "17"], 17),
            (&["18446744073709551616"], 0),
            (&[], 0),
        ] {
            let mut h = with(values);
            policy.retain_upstream_request_headers_for_body(&mut h, len);
            assert!(!h.contains_key(header::CONTENT_LENGTH), "{values:?}");
            assert!(h.contains_key(header::CONTENT_TYPE));
        }
        // Named by `Connection`: hop-by-hop for this message, dropped.
        let mut h = with(&["0"]);
        h.insert(header::CONNECTION, "content-length".parse().unwrap());
        policy.retain_upstream_request_headers_for_body(&mut h, 0);
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        // The same past the in-place limit, where the kept headers are copied instead.
        let mut h = with(&["5"]);
        for i in 0..20 {
            h.append(
                HeaderName::from_bytes(format!("x-drop-{i}").as_bytes()).unwrap(),
                "1".parse().unwrap(),
            );
        }
        policy.retain_upstream_request_headers_for_body(&mut h, 5);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "content-type"]);
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "5");
        // The other direction never keeps it.
        let mut h = with(&["5"]);
        policy.client_response_headers(&mut h);
        assert!(!h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn decimal_lengths() {
        assert!(is_decimal(b"0", 0));
        assert!(is_decimal(b"1234", 1234));
        assert!(is_decimal(b"18446744073709551615", usize::MAX) == (usize::BITS == 64));
        for bad in [
            &b""[..],
            b"00",
            b"01",
            b"-1",
            b"1 ",
            b"1e3",
            b"99999999999999999999",
        ] {
            assert!(!is_decimal(bad, 1), "{bad:?}");
        }
    }

    #[test]
    fn configured_names_are_checked() {
        for bad in [
            "authorization",
            "Cookie",
            "proxy-x",
            "host",
            "accept-encoding",
            "te",
        ] {
            assert!(HeaderPolicy::new(&[bad], &[]).is_err(), "{bad}");
        }
        for bad in ["content-length", "transfer-encoding", "connection"] {
            assert!(HeaderPolicy::new(&[], &[bad]).is_err(), "{bad}");
        }
        let err = HeaderPolicy::new(&["bad name"], &[]).unwrap_err();
        assert_eq!(err, "`bad name` is not a header name");
        assert!(HeaderPolicy::new(&["traceparent"], &["set-cookie"]).is_ok());
    }
    proptest::proptest! {
        /// Whatever the message carries: exactly the allowed names' values, every value of
        /// each in order, none the `Connection` header names.
        #[test]
        fn keep_takes_the_allowed_values_less_the_connection_named(
            entries in proptest::collection::vec((0usize..8, 0u8..4), 0..12),
            connection in proptest::option::of(proptest::collection::vec(0usize..8, 0..3)),
        ) {
            const NAMES: [&str; 8] = [
                "content-type", "accept", "user-agent", "x-request-id", "x-a", "x-b", "date",
                "keep-alive",
            ];
            let mut from = HeaderMap::new();
            for (name, value) in &entries {
                from.append(NAMES[*name], HeaderValue::from(u16::from(*value)));
            }
            if let Some(named) = &connection {
                let list: Vec<&str> = named.iter().map(|i| NAMES[*i]).collect();
                from.insert(header::CONNECTION, list.join(", ").parse().unwrap());
            }
            let allowed: Vec<HeaderName> =
                ["content-type", "user-agent", "x-a", "date"].map(HeaderName::from_static).into();
            let out = keep(&from, &allowed);
            let mut retained = from.clone();
            retain(&mut retained, &allowed, None);
            for name in NAMES.iter().chain([&"connection"]) {
                let dropped = connection.as_ref().is_some_and(|n| n.iter().any(|i| NAMES[*i] == *name));
                let want: Vec<&HeaderValue> = if allowed.iter().any(|a| a == name) && !dropped {
                    from.get_all(*name).iter().collect()
                } else {
                    Vec::new()
                };
                let got: Vec<&HeaderValue> = out.get_all(*name).iter().collect();
                proptest::prop_assert_eq!(&got, &want, "{}", name);
                let in_place: Vec<&HeaderValue> = retained.get_all(*name).iter().collect();
                proptest::prop_assert_eq!(in_place, want, "in place: {}", name);
            }
        }
    }
}
