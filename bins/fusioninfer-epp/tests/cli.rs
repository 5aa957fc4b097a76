//! The `fusioninfer-epp` binary: flags, the listening line, serving, and a clean SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn epp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fusioninfer-epp"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("fusioninfer-epp-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_lists_the_planner_flags() {
    let output = epp().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--pool-name",
        "--pool-namespace",
        "--config-file",
        "--grpc-port",
        "--grpc-health-port",
        "--metrics-port",
        "--endpoints-file",
        "--strategy",
        "--refresh-metrics-interval",
        "--max-request-body-bytes",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn serves_until_sigterm() {
    let dir = scratch("serve");
    let endpoints = dir.join("endpoints.yaml");
    std::fs::write(&endpoints, "endpoints: []\n").unwrap();
    let mut child = epp()
        .args([
            "--bind-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--grpc-health-port",
            "0",
        ])
        .args([
            "--metrics-port",
            "0",
            "--strategy",
            "round-robin",
            "--log-format",
            "json",
        ])
        .arg("--endpoints-file")
        .arg(&endpoints)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening grpc=127.0.0.1:"), "{line:?}");
    let metrics = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("metrics="))
        .unwrap()
        .to_owned();
    let mut stream = TcpStream::connect(&metrics).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: epp\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("fusioninfer_epp_endpoints"), "{response}");

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

#[test]
fn bad_configuration_fails_fast_with_a_message() {
    let dir = scratch("bad");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: no-such-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: no-such-scorer\n",
    )
    .unwrap();
    let output = epp()
        .args(["--endpoints-file", "unused.yaml", "--config-file"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no-such-scorer"), "{stderr}");
}

#[test]
fn the_kubernetes_source_needs_a_cluster() {
    // The planner's arguments are accepted; without in-cluster credentials or a kubeconfig the
    // picker says so and exits (CI has no API server).
    let dir = scratch("kube");
    let config = dir.join("config.yaml");
    std::fs::write(&config, fusioninfer_config_text()).unwrap();
    let output = epp()
        .args([
            "--pool-name",
            "pool",
            "--pool-namespace",
            "default",
            "--config-file",
        ])
        .arg(&config)
        .args([
            "--grpc-port",
            "0",
            "--grpc-health-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(["--bind-address", "127.0.0.1"])
        .env("KUBECONFIG", dir.join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", &dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("Kubernetes client"), "{stderr}");
}

fn fusioninfer_config_text() -> &'static str {
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n"
}
