//! `fusioninfer-load`: the load generator behind `make demo` and `make bench`.
//!
//! * `fusioninfer-load demo --url http://127.0.0.1:8080/v1 --model M` sends the demo workload
//!   to a running `fusioninfer up`, prints which server answered each prefix group and the
//!   cached-token ratio, and exits 1 unless routing behaved.
//! * `fusioninfer-load bench -f bench/fleet.yaml --out bench/results` starts a local stack per
//!   routing strategy (simulators, endpoint picker, Envoy), replays the same shared-prefix
//!   workload through each, and writes `bench.md` and `bench.json`.
//!
//! Loopback only: the demo refuses other URLs, the benchmark starts its own stacks on
//! 127.0.0.1. Both are bounded in requests and time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use fusioninfer_api::RoutingStrategy;
use fusioninfer_cli::load::{self, bench, demo};
use fusioninfer_cli::local::up::select_service;
use fusioninfer_cli::local::{
    LocalOptions, LocalPlan, Ports, RunDir, SchedulerOverride, Stack, ToolPaths, Tools,
};
use fusioninfer_core::manifest::parse_inference_services;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "fusioninfer-load",
    version,
    about = "Scripted OpenAI workloads for the demo and the routing benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send the demo workload to a running `fusioninfer up` and check the routing.
    Demo {
        /// OpenAI base URL (loopback).
        #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
        url: String,
        /// Model name to request (default: the first of `GET /v1/models`).
        #[arg(long)]
        model: Option<String>,
        /// Wait up to this many seconds for the URL to answer first.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Least acceptable cached-token ratio.
        #[arg(long, default_value_t = demo::Criteria::default().min_cached_ratio)]
        min_cached_ratio: f64,
        /// Most servers one prefix group may touch.
        #[arg(long, default_value_t = demo::Criteria::default().max_servers_per_group)]
        max_servers_per_group: usize,
    },
    /// Compare routing strategies on a simulator fleet through Envoy.
    Bench {
        /// The fleet: an InferenceService (its serving roles and simulator flags are used; the
        /// router role's strategy is replaced by each strategy in turn).
        #[arg(short = 'f', long, default_value = "bench/fleet.yaml")]
        file: PathBuf,
        /// EndpointPickerConfig of the prefix-only strategy.
        #[arg(long, default_value = "bench/prefix-only.yaml")]
        prefix_only_config: PathBuf,
        /// Directory for bench.md and bench.json.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// First of the ports the stacks use (gateway, admin, picker ×3, then model servers
        /// from PORT_BASE+20).
        #[arg(long, default_value_t = 18080)]
        port_base: u16,
        /// Requests per strategy.
        #[arg(long, default_value_t = bench::Workload::default().requests)]
        requests: usize,
        /// Requests in flight, one run of every strategy per value.
        #[arg(long, value_delimiter = ',', default_values_t = [12usize, 24])]
        concurrency: Vec<usize>,
        /// Distinct system prompts.
        #[arg(long, default_value_t = bench::Workload::default().groups)]
        groups: usize,
        /// Seed of the workload and of the picker's tie breaks.
        #[arg(long, default_value_t = bench::Workload::default().seed)]
        seed: u64,
        /// Time limit for sending one strategy's requests (s).
        #[arg(long, default_value_t = 120)]
        time_limit: u64,
        /// Only these strategies (round-robin, queue-only, prefix-only, prefix+load, kv-aware).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The simulator binary.
        #[arg(long)]
        simulator: Option<PathBuf>,
        /// The endpoint picker binary.
        #[arg(long)]
        epp: Option<PathBuf>,
        /// The Envoy binary.
        #[arg(long)]
        envoy: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Demo {
            url,
            model,
            wait,
            min_cached_ratio,
            max_servers_per_group,
        } => run_demo(
            &url,
            model,
            Duration::from_secs(wait),
            demo::Criteria {
                max_servers_per_group,
                min_cached_ratio,
            },
        ),
        Command::Bench {
            file,
            prefix_only_config,
            out,
            port_base,
            requests,
            concurrency,
            groups,
            seed,
            time_limit,
            only,
            simulator,
            epp,
            envoy,
        } => run_bench(BenchArgs {
            file,
            prefix_only_config,
            out,
            port_base,
            concurrency,
            workload: bench::Workload {
                requests,
                groups,
                seed,
                ..bench::Workload::default()
            },
            time_limit: Duration::from_secs(time_limit),
            only,
            tools: ToolPaths {
                simulator,
                epp,
                envoy,
                pd_sidecar: None,
            },
        }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn run_demo(
    url: &str,
    model: Option<String>,
    wait: Duration,
    criteria: demo::Criteria,
) -> Result<ExitCode, String> {
    let base = load::LoopbackUrl::parse(url)?;
    let url = url.trim_end_matches('/').to_owned();
    let rt = runtime();
    let served = rt.block_on(async {
        let start = Instant::now();
        loop {
            match load::http::request("GET", &base, "/models", None).await {
                Ok(r) if r.status == 200 => {
                    let body = r.bytes().await?;
                    let models: serde_json::Value =
                        serde_json::from_slice(&body).map_err(|e| format!("{url}/models: {e}"))?;
                    return Ok::<_, String>(models["data"][0]["id"].as_str().map(str::to_owned));
                }
                _ if start.elapsed() >= wait => {
                    return Err(format!("{url} did not answer within {wait:?}"));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })?;
    let model = model
        .or(served)
        .ok_or_else(|| format!("{url}/models lists no model; pass --model"))?;
    let model = model.as_str();
    println!(
        "sending {} requests for {model} to {url}: {} prefix groups × {} (a ~{}-word system prompt each), the first of each group alone, then 4 at a time; half streamed",
        demo::GROUPS.len() * demo::PER_GROUP,
        demo::GROUPS.len(),
        demo::PER_GROUP,
        demo::SYSTEM_WORDS,
    );
    let start = Instant::now();
    let outcomes = rt.block_on(demo::send_all(&base, model));
    println!("answered in {:.1}s\n", start.elapsed().as_secs_f64());
    let report = demo::report(&outcomes, criteria);
    print!("{}", report.text);
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct BenchArgs {
    file: PathBuf,
    prefix_only_config: PathBuf,
    out: PathBuf,
    port_base: u16,
    concurrency: Vec<usize>,
    workload: bench::Workload,
    time_limit: Duration,
    only: Vec<String>,
    tools: ToolPaths,
}

fn run_bench(args: BenchArgs) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("reading {}: {e}", args.file.display()))?;
    let isvc = select_service(
        parse_inference_services(&text).map_err(|e| format!("{}: {e}", args.file.display()))?,
        None,
    )?;
    let prefix_only = std::fs::read_to_string(&args.prefix_only_config)
        .map_err(|e| format!("reading {}: {e}", args.prefix_only_config.display()))?;
    let strategies: Vec<(&str, &str, SchedulerOverride)> = vec![
        (
            "round-robin",
            "planner strategy round-robin",
            SchedulerOverride::Strategy(RoutingStrategy::RoundRobin),
        ),
        (
            "queue-only",
            "planner strategy queue-size (queue-scorer only)",
            SchedulerOverride::Strategy(RoutingStrategy::QueueSize),
        ),
        (
            "prefix-only",
            "prefix-cache-scorer alone (bench/prefix-only.yaml)",
            SchedulerOverride::Config {
                name: "prefix-only".to_owned(),
                text: prefix_only,
            },
        ),
        (
            "prefix+load",
            "planner strategy prefix-cache (default): prefix 3, queue 2, KV 2",
            SchedulerOverride::Strategy(RoutingStrategy::PrefixCache),
        ),
        (
            "kv-aware",
            "planner strategy kv-aware: precise prefix from KV events 3, queue 2, KV 2",
            SchedulerOverride::Strategy(RoutingStrategy::KvAware),
        ),
    ];
    let strategies: Vec<_> = strategies
        .into_iter()
        .filter(|(name, _, _)| args.only.is_empty() || args.only.iter().any(|o| o == name))
        .collect();
    if strategies.is_empty() {
        return Err("--only names no known strategy".to_owned());
    }
    let base = args.port_base;
    let ports = Ports {
        gateway: base,
        gateway_admin: base + 1,
        epp_grpc: base + 2,
        epp_health: base + 3,
        epp_metrics: base + 4,
        first_backend: base + 20,
    };
    let options = |scheduler: SchedulerOverride| LocalOptions {
        ports: ports.clone(),
        scheduler: Some(scheduler),
        epp_seed: Some(args.workload.seed),
        ..LocalOptions::default()
    };
    let first_plan =
        LocalPlan::new(&isvc, &options(strategies[0].2.clone())).map_err(|e| e.to_string())?;
    let tools = Tools::find(&first_plan, &args.tools).map_err(|e| e.to_string())?;
    let servers = first_plan.backends().count();
    let model = first_plan.model().to_owned();
    let all_flags: Vec<String> = first_plan
        .backends()
        .next()
        .and_then(|b| match &b.launch {
            Some(fusioninfer_cli::local::Launch::Simulator(args)) => Some(args.clone()),
            _ => None,
        })
        .ok_or("the bench fleet must be simulated")?;
    // The fleet's own flags: what follows the ones `up` sets (--host, --port, --model, --instance).
    let sim_flags: Vec<String> = all_flags.iter().skip(8).cloned().collect();
    let flag = |name: &str| {
        sim_flags
            .iter()
            .position(|a| a == name)
            .and_then(|i| sim_flags.get(i + 1))
            .cloned()
    };
    let block_size: usize = flag("--block-size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let jobs = bench::jobs(&args.workload);
    let w = &args.workload;
    let levels: Vec<String> = args.concurrency.iter().map(ToString::to_string).collect();
    println!(
        "bench: {} strategies × {} requests ({} prefix groups, Zipf {}, ~{} words of system prompt) at {} in flight, on {servers} simulators ({})",
        strategies.len(),
        jobs.len(),
        w.groups,
        w.zipf_s,
        w.system_words,
        levels.join(" and "),
        sim_flags.join(" ")
    );

    let rt = runtime();
    let mut oracle: Option<(Vec<u64>, u64)> = None;
    let mut results = Vec::new();
    let runs: Vec<(usize, &(&str, &str, SchedulerOverride))> = args
        .concurrency
        .iter()
        .flat_map(|c| strategies.iter().map(move |s| (*c, s)))
        .collect();
    for (concurrency, (name, description, scheduler)) in runs {
        let plan = LocalPlan::new(&isvc, &options(scheduler.clone())).map_err(|e| e.to_string())?;
        let first_backend = plan
            .backends()
            .next()
            .map(|b| b.address)
            .ok_or("no server")?;
        let base_url = load::LoopbackUrl::parse(&plan.base_url())?;
        let mut stack = Stack::start(plan, &tools, RunDir::Temporary).map_err(|e| e.to_string())?;
        let ready = stack
            .wait_ready(Duration::from_secs(60), &|| false, &mut |_| {})
            .map_err(|e| format!("{name}: {e}"))?;
        if oracle.is_none() {
            let tokens = rt.block_on(tokenize_all(first_backend, &model, &jobs))?;
            let groups: Vec<usize> = jobs.iter().map(|j| j.group).collect();
            let per_request = bench::oracle_cached(&tokens, &groups, block_size);
            let working_set: u64 = {
                let mut seen = std::collections::BTreeMap::new();
                for (t, g) in tokens.iter().zip(&groups) {
                    seen.entry(g).or_insert(t.len() as u64);
                }
                seen.values().sum()
            };
            oracle = Some((per_request, working_set));
        }
        let start = Instant::now();
        let outcomes = rt.block_on(load::run(
            &base_url,
            &model,
            &jobs,
            concurrency,
            args.time_limit,
        ));
        let seconds = start.elapsed().as_secs_f64();
        let (per_request, _) = oracle.as_ref().expect("computed above");
        let result = bench::StrategyResult::new(
            name,
            description,
            concurrency,
            &outcomes,
            per_request,
            seconds,
            servers,
        );
        println!(
            "  {concurrency:>2} in flight  {name:<12} ready in {:.1}s, {}/{} ok in {seconds:.1}s: hit rate {:.3} ({:.0} % of oracle), TTFT p50 {:.0} ms model / {:.0} ms wall",
            ready.as_secs_f64(),
            result.ok,
            result.requests,
            result.hit_rate,
            100.0 * result.of_oracle(),
            result.ttft_model_ms.0,
            result.ttft_wall_ms.0,
        );
        if let Some(bad) = outcomes.iter().find(|o| !o.ok()) {
            println!(
                "    first failure: request {} status {} {}",
                bad.index,
                bad.status,
                bad.error.as_deref().unwrap_or("")
            );
        }
        stack.stop(Duration::from_secs(5), &|| false, false);
        results.push(result);
    }

    let (_, working_set_tokens) = oracle.expect("at least one strategy ran");
    let num_blocks: usize = flag("--num-blocks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let table = bench::markdown_table(&results);
    let setup = format!(
        "{servers} simulators (`{}`), block size {block_size}, {num_blocks} KV blocks each = {} tokens per server, {} in the fleet; \
unique working set (the {} system prompts with the chat template) {working_set_tokens} tokens = {:.1}× one server's cache, {:.2}× the fleet's. \
{} requests per run, Zipf({}) group popularity, {} in flight (closed loop), every request streamed with {} output tokens, seed {}; \
every run starts a fresh stack (empty caches).",
        sim_flags.join(" "),
        num_blocks * block_size,
        num_blocks * block_size * servers,
        w.groups,
        working_set_tokens as f64 / (num_blocks * block_size) as f64,
        working_set_tokens as f64 / (num_blocks * block_size * servers) as f64,
        jobs.len(),
        w.zipf_s,
        levels.join(" or "),
        w.max_tokens,
        w.seed,
    );
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    let md = format!(
        "# Routing benchmark\n\nGenerated by `make bench` (`fusioninfer-load bench`). {setup}\n\n{table}\n\
TTFT (model) = the simulator's `x-sim-queue-ms` + `x-sim-first-token-ms`: queueing and prefill in model time, independent of \
how busy this machine is. TTFT (wall) = first streamed token as the client saw it, through Envoy and the endpoint picker \
(debug builds on a shared 2-core machine: indicative only). Throughput is wall-clock. Prefix hit rate = Σ cached / Σ prompt \
tokens from the answers' `usage`; the oracle is an ideal router over an unbounded cache (every request finds the longest \
prefix any earlier request had, counted in whole blocks like vLLM). Max share = the busiest server's requests over a fair \
share.\n"
    );
    let json = json!({
        "setup": setup,
        "strategies": results.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
    });
    let md_path = args.out.join("bench.md");
    let json_path = args.out.join("bench.json");
    std::fs::write(&md_path, &md).map_err(|e| format!("writing {}: {e}", md_path.display()))?;
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).expect("JSON") + "\n",
    )
    .map_err(|e| format!("writing {}: {e}", json_path.display()))?;
    println!(
        "\n{setup}\n\n{table}\nwrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    Ok(if results.iter().all(|r| r.ok == r.requests) {
        ExitCode::SUCCESS
    } else {
        eprintln!("some requests failed (see the ok column)");
        ExitCode::FAILURE
    })
}

/// Prompt tokens of every job, from a simulator's `/tokenize` (the ids its cache hashes).
async fn tokenize_all(
    server: std::net::SocketAddr,
    model: &str,
    jobs: &[load::Job],
) -> Result<Vec<Vec<u32>>, String> {
    let url = load::LoopbackUrl::parse(&format!("http://{server}"))?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let response =
            load::http::request("POST", &url, "/tokenize", Some(&job.tokenize_body(model)))
                .await
                .map_err(|e| format!("tokenize: {e}"))?;
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("tokenize: {e}"))?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("tokenize: {e}"))?;
        let tokens = value["tokens"]
            .as_array()
            .ok_or_else(|| format!("tokenize: no tokens in {value}"))?
            .iter()
            .map(|t| t.as_u64().unwrap_or(0) as u32)
            .collect();
        out.push(tokens);
    }
    Ok(out)
}
