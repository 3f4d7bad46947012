//! A whole fault script for one mock upstream: schedule windows, model routes and a default.
//!
//! For each request the mock picks the fault of
//! 1. the first schedule window that contains the time since the upstream started (a window
//!    models the whole upstream being in trouble, so it applies to every model), else
//! 2. the route for the requested model (exact match), else
//! 3. the default.
//!
//! A rule whose fault is a [`Fault::Fraction`] that does not hit the request (decided by the
//! request's sequence number) is passed over: the request falls through to the next window, the
//! route, the default; a default fraction that does not hit is healthy. See
//! [`FaultProfile::pick_request`].
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_chaos::{Fault, FaultProfile};
//!
//! let profile: FaultProfile = "0s-20s=status:503; model gpt-bad=status:500; default=healthy".parse()?;
//! assert_eq!(profile.pick("gpt-4o", Duration::from_secs(5)), &Fault::status(503));
//! assert_eq!(profile.pick("gpt-bad", Duration::from_secs(25)), &Fault::status(500));
//! assert_eq!(profile.pick("gpt-4o", Duration::from_secs(25)), &Fault::Healthy);
//!
//! // The same profile, built in code, prints as the text it was parsed from.
//! let built = FaultProfile::new(Fault::Healthy)
//!     .window(Duration::ZERO, Some(Duration::from_secs(20)), Fault::status(503))
//!     .route("gpt-bad", Fault::status(500));
//! assert_eq!(built, profile);
//! assert_eq!(built.to_string(), "0s-20s=status:503; model gpt-bad=status:500; default=healthy");
//! # Ok::<(), tower_llm_chaos::ParseError>(())
//! ```

use std::time::Duration;

use crate::Fault;

/// One schedule window: `fault` applies from `from` (inclusive) until `until` (exclusive, or for
/// ever when `None`), measured since the upstream started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    /// Start of the window, since the upstream started.
    pub from: Duration,
    /// End of the window (exclusive); `None` for no end.
    pub until: Option<Duration>,
    /// The fault applied inside the window.
    pub fault: Fault,
}

impl ScheduledFault {
    /// Whether `elapsed` (since the upstream started) falls in this window.
    pub fn contains(&self, elapsed: Duration) -> bool {
        elapsed >= self.from && self.until.is_none_or(|until| elapsed < until)
    }
}

/// Schedule windows, model routes and a default fault (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultProfile {
    pub(crate) schedule: Vec<ScheduledFault>,
    pub(crate) routes: Vec<(String, Fault)>,
    pub(crate) default: Fault,
}

impl FaultProfile {
    /// A profile that applies `default` to every request.
    pub fn new(default: Fault) -> Self {
        FaultProfile {
            schedule: Vec::new(),
            routes: Vec::new(),
            default,
        }
    }

    /// Parse the text form (see [`grammar`](crate::grammar)); same as `str::parse`.
    pub fn parse(text: &str) -> Result<FaultProfile, crate::ParseError> {
        crate::grammar::parse_profile(text)
    }

    /// Add a schedule window `[from, until)` (`until: None` for no end). Earlier windows win
    /// where windows overlap.
    pub fn window(mut self, from: Duration, until: Option<Duration>, fault: Fault) -> Self {
        self.schedule.push(ScheduledFault { from, until, fault });
        self
    }

    /// Route requests for `model` (exact match) to `fault`, replacing an earlier route for it.
    pub fn route(mut self, model: impl Into<String>, fault: Fault) -> Self {
        let model = model.into();
        match self.routes.iter_mut().find(|(m, _)| *m == model) {
            Some(route) => route.1 = fault,
            None => self.routes.push((model, fault)),
        }
        self
    }

    /// Replace the default fault.
    pub fn with_default(mut self, fault: Fault) -> Self {
        self.default = fault;
        self
    }

    /// The schedule windows, in order.
    pub fn schedule(&self) -> &[ScheduledFault] {
        &self.schedule
    }

    /// The model routes, in order.
    pub fn routes(&self) -> &[(String, Fault)] {
        &self.routes
    }

    /// The default fault.
    pub fn default_fault(&self) -> &Fault {
        &self.default
    }

    /// The fault for a request for `model` arriving `elapsed` after the upstream started (before
    /// a [`Fault::Flapping`] is resolved). A [`Fault::Fraction`] is returned as it is, whether
    /// or not it hits: the mock uses [`pick_request`](FaultProfile::pick_request).
    pub fn pick(&self, model: &str, elapsed: Duration) -> &Fault {
        if let Some(window) = self.schedule.iter().find(|w| w.contains(elapsed)) {
            return &window.fault;
        }
        if let Some((_, fault)) = self.routes.iter().find(|(m, _)| m == model) {
            return fault;
        }
        &self.default
    }

    /// The fault for request number `seq` (the mock's 1-based [`Attempt::seq`]) for `model`
    /// arriving `elapsed` after the upstream started: as [`pick`](FaultProfile::pick), but a
    /// window or route whose [`Fault::Fraction`] does not hit this request is passed over (the
    /// fault is not resolved further: see [`Fault::resolve`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_llm_chaos::fault::fraction_hit;
    /// use tower_llm_chaos::{Fault, FaultProfile};
    ///
    /// let profile = FaultProfile::parse("4s-10s=fraction:0.3:status:500; default=latency:50ms")?;
    /// let at = Duration::from_secs(5);
    /// let hit = (1..).find(|&seq| fraction_hit(300, 0, seq)).unwrap();
    /// let missed = (1..).find(|&seq| !fraction_hit(300, 0, seq)).unwrap();
    /// let picked = profile.pick_request("gpt-4o", at, hit);
    /// assert_eq!(picked.resolve(Duration::ZERO, hit), &Fault::status(500));
    /// assert_eq!(profile.pick_request("gpt-4o", at, missed), &Fault::Latency(Duration::from_millis(50)));
    /// # Ok::<(), tower_llm_chaos::ParseError>(())
    /// ```
    ///
    /// [`Attempt::seq`]: crate::Attempt::seq
    pub fn pick_request(&self, model: &str, elapsed: Duration, seq: u64) -> &Fault {
        let window = self
            .schedule
            .iter()
            .find(|w| w.contains(elapsed) && !w.fault.misses(seq));
        if let Some(window) = window {
            return &window.fault;
        }
        match self.routes.iter().find(|(m, _)| m == model) {
            Some((_, fault)) if !fault.misses(seq) => fault,
            _ => &self.default,
        }
    }

    /// Check every fault of the profile (see [`Fault::validate`]).
    pub fn validate(&self) -> Result<(), crate::InvalidFault> {
        self.schedule.iter().try_for_each(|w| w.fault.validate())?;
        self.routes.iter().try_for_each(|(_, f)| f.validate())?;
        self.default.validate()
    }
}
