//! Holding a paused tokio clock still while real IO is under way.
//!
//! With `tokio::time::pause()` (or `#[tokio::test(start_paused = true)]`) the runtime advances
//! the clock to the next timer whenever it has nothing else to do — even when a task is only
//! waiting for bytes from a real socket. On loopback that is normally harmless, because the
//! bytes arrive before the runtime runs out of work; but a test that must assert "nothing
//! happened before 10 s" while another thread, a blocking task or the kernel is still delivering
//! data can see a timeout fire early. [`hold_auto_advance`] inhibits auto-advance until its guard
//! is dropped, so time moves only through `tokio::time::advance` (a `test-util` function).
//!
//! It works the way tokio itself keeps time still during `spawn_blocking`: tokio inhibits
//! auto-advance for as long as a blocking task runs, so the guard runs one that waits until the
//! guard is dropped. This only has an effect on a current-thread runtime with tokio's
//! `test-util` feature (the only kind of runtime whose clock can be paused).
//!
//! ```
//! use std::time::Duration;
//! use tokio::time::{advance, sleep, timeout, Instant};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! tokio::time::pause();
//! let start = Instant::now();
//! let guard = tower_llm_chaos::hold_auto_advance();
//! // With the guard held, a 5 s timer does not fire by itself...
//! let (tx, rx) = tokio::sync::oneshot::channel();
//! std::thread::spawn(move || {
//!     std::thread::sleep(Duration::from_millis(50));
//!     let _ = tx.send("real work done");
//! });
//! tokio::select! {
//!     _ = sleep(Duration::from_secs(5)) => unreachable!("the clock auto-advanced"),
//!     done = rx => assert_eq!(done.unwrap(), "real work done"),
//! }
//! assert_eq!(start.elapsed(), Duration::ZERO);
//! // ...time moves only when the test says so.
//! advance(Duration::from_secs(5)).await;
//! assert_eq!(start.elapsed(), Duration::from_secs(5));
//! drop(guard);
//! // Without it, the paused clock jumps to the next timer again.
//! timeout(Duration::from_secs(60), std::future::pending::<()>()).await.unwrap_err();
//! assert!(start.elapsed() >= Duration::from_secs(65));
//! # }
//! ```

use std::fmt;
use std::sync::mpsc;

/// Inhibits auto-advance of a paused tokio clock until dropped; see [`hold_auto_advance`].
///
/// Drop it before the runtime shuts down: a runtime waits for its blocking tasks on shutdown.
#[must_use = "auto-advance is inhibited only while the guard is alive"]
pub struct AutoAdvanceGuard {
    release: Option<mpsc::Sender<()>>,
}

impl fmt::Debug for AutoAdvanceGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoAdvanceGuard")
            .field("holding", &self.release.is_some())
            .finish()
    }
}

impl AutoAdvanceGuard {
    /// Whether the guard holds a runtime's clock (false when created outside a tokio runtime).
    pub fn is_holding(&self) -> bool {
        self.release.is_some()
    }
}

/// Inhibit the current runtime's paused-clock auto-advance until the returned guard is dropped.
///
/// Outside a tokio runtime the guard holds nothing (see [`AutoAdvanceGuard::is_holding`]). Read
/// the [module docs](self) for why and when.
pub fn hold_auto_advance() -> AutoAdvanceGuard {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return AutoAdvanceGuard { release: None };
    };
    let (release, released) = mpsc::channel::<()>();
    // tokio counts the blocking task against auto-advance from the moment it is spawned until
    // it returns, which is when the guard's sender is dropped.
    drop(runtime.spawn_blocking(move || {
        let _ = released.recv();
    }));
    AutoAdvanceGuard {
        release: Some(release),
    }
}
