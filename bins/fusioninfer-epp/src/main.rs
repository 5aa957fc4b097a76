//! `fusioninfer-epp`: FusionInfer's endpoint picker. Envoy (or another ext_proc-capable
//! gateway) asks it which model server each OpenAI request goes to.
//!
//! In a cluster the planner starts it with `--pool-name P --pool-namespace $(POD_NAMESPACE)
//! --config-file /etc/fusioninfer/epp/config.yaml --grpc-port 9002 --grpc-health-port 9003
//! --metrics-port 9090`; locally, `--endpoints-file endpoints.yaml --strategy prefix-cache`.
//! Logs go to stderr (`RUST_LOG` filters, `--log-format json` for JSON lines); one line
//! `listening grpc=… health=… metrics=…` goes to stdout once the ports are bound.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fusioninfer_epp::logging::LogFormat;
use fusioninfer_epp::{Options, RunningEpp};

#[derive(Parser, Debug)]
#[command(
    name = "fusioninfer-epp",
    version,
    about = "FusionInfer endpoint picker (Envoy ext_proc)"
)]
struct Args {
    #[command(flatten)]
    options: Options,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    fusioninfer_epp::logging::init(args.log_format);

    let epp = match RunningEpp::start(&args.options).await {
        Ok(epp) => epp,
        Err(error) => {
            eprintln!("fusioninfer-epp: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The handler goes in before the line is printed: whoever reads it may signal at once.
    let shutdown = fusioninfer_epp::server::shutdown_signal();
    println!(
        "listening grpc={} health={} metrics={}",
        epp.grpc_address, epp.health_address, epp.metrics_address
    );
    shutdown.await;
    tracing::info!("shutting down");
    epp.shutdown(Duration::from_secs(5)).await;
    ExitCode::SUCCESS
}
