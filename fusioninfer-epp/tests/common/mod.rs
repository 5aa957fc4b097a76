//! Test support: simulated model servers (in-process `fusioninfer-sim`), the picker on
//! loopback ephemeral ports, a real Envoy (from `FUSIONINFER_ENVOY`, `.venv/bin/envoy` or
//! `PATH`) configured from the checked-in `examples/envoy/envoy.yaml`, and an HTTP client.
#![allow(dead_code)]

pub mod grpc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fusioninfer_epp::{Options, RunningEpp};
use fusioninfer_sim::{ModelTokenizer, SimConfig, SimServer};
use serde_json::{Value, json};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fusioninfer-epp has a parent")
        .to_path_buf()
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fusioninfer-epp-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The Envoy binary: `$FUSIONINFER_ENVOY`, else `.venv/bin/envoy` in the workspace (what
/// `make envoy` installs), else `envoy` on `PATH`. Missing: `None` after a loud message, or a
/// panic under `CI=true`.
pub fn envoy_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("FUSIONINFER_ENVOY")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace_root().join(".venv/bin/envoy")])
        .chain(
            std::env::var_os("PATH")
                .map(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join("envoy"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    for candidate in candidates {
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let message = "Envoy not found (set FUSIONINFER_ENVOY, run `make envoy`, or put envoy on PATH)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}: under CI=true this is a failure");
    }
    eprintln!("\n!!!!!!!! SKIPPING: {message} !!!!!!!!\n");
    None
}

/// Simulator settings for fast tests: quick model time, short answers, room for long prompts.
pub fn sim_config() -> SimConfig {
    let mut config = SimConfig {
        port: 0,
        time_scale: 0.05,
        default_max_tokens: 4,
        max_model_len: 1 << 20,
        num_blocks: 1 << 16,
        ..SimConfig::default()
    };
    config.latency.ttft_overhead_ms = 15.0;
    config
}

/// Starts `n` simulators on free loopback ports.
pub async fn start_sims(n: usize, tweak: impl Fn(&mut SimConfig)) -> Vec<SimServer> {
    let tokenizer = Arc::new(ModelTokenizer::fallback());
    let mut servers = Vec::new();
    for _ in 0..n {
        let mut config = sim_config();
        tweak(&mut config);
        servers.push(
            SimServer::start(config, Arc::clone(&tokenizer))
                .await
                .expect("simulator starts"),
        );
    }
    servers
}

/// The endpoints-file text for `addresses`, each with its labels.
pub fn endpoints_yaml(endpoints: &[(SocketAddr, &[(&str, &str)])]) -> String {
    let list: Vec<Value> = endpoints
        .iter()
        .map(|(address, labels)| {
            json!({
                "address": address.to_string(),
                "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "endpoints": list })).expect("serializes")
}

/// A picker on loopback ephemeral ports reading an endpoints file in its scratch directory.
pub struct TestEpp {
    pub epp: RunningEpp,
    pub endpoints_file: PathBuf,
    pub dir: PathBuf,
}

impl TestEpp {
    /// Starts a picker for unlabelled `endpoints`, with extra flags (e.g. `--strategy`).
    pub async fn start(endpoints: &[SocketAddr], extra: &[&str]) -> TestEpp {
        let labelled: Vec<(SocketAddr, &[(&str, &str)])> =
            endpoints.iter().map(|a| (*a, &[][..])).collect();
        TestEpp::start_with_file(&endpoints_yaml(&labelled), extra).await
    }

    /// Starts a picker with the given endpoints-file contents.
    pub async fn start_with_file(contents: &str, extra: &[&str]) -> TestEpp {
        let dir = scratch_dir("epp");
        let endpoints_file = dir.join("endpoints.yaml");
        std::fs::write(&endpoints_file, contents).expect("write endpoints file");
        TestEpp::start_at(dir, endpoints_file, extra).await
    }

    /// Starts a picker reading `endpoints_file` (which may not exist yet).
    pub async fn start_at(dir: PathBuf, endpoints_file: PathBuf, extra: &[&str]) -> TestEpp {
        let mut args: Vec<String> = [
            "fusioninfer-epp",
            "--bind-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--grpc-health-port",
            "0",
            "--metrics-port",
            "0",
            "--endpoints-file-poll-interval",
            "50ms",
            "--seed",
            "7",
            "--endpoints-file",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push(endpoints_file.display().to_string());
        // A strategy (default prefix-cache) becomes the planner's config with a 2 s metrics
        // staleness threshold instead of 200 ms: a test machine busy enough to delay a 50 ms
        // scrape by 200 ms must not make the whole fleet look saturated (429). Saturation by
        // queue depth and unreachable servers behave as in production.
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| a == "--config-file") {
            let strategy = match extra.iter().position(|a| a == "--strategy") {
                Some(i) => {
                    let name = extra.remove(i + 1);
                    extra.remove(i);
                    name.parse().expect("known strategy")
                }
                None => fusioninfer_api::RoutingStrategy::default(),
            };
            let config = dir.join("epp-config.yaml");
            std::fs::write(
                &config,
                format!(
                    "{}\nsaturationDetector:\n  metricsStalenessThreshold: 2s\n",
                    fusioninfer_core::strategy::endpoint_picker_config(strategy)
                ),
            )
            .expect("write config");
            extra.push("--config-file".into());
            extra.push(config.display().to_string());
        }
        args.extend(extra);
        let options = <Options as clap::Parser>::try_parse_from(&args).expect("test flags parse");
        let epp = RunningEpp::start(&options).await.expect("picker starts");
        TestEpp {
            epp,
            endpoints_file,
            dir,
        }
    }

    /// Waits until exactly `n` endpoints are ready.
    pub async fn wait_ready(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.epp.store().ready_addresses().len();
            if ready == n && self.epp.store().is_synced() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{ready} endpoints ready, waited for {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The picker's Prometheus text.
    pub fn metrics_text(&self) -> String {
        self.epp.metrics().render(Some(self.epp.store()))
    }

    /// The value of one sample line of the picker's metrics (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("number"))
    }
}

/// Knobs of the Envoy config derived from `examples/envoy/envoy.yaml`.
#[derive(Clone, Debug)]
pub struct EnvoyKnobs {
    pub epp: SocketAddr,
    pub fallback: Vec<SocketAddr>,
    pub failure_mode_allow: bool,
    pub request_body_mode: &'static str,
    pub response_body_mode: &'static str,
    /// Drop the ext_proc filter (plain round robin over `fallback`, for comparisons).
    pub without_ext_proc: bool,
    /// Send only the request phase to the picker (no response headers/body/trailers).
    pub request_only: bool,
}

impl EnvoyKnobs {
    pub fn new(epp: SocketAddr, fallback: &[SocketAddr]) -> Self {
        EnvoyKnobs {
            epp,
            fallback: fallback.to_vec(),
            failure_mode_allow: false,
            request_body_mode: "FULL_DUPLEX_STREAMED",
            response_body_mode: "FULL_DUPLEX_STREAMED",
            without_ext_proc: false,
            request_only: false,
        }
    }
}

fn socket_address(address: SocketAddr) -> Value {
    json!({"socket_address": {"address": address.ip().to_string(), "port_value": address.port()}})
}

/// The checked-in Envoy config with ports, failure mode, body modes and fallback endpoints
/// replaced; the listener and admin ports become 0 (Envoy picks).
pub fn envoy_config(knobs: &EnvoyKnobs) -> Value {
    let text = std::fs::read_to_string(workspace_root().join("examples/envoy/envoy.yaml"))
        .expect("examples/envoy/envoy.yaml");
    let mut config: Value = serde_saphyr::from_str(&text).expect("the Envoy example is YAML");
    config["admin"]["address"] = socket_address("127.0.0.1:0".parse().unwrap());
    let resources = &mut config["static_resources"];
    resources["listeners"][0]["address"] = socket_address("127.0.0.1:0".parse().unwrap());
    let filters =
        resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
            .as_array_mut()
            .expect("http_filters");
    if knobs.without_ext_proc {
        filters.retain(|f| f["name"] != "envoy.filters.http.ext_proc");
    } else {
        let ext_proc = filters
            .iter_mut()
            .find(|f| f["name"] == "envoy.filters.http.ext_proc")
            .expect("ext_proc filter");
        let typed = &mut ext_proc["typed_config"];
        typed["failure_mode_allow"] = json!(knobs.failure_mode_allow);
        typed["processing_mode"]["request_body_mode"] = json!(knobs.request_body_mode);
        typed["processing_mode"]["response_body_mode"] = json!(knobs.response_body_mode);
        if knobs.request_only {
            typed["processing_mode"]["response_header_mode"] = json!("SKIP");
            typed["processing_mode"]["response_body_mode"] = json!("NONE");
            typed["processing_mode"]["response_trailer_mode"] = json!("SKIP");
        }
    }
    for cluster in resources["clusters"].as_array_mut().expect("clusters") {
        let endpoints: Vec<Value> = match cluster["name"].as_str() {
            Some("epp") => vec![json!({"endpoint": {"address": socket_address(knobs.epp)}})],
            Some("pool_fallback") => knobs
                .fallback
                .iter()
                .map(|a| json!({"endpoint": {"address": socket_address(*a)}}))
                .collect(),
            _ => continue,
        };
        cluster["load_assignment"]["endpoints"] = json!([{ "lb_endpoints": endpoints }]);
    }
    config
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    /// Listener address (`http://{address}` is the OpenAI base).
    pub address: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    pub dir: PathBuf,
}

impl Envoy {
    /// Starts `binary` with `config`, waits until it is ready and reports its listener.
    pub async fn start(binary: &Path, config: &Value) -> Envoy {
        let dir = scratch_dir("envoy");
        let config_path = dir.join("envoy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let admin_path = dir.join("admin-address");
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("envoy starts");
        let mut envoy = Envoy {
            child,
            address: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            dir,
        };
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("envoy exited with {status}: {}", envoy.log());
            }
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(admin) = text.trim().parse::<SocketAddr>()
            {
                envoy.admin = admin;
                if let Ok(response) = client
                    .get(format!("http://{admin}/listeners?format=json"))
                    .send()
                    .await
                    && let Ok(listeners) = response.json::<Value>().await
                    && let Some(port) = listeners["listener_statuses"][0]["local_address"]
                        ["socket_address"]["port_value"]
                        .as_u64()
                    && port != 0
                {
                    let ready = client
                        .get(format!("http://{admin}/ready"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ready {
                        envoy.address = SocketAddr::new(admin.ip(), port as u16);
                        return envoy;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready: {}",
                envoy.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://listener`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the config and log of a failed test for a look; tidy up otherwise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An HTTP client for loopback tests.
pub fn client() -> reqwest::Client {
    fusioninfer_epp::scrape::ensure_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// One answer: status, the simulator that served it, the endpoint the picker chose, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub served_by: Option<String>,
    pub picked: Option<String>,
    pub cached_tokens: Option<u64>,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// POSTs `body` to `url` and reads the whole answer.
pub async fn post(client: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> Answer {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let served_by = header("x-inference-pod");
    let picked = header("x-fusioninfer-endpoint");
    let cached_tokens = header("x-sim-cached-tokens").and_then(|v| v.parse().ok());
    let retry_after = header("retry-after");
    let body = response.text().await.expect("body");
    Answer {
        status,
        served_by,
        picked,
        cached_tokens,
        retry_after,
        body,
    }
}

/// A chat request body.
pub fn chat_body(system: &str, user: &str, stream: bool) -> String {
    json!({
        "model": "sim-model",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": 3,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
    .to_string()
}

/// A completions request body.
pub fn completion_body(prompt: &str, stream: bool) -> String {
    json!({
        "model": "sim-model",
        "prompt": prompt,
        "max_tokens": 3,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
    .to_string()
}

/// Text of roughly `bytes` bytes made of words (the simulator's fallback tokenizer is fast on
/// words, slow on one giant word).
pub fn words(bytes: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let vocabulary = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut text = String::with_capacity(bytes + 16);
    while text.len() < bytes {
        text.push_str(vocabulary[rng.usize(..vocabulary.len())]);
        text.push(' ');
    }
    text
}
