//! Partition keys: which partition (and so which limits) a request falls in.
//!
//! - [`Global`] (the default): one partition for every call.
//! - [`ByTarget`]: the [`Target`] request extension a fallback layer sets (provider + model).
//! - [`ByHeader`]: a request header, such as a tenant id.
//! - [`ByModel`]: the model, from the `Target` extension or the JSON body's `model`.
//! - [`partition_fn`]: any closure, for typed clients (`|req: &ChatRequest| req.tenant.clone()`).
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::{BulkheadLayer, ByHeader, ErrorsOnly};
//! use tower_llm_core::{BulkheadFull, LimitKind};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = BulkheadLayer::builder()
//!     .partition_by(ByHeader::new(http::HeaderName::from_static("x-tenant")))
//!     .max_concurrent(1)
//!     .max_queued(0)
//!     .release_on_response()
//!     .classifier(ErrorsOnly)
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: http::Request<()>| async {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, std::convert::Infallible>(())
//! }));
//! let tenant = |t: &'static str| http::Request::builder().header("x-tenant", t).body(()).unwrap();
//!
//! let busy = tokio::spawn(svc.clone().oneshot(tenant("a")));
//! tokio::task::yield_now().await;
//! // Tenant a is at its limit; tenant b has its own.
//! let err = svc.clone().oneshot(tenant("a")).await.unwrap_err();
//! let full = err.downcast_ref::<BulkheadFull>().unwrap();
//! assert_eq!((full.bulkhead(), full.limit()), ("a", LimitKind::Concurrency));
//! assert!(svc.clone().oneshot(tenant("b")).await.is_ok());
//! busy.await.unwrap().unwrap();
//! # }
//! ```

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use tower_llm_core::{ReplayableBody, Target};

/// What a partition key must be: cheap to clone, hashable, and displayable. Its `Display` names
/// the partition in errors, metrics and snapshots, so it must not reveal secrets.
///
/// Implemented for every type with these properties.
pub trait PartitionKey: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static {}

impl<T: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static> PartitionKey for T {}

/// A partitioning scheme: the key type its partitions are stored by.
pub trait Partitioner: Clone + Send + Sync + 'static {
    /// The partition key.
    type Key: PartitionKey;

    /// Whether every call goes to one partition, so no key is ever computed.
    fn is_single(&self) -> bool {
        false
    }
}

/// Extracts the partition key of a request.
pub trait PartitionBy<Req>: Partitioner {
    /// The key of `request`.
    fn key(&self, request: &Req) -> Self::Key;
}

/// One partition for every call (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

/// The key of [`Global`]'s only partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllCalls;

impl fmt::Display for AllCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("all")
    }
}

impl Partitioner for Global {
    type Key = AllCalls;

    fn is_single(&self) -> bool {
        true
    }
}

impl<Req> PartitionBy<Req> for Global {
    fn key(&self, _request: &Req) -> AllCalls {
        AllCalls
    }
}

/// Partition by the [`Target`] request extension (provider + model), so each target a fallback
/// layer routes to has its own limits. Requests without the extension share the partition of
/// [`ByTarget::unrouted`] (default: provider `unrouted`).
#[derive(Clone, Debug)]
pub struct ByTarget {
    unrouted: Target,
}

impl ByTarget {
    /// Partition by target; untargeted requests go to the `unrouted` partition.
    pub fn new() -> Self {
        ByTarget {
            unrouted: Target::new("unrouted", ""),
        }
    }

    /// The key of requests without a `Target` extension.
    pub fn unrouted(mut self, target: Target) -> Self {
        self.unrouted = target;
        self
    }
}

impl Default for ByTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Partitioner for ByTarget {
    type Key = Target;
}

impl<B> PartitionBy<http::Request<B>> for ByTarget {
    fn key(&self, request: &http::Request<B>) -> Target {
        // A clone is two reference-count increments: no allocation per call.
        request
            .extensions()
            .get::<Target>()
            .unwrap_or(&self.unrouted)
            .clone()
    }
}

/// Partition by the value of a request header (a tenant id, a team, an API product).
///
/// Requests without the header share one partition (named `-`). Values of credential headers
/// (`authorization`, `proxy-authorization`, `x-api-key`, `api-key`, `x-goog-api-key`) or values
/// marked sensitive are shown as a hash, never verbatim, wherever the key is displayed.
#[derive(Clone, Debug)]
pub struct ByHeader {
    name: HeaderName,
    secret: bool,
}

impl ByHeader {
    /// Partition by header `name`.
    pub fn new(name: HeaderName) -> Self {
        let secret = matches!(
            name.as_str(),
            "authorization" | "proxy-authorization" | "x-api-key" | "api-key" | "x-goog-api-key"
        );
        ByHeader { name, secret }
    }
}

/// The key of [`ByHeader`]: a header value, or its absence.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HeaderKey {
    value: Option<HeaderValue>,
    secret: bool,
}

impl HeaderKey {
    /// The header value, if the request had one.
    pub fn value(&self) -> Option<&HeaderValue> {
        self.value.as_ref()
    }
}

impl fmt::Display for HeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            None => f.write_str("-"),
            Some(v) if self.secret || v.is_sensitive() => {
                let mut h = DefaultHasher::new();
                v.as_bytes().hash(&mut h);
                write!(f, "hash:{:016x}", h.finish())
            }
            Some(v) => match v.to_str() {
                Ok(s) => f.write_str(s),
                Err(_) => write!(f, "{:?}", v),
            },
        }
    }
}

impl fmt::Debug for HeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeaderKey({self})")
    }
}

impl Partitioner for ByHeader {
    type Key = HeaderKey;
}

impl<B> PartitionBy<http::Request<B>> for ByHeader {
    fn key(&self, request: &http::Request<B>) -> HeaderKey {
        HeaderKey {
            value: request.headers().get(&self.name).cloned(),
            secret: self.secret,
        }
    }
}

/// Partition by model: the [`Target`] extension's model when set, else the `model` field of a
/// buffered JSON body ([`ReplayableBody::buffered`]); requests naming no model share the
/// partition `-`.
///
/// Reading the body allocates the model name; with a `Target` extension there is no allocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByModel;

/// The key of [`ByModel`]: a model name. Two keys are equal when their model names are.
#[derive(Clone)]
pub struct ModelKey(ModelName);

#[derive(Clone)]
enum ModelName {
    Target(Target),
    Named(Arc<str>),
    Unknown,
}

impl ModelKey {
    /// A key for `model`.
    pub fn new(model: impl Into<Arc<str>>) -> Self {
        ModelKey(ModelName::Named(model.into()))
    }

    /// The model name (`-` when unknown).
    pub fn model(&self) -> &str {
        match &self.0 {
            ModelName::Target(t) if !t.model().is_empty() => t.model(),
            ModelName::Named(m) => m,
            _ => "-",
        }
    }
}

impl PartialEq for ModelKey {
    fn eq(&self, other: &Self) -> bool {
        self.model() == other.model()
    }
}

impl Eq for ModelKey {}

impl Hash for ModelKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.model().hash(state);
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model())
    }
}

impl fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelKey({})", self.model())
    }
}

impl Partitioner for ByModel {
    type Key = ModelKey;
}

#[derive(Deserialize)]
struct ModelField<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

impl<B: ReplayableBody> PartitionBy<http::Request<B>> for ByModel {
    fn key(&self, request: &http::Request<B>) -> ModelKey {
        if let Some(target) = request.extensions().get::<Target>() {
            if !target.model().is_empty() {
                return ModelKey(ModelName::Target(target.clone()));
            }
        }
        let named = request
            .body()
            .buffered()
            .and_then(|bytes| serde_json::from_slice::<ModelField<'_>>(bytes).ok())
            .and_then(|f| f.model)
            .map(|m| ModelName::Named(Arc::from(m.as_ref())));
        ModelKey(named.unwrap_or(ModelName::Unknown))
    }
}

/// Partition by a closure's result; see [`partition_fn`].
pub struct PartitionFn<F, K> {
    f: F,
    _key: PhantomData<fn() -> K>,
}

/// Partition by `f(&request)`: any key type that is `Clone + Eq + Hash + Display`.
///
/// ```
/// use tower_llm_bulkhead::{partition_fn, BulkheadLayer};
///
/// struct ChatRequest { tenant: String }
/// let layer = BulkheadLayer::builder()
///     .partition_by(partition_fn(|req: &ChatRequest| req.tenant.clone()))
///     .release_on_response()
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
pub fn partition_fn<F, Req, K>(f: F) -> PartitionFn<F, K>
where
    F: Fn(&Req) -> K,
{
    PartitionFn {
        f,
        _key: PhantomData,
    }
}

impl<F: Clone, K> Clone for PartitionFn<F, K> {
    fn clone(&self) -> Self {
        PartitionFn {
            f: self.f.clone(),
            _key: PhantomData,
        }
    }
}

impl<F, K> fmt::Debug for PartitionFn<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionFn").finish_non_exhaustive()
    }
}

impl<F, K> Partitioner for PartitionFn<F, K>
where
    F: Clone + Send + Sync + 'static,
    K: PartitionKey,
{
    type Key = K;
}

impl<F, K, Req> PartitionBy<Req> for PartitionFn<F, K>
where
    F: Fn(&Req) -> K + Clone + Send + Sync + 'static,
    K: PartitionKey,
{
    fn key(&self, request: &Req) -> K {
        (self.f)(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tower_llm_core::ReplayBody;

    type Body = ReplayBody<http_body_util::Empty<Bytes>>;

    #[test]
    fn target_key_falls_back_to_unrouted() {
        let mut req = http::Request::new(());
        assert_eq!(ByTarget::new().key(&req).to_string(), "unrouted");
        req.extensions_mut().insert(Target::new("groq", "llama"));
        assert_eq!(ByTarget::new().key(&req).to_string(), "groq/llama");
    }

    #[test]
    fn header_key_hides_credentials() {
        let req = http::Request::builder()
            .header("x-tenant", "acme")
            .header("authorization", "Bearer sk-secret")
            .body(())
            .unwrap();
        let tenant = ByHeader::new(HeaderName::from_static("x-tenant")).key(&req);
        assert_eq!(tenant.to_string(), "acme");
        let auth = ByHeader::new(http::header::AUTHORIZATION).key(&req);
        assert!(auth.to_string().starts_with("hash:"), "{auth}");
        assert!(!format!("{auth:?}").contains("sk-secret"));
        let missing = ByHeader::new(HeaderName::from_static("x-team")).key(&req);
        assert_eq!(missing.to_string(), "-");
    }

    #[test]
    fn model_key_from_target_or_body() {
        let body = Bytes::from_static(br#"{"messages":[],"model":"gpt-4o"}"#);
        let mut req = http::Request::new(Body::from_bytes(body));
        let from_body = ByModel.key(&req);
        assert_eq!(from_body.to_string(), "gpt-4o");
        req.extensions_mut().insert(Target::new("openai", "gpt-4o"));
        let from_target = ByModel.key(&req);
        assert_eq!(from_target, from_body, "same model, same partition");
        let none = ByModel.key(&http::Request::new(Body::from_bytes(Bytes::from_static(
            b"{}",
        ))));
        assert_eq!(none.to_string(), "-");
        assert_eq!(ModelKey::new("gpt-4o"), from_body);
    }
}
