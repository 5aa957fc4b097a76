//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `fusioninfer_operator_reconciles_total` | counter | reconciles finished, successful or not |
//! | `fusioninfer_operator_reconcile_errors_total{error}` | counter | failed reconciles by [`Error::metric_label`] |
//! | `fusioninfer_operator_reconcile_duration_seconds` | histogram | time per reconcile |
//! | `fusioninfer_operator_writes_total{operation}` | counter | `apply`, `delete`, `status` and `event` requests sent |
//! | `fusioninfer_operator_leader` | gauge | 1 while this replica holds the leader lease |
//!
//! The write counter makes "an unchanged spec makes no writes" observable in a live cluster.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    operation: &'static str,
}

/// A kind of write the operator sends to the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// A server-side apply of a child.
    Apply,
    /// A delete of a pruned child.
    Delete,
    /// A status write of an InferenceService.
    Status,
    /// A published Kubernetes Event.
    Event,
}

impl Write {
    fn label(self) -> &'static str {
        match self {
            Write::Apply => "apply",
            Write::Delete => "delete",
            Write::Status => "status",
            Write::Event => "event",
        }
    }
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    writes: Family<WriteLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric (all start at zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fusioninfer_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 5 ms … ~20 s: a no-op reconcile is a handful of list calls; a slow API server shows
        // up in the upper buckets.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        let writes = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles of InferenceServices finished, successful or not",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind of error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time taken by one reconcile",
            duration.clone(),
        );
        registry.register(
            "writes",
            "Write requests sent to the API server, by operation",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader-election lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            writes,
            leader,
        }
    }

    /// Records one finished reconcile.
    pub fn reconciled(&self, took: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    error: error.metric_label(),
                })
                .inc();
        }
    }

    /// Records one write request.
    pub fn wrote(&self, write: Write) {
        self.writes
            .get_or_create(&WriteLabels {
                operation: write.label(),
            })
            .inc();
    }

    /// How many writes of this kind were sent so far.
    pub fn writes(&self, write: Write) -> u64 {
        self.writes
            .get_or_create(&WriteLabels {
                operation: write.label(),
            })
            .get()
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::new();
        metrics.reconciled(Duration::from_millis(20), None);
        metrics.reconciled(
            Duration::from_millis(30),
            Some(&Error::Timeout(Duration::from_secs(1))),
        );
        metrics.wrote(Write::Apply);
        metrics.set_leader(true);
        let text = metrics.encode();
        for line in [
            "fusioninfer_operator_reconciles_total 2",
            "fusioninfer_operator_reconcile_errors_total{error=\"timeout\"} 1",
            "fusioninfer_operator_reconcile_duration_seconds_count 2",
            "fusioninfer_operator_writes_total{operation=\"apply\"} 1",
            "fusioninfer_operator_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
