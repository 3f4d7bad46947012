//! Issue 15, finding 1 (the gateway's part): a model name with control characters is a 400
//! before any state exists (the library's check, mapped to 400 by `errors`), and the status
//! line never prints a name raw (a target's upstream model from the configuration may hold
//! any character a header value may, e.g. a bidirectional override), nor an unbounded one.
//! `status::printable`'s own tests cover control characters.

mod gateway_support;

use std::time::Duration;

use http::StatusCode;
use tower_llm_gateway::status::{
    status_line, MAX_LISTED_TARGETS, MAX_PRINTED_NAME, MAX_STATUS_LINE,
};
use tower_llm_gateway::Totals;

use gateway_support::*;

fn line(gw: &tower_llm_gateway::Gateway) -> String {
    status_line(
        Duration::from_secs(3),
        Duration::from_secs(1),
        gw.totals(),
        Totals::default(),
        &gw.stack().health(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_ansi_model_name_is_a_400_and_nothing_raw_reaches_the_status_line() {
    let gw = start(&config("healthy", "healthy", "[retry]\nenabled = false\n")).await;
    let reply = chat(&gw, "\u{1b}[31mevil").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.openai_error()["type"], "invalid_request_error");
    assert!(!reply.text().contains('\u{1b}'), "{}", reply.text());
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);
    let status = line(&gw);
    assert!(!status.contains('\u{1b}'), "{status:?}");
    assert!(
        !status.contains("evil"),
        "no target was created: {status:?}"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn target_names_from_the_configuration_are_escaped_and_bounded() {
    let long = "m".repeat(300);
    let toml = format!(
        r#"
[gateway]
listen = "127.0.0.1:0"

[[providers]]
name = "primary"
mock = "healthy"

[[routes]]
match = "red"
targets = [{{ provider = "primary", model = "red-\u202egpt" }}]

[[routes]]
match = "long"
targets = [{{ provider = "primary", model = "{long}" }}]
"#
    );
    let gw = start(&toml).await;
    assert_eq!(chat(&gw, "red").await.status, StatusCode::OK);
    assert_eq!(chat(&gw, "long").await.status, StatusCode::OK);
    let status = line(&gw);
    // U+202E (right-to-left override) would make the terminal print the rest backwards.
    assert!(!status.contains('\u{202e}'), "{status:?}");
    assert!(status.contains("primary/red-\\u{202e}gpt"), "{status:?}");
    let printed = format!(
        "primary/{}…",
        "m".repeat(MAX_PRINTED_NAME - "primary/".len())
    );
    assert!(status.contains(&printed), "{status:?}");
    assert!(
        !status.contains(&"m".repeat(MAX_PRINTED_NAME)),
        "bounded: {status:?}"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn three_hundred_pass_through_models_make_a_bounded_status_line() {
    let gw = start(&config("healthy", "healthy", "[retry]\nenabled = false\n")).await;
    for i in 0..300 {
        let reply = chat(&gw, &format!("model-with-a-rather-long-name-{i:03}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let targets = gw.stack().health().targets.len();
    assert!(targets > MAX_LISTED_TARGETS, "{targets} targets");
    let status = line(&gw);
    assert!(
        status.len() <= MAX_STATUS_LINE,
        "{} bytes: {status}",
        status.len()
    );
    assert!(
        status.matches(" | ").count() <= 3 + MAX_LISTED_TARGETS,
        "{status}"
    );
    let more: usize = status
        .rsplit(" | +")
        .next()
        .and_then(|m| m.strip_suffix(" more"))
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no +K more: {status}"));
    assert!(
        more >= targets - MAX_LISTED_TARGETS,
        "{more} of {targets}: {status}"
    );
    gw.shutdown().await.unwrap();
}
