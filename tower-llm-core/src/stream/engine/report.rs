//! Reporting a stream: its commit and its end (outcome listeners, metrics, logs).

use std::sync::Arc;

use tokio::time::Instant;

use super::Core;
use crate::stream::metrics as names;
use crate::stream::StreamEnd;
use crate::{ErrorKind, Target};

impl<B> Core<B> {
    pub(super) fn committed(&mut self) {
        let ttft = self.chunk_at.saturating_duration_since(self.started);
        metrics::histogram!(names::FIRST_EVENT_SECONDS, names::TARGET => self.target_label())
            .record(ttft.as_secs_f64());
        tracing::debug!(
            target = %self.target_display(),
            ttft_ms = ttft.as_millis() as u64,
            "stream committed at its first event"
        );
    }

    /// Record the end once: outcome listeners, metrics, a log line.
    pub(super) fn report(&mut self, end: StreamEnd) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        if let Some(outcome) = &self.outcome {
            outcome.finish(end);
        }
        metrics::counter!(
            names::ENDS_TOTAL,
            names::TARGET => self.target_label(),
            names::OUTCOME => end.as_str(),
            names::KIND => end.kind().map_or("none", ErrorKind::as_str),
        )
        .increment(1);
        let elapsed_ms = Instant::now()
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        let events = self.tracker.events();
        match end {
            StreamEnd::Failed(failure) => tracing::warn!(
                target = %self.target_display(),
                kind = %failure.kind,
                events,
                elapsed_ms,
                "stream ended with an error event"
            ),
            _ => tracing::debug!(
                target = %self.target_display(),
                outcome = end.as_str(),
                events,
                elapsed_ms,
                "stream ended"
            ),
        }
    }

    pub(super) fn target_label(&mut self) -> Arc<str> {
        let label = self.target_label.get_or_insert_with(|| {
            self.target
                .as_ref()
                .map_or_else(|| Arc::from(""), |t| Arc::from(t.to_string()))
        });
        Arc::clone(label)
    }

    pub(super) fn target_display(&self) -> TargetDisplay<'_> {
        TargetDisplay(self.target.as_ref())
    }
}

pub(super) struct TargetDisplay<'a>(Option<&'a Target>);

impl std::fmt::Display for TargetDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(target) => write!(f, "{target}"),
            None => f.write_str("-"),
        }
    }
}

impl<B> Drop for Core<B> {
    fn drop(&mut self) {
        // Dropped after commit without an end: the caller went away. An answer already whole
        // (a `finish_reason` seen) still counts as complete.
        if self.outcome.is_some() && !self.reported {
            let end = if self.tracker.is_complete() {
                StreamEnd::Complete
            } else {
                StreamEnd::Abandoned
            };
            self.report(end);
        }
    }
}
