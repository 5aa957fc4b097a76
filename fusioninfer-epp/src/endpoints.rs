//! The endpoint set: what the sources say exists ([`EndpointSpec`]), and the ready endpoints
//! with their latest metrics that the scheduler picks from ([`EndpointStore`]).
//!
//! An endpoint is *ready* while its last metrics scrape succeeded. Endpoints whose scrapes
//! fail (or that have not been scraped yet) are left out of the scheduler's candidates, so a
//! dead server stops receiving traffic one scrape after it dies and a pool of only dead servers
//! answers 503 (no ready endpoint) rather than 429. Ready endpoints whose metrics grow old
//! (a slow scrape) stay candidates; the scheduler's saturation detector counts them as busy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use fusioninfer_sched::metrics::ModelServer;
use fusioninfer_sched::{Endpoint, EndpointMetrics};
use tokio::sync::watch;

/// Label naming a pod's inference engine (llm-d's key; values `vllm`, `sglang`).
pub const ENGINE_TYPE_LABEL: &str = "llm-d.ai/engine-type";
/// The Gateway API Inference Extension's older key for the same, read when
/// [`ENGINE_TYPE_LABEL`] is absent.
pub const LEGACY_ENGINE_TYPE_LABEL: &str = "inference.networking.k8s.io/engine-type";

/// The model-server engine behind an endpoint, which decides the metric names read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EngineType {
    /// vLLM (the default).
    #[default]
    Vllm,
    /// SGLang.
    Sglang,
}

impl EngineType {
    /// The engine named by an endpoint's labels: [`ENGINE_TYPE_LABEL`], else
    /// [`LEGACY_ENGINE_TYPE_LABEL`], else vLLM. Unknown values count as vLLM.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> EngineType {
        let value = labels
            .get(ENGINE_TYPE_LABEL)
            .or_else(|| labels.get(LEGACY_ENGINE_TYPE_LABEL));
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("sglang") => EngineType::Sglang,
            _ => EngineType::Vllm,
        }
    }

    /// The [`ModelServer`] a scrape of this engine must come from.
    pub fn model_server(self) -> ModelServer {
        match self {
            EngineType::Vllm => ModelServer::Vllm,
            EngineType::Sglang => ModelServer::Sglang,
        }
    }
}

/// One endpoint as a source describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointSpec {
    /// Where requests go (`ip:port`).
    pub address: SocketAddr,
    /// Labels (pod labels in Kubernetes); role filters and the engine type read them.
    pub labels: BTreeMap<String, String>,
    /// Where `/metrics` is scraped when not at `address`.
    pub metrics_address: Option<SocketAddr>,
    /// The ZMQ address of the endpoint's KV-event publisher (`tcp://ip:port`), when known.
    pub kv_events_address: Option<String>,
}

impl EndpointSpec {
    /// An endpoint at `address` with no labels.
    pub fn new(address: SocketAddr) -> Self {
        EndpointSpec {
            address,
            labels: BTreeMap::new(),
            metrics_address: None,
            kv_events_address: None,
        }
    }

    /// The engine named by the labels.
    pub fn engine(&self) -> EngineType {
        EngineType::from_labels(&self.labels)
    }
}

/// What changed when a source delivered a new endpoint list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointChanges {
    /// Endpoints that are new, or whose labels or metrics address changed.
    pub upserted: Vec<EndpointSpec>,
    /// Addresses that are gone (or changed; they appear in `upserted` too).
    pub removed: Vec<SocketAddr>,
}

impl EndpointChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// The endpoints the sources know and the ready ones the scheduler picks from.
#[derive(Debug)]
pub struct EndpointStore {
    known: RwLock<BTreeMap<SocketAddr, EndpointSpec>>,
    ready: RwLock<Vec<Endpoint>>,
    synced: watch::Sender<bool>,
}

impl Default for EndpointStore {
    fn default() -> Self {
        EndpointStore {
            known: RwLock::default(),
            ready: RwLock::default(),
            synced: watch::channel(false).0,
        }
    }
}

impl EndpointStore {
    /// An empty store that has not heard from its source yet.
    pub fn new() -> Arc<Self> {
        Arc::new(EndpointStore::default())
    }

    /// Replaces the known endpoints with `endpoints` (duplicates: the last wins) and marks the
    /// store synced. Returns what changed. New endpoints become ready after their first
    /// successful scrape; removed ones leave the ready set at once.
    pub fn set_endpoints(&self, endpoints: Vec<EndpointSpec>) -> EndpointChanges {
        let mut next: BTreeMap<SocketAddr, EndpointSpec> = BTreeMap::new();
        for endpoint in endpoints {
            next.insert(endpoint.address, endpoint);
        }
        let mut changes = EndpointChanges::default();
        {
            let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
            for (address, old) in known.iter() {
                if next.get(address) != Some(old) {
                    changes.removed.push(*address);
                }
            }
            for (address, new) in &next {
                if known.get(address) != Some(new) {
                    changes.upserted.push(new.clone());
                }
            }
            *known = next;
        }
        if !changes.removed.is_empty() {
            let mut ready = self.ready.write().unwrap_or_else(|e| e.into_inner());
            ready.retain(|e| !changes.removed.contains(&e.address));
        }
        self.synced.send_replace(true);
        changes
    }

    /// Forgets every endpoint and marks the store not synced (e.g. the InferencePool is gone).
    pub fn clear_unsynced(&self) -> EndpointChanges {
        let changes = self.set_endpoints(Vec::new());
        self.synced.send_replace(false);
        changes
    }

    /// Whether the source has delivered an endpoint list (possibly empty).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Follows [`EndpointStore::is_synced`].
    pub fn subscribe_synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Every known endpoint, ready or not.
    pub fn known(&self) -> Vec<EndpointSpec> {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Addresses of every known endpoint.
    pub fn known_addresses(&self) -> Vec<SocketAddr> {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// The spec of a known endpoint.
    pub fn spec(&self, address: SocketAddr) -> Option<EndpointSpec> {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&address)
            .cloned()
    }

    /// Records a successful scrape: the endpoint (if still known) becomes or stays ready with
    /// these metrics. Returns whether it just became ready.
    pub fn record_metrics(
        &self,
        address: SocketAddr,
        metrics: EndpointMetrics,
        at: Instant,
    ) -> bool {
        let labels = {
            let known = self.known.read().unwrap_or_else(|e| e.into_inner());
            match known.get(&address) {
                Some(spec) => spec.labels.clone(),
                None => return false,
            }
        };
        let mut ready = self.ready.write().unwrap_or_else(|e| e.into_inner());
        if let Some(endpoint) = ready.iter_mut().find(|e| e.address == address) {
            endpoint.metrics = metrics;
            endpoint.metrics_refreshed_at = Some(at);
            return false;
        }
        // Check again under the ready lock's protection against a concurrent removal.
        if !self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&address)
        {
            return false;
        }
        let mut endpoint = Endpoint::new(address).with_metrics(metrics, at);
        endpoint.labels = labels;
        ready.push(endpoint);
        true
    }

    /// Records a failed scrape: the endpoint leaves the ready set. Returns whether it was ready.
    pub fn record_failure(&self, address: SocketAddr) -> bool {
        let mut ready = self.ready.write().unwrap_or_else(|e| e.into_inner());
        let before = ready.len();
        ready.retain(|e| e.address != address);
        ready.len() != before
    }

    /// The ready endpoints, read-locked; schedule while holding it (scrapes wait briefly).
    pub fn ready(&self) -> RwLockReadGuard<'_, Vec<Endpoint>> {
        self.ready.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Addresses of the ready endpoints.
    pub fn ready_addresses(&self) -> Vec<SocketAddr> {
        self.ready().iter().map(|e| e.address).collect()
    }
}

/// One background task per endpoint (a scrape loop, a KV-event subscription): restarted when
/// the endpoint changes, stopped when it leaves or when this set is dropped.
#[derive(Debug, Default)]
pub struct EndpointTasks {
    tasks: std::sync::Mutex<std::collections::HashMap<SocketAddr, tokio::task::JoinHandle<()>>>,
}

impl EndpointTasks {
    /// Stops the tasks of removed and changed endpoints, and starts `start`'s task (if any)
    /// for each new or changed one.
    pub fn apply(
        &self,
        changes: &EndpointChanges,
        mut start: impl FnMut(&EndpointSpec) -> Option<tokio::task::JoinHandle<()>>,
    ) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for address in changes
            .removed
            .iter()
            .chain(changes.upserted.iter().map(|s| &s.address))
        {
            if let Some(task) = tasks.remove(address) {
                task.abort();
            }
        }
        for spec in &changes.upserted {
            if let Some(task) = start(spec) {
                tasks.insert(spec.address, task);
            }
        }
    }

    /// Endpoints with a task.
    pub fn len(&self) -> usize {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no endpoint has a task.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops every task.
    pub fn stop(&self) {
        for (_, task) in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            task.abort();
        }
    }
}

impl Drop for EndpointTasks {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(address: &str, labels: &[(&str, &str)]) -> EndpointSpec {
        EndpointSpec {
            address: address.parse().unwrap(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics_address: None,
            kv_events_address: None,
        }
    }

    #[test]
    fn engine_type_from_labels() {
        assert_eq!(spec("1.1.1.1:1", &[]).engine(), EngineType::Vllm);
        assert_eq!(
            spec("1.1.1.1:1", &[(ENGINE_TYPE_LABEL, "sglang")]).engine(),
            EngineType::Sglang
        );
        assert_eq!(
            spec("1.1.1.1:1", &[(LEGACY_ENGINE_TYPE_LABEL, "SGLang")]).engine(),
            EngineType::Sglang
        );
        assert_eq!(
            spec(
                "1.1.1.1:1",
                &[
                    (ENGINE_TYPE_LABEL, "vllm"),
                    (LEGACY_ENGINE_TYPE_LABEL, "sglang")
                ]
            )
            .engine(),
            EngineType::Vllm
        );
        assert_eq!(
            spec("1.1.1.1:1", &[(ENGINE_TYPE_LABEL, "trt")]).engine(),
            EngineType::Vllm
        );
    }

    #[test]
    fn endpoints_become_ready_on_scrapes_and_leave_on_failures_or_removal() {
        let store = EndpointStore::new();
        assert!(!store.is_synced());
        let a = spec("10.0.0.1:8000", &[("role", "decode")]);
        let b = spec("10.0.0.2:8000", &[]);
        let changes = store.set_endpoints(vec![a.clone(), b.clone()]);
        assert!(store.is_synced());
        assert_eq!(changes.upserted, vec![a.clone(), b.clone()]);
        assert!(store.ready().is_empty(), "not ready before a scrape");

        let now = Instant::now();
        assert!(store.record_metrics(a.address, EndpointMetrics::default(), now));
        assert!(!store.record_metrics(a.address, EndpointMetrics::default(), now));
        assert_eq!(store.ready_addresses(), vec![a.address]);
        assert_eq!(store.ready()[0].label("role"), Some("decode"));
        assert!(!store.record_metrics(
            "10.9.9.9:1".parse().unwrap(),
            EndpointMetrics::default(),
            now
        ));

        store.record_metrics(b.address, EndpointMetrics::default(), now);
        assert!(store.record_failure(a.address));
        assert_eq!(store.ready_addresses(), vec![b.address]);

        // Same list again: no change. A relabelled endpoint is removed and re-added.
        assert!(store.set_endpoints(vec![a.clone(), b.clone()]).is_empty());
        let b2 = spec("10.0.0.2:8000", &[("role", "prefill")]);
        let changes = store.set_endpoints(vec![a.clone(), b2.clone()]);
        assert_eq!(changes.removed, vec![b.address]);
        assert_eq!(changes.upserted, vec![b2]);
        assert!(store.ready().is_empty());

        let changes = store.clear_unsynced();
        assert_eq!(changes.removed.len(), 2);
        assert!(!store.is_synced());
        assert!(store.known().is_empty());
    }

    #[test]
    fn duplicate_addresses_keep_the_last() {
        let store = EndpointStore::new();
        store.set_endpoints(vec![
            spec("10.0.0.1:8000", &[("v", "1")]),
            spec("10.0.0.1:8000", &[("v", "2")]),
        ]);
        let known = store.known();
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].labels["v"], "2");
    }
}
