//! Which prefill targets the sidecar may call. The EPP names the prefiller in a request header,
//! and headers can be forged by anyone who reaches the decode pod: without a check the sidecar
//! would be an open proxy. Two sources:
//!
//! * a fixed list (`--prefillers`, local mode);
//! * Kubernetes: the ready pods of the decode pod's own InferencePool whose
//!   `fusioninfer.io/component-type` is `prefiller`, at the pool's target ports. The pool →
//!   endpoints mapping and its watch are the endpoint picker's
//!   ([`fusioninfer_epp::source::kubernetes`]), so both always agree on what an endpoint is;
//!   [`prefill_targets`] is the role filter on top, pure and tested.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use fusioninfer_api::labels::COMPONENT_TYPE;
use fusioninfer_epp::EndpointSpec;
use fusioninfer_epp::source::EndpointSink;

/// The `fusioninfer.io/component-type` value of prefill pods.
pub const PREFILLER: &str = "prefiller";

/// The addresses allowed as prefill targets; cheap to clone, shared with the watch. A new
/// list is unsynced (its source has not answered yet) until the first [`Allowlist::set`].
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    addresses: Arc<RwLock<BTreeSet<SocketAddr>>>,
    synced: Arc<AtomicBool>,
}

impl Allowlist {
    /// A list that holds `addresses` (until [`Allowlist::set`]).
    pub fn fixed(addresses: impl IntoIterator<Item = SocketAddr>) -> Allowlist {
        let list = Allowlist::default();
        list.set(addresses.into_iter().collect());
        list
    }

    /// Replaces the whole list; the list is synced from now on.
    pub fn set(&self, addresses: BTreeSet<SocketAddr>) {
        *self.addresses.write().unwrap_or_else(|e| e.into_inner()) = addresses;
        self.synced.store(true, Ordering::Release);
    }

    /// Whether the source has delivered a list (the sidecar's `/ready`): until then every
    /// prefill target would be refused.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether `address` may be called.
    pub fn contains(&self, address: &SocketAddr) -> bool {
        self.addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(address)
    }

    /// How many addresses are allowed.
    pub fn len(&self) -> usize {
        self.addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The prefill targets among a pool's endpoints: those whose pod is a prefiller.
pub fn prefill_targets(endpoints: &[EndpointSpec]) -> BTreeSet<SocketAddr> {
    endpoints
        .iter()
        .filter(|e| e.labels.get(COMPONENT_TYPE).map(String::as_str) == Some(PREFILLER))
        .map(|e| e.address)
        .collect()
}

/// Fed by the endpoint picker's pool watch.
impl EndpointSink for Allowlist {
    fn update(&self, endpoints: Vec<EndpointSpec>) {
        let targets = prefill_targets(&endpoints);
        if targets.len() != self.len() {
            tracing::info!(prefillers = targets.len(), "prefill allowlist changed");
        }
        self.set(targets);
    }

    fn lost(&self) {
        tracing::warn!("InferencePool gone: no prefill target is allowed");
        self.set(BTreeSet::new());
        self.synced.store(false, Ordering::Release);
    }
}

/// Follows the InferencePool `pool` in `namespace` and keeps `allowlist` equal to its ready
/// prefill pods, until the task is dropped. Needs an API server (get/list/watch on pods and
/// inferencepools of the namespace), so only [`prefill_targets`] and the shared mapping are
/// tested.
pub async fn watch_pool(
    client: kube::Client,
    pool: String,
    namespace: String,
    allowlist: Allowlist,
) {
    fusioninfer_epp::source::kubernetes::watch(client, pool, namespace, Arc::new(allowlist)).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fusioninfer_api::inference_pool::{
        EndpointPickerRef, InferencePoolSpec, LabelSelector, Port,
    };
    use fusioninfer_epp::source::kubernetes::pool_endpoints;
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(ip: &str, component: &str, service: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([
                    ("fusioninfer.io/service".to_owned(), service.to_owned()),
                    ("fusioninfer.io/serving".to_owned(), "true".to_owned()),
                    (COMPONENT_TYPE.to_owned(), component.to_owned()),
                ])),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    /// The planner's pool: serving pods of one service, one target port.
    fn pool() -> InferencePoolSpec {
        InferencePoolSpec {
            selector: LabelSelector {
                match_labels: BTreeMap::from([
                    ("fusioninfer.io/service".to_owned(), "svc".to_owned()),
                    ("fusioninfer.io/serving".to_owned(), "true".to_owned()),
                ]),
            },
            target_ports: vec![Port { number: 8000 }],
            app_protocol: None,
            endpoint_picker_ref: EndpointPickerRef::default(),
        }
    }

    #[test]
    fn only_ready_prefill_pods_of_the_pool_are_targets() {
        let pods = [
            pod("10.0.0.1", "prefiller", "svc", true),
            pod("10.0.0.2", "decoder", "svc", true),
            pod("10.0.0.3", "prefiller", "svc", false),
            pod("10.0.0.4", "prefiller", "other-svc", true),
            pod("10.0.0.5", "prefiller", "svc", true),
        ];
        let targets = prefill_targets(&pool_endpoints(&pool(), &pods));
        let expected: BTreeSet<SocketAddr> = ["10.0.0.1:8000", "10.0.0.5:8000"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(targets, expected);
    }

    #[test]
    fn the_sink_replaces_the_list_and_a_lost_pool_empties_it() {
        let watched = Allowlist::default();
        assert!(!watched.is_synced(), "nothing heard from the source yet");
        EndpointSink::update(&watched, Vec::new());
        assert!(watched.is_synced() && watched.is_empty());

        let list = Allowlist::fixed(["10.9.9.9:1".parse().unwrap()]);
        assert!(list.is_synced());
        let pods = [pod("10.0.0.1", "prefiller", "svc", true)];
        EndpointSink::update(&list, pool_endpoints(&pool(), &pods));
        assert!(list.contains(&"10.0.0.1:8000".parse().unwrap()));
        assert!(!list.contains(&"10.9.9.9:1".parse().unwrap()));
        assert!(
            !list.contains(&"10.0.0.1:8001".parse().unwrap()),
            "port matters"
        );
        EndpointSink::lost(&list);
        assert!(list.is_empty());
        assert!(!list.is_synced());
    }
}
