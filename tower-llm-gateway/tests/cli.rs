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

    #[test]
    fn serves_from_a_file_and_stops_on_sigterm() {
        let file = temp_config(
            "serve",
            "[[providers]]\nname = \"only\"\nmock = \"healthy\"\n\n[[routes]]\nmatch = \"*\"\ntargets = [{ provider = \"only\" }]\n",
        );
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
