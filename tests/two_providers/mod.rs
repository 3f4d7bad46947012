//! Shared by `tests/recovery.rs` and `tests/scenarios.rs`: the library's `Stack` over two chaos
//! mock upstreams, `primary` then `secondary` on one route, 2 s per target.

#![allow(dead_code)] // each test file uses a part of it

use bytes::Bytes;
use http_body_util::Full;
use tower_llm::{Stack, StackBuilder, StackConfig};
use tower_llm_chaos::{FaultProfile, MockUpstream};

/// The stack the tests drive.
pub type TestStack = Stack<Full<Bytes>, tower_llm::client::UpstreamBody>;

/// Two providers (their URLs are the mocks', given to the builder) and one route `*` over them,
/// `attempt_timeout_ms = 2000` each (the requested model passes through), then `extra` sections.
pub fn config_text(extra: &str) -> String {
    format!(
        r#"
[[providers]]
name = "primary"
base_url = "http://127.0.0.1:9/v1"

[[providers]]
name = "secondary"
base_url = "http://127.0.0.1:9/v1"

[[routes]]
match = "*"
targets = [
  {{ provider = "primary", attempt_timeout_ms = 2000 }},
  {{ provider = "secondary", attempt_timeout_ms = 2000 }},
]
{extra}"#
    )
}

/// `config` built over the two mocks.
pub fn stack(config: &StackConfig, primary: &MockUpstream, secondary: &MockUpstream) -> TestStack {
    StackBuilder::new(config)
        .provider_url("primary", primary.base_url())
        .provider_url("secondary", secondary.base_url())
        .build_http::<Full<Bytes>>()
        .expect("stack")
}

/// A mock upstream with this fault profile, keeping every attempt in its log.
pub async fn mock(profile: &str) -> MockUpstream {
    MockUpstream::builder()
        .profile(FaultProfile::parse(profile).expect("profile"))
        .max_logged_attempts(200_000)
        .start()
        .await
        .expect("mock upstream")
}
