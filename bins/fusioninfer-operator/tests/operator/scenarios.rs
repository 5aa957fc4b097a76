//! Reconcile scenarios against an in-memory API server. Each returns the calls the operator
//! made, so that the RBAC test can check the ClusterRole against exactly these code paths.

use std::collections::BTreeSet;
use std::sync::Arc;

use fusioninfer_api::InferenceService;
use fusioninfer_api::labels::{MANAGED_BY, MANAGER, SERVICE};
use fusioninfer_core::plan::{PlanOptions, plan};
use fusioninfer_core::reconcile::{REASON_MISSING_CRD, REASON_NAME_CONFLICT, is_controlled_by};
use fusioninfer_operator::controller::NAME_CONFLICT_REQUEUE;
use fusioninfer_operator::kinds::InstalledCrds;
use fusioninfer_operator::metrics::Write;
use fusioninfer_operator::{Error, error_policy};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::{ApiCall, CallLog, Harness};

/// Prefill/decode with a router and an HTTPRoute, gang-scheduled by Volcano: every kind except
/// LeaderWorkerSet.
pub const PD_VOLCANO: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: chat, namespace: llm}
spec:
  schedulingStrategy: {schedulerName: volcano, queue: inference}
  roles:
  - name: prefill
    componentType: prefiller
    replicas: 2
    template:
      spec:
        containers:
        - name: vllm
          image: vllm/vllm-openai:v0.11.0
          ports: [{name: http, containerPort: 8000}]
          resources: {requests: {cpu: "4", nvidia.com/gpu: "1"}}
  - name: decode
    componentType: decoder
    replicas: 1
    template:
      spec:
        containers:
        - name: vllm
          image: vllm/vllm-openai:v0.11.0
          ports: [{name: http, containerPort: 8000}]
          resources: {requests: {cpu: "4", nvidia.com/gpu: "1"}}
  - name: router
    componentType: router
    strategy: pd-disaggregation
    httproute:
      parentRefs: [{name: inference-gateway}]
"#;

/// One worker spread over two nodes: needs the LeaderWorkerSet CRD.
pub const MULTINODE: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: big, namespace: llm}
spec:
  roles:
  - name: worker
    componentType: worker
    multinode: {nodeCount: 2}
    template: {spec: {containers: [{name: vllm, image: vllm/vllm-openai:v0.11.0}]}}
"#;

/// A plain single-node worker.
pub const MONOLITHIC: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: small, namespace: llm}
spec:
  roles:
  - name: worker
    componentType: worker
    replicas: 2
    template: {spec: {containers: [{name: vllm, image: vllm/vllm-openai:v0.11.0}]}}
"#;

/// A worker and a decoder together: invalid.
pub const INVALID: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: broken, namespace: llm}
spec:
  roles:
  - name: main
    componentType: worker
    template: {spec: {containers: [{name: vllm, image: vllm/vllm-openai:v0.11.0}]}}
  - name: dec
    componentType: decoder
    template: {spec: {containers: [{name: vllm, image: vllm/vllm-openai:v0.11.0}]}}
"#;

/// Service `a` with role `b-c`: its StatefulSet and headless Service are named `a-b-c`.
pub const COLLIDING_FIRST: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: a, namespace: llm}
spec:
  roles:
  - name: b-c
    componentType: worker
    template: {spec: {containers: [{name: vllm, image: vllm/vllm-openai:v0.11.0}]}}
"#;

/// Service `a-b` with role `c`: derives the same names as [`COLLIDING_FIRST`].
pub const COLLIDING_SECOND: &str = r#"
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: a-b, namespace: llm}
spec:
  roles:
  - name: c
    componentType: worker
    template: {spec: {containers: [{name: vllm, image: vllm/vllm-openai:v0.11.0}]}}
"#;

/// Keys `(kind, name)` of the objects the planner wants for `isvc`.
pub fn planned(isvc: &InferenceService) -> BTreeSet<(String, String)> {
    plan(isvc, &PlanOptions::default())
        .expect("valid spec")
        .iter()
        .map(|o| (o.kind(), o.name().to_owned()))
        .collect()
}

fn condition<'a>(isvc: &'a InferenceService, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = isvc
        .status
        .as_ref()
        .expect("status written")
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("condition {type_}"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

async fn keys(h: &Harness, ns: &str) -> BTreeSet<(String, String)> {
    h.children(ns)
        .await
        .into_iter()
        .map(|(kind, name, _)| (kind, name))
        .collect()
}

fn writes(calls: &[ApiCall]) -> Vec<ApiCall> {
    calls.iter().filter(|c| c.is_write()).cloned().collect()
}

/// The `get` (read by name) calls among `calls`.
fn gets(calls: &[ApiCall]) -> Vec<ApiCall> {
    calls
        .iter()
        .filter(|c| matches!(c, ApiCall::Resource { verb, .. } if verb == "get"))
        .cloned()
        .collect()
}

/// What must not change about an object someone else owns: `(kind, name, resourceVersion,
/// labels, owner references)` of every object of a managed kind in `ns`.
async fn identities(
    h: &Harness,
    ns: &str,
) -> Vec<(
    String,
    String,
    Option<String>,
    std::collections::BTreeMap<String, String>,
    Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
)> {
    h.children(ns)
        .await
        .into_iter()
        .map(|(kind, name, o)| {
            (
                kind,
                name,
                o.resource_version(),
                o.labels().clone(),
                o.metadata.owner_references,
            )
        })
        .collect()
}

/// Create → every planned object exists with a controller reference; status written with
/// `observedGeneration`; `Unknown` while no child has reported.
pub async fn create_applies_every_planned_object() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    let created = h.create(PD_VOLCANO).await;
    let uid = created.uid().expect("uid");
    let action = h.reconcile("llm", "chat").await.expect("reconcile");
    assert_eq!(
        action,
        Action::requeue(fusioninfer_operator::controller::RESYNC_PERIOD)
    );

    let children = h.children("llm").await;
    let found: BTreeSet<_> = children
        .iter()
        .map(|(k, n, _)| (k.clone(), n.clone()))
        .collect();
    assert_eq!(found, planned(&created));
    assert_eq!(found.len(), 16, "{found:?}");
    for (kind, name, object) in &children {
        assert!(
            is_controlled_by(&object.metadata, &uid),
            "{kind} {name} has no owner reference"
        );
        let owner = &object.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.block_owner_deletion
            ),
            ("InferenceService", "chat", Some(true))
        );
        let labels = object.labels();
        assert_eq!(labels.get(SERVICE).map(String::as_str), Some("chat"));
        assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some(MANAGER));
    }

    let stored = h.get("llm", "chat").await;
    let status = stored.status.as_ref().expect("status written");
    assert_eq!(status.observed_generation, stored.metadata.generation);
    assert_eq!(condition(&stored, "Ready").0, "Unknown");
    assert_eq!(status.components.len(), 3);
    h.log
}

/// A second reconcile of an unchanged spec changes no resourceVersion and sends no write.
pub async fn second_reconcile_writes_nothing() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.expect("first reconcile");
    let before = h.versions("llm", "chat").await;
    let from = h.log.len();
    let applies = h.ctx.metrics.writes(Write::Apply);
    h.reconcile("llm", "chat").await.expect("second reconcile");
    assert_eq!(h.versions("llm", "chat").await, before);
    let calls = h.log.since(from);
    assert!(writes(&calls).is_empty(), "writes: {:?}", writes(&calls));
    assert!(
        gets(&calls).is_empty(),
        "every child is listed by label: no read by name, {:?}",
        gets(&calls)
    );
    assert!(!calls.is_empty());
    assert_eq!(h.ctx.metrics.writes(Write::Apply), applies);
    h.log
}

/// A hand edit of a planned field is restored; untouched objects are not written.
pub async fn hand_edits_are_restored() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    let sts: Api<StatefulSet> = Api::namespaced(h.api.clone(), "llm");
    sts.patch(
        "chat-decode",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("hand edit");
    let cms: Api<ConfigMap> = Api::namespaced(h.api.clone(), "llm");
    cms.patch(
        "chat-router",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"config.yaml": "edited by hand"}})),
    )
    .await
    .expect("hand edit");

    let applies = h.ctx.metrics.writes(Write::Apply);
    h.reconcile("llm", "chat").await.expect("reconcile");
    let decode = sts.get("chat-decode").await.unwrap();
    assert_eq!(decode.spec.unwrap().replicas, Some(1));
    let config = cms.get("chat-router").await.unwrap();
    assert_ne!(config.data.unwrap()["config.yaml"], "edited by hand");
    assert_eq!(
        h.ctx.metrics.writes(Write::Apply) - applies,
        2,
        "only the edited objects"
    );
    h.log
}

/// Removing a role deletes its objects (selected by labels and owner), nothing else; an object
/// merely labelled like ours is left alone.
pub async fn removed_role_is_pruned() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    // Labelled like a child but not controlled by the service: must survive pruning.
    let stranger: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "chat-stranger", "namespace": "llm",
                     "labels": {SERVICE: "chat", MANAGED_BY: MANAGER}}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(h.api.clone(), "llm")
        .create(&PostParams::default(), &stranger)
        .await
        .unwrap();

    let mut isvc = h.get("llm", "chat").await;
    isvc.spec.roles.retain(|r| r.name != "router");
    let isvc = h.update(&isvc).await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    let mut expected = planned(&isvc);
    expected.insert(("ConfigMap".into(), "chat-stranger".into()));
    assert_eq!(keys(&h, "llm").await, expected);
    let stored = h.get("llm", "chat").await;
    assert_eq!(stored.status.unwrap().components.len(), 2);
    h.log
}

/// Switching Volcano off deletes the PodGroup and takes the scheduler off the pods.
pub async fn volcano_off_deletes_the_pod_group() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    assert!(
        keys(&h, "llm")
            .await
            .contains(&("PodGroup".into(), "chat".into()))
    );

    let mut isvc = h.get("llm", "chat").await;
    isvc.spec.scheduling_strategy = None;
    let isvc = h.update(&isvc).await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    let found = keys(&h, "llm").await;
    assert!(!found.contains(&("PodGroup".into(), "chat".into())));
    assert_eq!(found, planned(&isvc));
    h.log
}

/// Changing a role between single- and multi-node swaps StatefulSet + Service for a
/// LeaderWorkerSet and back, pruning the kind no longer planned.
pub async fn topology_change_replaces_the_workload() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(MONOLITHIC).await;
    h.reconcile("llm", "small").await.unwrap();
    let single = keys(&h, "llm").await;
    assert!(single.contains(&("StatefulSet".into(), "small-worker".into())));

    let mut isvc = h.get("llm", "small").await;
    isvc.spec.roles[0].multinode = Some(fusioninfer_api::Multinode { node_count: 2 });
    let multi = h.update(&isvc).await;
    h.reconcile("llm", "small").await.unwrap();
    assert_eq!(keys(&h, "llm").await, planned(&multi));
    assert!(
        keys(&h, "llm")
            .await
            .contains(&("LeaderWorkerSet".into(), "small-worker".into()))
    );

    let mut isvc = h.get("llm", "small").await;
    isvc.spec.roles[0].multinode = None;
    h.update(&isvc).await;
    h.reconcile("llm", "small").await.unwrap();
    assert_eq!(keys(&h, "llm").await, single);
    h.log
}

async fn set_status<K>(h: &Harness, name: &str, status: serde_json::Value)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(h.api.clone(), "llm")
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"));
}

/// Child statuses set by the test drive the service's status: Unknown before children report,
/// Running once every role is ready, Failed when a pod crash-loops.
pub async fn status_follows_children() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    let stored = h.get("llm", "chat").await;
    assert_eq!(condition(&stored, "Ready").0, "Unknown");
    assert_eq!(condition(&stored, "Ready").1, "StatusUnknown");

    set_status::<StatefulSet>(
        &h,
        "chat-prefill",
        json!({"replicas": 2, "readyReplicas": 2}),
    )
    .await;
    set_status::<StatefulSet>(
        &h,
        "chat-decode",
        json!({"replicas": 1, "readyReplicas": 1}),
    )
    .await;
    set_status::<Deployment>(
        &h,
        "chat-router",
        json!({"replicas": 1, "readyReplicas": 1}),
    )
    .await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    let stored = h.get("llm", "chat").await;
    assert_eq!(condition(&stored, "Ready").0, "True", "{:?}", stored.status);
    let status = stored.status.as_ref().unwrap();
    for (role, component) in &status.components {
        assert_eq!(
            component.phase,
            fusioninfer_api::ComponentPhase::Running,
            "{role}"
        );
    }
    assert_eq!(
        status.summary.as_deref(),
        Some("prefill 2/2, decode 1/1, router 1/1")
    );

    // A decode pod crash-loops.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "chat-decode-0", "namespace": "llm", "labels": {
            SERVICE: "chat", "fusioninfer.io/role-name": "decode",
            "fusioninfer.io/component-type": "decoder", MANAGED_BY: MANAGER}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(h.api.clone(), "llm")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    set_status::<Pod>(&h, "chat-decode-0", json!({
        "phase": "Running",
        "containerStatuses": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0", "imageID": "",
            "ready": false, "restartCount": 7,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}]
    }))
    .await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    let stored = h.get("llm", "chat").await;
    let status = stored.status.as_ref().unwrap();
    assert_eq!(
        status.components["decode"].phase,
        fusioninfer_api::ComponentPhase::Failed
    );
    assert_eq!(
        status.components["prefill"].phase,
        fusioninfer_api::ComponentPhase::Running
    );
    let (degraded, reason, message) = condition(&stored, "Degraded");
    assert_eq!((degraded, reason), ("True", "CrashLoopBackOff"));
    assert!(message.contains("chat-decode-0"), "{message}");
    assert_eq!(condition(&stored, "Ready").0, "False");
    h.log
}

async fn events_for(h: &Harness, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(h.api.clone(), "llm")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Invalid spec: no children, `Ready=False` with every message, a Warning Event; a second
/// reconcile writes nothing; a new generation with the same errors updates the same Event.
pub async fn invalid_spec_is_reported_and_nothing_applied() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(INVALID).await;
    h.reconcile("llm", "broken")
        .await
        .expect("an invalid spec is not an error to retry");
    assert!(h.children("llm").await.is_empty());
    let stored = h.get("llm", "broken").await;
    let (ready, reason, message) = condition(&stored, "Ready");
    assert_eq!((ready, reason), ("False", "InvalidSpec"));
    assert!(
        message.contains("\"main\"") && message.contains("\"dec\""),
        "{message}"
    );
    assert_eq!(
        stored.status.as_ref().unwrap().observed_generation,
        stored.metadata.generation
    );
    let events = events_for(&h, "broken").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert_eq!(events[0].reason.as_deref(), Some("InvalidSpec"));
    assert!(events[0].note.as_deref().unwrap_or("").contains("\"dec\""));
    assert!(
        !h.log
            .calls()
            .iter()
            .any(|c| matches!(c, ApiCall::Resource { group, .. } if group == "apps")),
        "nothing listed or applied for an invalid spec"
    );

    let from = h.log.len();
    h.reconcile("llm", "broken").await.unwrap();
    assert!(writes(&h.log.since(from)).is_empty());

    // Still invalid in a new generation: the status moves on, the Event is a series.
    let mut isvc = h.get("llm", "broken").await;
    isvc.spec.roles[0].replicas = 3;
    h.update(&isvc).await;
    h.reconcile("llm", "broken").await.unwrap();
    let stored = h.get("llm", "broken").await;
    assert_eq!(
        stored.status.as_ref().unwrap().observed_generation,
        stored.metadata.generation
    );
    let events = events_for(&h, "broken").await;
    assert_eq!(events.len(), 1, "same event, counted as a series");
    assert_eq!(events[0].series.as_ref().map(|s| s.count), Some(2));
    h.log
}

/// A valid service edited into an invalid one keeps its children untouched.
pub async fn invalid_edit_leaves_children_alone() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.unwrap();
    let before = h.children("llm").await;
    let mut isvc = h.get("llm", "chat").await;
    isvc.spec.roles[0].component_type = fusioninfer_api::ComponentType::Worker;
    h.update(&isvc).await;
    h.reconcile("llm", "chat").await.unwrap();
    let after = h.children("llm").await;
    let versions = |c: &[(String, String, kube::api::DynamicObject)]| -> Vec<_> {
        c.iter()
            .map(|(k, n, o)| (k.clone(), n.clone(), o.resource_version()))
            .collect()
    };
    assert_eq!(versions(&after), versions(&before));
    let stored = h.get("llm", "chat").await;
    assert_eq!(condition(&stored, "Ready").1, "InvalidSpec");
    // The components observed before stay (nothing new was planned).
    assert_eq!(stored.status.as_ref().unwrap().components.len(), 3);
    h.log
}

/// Without the LeaderWorkerSet CRD: the multi-node service gets `MissingCRD` naming the CRD and
/// nothing is applied (not even tried) for it; a service that does not need it is reconciled.
pub async fn missing_crd_blocks_only_services_needing_it() -> CallLog {
    let lws = &fusioninfer_core::reconcile::OPTIONAL_CRDS[0];
    let h = Harness::new(InstalledCrds::all_except(&[lws.name])).await;
    h.create(MULTINODE).await;
    let small = h.create(MONOLITHIC).await;

    h.reconcile("llm", "big")
        .await
        .expect("a missing CRD is reported, not retried");
    let big = h.get("llm", "big").await;
    let (ready, reason, message) = condition(&big, "Ready");
    assert_eq!((ready, reason), ("False", REASON_MISSING_CRD));
    assert!(
        message.contains(lws.name) && message.contains(lws.install_hint),
        "{message}"
    );
    assert!(h.children("llm").await.is_empty());
    let events = events_for(&h, "big").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason.as_deref(), Some(REASON_MISSING_CRD));

    h.reconcile("llm", "small")
        .await
        .expect("others are reconciled");
    assert_eq!(keys(&h, "llm").await, planned(&small));
    assert!(
        !h.log
            .calls()
            .iter()
            .any(|c| matches!(c, ApiCall::Resource { group, .. } if group == lws.group())),
        "no call for a kind whose CRD is missing"
    );
    let from = h.log.len();
    h.reconcile("llm", "big").await.unwrap();
    assert!(writes(&h.log.since(from)).is_empty());
    h.log
}

/// Deleting the service removes its children through their owner references (the fake API
/// server garbage-collects dependents like the real one); a reconcile of a service being
/// deleted makes no call.
pub async fn deletion_relies_on_owner_references() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.unwrap();
    let mut deleting = h.get("llm", "chat").await;
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let from = h.log.len();
    let action = fusioninfer_operator::reconcile(Arc::new(deleting), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(h.log.since(from).is_empty());

    Api::<InferenceService>::namespaced(h.api.clone(), "llm")
        .delete("chat", &DeleteParams::background())
        .await
        .unwrap();
    assert!(h.children("llm").await.is_empty());
    h.log
}

/// Every example of the repository: all planned objects created, then a no-write reconcile.
pub async fn every_example_reconciles() -> CallLog {
    let log = CallLog::default();
    for (stem, isvc) in fusioninfer_tests::examples() {
        let h = Harness::new(InstalledCrds::all()).await;
        let created = h.create_object(&isvc).await;
        let ns = created.namespace().unwrap();
        let name = created.name_any();
        h.reconcile(&ns, &name)
            .await
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(keys(&h, &ns).await, planned(&created), "{stem}");
        let before = h.versions(&ns, &name).await;
        h.reconcile(&ns, &name).await.unwrap();
        assert_eq!(h.versions(&ns, &name).await, before, "{stem}");
        for call in h.log.calls() {
            log.push(call);
        }
    }
    log
}

/// Two services whose names collide (`a` + role `b-c`, `a-b` + role `c`, both `a-b-c`): the
/// second is not given the first's objects. It fails with `NameConflict` (condition and Event
/// naming the object and its owner, slow requeue), and the first's objects keep their
/// resourceVersion, labels and owner references. Once a person removes one side, the other gets
/// the names.
pub async fn colliding_services_do_not_take_each_others_objects() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    let first = h.create(COLLIDING_FIRST).await;
    let first_uid = first.uid().expect("uid");
    h.reconcile("llm", "a").await.expect("first service");
    let second = h.create(COLLIDING_SECOND).await;
    assert_eq!(planned(&first), planned(&second), "the same names");
    let before = identities(&h, "llm").await;
    let first_status = h.get("llm", "a").await.status;

    let from = h.log.len();
    let error = h
        .reconcile("llm", "a-b")
        .await
        .expect_err("a name conflict fails the reconcile");
    assert!(matches!(error, Error::NameConflict { .. }), "{error}");
    assert_eq!(error.metric_label(), "name_conflict");
    assert!(error.to_string().contains("StatefulSet a-b-c"), "{error}");
    let isvc = Arc::new(h.get("llm", "a-b").await);
    assert_eq!(
        error_policy(isvc.clone(), &error, h.ctx.clone()),
        Action::requeue(NAME_CONFLICT_REQUEUE),
        "a person has to act: no quick retry"
    );
    assert_eq!(
        error_policy(isvc, &error, h.ctx.clone()),
        Action::requeue(NAME_CONFLICT_REQUEUE),
        "no exponential backoff either"
    );

    // The first service's objects are untouched, and nothing was even attempted on them: the
    // only writes are the second service's Event and status.
    assert_eq!(identities(&h, "llm").await, before);
    for (_, name, _, labels, owners) in &before {
        assert_eq!(labels.get(SERVICE).map(String::as_str), Some("a"), "{name}");
        assert_eq!(owners.as_ref().unwrap()[0].uid, first_uid, "{name}");
    }
    let calls = h.log.since(from);
    assert_eq!(
        writes(&calls).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            ApiCall::resource("create", "events.k8s.io", "events"),
            ApiCall::resource("patch", "fusioninfer.io", "inferenceservices/status"),
        ]),
    );
    assert_eq!(
        gets(&calls).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            ApiCall::resource("get", "apps", "statefulsets"),
            ApiCall::resource("get", "", "services"),
        ]),
        "the two planned objects missing from the labelled lists are read by name"
    );
    assert_eq!(h.get("llm", "a").await.status, first_status);

    let stored = h.get("llm", "a-b").await;
    let (ready, reason, message) = condition(&stored, "Ready");
    assert_eq!((ready, reason), ("False", REASON_NAME_CONFLICT));
    assert_eq!(condition(&stored, "Degraded").0, "True");
    assert_eq!(condition(&stored, "Progressing").0, "False");
    for expected in [
        "StatefulSet a-b-c already exists and belongs to InferenceService a",
        "Service a-b-c already exists",
        &format!("(uid {first_uid})"),
        "rename role \"c\" or InferenceService a-b",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
    assert_eq!(
        stored.status.as_ref().unwrap().observed_generation,
        stored.metadata.generation
    );
    let events = events_for(&h, "a-b").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert_eq!(events[0].reason.as_deref(), Some(REASON_NAME_CONFLICT));
    let note = events[0].note.as_deref().unwrap_or("");
    assert!(
        note.contains("StatefulSet a-b-c") && note.contains("InferenceService a (uid"),
        "{note}"
    );
    assert!(events_for(&h, "a").await.is_empty());

    // Again: the conflict is checked again (by name), but nothing is written.
    let from = h.log.len();
    let again = h
        .reconcile("llm", "a-b")
        .await
        .expect_err("still conflicting");
    assert!(matches!(again, Error::NameConflict { .. }));
    let calls = h.log.since(from);
    assert!(writes(&calls).is_empty(), "{:?}", writes(&calls));
    assert_eq!(identities(&h, "llm").await, before);
    // The first service is still healthy: its reconcile writes nothing.
    let from = h.log.len();
    h.reconcile("llm", "a").await.expect("first service");
    assert!(writes(&h.log.since(from)).is_empty());

    // Resolved by a person: the first service is deleted (its children go with it), and the
    // second now creates its own.
    Api::<InferenceService>::namespaced(h.api.clone(), "llm")
        .delete("a", &DeleteParams::background())
        .await
        .unwrap();
    assert!(h.children("llm").await.is_empty());
    h.reconcile("llm", "a-b").await.expect("names are free");
    let second_uid = second.uid().unwrap();
    for (kind, name, object) in h.children("llm").await {
        assert!(
            is_controlled_by(&object.metadata, &second_uid),
            "{kind} {name}"
        );
        assert_eq!(
            object.labels().get(SERVICE).map(String::as_str),
            Some("a-b")
        );
    }
    let stored = h.get("llm", "a-b").await;
    assert_ne!(condition(&stored, "Ready").1, REASON_NAME_CONFLICT);
    h.log
}

/// A user's ConfigMap that happens to have a planned name is not taken over: it keeps its data,
/// labels, (absent) owner references and resourceVersion. Every other planned object is applied,
/// but even with every workload ready the service is not `Ready`. Once the user deletes their
/// ConfigMap, the next reconcile creates the operator's and the service becomes ready.
pub async fn user_object_with_a_planned_name_is_not_taken_over() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    let cms: Api<ConfigMap> = Api::namespaced(h.api.clone(), "llm");
    let mine: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "chat-router", "namespace": "llm", "labels": {"team": "search"}},
        "data": {"config.yaml": "mine"}
    }))
    .unwrap();
    let mine = cms.create(&PostParams::default(), &mine).await.unwrap();
    let created = h.create(PD_VOLCANO).await;
    let uid = created.uid().unwrap();

    let error = h
        .reconcile("llm", "chat")
        .await
        .expect_err("a name conflict fails the reconcile");
    assert!(matches!(error, Error::NameConflict { ref conflicts } if conflicts.len() == 1));
    let after = cms.get("chat-router").await.unwrap();
    assert_eq!(after.resource_version(), mine.resource_version());
    assert_eq!(after.data, mine.data);
    assert_eq!(after.labels(), mine.labels());
    assert_eq!(after.metadata.owner_references, None);

    // The other twelve objects are applied, and are the service's.
    assert_eq!(keys(&h, "llm").await, planned(&created));
    for (kind, name, object) in h.children("llm").await {
        if (kind.as_str(), name.as_str()) != ("ConfigMap", "chat-router") {
            assert!(is_controlled_by(&object.metadata, &uid), "{kind} {name}");
        }
    }
    let stored = h.get("llm", "chat").await;
    let (ready, reason, message) = condition(&stored, "Ready");
    assert_eq!((ready, reason), ("False", REASON_NAME_CONFLICT));
    assert!(
        message.contains("ConfigMap chat-router already exists and was not created by FusionInfer")
            && message.contains("rename role \"router\" or InferenceService chat"),
        "{message}"
    );
    let events = events_for(&h, "chat").await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("ConfigMap chat-router already exists and was not created by FusionInfer")
    );

    // Every workload reports ready: the components say so, the conditions still do not.
    set_status::<StatefulSet>(
        &h,
        "chat-prefill",
        json!({"replicas": 2, "readyReplicas": 2}),
    )
    .await;
    set_status::<StatefulSet>(
        &h,
        "chat-decode",
        json!({"replicas": 1, "readyReplicas": 1}),
    )
    .await;
    set_status::<Deployment>(
        &h,
        "chat-router",
        json!({"replicas": 1, "readyReplicas": 1}),
    )
    .await;
    h.reconcile("llm", "chat")
        .await
        .expect_err("still conflicting");
    let stored = h.get("llm", "chat").await;
    assert_eq!(
        condition(&stored, "Ready"),
        ("False", REASON_NAME_CONFLICT, message)
    );
    assert_eq!(
        stored.status.as_ref().unwrap().summary.as_deref(),
        Some("prefill 2/2, decode 1/1, router 1/1")
    );
    assert_eq!(
        cms.get("chat-router").await.unwrap().resource_version(),
        mine.resource_version()
    );

    // The user removes their ConfigMap: the operator's is created and the service is Ready.
    cms.delete("chat-router", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile("llm", "chat")
        .await
        .expect("no conflict any more");
    let ours = cms.get("chat-router").await.unwrap();
    assert!(is_controlled_by(&ours.metadata, &uid));
    let stored = h.get("llm", "chat").await;
    assert_eq!(condition(&stored, "Ready").0, "True", "{:?}", stored.status);
    assert_eq!(
        h.ctx
            .failures(&kube::runtime::reflector::ObjectRef::from_obj(&stored)),
        0
    );
    h.log
}

/// A child whose labels were removed by hand is no longer listed, but it carries the service's
/// controller reference, so it is still the service's: the reconcile reads it by name and the
/// apply puts the labels back. The next reconcile is write- and GET-free again.
pub async fn owned_child_with_labels_removed_is_restored() -> CallLog {
    let h = Harness::new(InstalledCrds::all()).await;
    let created = h.create(MONOLITHIC).await;
    let uid = created.uid().unwrap();
    h.reconcile("llm", "small").await.expect("reconcile");
    let sts: Api<StatefulSet> = Api::namespaced(h.api.clone(), "llm");
    let mut worker = sts.get("small-worker").await.unwrap();
    worker.metadata.labels = None;
    let stripped = sts
        .replace("small-worker", &PostParams::default(), &worker)
        .await
        .unwrap();
    assert!(stripped.labels().is_empty(), "labels removed by hand");

    let from = h.log.len();
    h.reconcile("llm", "small").await.expect("still ours");
    let calls = h.log.since(from);
    assert_eq!(
        gets(&calls),
        [ApiCall::resource("get", "apps", "statefulsets")]
    );
    assert_eq!(
        writes(&calls),
        [
            ApiCall::resource("patch", "apps", "statefulsets"),
            ApiCall::resource("create", "apps", "statefulsets"),
        ],
        "only the apply that restores the labels"
    );
    let restored = sts.get("small-worker").await.unwrap();
    assert_eq!(
        restored.labels().get(SERVICE).map(String::as_str),
        Some("small")
    );
    assert_eq!(
        restored.labels().get(MANAGED_BY).map(String::as_str),
        Some(MANAGER)
    );
    assert!(is_controlled_by(&restored.metadata, &uid));
    let stored = h.get("llm", "small").await;
    assert_ne!(condition(&stored, "Ready").1, REASON_NAME_CONFLICT);

    let from = h.log.len();
    h.reconcile("llm", "small").await.expect("steady state");
    let calls = h.log.since(from);
    assert!(
        writes(&calls).is_empty() && gets(&calls).is_empty(),
        "{calls:?}"
    );
    h.log
}
