//! The cache tier keeps clients apart (issue 15, finding 9): an answer cached for one
//! [`CacheScope`] is never served to another, nor to the same client's other end user. Over real
//! loopback HTTP against the chaos mock.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use tower::ServiceExt;
use tower_llm_chaos::Fault;
use tower_llm_core::AllTargetsFailed;
use tower_llm_fallback::{CacheConfig, CacheScope, FallbackKind, FallbackLayer, TargetConfig};

fn body(user: &str) -> String {
    format!(
        r#"{{"model":"alias","messages":[{{"role":"user","content":"{PROMPT}"}}],"user":"{user}"}}"#
    )
}

async fn ask_as(
    svc: &Stack,
    url: &str,
    scope: Option<&str>,
    user: &str,
) -> Result<(http::response::Parts, tower_llm_fallback::FallbackReport), tower_llm_core::BoxError> {
    let mut req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body(user))))
        .unwrap();
    if let Some(scope) = scope {
        req.extensions_mut().insert(CacheScope::new(scope));
    }
    let res = svc.clone().oneshot(req).await?;
    let (parts, report, _) = read(res).await;
    Ok((parts, report))
}

#[tokio::test]
async fn a_cached_answer_stays_with_its_client_and_end_user() {
    let upstream = mock(Fault::Healthy).await;
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("p", "m").base_url(upstream.base_url()))
        .cache(CacheConfig::new())
        .build()
        .unwrap();
    let svc = stack(layer);
    let url = upstream.completions_url();
    for (scope, user) in [(Some("tenant-a"), "u-1"), (None, "u-1")] {
        let (parts, report) = ask_as(&svc, &url, scope, user).await.unwrap();
        assert_eq!(parts.status, 200);
        assert_eq!(report.fallback, FallbackKind::None);
    }

    // The provider goes down: only the exact client and end user get the cached answer.
    upstream.set_default_fault(Fault::status(500));
    let (parts, report) = ask_as(&svc, &url, Some("tenant-a"), "u-1").await.unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(report.fallback, FallbackKind::Cache);
    let (_, report) = ask_as(&svc, &url, None, "u-1").await.unwrap();
    assert_eq!(
        report.fallback,
        FallbackKind::Cache,
        "the unscoped space is shared"
    );

    for (scope, user) in [
        (Some("tenant-b"), "u-1"), // another client, the same body
        (Some("tenant-a"), "u-2"), // the same client, another end user
        (None, "u-2"),
    ] {
        let err = ask_as(&svc, &url, scope, user).await.unwrap_err();
        assert!(err.is::<AllTargetsFailed>(), "{scope:?} {user}: {err}");
    }
}
