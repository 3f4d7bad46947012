//! The [`Target`] request extension: which provider and upstream model an attempt goes to.
//!
//! A fallback layer sets it on each attempt; breaker, retry and bulkhead layers below it key
//! their state by it, without depending on each other.
//!
//! ```
//! use tower_llm_core::Target;
//!
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(Target::new("groq", "llama-3.1-70b"));
//! let target = req.extensions().get::<Target>().unwrap();
//! assert_eq!(target.provider(), "groq");
//! assert_eq!(target.model(), "llama-3.1-70b");
//! assert_eq!(target.to_string(), "groq/llama-3.1-70b");
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A provider plus an upstream model: the unit that breakers, cooldowns and limits are kept for.
///
/// Cloning is two reference-count increments; the strings are shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    provider: Arc<str>,
    model: Arc<str>,
}

impl Target {
    /// A target for `model` on `provider`. An empty model means "the requested model passes through".
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        Target {
            provider: provider.into(),
            model: model.into(),
        }
    }

    /// The provider's name, as configured.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The upstream model name (may be empty when the requested model passes through).
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.model.is_empty() {
            f.write_str(&self.provider)
        } else {
            write!(f, "{}/{}", self.provider, self.model)
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}
