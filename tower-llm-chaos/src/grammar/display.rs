//! `Display` for faults and profiles: the text form, which parses back to the same value.

use std::fmt;
use std::time::UNIX_EPOCH;

use super::values::{DisplayDuration, DisplayRate, Encoded};
use crate::fault::{ErrorReply, ErrorShape, Fault, RetryAfter};
use crate::profile::{FaultProfile, ScheduledFault};

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status:{}", self.status())?;
        match self.retry_after_signal() {
            None => {}
            Some(RetryAfter::Seconds(s)) => write!(f, ":retry-after={s}")?,
            Some(RetryAfter::Millis(ms)) => write!(f, ":retry-after-ms={ms}")?,
            Some(RetryAfter::Date(at)) => match at.duration_since(UNIX_EPOCH) {
                Ok(since) => write!(f, ":retry-after-date=@{}", since.as_secs())?,
                Err(before) => write!(f, ":retry-after-date=@-{}", before.duration().as_secs())?,
            },
            Some(RetryAfter::DateIn(delay)) => {
                write!(f, ":retry-after-date=+{}", DisplayDuration(delay))?
            }
        }
        if self.error_shape() != ErrorShape::OpenAi {
            write!(f, ":shape={}", self.error_shape())?;
        }
        if let Some(code) = self.error_code() {
            write!(f, ":code={}", Encoded(code.as_bytes()))?;
        }
        if let Some(message) = self.error_message() {
            write!(f, ":message={}", Encoded(message.as_bytes()))?;
        }
        for (name, value) in self.headers() {
            write!(
                f,
                ":header={}={}",
                Encoded(name.as_str().as_bytes()),
                Encoded(value.as_bytes())
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Healthy => f.write_str("healthy"),
            Fault::Status(reply) => reply.fmt(f),
            Fault::Hang => f.write_str("hang"),
            Fault::ResetBeforeHeaders => f.write_str("reset"),
            Fault::Latency(d) => write!(f, "latency:{}", DisplayDuration(*d)),
            Fault::SlowFirstToken(d) => write!(f, "slow-first-token:{}", DisplayDuration(*d)),
            Fault::CutAfter(n) => write!(f, "cut-after:{n}"),
            Fault::Stall { after } => write!(f, "stall-after:{after}"),
            Fault::MalformedEvent { at } => write!(f, "malformed-event:{at}"),
            Fault::NoDone => f.write_str("no-done"),
            Fault::FirstEventError => f.write_str("first-event-error"),
            Fault::ContextLengthExceeded => f.write_str("context-length-exceeded"),
            Fault::ContentPolicyViolation => f.write_str("content-policy-violation"),
            Fault::Flapping {
                down_for,
                while_down,
            } => write!(f, "flapping:{}:{while_down}", DisplayDuration(*down_for)),
            Fault::Fraction {
                per_mille,
                seed,
                fault,
            } => {
                write!(f, "fraction:{}:", DisplayRate(*per_mille))?;
                if *seed != 0 {
                    write!(f, "seed={seed}:")?;
                }
                write!(f, "{fault}")
            }
        }
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", DisplayDuration(self.from))?;
        if let Some(until) = self.until {
            write!(f, "{}", DisplayDuration(until))?;
        }
        write!(f, "={}", self.fault)
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for window in self.schedule() {
            write!(f, "{window}; ")?;
        }
        for (model, fault) in self.routes() {
            write!(f, "model {}={fault}; ", Encoded(model.as_bytes()))?;
        }
        write!(f, "default={}", self.default_fault())
    }
}
