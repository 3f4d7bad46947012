//! Errors the [`Stack`](crate::stack::Stack) itself returns, before any target is called.

use std::fmt;

/// No route's glob matches the requested model (a gateway answers 404).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoute {
    model: String,
}

impl NoRoute {
    /// No route for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        NoRoute {
            model: model.into(),
        }
    }

    /// The model that was asked for.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl fmt::Display for NoRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the model `{}` does not exist", self.model)
    }
}

impl std::error::Error for NoRoute {}

/// The request cannot be routed: its body is not a JSON object with a string `model`, or it is
/// larger than the stack buffers (a gateway answers 400, or 413 for the size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    reason: InvalidReason,
}

/// Why a request was refused by [`InvalidRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The body is larger than the stack's buffer limit (in bytes).
    TooLarge(usize),
    /// The body is not a JSON object.
    NotJson,
    /// The JSON object has no string `model`.
    NoModel,
}

impl InvalidRequest {
    pub(crate) fn new(reason: InvalidReason) -> Self {
        InvalidRequest { reason }
    }

    /// Why the request was refused.
    pub fn reason(&self) -> &InvalidReason {
        &self.reason
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            InvalidReason::TooLarge(limit) => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            InvalidReason::NotJson => f.write_str("the request body is not a JSON object"),
            InvalidReason::NoModel => {
                f.write_str("the request body has no `model`: say which model to use")
            }
        }
    }
}

impl std::error::Error for InvalidRequest {}

/// A route cannot take more distinct pass-through models (the bound keeps memory bounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooManyModels {
    route: String,
    limit: usize,
}

impl TooManyModels {
    pub(crate) fn new(route: impl Into<String>, limit: usize) -> Self {
        TooManyModels {
            route: route.into(),
            limit,
        }
    }

    /// The route's glob.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// How many models a route tracks at most.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for TooManyModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "route `{}` already serves {} distinct models; add a route for this one",
            self.route, self.limit
        )
    }
}

impl std::error::Error for TooManyModels {}
