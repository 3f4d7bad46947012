//! The stream guard's metrics: names from `tower_llm_core::stream::metrics`, labelled by target.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::stream::metrics::{ENDS_TOTAL, FIRST_EVENT_SECONDS};
use tower_llm_core::{StreamGuardLayer, Target};

/// Counts counter increments and histogram samples by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct Recorded {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(AtomicU64);

impl metrics::HistogramFn for Samples {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
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
    fn samples(&self, key: &str) -> u64 {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |h| h.0.load(Ordering::SeqCst))
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

#[tokio::test(start_paused = true)]
async fn stream_ends_and_time_to_first_event_are_recorded_per_target() {
    let recorder = Recorded::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let upstream = service_fn(|req: http::Request<()>| async move {
        // `cut` streams one token and stops; others finish properly.
        let sse = if req.uri().path() == "/cut" {
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
        } else {
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"
        };
        let res = http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from_static(sse.as_bytes())))
            .unwrap();
        Ok::<_, Infallible>(res)
    });
    let svc = ServiceBuilder::new()
        .layer(StreamGuardLayer::builder().build().unwrap())
        .service(upstream);
    let call = |path: &str| {
        let mut req = http::Request::get(path).body(()).unwrap();
        req.extensions_mut().insert(Target::new("groq", "llama"));
        svc.clone().oneshot(req)
    };
    for path in ["/ok", "/cut"] {
        let res = call(path).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    assert_eq!(
        recorder.counter(&format!(
            "{ENDS_TOTAL}{{kind=none,outcome=complete,target=groq/llama}}"
        )),
        1
    );
    assert_eq!(
        recorder.counter(&format!(
            "{ENDS_TOTAL}{{kind=invalid_response,outcome=failed,target=groq/llama}}"
        )),
        1
    );
    assert_eq!(
        recorder.samples(&format!("{FIRST_EVENT_SECONDS}{{target=groq/llama}}")),
        2
    );
}
