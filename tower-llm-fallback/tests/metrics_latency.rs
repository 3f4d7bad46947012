//! The chain's attempt-duration histogram, fallbacks by reason, and the cooldown gauge.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::{BufferRequestBodyLayer, ReplayBody, Target};
use tower_llm_fallback::metrics::{
    CooldownGauges, ATTEMPT_DURATION_SECONDS, COOLDOWN, FALLBACKS_TOTAL,
};
use tower_llm_fallback::{FallbackLayer, TargetConfig};

/// Every series by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct Recorded {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<Value>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Value(Mutex<f64>);

impl GaugeFn for Value {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
    }
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
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
    fn gauge(&self, key: &str) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map(|g| *g.0.lock().unwrap())
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
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(gauges.entry(render(key)).or_default()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(Arc::clone(histograms.entry(render(key)).or_default()))
    }
}

#[tokio::test(start_paused = true)]
async fn attempt_durations_fallback_reasons_and_cooldowns_are_recorded() {
    let recorder = Recorded::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let primary_down = Arc::new(AtomicBool::new(true));
    let down = Arc::clone(&primary_down);
    let client = service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
        let down = down.load(Ordering::SeqCst);
        async move {
            let target = req.extensions().get::<Target>().cloned().unwrap();
            // The primary answers 503 after 2 s while down, 200 after 0.25 s once back; the
            // secondary answers 200 after 0.1 s (paused clock: exact).
            let (status, took) = match (target.provider(), down) {
                ("primary", true) => (503, 2000),
                ("primary", false) => (200, 250),
                _ => (200, 100),
            };
            tokio::time::sleep(Duration::from_millis(took)).await;
            let res = http::Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(br#"{"choices":[]}"#)))
                .unwrap();
            Ok::<_, Infallible>(res)
        }
    });
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("primary", "big"))
        .target(TargetConfig::new("secondary", "small"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::default())
        .layer(layer)
        .service(client);
    let request = || {
        http::Request::post("http://gateway/v1/chat/completions")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","messages":[]}"#,
            )))
            .unwrap()
    };
    let mut gauges = CooldownGauges::new();
    let cooldown = format!("{COOLDOWN}{{kind=overloaded,target=primary/big}}");

    // The primary fails (503 = overloaded) and is benched; the secondary answers.
    assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), 200);
    // The primary is skipped while benched; the secondary answers again.
    assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), 200);
    gauges.update_from(&handle.health());
    assert_eq!(recorder.gauge(&cooldown), Some(1.0));
    assert_eq!(gauges.benched(), 1);

    // The primary comes back: after its cooldown, the next request probes it and it answers.
    primary_down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(600)).await;
    gauges.update_from(&handle.health());
    assert_eq!(
        recorder.gauge(&cooldown),
        Some(2.0),
        "lifted, a probe decides"
    );
    assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), 200);
    gauges.update_from(&handle.health());
    assert_eq!(recorder.gauge(&cooldown), Some(0.0));
    assert_eq!(gauges.benched(), 0);

    let histogram = |target: &str, outcome: &str| {
        recorder.samples(&format!(
            "{ATTEMPT_DURATION_SECONDS}{{outcome={outcome},target={target}}}"
        ))
    };
    assert_eq!(histogram("primary/big", "failure"), vec![2.0]);
    assert_eq!(histogram("primary/big", "success"), vec![0.25]);
    assert_eq!(histogram("secondary/small", "success"), vec![0.1, 0.1]);
    assert!(histogram("secondary/small", "failure").is_empty());
    // Both fallbacks left the primary for `overloaded`: the failure, then the cooldown's skip.
    assert_eq!(
        recorder.counter(&format!(
            "{FALLBACKS_TOTAL}{{reason=overloaded,target=secondary/small}}"
        )),
        2
    );
}
