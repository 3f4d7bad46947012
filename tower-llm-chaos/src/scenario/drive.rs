//! The load driver: closed-loop clients or paced requests, and how one exchange is judged.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_llm_core::openai::{ChatCompletion, ChatCompletionChunk};
use tower_llm_core::sse::SseDecoder;
use tower_llm_core::BoxError;
use tower_service::Service;

use super::{Pace, Scenario};
use crate::CANONICAL_ANSWER;

/// The samples of one run of a [`Scenario`], sorted by start time.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Run {
    /// One per request started, sorted by [`Sample::start`].
    pub samples: Vec<Sample>,
    /// When the run started (`tokio::time`): time zero of every sample.
    pub started: Instant,
}

impl Run {
    /// A run made of `samples` (sorted here by start), started now; for computing a report over
    /// samples from elsewhere.
    pub fn from_samples(mut samples: Vec<Sample>) -> Run {
        samples.sort_by_key(|s| (s.start, s.end));
        Run {
            samples,
            started: Instant::now(),
        }
    }
}

/// What happened to one request, as its client saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// When the client started it (before waiting for the service to be ready), since the start
    /// of the run.
    pub start: Duration,
    /// When the answer had been read whole, the service failed, or the driver gave up on it,
    /// since the start of the run.
    pub end: Duration,
    /// The HTTP status; `None` when the service returned an error or the request did not finish.
    pub status: Option<u16>,
    /// The service's error, the body's read error, or why the request did not finish.
    pub error: Option<String>,
    /// The `x-llm-target` header of the response (which target answered), if any.
    pub target: Option<String>,
    /// The `x-llm-fallback` header of the response (`none`, `target`, `cache`, `static`), if any.
    pub fallback: Option<String>,
    /// A real answer: status 200, the body read whole without error, the canonical answer in it
    /// (JSON: `choices[0].message.content`; stream: the concatenated `delta.content` of the
    /// events, and `data: [DONE]` as the last event), and `x-llm-fallback` neither `cache` nor
    /// `static`.
    pub answered: bool,
    /// A 2xx answer read whole without error whose `x-llm-fallback` is `cache` or `static`:
    /// served, but not a real answer.
    pub served_by_tier: bool,
    /// Whether the request ended before the driver gave up on it.
    pub finished: bool,
}

impl Sample {
    /// How long the client waited: `end - start`.
    pub fn latency(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    /// Whether `x-llm-target` starts with `prefix`.
    pub fn served_by(&self, prefix: &str) -> bool {
        self.target
            .as_deref()
            .is_some_and(|t| t.starts_with(prefix))
    }
}

/// What every request of a run shares.
struct Shot {
    uri: Uri,
    body: Bytes,
    stream: bool,
    started: Instant,
    run_end: Instant,
    give_up: Instant,
    error_pause: Duration,
    drain: Duration,
}

pub(super) async fn drive<S, B>(scenario: &Scenario, service: S) -> Run
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let run_end = later(started, scenario.timeline.run);
    let shot = Arc::new(Shot {
        uri: scenario.load.uri.clone(),
        body: scenario.load.body(),
        stream: scenario.load.stream,
        started,
        run_end,
        give_up: later(run_end, scenario.drain),
        error_pause: scenario.load.error_pause,
        drain: scenario.drain,
    });
    let mut samples = Vec::new();
    match scenario.load.pace {
        Pace::Closed { clients } => {
            let mut tasks = JoinSet::new();
            let step = scenario.load.stagger / u32::try_from(clients.max(1)).unwrap_or(u32::MAX);
            let mut first = started;
            for _ in 0..clients {
                tasks.spawn(client(service.clone(), shot.clone(), first));
                first = later(first, step);
            }
            while let Some(done) = tasks.join_next().await {
                samples.extend(joined(done).into_iter().flatten());
            }
        }
        Pace::Every(every) => {
            let every = every.max(Duration::from_millis(1));
            let mut tasks = JoinSet::new();
            let mut next = started;
            while next < run_end {
                tokio::time::sleep_until(next).await;
                let (mut service, shot) = (service.clone(), shot.clone());
                tasks.spawn(async move { exchange(&mut service, &shot).await });
                // Reap finished requests as we go, so the set stays small.
                while let Some(done) = tasks.try_join_next() {
                    samples.extend(joined(done));
                }
                match next.checked_add(every) {
                    Some(later) => next = later,
                    None => break,
                }
            }
            while let Some(done) = tasks.join_next().await {
                samples.extend(joined(done));
            }
        }
    }
    samples.sort_by_key(|s| (s.start, s.end));
    Run { samples, started }
}

/// `at + d`, or about 30 years after `at` when that overflows (as tokio's far future).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(at)
}

/// The task's output; a panic in the service is propagated, a cancelled task (the runtime is
/// shutting down) yields nothing.
fn joined<T>(done: Result<T, tokio::task::JoinError>) -> Option<T> {
    match done {
        Ok(value) => Some(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => None,
    }
}

/// One closed-loop client: the next request as soon as the previous one ended.
async fn client<S, B>(mut service: S, shot: Arc<Shot>, first: Instant) -> Vec<Sample>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    tokio::time::sleep_until(first).await;
    let mut samples = Vec::new();
    while Instant::now() < shot.run_end {
        let sample = exchange(&mut service, &shot).await;
        let pause = !sample.answered;
        samples.push(sample);
        if pause {
            tokio::time::sleep(shot.error_pause).await;
        }
    }
    samples
}

/// Send one request and read its answer whole, giving up at `shot.give_up`.
async fn exchange<S, B>(service: &mut S, shot: &Shot) -> Sample
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let start = Instant::now();
    let mut sample = match tokio::time::timeout_at(shot.give_up, send(service, shot)).await {
        Ok(sample) => sample,
        Err(_) => Sample {
            error: Some(format!(
                "did not finish within {:?} after the end of the run",
                shot.drain
            )),
            ..Sample::default()
        },
    };
    sample.start = start.saturating_duration_since(shot.started);
    sample.end = Instant::now().saturating_duration_since(shot.started);
    sample
}

/// The exchange itself; `start`, `end` and (for a request that finishes) `finished` are set by
/// the caller.
async fn send<S, B>(service: &mut S, shot: &Shot) -> Sample
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let failed = |error: BoxError| Sample {
        error: Some(error_chain(&*error)),
        finished: true,
        ..Sample::default()
    };
    if let Err(error) = poll_fn(|cx| service.poll_ready(cx)).await {
        return failed(error.into());
    }
    let mut request = Request::new(Full::new(shot.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = shot.uri.clone();
    request
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let response = match service.call(request).await {
        Ok(response) => response,
        Err(error) => return failed(error.into()),
    };
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let target = header(&parts.headers, "x-llm-target");
    let fallback = header(&parts.headers, "x-llm-fallback");
    let (body, error) = match body.collect().await {
        Ok(collected) => (collected.to_bytes(), None),
        Err(error) => (Bytes::new(), Some(error_chain(&*error.into()))),
    };
    let tier = matches!(fallback.as_deref(), Some("cache" | "static"));
    let whole = error.is_none() && status.is_success();
    let answered = whole
        && !tier
        && status == http::StatusCode::OK
        && if shot.stream {
            stream_is_canonical(&body)
        } else {
            json_is_canonical(&body)
        };
    Sample {
        status: Some(status.as_u16()),
        error,
        target,
        fallback,
        answered,
        served_by_tier: whole && tier,
        finished: true,
        ..Sample::default()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// An error's message followed by its sources': `a: b: c`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source's message in their own.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A JSON completion whose `choices[0].message.content` is the canonical answer.
pub(crate) fn json_is_canonical(body: &[u8]) -> bool {
    serde_json::from_slice::<ChatCompletion<'_>>(body)
        .is_ok_and(|completion| completion.content() == Some(CANONICAL_ANSWER))
}

/// An SSE stream whose chunks' `choices[0].delta.content`, concatenated, are the canonical
/// answer, and whose last event is `data: [DONE]`. Events that are not chunks or carry no
/// content add nothing.
pub(crate) fn stream_is_canonical(body: &[u8]) -> bool {
    let mut decoder = SseDecoder::new();
    decoder.push(Bytes::copy_from_slice(body));
    let mut rest = CANONICAL_ANSWER;
    let mut done = false;
    // `finish`: the last event counts even without a blank line after it.
    while let Ok(Some(event)) = decoder.finish() {
        if done {
            // Something after `[DONE]`: it was not the last event.
            return false;
        }
        if event.is_done() {
            done = true;
            continue;
        }
        let Ok(chunk) = serde_json::from_slice::<ChatCompletionChunk<'_>>(event.data()) else {
            continue;
        };
        match rest.strip_prefix(chunk.content().unwrap_or("")) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    done && rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical;

    #[test]
    fn canonical_bodies_are_recognised() {
        let usage = canonical::usage(3);
        assert!(json_is_canonical(&canonical::completion_json(
            1, "gpt-4o", usage
        )));
        let sse: Vec<u8> = canonical::sse_events(1, "gpt-4o", usage).concat();
        assert!(stream_is_canonical(&sse));
        // CRLF line ends are fine too.
        let crlf = String::from_utf8(sse.clone())
            .unwrap()
            .replace('\n', "\r\n");
        assert!(stream_is_canonical(crlf.as_bytes()));
    }

    #[test]
    fn broken_bodies_are_not_answers() {
        let usage = canonical::usage(3);
        let json = canonical::completion_json(1, "gpt-4o", usage);
        assert!(!json_is_canonical(&json[..json.len() / 2]));
        assert!(!json_is_canonical(
            br#"{"choices":[{"message":{"content":"other"}}]}"#
        ));
        assert!(!json_is_canonical(b"{}"));

        let events = canonical::sse_events(1, "gpt-4o", usage);
        let n = events.len();
        // No `[DONE]`.
        assert!(!stream_is_canonical(&events[..n - 1].concat()));
        // A missing token.
        let mut cut = events.clone();
        cut.remove(3);
        assert!(!stream_is_canonical(&cut.concat()));
        // An event after `[DONE]`.
        let mut late = events.clone();
        late.push(events[0].clone());
        assert!(!stream_is_canonical(&late.concat()));
        // A malformed event adds nothing: the answer is still whole.
        let mut malformed = events.clone();
        malformed.insert(2, Bytes::from_static(canonical::MALFORMED_EVENT));
        assert!(stream_is_canonical(&malformed.concat()));
        assert!(!stream_is_canonical(b""));
        assert!(!stream_is_canonical(b"data: [DONE]\n\n"));
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&error), "client error: connection refused");
    }
}
