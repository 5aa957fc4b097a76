//! The `fusioninfer-pd-sidecar` binary: flags, refusing to start without an allowlist, the
//! listening line, serving metrics, and a clean SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fusioninfer-pd-sidecar"))
}

#[test]
fn help_lists_the_planners_and_local_modes_flags() {
    let output = sidecar().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--port",
        "--engine-port",
        "--metrics-port",
        "--pool-name",
        "--pool-namespace",
        "--prefillers",
        "--prefill-timeout",
        "--shutdown-grace",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn an_allowlist_source_is_required() {
    let output = sidecar().args(["--port", "0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("--pool-name") && stderr.contains("--prefillers"),
        "{stderr}"
    );
    let output = sidecar()
        .args(["--prefillers", "prefill-0:8000"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--prefillers"), "{stderr}");
}

#[test]
fn serves_metrics_until_sigterm() {
    let mut child = sidecar()
        .args([
            "--bind-address",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args([
            "--prefillers",
            "127.0.0.1:9,127.0.0.1:10",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening proxy=127.0.0.1:"), "{line:?}");
    let metrics = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("metrics="))
        .unwrap()
        .to_owned();
    let mut stream = TcpStream::connect(&metrics).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: pd\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("fusioninfer_pd_allowed_prefillers 2"),
        "{response}"
    );

    let mut stream = TcpStream::connect(&metrics).unwrap();
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nhost: pd\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "a static allowlist is synced at once: {response}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("shutting down")),
        "JSON logs: {logs}"
    );
}
