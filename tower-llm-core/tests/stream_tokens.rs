//! The stream guard's token counters and stream durations: `usage` of JSON answers and of
//! streams' usage chunks counted as `reported`, an estimate for a complete stream without one,
//! nothing for a cut stream; labelled by target, also when one guard serves two targets.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::stream::metrics::{DURATION_SECONDS, TOKENS_TOTAL};
use tower_llm_core::{StreamGuardLayer, Target};

/// Counter values and histogram samples by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct Recorded {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorded {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
    fn samples(&self, key: &str) -> Vec<f64> {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or_else(Vec::new, |h| h.0.lock().unwrap().clone())
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(Arc::clone(counters.entry(render(key)).or_default()))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(Arc::clone(histograms.entry(render(key)).or_default()))
    }
}

const JSON: &str = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

/// OpenAI with `stream_options.include_usage`: `"usage": null` on every chunk, then a usage chunk.
const SSE_USAGE: &str = concat!(
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
    "data: [DONE]\n\n",
);

/// Three content chunks, a finish, no usage.
const SSE_NO_USAGE: &str = concat!(
    "data: {\"choices\":[{\"delta\":{\"content\":\"One\"},\"finish_reason\":null}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" two\"},\"finish_reason\":null}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" three\"},\"finish_reason\":null}]}\n\n",
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

/// Two content chunks, then the body ends: a cut stream.
const SSE_CUT: &str = concat!(
    "data: {\"choices\":[{\"delta\":{\"content\":\"One\"},\"finish_reason\":null}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" two\"},\"finish_reason\":null}]}\n\n",
);

fn tokens(direction: &str, source: &str, target: &str) -> String {
    format!("{TOKENS_TOTAL}{{direction={direction},source={source},target={target}}}")
}

#[tokio::test(start_paused = true)]
async fn tokens_are_counted_from_usage_or_estimated_and_stream_durations_recorded() {
    let recorder = Recorded::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let upstream = service_fn(|req: http::Request<()>| async move {
        let (content_type, body) = match req.uri().path() {
            "/json" => ("application/json", JSON),
            "/usage" => ("text/event-stream", SSE_USAGE),
            "/no-usage" => ("text/event-stream", SSE_NO_USAGE),
            _ => ("text/event-stream", SSE_CUT),
        };
        // The upstream takes 1.5 s to answer (paused clock: exact).
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let res = http::Response::builder()
            .header("content-type", content_type)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        Ok::<_, Infallible>(res)
    });
    let svc = ServiceBuilder::new()
        .layer(StreamGuardLayer::builder().build().unwrap())
        .service(upstream);
    let call = |path: &str, target: &Target| {
        let mut req = http::Request::get(path).body(()).unwrap();
        req.extensions_mut().insert(target.clone());
        svc.clone().oneshot(req)
    };
    let a = Target::new("openai", "gpt-4o");
    // A second target through the same guard: registered on the spot, still its own series.
    let b = Target::new("groq", "llama");
    for (path, target) in [
        ("/json", &a),
        ("/json", &a),
        ("/usage", &a),
        ("/no-usage", &a),
        ("/cut", &a),
        ("/usage", &b),
    ] {
        let res = call(path, target).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    let a = "openai/gpt-4o";
    assert_eq!(
        recorder.counter(&tokens("input", "reported", a)),
        12 + 12 + 7
    );
    assert_eq!(
        recorder.counter(&tokens("output", "reported", a)),
        3 + 3 + 2
    );
    // One token per content chunk of the stream without usage; nothing for the cut stream.
    assert_eq!(recorder.counter(&tokens("output", "estimated", a)), 3);
    assert_eq!(recorder.counter(&tokens("input", "estimated", a)), 0);
    assert_eq!(
        recorder.counter(&tokens("input", "reported", "groq/llama")),
        7
    );
    assert_eq!(
        recorder.counter(&tokens("output", "reported", "groq/llama")),
        2
    );

    let complete = recorder.samples(&format!(
        "{DURATION_SECONDS}{{outcome=complete,target={a}}}"
    ));
    assert_eq!(complete, vec![1.5, 1.5], "JSON answers are not streams");
    let failed = recorder.samples(&format!("{DURATION_SECONDS}{{outcome=failed,target={a}}}"));
    assert_eq!(failed, vec![1.5]);
}
