//! [`FallbackLayer`]: wrap one client (one client, many targets) or build from one service per
//! target.
//!
//! The layer owns the chain's state behind an `Arc`: every service it returns, by
//! [`Layer::layer`] or [`FallbackLayer::services`], every clone of them and every clone of the
//! layer share one set of cooldowns, health, cache and escalation counters, and
//! [`FallbackLayer::handle`] reads and steers it from outside the `ServiceBuilder` chain.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{BufferRequestBodyLayer, ReplayBody, Target};
//! use tower_llm_fallback::{FallbackLayer, TargetConfig, X_LLM_TARGET};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // One client for every target: the layer rewrites each attempt and sets the `Target`
//! // extension that per-target layers below (breaker, bulkhead) key their state by.
//! let client = service_fn(|req: http::Request<ReplayBody<Full<Bytes>>>| async move {
//!     let target = req.extensions().get::<Target>().unwrap().clone();
//!     let status = if target.provider() == "primary" { 503 } else { 200 };
//!     let body = format!(r#"{{"model":"{}","choices":[]}}"#, target.model());
//!     Ok::<_, std::convert::Infallible>(
//!         http::Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap(),
//!     )
//! });
//! let fallback = FallbackLayer::builder()
//!     .target(TargetConfig::new("primary", "big-model"))
//!     .target(TargetConfig::new("secondary", "small-model").base_url("http://secondary.example/v1"))
//!     .build()
//!     .unwrap();
//! let handle = fallback.handle(); // owned: outlives the layer's move into the chain
//! let svc = ServiceBuilder::new()
//!     .layer(BufferRequestBodyLayer::default()) // makes the request body replayable
//!     .layer(fallback)
//!     .service(client);
//! let req = http::Request::post("http://primary.example/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"alias","messages":[]}"#)))
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()[X_LLM_TARGET], "secondary/small-model");
//! assert!(!handle.health().targets[0].available); // the primary cools down
//! # }
//! ```

use std::sync::Arc;

use tower_layer::Layer;
use tower_llm_core::{ConfigError, HttpClassifier};

use crate::chain::Shared;
use crate::config::FallbackLayerBuilder;
use crate::handle::FallbackHandle;
use crate::service::Fallback;

/// A fallback chain's configuration and state, applied to services.
///
/// Every service this layer produces (by [`Layer::layer`] or [`services`](Self::services)) shares
/// one state: cooldowns, health, cache and escalation counters.
#[derive(Clone, Debug)]
pub struct FallbackLayer<C = HttpClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl FallbackLayer {
    /// Start building a chain.
    pub fn builder() -> FallbackLayerBuilder {
        FallbackLayerBuilder::new()
    }
}

impl<C> FallbackLayer<C> {
    pub(crate) fn from_parts(shared: Shared, classifier: C) -> Self {
        FallbackLayer {
            shared: Arc::new(shared),
            classifier,
        }
    }

    /// An owned handle on the chain's health, cooldowns and saved state, shared with every
    /// service this layer builds. Take it before the layer moves into a `ServiceBuilder` chain.
    pub fn handle(&self) -> FallbackHandle {
        FallbackHandle::new(Arc::clone(&self.shared))
    }

    /// One service per target: `services` pairs each target name with its service (for
    /// heterogeneous stacks, box them as `tower::util::BoxCloneSyncService`). Every target needs
    /// exactly one service.
    pub fn services<S, N>(
        &self,
        services: impl IntoIterator<Item = (N, S)>,
    ) -> Result<Fallback<S, C>, ConfigError>
    where
        N: AsRef<str>,
        C: Clone,
    {
        let mut slots: Vec<Option<S>> = (0..self.shared.targets.len()).map(|_| None).collect();
        for (name, service) in services {
            let name = name.as_ref();
            let idx = self
                .shared
                .targets
                .iter()
                .position(|t| &*t.name == name)
                .ok_or_else(|| ConfigError::new("services", format!("no target named `{name}`")))?;
            match slots.get_mut(idx) {
                Some(slot @ None) => *slot = Some(service),
                _ => {
                    return Err(ConfigError::new(
                        "services",
                        format!("two services for target `{name}`"),
                    ))
                }
            }
        }
        let services = slots
            .into_iter()
            .zip(self.shared.targets.iter())
            .map(|(slot, target)| {
                slot.ok_or_else(|| {
                    ConfigError::new(
                        "services",
                        format!("no service for target `{}`", target.name),
                    )
                })
            })
            .collect::<Result<Vec<S>, ConfigError>>()?;
        Ok(Fallback::new(
            Arc::clone(&self.shared),
            services.into(),
            self.classifier.clone(),
        ))
    }
}

impl<S, C> Layer<S> for FallbackLayer<C>
where
    S: Clone,
    C: Clone,
{
    type Service = Fallback<S, C>;

    /// Every target calls a clone of `inner`.
    fn layer(&self, inner: S) -> Self::Service {
        let services: Vec<S> = (0..self.shared.targets.len())
            .map(|_| inner.clone())
            .collect();
        Fallback::new(
            Arc::clone(&self.shared),
            services.into(),
            self.classifier.clone(),
        )
    }
}
