//! The `tower-llm-gateway` binary, run as a process: `--help` and `--version` exit 0 with
//! usage, a bad argument or configuration exits 2 with the reason, and a gateway started from a
//! file answers over HTTP and stops cleanly on SIGTERM.

#![cfg(feature = "cli")]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tower-llm-gateway");

#[test]
fn help_exits_0_with_usage() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Usage:",
        "--config <FILE>",
        "--listen <ADDR>",
        "--quiet",
        "--log-format <FORMAT>",
        "json",
        "--help",
    ] {
        assert!(help.contains(needle), "no `{needle}` in:\n{help}");
    }
    assert!(
        help.contains("workspace.toml"),
        "the default config:\n{help}"
    );

    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tower-llm-gateway "));
}

#[test]
fn bad_arguments_and_configurations_exit_2() {
    let out = Command::new(BIN)
        .args(["--listen", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");

    let out = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let file = temp_config(
        "bad",
        "[gateway]\nlisten = \"127.0.0.1:0\"\nlisten_port = 3\n",
    );
    let out = Command::new(BIN)
        .args(["--config".as_ref(), file.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: `gateway.listen_port`"), "{err}");
    let _ = std::fs::remove_file(file);
}

#[cfg(unix)]
mod serve {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::{temp_config, BIN};

    /// The gateway started on `file` with `--quiet`, once its banner (its first line on stderr,
    /// written when it serves) is read: the process, the rest of its stderr, the banner.
    fn start(
        file: &std::path::Path,
    ) -> (
        std::process::Child,
        BufReader<std::process::ChildStderr>,
        String,
    ) {
        let mut child = Command::new(BIN)
            .args(["--config".as_ref(), file.as_os_str()])
            .args(["--listen", "127.0.0.1:0", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut banner = String::new();
        stderr.read_line(&mut banner).unwrap();
        (child, stderr, banner)
    }

    #[test]
    fn serves_from_a_file_and_stops_on_sigterm() {
        let file = temp_config(
            "serve",
            "[[providers]]\nname = \"only\"\nmock = \"healthy\"\n\n[[routes]]\nmatch = \"*\"\ntargets = [{ provider = \"only\" }]\n",
        );
        let (mut child, mut stderr, banner) = start(&file);
        let addr = banner
            .strip_prefix("tower-llm gateway on http://")
            .and_then(|rest| rest.split("/v1").next())
            .unwrap_or_else(|| panic!("unexpected first line: {banner}"))
            .to_owned();

        let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        let response = http_exchange(
            &addr,
            &format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("x-llm-target: only/gpt-4o"), "{response}");
        let response = http_exchange(
            &addr,
            &format!("GET /health HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"),
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");

        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert_eq!(exit.code(), Some(0), "a clean shutdown");
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("shutting down (1 requests"), "{rest}");
        let _ = std::fs::remove_file(file);
    }

    /// SIGTERM or SIGINT the moment the banner is out (what a supervisor that waits for it and
    /// then stops the gateway does): a clean shutdown, never the signal's default action. The
    /// handlers used to be installed after the banner, so a signal in between killed the
    /// process (exit without a code); ten rounds of each signal make that window show.
    #[test]
    fn a_signal_right_after_the_banner_is_a_clean_shutdown() {
        let file = temp_config(
            "signal",
            "[[providers]]\nname = \"only\"\nmock = \"healthy\"\n\n[[routes]]\nmatch = \"*\"\ntargets = [{ provider = \"only\" }]\n",
        );
        for (round, signal) in ["-TERM", "-INT"].iter().cycle().take(20).enumerate() {
            let (mut child, mut stderr, banner) = start(&file);
            assert!(
                banner.starts_with("tower-llm gateway on http://"),
                "{banner}"
            );
            let status = Command::new("kill")
                .args([*signal, child.id().to_string().as_str()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = child.wait().unwrap();
            let mut rest = String::new();
            stderr.read_to_string(&mut rest).unwrap();
            assert_eq!(exit.code(), Some(0), "round {round}, {signal}: {rest}");
            assert!(rest.contains("shutting down (0 requests"), "{rest}");
        }
        let _ = std::fs::remove_file(file);
    }

    /// `--log-format json`: every line on stdout is a JSON event with `level`, `target` and
    /// `fields.message`; the banner stays on stderr; neither the provider's API key nor a
    /// client key (both from environment variables) appears anywhere. The events: a stream cut
    /// by the real provider (a mock at a `base_url`, `cut-after:3`) and resumed on the embedded
    /// secondary, and a key reload on SIGHUP.
    #[test]
    fn log_format_json_writes_json_lines_on_stdout_without_keys() {
        const PROVIDER_KEY: &str = "sk-provider-secret-7f3a9c";
        const CLIENT_KEY: &str = "sk-client-secret-41d2e8";
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let upstream = runtime
            .block_on(
                tower_llm_chaos::MockUpstream::builder()
                    .default_fault(tower_llm_chaos::Fault::CutAfter(3))
                    .start(),
            )
            .unwrap();
        let file = temp_config(
            "json-logs",
            &format!(
                r#"
[gateway]
api_keys_env = "TLG_CLI_JSON_CLIENT_KEYS"

[[providers]]
name = "real"
base_url = "{}"
api_key_env = "TLG_CLI_JSON_PROVIDER_KEY"

[[providers]]
name = "secondary"
mock = "healthy"

[[routes]]
match = "*"
targets = [{{ provider = "real" }}, {{ provider = "secondary", model = "backup-model" }}]
"#,
                upstream.base_url()
            ),
        );
        let mut child = Command::new(BIN)
            .args(["--config".as_ref(), file.as_os_str()])
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("TLG_CLI_JSON_PROVIDER_KEY", PROVIDER_KEY)
            .env("TLG_CLI_JSON_CLIENT_KEYS", format!("alice={CLIENT_KEY}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut banner = String::new();
        stderr.read_line(&mut banner).unwrap();
        let addr = banner
            .strip_prefix("tower-llm gateway on http://")
            .and_then(|rest| rest.split("/v1").next())
            .unwrap_or_else(|| panic!("unexpected first line: {banner}"))
            .to_owned();
        // Drain stderr (the banner's rest and the status line) so the gateway never blocks on it.
        let stderr_rest = std::thread::spawn(move || {
            let mut rest = String::new();
            stderr.read_to_string(&mut rest).unwrap();
            rest
        });

        let body =
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let response = http_exchange(
            &addr,
            &format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("data: [DONE]"), "{response}");
        assert_eq!(
            upstream.attempt_count(),
            1,
            "the real provider cut the stream"
        );

        let pid = child.id().to_string();
        let kill = |signal: &str| {
            let status = Command::new("kill").args([signal, &pid]).status().unwrap();
            assert!(status.success());
        };
        kill("-HUP");
        // The reload's event, then a clean stop.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "stdout closed before the reload's event: {lines:?}"
            );
            let reloaded = line.contains("keys reloaded");
            lines.push(line);
            if reloaded {
                break;
            }
        }
        kill("-TERM");
        let exit = child.wait().unwrap();
        assert_eq!(exit.code(), Some(0), "a clean shutdown");
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        lines.extend(rest.lines().map(str::to_owned));
        let stderr = stderr_rest.join().unwrap();
        assert!(stderr.contains("shutting down (1 requests"), "{stderr}");

        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
            })
            .collect();
        for event in &events {
            for key in ["timestamp", "level", "target"] {
                assert!(event[key].is_string(), "no `{key}` in {event}");
            }
            assert!(
                event["fields"]["message"].is_string(),
                "no message in {event}"
            );
        }
        let find = |message: &str| {
            events
                .iter()
                .find(|e| {
                    e["fields"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(message)
                })
                .unwrap_or_else(|| panic!("no `{message}` event in {events:#?}"))
        };
        let reload = find("keys reloaded");
        assert_eq!(reload["level"], "INFO");
        assert_eq!(reload["target"], "tower_llm_gateway::reload");
        assert_eq!(reload["fields"]["clients"], "alice");
        let cut = find("stream ended with an error event");
        assert_eq!(cut["level"], "WARN");

        let all = format!("{}\n{stderr}{banner}", lines.join("\n"));
        for secret in [PROVIDER_KEY, CLIENT_KEY] {
            assert!(!all.contains(secret), "a key in the output:\n{all}");
        }
        drop(upstream);
        let _ = std::fs::remove_file(file);
    }

    /// One HTTP/1.1 exchange on a fresh connection (`connection: close`): the whole response.
    fn http_exchange(addr: &str, request: &str) -> String {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).unwrap();
        response
    }
}

fn temp_config(tag: &str, toml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tower-llm-gateway-cli-{}-{tag}.toml",
        std::process::id()
    ));
    std::fs::write(&path, toml).unwrap();
    path
}
