//! The sidecar's command line ([`Options`]) and its two servers ([`RunningSidecar`]): the proxy
//! on the pod's serving port, and on their own port the metrics (`GET /metrics`) and the
//! readiness (`GET /ready`: 503 until the prefill allowlist has synced, so that a fresh decode
//! pod takes no traffic it would refuse).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::routing::get;
use clap::{ArgGroup, Parser};
use fusioninfer_epp::options::parse_duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::allowlist::{Allowlist, watch_pool};
use crate::proxy::{Proxy, ProxySettings};

/// The sidecar's flags. The planner passes `--port {serving port} --engine-port {internal}
/// --metrics-port 9091 --pool-name {pool} --pool-namespace $(POD_NAMESPACE)`; local mode passes
/// `--prefillers` instead of the pool.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "fusioninfer-pd-sidecar",
    version,
    about = "FusionInfer prefill/decode sidecar: runs the NIXL hand-off in front of a decode engine",
    group(ArgGroup::new("allowlist").required(true).args(["pool_name", "prefillers"])),
)]
pub struct Options {
    /// Address the proxy and the metrics server bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The pod's serving port, where clients (the gateway) send requests (0 = any free port).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Host of the local engine.
    #[arg(long, default_value = "127.0.0.1")]
    pub engine_host: IpAddr,
    /// Port of the local engine (the decoder), which the planner moves off the serving port.
    #[arg(long, env = "FUSIONINFER_ENGINE_PORT", default_value_t = 8200)]
    pub engine_port: u16,
    /// Prometheus metrics port (`GET /metrics`; 0 = any free port).
    #[arg(long, default_value_t = 9091)]
    pub metrics_port: u16,
    /// Allowlist from Kubernetes: the prefill pods of this InferencePool.
    #[arg(long, requires = "pool_namespace")]
    pub pool_name: Option<String>,
    /// Namespace of the InferencePool and its pods.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pool_namespace: Option<String>,
    /// Static allowlist: comma-separated `ip:port` of the prefill servers (local mode).
    #[arg(long, value_delimiter = ',', conflicts_with = "pool_name")]
    pub prefillers: Option<Vec<SocketAddr>>,
    /// Limit on one prefill call; past it the decoder prefills itself.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub prefill_timeout: Duration,
    /// Limit on opening a connection to the engine or a prefiller.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Largest request body accepted for a hand-off, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
}

impl Options {
    /// Options for a loopback sidecar with a static allowlist (tests, embedding): any free
    /// ports, default timeouts.
    pub fn local(engine: SocketAddr, prefillers: Vec<SocketAddr>) -> Options {
        Options {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            engine_host: engine.ip(),
            engine_port: engine.port(),
            metrics_port: 0,
            pool_name: None,
            pool_namespace: None,
            prefillers: Some(prefillers),
            prefill_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            max_body_bytes: 64 << 20,
        }
    }
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port could not be bound.
    #[error("binding {what} on {address}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// Where.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No Kubernetes client (outside a cluster without a kubeconfig).
    #[error("connecting to Kubernetes for --pool-name: {0}")]
    Kubernetes(String),
    /// Neither allowlist source was given.
    #[error("one of --pool-name or --prefillers is required")]
    NoAllowlist,
}

/// A started sidecar.
#[derive(Debug)]
pub struct RunningSidecar {
    /// Where the proxy listens.
    pub address: SocketAddr,
    /// Where the metrics are served.
    pub metrics_address: SocketAddr,
    proxy: Arc<Proxy>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

async fn signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}

impl RunningSidecar {
    /// Binds both ports, starts the allowlist source and serves.
    pub async fn start(options: &Options) -> Result<RunningSidecar, StartError> {
        let bind = |port: u16, what: &'static str| async move {
            let address = SocketAddr::new(options.bind_address, port);
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind {
                    what,
                    address,
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind {
                what,
                address,
                source,
            })?;
            Ok::<_, StartError>((listener, local))
        };
        let (listener, address) = bind(options.port, "the proxy").await?;
        let (metrics_listener, metrics_address) = bind(options.metrics_port, "metrics").await?;

        let mut background = Vec::new();
        let allowlist = match (&options.prefillers, &options.pool_name) {
            (Some(list), _) => Allowlist::fixed(list.iter().copied()),
            (None, Some(pool)) => {
                fusioninfer_epp::scrape::ensure_crypto_provider();
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| StartError::Kubernetes(e.to_string()))?;
                let namespace = options
                    .pool_namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_owned());
                let allowlist = Allowlist::default();
                background.push(tokio::spawn(watch_pool(
                    client,
                    pool.clone(),
                    namespace,
                    allowlist.clone(),
                )));
                allowlist
            }
            (None, None) => return Err(StartError::NoAllowlist),
        };
        let proxy = Proxy::new(
            ProxySettings {
                engine: SocketAddr::new(options.engine_host, options.engine_port),
                prefill_timeout: options.prefill_timeout,
                connect_timeout: options.connect_timeout,
                max_body_bytes: options.max_body_bytes,
            },
            allowlist,
        );

        let (stop, stopped) = watch::channel(false);
        let mut servers = Vec::new();
        let app = Router::new()
            .fallback(
                |State(proxy): State<Arc<Proxy>>, request: Request<Body>| async move {
                    proxy.handle(request).await
                },
            )
            .with_state(Arc::clone(&proxy));
        let rx = stopped.clone();
        servers.push(tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(signal(rx))
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "proxy server failed");
            }
        }));
        let metrics_app = Router::new()
            .route(
                "/metrics",
                get(|State(proxy): State<Arc<Proxy>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        proxy.metrics_text(),
                    )
                }),
            )
            .route(
                "/ready",
                get(|State(proxy): State<Arc<Proxy>>| async move {
                    if proxy.allowlist().is_synced() {
                        (axum::http::StatusCode::OK, "ok\n")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "the prefill allowlist has not synced yet\n",
                        )
                    }
                }),
            )
            .with_state(Arc::clone(&proxy));
        servers.push(tokio::spawn(async move {
            let result = axum::serve(metrics_listener, metrics_app)
                .with_graceful_shutdown(signal(stopped))
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "metrics server failed");
            }
        }));
        tracing::info!(proxy = %address, metrics = %metrics_address, engine = %SocketAddr::new(options.engine_host, options.engine_port), "fusioninfer-pd-sidecar listening");
        Ok(RunningSidecar {
            address,
            metrics_address,
            proxy,
            stop,
            servers,
            background,
        })
    }

    /// The proxy (its allowlist and metrics).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Stops accepting, gives requests in flight (streams included) up to `grace` to finish,
    /// then stops everything.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        for mut server in self.servers {
            if tokio::time::timeout_at(deadline, &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
    }
}
