//! The picker's own Prometheus metrics, served as text on `GET /metrics` of the metrics port.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `fusioninfer_epp_decision_duration_seconds` | histogram | – |
//! | `fusioninfer_epp_decisions_total` | counter | `endpoint` (the primary) |
//! | `fusioninfer_epp_rejections_total` | counter | `reason`: `bad_request`, `body_too_large`, `saturated`, `no_endpoint`, `internal`, `unsupported` |
//! | `fusioninfer_epp_request_body_bytes` | histogram | – |
//! | `fusioninfer_epp_scrapes_total` | counter | – |
//! | `fusioninfer_epp_scrape_errors_total` | counter | `endpoint` |
//! | `fusioninfer_epp_responses_total` | counter | `code` (HTTP status class of routed requests: `2xx`, …, `aborted`) |
//! | `fusioninfer_epp_usage_tokens_total` | counter | `kind`: `prompt`, `completion`, `cached` (from answers' `usage`) |
//! | `fusioninfer_epp_endpoints` | gauge | `state`: `known`, `ready` |
//! | `fusioninfer_epp_kv_index_blocks` | gauge | – (block keys in the KV-event index) |
//! | `fusioninfer_epp_kv_event_messages_total` | counter | `outcome`: `applied`, `gap`, `restart`, `malformed` |
//! | `fusioninfer_epp_kv_events_skipped_total` | counter | – (events not applied: malformed, parent unknown) |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::endpoints::EndpointStore;
use crate::openai::Usage;

type Labels = Vec<(&'static str, String)>;

/// Why the picker answered a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionReason {
    /// 400: the body is not a valid OpenAI request.
    BadRequest,
    /// 413: the body exceeds the limit.
    BodyTooLarge,
    /// 429: every candidate is saturated.
    Saturated,
    /// 503: no ready endpoint.
    NoEndpoint,
    /// 500: a scheduler plugin failed.
    Internal,
    /// 500: the gateway uses a body mode the picker does not support.
    Unsupported,
}

impl RejectionReason {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::BadRequest => "bad_request",
            RejectionReason::BodyTooLarge => "body_too_large",
            RejectionReason::Saturated => "saturated",
            RejectionReason::NoEndpoint => "no_endpoint",
            RejectionReason::Internal => "internal",
            RejectionReason::Unsupported => "unsupported",
        }
    }
}

/// Every metric the picker exports.
#[derive(Debug)]
pub struct EppMetrics {
    registry: Registry,
    decision_duration: Histogram,
    decisions: Family<Labels, Counter>,
    rejections: Family<Labels, Counter>,
    body_bytes: Histogram,
    scrapes: Counter,
    scrape_errors: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    usage_tokens: Family<Labels, Counter>,
    endpoints: Family<Labels, Gauge>,
    kv_index_blocks: Gauge,
    kv_event_messages: Family<Labels, Counter>,
    kv_events_skipped: Counter,
}

impl Default for EppMetrics {
    fn default() -> Self {
        EppMetrics::new()
    }
}

impl EppMetrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fusioninfer_epp");
        // 5 µs .. ~0.7 s
        let decision_duration = Histogram::new(exponential_buckets(5e-6, 2.0, 18));
        registry.register(
            "decision_duration_seconds",
            "Time to pick an endpoint for one request (scheduler call, endpoint lock included)",
            decision_duration.clone(),
        );
        let decisions = Family::<Labels, Counter>::default();
        registry.register(
            "decisions",
            "Requests routed, by primary endpoint",
            decisions.clone(),
        );
        let rejections = Family::<Labels, Counter>::default();
        registry.register(
            "rejections",
            "Requests answered by the picker instead of a model server, by reason",
            rejections.clone(),
        );
        // 64 B .. 64 MiB
        let body_bytes = Histogram::new(exponential_buckets(64.0, 4.0, 11));
        registry.register(
            "request_body_bytes",
            "Size of request bodies seen",
            body_bytes.clone(),
        );
        let scrapes = Counter::default();
        registry.register(
            "scrapes",
            "Model-server metric scrapes attempted",
            scrapes.clone(),
        );
        let scrape_errors = Family::<Labels, Counter>::default();
        registry.register(
            "scrape_errors",
            "Model-server metric scrapes that failed, by endpoint",
            scrape_errors.clone(),
        );
        let responses = Family::<Labels, Counter>::default();
        registry.register(
            "responses",
            "Answers to routed requests, by HTTP status class",
            responses.clone(),
        );
        let usage_tokens = Family::<Labels, Counter>::default();
        registry.register(
            "usage_tokens",
            "Tokens reported in answers' usage, by kind",
            usage_tokens.clone(),
        );
        let endpoints = Family::<Labels, Gauge>::default();
        registry.register(
            "endpoints",
            "Endpoints known to the picker and ready (last scrape succeeded)",
            endpoints.clone(),
        );
        let kv_index_blocks = Gauge::default();
        registry.register(
            "kv_index_blocks",
            "Block keys held by the KV-event index (precise-prefix-cache-scorer)",
            kv_index_blocks.clone(),
        );
        let kv_event_messages = Family::<Labels, Counter>::default();
        registry.register(
            "kv_event_messages",
            "KV-event messages received from model servers, by outcome",
            kv_event_messages.clone(),
        );
        let kv_events_skipped = Counter::default();
        registry.register(
            "kv_events_skipped",
            "KV events not applied to the index (malformed, or parent block unknown)",
            kv_events_skipped.clone(),
        );
        EppMetrics {
            registry,
            decision_duration,
            decisions,
            rejections,
            body_bytes,
            scrapes,
            scrape_errors,
            responses,
            usage_tokens,
            endpoints,
            kv_index_blocks,
            kv_event_messages,
            kv_events_skipped,
        }
    }

    /// Records one KV-event message: its `outcome` label, events skipped, and the index size.
    pub fn kv_event_message(&self, outcome: &'static str, skipped: usize, index_blocks: usize) {
        self.kv_event_messages
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
        self.kv_events_skipped.inc_by(skipped as u64);
        self.kv_index_blocks
            .set(i64::try_from(index_blocks).unwrap_or(i64::MAX));
    }

    /// Records one routing decision.
    pub fn decision(&self, elapsed: Duration, primary: &str) {
        self.decision_duration.observe(elapsed.as_secs_f64());
        self.decisions
            .get_or_create(&vec![("endpoint", primary.to_owned())])
            .inc();
    }

    /// Records the time of a decision that ended in a rejection.
    pub fn decision_time(&self, elapsed: Duration) {
        self.decision_duration.observe(elapsed.as_secs_f64());
    }

    /// Records a rejection.
    pub fn rejection(&self, reason: RejectionReason) {
        self.rejections
            .get_or_create(&vec![("reason", reason.as_str().to_owned())])
            .inc();
    }

    /// Records a request body size.
    pub fn body_bytes(&self, bytes: usize) {
        self.body_bytes.observe(bytes as f64);
    }

    /// Records a scrape attempt.
    pub fn scrape(&self) {
        self.scrapes.inc();
    }

    /// Records a failed scrape.
    pub fn scrape_error(&self, endpoint: &str) {
        self.scrape_errors
            .get_or_create(&vec![("endpoint", endpoint.to_owned())])
            .inc();
    }

    /// Records the answer to a routed request (`status` 0: the stream ended without one).
    pub fn response(&self, status: u16, usage: Option<Usage>) {
        let class = match status {
            100..=599 => format!("{}xx", status / 100),
            _ => "aborted".to_owned(),
        };
        self.responses.get_or_create(&vec![("code", class)]).inc();
        if let Some(usage) = usage {
            let add = |kind: &'static str, n: u64| {
                if n > 0 {
                    self.usage_tokens
                        .get_or_create(&vec![("kind", kind.to_owned())])
                        .inc_by(n);
                }
            };
            add("prompt", usage.prompt_tokens);
            add("completion", usage.completion_tokens);
            add("cached", usage.cached_tokens.unwrap_or(0));
        }
    }

    /// The Prometheus text exposition of every metric, with the endpoint gauges read from
    /// `store` first.
    pub fn render(&self, store: Option<&EndpointStore>) -> String {
        if let Some(store) = store {
            self.endpoints
                .get_or_create(&vec![("state", "known".to_owned())])
                .set(store.known_addresses().len() as i64);
            self.endpoints
                .get_or_create(&vec![("state", "ready".to_owned())])
                .set(store.ready().len() as i64);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// The metrics HTTP app: `GET /metrics`.
pub fn router(metrics: Arc<EppMetrics>, store: Arc<EndpointStore>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            let store = Arc::clone(&store);
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(Some(&store)),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let metrics = EppMetrics::new();
        metrics.decision(Duration::from_micros(12), "10.0.0.1:8000");
        metrics.rejection(RejectionReason::Saturated);
        metrics.body_bytes(1234);
        metrics.scrape();
        metrics.scrape_error("10.0.0.2:8000");
        metrics.response(
            200,
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 2,
                cached_tokens: Some(8),
            }),
        );
        metrics.response(0, None);
        metrics.kv_event_message("gap", 2, 17);
        let store = EndpointStore::new();
        let text = metrics.render(Some(&store));
        for needle in [
            "fusioninfer_epp_decision_duration_seconds_count 1",
            "fusioninfer_epp_decisions_total{endpoint=\"10.0.0.1:8000\"} 1",
            "fusioninfer_epp_rejections_total{reason=\"saturated\"} 1",
            "fusioninfer_epp_request_body_bytes_sum 1234",
            "fusioninfer_epp_scrapes_total 1",
            "fusioninfer_epp_scrape_errors_total{endpoint=\"10.0.0.2:8000\"} 1",
            "fusioninfer_epp_responses_total{code=\"2xx\"} 1",
            "fusioninfer_epp_responses_total{code=\"aborted\"} 1",
            "fusioninfer_epp_usage_tokens_total{kind=\"cached\"} 8",
            "fusioninfer_epp_endpoints{state=\"ready\"} 0",
            "fusioninfer_epp_kv_index_blocks 17",
            "fusioninfer_epp_kv_event_messages_total{outcome=\"gap\"} 1",
            "fusioninfer_epp_kv_events_skipped_total 2",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
