//! Server-sent events framing for streamed completions.
//!
//! (Being completed: see issue 2.)
