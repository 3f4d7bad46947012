//! The wait queue bounded in time as well as in calls: a call that would join behind more
//! waiters than the queue drains within its wait is turned away at once
//! ([`LimitKind::ExpectedWait`]), so a short burst is absorbed by a deep queue while a sustained
//! overload fails fast instead of after the whole maximum wait. Paused time throughout.

mod common;

use std::time::Duration;

use common::{settle, slow_upstream, Probe};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, PermitBody};
use tower_llm_core::{AttemptBudget, BoxError, BulkheadFull, LimitKind};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How each call of a run ended.
#[derive(Debug, Default)]
struct Outcomes {
    served: usize,
    /// The longest a served call waited for its slot (its latency less the upstream's).
    longest_wait: Duration,
    expected_wait: Vec<Duration>,
    max_wait: Vec<Duration>,
    other: Vec<LimitKind>,
}

impl Outcomes {
    fn record(&mut self, outcome: Result<Duration, BoxError>, upstream: Duration) {
        match outcome {
            Ok(took) => {
                self.served += 1;
                self.longest_wait = self.longest_wait.max(took.saturating_sub(upstream));
            }
            Err(err) => {
                let full = err
                    .downcast_ref::<BulkheadFull>()
                    .unwrap_or_else(|| panic!("expected BulkheadFull, got {err}"));
                match full.limit() {
                    LimitKind::ExpectedWait => self.expected_wait.push(full.waited()),
                    LimitKind::MaxWait => self.max_wait.push(full.waited()),
                    other => self.other.push(other),
                }
            }
        }
    }
}

/// What the bulkhead's service looks like to the tests.
trait Svc:
    tower::Service<
        http::Request<()>,
        Response = http::Response<PermitBody<common::Body>>,
        Error = BoxError,
        Future: Send,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Svc for S where
    S: tower::Service<
            http::Request<()>,
            Response = http::Response<PermitBody<common::Body>>,
            Error = BoxError,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// A bulkhead of `concurrent` slots and `queued` places whose calls wait at most `wait`.
fn limits(concurrent: usize, queued: usize, wait: Duration) -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent(concurrent)
        .max_queued(queued)
        .max_wait(wait)
        .build()
        .unwrap()
}

/// A bulkhead built by `layer` in front of an upstream taking `upstream`.
fn bulkhead(layer: BulkheadLayer, upstream: Duration) -> impl Svc {
    ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), upstream))
}

/// One call started at `at`, with an attempt deadline `budget` after its start if set; its
/// latency (start to the end of the body) or its error.
fn spawn_call(
    svc: &impl Svc,
    at: Instant,
    budget: Option<Duration>,
) -> tokio::task::JoinHandle<Result<Duration, BoxError>> {
    let svc = svc.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        let mut req = http::Request::new(());
        if let Some(budget) = budget {
            req.extensions_mut()
                .insert(AttemptBudget::until(Instant::now() + budget).single_call());
        }
        let res = svc.oneshot(req).await?;
        res.into_body().collect().await?;
        Ok(at.elapsed())
    })
}

/// How the spawned `calls` ended, in front of an upstream taking `upstream`.
async fn outcomes(
    calls: Vec<tokio::task::JoinHandle<Result<Duration, BoxError>>>,
    upstream: Duration,
) -> Outcomes {
    let mut outcomes = Outcomes::default();
    for call in calls {
        outcomes.record(call.await.unwrap(), upstream);
    }
    outcomes
}

/// `calls` calls, one every `every` (all at once when zero), to `svc` in front of an upstream
/// taking `upstream`.
async fn run(svc: &impl Svc, upstream: Duration, calls: usize, every: Duration) -> Outcomes {
    let start = Instant::now();
    let tasks: Vec<_> = (0..calls)
        .map(|i| spawn_call(svc, start + every * u32::try_from(i).unwrap(), None))
        .collect();
    outcomes(tasks, upstream).await
}

/// The soak's shape: a burst larger than the old default queue (128) into 64 slots in front of a
/// 10 ms upstream. It drains in about 50 ms, far within the 1 s maximum wait: the default
/// bulkhead serves all of it (before, 108 of the 300 were shed "after 0ms").
#[tokio::test(start_paused = true)]
async fn a_burst_the_queue_drains_in_time_is_absorbed_by_the_defaults() {
    let svc = bulkhead(BulkheadLayer::builder().build().unwrap(), ms(10));
    let outcomes = run(&svc, ms(10), 300, Duration::ZERO).await;
    assert_eq!(outcomes.served, 300, "{outcomes:?}");
    assert!(outcomes.longest_wait <= ms(50), "{outcomes:?}");
}

/// Sustained overload: calls arrive twice as fast as 4 slots of a 20 ms upstream serve them
/// (400/s against 200/s) with a 1,000-place queue and a 200 ms maximum wait. Without the
/// expected-wait bound every call past the first 40 or so queues, waits its whole 200 ms and is
/// shed anyway (360 of them); with it they are turned away at once, the served ones still use
/// every slot, and only calls at the edge (the measured rate is smoothed, the hand-overs come
/// in clumps) may wait their maximum and be shed (440 served, 349 turned away at once, 11 shed
/// after their 200 ms: a standstill overrides the measured rate only past 8 estimates, which
/// clumped hand-overs do not reach).
#[tokio::test(start_paused = true)]
async fn sustained_overload_is_shed_at_once_not_after_the_maximum_wait() {
    let svc = bulkhead(limits(4, 1000, ms(200)), ms(20));
    let outcomes = run(&svc, ms(20), 800, Duration::from_micros(2500)).await;
    assert!(outcomes.other.is_empty(), "{outcomes:?}");
    // 2 s of arrivals plus the drain: the 4 slots serve about 200 a second.
    assert!(
        (400..=460).contains(&outcomes.served),
        "capacity used: {outcomes:?}"
    );
    assert!(outcomes.longest_wait <= ms(200), "{outcomes:?}");
    let shed = outcomes.expected_wait.len() + outcomes.max_wait.len();
    assert_eq!(outcomes.served + shed, 800);
    assert!(
        outcomes.expected_wait.iter().all(Duration::is_zero),
        "turned away without waiting: {outcomes:?}"
    );
    assert!(
        outcomes.max_wait.len() * 20 <= shed,
        "at most 5 % of the shed calls waited the whole 200 ms: {} of {shed}",
        outcomes.max_wait.len()
    );
}

/// A call whose attempt has less time left than the queue ahead needs is turned away at once,
/// while one with time enough queues and is served.
#[tokio::test(start_paused = true)]
async fn the_attempt_deadline_bounds_the_expected_wait() {
    let svc = bulkhead(limits(1, 100, ms(1_000)), ms(10));
    // One call in flight and 5 waiting; at 10 and 20 ms two hand-overs 10 ms apart are measured.
    let start = Instant::now();
    let warm: Vec<_> = (0..6).map(|_| spawn_call(&svc, start, None)).collect();
    settle().await;
    tokio::time::sleep(ms(25)).await;
    // 1 in flight, 3 waiting: a newcomer's expected wait is 4 × 10 ms.
    let now = Instant::now();
    let short = spawn_call(&svc, now, Some(ms(30)));
    let long = spawn_call(&svc, now, Some(ms(100)));
    let err = short.await.unwrap().unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.limit(), full.waited()),
        (LimitKind::ExpectedWait, Duration::ZERO)
    );
    assert_eq!(
        long.await.unwrap().unwrap(),
        ms(45),
        "3 ahead, then its own 10 ms"
    );
    for w in warm {
        w.await.unwrap().unwrap();
    }
}

/// The drain rate is remembered for a moment only: a queue that forms long after the last one
/// is not judged by the old rate. A slow spell (one slot, 100 ms calls) is measured, then after
/// a quiet 5 s a burst of 5 calls with a 250 ms maximum wait: the old rate (100 ms a call) would
/// turn the last two away at once; unmeasured, they queue (and wait their 250 ms, as any queue
/// without a measured rate does) while the first three are served.
#[tokio::test(start_paused = true)]
async fn an_old_drain_rate_is_forgotten() {
    let svc = bulkhead(limits(1, 100, ms(250)), ms(100));
    let first = run(&svc, ms(100), 3, Duration::ZERO).await;
    assert_eq!(first.served, 3, "{first:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = run(&svc, ms(100), 5, Duration::ZERO).await;
    assert!(second.expected_wait.is_empty(), "{second:?}");
    assert_eq!(second.served, 3, "{second:?}");
    assert_eq!(second.max_wait.len(), 2, "{second:?}");
}

/// The soak's stall: every slot held by a call that hangs (an upstream stalling its streams, 3 s
/// here), then one call a millisecond for a second into the defaults (64 slots, 512 queued, 1 s
/// maximum wait). Nothing is handed over, so there is no drain to measure: before, the queue
/// admitted the first 512 calls, each to wait its whole second before its caller could fail
/// over (and turned the other 488 away as `Full`). A queue that calls keep joining while it
/// does not move now counts as draining no faster than it stands still: it stops admitting
/// after a few tens of milliseconds (32 calls), and the rest are turned away at once.
#[tokio::test(start_paused = true)]
async fn a_queue_behind_hung_slots_stops_admitting() {
    let svc = bulkhead(BulkheadLayer::builder().build().unwrap(), ms(3_000));
    let start = Instant::now();
    let hung: Vec<_> = (0..64).map(|_| spawn_call(&svc, start, None)).collect();
    settle().await;
    let calls: Vec<_> = (0..1_000)
        .map(|i| spawn_call(&svc, start + ms(1 + i), None))
        .collect();
    let outcomes = outcomes(calls, ms(3_000)).await;
    assert!(
        outcomes.other.is_empty(),
        "none turned away as Full: {outcomes:?}"
    );
    assert_eq!(outcomes.served, 0, "{outcomes:?}");
    // The queue stops at ~31: j ms after it formed, j × (j + 1) ms ≤ 1 s.
    assert!(
        (20..=40).contains(&outcomes.max_wait.len()),
        "waited the whole second: {}",
        outcomes.max_wait.len()
    );
    assert_eq!(
        outcomes.expected_wait.len() + outcomes.max_wait.len(),
        1_000
    );
    assert!(
        outcomes.expected_wait.iter().all(Duration::is_zero),
        "turned away without waiting"
    );
    for call in hung {
        call.await.unwrap().unwrap();
    }
}

/// A pause of the process (or of the whole machine) is not a stuck queue: 64 slots held by
/// 400 ms calls and 100 calls waiting, then 300 ms in which nothing runs, then 50 calls arriving
/// together. The queue has not moved for 300 ms of wall time, but no call joined in between to
/// see it stand still: the newcomers queue and are served (soak run G: counting wall time here
/// turned calls away as `ExpectedWait` after a steal storm of the machine).
#[tokio::test(start_paused = true)]
async fn a_pause_is_not_a_standstill() {
    let svc = bulkhead(BulkheadLayer::builder().build().unwrap(), ms(400));
    let start = Instant::now();
    let before: Vec<_> = (0..164).map(|_| spawn_call(&svc, start, None)).collect();
    settle().await;
    tokio::time::advance(ms(300)).await;
    let after: Vec<_> = (0..50)
        .map(|_| spawn_call(&svc, start + ms(300), None))
        .collect();
    let outcomes = outcomes(after, ms(400)).await;
    // 64 of the first 100 waiting start at 400 ms, the other 36 and 28 of these at 800 ms, and
    // the last 22 at 1.2 s, 900 ms after they joined.
    assert_eq!(outcomes.served, 50, "{outcomes:?}");
    assert_eq!(outcomes.longest_wait, ms(900), "{outcomes:?}");
    for call in before {
        call.await.unwrap().unwrap();
    }
}
