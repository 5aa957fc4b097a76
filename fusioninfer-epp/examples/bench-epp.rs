//! Benchmark of the endpoint picker behind a real Envoy (numbers only, nothing asserted).
//!
//! ```sh
//! make bench-epp
//! # = cargo build --release -p fusioninfer-epp-bin
//! #   cargo run --release -p fusioninfer-epp --example bench-epp
//! ```
//!
//! Needs Envoy (`FUSIONINFER_ENVOY`, `.venv/bin/envoy` from `make envoy`, or `PATH`) and the
//! release `fusioninfer-epp` binary (`FUSIONINFER_EPP_BIN`, else next to this example's
//! directory). Model servers are in-process simulators answering instantly (`time_scale` 0),
//! so latencies are the proxies' own. Measured:
//!
//! 1. added latency: the same open-loop request rate through Envoy alone (round robin over
//!    the simulators) and through Envoy + picker (default `prefix-cache` strategy), for small
//!    prompts and for 200 KiB prompts; p50/p90/p99 client latency and the difference;
//! 2. picks per second: (a) the picker alone, driven over gRPC by 64 concurrent ext_proc
//!    streams (headers + body → decision), and (b) requests per second through Envoy + picker
//!    with 32 concurrent clients (the whole stack shares the machine's cores);
//! 3. the picker's resident memory (VmRSS, VmHWM) with 64 endpoints scraped every 50 ms,
//!    after traffic filled its prefix index.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::grpc::{connect, exchange, request_body, request_headers};
use common::*;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use fusioninfer_sim::SimServer;
use futures::StreamExt;

const SMALL_RATE: u64 = 200;
const LARGE_RATE: u64 = 20;
const PHASE: Duration = Duration::from_secs(5);

struct EppProcess {
    child: Child,
    grpc: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for EppProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn epp_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FUSIONINFER_EPP_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/bench-epp -> target/release/fusioninfer-epp
    let path = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("fusioninfer-epp"))
        .expect("target dir");
    assert!(
        path.is_file(),
        "{} missing: run `cargo build --release -p fusioninfer-epp-bin` (or set FUSIONINFER_EPP_BIN)",
        path.display()
    );
    path
}

fn start_epp(endpoints: &[SocketAddr], dir: &std::path::Path, extra: &[&str]) -> EppProcess {
    let file = dir.join("endpoints.yaml");
    let labelled: Vec<(SocketAddr, &[(&str, &str)])> =
        endpoints.iter().map(|a| (*a, &[][..])).collect();
    std::fs::write(&file, endpoints_yaml(&labelled)).unwrap();
    let mut child = Command::new(epp_binary())
        .args([
            "--bind-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--grpc-health-port",
            "0",
        ])
        .args(["--metrics-port", "0", "--seed", "1"])
        .args(extra)
        .arg("--endpoints-file")
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fusioninfer-epp starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    EppProcess {
        grpc: field("grpc="),
        metrics: field("metrics="),
        child,
    }
}

async fn wait_ready(client: &reqwest::Client, epp: &EppProcess, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = client
            .get(format!("http://{}/metrics", epp.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(&format!(
            "fusioninfer_epp_endpoints{{state=\"ready\"}} {n}\n"
        )) {
            return;
        }
        assert!(Instant::now() < deadline, "endpoints never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// User + system CPU time of a process (Linux clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Sends `rate` requests per second for `duration` (open loop); returns each latency.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<String>>,
    rate: u64,
    duration: Duration,
) -> (Latencies, usize) {
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let client = client.clone();
        let url = url.to_owned();
        let body = bodies[i % bodies.len()].clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = client.post(url).body(body).send().await;
            let ok = match response {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (started.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0;
    for task in tasks {
        let (latency, ok) = task.await.unwrap();
        if ok {
            latencies.push(latency);
        } else {
            failures += 1;
        }
    }
    (Latencies(latencies), failures)
}

/// Requests per second with `concurrency` clients for `duration` (closed loop).
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
) -> f64 {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let url = url.to_owned();
        let bodies = Arc::clone(&bodies);
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut i = worker;
            while Instant::now() < deadline {
                let body = bodies[i % bodies.len()].clone();
                i += concurrency;
                if let Ok(r) = client.post(&url).body(body).send().await
                    && r.bytes().await.is_ok()
                {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap();
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn bodies(n: usize, prompt_bytes: usize) -> Arc<Vec<String>> {
    Arc::new(
        (0..n)
            .map(|i| {
                serde_json::json!({
                    "model": "sim-model",
                    "prompt": words(prompt_bytes, i as u64),
                    "max_tokens": 1,
                })
                .to_string()
            })
            .collect(),
    )
}

async fn start_fleet(n: usize) -> Vec<SimServer> {
    start_sims(n, |c| {
        c.time_scale = 0.0;
        c.max_num_seqs = 1024;
        c.max_waiting = 100_000;
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(envoy_binary) = envoy_binary() else {
        eprintln!("bench-epp needs Envoy");
        std::process::exit(2);
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let dir = scratch_dir("bench");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# fusioninfer-epp benchmark ({cores} cores, release build)\n");

    // 1. Added latency at the same request rate.
    let sims = start_fleet(4).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = start_epp(&addresses, &dir, &[]);
    wait_ready(&client, &epp, addresses.len()).await;
    let mut knobs = EnvoyKnobs::new(epp.grpc, &addresses);
    let with_epp = Envoy::start(&envoy_binary, &envoy_config(&knobs)).await;
    knobs.request_only = true;
    let request_only = Envoy::start(&envoy_binary, &envoy_config(&knobs)).await;
    knobs.without_ext_proc = true;
    let alone = Envoy::start(&envoy_binary, &envoy_config(&knobs)).await;

    println!("## Added latency (open loop, same rate, 4 instant simulators)\n");
    println!("| prompt | rate | path | requests | failed | p50 ms | p90 ms | p99 ms |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    let mut added = Vec::new();
    for (label, prompt, rate) in [
        ("small (~100 B)", 100, SMALL_RATE),
        ("200 KiB", 200 * 1024, LARGE_RATE),
    ] {
        let bodies = bodies(64, prompt);
        // Warm both paths (connections, prefix index).
        for envoy in [&alone, &with_epp, &request_only] {
            let url = envoy.url("/v1/completions");
            let _ = open_loop(
                &client,
                &url,
                Arc::clone(&bodies),
                rate,
                Duration::from_secs(1),
            )
            .await;
        }
        let mut p50 = Vec::new();
        for (name, envoy) in [
            ("Envoy alone (round robin)", &alone),
            ("Envoy + EPP (example config)", &with_epp),
            ("Envoy + EPP, request phase only", &request_only),
        ] {
            let url = envoy.url("/v1/completions");
            let (latencies, failed) =
                open_loop(&client, &url, Arc::clone(&bodies), rate, PHASE).await;
            println!(
                "| {label} | {rate}/s | {name} | {} | {failed} | {} | {} | {} |",
                latencies.0.len(),
                ms(latencies.percentile(0.5)),
                ms(latencies.percentile(0.9)),
                ms(latencies.percentile(0.99)),
            );
            p50.push(latencies.percentile(0.5));
        }
        added.push((label, "example config", p50[1].saturating_sub(p50[0])));
        added.push((label, "request phase only", p50[2].saturating_sub(p50[0])));
    }
    println!();
    for (label, variant, delta) in &added {
        println!("- added p50, {label}, {variant}: {} ms", ms(*delta));
    }

    // 2. Picks per second.
    println!("\n## Picks per second\n");
    let grpc = connect(epp.grpc).await;
    let small = bodies(256, 100);
    let count = 20_000usize;
    let cpu_before = cpu_time(epp.child.id());
    let started = Instant::now();
    let results: Vec<bool> = futures::stream::iter(0..count)
        .map(|i| {
            let grpc = grpc.clone();
            let body = small[i % small.len()].clone();
            async move {
                exchange(
                    &grpc,
                    vec![
                        request_headers(
                            "/v1/completions",
                            &[],
                            false,
                            BodySendMode::FullDuplexStreamed,
                        ),
                        request_body(body.as_bytes(), true),
                    ],
                )
                .await
                .is_ok_and(|r| !r.is_empty())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let grpc_rate = count as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu_time(epp.child.id()) - cpu_before;
    let ok = results.iter().filter(|ok| **ok).count();
    println!(
        "- picker alone over gRPC, 64 concurrent streams: **{grpc_rate:.0} picks/s** ({ok}/{count} answered; the load generator shares the cores)"
    );
    println!(
        "- picker CPU per pick: {:.0} µs, i.e. {:.0} picks per CPU-second",
        cpu.as_secs_f64() * 1e6 / count as f64,
        count as f64 / cpu.as_secs_f64().max(1e-9)
    );
    let through = closed_loop(
        &client,
        &with_epp.url("/v1/completions"),
        Arc::clone(&small),
        32,
        PHASE,
    )
    .await;
    let baseline = closed_loop(
        &client,
        &alone.url("/v1/completions"),
        Arc::clone(&small),
        32,
        PHASE,
    )
    .await;
    println!(
        "- through Envoy + picker + simulators, 32 clients: {through:.0} requests/s (Envoy alone: {baseline:.0}/s)"
    );
    drop(with_epp);
    drop(request_only);
    drop(alone);
    drop(epp);
    for sim in sims {
        sim.shutdown().await;
    }

    // 3. Memory with 64 endpoints.
    println!("\n## Memory with 64 endpoints\n");
    let sims = start_fleet(64).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let varied = bodies(2_000, 2_000);
    // The same prefix-cache profile with a smaller per-endpoint LRU, to show where memory goes:
    // the scheduler's index reserves room for `lruCapacityPerServer` blocks per endpoint.
    let small_lru = dir.join("prefix-small-lru.yaml");
    std::fs::write(
        &small_lru,
        fusioninfer_core::strategy::endpoint_picker_config(
            fusioninfer_api::RoutingStrategy::PrefixCache,
        )
        .replace("lruCapacityPerServer: 31250", "lruCapacityPerServer: 2048"),
    )
    .unwrap();
    let small_lru = small_lru.display().to_string();
    for (args, label) in [
        (
            vec!["--strategy", "prefix-cache"],
            "prefix-cache (default, lruCapacityPerServer 31250)",
        ),
        (
            vec!["--config-file", small_lru.as_str()],
            "prefix-cache with lruCapacityPerServer 2048",
        ),
        (
            vec!["--strategy", "round-robin"],
            "round-robin (no prefix index)",
        ),
    ] {
        let epp = start_epp(&addresses, &dir, &args);
        wait_ready(&client, &epp, 64).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (idle, _) = rss_kib(epp.child.id());
        let grpc = connect(epp.grpc).await;
        let _: Vec<bool> = futures::stream::iter(0..10_000usize)
            .map(|i| {
                let grpc = grpc.clone();
                let body = varied[i % varied.len()].clone();
                async move {
                    exchange(
                        &grpc,
                        vec![
                            request_headers(
                                "/v1/completions",
                                &[],
                                false,
                                BodySendMode::FullDuplexStreamed,
                            ),
                            request_body(body.as_bytes(), true),
                        ],
                    )
                    .await
                    .is_ok()
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, hwm) = rss_kib(epp.child.id());
        println!(
            "- {label}: idle with 64 endpoints scraped every 50 ms: VmRSS {:.1} MiB; after 10,000 picks of 2 KB prompts (2,000 distinct): VmRSS {:.1} MiB, peak {:.1} MiB",
            idle as f64 / 1024.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        drop(epp);
    }
    for sim in sims {
        sim.shutdown().await;
    }
}
