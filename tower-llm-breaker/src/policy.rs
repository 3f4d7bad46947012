//! What counts: turning a [`Classification`] into an [`Outcome`].
//!
//! The breaker's layer classifies each response or error with a [`Classify`](tower_llm_core::Classify)
//! implementation (default [`HttpClassifier`](tower_llm_core::HttpClassifier)), then asks an
//! [`OutcomePolicy`] what the classification means to the breaker. [`DefaultPolicy`] follows the
//! taxonomy: upstream 5xx, 529/503, timeouts, transport errors and invalid responses are failures;
//! 4xx (400, 401, 404, 429, quota) and local rejections (another breaker, a bulkhead) are ignored.
//! Any `Fn(&Classification) -> Outcome` is a policy too.
//!
//! ```
//! use tower_llm_breaker::{DefaultPolicy, Outcome, OutcomePolicy};
//! use tower_llm_core::{Classification, ErrorKind, Failure};
//!
//! let overloaded = Classification::Failure(Failure::new(ErrorKind::Overloaded));
//! let limited = Classification::Failure(Failure::new(ErrorKind::RateLimited));
//! assert_eq!(DefaultPolicy.outcome(&overloaded), Outcome::Failure(ErrorKind::Overloaded));
//! assert_eq!(DefaultPolicy.outcome(&limited), Outcome::Ignored);
//!
//! // Count 429s too, for a provider whose rate limits mean it is struggling.
//! let strict = |c: &Classification| match c {
//!     Classification::Failure(f) if f.kind == ErrorKind::RateLimited => Outcome::Failure(f.kind),
//!     other => DefaultPolicy.outcome(other),
//! };
//! assert_eq!(strict.outcome(&limited), Outcome::Failure(ErrorKind::RateLimited));
//! ```

use tower_llm_core::Classification;

use crate::state::Outcome;

/// Maps a [`Classification`] to what the breaker records.
pub trait OutcomePolicy: Clone + Send + Sync + 'static {
    /// The outcome to record for a call classified as `classification`.
    fn outcome(&self, classification: &Classification) -> Outcome;
}

/// The taxonomy's rule: a failure counts when [`Failure::counts_against_breaker`]
/// (an upstream failure of a counting kind), everything else that failed is ignored.
///
/// [`Failure::counts_against_breaker`]: tower_llm_core::Failure::counts_against_breaker
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPolicy;

impl OutcomePolicy for DefaultPolicy {
    fn outcome(&self, classification: &Classification) -> Outcome {
        match classification {
            Classification::Success => Outcome::Success,
            Classification::Failure(f) if f.counts_against_breaker() => Outcome::Failure(f.kind),
            Classification::Failure(_) => Outcome::Ignored,
        }
    }
}

impl<F> OutcomePolicy for F
where
    F: Fn(&Classification) -> Outcome + Clone + Send + Sync + 'static,
{
    fn outcome(&self, classification: &Classification) -> Outcome {
        self(classification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_llm_core::{ErrorKind, Failure};

    #[test]
    fn default_policy_follows_the_taxonomy() {
        for kind in ErrorKind::ALL {
            let upstream = DefaultPolicy.outcome(&Classification::Failure(Failure::new(kind)));
            let expected = if kind.counts_against_breaker() {
                Outcome::Failure(kind)
            } else {
                Outcome::Ignored
            };
            assert_eq!(upstream, expected, "{kind}");
            // A local rejection never counts.
            let local = DefaultPolicy.outcome(&Classification::Failure(Failure::local(kind)));
            assert_eq!(local, Outcome::Ignored, "local {kind}");
        }
        assert_eq!(
            DefaultPolicy.outcome(&Classification::Success),
            Outcome::Success
        );
    }
}
