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
    /// The `model` is not a model name (see [`check_model_name`]); nothing was created for it.
    ModelName(ModelNameError),
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
            InvalidReason::ModelName(e) => write!(f, "invalid `model`: {e}"),
        }
    }
}

impl std::error::Error for InvalidRequest {}

/// The longest model name a [`Stack`](crate::stack::Stack) accepts, in bytes.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Why a requested model name was refused (a client error: a gateway answers 400).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelNameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_MODEL_NAME_BYTES`] (its length in bytes).
    TooLong(usize),
    /// The name holds a character that is not printable at this byte offset: a control
    /// character (`\n`, `ESC`, `DEL`, C1 controls) or a bidirectional override.
    NotPrintable(usize),
}

impl fmt::Display for ModelNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelNameError::Empty => f.write_str("the model name is empty"),
            ModelNameError::TooLong(len) => write!(
                f,
                "the model name is {len} bytes long, more than {MAX_MODEL_NAME_BYTES}"
            ),
            ModelNameError::NotPrintable(at) => write!(
                f,
                "the model name holds a character that is not printable at byte {at}"
            ),
        }
    }
}

impl std::error::Error for ModelNameError {}

/// Check a requested model name the way the [`Stack`](crate::stack::Stack) does before it
/// creates anything for it: not empty, at most [`MAX_MODEL_NAME_BYTES`] bytes, and printable.
/// Any printable Unicode is allowed (`模型` is a real model name); control characters (C0, `DEL`,
/// C1) and the bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069, which
/// reorder what a terminal or log viewer shows) are not.
///
/// ```
/// use tower_llm::error::{check_model_name, ModelNameError};
///
/// assert!(check_model_name("gpt-4o").is_ok());
/// assert!(check_model_name("模型-v2").is_ok());
/// assert_eq!(check_model_name("gpt\u{1b}[31m"), Err(ModelNameError::NotPrintable(3)));
/// assert_eq!(check_model_name(&"m".repeat(257)), Err(ModelNameError::TooLong(257)));
/// assert_eq!(check_model_name(""), Err(ModelNameError::Empty));
/// ```
pub fn check_model_name(model: &str) -> Result<(), ModelNameError> {
    if model.is_empty() {
        return Err(ModelNameError::Empty);
    }
    if model.len() > MAX_MODEL_NAME_BYTES {
        return Err(ModelNameError::TooLong(model.len()));
    }
    match model.char_indices().find(|(_, c)| {
        c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }) {
        Some((at, _)) => Err(ModelNameError::NotPrintable(at)),
        None => Ok(()),
    }
}

/// A route with pass-through targets cannot take another model: it serves
/// [`MAX_MODELS_PER_ROUTE`](crate::stack::MAX_MODELS_PER_ROUTE) models and every one of them has
/// a request in flight, so none can be evicted (a gateway answers 400; retry later).
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
            "route `{}` serves {} distinct models, all with requests in flight; \
             retry when one is idle, or add a route for this model",
            self.route, self.limit
        )
    }
}

impl std::error::Error for TooManyModels {}
