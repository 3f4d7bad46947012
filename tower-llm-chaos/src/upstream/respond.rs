//! What the mock sends for each fault.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use serde_json::Value;
use tower_llm_core::openai::{self, ErrorBody};

use super::body::{MockBody, Step};
use crate::canonical::{self, Usage, MALFORMED_EVENT};
use crate::{ErrorReply, Fault};

/// The mock's decision for one request.
pub(super) enum Reply {
    /// Send `response`, after `delay` when set.
    Respond {
        fault: &'static str,
        delay: Option<Duration>,
        response: Response<MockBody>,
    },
    /// Never answer.
    Hang,
    /// Reset the connection.
    Reset,
}

impl Reply {
    fn now(fault: &'static str, response: Response<MockBody>) -> Reply {
        Reply::Respond {
            fault,
            delay: None,
            response,
        }
    }

    pub(super) fn fault_name(&self) -> &'static str {
        match self {
            Reply::Respond { fault, .. } => fault,
            Reply::Hang => "hang",
            Reply::Reset => "reset",
        }
    }

    pub(super) fn status(&self) -> Option<u16> {
        match self {
            Reply::Respond { response, .. } => Some(response.status().as_u16()),
            Reply::Hang | Reply::Reset => None,
        }
    }
}

fn with_type(status: StatusCode, content_type: &'static str, body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    with_type(status, "application/json", MockBody::full(body))
}

fn sse_response(steps: Vec<Step>) -> Response<MockBody> {
    let mut response = with_type(StatusCode::OK, "text/event-stream", MockBody::script(steps));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An OpenAI-shaped error body for the mock's own rejections.
fn openai_error(status: StatusCode, message: &str, code: Option<&str>) -> Response<MockBody> {
    let mut body = ErrorBody::new(message, "invalid_request_error");
    if let Some(code) = code {
        body = body.with_code(code);
    }
    json_response(status, body.to_json())
}

pub(super) fn not_found(method: &Method, path: &str) -> Response<MockBody> {
    let path: String = path.chars().take(200).collect();
    openai_error(
        StatusCode::NOT_FOUND,
        &format!(
            "Unknown request URL: {method} {path}. The mock serves POST /v1/chat/completions."
        ),
        Some("unknown_url"),
    )
}

pub(super) fn method_not_allowed(method: &Method) -> Response<MockBody> {
    let mut response = openai_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method {method} not allowed; use POST."),
        None,
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    response
}

pub(super) fn bad_request(message: &str) -> Response<MockBody> {
    openai_error(StatusCode::BAD_REQUEST, message, None)
}

/// The 400 of a [`Prefill::Reject`](super::Prefill::Reject) mock, in the OpenAI shape.
pub(super) fn prefill_rejected() -> Reply {
    let body = ErrorBody::new(super::PREFILL_REJECTED_MESSAGE, "invalid_request_error")
        .with_param("messages")
        .to_json();
    Reply::now(
        "prefill_rejected",
        json_response(StatusCode::BAD_REQUEST, body),
    )
}

pub(super) fn payload_too_large(limit: usize) -> Response<MockBody> {
    openai_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("The request body is larger than {limit} bytes."),
        Some("request_too_large"),
    )
}

fn error_reply(reply: &ErrorReply) -> Response<MockBody> {
    let now = SystemTime::now();
    // `validate` ran before: the status is in 200..=999.
    let status = StatusCode::from_u16(reply.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(MockBody::full(reply.body(now)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in reply.response_headers(now) {
        headers.append(name, value);
    }
    response
}

/// What one answer is made of: the tokens to send (the whole text or a prefill's continuation),
/// the request it answers, and the pause before each streamed event after the first.
struct Answering<'a> {
    tokens: &'a [&'a str],
    seq: u64,
    model: &'a str,
    usage: Usage,
    pace: Duration,
}

impl Answering<'_> {
    /// The first `n` content events, `pace` apart.
    fn content_events(&self, n: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        for i in 0..n {
            let Some(event) = canonical::content_event_of(self.tokens, self.seq, self.model, i)
            else {
                break;
            };
            self.pause_before(&mut steps);
            steps.push(Step::Data(event));
        }
        steps
    }

    /// The pause before the next event, when an event was sent already and events are paced.
    fn pause_before(&self, steps: &mut Vec<Step>) {
        if !self.pace.is_zero() && !steps.is_empty() {
            steps.push(Step::Pause(self.pace));
        }
    }

    fn healthy_sse(&self, done: bool) -> Vec<Step> {
        let mut steps = self.content_events(usize::MAX);
        self.pause_before(&mut steps);
        steps.push(Step::Data(canonical::finish_event(
            self.seq, self.model, self.usage,
        )));
        if done {
            steps.push(Step::Data(openai::done_frame()));
        }
        steps
    }

    fn completion_json(&self) -> Bytes {
        canonical::completion_json_of(self.tokens, self.seq, self.model, self.usage)
    }

    fn healthy(&self, stream: bool) -> Response<MockBody> {
        if stream {
            sse_response(self.healthy_sse(true))
        } else {
            json_response(StatusCode::OK, self.completion_json())
        }
    }

    /// A non-streamed answer that declares its whole length, sends the part up to the `n`-th
    /// token, then ends with `last` (a cut or a stall).
    fn partial_json(&self, n: usize, last: Step) -> Response<MockBody> {
        let body = self.completion_json();
        let prefix = body.slice(..canonical::json_prefix_len(self.tokens, &body, n));
        let mut response = with_type(
            StatusCode::OK,
            "application/json",
            MockBody::script([Step::Data(prefix), Step::Flush, last]),
        );
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        response
    }
}

/// Decide what to send for `fault` (already resolved from any `Flapping` or `Fraction`),
/// answering with `tokens` (the whole answer text, or the continuation of a prefill), streamed
/// events `pace` apart.
pub(super) fn plan(
    fault: &Fault,
    seq: u64,
    model: &str,
    stream: bool,
    request: &Value,
    tokens: &[&str],
    pace: Duration,
) -> Reply {
    if let Err(invalid) = fault.validate() {
        tracing::warn!(%invalid, "mock upstream: answering an invalid fault with 500");
        let body = ErrorBody::new(invalid.to_string(), "server_error")
            .with_code("invalid_mock_fault")
            .to_json();
        return Reply::now(
            "invalid_fault",
            json_response(StatusCode::INTERNAL_SERVER_ERROR, body),
        );
    }
    // The prompt as the server counts it (a prefill included); the completion is what is sent.
    let prompt_tokens = canonical::estimate_usage(request).prompt_tokens;
    let answer = Answering {
        tokens,
        seq,
        model,
        usage: canonical::usage_of(tokens, prompt_tokens),
        pace,
    };
    let name = fault.name();
    match fault {
        Fault::Healthy | Fault::Flapping { .. } | Fault::Fraction { .. } => {
            Reply::now("healthy", answer.healthy(stream))
        }
        Fault::Status(reply) => Reply::now(name, error_reply(reply)),
        Fault::ContextLengthExceeded => {
            Reply::now(name, error_reply(&ErrorReply::context_length_exceeded()))
        }
        Fault::ContentPolicyViolation => {
            Reply::now(name, error_reply(&ErrorReply::content_policy_violation()))
        }
        Fault::Hang => Reply::Hang,
        Fault::ResetBeforeHeaders => Reply::Reset,
        Fault::Latency(delay) => Reply::Respond {
            fault: name,
            delay: Some(*delay),
            response: answer.healthy(stream),
        },
        Fault::SlowFirstToken(delay) if stream => {
            let mut steps = vec![Step::Pause(*delay)];
            steps.extend(answer.healthy_sse(true));
            Reply::now(name, sse_response(steps))
        }
        Fault::SlowFirstToken(delay) => Reply::Respond {
            fault: name,
            delay: Some(*delay),
            response: answer.healthy(false),
        },
        Fault::CutAfter(n) if stream => {
            let mut steps = answer.content_events(*n);
            steps.extend([Step::Flush, Step::Cut]);
            Reply::now(name, sse_response(steps))
        }
        Fault::CutAfter(n) => Reply::now(name, answer.partial_json(*n, Step::Cut)),
        Fault::Stall { after } if stream => {
            let mut steps = answer.content_events(*after);
            steps.push(Step::Stall);
            Reply::now(name, sse_response(steps))
        }
        Fault::Stall { after } => Reply::now(name, answer.partial_json(*after, Step::Stall)),
        Fault::MalformedEvent { at } if stream => {
            let mut steps = answer.healthy_sse(true);
            // Before the `at`-th event (pauses not counted), at the latest just before `[DONE]`.
            let last = steps.len().saturating_sub(1);
            let index = steps
                .iter()
                .enumerate()
                .filter(|(_, step)| matches!(step, Step::Data(_)))
                .nth(*at)
                .map_or(last, |(i, _)| i.min(last));
            steps.insert(index, Step::Data(Bytes::from_static(MALFORMED_EVENT)));
            Reply::now(name, sse_response(steps))
        }
        Fault::MalformedEvent { .. } => {
            let body = answer.completion_json();
            let garbage = body.slice(..body.len() / 2);
            Reply::now(name, json_response(StatusCode::OK, garbage))
        }
        Fault::NoDone if stream => Reply::now(name, sse_response(answer.healthy_sse(false))),
        Fault::NoDone => Reply::now(name, answer.healthy(false)),
        Fault::FirstEventError if stream => Reply::now(
            name,
            sse_response(vec![Step::Data(canonical::error_event())]),
        ),
        Fault::FirstEventError => Reply::now(
            name,
            json_response(StatusCode::OK, canonical::error_event_json()),
        ),
    }
}
