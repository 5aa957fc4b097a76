//! `fusioninfer-operator`: the FusionInfer Kubernetes operator. Thin: flags, logging, the
//! Kubernetes client and the shutdown signal; everything else is in the library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fusioninfer_core::plan::{DEFAULT_EPP_IMAGE, DEFAULT_PD_SIDECAR_IMAGE};
use fusioninfer_operator::run::{Settings, run};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Reconciles FusionInfer InferenceServices into StatefulSets, LeaderWorkerSets, Volcano
/// PodGroups and Gateway API inference routing, and reports their status.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Endpoint-picker image of router roles.
    #[arg(long, default_value = DEFAULT_EPP_IMAGE)]
    epp_image: String,
    /// Prefill/decode sidecar image of decode pods behind a `pd-disaggregation` router.
    #[arg(long, default_value = DEFAULT_PD_SIDECAR_IMAGE)]
    pd_sidecar_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_bind_address: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "fusioninfer-operator")]
    lease_name: String,
    /// Namespace of the leader-election Lease [default: $POD_NAMESPACE, else the client's
    /// default namespace].
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Seconds a lease lasts without renewal (a standby takes over after that).
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// InferenceServices reconciled at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Seconds one reconcile may take before it is abandoned and retried.
    #[arg(long, default_value_t = 60)]
    reconcile_timeout_seconds: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_runtime=warn,kube_client=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            let error = fusioninfer_operator::Error::Config(Box::new(e));
            tracing::error!(error = %error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("fusioninfer-operator-{}", std::process::id()));
    let lease_namespace = args
        .lease_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let settings = Settings {
        epp_image: args.epp_image,
        pd_sidecar_image: args.pd_sidecar_image,
        bind: args.metrics_bind_address,
        lease_namespace,
        lease_name: args.lease_name,
        identity,
        lease_duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
        concurrency: args.concurrency,
        reconcile_timeout: Duration::from_secs(args.reconcile_timeout_seconds.max(1)),
    };
    tracing::info!(
        epp_image = %settings.epp_image,
        pd_sidecar_image = %settings.pd_sidecar_image,
        identity = %settings.identity,
        "starting fusioninfer-operator {}",
        env!("CARGO_PKG_VERSION")
    );
    match run(settings, client, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "operator failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
