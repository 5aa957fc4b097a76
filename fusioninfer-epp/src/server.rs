//! Running the picker: the endpoint source, the scrape loop, KV-event subscriptions (when a
//! scheduler plugin reads them), and three servers — ext_proc gRPC
//! (with the health service too), gRPC health, and Prometheus metrics over HTTP.
//!
//! Health services: `liveness` is serving while the process runs; `readiness` and
//! `envoy.service.ext_proc.v3.ExternalProcessor` are serving once the endpoint source has
//! delivered its first list (the InferencePool and its pods were listed, or the endpoints file
//! parsed) — the set may still be empty, in which case requests get 503.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use fusioninfer_kvcache::ModelTokenizer;

use crate::endpoints::EndpointStore;
use crate::ext_proc::{ExtProcService, Picker, PickerSettings};
use crate::kv_events::KvEventSubscriber;
use crate::metrics::EppMetrics;
use crate::options::{Options, OptionsError, SourceKind};
use crate::scrape::{ScrapeSettings, Scraper};
use crate::source::{Discovery, file, kubernetes};

/// gRPC health service name of the ext_proc service.
pub const EXT_PROC_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";
/// Health service reporting whether the process is alive.
pub const LIVENESS: &str = "liveness";
/// Health service reporting whether endpoints are known.
pub const READINESS: &str = "readiness";

/// Why the picker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad options or scheduler configuration.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A port could not be bound.
    #[error("binding {what} on {address}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The tokenizer or chat template did not load.
    #[error(transparent)]
    Tokenizer(#[from] fusioninfer_kvcache::tokenize::TokenizerError),
    /// No Kubernetes client configuration (in-cluster or kubeconfig).
    #[error("Kubernetes client: {0}")]
    Kubernetes(String),
}

/// A running picker. Dropping it does not stop it; call [`RunningEpp::shutdown`].
#[derive(Debug)]
pub struct RunningEpp {
    /// Address of the ext_proc gRPC server.
    pub grpc_address: SocketAddr,
    /// Address of the gRPC health server.
    pub health_address: SocketAddr,
    /// Address of the metrics HTTP server.
    pub metrics_address: SocketAddr,
    store: Arc<EndpointStore>,
    metrics: Arc<EppMetrics>,
    picker: Arc<Picker>,
    discovery: Arc<Discovery>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningEpp {
    /// Starts everything `options` describe on the current tokio runtime. Ports are bound
    /// before this returns (port 0 picks free ones; see the address fields).
    pub async fn start(options: &Options) -> Result<RunningEpp, StartError> {
        let scheduler = Arc::new(options.build_scheduler()?);
        let store = EndpointStore::new();
        let metrics = Arc::new(EppMetrics::new());
        let scraper = Scraper::new(
            Arc::clone(&store),
            Arc::clone(&metrics),
            ScrapeSettings {
                interval: options.refresh_metrics_interval,
                timeout: options.scrape_timeout,
                concurrency: options.scrape_concurrency as usize,
                path: options.model_server_metrics_path.clone(),
                port: options.model_server_metrics_port,
            },
        );
        let feeds = scheduler.kv_event_feeds();
        let tokenizer = if feeds.is_empty() {
            None
        } else {
            let tokenizer = match &options.tokenizer {
                Some(path) => ModelTokenizer::from_file(path, options.chat_template.as_deref())?,
                None => {
                    // Right for simulators (local mode, tests); against real engines no request
                    // key would match what they publish.
                    tracing::warn!(
                        "no --tokenizer (FUSIONINFER_EPP_TOKENIZER): prompts are tokenized with \
                         the simulator's fallback tokenizer, which matches no real model; give \
                         the model's tokenizer.json for KV-event routing against real engines"
                    );
                    ModelTokenizer::fallback()
                }
            };
            tracing::info!(
                tokenizer = tokenizer.description(),
                "tokenizing prompts for KV-event routing"
            );
            Some(Arc::new(tokenizer))
        };
        let subscriber = KvEventSubscriber::new(
            feeds,
            Arc::clone(&metrics),
            matches!(options.source(), SourceKind::Kubernetes { .. }),
        );
        let discovery = Arc::new(
            Discovery::new(Arc::clone(&store), scraper, Arc::clone(&scheduler))
                .with_kv_events(subscriber),
        );
        let picker = Picker::new(
            Arc::clone(&scheduler),
            Arc::clone(&store),
            Arc::clone(&metrics),
            PickerSettings {
                max_body_bytes: options.max_request_body_bytes,
                base_models: options.base_models.clone(),
                tokenizer,
            },
        );

        let bind = |what: &'static str, port: u16| {
            let address = SocketAddr::new(options.bind_address, port);
            async move {
                TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::Bind {
                        what,
                        address,
                        source,
                    })
            }
        };
        let grpc = bind("ext_proc gRPC", options.grpc_port).await?;
        let health = bind("gRPC health", options.grpc_health_port).await?;
        let metrics_listener = bind("metrics", options.metrics_port).await?;
        let local = |l: &TcpListener, what: &'static str| {
            l.local_addr().map_err(|source| StartError::Bind {
                what,
                address: SocketAddr::new(options.bind_address, 0),
                source,
            })
        };
        let grpc_address = local(&grpc, "ext_proc gRPC")?;
        let health_address = local(&health, "gRPC health")?;
        let metrics_address = local(&metrics_listener, "metrics")?;

        let mut background = Vec::new();
        match options.source() {
            SourceKind::File(path) => {
                background.push(tokio::spawn(file::watch(
                    path,
                    options.endpoints_file_poll_interval,
                    Arc::clone(&discovery),
                )));
            }
            SourceKind::Kubernetes { pool, namespace } => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| StartError::Kubernetes(e.to_string()))?;
                background.push(tokio::spawn(kubernetes::watch(
                    client,
                    pool,
                    namespace,
                    Arc::clone(&discovery) as Arc<dyn crate::source::EndpointSink>,
                )));
            }
        }

        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let mut synced = store.subscribe_synced();
        background.push(tokio::spawn(async move {
            loop {
                let status = if *synced.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for service in [READINESS, EXT_PROC_SERVICE] {
                    reporter.set_service_status(service, status).await;
                }
                if synced.changed().await.is_err() {
                    return;
                }
            }
        }));

        let (stop, stopped) = watch::channel(false);
        let signal = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let ext_proc = ExtProcService::new(Arc::clone(&picker)).into_server();
        let mut servers = Vec::new();
        let grpc_health = health_service.clone();
        let rx = stopped.clone();
        servers.push(tokio::spawn(async move {
            // Accepted sockets get TCP_NODELAY here (the builder's flag only applies to
            // listeners tonic binds itself): with Nagle, a body answer split over several
            // writes can wait for a delayed ACK (40 ms).
            let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(ext_proc)
                .add_service(grpc_health)
                .serve_with_incoming_shutdown(incoming, signal(rx))
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "ext_proc server failed");
            }
        }));
        let rx = stopped.clone();
        servers.push(tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(health).with_nodelay(Some(true)),
                    signal(rx),
                )
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "health server failed");
            }
        }));
        let app = crate::metrics::router(Arc::clone(&metrics), Arc::clone(&store));
        let rx = stopped.clone();
        servers.push(tokio::spawn(async move {
            let result = axum::serve(metrics_listener, app)
                .with_graceful_shutdown(signal(rx))
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "metrics server failed");
            }
        }));
        tracing::info!(
            grpc = %grpc_address,
            health = %health_address,
            metrics = %metrics_address,
            "fusioninfer-epp listening"
        );
        Ok(RunningEpp {
            grpc_address,
            health_address,
            metrics_address,
            store,
            metrics,
            picker,
            discovery,
            stop,
            servers,
            background,
        })
    }

    /// The endpoint store (known and ready endpoints).
    pub fn store(&self) -> &Arc<EndpointStore> {
        &self.store
    }

    /// The picker's own metrics.
    pub fn metrics(&self) -> &Arc<EppMetrics> {
        &self.metrics
    }

    /// The shared picker state (scheduler, settings).
    pub fn picker(&self) -> &Arc<Picker> {
        &self.picker
    }

    /// Waits until the servers stop (they stop only through [`RunningEpp::shutdown`] or a
    /// server error).
    pub async fn wait(&mut self) {
        for server in &mut self.servers {
            let _ = server.await;
        }
    }

    /// Stops accepting, gives open ext_proc streams up to `grace` to finish, then stops
    /// everything (servers, source, scrapes).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for background in &self.background {
            background.abort();
        }
        self.discovery.stop();
        for mut server in self.servers {
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                server.abort();
                let _ = server.await;
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before stopping a container); the
/// binaries' cue to shut down gracefully. The SIGTERM handler is installed when this is called,
/// not when the future is first polled, so call it before announcing readiness.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match term {
            Some(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = ctrl_c.await;
            }
        }
    }
}
