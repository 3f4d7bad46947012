//! The metrics the chain records: names from `tower_llm_fallback::metrics`, labelled by target.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::{BufferRequestBodyLayer, ReplayBody, Target};
use tower_llm_fallback::metrics::{ATTEMPTS_TOTAL, RESPONSES_TOTAL, SKIPPED_TOTAL};
use tower_llm_fallback::{FallbackLayer, TargetConfig};

/// Keeps every counter by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(Arc::clone(self.0.lock().unwrap().entry(name).or_default()))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_skips_and_answers_are_counted_per_target() {
    let recorder = Counters::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let client = service_fn(|req: http::Request<ReplayBody<Full<Bytes>>>| async move {
        let target = req.extensions().get::<Target>().cloned().unwrap();
        let status = if target.provider() == "primary" {
            503
        } else {
            200
        };
        let res = http::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(br#"{"choices":[]}"#)))
            .unwrap();
        Ok::<_, Infallible>(res)
    });
    let svc = ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::default())
        .layer(
            FallbackLayer::builder()
                .target(TargetConfig::new("primary", "big"))
                .target(TargetConfig::new("secondary", "small"))
                .build()
                .unwrap(),
        )
        .service(client);
    let request = || {
        http::Request::post("http://gateway/v1/chat/completions")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","messages":[]}"#,
            )))
            .unwrap()
    };
    // The primary fails and is benched; the secondary answers.
    assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), 200);
    // The primary is skipped without a call; the secondary answers again.
    assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), 200);
    // Once its cooldown lifted the primary is tried again and fails again: the same series
    // counts on (the target's handles are held after their first use).
    tokio::time::advance(std::time::Duration::from_secs(3600)).await;
    assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), 200);

    let failed = format!("{ATTEMPTS_TOTAL}{{kind=overloaded,outcome=failure,target=primary/big}}");
    let answered = format!("{ATTEMPTS_TOTAL}{{kind=none,outcome=success,target=secondary/small}}");
    assert_eq!(recorder.get(&failed), 2);
    assert_eq!(recorder.get(&answered), 3);
    assert_eq!(
        recorder.get(&format!(
            "{SKIPPED_TOTAL}{{kind=overloaded,target=primary/big}}"
        )),
        1
    );
    assert_eq!(
        recorder.get(&format!(
            "{RESPONSES_TOTAL}{{outcome=target,target=secondary/small}}"
        )),
        3
    );
}
