//! Endpoint sources: where the list of model servers comes from. Each source hands complete
//! lists to a [`Discovery`], which updates the [`EndpointStore`], starts and stops scrape tasks,
//! starts and stops KV-event subscriptions, and makes the scheduler forget endpoints that left.
//!
//! * [`mod@file`]: a YAML or JSON file of endpoints, polled for changes (local mode, tests).
//! * [`kubernetes`]: an InferencePool and the ready pods its selector matches.

pub mod file;
pub mod kubernetes;

use std::sync::Arc;

use fusioninfer_sched::Scheduler;

use crate::endpoints::{EndpointSpec, EndpointStore};
use crate::kv_events::KvEventSubscriber;
use crate::scrape::Scraper;

/// Where a source hands its lists: the picker's [`Discovery`], or another consumer of the same
/// pool mapping (the prefill/decode sidecar's allowlist).
pub trait EndpointSink: Send + Sync {
    /// The source's current complete list.
    fn update(&self, endpoints: Vec<EndpointSpec>);
    /// The source lost its object (e.g. the InferencePool was deleted): no endpoints.
    fn lost(&self);
}

impl EndpointSink for Discovery {
    fn update(&self, endpoints: Vec<EndpointSpec>) {
        Discovery::update(self, endpoints);
    }

    fn lost(&self) {
        Discovery::lost(self);
    }
}

/// Applies endpoint lists from a source.
pub struct Discovery {
    store: Arc<EndpointStore>,
    scraper: Scraper,
    scheduler: Arc<Scheduler>,
    kv_events: Option<KvEventSubscriber>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("store", &self.store)
            .field("scraper", &self.scraper)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery feeding `store`, scraping with `scraper`, pruning `scheduler`'s indexes.
    pub fn new(store: Arc<EndpointStore>, scraper: Scraper, scheduler: Arc<Scheduler>) -> Self {
        Discovery {
            store,
            scraper,
            scheduler,
            kv_events: None,
        }
    }

    /// Also subscribes to the endpoints' KV events with `subscriber`.
    pub fn with_kv_events(mut self, subscriber: KvEventSubscriber) -> Self {
        self.kv_events = Some(subscriber);
        self
    }

    /// The source's current complete list. Marks the store synced.
    pub fn update(&self, endpoints: Vec<EndpointSpec>) {
        let changes = self.store.set_endpoints(endpoints);
        self.apply(&changes);
    }

    /// The source lost its object (e.g. the InferencePool was deleted): no endpoints, and
    /// not synced until the next [`Discovery::update`].
    pub fn lost(&self) {
        let changes = self.store.clear_unsynced();
        self.apply(&changes);
    }

    fn apply(&self, changes: &crate::endpoints::EndpointChanges) {
        if changes.is_empty() {
            return;
        }
        self.scraper.apply(changes);
        if let Some(kv_events) = &self.kv_events {
            kv_events.apply(changes);
        }
        if !changes.removed.is_empty() {
            self.scheduler
                .retain_endpoints(&self.store.known_addresses());
        }
        tracing::info!(
            added_or_changed = changes.upserted.len(),
            removed = changes.removed.len(),
            known = self.store.known_addresses().len(),
            "endpoint set changed"
        );
    }

    /// Stops the scrape and subscriber tasks.
    pub fn stop(&self) {
        self.scraper.stop();
        if let Some(kv_events) = &self.kv_events {
            kv_events.stop();
        }
    }
}
