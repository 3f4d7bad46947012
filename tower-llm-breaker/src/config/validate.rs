//! The checks of [`CircuitBreakerConfigBuilder::build`](super::CircuitBreakerConfigBuilder::build).

use tower_llm_core::ConfigError;

use super::{
    ConfigInner, SlidingWindow, MAX_COUNT_WINDOW, MAX_HALF_OPEN_PROBES, MAX_OPEN_DURATION,
    MAX_TIME_WINDOW_SECS,
};

/// A count window's size (`None` for a time window), or why `window` is out of bounds.
pub(super) fn check_window(window: SlidingWindow) -> Result<Option<u32>, ConfigError> {
    match window {
        SlidingWindow::Count(0) => Err(ConfigError::new(
            "sliding_window",
            "a count window must hold at least 1 call",
        )),
        SlidingWindow::Count(n) if n > MAX_COUNT_WINDOW => Err(ConfigError::new(
            "sliding_window",
            format!("a count window holds at most {MAX_COUNT_WINDOW} calls, got {n}"),
        )),
        SlidingWindow::Count(n) => Ok(Some(n)),
        SlidingWindow::Time(d) if d.as_secs() == 0 => Err(ConfigError::new(
            "sliding_window",
            "a time window must span at least 1 whole second",
        )),
        SlidingWindow::Time(d) if d.subsec_nanos() != 0 || d.as_secs() > MAX_TIME_WINDOW_SECS => {
            Err(ConfigError::new(
                "sliding_window",
                format!(
                    "a time window is a whole number of seconds from 1 to \
                     {MAX_TIME_WINDOW_SECS}, got {d:?}"
                ),
            ))
        }
        SlidingWindow::Time(_) => Ok(None),
    }
}

/// `minimum_calls` against the window, `consecutive_failures` and the slow-call rule.
pub(super) fn check_calls(c: &ConfigInner, count_window: Option<u32>) -> Result<(), ConfigError> {
    if c.minimum_calls == 0 {
        return Err(ConfigError::new("minimum_calls", "must be at least 1"));
    }
    if let Some(size) = count_window {
        if c.minimum_calls > size {
            return Err(ConfigError::new(
                "minimum_calls",
                format!(
                    "{} is above the window of {size} calls: the rates could never be evaluated",
                    c.minimum_calls
                ),
            ));
        }
    }
    if c.consecutive_failures == Some(0) {
        return Err(ConfigError::new(
            "consecutive_failures",
            "must be at least 1",
        ));
    }
    if let Some(slow) = c.slow_call_duration {
        if slow.is_zero() {
            return Err(ConfigError::new(
                "slow_calls",
                "the slow-call threshold must be above zero",
            ));
        }
        check_rate("slow_calls", c.slow_call_rate_threshold)?;
    }
    Ok(())
}

/// The open period: its duration, growth, cap and jitter.
pub(super) fn check_open(c: &ConfigInner) -> Result<(), ConfigError> {
    if c.open_duration.is_zero() {
        return Err(ConfigError::new("open_duration", "must be above zero"));
    }
    if c.open_duration > MAX_OPEN_DURATION {
        return Err(ConfigError::new(
            "open_duration",
            format!("must be at most {MAX_OPEN_DURATION:?}"),
        ));
    }
    if !c.open_duration_multiplier.is_finite() || c.open_duration_multiplier < 1.0 {
        return Err(ConfigError::new(
            "open_duration_multiplier",
            format!(
                "must be a finite number >= 1.0, got {}",
                c.open_duration_multiplier
            ),
        ));
    }
    if c.max_open_duration < c.open_duration || c.max_open_duration > MAX_OPEN_DURATION {
        return Err(ConfigError::new(
            "max_open_duration",
            format!(
                "must be between open_duration ({:?}) and {MAX_OPEN_DURATION:?}, got {:?}",
                c.open_duration, c.max_open_duration
            ),
        ));
    }
    if !(0.0..=1.0).contains(&c.jitter) {
        return Err(ConfigError::new(
            "jitter",
            format!("must be a fraction between 0 and 1, got {}", c.jitter),
        ));
    }
    Ok(())
}

/// The half-open probes and how long they may take.
pub(super) fn check_half_open(c: &ConfigInner) -> Result<(), ConfigError> {
    if c.permitted_calls_in_half_open == 0 || c.permitted_calls_in_half_open > MAX_HALF_OPEN_PROBES
    {
        return Err(ConfigError::new(
            "permitted_calls_in_half_open",
            format!(
                "must be between 1 and {MAX_HALF_OPEN_PROBES}, got {}",
                c.permitted_calls_in_half_open
            ),
        ));
    }
    if let Some(wait) = c.max_wait_in_half_open {
        if wait.is_zero() || wait > MAX_OPEN_DURATION {
            return Err(ConfigError::new(
                "max_wait_in_half_open",
                format!("must be above zero and at most {MAX_OPEN_DURATION:?}"),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_rate(field: &'static str, rate: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("a rate is a fraction between 0 and 1, got {rate}"),
        ))
    }
}
