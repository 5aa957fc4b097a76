//! `fusioninfer-sim`: runs one or more vLLM-faithful simulated model servers.
//!
//! `fusioninfer-sim --replicas 3 --port 8001` serves three independent simulators on ports
//! 8001, 8002 and 8003 from one process. Each prints one `listening` line on stdout.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Parser, ValueEnum};
use fusioninfer_sim::kv_events::EndpointMode;
use fusioninfer_sim::{
    FaultConfig, KvEventsConfig, LatencyConfig, LoraSpec, MetricsFault, ModelTokenizer, SimConfig,
    start_replicas,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Bind,
    Connect,
    Auto,
}

/// A vLLM-faithful model-server simulator (OpenAI API, /metrics, prefix cache, KV events).
#[derive(Parser, Debug)]
#[command(name = "fusioninfer-sim", version)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of the first server (0 = any free port for every replica).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Servers to start on consecutive ports, each with its own engine state.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    replicas: u16,
    /// Served model name.
    #[arg(long, default_value = "sim-model")]
    model: String,
    /// `root` reported by /v1/models (default: the model name).
    #[arg(long)]
    model_root: Option<String>,
    /// Value of the x-inference-pod response header; {host}, {port}, {model} are replaced.
    #[arg(long, default_value = "{host}:{port}")]
    instance: String,
    /// Hugging Face tokenizer.json (else the deterministic fallback tokenizer).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Jinja chat template (default: chat_template.jinja or tokenizer_config.json beside
    /// the tokenizer).
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// KV-cache capacity in blocks.
    #[arg(long, default_value_t = 4096)]
    num_blocks: usize,
    /// Most requests running at once.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// Most requests waiting; more get 429.
    #[arg(long, default_value_t = 1024)]
    max_waiting: usize,
    /// Longest prompt + output.
    #[arg(long, default_value_t = 4096)]
    max_model_len: usize,
    /// Output length cap for chat requests without max_tokens (length drawn from 1..=cap).
    #[arg(long, default_value_t = 128)]
    default_max_tokens: usize,
    /// Fixed part of the time to first token (ms, model time).
    #[arg(long, default_value_t = 15.0)]
    ttft_overhead_ms: f64,
    /// Prefill time per uncached prompt token (µs, model time).
    #[arg(long, default_value_t = 100.0)]
    prefill_us_per_token: f64,
    /// Inter-token latency (ms, model time).
    #[arg(long, default_value_t = 10.0)]
    itl_ms: f64,
    /// Relative slowdown per additional running request.
    #[arg(long, default_value_t = 0.05)]
    running_slowdown: f64,
    /// Fixed cost of a KV transfer for a remote-prefill decode (ms, model time).
    #[arg(long, default_value_t = 5.0)]
    kv_transfer_overhead_ms: f64,
    /// KV-transfer cost per token (µs, model time).
    #[arg(long, default_value_t = 20.0)]
    kv_transfer_us_per_token: f64,
    /// Wall seconds per model second (0.01 = 100× faster; metrics report model time).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Seed for generated tokens, ids and injected failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Enable LoRA (implied by --lora).
    #[arg(long)]
    enable_lora: bool,
    /// Most distinct LoRA adapters in the running batch.
    #[arg(long, default_value_t = 1)]
    max_loras: usize,
    /// LoRA adapter to load at start, NAME=PATH (repeatable).
    #[arg(long = "lora", value_name = "NAME=PATH", action = ArgAction::Append)]
    loras: Vec<String>,
    /// ZMQ endpoint of the KV-event PUB socket, e.g. tcp://127.0.0.1:5557 (replica i uses
    /// port + i).
    #[arg(long)]
    kv_events_endpoint: Option<String>,
    /// KV-event topic ({host}, {port}, {model} are replaced; vLLM's default is empty).
    #[arg(long, default_value = "")]
    kv_events_topic: String,
    /// bind, connect, or auto (vLLM's rule: bind tcp://* and ipc://, else connect).
    #[arg(long, value_enum, default_value = "bind")]
    kv_events_mode: Mode,
    /// remote_host reported in kv_transfer_params (default: --host).
    #[arg(long)]
    kv_side_channel_host: Option<String>,
    /// remote_port reported in kv_transfer_params.
    #[arg(long, default_value_t = 5600)]
    kv_side_channel_port: u16,
    /// Fraction of inference requests to fail (0..=1).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// HTTP status of injected failures.
    #[arg(long, default_value_t = 500)]
    fail_status: u16,
    /// Wall-clock delay added to every inference request (ms, not scaled).
    #[arg(long, default_value_t = 0)]
    extra_delay_ms: u64,
    /// Answer /metrics with 503 (toggle at run time with POST /admin/faults).
    #[arg(long)]
    metrics_unavailable: bool,
}

fn config(args: &Args) -> Result<SimConfig, String> {
    let loras = args
        .loras
        .iter()
        .map(|s| match s.split_once('=') {
            Some((name, path)) if !name.is_empty() => Ok(LoraSpec {
                name: name.into(),
                path: path.into(),
            }),
            _ => Err(format!("--lora expects NAME=PATH, got {s:?}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SimConfig {
        host: args.host.clone(),
        port: args.port,
        model: args.model.clone(),
        model_root: args.model_root.clone(),
        instance: args.instance.clone(),
        block_size: args.block_size,
        num_blocks: args.num_blocks,
        max_num_seqs: args.max_num_seqs,
        max_waiting: args.max_waiting,
        max_model_len: args.max_model_len,
        default_max_tokens: args.default_max_tokens,
        latency: LatencyConfig {
            ttft_overhead_ms: args.ttft_overhead_ms,
            prefill_us_per_token: args.prefill_us_per_token,
            itl_ms: args.itl_ms,
            running_slowdown: args.running_slowdown,
            kv_transfer_overhead_ms: args.kv_transfer_overhead_ms,
            kv_transfer_us_per_token: args.kv_transfer_us_per_token,
        },
        time_scale: args.time_scale,
        seed: args.seed,
        enable_lora: args.enable_lora || !loras.is_empty(),
        max_loras: args.max_loras,
        loras,
        kv_events: args
            .kv_events_endpoint
            .as_ref()
            .map(|endpoint| KvEventsConfig {
                endpoint: endpoint.clone(),
                topic: args.kv_events_topic.clone(),
                mode: match args.kv_events_mode {
                    Mode::Bind => EndpointMode::Bind,
                    Mode::Connect => EndpointMode::Connect,
                    Mode::Auto => EndpointMode::Auto,
                },
            }),
        faults: FaultConfig {
            fail_rate: args.fail_rate,
            fail_status: args.fail_status,
            extra_delay_ms: args.extra_delay_ms,
            metrics: if args.metrics_unavailable {
                MetricsFault::Unavailable
            } else {
                MetricsFault::Ok
            },
        },
        kv_side_channel_host: args.kv_side_channel_host.clone(),
        kv_side_channel_port: args.kv_side_channel_port,
        version: "0.32.0".into(),
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fusioninfer-sim: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let tokenizer = match &args.tokenizer {
        Some(path) => match ModelTokenizer::from_file(path, args.chat_template.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("fusioninfer-sim: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        None => ModelTokenizer::fallback(),
    };
    let servers = match start_replicas(&cfg, args.replicas, Arc::new(tokenizer)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fusioninfer-sim: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    for s in &servers {
        let kv = s
            .kv_events_endpoint()
            .map(|e| format!(" kv-events {e}"))
            .unwrap_or_default();
        println!(
            "fusioninfer-sim listening {} instance {}{kv}",
            s.url(),
            s.replica().instance()
        );
    }
    wait_for_signal().await;
    for s in servers {
        s.shutdown().await;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_config() {
        let args = Args::parse_from([
            "fusioninfer-sim",
            "--port",
            "9000",
            "--lora",
            "a=/x",
            "--kv-events-endpoint",
            "tcp://127.0.0.1:0",
            "--time-scale",
            "0.01",
        ]);
        let cfg = config(&args).unwrap();
        assert_eq!(cfg.port, 9000);
        assert!(cfg.enable_lora);
        assert_eq!(cfg.loras[0].name, "a");
        assert_eq!(cfg.kv_events.unwrap().mode, EndpointMode::Bind);
        cfg_ok(&config(&Args::parse_from(["fusioninfer-sim"])).unwrap());
        assert!(config(&Args::parse_from(["fusioninfer-sim", "--lora", "nope"])).is_err());
    }

    fn cfg_ok(c: &SimConfig) {
        c.validate().unwrap();
    }
}
