//! Reporting a stream: its commit and its end (outcome listeners, metrics, logs).

use std::sync::Arc;

use tokio::time::Instant;

use super::Core;
use crate::stream::StreamEnd;
use crate::Target;

impl<B> Core<B> {
    pub(super) fn committed(&mut self) {
        let ttft = self.chunk_at.saturating_duration_since(self.started);
        self.metrics.first_event.record(ttft.as_secs_f64());
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
        let elapsed = Instant::now().saturating_duration_since(self.started);
        self.metrics.ended(end, elapsed);
        match self.usage {
            Some(usage) => {
                self.metrics.reported(usage);
                crate::stream::usage::record_on_span(usage);
                if usage.output.is_none() && end == StreamEnd::Complete {
                    self.metrics.estimated_output(self.content_chunks);
                }
            }
            None if end == StreamEnd::Complete => {
                self.metrics.estimated_output(self.content_chunks);
            }
            None => {}
        }
        let elapsed_ms = elapsed.as_millis() as u64;
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

    pub(super) fn target_label(&self) -> Arc<str> {
        self.metrics.label()
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
