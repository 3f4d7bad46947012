//! What the chain did for one request: the [`FallbackReport`] response extension and the
//! `x-llm-target` / `x-llm-fallback` headers.
//!
//! Every response the chain returns carries both (the extension unless the chain was built
//! with [`report_extension(false)`](crate::FallbackLayerBuilder::report_extension), for callers
//! that forward answers without reading it; the headers always):
//!
//! | header | value |
//! |---|---|
//! | `x-llm-target` | the name of the target that answered (for a cached answer, the target that produced it; `static` for the static tier) |
//! | `x-llm-fallback` | `none` (the first target tried answered), `target` (another target answered after a failure or a skip), `cache`, `static` |
//!
//! The report lists every attempt before the answer, in order. Targets that were *skipped*
//! because they were cooling down appear too, with `attempt == 0` (they were not called),
//! `elapsed == 0`, the kind that benched them and, when known, the time left in `retry_after`;
//! see [`is_skipped`]. The same list is what [`AllTargetsFailed`](tower_llm_core::AllTargetsFailed)
//! carries when nothing answered.
//!
//! The answer's own `model` field names the model that really answered (the chain sends each
//! target its own model name, and providers echo the model they ran), and its `usage` is that of
//! the answering call only.
//!
//! ```
//! use tower_llm_fallback::{FallbackKind, FallbackReport, X_LLM_FALLBACK, X_LLM_TARGET};
//!
//! fn describe<B>(res: &http::Response<B>) -> String {
//!     let report = res.extensions().get::<FallbackReport>().expect("set by the chain");
//!     match report.fallback {
//!         FallbackKind::None => format!("answered by {}", res.headers()[X_LLM_TARGET].to_str().unwrap()),
//!         other => format!(
//!             "{} fallback after {} failed or skipped attempt(s)",
//!             other.as_str(),
//!             report.attempts.len()
//!         ),
//!     }
//! }
//! # let _ = describe::<()>;
//! # assert_eq!(X_LLM_FALLBACK.as_str(), "x-llm-fallback");
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tower_llm_core::{AttemptRecord, Target};

/// Names the target that answered.
pub const X_LLM_TARGET: HeaderName = HeaderName::from_static("x-llm-target");

/// Says whether, and how, the chain fell back: `none`, `target`, `cache` or `static`.
pub const X_LLM_FALLBACK: HeaderName = HeaderName::from_static("x-llm-fallback");

/// How the answer was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FallbackKind {
    /// The first target tried answered: no fallback.
    None,
    /// Another target answered after earlier ones failed or were skipped.
    Target,
    /// Every live target failed; a cached answer was served.
    Cache,
    /// Every live target failed; the static answer was served.
    Static,
}

impl FallbackKind {
    /// The `x-llm-fallback` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FallbackKind::None => "none",
            FallbackKind::Target => "target",
            FallbackKind::Cache => "cache",
            FallbackKind::Static => "static",
        }
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        // Checked at compile time: `from_static` on a value known only at run time checks its
        // bytes on every answer.
        const NONE: HeaderValue = HeaderValue::from_static(FallbackKind::None.as_str());
        const TARGET: HeaderValue = HeaderValue::from_static(FallbackKind::Target.as_str());
        const CACHE: HeaderValue = HeaderValue::from_static(FallbackKind::Cache.as_str());
        const STATIC: HeaderValue = HeaderValue::from_static(FallbackKind::Static.as_str());
        match self {
            FallbackKind::None => NONE,
            FallbackKind::Target => TARGET,
            FallbackKind::Cache => CACHE,
            FallbackKind::Static => STATIC,
        }
    }
}

/// What the chain did for one request (a response extension).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FallbackReport {
    /// How the answer was obtained.
    pub fallback: FallbackKind,
    /// The name of the target that answered (for a cached answer, the target that produced it;
    /// `None` for the static answer).
    pub target: Option<Arc<str>>,
    /// Provider and upstream model of that target.
    pub upstream: Option<Target>,
    /// The tier of the target that answered (`None` for cache and static answers).
    pub tier: Option<usize>,
    /// Every failed or skipped attempt before the answer, in order.
    pub attempts: Vec<AttemptRecord>,
    /// For a cached answer, how long ago it was stored.
    pub cache_age: Option<Duration>,
}

impl FallbackReport {
    /// The attempts that skipped a benched target without calling it.
    pub fn skipped(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.attempts.iter().filter(|a| is_skipped(a))
    }

    /// The attempts that called a target and failed.
    pub fn failed(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.attempts.iter().filter(|a| !is_skipped(a))
    }
}

/// Whether `record` is a target the chain skipped (benched, not called) rather than an attempt.
pub fn is_skipped(record: &AttemptRecord) -> bool {
    record.attempt == 0
}
