//! Streaming integrity: [`StreamGuardLayer`] commits to a streamed answer only after its first
//! event, keeps three time limits on it, and never lets a broken stream pass as a whole one;
//! [`StreamOutcome`] tells the layers above how each stream ended.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{ErrorKind, StreamGuardLayer, StreamOutcome};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // An upstream whose stream stops after one token: no finish_reason, no [DONE].
//! let upstream = service_fn(|_req: http::Request<()>| async {
//!     let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
//!     let res = http::Response::builder()
//!         .header("content-type", "text/event-stream")
//!         .body(Full::new(Bytes::from(sse)))
//!         .unwrap();
//!     Ok::<_, std::convert::Infallible>(res)
//! });
//! let guard = StreamGuardLayer::builder().build().unwrap(); // the defaults: TTFT 10 s, idle 30 s, total 120 s
//! let svc = ServiceBuilder::new().layer(guard).service(upstream);
//!
//! let res = svc.oneshot(http::Request::new(())).await.unwrap();
//! // A layer above (breaker, fallback health) learns how the stream ends, later.
//! let outcome = res.extensions().get::<StreamOutcome>().unwrap().clone();
//! outcome.on_end(|end| assert_eq!(end.kind(), Some(ErrorKind::InvalidResponse)));
//!
//! let sse = res.into_body().collect().await.unwrap().to_bytes();
//! let sse = std::str::from_utf8(&sse).unwrap();
//! // The token came through as sent, then an OpenAI-shaped error event instead of [DONE].
//! assert!(sse.starts_with("data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}"));
//! assert!(sse.ends_with("\"type\":\"server_error\",\"param\":null,\"code\":\"invalid_response\"}}\n\n"));
//! assert!(!sse.contains("data: [DONE]"));
//! assert!(outcome.is_ended());
//! # }
//! ```
//!
//! # What the guard does
//!
//! `2xx` responses with `content-type: text/event-stream` are guarded as streams (below). Any
//! other `2xx` answer (a non-stream JSON completion) is **read whole** inside the guard's
//! response future before it resolves, under the same limits: the first body byte within
//! `ttft`, no silence between chunks longer than `idle`, the whole read within `total` (all
//! counted from the call). A body that stalls fails the attempt with `Timeout`, one that breaks
//! (a cut, a reset) with `Transport`, before anything reached the caller, so retry and fallback
//! act on it. A body read whole is handed on from memory ([`GuardedBody::is_buffered`]), headers
//! untouched. Past [`max_buffered_body_bytes`](StreamGuardLayerBuilder::max_buffered_body_bytes)
//! (default 8 MiB), or when the body announces a larger length, the answer is handed on as the
//! bytes read so far followed by the rest of the body, unguarded (and not judged, below).
//! Non-`2xx` responses pass through untouched ([`GuardedBody::pass_through`]; error bodies are
//! bounded by [`InspectErrorBodyLayer`](crate::InspectErrorBodyLayer)).
//!
//! A body read whole whose `content-type` is JSON (`application/json`, `text/json`, `*/*+json`)
//! or absent is then judged, in one pass of serde over the bytes in memory (nothing allocated
//! for a valid answer), so that a broken `200` fails over like a `503`:
//!
//! | the body read whole | error kind |
//! |---|---|
//! | one JSON value, not an error object | — (handed on, byte for byte) |
//! | not one JSON value (cut, garbled, trailing bytes; empty with a JSON `content-type`) | `InvalidResponse` |
//! | an object whose top level has an `error` member that is an object or a non-empty string (a provider's in-band error sent with a `2xx`) | the kind [`provider::parse_error_slice`](crate::provider::parse_error_slice) finds in it (`RateLimited`, `Overloaded`, ...; `ServerError` if none), with its message and `retry_after` |
//!
//! `"error": null` (OpenAI's Responses API on success), an `error` member deeper down, or a JSON
//! list are not errors. Other content types (text, audio, `application/x-ndjson`), `204`/`205`,
//! the answer to a `HEAD`, and an empty body without a `content-type` pass as they are.
//!
//! **Before the first event** the response is held back while the body is read up to the first
//! event that carries an answer (a delta or a `finish_reason`; comments and pings are kept but do
//! not count). Headers alone commit to nothing. The call fails, with a
//! [`ClassifiedError`](crate::ClassifiedError) that retry and fallback layers above act on, when:
//!
//! | what happens first | error kind |
//! |---|---|
//! | no answer event within the TTFT limit (from the call) | `Timeout` |
//! | an in-band error event | the kind it names (`RateLimited`, `Overloaded`, ...; `ServerError` if none), with its `retry_after` |
//! | the body ends, or sends `[DONE]`, before any answer | `InvalidResponse` |
//! | the body fails | its kind (`Transport` for a reset) |
//! | a malformed event, with [`MalformedPolicy::End`] | `InvalidResponse` (with `Skip` it is left out and reading goes on) |
//! | an event over the size limit | `InvalidResponse` |
//!
//! **After the first event** the response is returned and the body streams through: the bytes of
//! valid events are handed on as they came (one slice per chunk, no copy unless an event was split
//! across chunks), the first event included. The stream always ends with `[DONE]` or an
//! OpenAI-shaped error event ([`openai::error_event`](crate::openai::error_event)), never with
//! a body error and never silently:
//!
//! | what happens | the caller gets | [`StreamEnd`] |
//! |---|---|---|
//! | `[DONE]` | the stream as sent | `Complete` |
//! | a `finish_reason`, then silence for the grace, or the end of the body | the stream as sent (usage included), then `[DONE]` | `Complete` |
//! | the body ends or fails with no `finish_reason` (a cut) | an `invalid_response` error event | `Failed(InvalidResponse)` |
//! | no event within the idle limit, or the total limit passes | a `timeout` error event | `Failed(Timeout)` |
//! | an in-band error event | it, normalized to the OpenAI shape | `Failed(kind it names)` |
//! | a malformed event | nothing of it (`Skip`), or an `invalid_response` error event (`End`) | — / `Failed(InvalidResponse)` |
//! | the caller drops the body first | — | `Abandoned` (`Complete` if a `finish_reason` was seen) |
//!
//! The upstream body is dropped (its connection closed) as soon as the end is decided, except
//! after `[DONE]`, when it is read to its end for a short grace so the connection can be reused.
//!
//! # Where it goes
//!
//! Innermost: just above [`InspectErrorBodyLayer`](crate::InspectErrorBodyLayer), below retry and
//! fallback. A stream that never starts, or starts with an error, is then an ordinary failed
//! attempt (an `Err` from the service), which retry retries and fallback fails over, like a `503`,
//! before anything reached the caller. After the first event nothing can be retried without
//! sending the caller the answer twice, so the guard ends the stream cleanly instead, and reports
//! how it ended through [`StreamOutcome`] to the layers above (breaker and health count a broken
//! stream as a failure of its target).
//!
//! Timers come from `tokio::time` (so paused-clock tests work); the guard must run inside a tokio
//! runtime with the time driver enabled. Cost: nothing for a non-`2xx` response; for a non-stream
//! answer, its body in memory (no copy when it arrives in one chunk, one buffer otherwise) and,
//! for JSON, one validating pass over it; for a
//! stream, one allocation for its state and one for its [`StreamOutcome`].
//!
//! # Metrics
//!
//! Names and labels are in [`metrics`]: `tower_llm_stream_ends_total` (counter; labels `target`,
//! `outcome` = `complete` | `failed` | `abandoned` | `rejected` (failed before the first event),
//! `kind`), `tower_llm_stream_first_event_seconds` (histogram; label `target`): time to the
//! first event, `tower_llm_stream_duration_seconds` (histogram; labels `target`, `outcome`): time
//! to the end, and `tower_llm_tokens_total` (counter; labels `target`, `direction` = `input` |
//! `output`, `source` = `reported` | `estimated`): the tokens of JSON and streamed answers, from
//! their `usage`.
//!
//! # No handle
//!
//! The guard keeps no state between calls (each stream's state lives in its own body), so there
//! is nothing to observe or reset from outside: [`StreamGuardLayer`] has no `handle()`. How each
//! stream ended reaches the layers above through [`StreamOutcome`], and in aggregate through its
//! metrics.

mod body;
mod config;
mod engine;
mod frame;
mod future;
mod layer;
pub mod metrics;
mod outcome;
mod service;
mod usage;
mod whole;
mod whole_scan;

pub(crate) use whole_scan::scan_request_model;

pub use body::GuardedBody;
pub use config::{
    MalformedPolicy, StreamGuardLayerBuilder, StreamLimits, DEFAULT_FINISH_GRACE, DEFAULT_IDLE,
    DEFAULT_MAX_BUFFERED_BODY, DEFAULT_TOTAL, DEFAULT_TTFT,
};
pub use future::StreamGuardFuture;
pub use layer::StreamGuardLayer;
pub use outcome::{StreamEnd, StreamOutcome};
pub use service::StreamGuard;
