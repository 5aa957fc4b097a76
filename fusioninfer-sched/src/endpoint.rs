//! A model-server endpoint as the scheduler sees it: where it is, what role it has, and the
//! last metrics scraped from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One candidate model server.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Where requests go (`ip:port`); also the endpoint's identity in the scheduler's indexes.
    pub address: SocketAddr,
    /// Pod labels, e.g. [`fusioninfer_api::labels::COMPONENT_TYPE`].
    pub labels: BTreeMap<String, String>,
    /// The last metrics scraped from the server.
    pub metrics: EndpointMetrics,
    /// When [`Endpoint::metrics`] were scraped; `None` if never. Old or missing metrics make
    /// the endpoint count as busy (saturated), never as idle.
    pub metrics_refreshed_at: Option<Instant>,
}

impl Endpoint {
    /// An endpoint with no labels and no metrics yet.
    pub fn new(address: SocketAddr) -> Self {
        Endpoint {
            address,
            labels: BTreeMap::new(),
            metrics: EndpointMetrics::default(),
            metrics_refreshed_at: None,
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the metrics and when they were scraped.
    pub fn with_metrics(mut self, metrics: EndpointMetrics, refreshed_at: Instant) -> Self {
        self.metrics = metrics;
        self.metrics_refreshed_at = Some(refreshed_at);
        self
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// How old the metrics are at `now`; `None` if there are none. A refresh time after `now`
    /// counts as age zero.
    pub fn metrics_age(&self, now: Instant) -> Option<Duration> {
        self.metrics_refreshed_at
            .map(|at| now.saturating_duration_since(at))
    }
}

/// Load and cache state reported by a model server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointMetrics {
    /// Requests queued, not yet scheduled by the engine.
    pub waiting_requests: u32,
    /// Requests in the engine's running batch.
    pub running_requests: u32,
    /// Fraction of KV-cache blocks in use, 0..=1.
    pub kv_cache_usage: f64,
    /// Tokens per KV-cache block (vLLM `block_size`, SGLang `page_size`).
    pub cache_block_size: Option<u32>,
    /// KV-cache blocks on the device (vLLM `num_gpu_blocks`, SGLang `num_pages`).
    pub cache_num_blocks: Option<u32>,
    /// LoRA adapter state; `None` when the server reports none (LoRA disabled).
    pub lora: Option<LoraMetrics>,
}

/// LoRA adapters loaded or waiting to load on a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoraMetrics {
    /// Adapters in use by running requests.
    pub running_adapters: Vec<String>,
    /// Adapters requested by waiting requests.
    pub waiting_adapters: Vec<String>,
    /// How many adapters the server can hold at once (`max_lora`).
    pub max_adapters: u32,
}

impl LoraMetrics {
    /// Whether `adapter` is running.
    pub fn is_running(&self, adapter: &str) -> bool {
        self.running_adapters.iter().any(|a| a == adapter)
    }

    /// Whether `adapter` is waiting to be loaded.
    pub fn is_waiting(&self, adapter: &str) -> bool {
        self.waiting_adapters.iter().any(|a| a == adapter)
    }

    /// Whether one more adapter fits.
    pub fn has_room(&self) -> bool {
        self.running_adapters.len() + self.waiting_adapters.len() < self.max_adapters as usize
    }
}
