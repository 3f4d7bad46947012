//! Provider error bodies (OpenAI, Anthropic, Gemini, Groq, OpenRouter) → [`ProviderError`].
//!
//! (Being completed: see issue 2.)

use http::StatusCode;

use crate::ProviderError;

/// Parse a provider's JSON error body. `None` when the body is not a recognisable error.
pub fn parse_error_body(status: StatusCode, body: &[u8]) -> Option<ProviderError> {
    let _ = (status, body);
    None
}
