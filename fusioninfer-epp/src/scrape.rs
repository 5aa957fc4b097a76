//! The metrics refresh loop: one task per known endpoint scrapes its Prometheus page every
//! interval (with a timeout, at most `concurrency` scrapes in flight across all endpoints),
//! parses it with [`fusioninfer_sched::metrics::parse_metrics`] and records the result in the
//! [`EndpointStore`]. A failed scrape (refused, timed out, non-2xx, unparsable, or the wrong
//! engine's metrics for the endpoint's engine label) takes the endpoint out of the ready set
//! until a scrape succeeds again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fusioninfer_sched::metrics::{ModelServer, parse_metrics};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::endpoints::{EndpointChanges, EndpointSpec, EndpointStore, EndpointTasks};
use crate::metrics::EppMetrics;

/// Scrape settings.
#[derive(Clone, Debug)]
pub struct ScrapeSettings {
    /// Time between two scrapes of one endpoint.
    pub interval: Duration,
    /// Timeout of one scrape.
    pub timeout: Duration,
    /// Most scrapes in flight at once.
    pub concurrency: usize,
    /// Path of the metrics page.
    pub path: String,
    /// Metrics port when it differs from the serving port.
    pub port: Option<u16>,
}

impl Default for ScrapeSettings {
    fn default() -> Self {
        ScrapeSettings {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            concurrency: 32,
            path: "/metrics".into(),
            port: None,
        }
    }
}

/// Runs the per-endpoint scrape tasks on the current tokio runtime.
#[derive(Debug)]
pub struct Scraper {
    shared: Arc<Shared>,
    tasks: EndpointTasks,
}

#[derive(Debug)]
struct Shared {
    store: Arc<EndpointStore>,
    metrics: Arc<EppMetrics>,
    client: reqwest::Client,
    settings: ScrapeSettings,
    permits: Semaphore,
}

/// Makes rustls' `ring` back end the process default before an HTTP client is built.
///
/// The endpoint picker only speaks plain HTTP to model servers, but in a whole-workspace build
/// cargo unifies reqwest's features with a dev-dependency's (`rustls-no-provider`), and with both
/// rustls back ends compiled in rustls cannot pick one: building a client would panic. Installing
/// `ring` (the back end kube already uses) first is harmless everywhere else. Idempotent.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Scraper {
    /// A scraper feeding `store`.
    pub fn new(
        store: Arc<EndpointStore>,
        metrics: Arc<EppMetrics>,
        settings: ScrapeSettings,
    ) -> Scraper {
        ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(1)
            .build()
            .expect("a plain HTTP client builds");
        Scraper {
            shared: Arc::new(Shared {
                store,
                metrics,
                client,
                permits: Semaphore::new(settings.concurrency.max(1)),
                settings,
            }),
            tasks: EndpointTasks::default(),
        }
    }

    /// Starts scraping new endpoints and stops scraping removed ones.
    pub fn apply(&self, changes: &EndpointChanges) {
        self.tasks.apply(changes, |spec| {
            let shared = Arc::clone(&self.shared);
            Some(tokio::spawn(scrape_loop(shared, spec.clone())))
        });
    }

    /// Endpoints being scraped.
    pub fn scraped(&self) -> usize {
        self.tasks.len()
    }

    /// Stops every scrape task.
    pub fn stop(&self) {
        self.tasks.stop();
    }
}

/// The URL scraped for `spec`.
pub fn metrics_url(spec: &EndpointSpec, settings: &ScrapeSettings) -> String {
    let mut address = spec.metrics_address.unwrap_or(spec.address);
    if spec.metrics_address.is_none()
        && let Some(port) = settings.port
    {
        address.set_port(port);
    }
    let path = if settings.path.starts_with('/') {
        settings.path.clone()
    } else {
        format!("/{}", settings.path)
    };
    format!("http://{address}{path}")
}

async fn scrape_loop(shared: Arc<Shared>, spec: EndpointSpec) {
    let url = metrics_url(&spec, &shared.settings);
    let expected = spec.engine().model_server();
    let endpoint = spec.address.to_string();
    let mut ticker = tokio::time::interval(shared.settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let Ok(_permit) = shared.permits.acquire().await else {
            return;
        };
        shared.metrics.scrape();
        match scrape_once(&shared.client, &url, expected).await {
            Ok(metrics) => {
                if shared
                    .store
                    .record_metrics(spec.address, metrics, Instant::now())
                {
                    tracing::info!(%endpoint, "endpoint ready");
                }
                failing = false;
            }
            Err(error) => {
                shared.metrics.scrape_error(&endpoint);
                let was_ready = shared.store.record_failure(spec.address);
                if was_ready || !failing {
                    tracing::warn!(%endpoint, %url, %error, "metrics scrape failed; endpoint not ready");
                } else {
                    tracing::debug!(%endpoint, %error, "metrics scrape failed");
                }
                failing = true;
            }
        }
    }
}

async fn scrape_once(
    client: &reqwest::Client,
    url: &str,
    expected: ModelServer,
) -> Result<fusioninfer_sched::EndpointMetrics, String> {
    let response = client.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            format!("cannot connect: {e}")
        } else {
            e.to_string()
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    let scraped = parse_metrics(&text).map_err(|e| e.to_string())?;
    if scraped.server != expected {
        return Err(format!(
            "expected {expected:?} metrics (engine label), found {:?}",
            scraped.server
        ));
    }
    Ok(scraped.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_urls() {
        let mut spec = EndpointSpec::new("10.0.0.1:8000".parse().unwrap());
        let mut settings = ScrapeSettings::default();
        assert_eq!(
            metrics_url(&spec, &settings),
            "http://10.0.0.1:8000/metrics"
        );
        settings.port = Some(9100);
        settings.path = "stats".into();
        assert_eq!(metrics_url(&spec, &settings), "http://10.0.0.1:9100/stats");
        spec.metrics_address = Some("[::1]:7000".parse().unwrap());
        assert_eq!(metrics_url(&spec, &settings), "http://[::1]:7000/stats");
    }
}
