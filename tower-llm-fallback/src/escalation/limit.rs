//! The escalation rate limit: per reason and target, the first event of a window goes to the
//! hook at once, the rest are counted into one summary when the window ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Escalation, EscalationEvent, Suppressed};
use crate::health::unix_ms;

/// Events are limited per reason and target (`None` for `all_targets_failed`).
type Key = (&'static str, Option<String>);

/// One key's current window.
struct Window {
    started: Instant,
    started_unix_ms: u64,
    /// Events held back since `started`, and the last of them.
    held: u64,
    last: Option<EscalationEvent>,
    /// A timer task sends the summary when the window ends.
    timer: bool,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            started: now,
            started_unix_ms: unix_ms(SystemTime::now()),
            held: 0,
            last: None,
            timer: false,
        }
    }

    /// The summary of what was held back, if anything was (and forget it).
    fn take_summary(&mut self, window: Duration) -> Option<EscalationEvent> {
        let count = std::mem::take(&mut self.held);
        let mut event = self.last.take()?;
        event.attempts = Vec::new();
        event.at_unix_ms = unix_ms(SystemTime::now());
        event.suppressed = Some(Suppressed {
            count,
            window_start_unix_ms: self.started_unix_ms,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        });
        Some(event)
    }
}

/// The hook behind the rate limit.
pub(super) struct Limiter {
    hook: Box<dyn Escalation>,
    window: Duration,
    windows: Mutex<HashMap<Key, Window>>,
}

impl Limiter {
    pub(super) fn new(hook: Box<dyn Escalation>, window: Duration) -> Self {
        Limiter {
            hook,
            window,
            windows: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Window>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Send `event` to the hook, or count it into its window's summary.
    pub(super) fn fire(this: &Arc<Self>, event: EscalationEvent, now: Instant) {
        if this.window.is_zero() {
            this.hook.escalate(&event);
            return;
        }
        let key: Key = (event.reason.as_str(), event.target.clone());
        let (summary, send, arm) = {
            let mut windows = this.lock();
            match windows.get_mut(&key) {
                Some(w) if now.saturating_duration_since(w.started) < this.window => {
                    metrics::counter!(
                        crate::metrics::ESCALATIONS_SUPPRESSED_TOTAL,
                        crate::metrics::REASON => event.reason.as_str()
                    )
                    .increment(1);
                    w.held += 1;
                    w.last = Some(event.clone());
                    let arm = (!w.timer).then_some(w.started);
                    w.timer = true;
                    (None, false, arm)
                }
                // The window is over: its summary (unless its timer sent it), then this event
                // opens the next one.
                Some(w) => {
                    let summary = w.take_summary(this.window);
                    *w = Window::new(now);
                    (summary, true, None)
                }
                None => {
                    windows.insert(key.clone(), Window::new(now));
                    (None, true, None)
                }
            }
        };
        if let Some(summary) = summary {
            this.hook.escalate(&summary);
        }
        if send {
            this.hook.escalate(&event);
        }
        if let Some(started) = arm {
            Self::arm(this, key, started);
        }
    }

    /// Send the summary of `key`'s window opened at `started` when it ends, from a timer task.
    /// Without a tokio runtime (or a window too long for the clock) there is no timer: the
    /// summary goes with the next event after the window.
    fn arm(this: &Arc<Self>, key: Key, started: Instant) {
        let (Ok(runtime), Some(at)) = (
            tokio::runtime::Handle::try_current(),
            started.checked_add(this.window),
        ) else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(this);
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            let Some(this) = weak.upgrade() else { return };
            let summary = match this.lock().get_mut(&key) {
                Some(w) if w.started == started => w.take_summary(this.window),
                _ => None,
            };
            if let Some(summary) = summary {
                this.hook.escalate(&summary);
            }
        });
    }
}
