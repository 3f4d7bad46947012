//! The metrics a retry layer records, by the names of [`tower_llm_retry::metrics`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::Target;
use tower_llm_retry::metrics as names;
use tower_llm_retry::{Backoff, Hedging, RetryBudget, RetryLayer};

/// Keeps counters by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
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
        let counters = self.counters.lock().unwrap();
        counters.get(key).map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Recorder for TestRecorder {
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
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn request(status: u16, delay_ms: u64) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post("http://llm.test/v1/chat/completions")
        .header("x-status", status)
        .header("x-delay-ms", delay_ms)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    req.extensions_mut().insert(Target::new("p", "m"));
    req
}

#[tokio::test(start_paused = true)]
async fn every_metric_is_named_by_a_constant() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .hedging(Hedging::fixed(Duration::from_millis(100)).with_max_hedges(1))
        // Each first attempt pays for one retry or hedge.
        .budget(RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap())
        .seed(3)
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(layer).service(service_fn(
        |req: http::Request<Full<Bytes>>| {
            let header =
                |name: &str| -> u64 { req.headers()[name].to_str().unwrap().parse().unwrap() };
            let (status, delay) = (header("x-status") as u16, header("x-delay-ms"));
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap())
            }
        },
    ));

    // Hedged once (slow); a failure retried once, then refused a second retry by the budget; a
    // failure that is not retried at all (passed through, not counted as a stop). Every count
    // below is exact: the layer holds its first target's counters after their first use.
    client.clone().oneshot(request(200, 150)).await.unwrap();
    client.clone().oneshot(request(503, 0)).await.unwrap();
    client.clone().oneshot(request(401, 0)).await.unwrap();

    // A second target through the same layer: its own series (registered on the spot).
    let mut other = request(200, 0);
    other.extensions_mut().insert(Target::new("q", "n"));
    client.clone().oneshot(other).await.unwrap();
    // And a failure of the second target, retried: counted under its own label, not under the
    // first target's held counters.
    let mut other = request(503, 0);
    other.extensions_mut().insert(Target::new("q", "n"));
    client.clone().oneshot(other).await.unwrap();
    // The first target again: its held counters keep counting.
    client.clone().oneshot(request(200, 150)).await.unwrap();

    let attempts = |kind: &str, target: &str| {
        recorder.counter(&format!(
            "{}{{attempt={kind},target={target}}}",
            names::ATTEMPTS_TOTAL
        ))
    };
    assert_eq!(
        (
            attempts("first", "p/m"),
            attempts("retry", "p/m"),
            attempts("hedge", "p/m")
        ),
        (4, 1, 2)
    );
    assert_eq!((attempts("first", "q/n"), attempts("retry", "q/n")), (2, 2));
    assert_eq!(
        recorder.counter(&format!(
            "{}{{kind=overloaded,target=q/n}}",
            names::RETRIES_TOTAL
        )),
        2
    );
    let t = "target=p/m";
    assert_eq!(
        recorder.counter(&format!("{}{{{t}}}", names::HEDGES_TOTAL)),
        2
    );
    assert_eq!(
        recorder.counter(&format!("{}{{kind=overloaded,{t}}}", names::RETRIES_TOTAL)),
        1
    );
    assert_eq!(
        recorder.counter(&format!("{}{{{t}}}", names::BUDGET_EXHAUSTED_TOTAL)),
        1
    );
    assert_eq!(
        recorder.counter(&format!(
            "{}{{kind=overloaded,reason=budget_exhausted,{t}}}",
            names::STOPPED_TOTAL
        )),
        1
    );
    assert_eq!(
        recorder.counter(&format!(
            "{}{{kind=overloaded,reason=attempts_exhausted,target=q/n}}",
            names::STOPPED_TOTAL
        )),
        1
    );
    let stops: u64 = recorder
        .counters
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(names::STOPPED_TOTAL))
        .map(|(_, c)| c.load(Ordering::SeqCst))
        .sum();
    assert_eq!(stops, 2, "the 401 is passed through");
    for key in recorder.counters.lock().unwrap().keys() {
        let name = key.split('{').next().unwrap();
        assert!(names::ALL.contains(&name), "{name} has no constant");
    }
}
