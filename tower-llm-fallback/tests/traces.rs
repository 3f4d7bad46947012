//! The attempt spans through plain `tracing` (issue 20), over loopback with the chaos mock: a
//! span per attempt under the caller's span, with the GenAI attributes and the answer's usage;
//! a stream cut and resumed on the secondary is two attempts (the continuation marked
//! `llm.resume`), each span open until its part of the body is done; a body dropped half-read
//! closes the span all the same.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tower_llm_chaos::{Fault, CANONICAL_ANSWER};
use tower_llm_core::ErrorKind;
use tower_llm_fallback::trace::ATTEMPT_SPAN;
use tower_llm_fallback::{FallbackLayer, TargetConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One span as the layer saw it.
#[derive(Clone, Debug)]
struct Seen {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
    closed: bool,
}

/// Records every span, its fields (as text) and its close.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Spans {
    fn with_open<R>(&self, id: &Id, f: impl FnOnce(&mut Seen) -> R) -> Option<R> {
        let mut spans = self.0.lock().unwrap();
        spans
            .iter_mut()
            .rev()
            .find(|s| s.id == id.into_u64() && !s.closed)
            .map(f)
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    fn attempts(&self) -> Vec<Seen> {
        let mut attempts: Vec<Seen> = self
            .all()
            .into_iter()
            .filter(|s| s.name == ATTEMPT_SPAN)
            .collect();
        attempts.sort_by_key(|s| s.fields["llm.attempt"].parse::<u32>().unwrap());
        attempts
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            fields,
            closed: false,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        self.with_open(id, |seen| values.record(&mut Fields(&mut seen.fields)));
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        self.with_open(&id, |seen| seen.closed = true);
    }
}

fn layer(primary: &str, secondary: &str) -> FallbackLayer {
    FallbackLayer::builder()
        .target(
            TargetConfig::new("provider-a", "model-a")
                .name("primary")
                .base_url(primary),
        )
        .target(
            TargetConfig::new("provider-b", "model-b")
                .name("secondary")
                .base_url(secondary),
        )
        .build()
        .unwrap()
}

fn request(url: String, stream: bool) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("alias", stream))))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failover_is_one_span_per_attempt_under_the_callers_span() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let a = mock(Fault::status(503)).await;
    let b = mock(Fault::Healthy).await;
    let svc = guarded_stack(layer(&a.base_url(), &b.base_url()));
    let caller = tracing::info_span!("caller");
    let res = tower::ServiceExt::oneshot(svc, request(a.completions_url(), false))
        .instrument(caller.clone())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();

    let caller_id = caller.id().unwrap().into_u64();
    let attempts = spans.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for attempt in &attempts {
        assert_eq!(attempt.parent, Some(caller_id), "{attempt:#?}");
        assert!(attempt.closed, "{attempt:#?}");
        assert_eq!(attempt.fields["gen_ai.operation.name"], "chat");
        assert_eq!(attempt.fields["llm.resume"], "false");
    }
    let (failed, answered) = (&attempts[0].fields, &attempts[1].fields);
    assert_eq!(failed["gen_ai.provider.name"], "provider-a");
    assert_eq!(failed["gen_ai.request.model"], "model-a");
    assert_eq!(failed["llm.target"], "primary");
    assert_eq!(failed["llm.outcome"], "failure");
    assert_eq!(failed["error.type"], ErrorKind::Overloaded.as_str());
    assert_eq!(failed["http.response.status_code"], "503");
    assert_eq!(failed["otel.status_code"], "error");
    assert_eq!(answered["gen_ai.system"], "provider-b");
    assert_eq!(answered["otel.name"], "chat model-b");
    assert_eq!(answered["llm.outcome"], "success");
    assert_eq!(
        answered["llm.fallback.reason"],
        ErrorKind::Overloaded.as_str()
    );
    assert_eq!(
        answered["gen_ai.response.model"],
        answer["model"].as_str().unwrap()
    );
    assert_eq!(
        answered["gen_ai.usage.input_tokens"],
        answer["usage"]["prompt_tokens"].to_string()
    );
    assert_eq!(
        answered["gen_ai.usage.output_tokens"],
        answer["usage"]["completion_tokens"].to_string()
    );
    assert!(
        !answered.contains_key("llm.ttft_ms"),
        "a JSON answer has no TTFT"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_stream_is_two_attempts_each_open_until_its_part_ends() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let a = mock(Fault::CutAfter(4)).await;
    let b = mock(Fault::Healthy).await;
    let svc = guarded_stack(layer(&a.base_url(), &b.base_url()));
    let caller = tracing::info_span!("caller");
    let res = tower::ServiceExt::oneshot(svc, request(a.completions_url(), true))
        .instrument(caller.clone())
        .await
        .unwrap();
    // Committed on the primary: its span is open while the body is.
    let attempts = spans.attempts();
    assert_eq!(attempts.len(), 1);
    assert!(!attempts[0].closed, "open until the body ends");
    assert!(attempts[0].fields.contains_key("llm.ttft_ms"));

    let mut body = res.into_body();
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        text.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(sse_content(&text), CANONICAL_ANSWER);
    let attempts = spans.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let (cut, continued) = (&attempts[0], &attempts[1]);
    // The cut attempt closed when the continuation took over, marked with the cut's kind.
    assert!(cut.closed);
    assert_eq!(cut.fields["llm.target"], "primary");
    assert_eq!(
        cut.fields["error.type"],
        ErrorKind::InvalidResponse.as_str()
    );
    // The continuation: an attempt of the same request, under the caller's span (not under the
    // cut attempt, whose body was being read when it started).
    let caller_id = caller.id().unwrap().into_u64();
    assert_eq!(continued.parent, Some(caller_id));
    assert_eq!(continued.fields["llm.target"], "secondary");
    assert_eq!(continued.fields["llm.resume"], "true");
    assert_eq!(continued.fields["llm.outcome"], "success");
    assert!(continued.fields.contains_key("gen_ai.usage.output_tokens"));
    assert!(!continued.closed, "open while the body is");
    drop(body);
    assert!(spans.attempts().iter().all(|s| s.closed));
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_half_read_closes_its_attempt_span() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let a = mock(Fault::Healthy).await;
    let b = mock(Fault::Healthy).await;
    let svc = guarded_stack(layer(&a.base_url(), &b.base_url()));
    let res = tower::ServiceExt::oneshot(svc, request(a.completions_url(), true))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let attempts = spans.attempts();
    assert_eq!(attempts.len(), 1);
    assert!(!attempts[0].closed);
    // No caller span: the attempt is a root.
    assert_eq!(attempts[0].parent, None);
    drop(body);
    assert!(
        spans.attempts()[0].closed,
        "dropping the body closes the span"
    );
}
