//! One command starts N simulators on consecutive ports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the child when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port `p` such that `p` and `p + 1` are free right now.
fn free_pair() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

/// Starts `fusioninfer-sim --replicas 2` and returns it with its `listening` lines, or `None`
/// if it exited (a port was taken in between).
fn launch(port: u16) -> Option<(Guard, Vec<String>)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fusioninfer-sim"))
        .args([
            "--replicas",
            "2",
            "--port",
            &port.to_string(),
            "--model",
            "m",
            "--time-scale",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary runs");
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines.len() < 2 {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => lines.push(l),
            Err(_) => return None,
        }
    }
    Some((guard, lines))
}

#[tokio::test]
async fn replicas_listen_on_consecutive_ports() {
    let mut started = None;
    for _ in 0..5 {
        let port = free_pair();
        if let Some(s) = launch(port) {
            started = Some((port, s));
            break;
        }
    }
    let (port, (_guard, lines)) = started.expect("simulators start");
    let client = fusioninfer_tests::http_client(Duration::from_secs(10));
    for (i, line) in lines.iter().enumerate() {
        let p = port + i as u16;
        assert_eq!(
            line,
            &format!("fusioninfer-sim listening http://127.0.0.1:{p} instance 127.0.0.1:{p}")
        );
        let res = client
            .get(format!("http://127.0.0.1:{p}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-inference-pod"], format!("127.0.0.1:{p}"));
        let body: serde_json::Value = client
            .post(format!("http://127.0.0.1:{p}/v1/completions"))
            .json(&serde_json::json!({"model": "m", "prompt": "hi", "max_tokens": 2}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["usage"]["completion_tokens"], 2);
    }
}

#[test]
fn bad_flags_fail_fast() {
    let out = Command::new(env!("CARGO_BIN_EXE_fusioninfer-sim"))
        .args(["--lora", "no-equals-sign", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=PATH"));
}
