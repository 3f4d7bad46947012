//! Mid-stream failover: a stream cut or stalled after the chain committed to it is finished on
//! another target, in the same response, and the caller never sees the cut.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_fallback::{FallbackLayer, ResumeConfig, ResumeMode, TargetConfig};
//!
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     // A vLLM server continues an assistant prefill when asked to.
//!     .target(
//!         TargetConfig::new("vllm", "llama-3.1-70b")
//!             .base_url("http://vllm.internal:8000/v1")
//!             .supports_prefill(true)
//!             .prefill_params(serde_json::json!({
//!                 "continue_final_message": true,
//!                 "add_generation_prompt": false,
//!             })),
//!     )
//!     .resume(
//!         ResumeConfig::new(ResumeMode::Prefill)
//!             .max_text_bytes(256 * 1024)
//!             .budget(Duration::from_secs(120)),
//!     )
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! ```
//!
//! # How a stream is resumed
//!
//! The chain commits to a stream at its first answer event (see [`peek`](crate::peek)). From then
//! on its body watches the events it hands on and keeps the text of the answer (the first
//! choice's `delta.content`, up to [`max_text_bytes`](ResumeConfig::max_text_bytes)) and the
//! stream's `id`. When the stream then fails — the stream guard below ends it with an error
//! event (a cut, a stall, an in-band error of a kind that fails over), or the body breaks or
//! ends before a `finish_reason` — the error event is held back and the chain walks on to the
//! next target it has not tried for this request, within the resume
//! [`budget`](ResumeConfig::budget) (counted from the request's start):
//!
//! - **Prefill** (with [`ResumeMode::Prefill`], on a target that declared
//!   [`supports_prefill`](crate::TargetConfig::supports_prefill)): the original request plus one
//!   final `{"role":"assistant","content":"<text already sent>"}` message (appended to the
//!   caller's own final assistant message when there is one), and the target's
//!   [`prefill_params`](crate::TargetConfig::prefill_params) as extra top-level members. Its
//!   deltas are the rest of the answer and are handed on.
//! - **Replay** (otherwise): the original request. The continuation's text is compared, byte for
//!   byte across chunk boundaries, with the text already sent and swallowed while it matches;
//!   what follows is handed on. A replay that answers differently, or finishes before it
//!   reproduced the text, ends the stream with the error event, whose message says why the
//!   resume failed.
//!
//! Before the continuation the caller receives an SSE comment, `: resumed on <target>` (SSE
//! clients ignore comments). Every continuation chunk keeps the first stream's `id`; `model` is
//! left as the continuation's target sent it (it names the model that wrote those tokens); the
//! repeated `role` is removed. Usage, when the continuation reports it, is that call's usage.
//! There is one `[DONE]`: the continuation's. A continuation that fails is resumed again on a
//! target not tried yet; when no target is left (or the budget is spent) the caller gets the
//! *first* failure's error event, with the reason the resume failed appended: a fallback's
//! refusal of a prefill is never what the caller sees for a cut.
//!
//! Health: the cut target is recorded as failed when its stream ends (as without resumption);
//! the continuation counts for the target that served it.
//!
//! # What is not resumed
//!
//! The stream ends with the error event, as without resumption, when:
//!
//! - tool-call or function-call deltas were sent (a half-sent call cannot be continued), or
//!   reasoning, refusal or audio deltas (only message text is tracked);
//! - the request asked for `n > 1` or `logprobs`, or the stream had several choices or logprobs;
//! - the text already sent is over [`max_text_bytes`](ResumeConfig::max_text_bytes) (default
//!   256 KiB; the text is dropped then, so memory stays bounded);
//! - the stream is not an OpenAI chat completion stream (another wire format);
//! - the request body is not buffered (it could not be sent again), or no target is left.
//!
//! Each resume is logged (`info`) and counted in
//! [`tower_llm_stream_resumed_total`](crate::metrics::STREAM_RESUMED_TOTAL)`{target,how}`;
//! each failed one in
//! [`tower_llm_stream_resume_failed_total`](crate::metrics::STREAM_RESUME_FAILED_TOTAL)`{reason}`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tower_llm_core::{ConfigError, ReplayBody};

// The plain-chunk test data of tower-llm-core's scan, shared rather than copied (test only).
#[cfg(test)]
#[path = "../../../tower-llm-core/src/sse/chunk_strategy.rs"]
mod chunk_strategy;
pub(crate) mod prefill;
pub(crate) mod splice;
pub(crate) mod transcript;
pub(crate) mod watch;

/// The default cap on the text kept for resumption: 256 KiB.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 256 * 1024;

/// The default resume budget: 120 s from the request's start (the stream guard's default total
/// stream limit).
pub const DEFAULT_RESUME_BUDGET: Duration = Duration::from_secs(120);

/// Whether, and how, a cut stream is resumed on another target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResumeMode {
    /// Not resumed: a cut stream ends with the error event.
    Off,
    /// Always by replay and splice (even on targets that support prefill).
    Replay,
    /// By prefill on targets that declared support, by replay and splice on the others.
    #[default]
    Prefill,
}

impl ResumeMode {
    /// The mode's name in configuration: `off`, `replay`, `prefill`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeMode::Off => "off",
            ResumeMode::Replay => "replay",
            ResumeMode::Prefill => "prefill",
        }
    }
}

impl fmt::Display for ResumeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResumeMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(ResumeMode::Off),
            "replay" => Ok(ResumeMode::Replay),
            "prefill" => Ok(ResumeMode::Prefill),
            other => Err(ConfigError::new(
                "resume",
                format!("`{other}` is not one of `prefill`, `replay`, `off`"),
            )),
        }
    }
}

/// How a chain resumes cut streams (see the [module docs](self)). The default resumes by
/// prefill where declared, by replay elsewhere, keeps up to 256 KiB of text, within 120 s of the
/// request's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeConfig {
    mode: ResumeMode,
    pub(crate) max_text_bytes: usize,
    pub(crate) budget: Duration,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        ResumeConfig::new(ResumeMode::default())
    }
}

impl ResumeConfig {
    /// Resume by `mode`, with the default cap and budget.
    pub fn new(mode: ResumeMode) -> Self {
        ResumeConfig {
            mode,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            budget: DEFAULT_RESUME_BUDGET,
        }
    }

    /// No resumption.
    pub fn off() -> Self {
        ResumeConfig::new(ResumeMode::Off)
    }

    /// The most bytes of answer text kept per stream; a stream that sent more is not resumed.
    pub fn max_text_bytes(mut self, bytes: usize) -> Self {
        self.max_text_bytes = bytes;
        self
    }

    /// How long after the request's start a resume may still begin; each resumed attempt also
    /// ends by then (or at its target's attempt timeout, if sooner).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The mode.
    pub fn mode(&self) -> ResumeMode {
        self.mode
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.mode != ResumeMode::Off && self.max_text_bytes == 0 {
            return Err(ConfigError::new(
                "resume_max_text_bytes",
                "must be > 0 (or set resume = \"off\")",
            ));
        }
        if self.mode != ResumeMode::Off && self.budget.is_zero() {
            return Err(ConfigError::new(
                "resume_budget",
                "must be > 0 (or set resume = \"off\")",
            ));
        }
        Ok(())
    }

    pub(crate) fn enabled(&self) -> bool {
        self.mode != ResumeMode::Off
    }
}

/// How a continuation was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    Prefill,
    Replay,
}

impl How {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            How::Prefill => "prefill",
            How::Replay => "replay",
        }
    }
}

/// A continuation the chain committed to.
pub(crate) struct Resumed<B> {
    /// Its body (its first event included).
    pub(crate) body: ReplayBody<B>,
    /// Its target's name.
    pub(crate) target: Arc<str>,
    pub(crate) how: How,
    /// The continuation's attempt span (open until the stream ends).
    pub(crate) span: tracing::Span,
    /// What can resume it in turn, when it can be.
    pub(crate) next: Option<Box<dyn Resumer<B>>>,
}

/// Why a resume did not happen.
pub(crate) type ResumeFailed = String;

/// A boxed continuation future.
pub(crate) type ResumeFuture<B> =
    Pin<Box<dyn Future<Output = Result<Resumed<B>, ResumeFailed>> + Send>>;

/// The rest of a request's walk down the chain, kept by a committed stream's body.
pub(crate) trait Resumer<B>: Send {
    /// Walk on from where the request stopped: the next target is asked for the rest of
    /// `sent`, by prefill or replay.
    fn resume(self: Box<Self>, sent: &str) -> ResumeFuture<B>;
}
