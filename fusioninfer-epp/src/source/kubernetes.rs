//! The Kubernetes endpoint source: watch one InferencePool (`--pool-name` in
//! `--pool-namespace`), then the pods its `selector.matchLabels` selects; every ready pod gives
//! one endpoint per `targetPorts` entry (`podIP:port`), with the pod's labels.
//!
//! [`pool_endpoints`] is the whole mapping as a pure function, tested on its own. [`watch`] is
//! the wiring: kube-runtime watchers (list + watch on `inferencepools` and `pods` of the
//! namespace — exactly the verbs of the planner's EPP Role) and a reflector store of the
//! selected pods. It needs an API server, so the tests do not exercise it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use fusioninfer_api::inference_pool::{InferencePool, InferencePoolSpec};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector as reflect};
use tokio::sync::watch as channel;

use crate::endpoints::EndpointSpec;
use crate::source::EndpointSink;

/// Whether a pod takes traffic: not being deleted, phase `Running`, condition `Ready` true,
/// and a pod IP.
pub fn pod_is_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        && status.conditions.as_ref().is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Whether `pod` carries every label of the pool's selector. An empty selector selects
/// nothing (the upstream schema requires at least one label).
pub fn pod_matches(pool: &InferencePoolSpec, pod: &Pod) -> bool {
    let wanted = &pool.selector.match_labels;
    if wanted.is_empty() {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    wanted
        .iter()
        .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
}

/// The endpoints of a pool: for each selected ready pod, `podIP:port` for each target port
/// (invalid ports skipped), with the pod's labels. Sorted by address.
pub fn pool_endpoints<'a>(
    pool: &InferencePoolSpec,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<EndpointSpec> {
    let ports: Vec<u16> = pool
        .target_ports
        .iter()
        .filter_map(|p| u16::try_from(p.number).ok().filter(|&p| p != 0))
        .collect();
    let mut endpoints = Vec::new();
    for pod in pods {
        if !pod_matches(pool, pod) || !pod_is_ready(pod) {
            continue;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        for &port in &ports {
            endpoints.push(EndpointSpec {
                address: SocketAddr::new(ip, port),
                labels: labels.clone(),
                metrics_address: None,
                // Subscribed at the pod IP and the scorer's port (see crate::kv_events).
                kv_events_address: None,
            });
        }
    }
    endpoints.sort();
    endpoints.dedup_by(|a, b| a.address == b.address);
    endpoints
}

/// The label selector string of a pool (`k=v,k=v`), for the pods watch.
pub fn label_selector(pool: &InferencePoolSpec) -> String {
    pool.selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Clone, Debug, PartialEq)]
enum PoolState {
    Unknown,
    Missing,
    Present(InferencePoolSpec),
}

/// Follows the pool and its pods until the task is dropped, handing each new endpoint list to
/// `discovery`. Nothing is handed over until the pool exists and the first pod list has
/// arrived (the picker stays unsynced, not ready); a deleted pool calls
/// [`EndpointSink::lost`].
pub async fn watch(
    client: kube::Client,
    pool: String,
    namespace: String,
    discovery: Arc<dyn EndpointSink>,
) {
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let (state_tx, mut state_rx) = channel::channel(PoolState::Unknown);
    let pool_name = pool.clone();
    let pool_task = tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={pool_name}"));
        let mut events = watcher::watcher(pools, config).default_backoff().boxed();
        let mut seen = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                    seen = true;
                    state_tx.send_replace(PoolState::Present(p.spec));
                }
                Ok(Event::Delete(_)) => {
                    seen = false;
                    state_tx.send_replace(PoolState::Missing);
                }
                Ok(Event::Init) => seen = false,
                Ok(Event::InitDone) => {
                    if !seen {
                        tracing::warn!(pool = %pool_name, "InferencePool not found; waiting for it");
                        state_tx.send_replace(PoolState::Missing);
                    }
                }
                Err(error) => {
                    tracing::warn!(pool = %pool_name, %error, "InferencePool watch error")
                }
            }
        }
    });
    let _abort_pool_task = AbortOnDrop(pool_task);

    loop {
        let state = state_rx.borrow_and_update().clone();
        match state {
            PoolState::Present(spec) => {
                follow_pods(pods.clone(), spec, &mut state_rx, discovery.as_ref()).await;
                if state_rx.has_changed().is_err() {
                    return;
                }
            }
            PoolState::Missing => {
                discovery.lost();
                if state_rx.changed().await.is_err() {
                    return;
                }
            }
            PoolState::Unknown => {
                if state_rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches the pods of `spec`'s selector until the pool goes away or its selector changes.
async fn follow_pods(
    pods: Api<Pod>,
    mut spec: InferencePoolSpec,
    state_rx: &mut channel::Receiver<PoolState>,
    discovery: &dyn EndpointSink,
) {
    let selector = label_selector(&spec);
    tracing::info!(%selector, "watching pool pods");
    let (reader, writer) = reflector::store::<Pod>();
    let config = watcher::Config::default().labels(&selector);
    let mut events = reflect(writer, watcher::watcher(pods, config))
        .default_backoff()
        .boxed();
    let mut synced = false;
    let publish = |spec: &InferencePoolSpec, reader: &Store<Pod>| {
        let pods = reader.state();
        discovery.update(pool_endpoints(spec, pods.iter().map(|p| p.as_ref())));
    };
    loop {
        tokio::select! {
            changed = state_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let state = state_rx.borrow().clone();
                match state {
                    PoolState::Present(next) if next.selector == spec.selector => {
                        spec = next;
                        if synced {
                            publish(&spec, &reader);
                        }
                    }
                    // Selector changed or pool gone: the caller starts over.
                    _ => return,
                }
            }
            event = events.next() => match event {
                None => return,
                Some(Ok(Event::InitDone)) => {
                    synced = true;
                    publish(&spec, &reader);
                }
                Some(Ok(Event::Apply(_) | Event::Delete(_))) if synced => publish(&spec, &reader),
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::warn!(%error, "pod watch error"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use fusioninfer_api::inference_pool::{EndpointPickerRef, LabelSelector, Port};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    pub(crate) fn pool(labels: &[(&str, &str)], ports: &[i32]) -> InferencePoolSpec {
        InferencePoolSpec {
            selector: LabelSelector {
                match_labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            target_ports: ports.iter().map(|&number| Port { number }).collect(),
            app_protocol: None,
            endpoint_picker_ref: EndpointPickerRef::default(),
        }
    }

    pub(crate) fn pod(name: &str, ip: &str, labels: &[(&str, &str)], ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
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

    #[test]
    fn ready_selected_pods_times_target_ports() {
        let spec = pool(&[("app", "m"), ("serving", "true")], &[8000, 8001]);
        let pods = [
            pod(
                "a",
                "10.0.0.2",
                &[("app", "m"), ("serving", "true"), ("role", "decoder")],
                true,
            ),
            pod("b", "10.0.0.1", &[("app", "m"), ("serving", "true")], true),
            pod(
                "not-ready",
                "10.0.0.3",
                &[("app", "m"), ("serving", "true")],
                false,
            ),
            pod("worker", "10.0.0.4", &[("app", "m")], true),
            pod(
                "other",
                "10.0.0.5",
                &[("app", "x"), ("serving", "true")],
                true,
            ),
        ];
        let endpoints = pool_endpoints(&spec, &pods);
        let addresses: Vec<String> = endpoints.iter().map(|e| e.address.to_string()).collect();
        assert_eq!(
            addresses,
            [
                "10.0.0.1:8000",
                "10.0.0.1:8001",
                "10.0.0.2:8000",
                "10.0.0.2:8001"
            ]
        );
        assert_eq!(endpoints[2].labels["role"], "decoder", "labels kept");
        assert_eq!(label_selector(&spec), "app=m,serving=true");
    }

    #[test]
    fn pods_that_cannot_take_traffic_are_skipped() {
        let spec = pool(&[("app", "m")], &[8000]);
        let mut deleting = pod("deleting", "10.0.0.1", &[("app", "m")], true);
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        let mut pending = pod("pending", "10.0.0.2", &[("app", "m")], true);
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let mut no_ip = pod("no-ip", "", &[("app", "m")], true);
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let mut bad_ip = pod("bad-ip", "not-an-ip", &[("app", "m")], true);
        bad_ip.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let mut no_status = pod("no-status", "10.0.0.3", &[("app", "m")], true);
        no_status.status = None;
        let ipv6 = pod("v6", "fd00::1", &[("app", "m")], true);
        let endpoints = pool_endpoints(
            &spec,
            [&deleting, &pending, &no_ip, &bad_ip, &no_status, &ipv6],
        );
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].address.to_string(), "[fd00::1]:8000");
    }

    #[test]
    fn empty_selectors_and_invalid_ports_select_nothing() {
        let pods = [pod("a", "10.0.0.1", &[("app", "m")], true)];
        assert!(pool_endpoints(&pool(&[], &[8000]), &pods).is_empty());
        assert!(pool_endpoints(&pool(&[("app", "m")], &[0, -1, 70000]), &pods).is_empty());
        let deduplicated = pool_endpoints(&pool(&[("app", "m")], &[8000, 8000]), &pods);
        assert_eq!(deduplicated.len(), 1);
    }
}
