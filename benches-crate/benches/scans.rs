//! The hand-written JSON scans on their own (issue 18): a chat request's `model` read from a long
//! conversation and from a short body (`tower_llm_core::openai::request_model`, what the gateway
//! and the stack read of every request), and one streamed chunk (`scan_plain_chunk`, what the
//! stream guard reads of every event).
//!
//! ```text
//! cargo bench -p tower-llm-benches --bench scans
//! # instructions per call, exact: callgrind counts of N and 2N calls of one variant, subtracted
//! SCANS_PROFILE=100 SCANS_ONLY=request_model/long valgrind --tool=callgrind target/release/deps/scans-<hash> --bench
//! SCANS_PROFILE=200 SCANS_ONLY=request_model/long valgrind --tool=callgrind target/release/deps/scans-<hash> --bench
//! ```
//!
//! The long body is the file `SCANS_LONG_BODY` names (the gateway counts in BENCHMARKS.md use
//! `scripts/long_request_body.py`'s), or else one of the same shape built here: a system message
//! and 20 turns of 220 words with escaped quotes and line breaks.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, Criterion};
use tower_llm_core::openai::request_model;
use tower_llm_core::sse::scan_plain_chunk;

const SHORT: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"stream":false}"#;

/// One event's data as the mock upstream streams it.
const CHUNK: &[u8] = br#"{"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":" the"},"finish_reason":null}]}"#;

/// A conversation of the shape `scripts/long_request_body.py` writes (its words picked by a
/// seeded xorshift instead of Python's generator, so not the same bytes).
fn built_long_body() -> Vec<u8> {
    const WORDS: [&str; 20] = [
        "resilience",
        "provider",
        "timeout",
        "retry",
        "fallback",
        "stream",
        "token",
        "budget",
        "circuit",
        "breaker",
        "latency",
        "gateway",
        "upstream",
        "answer",
        "question",
        "model",
        "context",
        "window",
        "resilience",
        "provider",
    ];
    let mut state: u64 = 7;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut body = String::from(
        r#"{"model":"m","messages":[{"role":"system","content":"You are a helpful assistant.\nAnswer \"briefly\" and cite sources."}"#,
    );
    for turn in 0..20 {
        let words: Vec<&str> = (0..220)
            .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
            .collect();
        let text =
            words
                .join(" ")
                .replacen("retry", "retry\\n", 3)
                .replacen("model", "\\\"model\\\"", 2);
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        body.push_str(&format!(r#",{{"role":"{role}","content":"{text}"}}"#));
    }
    body.push_str(r#"],"temperature":0.2,"max_tokens":512}"#);
    body.into_bytes()
}

fn long_body() -> Vec<u8> {
    match std::env::var_os("SCANS_LONG_BODY") {
        Some(path) => std::fs::read(&path)
            .unwrap_or_else(|err| panic!("SCANS_LONG_BODY={}: {err}", path.to_string_lossy())),
        None => built_long_body(),
    }
}

/// One call of a variant (what it returns keeps the result alive).
type Call<'a> = Box<dyn Fn() -> usize + 'a>;

/// The variants: a name and one call.
fn variants(long: &[u8]) -> Vec<(&'static str, Call<'_>)> {
    vec![
        (
            "request_model/long",
            Box::new(move || {
                let model = request_model(black_box(long)).expect("the long body is JSON");
                model.map_or(0, |m| m.len())
            }),
        ),
        (
            "request_model/short",
            Box::new(|| {
                let model = request_model(black_box(SHORT)).expect("the short body is JSON");
                model.map_or(0, |m| m.len())
            }),
        ),
        (
            "scan_plain_chunk/event",
            Box::new(|| {
                let chunk = scan_plain_chunk(black_box(CHUNK)).expect("a plain chunk");
                chunk.choices
            }),
        ),
    ]
}

fn scans(c: &mut Criterion) {
    let long = long_body();
    let mut group = c.benchmark_group("scans");
    for (name, call) in variants(&long) {
        group.bench_function(name, |b| b.iter(&call));
    }
    group.finish();
}

criterion_group!(benches, scans);

fn main() {
    // `SCANS_PROFILE=<calls>`: only make that many calls of the variant `SCANS_ONLY` names (or
    // of each), for callgrind.
    if let Some(calls) = std::env::var("SCANS_PROFILE")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let only = std::env::var("SCANS_ONLY").ok();
        let long = long_body();
        for (name, call) in variants(&long) {
            if only.as_deref().is_some_and(|only| only != name) {
                continue;
            }
            let total: usize = (0..calls).map(|_| call()).sum();
            println!("{name}: {calls} calls ({total})");
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
