//! A whole fault script for one mock upstream: schedule windows, model routes and a default.
//!
//! For each request the mock picks the fault of
//! 1. the first schedule window that contains the time since the upstream started (a window
//!    models the whole upstream being in trouble, so it applies to every model), else
//! 2. the route for the requested model (exact match), else
//! 3. the default.
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
    /// a [`Fault::Flapping`] is resolved).
    pub fn pick(&self, model: &str, elapsed: Duration) -> &Fault {
        if let Some(window) = self.schedule.iter().find(|w| w.contains(elapsed)) {
            return &window.fault;
        }
        if let Some((_, fault)) = self.routes.iter().find(|(m, _)| m == model) {
            return fault;
        }
        &self.default
    }

    /// Check every fault of the profile (see [`Fault::validate`]).
    pub fn validate(&self) -> Result<(), crate::InvalidFault> {
        self.schedule.iter().try_for_each(|w| w.fault.validate())?;
        self.routes.iter().try_for_each(|(_, f)| f.validate())?;
        self.default.validate()
    }
}
