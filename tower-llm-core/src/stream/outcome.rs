//! [`StreamOutcome`]: how a streamed body ended, for the layers that returned it long before.
//!
//! A layer learns whether a call succeeded when its inner future resolves, but for a streamed
//! answer that is only the start: the body may still be cut, stall, or carry an error event
//! minutes later, after the response went up the stack. The layer that watches the stream
//! ([`StreamGuard`](super::StreamGuard)) puts a [`StreamOutcome`] in the response extensions and
//! reports the end through it; a breaker, a fallback's health record or a metrics layer above
//! registers a listener with [`on_end`](StreamOutcome::on_end) when the response passes by.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::sse::ScanNotes;
use crate::{ErrorKind, Failure};

/// How a streamed body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamEnd {
    /// The answer arrived whole: `[DONE]`, or a `finish_reason` and then the end of the body.
    Complete,
    /// The stream broke after the response was returned: cut, stalled, over its time limit, an
    /// in-band error, a malformed event (with [`MalformedPolicy::End`](super::MalformedPolicy)).
    /// The caller received an SSE error event instead of `[DONE]`.
    Failed(Failure),
    /// The caller dropped the body before the end: not the target's fault.
    Abandoned,
}

impl StreamEnd {
    /// Whether the answer arrived whole.
    pub const fn is_complete(&self) -> bool {
        matches!(self, StreamEnd::Complete)
    }

    /// The failure, for [`StreamEnd::Failed`].
    pub const fn failure(&self) -> Option<Failure> {
        match self {
            StreamEnd::Failed(failure) => Some(*failure),
            _ => None,
        }
    }

    /// The failure kind, for [`StreamEnd::Failed`].
    pub const fn kind(&self) -> Option<ErrorKind> {
        match self {
            StreamEnd::Failed(failure) => Some(failure.kind),
            _ => None,
        }
    }

    /// A stable name, used as the `outcome` label in metrics: `complete`, `failed`, `abandoned`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::Failed(_) => "failed",
            StreamEnd::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEnd::Failed(failure) => write!(f, "failed ({})", failure.kind),
            other => f.write_str(other.as_str()),
        }
    }
}

type Listener = Box<dyn FnOnce(StreamEnd) + Send + 'static>;

enum State {
    Open(Vec<Listener>),
    Ended(StreamEnd),
}

/// A one-shot report of how a streamed body ended, shared by the body's watcher and any number
/// of listeners. Cloning shares it (one `Arc`).
///
/// [`StreamGuard`](super::StreamGuard) puts one in the extensions of every streamed response it
/// commits to (none for other responses). A layer above that judges calls (a breaker, a
/// fallback's health record) should, for such a response, take its verdict from
/// [`on_end`](Self::on_end) rather than from the `200`: [`StreamEnd::Failed`] carries the
/// [`Failure`] to count, [`StreamEnd::Abandoned`] says nothing about the target.
///
/// [`finish`](Self::finish) records the end once (the first call wins) and runs every listener
/// registered so far, in order, on the finishing thread; [`on_end`](Self::on_end) after the end
/// runs the listener at once. Every listener runs exactly once, also when registration and
/// `finish` race on different threads. Listeners run outside the internal lock, so they may
/// register more listeners; they should be quick (they run inside a body's `poll_frame`) and must
/// not panic.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_llm_core::{ErrorKind, Failure, StreamEnd, StreamOutcome};
///
/// let outcome = StreamOutcome::new();
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = Arc::clone(&seen);
/// outcome.on_end(move |end| log.lock().unwrap().push(end));
///
/// // The body watcher reports the end once; later reports are ignored.
/// assert!(outcome.finish(StreamEnd::Failed(Failure::new(ErrorKind::InvalidResponse))));
/// assert!(!outcome.finish(StreamEnd::Complete));
///
/// // A listener registered after the end runs at once.
/// let log = Arc::clone(&seen);
/// outcome.on_end(move |end| log.lock().unwrap().push(end));
/// let failed = StreamEnd::Failed(Failure::new(ErrorKind::InvalidResponse));
/// assert_eq!(*seen.lock().unwrap(), [failed, failed]);
/// assert_eq!(outcome.end(), Some(failed));
/// ```
#[derive(Clone)]
pub struct StreamOutcome {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Set when a layer above asks the watcher to share its scans ([`StreamOutcome::watch_scans`]).
    notes: OnceLock<Box<ScanNotes>>,
}

impl Default for StreamOutcome {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamOutcome {
    /// An outcome that has not ended.
    pub fn new() -> Self {
        StreamOutcome {
            shared: Arc::new(Shared {
                state: Mutex::new(State::Open(Vec::new())),
                notes: OnceLock::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Listeners run outside the lock, so a poisoned lock only means a panic while pushing a
        // listener; the state itself is always consistent.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `listener` with the end of the stream: now, if it has ended, else when it ends.
    pub fn on_end(&self, listener: impl FnOnce(StreamEnd) + Send + 'static) {
        let mut state = self.lock();
        match &mut *state {
            State::Open(listeners) => listeners.push(Box::new(listener)),
            State::Ended(end) => {
                let end = *end;
                drop(state);
                listener(end);
            }
        }
    }

    /// Record the end and run the listeners. Returns `false` (and does nothing) when the end was
    /// already recorded.
    pub fn finish(&self, end: StreamEnd) -> bool {
        let listeners = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, State::Ended(end)) {
                State::Open(listeners) => listeners,
                first @ State::Ended(_) => {
                    *state = first;
                    return false;
                }
            }
        };
        for listener in listeners {
            listener(end);
        }
        true
    }

    /// The end, once recorded.
    pub fn end(&self) -> Option<StreamEnd> {
        match &*self.lock() {
            State::Open(_) => None,
            State::Ended(end) => Some(*end),
        }
    }

    /// Whether the end was recorded.
    pub fn is_ended(&self) -> bool {
        self.end().is_some()
    }

    /// Whether `self` and `other` are the same outcome (clones of one another).
    pub fn ptr_eq(&self, other: &StreamOutcome) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Ask the stream's watcher to note what it reads in each event, for a layer above that reads
    /// the same events (a fallback's resume watch), and return the notes to read them from. The
    /// watcher notes nothing until some layer asks; the notes live as long as the outcome.
    ///
    /// ```
    /// use tower_llm_core::StreamOutcome;
    ///
    /// let outcome = StreamOutcome::new();
    /// assert!(outcome.scan_notes().is_none());
    /// let notes = outcome.watch_scans();
    /// assert!(std::ptr::eq(notes, outcome.scan_notes().unwrap()));
    /// ```
    pub fn watch_scans(&self) -> &ScanNotes {
        self.shared.notes.get_or_init(Default::default)
    }

    /// The notes a layer above asked for with [`watch_scans`](Self::watch_scans), `None` when none
    /// did: the stream's watcher notes its scans here.
    pub fn scan_notes(&self) -> Option<&ScanNotes> {
        self.shared.notes.get().map(|notes| &**notes)
    }
}

impl fmt::Debug for StreamOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.lock() {
            State::Open(listeners) => f
                .debug_struct("StreamOutcome")
                .field("ended", &false)
                .field("listeners", &listeners.len())
                .finish(),
            State::Ended(end) => f.debug_struct("StreamOutcome").field("end", end).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn listeners_run_in_order_once() {
        let outcome = StreamOutcome::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let order = Arc::clone(&order);
            outcome.on_end(move |end| order.lock().unwrap().push((i, end)));
        }
        assert!(outcome.end().is_none());
        assert!(outcome.finish(StreamEnd::Abandoned));
        assert!(!outcome.finish(StreamEnd::Complete));
        assert_eq!(
            *order.lock().unwrap(),
            [
                (0, StreamEnd::Abandoned),
                (1, StreamEnd::Abandoned),
                (2, StreamEnd::Abandoned)
            ]
        );
        assert_eq!(outcome.end(), Some(StreamEnd::Abandoned));
    }

    #[test]
    fn a_listener_may_register_another() {
        let outcome = StreamOutcome::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let (inner_outcome, inner_runs) = (outcome.clone(), Arc::clone(&runs));
        outcome.on_end(move |_| {
            let runs = Arc::clone(&inner_runs);
            inner_outcome.on_end(move |end| {
                assert!(end.is_complete());
                runs.fetch_add(1, Ordering::SeqCst);
            });
        });
        outcome.finish(StreamEnd::Complete);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn debug_shows_state() {
        let outcome = StreamOutcome::new();
        outcome.on_end(|_| {});
        assert_eq!(
            format!("{outcome:?}"),
            "StreamOutcome { ended: false, listeners: 1 }"
        );
        outcome.finish(StreamEnd::Complete);
        assert_eq!(format!("{outcome:?}"), "StreamOutcome { end: Complete }");
    }

    /// Registration racing `finish` on other threads: every listener runs exactly once, and only
    /// one `finish` wins.
    #[test]
    fn concurrent_registration_and_finish_lose_no_listener() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 8;
        for round in 0..200 {
            let outcome = StreamOutcome::new();
            let runs = Arc::new(AtomicUsize::new(0));
            let wins = Arc::new(AtomicUsize::new(0));
            // The registering threads, the two finishing threads and this one.
            let start = Arc::new(Barrier::new(THREADS + 3));
            let mut handles = Vec::new();
            for _ in 0..THREADS {
                let (outcome, runs, start) =
                    (outcome.clone(), Arc::clone(&runs), Arc::clone(&start));
                handles.push(std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..PER_THREAD {
                        let runs = Arc::clone(&runs);
                        outcome.on_end(move |_| {
                            runs.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                }));
            }
            for end in [StreamEnd::Complete, StreamEnd::Abandoned] {
                let (outcome, wins, start) =
                    (outcome.clone(), Arc::clone(&wins), Arc::clone(&start));
                handles.push(std::thread::spawn(move || {
                    start.wait();
                    if outcome.finish(end) {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                }));
            }
            start.wait();
            for handle in handles {
                handle.join().unwrap();
            }
            assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
            assert_eq!(
                runs.load(Ordering::SeqCst),
                THREADS * PER_THREAD,
                "round {round}"
            );
        }
    }
}
