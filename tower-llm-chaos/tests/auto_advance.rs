//! `hold_auto_advance`: a paused clock stays still while the guard lives, even with real IO.

mod common;

use std::time::Duration;

use common::*;
use tokio::sync::oneshot;
use tokio::time::{advance, sleep, timeout, Instant};
use tower_llm_chaos::{hold_auto_advance, Fault, MockUpstream};

/// Resolves after `real` wall-clock time, from another thread (IO the runtime cannot see coming).
fn real_time_signal(real: Duration) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(real);
        let _ = tx.send(());
    });
    rx
}

#[tokio::test(start_paused = true)]
async fn without_the_guard_the_paused_clock_jumps_to_the_next_timer() {
    // The control experiment: an idle runtime fires the 5 s timer before the thread is done.
    let start = Instant::now();
    let signal = real_time_signal(Duration::from_millis(100));
    tokio::select! {
        _ = sleep(Duration::from_secs(5)) => {}
        _ = signal => panic!("the runtime waited for real time"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn with_the_guard_only_advance_moves_the_clock() {
    let start = Instant::now();
    let guard = hold_auto_advance();
    assert!(guard.is_holding());
    let signal = real_time_signal(Duration::from_millis(100));
    tokio::select! {
        _ = sleep(Duration::from_secs(5)) => panic!("the clock auto-advanced under the guard"),
        _ = signal => {}
    }
    assert_eq!(start.elapsed(), Duration::ZERO);

    advance(Duration::from_secs(2)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // Released, the clock auto-advances again.
    drop(guard);
    sleep(Duration::from_secs(60)).await;
    assert!(start.elapsed() >= Duration::from_secs(62));
}

#[tokio::test(start_paused = true)]
async fn guards_nest() {
    let start = Instant::now();
    let outer = hold_auto_advance();
    let inner = hold_auto_advance();
    drop(inner);
    let signal = real_time_signal(Duration::from_millis(50));
    tokio::select! {
        _ = sleep(Duration::from_secs(1)) => panic!("one guard still holds the clock"),
        _ = signal => {}
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop(outer);
}

#[test]
fn outside_a_runtime_the_guard_holds_nothing() {
    assert!(!hold_auto_advance().is_holding());
}

#[tokio::test(start_paused = true)]
async fn a_timeout_around_real_io_fires_exactly_when_advanced() {
    // A hung upstream and a 30 s client timeout: with the guard, the test decides when the
    // timeout fires, however long the loopback IO takes.
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Hang)
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    let guard = hold_auto_advance();
    let mut sender = connect(upstream.addr()).await;
    let request = sender.send_request(chat(upstream.addr(), "m", false));
    let attempt =
        tokio::spawn(async move { timeout(Duration::from_secs(30), request).await.is_err() });
    upstream.wait_for_attempts(1).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    advance(Duration::from_secs(29)).await;
    assert!(!attempt.is_finished());
    advance(Duration::from_secs(1)).await;
    assert!(attempt.await.unwrap(), "the timeout fired");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    drop(guard);
}
