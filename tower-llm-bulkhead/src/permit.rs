//! [`Permit`]: one admitted call's slot in its partition, released when dropped.

use std::fmt;
use std::sync::Arc;

use crate::adaptive::{Aimd, Signal};
use crate::partition::Partition;
use crate::usage::UsageScanner;

/// One admitted call's concurrency slot (and token charge) in its partition.
///
/// Dropping the permit releases the slot, handing it to the oldest waiting call if any. A
/// [`HoldPermit`](crate::HoldPermit) policy decides how long the response keeps it: for HTTP,
/// until the response body ends or is dropped ([`PermitBody`](crate::PermitBody)).
pub struct Permit {
    partition: Arc<Partition>,
    /// Only with a token limit (boxed, so that a permit — and the response body holding it —
    /// stays two words: moves of responses up to 128 bytes are inlined).
    charge: Option<Box<Charge>>,
}

/// The token side of a permit.
struct Charge {
    tokens: u64,
    /// Charged to the shared limiter (else to the local budget).
    shared: bool,
    usage: Option<UsageScanner>,
}

impl Permit {
    pub(crate) fn new(partition: Arc<Partition>, tokens: u64) -> Self {
        Self::charged(partition, tokens, false)
    }

    /// A permit whose `tokens` were charged to the shared limiter (`shared`) or locally.
    pub(crate) fn charged(partition: Arc<Partition>, tokens: u64, shared: bool) -> Self {
        let charge = partition.has_tokens().then(|| {
            Box::new(Charge {
                tokens,
                shared,
                usage: None,
            })
        });
        Permit { partition, charge }
    }

    /// The name of the partition the call was admitted to.
    pub fn partition(&self) -> &str {
        &self.partition.name
    }

    /// Tokens currently charged for this call (the estimate, until usage is reported; zero
    /// without a token limit).
    pub fn tokens_charged(&self) -> u64 {
        self.charge.as_ref().map_or(0, |c| c.tokens)
    }

    /// Whether the partition has a token limit, so reporting usage matters.
    pub fn tracks_tokens(&self) -> bool {
        self.charge.is_some()
    }

    /// Report the tokens the call really used (from the response's `usage`): the difference to
    /// what was charged is refunded or debited at once. Reporting again corrects again. Does
    /// nothing without a token limit.
    pub fn report_usage(&mut self, actual: u64) {
        if let Some(charge) = &mut self.charge {
            self.partition
                .correct_tokens(charge.tokens, actual, charge.shared);
            charge.tokens = actual;
        }
    }

    /// Watch the response body for usage with `scanner` (token-limited permits only).
    pub(crate) fn watch_usage(&mut self, scanner: UsageScanner) {
        if let Some(charge) = &mut self.charge {
            charge.usage = Some(scanner);
        }
    }

    /// The usage scanner watching the response body, if any.
    pub(crate) fn usage_mut(&mut self) -> Option<&mut UsageScanner> {
        self.charge.as_mut().and_then(|c| c.usage.as_mut())
    }

    pub(crate) fn adapt(&self, signal: impl FnOnce(&Aimd) -> Signal) {
        self.partition.adapt(signal);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.partition.release();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("partition", &self.partition.name)
            .field("tokens", &self.tokens_charged())
            .finish()
    }
}
