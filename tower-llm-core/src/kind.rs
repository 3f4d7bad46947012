//! The error taxonomy shared by every tower-llm layer.
//!
//! ```
//! use tower_llm_core::ErrorKind;
//!
//! assert!(ErrorKind::Overloaded.is_retryable());
//! assert!(!ErrorKind::Auth.is_retryable());
//! assert!(ErrorKind::Auth.fails_over());
//! assert!(!ErrorKind::RateLimited.counts_against_breaker());
//! assert_eq!(ErrorKind::ContextLength.as_str(), "context_length");
//! ```
//!
//! [`KindSet`] is a set of kinds: what a retry layer retries, what a circuit breaker counts.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong with one call to an LLM provider.
///
/// The rows follow the taxonomy in `DESIGN.md`: each kind says whether the same target may be
/// retried, whether a fallback chain should move on, and whether a circuit breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 429 with a rate-limit signal: the provider asks the caller to slow down.
    RateLimited,
    /// 429 `insufficient_quota`, 402: the account is out of credit; retrying will not help.
    QuotaExhausted,
    /// 503, 529 `overloaded_error`, 498: the provider sheds load.
    Overloaded,
    /// 500, 502, 504: the provider failed.
    ServerError,
    /// An attempt timeout, a 408, or no bytes in time.
    Timeout,
    /// Connection refused or reset, DNS failure, a connection closed before the headers.
    Transport,
    /// 401, 403: the credentials are wrong or lack permission.
    Auth,
    /// 400 `context_length_exceeded` / "prompt is too long": the request does not fit the model.
    ContextLength,
    /// 400 `content_policy_violation`: the provider refuses the content.
    ContentPolicy,
    /// Any other 4xx: the request itself is wrong.
    BadRequest,
    /// A 2xx whose body cannot be used: unparsable JSON, broken SSE, a stream cut before its end.
    InvalidResponse,
    /// Anything else.
    Unknown,
}

impl ErrorKind {
    /// Every kind, in taxonomy order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::RateLimited,
        ErrorKind::QuotaExhausted,
        ErrorKind::Overloaded,
        ErrorKind::ServerError,
        ErrorKind::Timeout,
        ErrorKind::Transport,
        ErrorKind::Auth,
        ErrorKind::ContextLength,
        ErrorKind::ContentPolicy,
        ErrorKind::BadRequest,
        ErrorKind::InvalidResponse,
        ErrorKind::Unknown,
    ];

    /// A stable `snake_case` name, used as a `kind` label in metrics and in serialized snapshots.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Transport => "transport",
            ErrorKind::Auth => "auth",
            ErrorKind::ContextLength => "context_length",
            ErrorKind::ContentPolicy => "content_policy",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Unknown => "unknown",
        }
    }

    /// Whether the same target may be tried again (after a delay).
    ///
    /// `Timeout` is retryable, but a retry layer should retry it at most once: a silent target is
    /// better failed over. `Unknown` is retried by default policy too.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Transport
                | ErrorKind::InvalidResponse
                | ErrorKind::Unknown
        )
    }

    /// Whether a fallback chain should move on to another target.
    ///
    /// `ContextLength` returns `true`, but only a target with a larger context window should be
    /// tried; `ContentPolicy` and `BadRequest` return `false`: the provider's answer is returned.
    pub const fn fails_over(self) -> bool {
        !matches!(self, ErrorKind::ContentPolicy | ErrorKind::BadRequest)
    }

    /// Whether a circuit breaker counts this kind as a failure of the target.
    ///
    /// Rate limits, quota, auth and request errors say nothing about the target's health.
    pub const fn counts_against_breaker(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Transport
                | ErrorKind::InvalidResponse
                | ErrorKind::Unknown
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`ErrorKind`]s: the one decision hook of the layers that ask "which failures count?".
///
/// A retry layer retries the kinds of its set (`retry_on`, default [`KindSet::retryable`]); a
/// circuit breaker counts the upstream failures of its set (`failures`, default
/// [`KindSet::counts_against_breaker`]). A `Copy` bitset: building one is `const`, testing a kind
/// is one AND.
///
/// ```
/// use tower_llm_core::{ErrorKind, KindSet};
///
/// let retry_on = KindSet::retryable();
/// assert!(retry_on.contains(ErrorKind::RateLimited));
/// assert!(!retry_on.contains(ErrorKind::ContextLength));
///
/// // A breaker that also counts rate limits, for a provider whose 429s mean it is struggling.
/// const FAILURES: KindSet = KindSet::counts_against_breaker().with(ErrorKind::RateLimited);
/// assert!(FAILURES.contains(ErrorKind::RateLimited));
/// assert!(!FAILURES.contains(ErrorKind::Auth));
///
/// let strict = retry_on.without(ErrorKind::Unknown);
/// assert_eq!(format!("{:?}", KindSet::none().with(ErrorKind::Auth).with(ErrorKind::Timeout)), "{Timeout, Auth}");
/// assert_eq!(strict.len(), retry_on.len() - 1);
/// let from_list: KindSet = [ErrorKind::Overloaded, ErrorKind::ServerError].into_iter().collect();
/// assert_eq!(from_list.iter().collect::<Vec<_>>(), [ErrorKind::Overloaded, ErrorKind::ServerError]);
/// ```
///
/// It serializes as a list of kind names (`["overloaded", "server_error"]`), for configuration
/// files.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KindSet {
    bits: u16,
}

const fn bit(kind: ErrorKind) -> u16 {
    1 << (kind as u16)
}

/// The set of the kinds of [`ErrorKind::ALL`] for which `$pick` (a `const fn(ErrorKind) ->
/// bool` path) is true, computed in a `const` context.
macro_rules! kinds_where {
    ($pick:path) => {{
        let mut bits = 0;
        let mut i = 0;
        while i < ErrorKind::ALL.len() {
            if $pick(ErrorKind::ALL[i]) {
                bits |= bit(ErrorKind::ALL[i]);
            }
            i += 1;
        }
        KindSet { bits }
    }};
}

impl KindSet {
    /// No kind.
    pub const fn none() -> Self {
        KindSet { bits: 0 }
    }

    /// Every kind.
    pub const fn all() -> Self {
        KindSet {
            bits: (1 << ErrorKind::ALL.len()) - 1,
        }
    }

    /// The kinds that may be retried on the same target ([`ErrorKind::is_retryable`]): the
    /// default of a retry layer.
    pub const fn retryable() -> Self {
        kinds_where!(ErrorKind::is_retryable)
    }

    /// The kinds a circuit breaker counts as failures of the target
    /// ([`ErrorKind::counts_against_breaker`]): the default of a breaker.
    pub const fn counts_against_breaker() -> Self {
        kinds_where!(ErrorKind::counts_against_breaker)
    }

    /// The kinds after which a fallback chain moves on ([`ErrorKind::fails_over`]).
    pub const fn fails_over() -> Self {
        kinds_where!(ErrorKind::fails_over)
    }

    /// This set and `kind`.
    #[must_use]
    pub const fn with(self, kind: ErrorKind) -> Self {
        KindSet {
            bits: self.bits | bit(kind),
        }
    }

    /// This set without `kind`.
    #[must_use]
    pub const fn without(self, kind: ErrorKind) -> Self {
        KindSet {
            bits: self.bits & !bit(kind),
        }
    }

    /// The kinds of this set and of `other`.
    #[must_use]
    pub const fn union(self, other: KindSet) -> Self {
        KindSet {
            bits: self.bits | other.bits,
        }
    }

    /// Whether `kind` is in the set.
    pub const fn contains(&self, kind: ErrorKind) -> bool {
        self.bits & bit(kind) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// How many kinds the set holds.
    pub const fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// The kinds of the set, in taxonomy order.
    pub fn iter(&self) -> impl Iterator<Item = ErrorKind> + '_ {
        ErrorKind::ALL.into_iter().filter(|k| self.contains(*k))
    }
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<ErrorKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = ErrorKind>>(iter: I) -> Self {
        iter.into_iter().fold(KindSet::none(), KindSet::with)
    }
}

impl Extend<ErrorKind> for KindSet {
    fn extend<I: IntoIterator<Item = ErrorKind>>(&mut self, iter: I) {
        for kind in iter {
            *self = self.with(kind);
        }
    }
}

impl From<ErrorKind> for KindSet {
    fn from(kind: ErrorKind) -> Self {
        KindSet::none().with(kind)
    }
}

impl Serialize for KindSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for KindSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<ErrorKind>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taxonomy_rows_match_design() {
        use ErrorKind::*;
        // (kind, retry same target, fail over, counts against breaker)
        let rows = [
            (RateLimited, true, true, false),
            (QuotaExhausted, false, true, false),
            (Overloaded, true, true, true),
            (ServerError, true, true, true),
            (Timeout, true, true, true),
            (Transport, true, true, true),
            (Auth, false, true, false),
            (ContextLength, false, true, false),
            (ContentPolicy, false, false, false),
            (BadRequest, false, false, false),
            (InvalidResponse, true, true, true),
            (Unknown, true, true, true),
        ];
        assert_eq!(rows.len(), ErrorKind::ALL.len());
        for (kind, retry, over, breaker) in rows {
            assert_eq!(kind.is_retryable(), retry, "{kind} retry");
            assert_eq!(kind.fails_over(), over, "{kind} fail over");
            assert_eq!(kind.counts_against_breaker(), breaker, "{kind} breaker");
        }
    }

    #[test]
    fn kind_sets_follow_the_taxonomy() {
        for kind in ErrorKind::ALL {
            assert_eq!(
                KindSet::retryable().contains(kind),
                kind.is_retryable(),
                "{kind}"
            );
            assert_eq!(
                KindSet::counts_against_breaker().contains(kind),
                kind.counts_against_breaker(),
                "{kind}"
            );
            assert_eq!(
                KindSet::fails_over().contains(kind),
                kind.fails_over(),
                "{kind}"
            );
            assert!(KindSet::all().contains(kind));
            assert!(!KindSet::none().contains(kind));
            assert_eq!(KindSet::from(kind).iter().collect::<Vec<_>>(), [kind]);
            assert!(!KindSet::all().without(kind).contains(kind));
        }
        assert_eq!(KindSet::all().len(), ErrorKind::ALL.len());
        assert!(KindSet::none().is_empty());
        assert_eq!(
            KindSet::from(ErrorKind::Auth).union(KindSet::from(ErrorKind::Timeout)),
            KindSet::none()
                .with(ErrorKind::Timeout)
                .with(ErrorKind::Auth)
        );
        let mut set = KindSet::none();
        set.extend([ErrorKind::Unknown, ErrorKind::Auth]);
        assert_eq!(format!("{set:?}"), "{Auth, Unknown}");
    }

    #[test]
    fn kind_sets_serialize_as_lists_of_names() {
        let set = KindSet::none()
            .with(ErrorKind::ServerError)
            .with(ErrorKind::Overloaded);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["overloaded","server_error"]"#);
        assert_eq!(serde_json::from_str::<KindSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<KindSet>(r#"["nope"]"#).is_err());
    }

    #[test]
    fn names_round_trip_through_serde() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: ErrorKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
    }
}
