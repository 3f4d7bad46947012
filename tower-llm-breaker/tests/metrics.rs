//! The metrics a breaker records, by the names of [`tower_llm_breaker::metrics`], all labelled
//! with `target`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower_llm_breaker::metrics as names;
use tower_llm_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer, Outcome};
use tower_llm_core::{ErrorKind, Target};

/// Keeps counters and gauges by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct TestRecorder {
    values: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
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
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        Arc::clone(self.values.lock().unwrap().entry(render(key)).or_default())
    }
    fn counter(&self, key: &str) -> u64 {
        let values = self.values.lock().unwrap();
        values.get(key).map_or(0, |c| c.load(Ordering::SeqCst))
    }
    fn gauge(&self, key: &str) -> f64 {
        f64::from_bits(self.counter(key))
    }
    fn names(&self) -> Vec<String> {
        let values = self.values.lock().unwrap();
        let mut names: Vec<String> = values
            .keys()
            .map(|k| k.split('{').next().unwrap().to_owned())
            .collect();
        names.dedup();
        names
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn every_metric_is_named_by_a_constant_and_labelled_by_target() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let breaker = CircuitBreakerLayer::builder()
        .name("openai/gpt")
        .consecutive_failures(1)
        .build()
        .unwrap()
        .handle();
    breaker.try_acquire().unwrap().record(Outcome::Success);
    breaker.try_acquire().unwrap().record(Outcome::Ignored);
    breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure(ErrorKind::ServerError));
    assert!(breaker.try_acquire().is_err());

    let t = "target=openai/gpt";
    let calls = |outcome: &str| {
        recorder.counter(&format!("{}{{outcome={outcome},{t}}}", names::CALLS_TOTAL))
    };
    assert_eq!((calls("success"), calls("ignored")), (1, 1));
    assert_eq!(
        recorder.counter(&format!(
            "{}{{kind=server_error,outcome=failure,{t}}}",
            names::CALLS_TOTAL
        )),
        1
    );
    assert_eq!(
        recorder.counter(&format!("{}{{state=open,{t}}}", names::REJECTIONS_TOTAL)),
        1
    );
    assert_eq!(
        recorder.counter(&format!(
            "{}{{from=closed,{t},to=open}}",
            names::TRANSITIONS_TOTAL
        )),
        1
    );
    assert_eq!(recorder.gauge(&format!("{}{{{t}}}", names::STATE)), 1.0);

    // A keyed layer at its bound of one key, with that key's breaker open: the next key overflows.
    let keyed = KeyedCircuitBreakerLayer::builder()
        .name("keyed")
        .consecutive_failures(1)
        .max_keys(1)
        .build()
        .unwrap()
        .handle();
    keyed.get_or_create(Target::new("a", "m")).trip();
    keyed.get_or_create(Target::new("b", "m"));
    assert_eq!(
        recorder.counter(&format!("{}{{target=keyed}}", names::KEY_OVERFLOW_TOTAL)),
        1
    );

    for name in recorder.names() {
        assert!(
            names::ALL.contains(&name.as_str()),
            "{name} has no constant"
        );
    }
    let keys: Vec<String> = recorder.values.lock().unwrap().keys().cloned().collect();
    assert!(keys.iter().all(|k| k.contains("target=")), "{keys:?}");
}
