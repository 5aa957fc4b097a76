//! The sidecar's Prometheus metrics, served as text on `GET /metrics` of its own metrics port
//! (the serving port's `/metrics` is the engine's, passed through for the endpoint picker).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `fusioninfer_pd_requests_total` | counter | `mode`: `pd` (header honoured), `passthrough` (no header), `refused` |
//! | `fusioninfer_pd_prefill_requests_total` | counter | `outcome`: `ok`, `client_error` (4xx, returned to the client), `server_error` (5xx), `unreachable`, `timeout`, `no_kv_params` (200 without `kv_transfer_params`) |
//! | `fusioninfer_pd_fallbacks_total` | counter | `reason`: the failed prefill's outcome; the decoder prefilled itself |
//! | `fusioninfer_pd_refusals_total` | counter | `reason`: `not_allowed` (403), `malformed` (400), `body_too_large` (413) |
//! | `fusioninfer_pd_prefill_duration_seconds` | histogram | – (every prefill call, whatever its outcome) |
//! | `fusioninfer_pd_allowed_prefillers` | gauge | – (the allowlist's size at scrape time) |

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// How a prefill call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrefillOutcome {
    /// 2xx with `kv_transfer_params`: the decoder pulls the KV cache.
    Ok,
    /// 4xx: the request itself is wrong; returned to the client as is.
    ClientError,
    /// 5xx (or another non-2xx status): decode locally.
    ServerError,
    /// Connecting or sending failed: decode locally.
    Unreachable,
    /// No complete answer within the prefill timeout: decode locally.
    Timeout,
    /// 2xx without `kv_transfer_params` (an engine without a KV connector): decode locally.
    NoKvParams,
}

impl PrefillOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PrefillOutcome::Ok => "ok",
            PrefillOutcome::ClientError => "client_error",
            PrefillOutcome::ServerError => "server_error",
            PrefillOutcome::Unreachable => "unreachable",
            PrefillOutcome::Timeout => "timeout",
            PrefillOutcome::NoKvParams => "no_kv_params",
        }
    }
}

/// Every metric the sidecar exports.
#[derive(Debug)]
pub struct PdMetrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    prefills: Family<Labels, Counter>,
    fallbacks: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    prefill_duration: Histogram,
    allowed: Gauge,
}

impl Default for PdMetrics {
    fn default() -> Self {
        PdMetrics::new()
    }
}

impl PdMetrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fusioninfer_pd");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests received, by how they were handled",
            requests.clone(),
        );
        let prefills = Family::<Labels, Counter>::default();
        registry.register(
            "prefill_requests",
            "Calls to a remote prefiller, by outcome",
            prefills.clone(),
        );
        let fallbacks = Family::<Labels, Counter>::default();
        registry.register(
            "fallbacks",
            "Requests decoded without remote KV because the prefill failed, by reason",
            fallbacks.clone(),
        );
        let refusals = Family::<Labels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused by the sidecar, by reason",
            refusals.clone(),
        );
        // 1 ms .. ~65 s
        let prefill_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "prefill_duration_seconds",
            "Time from sending the prefill request to its complete answer (or failure)",
            prefill_duration.clone(),
        );
        let allowed = Gauge::default();
        registry.register(
            "allowed_prefillers",
            "Prefill targets currently allowed",
            allowed.clone(),
        );
        PdMetrics {
            registry,
            requests,
            prefills,
            fallbacks,
            refusals,
            prefill_duration,
            allowed,
        }
    }

    /// Counts a request by mode (`pd`, `passthrough`, `refused`).
    pub fn request(&self, mode: &'static str) {
        self.requests.get_or_create(&vec![("mode", mode)]).inc();
    }

    /// Records a prefill call; failures that lead to a local decode also count a fallback.
    pub fn prefill(&self, outcome: PrefillOutcome, elapsed: Duration) {
        self.prefill_duration.observe(elapsed.as_secs_f64());
        self.prefills
            .get_or_create(&vec![("outcome", outcome.as_str())])
            .inc();
        if !matches!(outcome, PrefillOutcome::Ok | PrefillOutcome::ClientError) {
            self.fallbacks
                .get_or_create(&vec![("reason", outcome.as_str())])
                .inc();
        }
    }

    /// Counts a refusal (`not_allowed`, `malformed`, `body_too_large`).
    pub fn refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// The Prometheus text exposition, with the allowlist size as of now.
    pub fn encode(&self, allowed_prefillers: usize) -> String {
        self.allowed
            .set(i64::try_from(allowed_prefillers).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_prefills_count_a_fallback_but_client_errors_do_not() {
        let m = PdMetrics::new();
        m.prefill(PrefillOutcome::Ok, Duration::from_millis(3));
        m.prefill(PrefillOutcome::ServerError, Duration::from_millis(3));
        m.prefill(PrefillOutcome::ClientError, Duration::from_millis(3));
        m.request("pd");
        m.refusal("not_allowed");
        let text = m.encode(2);
        for line in [
            "fusioninfer_pd_prefill_requests_total{outcome=\"ok\"} 1",
            "fusioninfer_pd_prefill_requests_total{outcome=\"server_error\"} 1",
            "fusioninfer_pd_prefill_requests_total{outcome=\"client_error\"} 1",
            "fusioninfer_pd_fallbacks_total{reason=\"server_error\"} 1",
            "fusioninfer_pd_prefill_duration_seconds_count 3",
            "fusioninfer_pd_requests_total{mode=\"pd\"} 1",
            "fusioninfer_pd_refusals_total{reason=\"not_allowed\"} 1",
            "fusioninfer_pd_allowed_prefillers 2",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("reason=\"client_error\""), "{text}");
    }
}
