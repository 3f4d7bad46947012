//! One target's stack (breaker → retry → bulkhead → stream guard → error-body inspection →
//! client), and the registry that builds each target once and shares it between routes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Either;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_breaker::{BreakerHandle, CircuitBreakerLayer};
use tower_llm_bulkhead::{AllCalls, BulkheadHandle, PermitBody};
use tower_llm_core::{
    BoxError, ConfigError, GuardedBody, InspectErrorBodyLayer, ReplayBody, Target,
};

use super::plan::TargetLayers;
use super::{lock, TargetBody, TargetService};
use crate::config::layers;

/// One target's stack and the handles the health report reads.
pub(super) struct TargetEntry<ReqB, ResB> {
    pub(super) target: Target,
    pub(super) breaker: Option<BreakerHandle>,
    pub(super) bulkhead: Option<BulkheadHandle<AllCalls>>,
    pub(super) service: TargetService<ReqB, ResB>,
    /// Chains using this target; a pass-through model's chain gives its uses back when it is
    /// evicted, and the entry (breaker, bulkhead, retry budget) goes with the last one.
    pub(super) users: usize,
}

/// Builds one target's stack over the client (the client's type is erased here).
pub(super) type MakeTarget<ReqB, ResB> =
    Arc<dyn Fn(&Target) -> Result<TargetEntry<ReqB, ResB>, ConfigError> + Send + Sync>;

/// Every target's stack, by name (`provider/model`), built on first use and shared by every
/// route (and every requested model) that names the target.
pub(super) struct Targets<ReqB, ResB> {
    pub(super) entries: Mutex<BTreeMap<String, TargetEntry<ReqB, ResB>>>,
    make: MakeTarget<ReqB, ResB>,
}

impl<ReqB, ResB> Targets<ReqB, ResB> {
    pub(super) fn new(make: MakeTarget<ReqB, ResB>) -> Self {
        Targets {
            entries: Mutex::new(BTreeMap::new()),
            make,
        }
    }

    /// The stack of `target`, built now if it is new, for one more user (give it back with
    /// [`release`](Self::release)).
    pub(super) fn service(
        &self,
        target: &Target,
    ) -> Result<TargetService<ReqB, ResB>, ConfigError> {
        let name = target.to_string();
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(&name) {
            entry.users += 1;
            return Ok(entry.service.clone());
        }
        let mut entry = (self.make)(target)?;
        entry.users = 1;
        let service = entry.service.clone();
        entries.insert(name, entry);
        Ok(service)
    }

    /// One user of the target named `name` is gone; the last one takes the entry with it.
    pub(super) fn release(&self, name: &str) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(name) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                entries.remove(name);
            }
        }
    }

    /// Whether any of the targets named in `names` has a call in flight or queued in its
    /// bulkhead (a streamed answer holds its permit until it ends).
    pub(super) fn busy<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        let entries = lock(&self.entries);
        names.into_iter().any(|name| {
            entries
                .get(name)
                .and_then(|e| e.bulkhead.as_ref())
                .is_some_and(|b| b.in_flight() > 0 || b.queued() > 0)
        })
    }
}

/// A part of a target's stack that the layers above it take, and the chain at the top (boxed).
trait Layered<ReqB, ResB>:
    Service<
        Request<ReplayBody<ReqB>>,
        Response = Response<TargetBody<ResB>>,
        Error = BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, ReqB, ResB> Layered<ReqB, ResB> for S where
    S: Service<
            Request<ReplayBody<ReqB>>,
            Response = Response<TargetBody<ResB>>,
            Error = BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

impl TargetLayers {
    /// One target's stack over `client`: breaker → retry → bulkhead → stream guard →
    /// error-body inspection → client. Each layer is the target's own (named after it).
    pub(super) fn target_stack<ReqB, ResB, S>(
        &self,
        target: &Target,
        client: S,
    ) -> Result<TargetEntry<ReqB, ResB>, ConfigError>
    where
        S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        ReqB::Error: Into<BoxError>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let name = target.to_string();
        let inspected = ServiceBuilder::new()
            .layer(self.stream_guard)
            .layer(InspectErrorBodyLayer::new())
            .service(client);
        // Each combination of the optional layers is its own type, boxed once: no `Either`
        // level per optional layer, each of which moved the whole call's future once more and
        // added a step to every poll; and a box per layer would box each call's future and
        // allocate each clone of the service (the chain clones it per attempt) once per layer.
        let (service, breaker, bulkhead) = match &self.bulkhead {
            Some(section) => {
                let layer = layers::bulkhead_layer(section, &name, self.shared_limiter.as_ref())?;
                let svc = tower::Layer::layer(&layer, inspected);
                let handle = svc.handle();
                let svc =
                    svc.map_response(|res: Response<PermitBody<GuardedBody<ReplayBody<ResB>>>>| {
                        res.map(Either::Left)
                    });
                let (service, breaker) = self.above_bulkhead(&name, svc)?;
                (service, breaker, Some(handle))
            }
            None => {
                let svc = inspected.map_response(|res: Response<GuardedBody<ReplayBody<ResB>>>| {
                    res.map(Either::Right)
                });
                let (service, breaker) = self.above_bulkhead(&name, svc)?;
                (service, breaker, None)
            }
        };
        Ok(TargetEntry {
            target: target.clone(),
            breaker,
            bulkhead,
            service,
            users: 0,
        })
    }

    /// The retry (when on) and the breaker (when on) over `limited`, boxed.
    fn above_bulkhead<ReqB, ResB, L>(
        &self,
        name: &str,
        limited: L,
    ) -> Result<(TargetService<ReqB, ResB>, Option<BreakerHandle>), ConfigError>
    where
        L: Layered<ReqB, ResB>,
        ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        ReqB::Error: Into<BoxError>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        match &self.retry {
            Some(section) => {
                let retried = ServiceBuilder::new()
                    .layer(layers::retry_layer(section, name, self.retry_extensions)?)
                    .service(limited);
                self.boxed_with_breaker(name, retried)
            }
            None => self.boxed_with_breaker(name, limited),
        }
    }

    /// The breaker (when on) over `inner`, boxed.
    fn boxed_with_breaker<ReqB, ResB, R>(
        &self,
        name: &str,
        inner: R,
    ) -> Result<(TargetService<ReqB, ResB>, Option<BreakerHandle>), ConfigError>
    where
        R: Layered<ReqB, ResB>,
    {
        match &self.breaker {
            Some(section) => {
                let shared = self.shared_breakers.clone().map(|b| {
                    let b: Arc<dyn tower_llm_breaker::shared::SharedBreakers> = b;
                    b
                });
                let handle = BreakerHandle::new(layers::breaker_config(section, name, shared)?);
                let layer = CircuitBreakerLayer::builder().build_with_handle(handle.clone());
                let svc = ServiceBuilder::new().layer(layer).service(inner);
                Ok((BoxCloneSyncService::new(svc), Some(handle)))
            }
            None => Ok((BoxCloneSyncService::new(inner), None)),
        }
    }
}
