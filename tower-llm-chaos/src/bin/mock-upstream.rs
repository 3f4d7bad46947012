//! `mock-upstream`: the tower-llm mock OpenAI-compatible upstream as a process.
//!
//! ```text
//! mock-upstream [--listen ADDR] [--profile PROFILE] [--prefill MODE] [--answer TEXT]
//!               [--tokens N] [--token-interval-ms MS] [--tls-cert PEM --tls-key PEM]
//!               [--no-http2] [--quiet]
//! ```
//!
//! Prints `mock-upstream listening on ADDR` once bound, then one line per request on stderr
//! (unless `--quiet`), until Ctrl-C. `PROFILE` uses the fault profile grammar of
//! `tower_llm_chaos::grammar`, for instance `"0s-20s=status:503; model gpt-bad=status:500"`.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tower_llm_chaos::{Answer, FaultProfile, MockUpstream, Prefill};

const USAGE: &str = "usage: mock-upstream [--listen ADDR] [--profile PROFILE] [--prefill MODE] [--answer TEXT]
                     [--tokens N] [--token-interval-ms MS] [--tls-cert PEM --tls-key PEM]
                     [--no-http2] [--quiet]

Serves POST /v1/chat/completions (JSON, and SSE for \"stream\": true) with scripted faults.

  --listen ADDR      address to bind (default 127.0.0.1:9101; port 0 picks a free one)
  --profile PROFILE  fault profile, e.g. \"0s-20s=status:503; model gpt-bad=status:500; default=healthy\"
                     (default: healthy)
  --prefill MODE     what to do with a final assistant message: ignore (default, as OpenAI),
                     continue (answer the rest of the text after it, as vLLM or Anthropic),
                     reject (400 \"assistant prefill is not supported\")
  --answer TEXT      canonical (default) or alternate (same first three tokens, then different)
  --tokens N         answers carry N tokens (the answer's tokens repeated): N content events
                     per stream (default: the answer's own 25)
  --token-interval-ms MS
                     streamed events MS milliseconds apart, as a model generating tokens
                     (default 0: back to back)
  --tls-cert PEM     serve https with this certificate chain (PEM file, leaf first); needs
                     --tls-key and a build with the `tls` feature
  --tls-key PEM      the certificate's private key (PEM file)
  --no-http2         with --tls-cert: offer only HTTP/1.1 by ALPN (default: h2, then http/1.1)
  --quiet            do not print a line per request
  --help             this text";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    profile: FaultProfile,
    prefill: Prefill,
    answer: Answer,
    tokens: Option<usize>,
    token_interval: Duration,
    /// `--tls-cert` and `--tls-key`: PEM files.
    tls_cert: Option<String>,
    tls_key: Option<String>,
    http2: bool,
    quiet: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
        profile: FaultProfile::default(),
        prefill: Prefill::default(),
        answer: Answer::default(),
        tokens: None,
        token_interval: Duration::ZERO,
        tls_cert: None,
        tls_key: None,
        http2: true,
        quiet: false,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => {
                let text = value("--listen")?;
                parsed.listen = text.parse().map_err(|_| {
                    format!("--listen: `{text}` is not an address like 127.0.0.1:9101")
                })?;
            }
            "--profile" => {
                parsed.profile = value("--profile")?
                    .parse()
                    .map_err(|e| format!("--profile: {e}"))?;
            }
            "--prefill" => {
                parsed.prefill = match value("--prefill")?.as_str() {
                    "ignore" => Prefill::Ignore,
                    "continue" => Prefill::Continue,
                    "reject" => Prefill::Reject,
                    other => {
                        return Err(format!(
                            "--prefill: `{other}` is not one of ignore, continue, reject"
                        ))
                    }
                };
            }
            "--answer" => {
                parsed.answer = match value("--answer")?.as_str() {
                    "canonical" => Answer::Canonical,
                    "alternate" => Answer::Alternate,
                    other => {
                        return Err(format!(
                            "--answer: `{other}` is not one of canonical, alternate"
                        ))
                    }
                };
            }
            "--tokens" => {
                let text = value("--tokens")?;
                parsed.tokens = Some(
                    text.parse()
                        .map_err(|_| format!("--tokens: `{text}` is not a whole number"))?,
                );
            }
            "--token-interval-ms" => {
                let text = value("--token-interval-ms")?;
                let ms: u64 = text.parse().map_err(|_| {
                    format!("--token-interval-ms: `{text}` is not a whole number of milliseconds")
                })?;
                parsed.token_interval = Duration::from_millis(ms);
            }
            "--tls-cert" => parsed.tls_cert = Some(value("--tls-cert")?),
            "--tls-key" => parsed.tls_key = Some(value("--tls-key")?),
            "--no-http2" => parsed.http2 = false,
            "--quiet" => parsed.quiet = true,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    match (&parsed.tls_cert, &parsed.tls_key) {
        (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        (None, None) if !parsed.http2 => return Err("--no-http2 needs --tls-cert".into()),
        _ => {}
    }
    Ok(Some(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-upstream: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mock-upstream: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let profile_text = args.profile.to_string();
    let mut builder = MockUpstream::builder()
        .profile(args.profile)
        .prefill(args.prefill)
        .answer(args.answer)
        .token_interval(args.token_interval)
        .listen(args.listen)
        // A long-running process keeps no log; lines go to stderr instead.
        .max_logged_attempts(0);
    if let Some(tokens) = args.tokens {
        builder = builder.answer_tokens(tokens);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        builder = match with_tls(builder, cert, key, args.http2) {
            Ok(builder) => builder,
            Err(message) => {
                eprintln!("mock-upstream: {message}");
                return ExitCode::from(2);
            }
        };
    }
    if !args.quiet {
        builder = builder.on_attempt(|attempt| {
            let status = attempt
                .status
                .map_or_else(|| "-".to_owned(), |s| s.to_string());
            eprintln!(
                "{:>10.3}s #{} model={} stream={} fault={} status={status}",
                attempt.at.as_secs_f64(),
                attempt.seq,
                attempt.model,
                attempt.stream,
                attempt.fault,
            );
        });
    }
    let upstream = match builder.start().await {
        Ok(upstream) => upstream,
        Err(error) => {
            eprintln!("mock-upstream: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("mock-upstream listening on {}", upstream.addr());
    // The modes only when not the defaults, so the line stays as it was for a plain mock.
    let mut modes = String::new();
    if args.prefill != Prefill::default() {
        modes.push_str(&format!(", prefill: {}", args.prefill));
    }
    if args.answer != Answer::default() {
        modes.push_str(&format!(", answer: {}", args.answer));
    }
    if let Some(tokens) = args.tokens {
        modes.push_str(&format!(", tokens: {tokens}"));
    }
    if !args.token_interval.is_zero() {
        modes.push_str(&format!(
            ", token interval: {} ms",
            args.token_interval.as_millis()
        ));
    }
    println!(
        "base URL {} (profile: {profile_text}){modes}",
        upstream.base_url()
    );
    let _ = std::io::stdout().flush();
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("mock-upstream: cannot wait for Ctrl-C: {error}");
    }
    upstream.shutdown().await;
    ExitCode::SUCCESS
}

/// `builder` serving https with the certificate and key in these PEM files.
#[cfg(feature = "tls")]
fn with_tls(
    builder: tower_llm_chaos::MockUpstreamBuilder,
    cert: &str,
    key: &str,
    http2: bool,
) -> Result<tower_llm_chaos::MockUpstreamBuilder, String> {
    let read = |path: &str, flag: &str| {
        std::fs::read_to_string(path).map_err(|e| format!("{flag}: cannot read `{path}`: {e}"))
    };
    let tls =
        tower_llm_chaos::MockTls::from_pem(&read(cert, "--tls-cert")?, &read(key, "--tls-key")?)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(builder.tls(tls.http2(http2)))
}

/// Without the `tls` feature the mock cannot serve https.
#[cfg(not(feature = "tls"))]
fn with_tls(
    _builder: tower_llm_chaos::MockUpstreamBuilder,
    _cert: &str,
    _key: &str,
    _http2: bool,
) -> Result<tower_llm_chaos::MockUpstreamBuilder, String> {
    Err("--tls-cert: this build has no TLS (build with `--features tls`)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        let parsed = args(&["--listen", "127.0.0.1:0", "--profile=hang", "--quiet"])
            .unwrap()
            .unwrap();
        assert_eq!(parsed.listen.port(), 0);
        assert_eq!(parsed.profile.to_string(), "default=hang");
        assert!(parsed.quiet);
        assert_eq!(
            (parsed.prefill, parsed.answer),
            (Prefill::Ignore, Answer::Canonical)
        );
        let parsed = args(&["--prefill", "continue", "--answer=alternate"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (parsed.prefill, parsed.answer),
            (Prefill::Continue, Answer::Alternate)
        );
        let parsed = args(&["--tokens", "500", "--token-interval-ms=20"])
            .unwrap()
            .unwrap();
        assert_eq!(parsed.tokens, Some(500));
        assert_eq!(parsed.token_interval, Duration::from_millis(20));
        assert!(args(&["--tokens", "many"])
            .unwrap_err()
            .contains("not a whole number"));
        assert!(args(&["--token-interval-ms", "1.5"])
            .unwrap_err()
            .contains("milliseconds"));
        let parsed = args(&["--tls-cert", "c.pem", "--tls-key=k.pem", "--no-http2"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (parsed.tls_cert.as_deref(), parsed.tls_key.as_deref()),
            (Some("c.pem"), Some("k.pem"))
        );
        assert!(!parsed.http2);
        assert!(args(&["--tls-cert", "c.pem"])
            .unwrap_err()
            .contains("needs --tls-key"));
        assert!(args(&["--tls-key", "k.pem"])
            .unwrap_err()
            .contains("needs --tls-cert"));
        assert!(args(&["--no-http2"])
            .unwrap_err()
            .contains("needs --tls-cert"));
        let parsed = args(&["--prefill=reject"]).unwrap().unwrap();
        assert_eq!(parsed.prefill, Prefill::Reject);
        assert!(args(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(args(&["--listen"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--listen", "nowhere"])
            .unwrap_err()
            .contains("not an address"));
        assert!(args(&["--profile", "status:1"])
            .unwrap_err()
            .contains("`1`"));
        assert!(args(&["--prefill", "maybe"])
            .unwrap_err()
            .contains("ignore, continue, reject"));
        assert!(args(&["--answer"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--frobnicate"])
            .unwrap_err()
            .contains("unknown argument"));
    }
}
