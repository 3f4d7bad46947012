//! Whether a stream so far is complete or would be cut: [`StreamTracker`].

use super::{inspect_event, EventKind, SseEvent};

/// Where a stream stands, from the events seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StreamStatus {
    /// No end signal yet: if the body ends now, the stream was cut.
    #[default]
    Open,
    /// A `finish_reason` was seen: the answer is whole; `[DONE]` may still follow.
    Finished,
    /// `[DONE]` (or another end event) was seen.
    Done,
    /// The provider sent an in-band error before the end.
    Errored,
}

/// Follows a stream's events and says whether it is complete or was cut.
///
/// `Done` and `Errored` are final; an error after a `finish_reason` but before `[DONE]` makes the
/// stream `Errored`. With `n > 1` choices a `finish_reason` on any of them counts; `[DONE]` is the
/// reliable signal there.
#[derive(Clone, Debug, Default)]
pub struct StreamTracker {
    status: StreamStatus,
    events: u64,
    deltas: u64,
    malformed: u64,
    usage: bool,
}

impl StreamTracker {
    /// A tracker for a stream that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inspect `event` ([`inspect_event`]), record it, and return its kind.
    pub fn observe(&mut self, event: &SseEvent) -> EventKind {
        let kind = inspect_event(event);
        self.record(kind);
        kind
    }

    /// Record an event already inspected.
    pub fn record(&mut self, kind: EventKind) {
        self.events += 1;
        match kind {
            EventKind::Delta { usage } | EventKind::Finish { usage } => {
                self.deltas += 1;
                self.usage |= usage;
            }
            EventKind::Malformed => self.malformed += 1,
            _ => {}
        }
        self.status = match (self.status, kind) {
            (StreamStatus::Done | StreamStatus::Errored, _) => self.status,
            (_, EventKind::Error) => StreamStatus::Errored,
            (_, EventKind::Done) => StreamStatus::Done,
            (StreamStatus::Open, EventKind::Finish { .. }) => StreamStatus::Finished,
            (status, _) => status,
        };
    }

    /// Where the stream stands.
    pub fn status(&self) -> StreamStatus {
        self.status
    }

    /// Whether the answer is whole: a `finish_reason` or `[DONE]` was seen, and no error.
    pub fn is_complete(&self) -> bool {
        matches!(self.status, StreamStatus::Finished | StreamStatus::Done)
    }

    /// Whether the stream would be cut if it ended now: no end signal and no error yet.
    pub fn is_open(&self) -> bool {
        self.status == StreamStatus::Open
    }

    /// Events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Answer chunks ([`EventKind::Delta`] and [`EventKind::Finish`]) recorded.
    pub fn deltas(&self) -> u64 {
        self.deltas
    }

    /// Malformed events recorded.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Whether a chunk carried token usage.
    pub fn saw_usage(&self) -> bool {
        self.usage
    }
}
