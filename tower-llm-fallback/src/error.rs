//! Errors of the fallback chain itself.
//!
//! When every target fails, the chain returns core's
//! [`AllTargetsFailed`](tower_llm_core::AllTargetsFailed) with every attempt (skipped targets
//! included, see [`is_skipped`](crate::is_skipped)); its `source()` is the last error seen.
//! [`RewriteError`] is what a target's attempt fails with when its rewrite cannot be applied; the
//! chain records it as a local failure (no cooldown) and moves on.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A target's request rewrite could not be applied to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteError {
    target: Arc<str>,
    reason: &'static str,
}

impl RewriteError {
    pub(crate) fn not_buffered(target: Arc<str>) -> Self {
        RewriteError {
            target,
            reason: "the request body must be rewritten but is not buffered (put tower_llm_core::BufferRequestBodyLayer above the fallback layer)",
        }
    }

    pub(crate) fn uri(target: Arc<str>) -> Self {
        RewriteError {
            target,
            reason: "the request URI cannot be moved onto the target's base URL",
        }
    }

    pub(crate) fn not_replayable(target: Arc<str>) -> Self {
        RewriteError {
            target,
            reason: "the request body was already sent and cannot be replayed (over the buffering limit, or streamed)",
        }
    }

    /// The target whose rewrite failed.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Why, in words.
    pub fn reason(&self) -> &str {
        self.reason
    }
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target `{}`: {}", self.target, self.reason)
    }
}

impl Error for RewriteError {}
