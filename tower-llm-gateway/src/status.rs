//! Counters of the gateway's traffic and the live status line (stderr, once a second, unless
//! [`GatewayOptions::quiet`](crate::GatewayOptions::quiet)).
//!
//! ```text
//! [   12s]   2.0 req/s | fallbacks 2 errors 0 | degraded | primary/gpt-4o-mini open 3s cooldown 2s fails 5 (overloaded) | secondary/backup-model closed
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_llm::breaker::State;
use tower_llm::{StackHealth, TargetStatus};

use crate::server::GatewayStack;

/// Requests, fallbacks and errors since start (shared by every handler; read them with
/// [`Gateway::totals`](crate::Gateway::totals)).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Chat requests received.
    pub requests: u64,
    /// Answers served by another target than the first, the cache or the static tier.
    pub fallbacks: u64,
    /// Requests answered with an error status by the gateway (4xx/5xx it produced itself).
    pub errors: u64,
}

impl Counters {
    /// Read every counter.
    pub(crate) fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Longest target name the status line prints, in characters (longer ones end in `…`).
pub const MAX_PRINTED_NAME: usize = 80;

/// `text` made safe for a terminal: control characters (ANSI escapes included) and invisible
/// formatting characters (bidirectional overrides, zero-width ones) as `\u{..}`, and at most
/// `max` characters of it, then `…`.
///
/// ```
/// use tower_llm_gateway::status::printable;
///
/// assert_eq!(printable("\u{1b}[31mevil", 80), "\\u{1b}[31mevil");
/// assert_eq!(printable("gpt-4o", 3), "gpt…");
/// ```
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let invisible = matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        );
        if c.is_control() || invisible {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Most targets one status line lists; the others are counted as `+K more`.
pub const MAX_LISTED_TARGETS: usize = 8;

/// Longest status line, in bytes (with many pass-through models the targets would not fit a
/// terminal line, nor a log line).
pub const MAX_STATUS_LINE: usize = 1024;

/// Room kept at the end of a line for ` | +K more`.
const MORE_RESERVE: usize = " | +18446744073709551615 more".len();

/// One status line: the rate and counts since `previous`, then the targets' states, those not
/// healthy first (open or half-open breaker, cooldown, failures, unavailable), at most
/// [`MAX_LISTED_TARGETS`] of them and at most [`MAX_STATUS_LINE`] bytes in all; the targets left
/// out are counted as `+K more`. Target names come from clients (a pass-through model is named
/// as requested): each is printed through [`printable`].
pub fn status_line(
    uptime: Duration,
    since_last: Duration,
    now: Totals,
    previous: Totals,
    health: &StackHealth,
) -> String {
    let secs = since_last.as_secs_f64().max(1e-3);
    let rate = now.requests.saturating_sub(previous.requests) as f64 / secs;
    let mut head = format!(
        "[{:>5}s] {rate:5.1} req/s | fallbacks {} errors {} | {}",
        uptime.as_secs(),
        now.fallbacks.saturating_sub(previous.fallbacks),
        now.errors.saturating_sub(previous.errors),
        health.status.as_str(),
    );
    // `[shared_state]`: whether replicas share what they learn right now.
    if let Some(shared) = &health.shared_state {
        let _ = match shared.status {
            tower_llm::redis::SharedStateStatus::Connected => write!(head, " | shared"),
            other => write!(head, " | shared state {other} (local decisions)"),
        };
    }
    let (unhealthy, healthy): (Vec<_>, Vec<_>) =
        health.targets.iter().partition(|t| !is_healthy(t));
    // Only the targets that can be listed are formatted: a line per second stays cheap with
    // thousands of targets.
    let listed = unhealthy
        .iter()
        .chain(healthy.iter())
        .take(MAX_LISTED_TARGETS)
        .map(|t| target_segment(t));
    bounded_line(head, listed, health.targets.len())
}

/// `head`, then ` | segment` for as many `segments` as fit in [`MAX_STATUS_LINE`] bytes (at
/// most [`MAX_LISTED_TARGETS`]), then ` | +K more` for the other of the `total` targets.
///
/// ```
/// use tower_llm_gateway::status::{bounded_line, MAX_STATUS_LINE};
///
/// let segments = (0..300).map(|i| format!("primary/model-{i} closed"));
/// let line = bounded_line("[   1s]   0.0 req/s".to_owned(), segments, 300);
/// assert!(line.ends_with(" | +292 more"));
/// assert!(line.len() <= MAX_STATUS_LINE);
/// ```
pub fn bounded_line(
    head: String,
    segments: impl IntoIterator<Item = String>,
    total: usize,
) -> String {
    let mut line = head;
    truncate_at_char(&mut line, MAX_STATUS_LINE - MORE_RESERVE);
    let mut shown = 0;
    for segment in segments.into_iter().take(MAX_LISTED_TARGETS) {
        if line.len() + 3 + segment.len() > MAX_STATUS_LINE - MORE_RESERVE {
            break;
        }
        line.push_str(" | ");
        line.push_str(&segment);
        shown += 1;
    }
    let more = total.saturating_sub(shown);
    if more > 0 {
        let _ = write!(line, " | +{more} more");
    }
    line
}

/// Cut `s` to at most `max` bytes, on a character boundary.
fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Whether a target is in its normal state: available, breaker closed, no cooldown, no failure
/// since its last success.
fn is_healthy(t: &TargetStatus) -> bool {
    t.available
        && t.breaker.as_ref().is_none_or(|b| b.state == State::Closed)
        && t.cooldown.is_none()
        && t.consecutive_failures == 0
}

/// One target's part of the line: its name and state.
fn target_segment(t: &TargetStatus) -> String {
    let mut line = printable(&t.name, MAX_PRINTED_NAME);
    if let Some(b) = &t.breaker {
        let _ = write!(line, " {}", b.state);
        if b.state == State::Open {
            match b.retry_after_ms {
                Some(ms) if ms > 0 => {
                    let _ = write!(line, " {}s", ms.div_ceil(1000));
                }
                // The wait is over: the next call is a half-open probe.
                _ => line.push_str(" (probe due)"),
            }
        }
    }
    if let Some(cd) = &t.cooldown {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match cd.until_unix_ms {
            _ if cd.probing => line.push_str(" probing"),
            Some(until) if until > now_ms => {
                let _ = write!(line, " cooldown {}s", (until - now_ms).div_ceil(1000));
            }
            // Lifted: the next request probes it (the breaker's note says so if open).
            Some(_) => {}
            None => line.push_str(" benched until reset"),
        }
    }
    if t.consecutive_failures > 0 {
        let _ = write!(line, " fails {}", t.consecutive_failures);
        if let Some(kind) = &t.last_error_kind {
            let _ = write!(line, " ({})", printable(kind, MAX_PRINTED_NAME));
        }
    }
    line
}

/// Print the status line to stderr once a second.
pub(crate) async fn status_task(stack: GatewayStack, counters: Arc<Counters>) {
    let started = tokio::time::Instant::now();
    let mut previous = counters.totals();
    let mut last = started;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let totals = counters.totals();
        eprintln!(
            "{}",
            status_line(now - started, now - last, totals, previous, &stack.health())
        );
        previous = totals;
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls_and_invisible_formatting_and_bounds_length() {
        assert_eq!(
            printable("a\u{7}b\u{9b}c\u{200b}\u{feff}\u{2066}", 80),
            "a\\u{7}b\\u{9b}c\\u{200b}\\u{feff}\\u{2066}"
        );
        assert_eq!(printable("\u{1b}[2J\r\n", 80), "\\u{1b}[2J\\u{d}\\u{a}");
        assert_eq!(printable("abc", 0), "…");
        assert_eq!(printable("abc", 3), "abc");
        assert_eq!(printable("日本語です", 3), "日本語…");
    }

    #[test]
    fn three_hundred_targets_make_a_bounded_line() {
        let head = "[   12s]   2.0 req/s | fallbacks 0 errors 0 | healthy".to_owned();
        let segments = (0..300).map(|i| format!("primary/model-{i:03} closed"));
        let line = bounded_line(head.clone(), segments, 300);
        assert!(line.len() <= MAX_STATUS_LINE, "{} bytes", line.len());
        assert!(line.starts_with(&head));
        assert_eq!(line.matches(" closed").count(), MAX_LISTED_TARGETS);
        assert!(line.contains("primary/model-007 closed"));
        assert!(!line.contains("primary/model-008"));
        assert!(line.ends_with(" | +292 more"), "{line}");
    }

    #[test]
    fn long_segments_stop_at_the_byte_limit() {
        // Escaped names take up to 10 bytes a character: 8 of them cannot all fit.
        let segment = printable(&"\u{202e}".repeat(80), MAX_PRINTED_NAME);
        let line = bounded_line("head".to_owned(), std::iter::repeat_n(segment, 300), 300);
        assert!(line.len() <= MAX_STATUS_LINE, "{} bytes", line.len());
        let more: usize = line
            .rsplit(" | +")
            .next()
            .and_then(|m| m.strip_suffix(" more"))
            .and_then(|k| k.parse().ok())
            .expect("a +K more suffix");
        assert!(more > 300 - MAX_LISTED_TARGETS, "{line}");

        let huge_head = "h".repeat(5000);
        let line = bounded_line(huge_head, ["x closed".to_owned()], 1);
        assert!(line.len() <= MAX_STATUS_LINE);
        assert!(line.ends_with(" | +1 more"), "{line}");
    }

    #[test]
    fn every_target_is_listed_when_few() {
        let line = bounded_line(
            "head".to_owned(),
            ["a closed".to_owned(), "b open 3s".to_owned()],
            2,
        );
        assert_eq!(line, "head | a closed | b open 3s");
    }
}
