//! `fusioninfer up` end to end: two simulators, the endpoint picker and a real Envoy started by
//! the binary, OpenAI requests through Envoy, then shutdown on SIGTERM / SIGINT / SIGKILL with
//! no process left behind; and the messages for a taken port and a missing Envoy.
//!
//! Envoy comes from PATH or `./.venv/bin/envoy` (`make envoy`); without it the end-to-end tests
//! are skipped with a loud message, and fail under `CI=true`. The simulator, the endpoint
//! picker and the prefill/decode sidecar are built on demand (`cargo build -p
//! fusioninfer-sim-bin -p fusioninfer-epp-bin -p fusioninfer-pd-sidecar` into this test's target
//! directory).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fusioninfer_cli::load::{self, Api, Job};
use fusioninfer_cli::local::probe;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The simulator, the endpoint picker and the prefill/decode sidecar, built once per test
/// binary.
fn helper_binaries() -> (PathBuf, PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/up-… → target/<profile>
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
            let target_dir = profile_dir.parent().unwrap().to_owned();
            let profile = profile_dir
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let mut command = Command::new(env!("CARGO"));
            command
                .current_dir(root())
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "fusioninfer-sim-bin",
                    "-p",
                    "fusioninfer-epp-bin",
                    "-p",
                    "fusioninfer-pd-sidecar",
                ])
                .arg("--target-dir")
                .arg(&target_dir);
            match profile.as_str() {
                "debug" => {}
                "release" => {
                    command.arg("--release");
                }
                other => {
                    command.args(["--profile", other]);
                }
            }
            let status = command.status().expect("running cargo build");
            assert!(
                status.success(),
                "building the simulator, the endpoint picker and the sidecar failed"
            );
            (
                profile_dir.join("fusioninfer-sim"),
                profile_dir.join("fusioninfer-epp"),
                profile_dir.join("fusioninfer-pd-sidecar"),
            )
        })
        .clone()
}

/// Envoy (`$FUSIONINFER_ENVOY`, else `.venv/bin/envoy`, else `PATH`, like the endpoint
/// picker's tests), or `None` after a loud skip message (a failure under `CI=true`).
fn envoy() -> Option<PathBuf> {
    let explicit = std::env::var_os("FUSIONINFER_ENVOY").map(PathBuf::from);
    let venv = root().join(".venv/bin/envoy");
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("envoy"))
            .find(|c| c.is_file())
    });
    let found = explicit
        .filter(|p| p.is_file())
        .or_else(|| venv.is_file().then_some(venv))
        .or(on_path);
    if found.is_none() {
        let message = "envoy not found on PATH or in ./.venv/bin (run `make envoy`)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}; CI=true requires it");
        }
        eprintln!("\n!!! SKIPPING a local-mode end-to-end test: {message} !!!\n");
    }
    found
}

/// Free loopback ports (bound together so they differ, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Tests that start stacks run one at a time: they pick free ports and the machine is small.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const SPEC: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: up-test}
spec:
  roles:
  - name: worker
    componentType: worker
    replicas: 2
    template:
      metadata:
        annotations:
          local.fusioninfer.io/sim-args: "--time-scale 0.01"
      spec:
        containers:
        - name: vllm
          image: vllm/vllm-openai:v0.32.0
          args: ["--model", "test/tiny", "--port", "8000"]
  - name: router
    componentType: router
    strategy: prefix-cache
"#;

struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    gateway: u16,
    ports: Vec<u16>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PD_SPEC: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: up-pd}
spec:
  roles:
  - name: prefill
    componentType: prefiller
    template:
      metadata:
        annotations:
          local.fusioninfer.io/sim-args: "--time-scale 0.01"
      spec:
        containers: [{name: vllm, image: vllm/vllm-openai:v0.32.0, args: ["--model", "test/tiny"]}]
  - name: decode
    componentType: decoder
    template:
      metadata:
        annotations:
          local.fusioninfer.io/sim-args: "--time-scale 0.01"
      spec:
        containers: [{name: vllm, image: vllm/vllm-openai:v0.32.0, args: ["--model", "test/tiny"]}]
  - name: router
    componentType: router
    strategy: pd-disaggregation
"#;

impl Up {
    fn start(envoy: &Path) -> Up {
        Up::start_spec(envoy, SPEC)
    }

    fn start_spec(envoy: &Path, spec_text: &str) -> Up {
        let (sim, epp, pd_sidecar) = helper_binaries();
        let dir = std::env::temp_dir().join(format!(
            "fusioninfer-up-test-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = dir.join("spec.yaml");
        std::fs::write(&spec, spec_text).unwrap();
        // gateway, admin, epp grpc (+1 health), metrics, then the model servers (and sidecars):
        // consecutive runs for the ports that must be consecutive.
        let ports = consecutive_free_ports();
        let (gateway, admin, epp_port, metrics, backends) =
            (ports[0], ports[1], ports[2], ports[4], ports[5]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_fusioninfer"))
            .arg("up")
            .arg("-f")
            .arg(&spec)
            .args(["--port", &gateway.to_string()])
            .args(["--envoy-admin-port", &admin.to_string()])
            .args(["--epp-port", &epp_port.to_string()])
            .args(["--epp-metrics-port", &metrics.to_string()])
            .args(["--backend-port", &backends.to_string()])
            .arg("--simulator")
            .arg(&sim)
            .arg("--epp")
            .arg(&epp)
            .arg("--envoy")
            .arg(envoy)
            .arg("--pd-sidecar")
            .arg(&pd_sidecar)
            .arg("--run-dir")
            .arg(dir.join("run"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        let mut up = Up {
            child,
            lines,
            seen: Vec::new(),
            gateway,
            ports: ports.clone(),
            _dir: TempDir(dir),
        };
        up.wait_for("OpenAI base URL", Duration::from_secs(90));
        up
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.gateway)
    }

    /// Every process whose parent is `up`.
    fn children(&self) -> Vec<u32> {
        let me = self.child.id();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(me) {
                    out.push(pid);
                }
            }
        }
        out
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "up did not exit within {timeout:?}; output:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nine consecutive free ports: gateway, admin, picker gRPC and health, picker metrics, then
/// the model servers from ports[5] (two workers; or a prefiller and a decoder's sidecar,
/// simulator and sidecar metrics).
fn consecutive_free_ports() -> Vec<u16> {
    for _ in 0..200 {
        let candidates = free_ports(1);
        let base = candidates[0];
        if base > 60000 {
            continue;
        }
        let run: Vec<u16> = (base..base + 9).collect();
        let bound: Vec<TcpListener> = run
            .iter()
            .filter_map(|p| TcpListener::bind(("127.0.0.1", *p)).ok())
            .collect();
        if bound.len() == run.len() {
            return run;
        }
    }
    panic!("no run of 9 free ports");
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn job(group: usize, user: &str, api: Api, stream: bool) -> Job {
    Job {
        group,
        api,
        stream,
        system: format!(
            "Shared system prompt {group}. {}",
            load::text(group as u64, 200)
        ),
        user: user.to_owned(),
        max_tokens: 4,
    }
}

#[test]
fn up_serves_openai_through_envoy_and_sigterm_leaves_nothing_running() {
    let Some(envoy) = envoy() else { return };
    let _serial = serial();
    let mut up = Up::start(&envoy);
    assert!(
        up.seen
            .iter()
            .any(|l| l.contains("worker 2/2") && l.contains("router 2/2 endpoints")),
        "readiness lines missing:\n{}",
        up.seen.join("\n")
    );
    let children = up.children();
    assert_eq!(
        children.len(),
        4,
        "2 simulators, the picker, Envoy: {children:?}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = load::LoopbackUrl::parse(&up.base_url()).unwrap();
    let outcomes = rt.block_on(async {
        let mut out = Vec::new();
        for (i, j) in [
            job(0, "first question", Api::Chat, false),
            job(0, "second question", Api::Chat, true),
            job(0, "third question", Api::Completions, false),
            job(0, "fourth question", Api::Completions, true),
        ]
        .iter()
        .enumerate()
        {
            out.push(load::send(&base, "test/tiny", i, j).await);
        }
        out
    });
    for o in &outcomes {
        assert!(o.ok(), "{o:?}");
        let server = o.server.as_deref().unwrap();
        assert!(server.starts_with("up-test-worker-"), "{server}");
    }
    // Same prefix, same server, and the second request found it cached.
    assert_eq!(outcomes[0].server, outcomes[1].server, "{outcomes:?}");
    assert!(outcomes[1].cached_tokens > 0, "{outcomes:?}");

    up.signal(libc::SIGTERM);
    let status = up.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", up.seen.join("\n"));
    assert!(
        up.seen.iter().any(|l| l.contains("stopped 4 processes")),
        "{}",
        up.seen.join("\n")
    );
    let left = wait_gone(&children, Duration::from_secs(5));
    assert!(left.is_empty(), "still running after up exited: {left:?}");
    for port in up.ports.clone() {
        assert!(port_free(port), "port {port} still bound");
    }
}

#[test]
fn sigint_stops_everything_and_sigkill_of_up_takes_the_children_along() {
    let Some(envoy) = envoy() else { return };
    let _serial = serial();

    let mut up = Up::start(&envoy);
    let children = up.children();
    assert_eq!(children.len(), 4);
    up.signal(libc::SIGINT);
    assert!(up.wait_exit(Duration::from_secs(30)).success());
    assert!(up.seen.iter().any(|l| l.contains("SIGINT: stopping")));
    assert!(wait_gone(&children, Duration::from_secs(5)).is_empty());

    // kill -9: no chance to clean up; the kernel's parent-death signal does it.
    let mut up = Up::start(&envoy);
    let children = up.children();
    assert_eq!(children.len(), 4);
    up.signal(libc::SIGKILL);
    up.wait_exit(Duration::from_secs(10));
    let left = wait_gone(&children, Duration::from_secs(10));
    assert!(left.is_empty(), "orphans after kill -9 of up: {left:?}");
}

/// A sample of a Prometheus text; the series must be there.
fn sample(text: &str, series: &str) -> f64 {
    probe::sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A counter of the sidecar's, whose labelled series appear on first use (0 when absent).
fn count(text: &str, series: &str) -> f64 {
    probe::sample(text, series).unwrap_or(0.0)
}

/// Envoy → endpoint picker → sidecar → simulated prefiller, then the simulated decoder: the
/// picker adds a prefiller only when the uncached prompt reaches 128 tokens, the sidecar hands
/// off, the decoder answers with the client's usage, a failing prefiller falls back to a local
/// prefill, and a prefill target outside the pool is refused.
#[test]
fn a_prefill_decode_spec_hands_long_prompts_to_the_prefiller_through_the_sidecar() {
    let Some(envoy) = envoy() else { return };
    let _serial = serial();
    let mut up = Up::start_spec(&envoy, PD_SPEC);
    let all = up.seen.join("\n");
    assert!(all.contains("prefill 1/1 · decode 1/1"), "{all}");
    assert!(all.contains("strategy pd-disaggregation"), "{all}");
    assert!(all.contains("1 × pd sidecar"), "{all}");
    // ports[5]: the prefiller; ports[6]: the decoder's sidecar; [7]: the decoder; [8]: metrics.
    let at =
        |i: usize| load::LoopbackUrl::parse(&format!("http://127.0.0.1:{}", up.ports[i])).unwrap();
    let (prefill, sidecar, decode, sidecar_metrics) = (at(5), at(6), at(7), at(8));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = |url: &load::LoopbackUrl| {
        let response = rt
            .block_on(load::http::request("GET", url, "/metrics", None))
            .unwrap();
        String::from_utf8(rt.block_on(response.bytes()).unwrap()).unwrap()
    };
    let prompt_series = "vllm:prompt_tokens_total{engine=\"0\",model_name=\"test/tiny\"}";
    let external_series =
        "vllm:external_prefix_cache_hits_total{engine=\"0\",model_name=\"test/tiny\"}";
    let base = load::LoopbackUrl::parse(&up.base_url()).unwrap();
    let send = |i: usize, job: &Job| rt.block_on(load::send(&base, "test/tiny", i, job));

    // Short prompt: under the threshold, the decoder prefills itself.
    let short = Job {
        system: "Be brief.".to_owned(),
        ..job(0, "hi", Api::Chat, false)
    };
    let outcome = send(0, &short);
    assert!(outcome.ok(), "{outcome:?}");
    assert_eq!(outcome.server.as_deref(), Some("up-pd-decode-0"));
    assert!(outcome.prompt_tokens < 128, "{outcome:?}");
    assert_eq!(sample(&metrics(&prefill), prompt_series), 0.0, "no prefill");

    // Long prompts, streamed or not: the prefiller prefills, the decoder pulls the KV.
    for (i, stream) in [false, true].into_iter().enumerate() {
        let before = (metrics(&prefill), metrics(&decode));
        let long = job(
            1 + i,
            "a long enough prompt for a remote prefill",
            Api::Chat,
            stream,
        );
        let outcome = send(1 + i, &long);
        assert!(outcome.ok(), "{outcome:?}");
        assert_eq!(
            outcome.server.as_deref(),
            Some("up-pd-decode-0"),
            "{outcome:?}"
        );
        assert!(outcome.prompt_tokens >= 128, "{outcome:?}");
        assert_eq!(
            outcome.completion_tokens, long.max_tokens as u64,
            "{outcome:?}"
        );
        assert!(
            outcome.cached_tokens > 0,
            "transferred tokens count as cached: {outcome:?}"
        );
        let after = (metrics(&prefill), metrics(&decode));
        assert_eq!(
            sample(&after.0, prompt_series) - sample(&before.0, prompt_series),
            outcome.prompt_tokens as f64,
            "the prefiller prefilled the whole prompt"
        );
        assert!(
            sample(&after.1, external_series) > sample(&before.1, external_series),
            "the decoder pulled remote KV"
        );
    }
    let own = metrics(&sidecar_metrics);
    assert_eq!(
        count(
            &own,
            "fusioninfer_pd_prefill_requests_total{outcome=\"ok\"}"
        ),
        2.0,
        "{own}"
    );

    // A failing prefiller: the decoder prefills itself, and the fallback is counted.
    let faults = serde_json::json!({"fail_rate": 1.0, "fail_status": 503});
    let response = rt
        .block_on(load::http::request(
            "POST",
            &prefill,
            "/admin/faults",
            Some(&faults),
        ))
        .unwrap();
    assert_eq!(response.status, 200);
    let outcome = send(3, &job(3, "another long prompt", Api::Chat, true));
    assert!(outcome.ok(), "{outcome:?}");
    assert_eq!(outcome.server.as_deref(), Some("up-pd-decode-0"));
    let own = metrics(&sidecar_metrics);
    assert_eq!(
        count(
            &own,
            "fusioninfer_pd_fallbacks_total{reason=\"server_error\"}"
        ),
        1.0,
        "{own}"
    );

    // A prefill target outside the pool (the decoder itself), sent to the sidecar directly.
    let body = serde_json::json!({"model": "test/tiny", "prompt": "hello"});
    let refused = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(sidecar.address)
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post("/v1/completions")
            .header("host", sidecar.authority.as_str())
            .header("content-type", "application/json")
            .header("x-prefiller-host-port", decode.address.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        sender
            .send_request(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(refused, 403);

    up.signal(libc::SIGTERM);
    assert!(up.wait_exit(Duration::from_secs(30)).success());
    assert!(
        up.seen.iter().any(|l| l.contains("stopped 5 processes")),
        "{}",
        up.seen.join("\n")
    );
}

#[test]
fn the_generated_envoy_config_is_accepted_by_envoy() {
    let Some(envoy) = envoy() else { return };
    let text = std::fs::read_to_string(root().join("examples/local-demo.yaml")).unwrap();
    let isvc = fusioninfer_core::manifest::parse_inference_services(&text)
        .unwrap()
        .remove(0);
    let plan = fusioninfer_cli::local::LocalPlan::new(&isvc, &Default::default()).unwrap();
    let path = std::env::temp_dir().join(format!("fusioninfer-envoy-{}.yaml", std::process::id()));
    std::fs::write(&path, plan.envoy_config()).unwrap();
    let output = Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_taken_port_is_named_with_the_flag_that_moves_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().port();
    let others = free_ports(4);
    let output = Command::new(env!("CARGO_BIN_EXE_fusioninfer"))
        .current_dir(root())
        .args(["up", "-f", "examples/local-demo.yaml"])
        .args(["--port", &taken.to_string()])
        .args(["--envoy-admin-port", &others[0].to_string()])
        .args(["--epp-metrics-port", &others[1].to_string()])
        .args(["--backend-port", &others[2].to_string()])
        .args(["--epp-port", &others[3].to_string()])
        .output()
        .unwrap();
    drop(listener);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "port {taken} on 127.0.0.1 is already in use: it is planned for the Envoy listener; stop what listens there or choose another port with --port"
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing started");
}

#[test]
fn a_missing_envoy_is_explained() {
    let ports = free_ports(4);
    let output = Command::new(env!("CARGO_BIN_EXE_fusioninfer"))
        .current_dir(root())
        .args(["up", "-f", "examples/local-demo.yaml"])
        .args(["--port", &ports[0].to_string()])
        .args(["--envoy-admin-port", &ports[1].to_string()])
        .args(["--epp-metrics-port", &ports[2].to_string()])
        .args(["--backend-port", &ports[3].to_string()])
        .args(["--epp-port", &free_ports(1)[0].to_string()])
        .args(["--simulator", "/bin/true", "--epp", "/bin/true"])
        .args(["--envoy", "/nonexistent/envoy"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`envoy` not found"), "{stderr}");
    assert!(stderr.contains("make envoy"), "{stderr}");
}

#[test]
fn an_invalid_spec_is_refused_with_every_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_fusioninfer"))
        .current_dir(root())
        .args(["up", "-f", "examples/invalid/mixed-worker-decoder.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot run locally"), "{stderr}");
    assert!(stderr.contains("problem(s)"), "{stderr}");
}
