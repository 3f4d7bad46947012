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
    let labels = "target=openai";
    // Registered on the first call, not when built.
    assert!(recorder.gauges.lock().unwrap().is_empty());

    let running = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    let waiting = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    assert_eq!(
        recorder.gauge(&format!("tower_llm_bulkhead_limit{{{labels}}}")),
        1.0
    );
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
            "tower_llm_bulkhead_rejected_total{{reason=queue,{labels}}}"
        )),
        1
    );
    assert_eq!(
        recorder.counter(&format!(
            "tower_llm_bulkhead_rejected_total{{reason=max_wait,{labels}}}"
        )),
        1
    );
    assert_eq!(
        recorder.samples("tower_llm_bulkhead_wait_seconds{outcome=rejected,target=openai}"),
        [0.3]
    );
}

fn targeted(provider: &str, model: &str) -> http::Request<()> {
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(tower_llm_core::Target::new(provider, model));
    req
}

#[tokio::test(start_paused = true)]
async fn a_keyed_bulkhead_labels_each_partition_by_its_key_and_overflow_as_such() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = BulkheadLayer::builder()
        .name("chain")
        .partition_by(tower_llm_bulkhead::ByTarget::new())
        .max_partitions(1)
        .partition_overflow(tower_llm_bulkhead::PartitionOverflow::Reject)
        .max_concurrent(2)
        .max_queued(0)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::from_secs(1)));
    let running = tokio::spawn(svc.clone().oneshot(targeted("openai", "gpt-4o")));
    settle().await;
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_in_flight{target=openai/gpt-4o}"),
        1.0
    );
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_limit{target=openai/gpt-4o}"),
        2.0
    );
    // A second target finds no room in the table: counted as `overflow`, never by its key.
    assert!(svc
        .clone()
        .oneshot(targeted("groq", "llama"))
        .await
        .is_err());
    assert_eq!(
        recorder.counter("tower_llm_bulkhead_rejected_total{reason=partitions,target=overflow}"),
        1
    );
    let keys = recorder
        .gauges
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        keys.iter()
            .all(|k| !k.contains("groq") && !k.contains("chain")),
        "{keys:?}"
    );
    drop(running.await.unwrap().unwrap());
}

#[tokio::test(start_paused = true)]
async fn labelled_by_name_partitions_add_up_in_one_series_and_evicted_ones_leave_it() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = BulkheadLayer::builder()
        .name("tenants")
        .partition_by(tower_llm_bulkhead::partition_fn(|tenant: &u32| *tenant))
        .target_label(tower_llm_bulkhead::TargetLabel::Name)
        .max_partitions(2)
        .partition_overflow(tower_llm_bulkhead::PartitionOverflow::Reject)
        .max_concurrent(3)
        .release_on_response()
        .read_budget(tower_llm_core::NoBudget)
        .classifier(tower_llm_bulkhead::ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|_: u32| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, std::convert::Infallible>(())
        }));
    let running: Vec<_> = [1, 2]
        .map(|tenant| tokio::spawn(svc.clone().oneshot(tenant)))
        .into_iter()
        .collect();
    settle().await;
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_in_flight{target=tenants}"),
        2.0
    );
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_limit{target=tenants}"),
        6.0
    );
    // A third tenant while both partitions are busy: rejected, labelled by the name.
    assert!(svc.clone().oneshot(3).await.is_err());
    assert_eq!(
        recorder.counter("tower_llm_bulkhead_rejected_total{reason=partitions,target=tenants}"),
        1
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    for call in running {
        call.await.unwrap().unwrap();
    }
    // Once idle, both partitions are evicted to make room for tenant 3: their limits leave the
    // gauge, tenant 3's joins it.
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(3).await.unwrap();
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_limit{target=tenants}"),
        3.0
    );
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_in_flight{target=tenants}"),
        0.0
    );
    // Nothing was ever labelled by a tenant.
    let keys = recorder
        .gauges
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        keys.iter().all(|k| k.ends_with("{target=tenants}")),
        "{keys:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_built_before_the_recorder_records_to_it_and_one_never_called_adds_nothing() {
    // Built while no recorder is installed (a stack built at start-up, a configuration check).
    let unused = BulkheadLayer::builder().name("check").build().unwrap();
    let layer = BulkheadLayer::builder().name("early").build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::ZERO));

    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    drop(svc.clone().oneshot(http::Request::new(())).await.unwrap());
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_limit{target=early}"),
        64.0
    );
    assert_eq!(
        recorder.gauge("tower_llm_bulkhead_in_flight{target=early}"),
        0.0
    );
    drop(unused);
    let keys = recorder
        .gauges
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert!(keys.iter().all(|k| !k.contains("check")), "{keys:?}");
}
