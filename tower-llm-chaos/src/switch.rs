//! A runtime on/off switch for a [`ChaosLayer`](crate::ChaosLayer), shared by every clone.
//!
//! ```
//! use tower_llm_chaos::ChaosSwitch;
//!
//! let switch = ChaosSwitch::new(true);
//! let same = switch.clone();
//! same.disable();
//! assert!(!switch.is_enabled());
//! switch.enable();
//! assert!(same.is_enabled());
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Turns fault injection on and off at run time; clones share one flag.
///
/// While disabled, a [`Chaos`](crate::Chaos) service forwards every call untouched and draws no
/// random numbers.
#[derive(Clone, Debug)]
pub struct ChaosSwitch {
    enabled: Arc<AtomicBool>,
}

impl ChaosSwitch {
    /// A switch, initially on or off.
    pub fn new(enabled: bool) -> Self {
        ChaosSwitch {
            enabled: Arc::new(AtomicBool::new(enabled)),
        }
    }

    /// Inject faults from now on.
    pub fn enable(&self) {
        self.set(true);
    }

    /// Forward every call untouched from now on.
    pub fn disable(&self) {
        self.set(false);
    }

    /// Turn injection on or off.
    pub fn set(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Release);
    }

    /// Whether faults are being injected.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

impl Default for ChaosSwitch {
    /// On.
    fn default() -> Self {
        ChaosSwitch::new(true)
    }
}
