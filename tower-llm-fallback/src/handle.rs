//! [`FallbackHandle`]: look at and steer a running chain.
//!
//! ```
//! use tower_llm_fallback::{FallbackLayer, TargetConfig};
//!
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini").name("primary"))
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//! // After fixing the primary's API key, put it back in service at once:
//! assert!(handle.reset_target("primary"));
//! assert!(!handle.reset_target("no-such-target"));
//! ```

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;
use tower_llm_core::BoxError;

use crate::chain::Shared;
use crate::health::HealthSnapshot;
use crate::store::HealthStore;

/// A cheap, clonable handle on a chain's shared state.
#[derive(Clone, Debug)]
pub struct FallbackHandle {
    shared: Arc<Shared>,
}

impl FallbackHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        FallbackHandle { shared }
    }

    /// A snapshot of every target's health and the chain's overall status.
    pub fn health(&self) -> HealthSnapshot {
        self.shared.snapshot()
    }

    /// Lift the cooldown of the target named `name` (an `Auth` cooldown only lifts this way) and
    /// clear its consecutive failures. Returns whether such a target exists.
    pub fn reset_target(&self, name: &str) -> bool {
        match self.shared.targets.iter().find(|t| &*t.name == name) {
            Some(target) => {
                target.state.reset();
                tracing::info!(target_name = name, "fallback target reset by hand");
                true
            }
            None => false,
        }
    }

    /// Lift every cooldown.
    pub fn reset_all(&self) {
        for target in self.shared.targets.iter() {
            target.state.reset();
        }
    }

    /// Save the current health to `store`.
    pub fn save(&self, store: &dyn HealthStore) -> Result<(), BoxError> {
        store.save(&self.health())
    }

    /// Restore health saved in `store`; returns how many targets were found in it (by name;
    /// targets missing from the snapshot keep their state). `Ok(0)` when nothing was saved.
    pub fn restore(&self, store: &dyn HealthStore) -> Result<usize, BoxError> {
        Ok(store
            .load()?
            .map_or(0, |snapshot| self.restore_snapshot(&snapshot)))
    }

    /// Restore the targets found in `snapshot`; returns how many.
    pub fn restore_snapshot(&self, snapshot: &HealthSnapshot) -> usize {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut restored = 0;
        for saved in &snapshot.targets {
            if let Some(target) = self.shared.targets.iter().find(|t| *t.name == *saved.name) {
                target.state.restore(saved, now, wall);
                restored += 1;
            }
        }
        restored
    }
}
