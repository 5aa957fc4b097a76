//! `fusioninfer-pd-sidecar`: the decode-side proxy of prefill/decode disaggregation. It listens
//! on the decode pod's serving port, forwards to the engine on an internal port, and runs the
//! NIXL hand-off when the endpoint picker names a prefiller in `x-prefiller-host-port`.
//!
//! In a cluster the planner starts it with `--port 8000 --engine-port 8200 --metrics-port 9091
//! --pool-name P --pool-namespace $(POD_NAMESPACE)`; locally `fusioninfer up` passes
//! `--prefillers 127.0.0.1:8001,…`. Logs go to stderr (`RUST_LOG` filters, `--log-format json`);
//! one line `listening proxy=… metrics=…` goes to stdout once the ports are bound. SIGTERM or
//! Ctrl-C stop accepting and let requests in flight finish (up to `--shutdown-grace`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fusioninfer_epp::logging::LogFormat;
use fusioninfer_pd::{Options, RunningSidecar};

#[derive(Parser, Debug)]
#[command(
    name = "fusioninfer-pd-sidecar",
    version,
    about = "FusionInfer prefill/decode sidecar: runs the NIXL hand-off in front of a decode engine"
)]
struct Args {
    #[command(flatten)]
    options: Options,
    /// How long requests in flight may take to finish after SIGTERM.
    #[arg(long, default_value = "25s", value_parser = fusioninfer_epp::options::parse_duration)]
    shutdown_grace: Duration,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    fusioninfer_epp::logging::init(args.log_format);
    let sidecar = match RunningSidecar::start(&args.options).await {
        Ok(sidecar) => sidecar,
        Err(error) => {
            eprintln!("fusioninfer-pd-sidecar: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The handler goes in before the line is printed: whoever reads it may signal at once.
    let shutdown = fusioninfer_epp::server::shutdown_signal();
    println!(
        "listening proxy={} metrics={}",
        sidecar.address, sidecar.metrics_address
    );
    shutdown.await;
    tracing::info!("shutting down");
    sidecar.shutdown(args.shutdown_grace).await;
    ExitCode::SUCCESS
}
