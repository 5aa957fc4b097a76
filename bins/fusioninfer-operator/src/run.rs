//! The operator process: serve health and metrics, discover the optional CRDs, wait for the
//! leader lease, reconcile until told to stop (or until the lease is lost), then hand the lease
//! over.
//!
//! Shutdown (SIGTERM from the kubelet, or Ctrl-C) is graceful: no new reconcile starts, the
//! running ones finish, the lease is released so a standby takes over at once, and the HTTP
//! server stops last. Losing the lease ends the process with an error instead, so the replica
//! restarts as a follower and can never act next to the new leader.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fusioninfer_core::plan::PlanOptions;
use fusioninfer_core::reconcile::OPTIONAL_CRDS;
use futures::{FutureExt, StreamExt};
use kube::Client;
use kube::runtime::controller::Config as ControllerConfig;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::controller::{Context, controller, error_policy, reconcile};
use crate::discovery::discover_crds;
use crate::error::Error;
use crate::kinds::InstalledCrds;
use crate::lease::LeaseLock;
use crate::metrics::Metrics;
use crate::server::{ServerState, serve};

/// Everything the process is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Endpoint-picker image put into router Deployments.
    pub epp_image: String,
    /// Prefill/decode sidecar image put into decode pods of `pd-disaggregation` services.
    pub pd_sidecar_image: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub bind: SocketAddr,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal; a standby takes over after that.
    pub lease_duration: Duration,
    /// How many services are reconciled at once.
    pub concurrency: u16,
    /// Longest time one reconcile may take.
    pub reconcile_timeout: Duration,
}

impl Settings {
    /// Time between renewals: a third of the lease, so two renewals may fail before it lapses.
    pub fn renew_period(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Time after the last successful renewal at which a leader whose renewals keep failing
    /// gives up: two thirds of the lease, so it stops before anyone else may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

/// Runs the operator until `shutdown` resolves (graceful, `Ok`) or the lease is lost (`Err`).
pub async fn run(
    settings: Settings,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let shutdown = shutdown.boxed().shared();
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));

    let listener = TcpListener::bind(settings.bind)
        .await
        .map_err(|source| Error::Server {
            addr: settings.bind.to_string(),
            source,
        })?;
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        ServerState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        server_stopped.map(|_| ()),
    ));
    tracing::info!(addr = %settings.bind, "serving /metrics, /healthz and /readyz");

    let result = lead(&settings, client, metrics, &ready, shutdown).await;

    let _ = stop_server.send(());
    match server.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server"),
        Err(e) => tracing::warn!(error = %e, "metrics server task"),
        Ok(Ok(())) => {}
    }
    result
}

type Shutdown = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

async fn lead(
    settings: &Settings,
    client: Client,
    metrics: Arc<Metrics>,
    ready: &AtomicBool,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let Some(installed) = until_shutdown(discover(&client), shutdown.clone()).await else {
        return Ok(());
    };
    ready.store(true, Ordering::Relaxed);

    let mut lock = LeaseLock::new(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_duration,
    );
    tracing::info!(lease = %lock.lease(), identity = %settings.identity, "waiting for leadership");
    let acquire = async {
        loop {
            match lock.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(settings.renew_period()).await;
        }
    };
    if until_shutdown(acquire, shutdown.clone()).await.is_none() {
        return Ok(());
    }
    tracing::info!(lease = %lock.lease(), "leading");
    metrics.set_leader(true);

    let ctx = Arc::new(
        Context::new(
            client.clone(),
            PlanOptions {
                epp_image: settings.epp_image.clone(),
                pd_sidecar_image: settings.pd_sidecar_image.clone(),
            },
            installed,
            metrics.clone(),
            &settings.identity,
        )
        .with_reconcile_timeout(settings.reconcile_timeout),
    );
    let (lost_tx, lost_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (renew_period, renew_deadline) = (settings.renew_period(), settings.renew_deadline());
    let keeper = tokio::spawn(async move {
        let kept = keep_lease(&mut lock, renew_period, renew_deadline, stop_rx).await;
        if kept.is_err() {
            let _ = lost_tx.send(());
        }
        (lock, kept)
    });

    let stop = futures::future::select(shutdown, lost_rx.map(|_| ())).map(|_| ());
    controller(client, &ctx.kinds)
        .with_config(
            ControllerConfig::default()
                .concurrency(settings.concurrency)
                // A starting service changes many pods at once; one reconcile covers a burst.
                .debounce(Duration::from_secs(1)),
        )
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => tracing::debug!(%object, ?action, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "controller"),
            }
        })
        .await;
    tracing::info!("controller stopped");

    let _ = stop_tx.send(true);
    metrics.set_leader(false);
    let (mut lock, kept) = keeper.await.map_err(|e| Error::LostLease(e.to_string()))?;
    kept?;
    match lock.release().await {
        Ok(()) => tracing::info!(lease = %lock.lease(), "released the lease"),
        Err(e) => tracing::warn!(error = %e, "could not release the lease; it will expire"),
    }
    Ok(())
}

/// Discovers the optional CRDs, retrying (1 s doubling to 30 s) while the API server fails.
async fn discover(client: &Client) -> InstalledCrds {
    let mut delay = Duration::from_secs(1);
    loop {
        match discover_crds(client).await {
            Ok(installed) => {
                for crd in &OPTIONAL_CRDS {
                    if installed.contains(crd) {
                        tracing::info!(crd = crd.name, "optional CRD installed");
                    } else {
                        tracing::warn!(
                            crd = crd.name,
                            hint = crd.install_hint,
                            "optional CRD not installed: services needing {} report MissingCRD",
                            crd.kind
                        );
                    }
                }
                return installed;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "CRD discovery failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Renews the lease every `renew_period` until `stop` is set (`Ok`) or leadership is lost
/// (`Err`): another replica holds it, or no renewal succeeded for `renew_deadline`.
pub async fn keep_lease(
    lock: &mut LeaseLock,
    renew_period: Duration,
    renew_deadline: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            _ = tokio::time::sleep(renew_period) => {}
        }
        match lock.try_acquire_or_renew().await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %lock.lease(), "another replica holds the lease");
                return Err(Error::LostLease(lock.lease()));
            }
            Err(e) if renewed.elapsed() >= renew_deadline => {
                tracing::error!(error = %e, "lease renewal kept failing");
                return Err(Error::LostLease(lock.lease()));
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
        }
    }
}

/// `Some(output)` of `work`, or `None` if `shutdown` resolves first.
async fn until_shutdown<T>(work: impl Future<Output = T>, shutdown: Shutdown) -> Option<T> {
    tokio::select! {
        output = work => Some(output),
        () = shutdown => None,
    }
}
