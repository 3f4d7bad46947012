//! Server-requested delays: every signal a provider uses to say "come back later".
//!
//! (Being completed: see issue 2.)

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The delay the server asked for in `headers`, relative to `now`, if any.
pub fn server_delay(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let _ = now;
    let v = headers.get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}
