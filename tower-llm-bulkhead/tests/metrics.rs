//! The metrics a bulkhead records, through the `metrics` facade.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{settle, slow_upstream, Probe};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::BulkheadLayer;

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps every metric by `name{label=value,...}`.
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
    fn gauge(&self, key: &str) -> f64 {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map_or(f64::NAN, |g| f64::from_bits(g.load(Ordering::SeqCst)))
    }
    fn samples(&self, key: &str) -> Vec<f64> {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or_else(Vec::new, |h| h.0.lock().unwrap().clone())
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::clone(
            self.counters
                .lock()
                .unwrap()
                .entry(render(key))
                .or_default(),
        ))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::clone(
            self.gauges.lock().unwrap().entry(render(key)).or_default(),
        ))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::clone(
            self.histograms
                .lock()
                .unwrap()
                .entry(render(key))
                .or_default(),
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn records_in_flight_queued_rejections_and_waits() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = BulkheadLayer::builder()
        .name("openai")
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_millis(300))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::from_secs(1)));
    let labels = "bulkhead=openai,partition=openai";
    assert_eq!(
        recorder.gauge(&format!("tower_llm_bulkhead_limit{{{labels}}}")),
        1.0
    );

    let running = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    let waiting = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    assert_eq!(
        recorder.gauge(&format!("tower_llm_bulkhead_in_flight{{{labels}}}")),
        1.0
    );
    assert_eq!(
        recorder.gauge(&format!("tower_llm_bulkhead_queued{{{labels}}}")),
        1.0
    );
    // Queue full.
    assert!(svc.clone().oneshot(http::Request::new(())).await.is_err());
    // The waiter gives up after 300 ms.
    assert!(waiting.await.unwrap().is_err());
    drop(running.await.unwrap().unwrap());

    assert_eq!(
        recorder.gauge(&format!("tower_llm_bulkhead_in_flight{{{labels}}}")),
        0.0
    );
    assert_eq!(
        recorder.gauge(&format!("tower_llm_bulkhead_queued{{{labels}}}")),
        0.0
    );
    assert_eq!(
        recorder.counter(&format!(
            "tower_llm_bulkhead_rejected_total{{{labels},reason=queue}}"
        )),
        1
    );
    assert_eq!(
        recorder.counter(&format!(
            "tower_llm_bulkhead_rejected_total{{{labels},reason=max_wait}}"
        )),
        1
    );
    assert_eq!(
        recorder.samples(
            "tower_llm_bulkhead_wait_seconds{bulkhead=openai,outcome=rejected,partition=openai}"
        ),
        [0.3]
    );
}
