//! `[health] file` (issue 15, finding 6): one atomic writer, a corrupt file stops the start
//! unless the operator asks to move it aside, and entries the configuration no longer has
//! expire.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use tower_llm::{Stack, StackBuilder, StackConfig};

type TestStack = Stack<Full<Bytes>, tower_llm::client::UpstreamBody>;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tower-llm-health-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(file: &Path, routes: &str, extra: &str) -> StackConfig {
    StackConfig::from_toml_str(&format!(
        r#"
[[providers]]
name = "a"
base_url = "http://127.0.0.1:9/v1"

[[providers]]
name = "old"
base_url = "http://127.0.0.1:9/v1"

{routes}

[health]
file = "{}"
{extra}
"#,
        file.display()
    ))
    .unwrap()
}

fn build(config: &StackConfig) -> Result<TestStack, tower_llm::ConfigFileError> {
    StackBuilder::new(config).build_http::<Full<Bytes>>()
}

const ONE_ROUTE: &str = r#"
[[routes]]
match = "gpt-*"
targets = [{ provider = "a", model = "m" }]
"#;

#[test]
fn a_missing_file_is_a_first_start() {
    let dir = scratch("missing");
    let file = dir.join("health.json");
    let stack = build(&config(&file, ONE_ROUTE, "")).unwrap();
    assert_eq!(stack.save_health().unwrap(), Some(file.clone()));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(saved["chains"]["gpt-*"].is_object());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_truncated_file_stops_the_start_with_its_path_and_the_parse_error() {
    let dir = scratch("truncated");
    let file = dir.join("health.json");
    build(&config(&file, ONE_ROUTE, ""))
        .unwrap()
        .save_health()
        .unwrap();
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();

    let err = build(&config(&file, ONE_ROUTE, "")).unwrap_err();
    assert_eq!(err.key(), "health.file");
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("EOF"), "the parse error: {message}");
    assert!(
        message.contains("on_corrupt"),
        "says how to go on: {message}"
    );
    // Nothing was touched.
    assert_eq!(std::fs::read(&file).unwrap(), &whole[..whole.len() / 2]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn move_aside_renames_the_file_and_starts_empty() {
    let dir = scratch("aside");
    let file = dir.join("health.json");
    std::fs::write(&file, b"{\"chains\": {\"gpt-*\": ").unwrap();
    let stack = build(&config(&file, ONE_ROUTE, "on_corrupt = \"move_aside\"")).unwrap();
    assert!(!file.exists());
    let aside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].starts_with("health.json.corrupt-"), "{aside:?}");
    let secs: u64 = aside[0]["health.json.corrupt-".len()..].parse().unwrap();
    assert!(secs > 1_700_000_000);
    assert_eq!(stack.health().targets.len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn entries_the_configuration_no_longer_has_are_not_resurrected() {
    let dir = scratch("stale");
    let file = dir.join("health.json");
    let before = r#"
[[routes]]
match = "gpt-*"
targets = [{ provider = "a", model = "m" }, { provider = "old", model = "m" }]

[[routes]]
match = "gone-*"
targets = [{ provider = "old", model = "x" }]
"#;
    let stack = build(&config(&file, before, "")).unwrap();
    stack.save_health().unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        saved["chains"]["gpt-*"]["targets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(saved["chains"]["gone-*"].is_object());

    // `old/m` left the route and `gone-*` the configuration.
    let stack = build(&config(&file, ONE_ROUTE, "")).unwrap();
    stack.save_health().unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let chains = saved["chains"].as_object().unwrap();
    assert_eq!(chains.keys().collect::<Vec<_>>(), ["gpt-*"]);
    let names: Vec<&str> = chains["gpt-*"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a/m"]);
    assert!(stack.health().target("old/m").is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn concurrent_saves_never_leave_a_partial_file() {
    let dir = scratch("concurrent");
    let file = dir.join("health.json");
    let stack = build(&config(&file, ONE_ROUTE, "")).unwrap();
    stack.save_health().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (file, done) = (file.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !done.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&file).expect("the file is always there");
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .expect("the file always parses");
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let stack = stack.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    stack.save_health().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("health.json")]);
    std::fs::remove_dir_all(dir).unwrap();
}
