//! [`BulkheadHandle`]: the live state of one bulkhead, owned, from its layer or any of its
//! services.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::{partition_fn, BulkheadLayer, ErrorsOnly};
//!
//! struct ChatRequest { tenant: &'static str }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = BulkheadLayer::builder()
//!     .partition_by(partition_fn(|req: &ChatRequest| req.tenant))
//!     .max_concurrent(4)
//!     .release_on_response()
//!     .read_budget(tower_llm_core::NoBudget)
//!     .classifier(ErrorsOnly)
//!     .build()
//!     .unwrap();
//! // Taken from the layer, before it moves into the chain: no need to keep a service around.
//! let handle = layer.handle();
//! let client = ServiceBuilder::new().layer(layer).service(service_fn(|_req: ChatRequest| async {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, std::convert::Infallible>("answer")
//! }));
//! let running = tokio::spawn(client.clone().oneshot(ChatRequest { tenant: "acme" }));
//! tokio::task::yield_now().await;
//!
//! assert_eq!(handle.in_flight(), 1);
//! let acme = handle.partition(&"acme").unwrap();
//! assert_eq!((acme.in_flight, acme.limit), (1, 4));
//! assert!(handle.partition(&"globex").is_none()); // created on first use
//! assert_eq!(running.await.unwrap().unwrap(), "answer");
//! assert_eq!(handle.in_flight(), 0);
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use crate::partition::{PartitionSnapshot, Shared};

/// An owned handle on a bulkhead's live state: snapshots, totals, and the token-usage hook.
///
/// Get it from [`BulkheadLayer::handle`](crate::BulkheadLayer::handle) or
/// [`Bulkhead::handle`](crate::Bulkhead::handle): both see the same state, shared by every service
/// the layer wraps. Cloning the handle is an `Arc` clone.
pub struct BulkheadHandle<Key> {
    shared: Arc<Shared<Key>>,
}

impl<Key> BulkheadHandle<Key> {
    pub(crate) fn new(shared: Arc<Shared<Key>>) -> Self {
        BulkheadHandle { shared }
    }
}

impl<Key> Clone for BulkheadHandle<Key> {
    fn clone(&self) -> Self {
        BulkheadHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Key> fmt::Debug for BulkheadHandle<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadHandle")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<Key: crate::PartitionKey> BulkheadHandle<Key> {
    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The state of every partition (a keyed bulkhead's `overflow` partition last).
    pub fn snapshot(&self) -> Vec<PartitionSnapshot> {
        self.shared
            .partitions()
            .iter()
            .map(|p| p.snapshot())
            .collect()
    }

    /// The state of `key`'s partition, if it exists (an unpartitioned bulkhead's one partition,
    /// whatever the key).
    pub fn partition(&self, key: &Key) -> Option<PartitionSnapshot> {
        self.shared.existing(key).map(|p| p.snapshot())
    }

    /// Calls holding a permit, over every partition.
    pub fn in_flight(&self) -> usize {
        self.shared.partitions().iter().map(|p| p.in_flight()).sum()
    }

    /// Calls waiting for a permit, over every partition.
    pub fn queued(&self) -> usize {
        self.shared.partitions().iter().map(|p| p.queued()).sum()
    }

    /// Correct `key`'s token budget after a call charged `estimated` tokens reported `actual`
    /// tokens of use — for a layer that reads usage the bulkhead cannot see (a streaming layer
    /// that parses SSE above it, a typed client). With a
    /// [`shared_limiter`](crate::BulkheadLayerBuilder::shared_limiter), the shared budget is
    /// corrected. Returns `false` when the partition does not exist (any more).
    pub fn correct_tokens(&self, key: &Key, estimated: u64, actual: u64) -> bool {
        match self.shared.existing(key) {
            Some(p) => {
                p.correct_tokens(estimated, actual, p.shared.is_some());
                true
            }
            None => false,
        }
    }
}
