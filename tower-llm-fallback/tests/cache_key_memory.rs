//! The cache key of a large request is computed in constant memory (issue 15, finding 9): no
//! `serde_json::Value` of the body (about 16x its size), no copy of it. Counted with a counting
//! global allocator in a test binary of its own.
//!
//! One test function: the counter is global, so nothing else may run in this binary meanwhile.
//! Even so the test harness's main thread allocates once right after it starts the test's
//! thread, which under load can land in a count: each figure is the fewest of three rounds (the
//! key's own allocations are the same every round; noise only ever adds).

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower_llm_fallback::cache::{request_key, CacheHashKey};
use tower_llm_fallback::CacheScope;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A chat request of at least `size` bytes: many messages whose long contents have escapes
/// (which a deserializer would unescape into a buffer) and small nested objects.
fn request(size: usize) -> String {
    let chunk = "line one\\nline \\\"two\\\" \\u00e9t\\u00e9 and more text ".repeat(40);
    let mut messages = Vec::new();
    let mut total = 0;
    while total < size {
        let m =
            format!(r#"{{"role":"user","content":"{chunk}","meta":{{"a":[1,2.5e3,true,null]}}}}"#);
        total += m.len() + 1;
        messages.push(m);
    }
    format!(
        r#"{{"model":"gpt-4o","user":"u-1","temperature":0.2,"messages":[{}]}}"#,
        messages.join(",")
    )
}

#[test]
fn keying_a_one_megabyte_request_allocates_a_constant() {
    let key = CacheHashKey::random();
    let scope = CacheScope::new("tenant-a");
    let small = request(10_000);
    let large = request(1 << 20);
    assert!(large.len() >= 1 << 20);

    let mut seen = Vec::new();
    for body in [&small, &large] {
        let stats = (0..3)
            .map(|_| {
                let region = Region::new(GLOBAL);
                let digest = request_key(key, body.as_bytes(), Some(&scope));
                let stats = region.change();
                assert!(digest.is_some());
                stats
            })
            .min_by_key(|stats| (stats.allocations, stats.bytes_allocated))
            .expect("three rounds");
        // Constant: serde_json's validation keeps one byte per open bracket (its nesting
        // stack), and the key walk keeps one hasher per level on the stack; nothing per byte.
        assert!(
            stats.bytes_allocated <= 1024,
            "keying {} bytes allocated {} bytes",
            body.len(),
            stats.bytes_allocated
        );
        seen.push((stats.allocations, stats.bytes_allocated));
    }
    assert_eq!(seen[0], seen[1], "100x the body, the same allocations");

    // For scale: the former key built a `serde_json::Value` of the whole request.
    let region = Region::new(GLOBAL);
    let value: serde_json::Value = serde_json::from_slice(large.as_bytes()).unwrap();
    let stats = region.change();
    drop(value);
    assert!(
        stats.bytes_allocated > large.len(),
        "a Value took {} bytes",
        stats.bytes_allocated
    );
}
