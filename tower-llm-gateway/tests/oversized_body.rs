//! Issue 15 leftover (b): a request body over `[request] max_body_bytes`, over real loopback TCP
//! with a raw client that writes its whole body before it reads (as most HTTP clients do).
//!
//! The gateway reads and discards the rest of an oversized body (up to a bound, within
//! `[gateway] body_timeout_ms`) before it answers `413` with `connection: close`, so the client
//! reads the 413 instead of a reset. Past the bound, or when the client stalls, the connection is
//! closed: the gateway never reads an endless body forever.
//!
//! Real time, no paused clock: with the client and the gateway on one runtime, a paused clock
//! would jump to the next timer whenever both wait on the kernel's socket buffers.

mod gateway_support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use gateway_support::*;

/// The limit the tests configure: 1 MiB, so that an oversized body is larger than what the
/// loopback socket buffers absorb while nobody reads.
const LIMIT: usize = 1 << 20;

fn gateway_toml(extra_gateway: &str) -> String {
    let toml = config("healthy", "healthy", "").replace(
        "max_body_bytes = 65536",
        &format!("max_body_bytes = {LIMIT}"),
    );
    if extra_gateway.is_empty() {
        toml
    } else {
        with_gateway(&toml, extra_gateway)
    }
}

fn head(framing: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
         content-type: application/json\r\n{framing}\r\n\r\n"
    )
}

/// Read until the peer closes (or resets) the connection: what was read, and the error if it
/// ended with one.
async fn read_until_closed(tcp: &mut TcpStream) -> (Vec<u8>, Option<std::io::Error>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// A JSON-looking body of `len` bytes.
fn body(len: usize) -> Vec<u8> {
    let mut body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":""#.to_vec();
    body.resize(len.saturating_sub(4), b'x');
    body.extend_from_slice(br#""}]}"#);
    body
}

/// The whole oversized body is written, in 16 KiB chunks, then the answer is read: a `413`
/// with an OpenAI error and `connection: close`, then the end of the connection. Before the
/// fix the gateway answered at the head and closed while the client was still writing: the
/// client's write failed with a reset (or broken pipe) and the 413 was never read.
#[tokio::test]
async fn a_client_that_writes_its_whole_oversized_body_reads_the_413() {
    let gw = start(&gateway_toml("")).await;
    let body = body(3 * LIMIT);
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(head(&format!("content-length: {}", body.len())).as_bytes())
        .await
        .unwrap();
    for (i, chunk) in body.chunks(16 * 1024).enumerate() {
        if let Err(e) = tcp.write_all(chunk).await {
            panic!(
                "the gateway cut the connection after {} of {} body bytes: {e}",
                i * 16 * 1024,
                body.len()
            );
        }
    }
    let (answer, err) = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut tcp))
        .await
        .expect("the gateway answers and closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{answer:?} (then {err:?})"
    );
    assert!(err.is_none(), "closed cleanly, not reset: {err:?}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains(r#""code":"request_too_large""#), "{answer}");
    gw.shutdown().await.unwrap();
}

/// The same with a chunked body (no `content-length`): the handler finds it too large while
/// reading, and the rest is drained the same way.
#[tokio::test]
async fn a_chunked_oversized_body_is_drained_too() {
    let gw = start(&gateway_toml("")).await;
    let body = body(3 * LIMIT);
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(head("transfer-encoding: chunked").as_bytes())
        .await
        .unwrap();
    for chunk in body.chunks(16 * 1024) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        tcp.write_all(&frame)
            .await
            .expect("the gateway reads the whole body");
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let (answer, err) = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut tcp))
        .await
        .expect("the gateway answers and closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{answer:?} (then {err:?})"
    );
    assert!(err.is_none(), "closed cleanly, not reset: {err:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    gw.shutdown().await.unwrap();
}

/// Write `chunk` over and over until a write fails or `limit` bytes are written; how many
/// bytes went out.
async fn write_until_cut(
    mut tcp: tokio::net::tcp::OwnedWriteHalf,
    chunk: Vec<u8>,
    limit: usize,
) -> (usize, bool) {
    let mut written = 0usize;
    while written < limit {
        if tcp.write_all(&chunk).await.is_err() {
            return (written, true);
        }
        written += chunk.len();
    }
    (written, false)
}

/// A client that never stops sending (a chunked body with no end) is cut off once the drain
/// bound is passed: its writes fail, far before the 256 MiB it would send, and it reads the
/// end of the connection.
#[tokio::test]
async fn an_endless_body_is_cut_off_past_the_drain_bound() {
    let gw = start(&gateway_toml("")).await;
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    write
        .write_all(head("transfer-encoding: chunked").as_bytes())
        .await
        .unwrap();
    let mut frame = format!("{:x}\r\n", 64 * 1024).into_bytes();
    frame.extend(std::iter::repeat_n(b'x', 64 * 1024));
    frame.extend_from_slice(b"\r\n");
    let started = Instant::now();
    let writer = tokio::spawn(write_until_cut(write, frame, 256 << 20));
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is still open after 60 s");
    let (written, cut) = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer stops")
        .unwrap();
    assert!(cut, "the gateway read all {written} bytes");
    // The drain bound is 4 MiB (4 x the limit); what is left is what the socket buffers held.
    assert!(
        written < 64 << 20,
        "{written} bytes went out before the cut"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 413"),
        "{seen}"
    );
    gw.shutdown().await.unwrap();
}

/// A declared length past the drain bound is not read at all: `413` at once, then the end of
/// the connection (the client is expected not to send, as with `expect: 100-continue`).
#[tokio::test]
async fn a_declared_length_past_the_bound_is_refused_at_once() {
    let gw = start(&gateway_toml("")).await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(head("content-length: 10737418240").as_bytes())
        .await
        .unwrap();
    let (answer, _) = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut tcp))
        .await
        .expect("the gateway answers and closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    gw.shutdown().await.unwrap();
}

/// A client that stops sending half way through an oversized body is answered (`413`) and cut
/// off after `body_timeout_ms`, not held open.
#[tokio::test]
async fn a_client_stalling_in_an_oversized_body_is_cut_off_after_the_body_timeout() {
    let gw = start(&gateway_toml("body_timeout_ms = 300")).await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let body = body(LIMIT + 1024);
    tcp.write_all(head(&format!("content-length: {}", 2 * LIMIT)).as_bytes())
        .await
        .unwrap();
    tcp.write_all(&body).await.unwrap();
    let sent = Instant::now();
    let (answer, _) = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut tcp))
        .await
        .expect("the gateway closes the connection");
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    gw.shutdown().await.unwrap();
}

/// A body within the limit, sent in pieces, is still served: the limit counts, it does not cut.
#[tokio::test]
async fn a_body_within_the_limit_is_served() {
    let gw = start(&gateway_toml("")).await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let body = body(LIMIT);
    tcp.write_all(
        head(&format!(
            "content-length: {}\r\nconnection: close",
            body.len()
        ))
        .as_bytes(),
    )
    .await
    .unwrap();
    for chunk in body.chunks(16 * 1024) {
        tcp.write_all(chunk).await.unwrap();
    }
    let (answer, _) = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut tcp))
        .await
        .expect("the gateway answers");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    gw.shutdown().await.unwrap();
}

/// A client that asks `expect: 100-continue` has not sent its body: it is refused at once, with
/// no `100 Continue` first, and nothing is read.
#[tokio::test]
async fn an_expect_continue_request_over_the_limit_is_refused_without_a_100() {
    let gw = start(&gateway_toml("")).await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(
        head(&format!(
            "content-length: {}\r\nexpect: 100-continue",
            2 * LIMIT
        ))
        .as_bytes(),
    )
    .await
    .unwrap();
    let (answer, _) = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut tcp))
        .await
        .expect("the gateway answers and closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(!answer.contains("100 Continue"), "{answer:?}");
    gw.shutdown().await.unwrap();
}
