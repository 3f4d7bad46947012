//! The `mock-upstream` binary: binds, prints its address, serves the profile, logs attempts.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn the_binary_serves_a_profile_from_the_command_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--profile",
            "model gpt-bad=status:500:retry-after=3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run mock-upstream");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();

    let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("the binary prints its address")
        .unwrap()
        .unwrap();
    let addr: SocketAddr = first
        .strip_prefix("mock-upstream listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .parse()
        .unwrap();
    let second = stdout.next_line().await.unwrap().unwrap();
    assert_eq!(
        second,
        format!("base URL http://{addr}/v1 (profile: model gpt-bad=status:500:retry-after=3; default=healthy)")
    );

    let res = ask(addr, "gpt-bad", false).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["retry-after"], "3");
    let res = ask(addr, "gpt-4o", true).await.unwrap();
    assert_eq!(res.status(), 200);
    let (body, _) = read_body(res).await;
    assert_eq!(
        sse_text(&sse_data(&body)),
        tower_llm_chaos::CANONICAL_ANSWER
    );

    let line = stderr.next_line().await.unwrap().unwrap();
    assert!(
        line.ends_with("#1 model=gpt-bad stream=false fault=status status=500"),
        "{line}"
    );
    let line = stderr.next_line().await.unwrap().unwrap();
    assert!(
        line.ends_with("#2 model=gpt-4o stream=true fault=healthy status=200"),
        "{line}"
    );
    assert!(!line.contains("resilient"), "no prompt text in the log");

    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_profile_is_reported_with_the_offending_part() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "127.0.0.1:0", "--profile", "model x=status:42"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--profile: invalid fault profile, clause 1 (`model x=status:42`): `42`: status must be in 200..=999"), "{stderr}");
}

#[tokio::test]
async fn the_binary_continues_a_prefill_of_the_alternate_answer() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--prefill",
            "continue",
            "--answer=alternate",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run mock-upstream");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("the binary prints its address")
        .unwrap()
        .unwrap();
    let addr: SocketAddr = first
        .strip_prefix("mock-upstream listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .parse()
        .unwrap();
    let second = stdout.next_line().await.unwrap().unwrap();
    assert_eq!(
        second,
        format!(
            "base URL http://{addr}/v1 (profile: default=healthy), prefill: continue, answer: alternate"
        )
    );

    let sent = "Resilience is the hab";
    let body = serde_json::json!({"model": "m", "stream": true, "messages": [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": sent},
    ]});
    let req = http::Request::post(tower_llm_chaos::upstream::COMPLETIONS_PATH)
        .header("host", addr.to_string())
        .body(http_body_util::Full::from(body.to_string()))
        .unwrap();
    let res = connect(addr).await.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let (body, _) = read_body(res).await;
    assert_eq!(
        sse_text(&sse_data(&body)),
        tower_llm_chaos::ALTERNATE_ANSWER[sent.len()..]
    );

    child.kill().await.unwrap();
}
