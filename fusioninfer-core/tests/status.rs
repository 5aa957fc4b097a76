//! Status aggregation from observed child objects, through the public API only.

use fusioninfer_api::{ComponentPhase, ComponentStatus, InferenceService, InferenceServiceStatus};
use fusioninfer_core::status::{Error, Observed, aggregate_status, invalid_spec_status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const SVC: &str = "llm";
const NS: &str = "default";
const GENERATION: i64 = 3;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

/// A disaggregated service: decode (1 replica), prefill (2 replicas), router (1 EPP replica),
/// with `extra` merged into the spec.
fn pd_service(extra: Value) -> InferenceService {
    let template = json!({"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]}});
    let mut spec = json!({
        "roles": [
            {"name": "decode", "componentType": "decoder", "replicas": 1, "template": template},
            {"name": "prefill", "componentType": "prefiller", "replicas": 2, "template": template},
            {"name": "router", "componentType": "router", "replicas": 1},
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    service(spec)
}

fn service(spec: Value) -> InferenceService {
    serde_json::from_value(json!({
        "apiVersion": "fusioninfer.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": SVC, "namespace": NS, "generation": GENERATION},
        "spec": spec,
    }))
    .unwrap()
}

fn meta(service: &str, role: &str, name: &str) -> Value {
    json!({
        "name": name,
        "namespace": NS,
        "labels": {"fusioninfer.io/service": service, "fusioninfer.io/role-name": role},
    })
}

fn sts(role: &str, replicas: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": meta(SVC, role, &format!("{SVC}-{role}")),
        "spec": {"replicas": replicas, "serviceName": format!("{SVC}-{role}"), "selector": {}, "template": {}},
        "status": {"replicas": replicas, "readyReplicas": ready},
    })
}

fn sts_without_status(role: &str) -> Value {
    let mut v = sts(role, 1, 0);
    v.as_object_mut().unwrap().remove("status");
    v
}

fn deployment(role: &str, replicas: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(SVC, role, &format!("{SVC}-{role}")),
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
        "status": {"replicas": replicas, "readyReplicas": ready},
    })
}

fn lws(role: &str, groups: i32, size: i32, ready_groups: i32) -> Value {
    json!({
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
        "metadata": meta(SVC, role, &format!("{SVC}-{role}")),
        "spec": {"replicas": groups, "leaderWorkerTemplate": {"size": size, "workerTemplate": {}}},
        "status": {"replicas": groups, "readyReplicas": ready_groups},
    })
}

/// A scheduled pod of `role`, ready or not.
fn pod(role: &str, name: &str, ready: bool) -> Value {
    let status = if ready { "True" } else { "False" };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta(SVC, role, name),
        "spec": {"nodeName": "gpu-node", "containers": [{"name": "vllm"}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": status},
            ],
            "containerStatuses": [{
                "name": "vllm", "image": "vllm/vllm-openai", "imageID": "", "ready": ready,
                "restartCount": 0, "state": {"running": {}},
            }],
        },
    })
}

/// A pod whose container `vllm` waits with `reason` and `message`.
fn waiting_pod(role: &str, name: &str, reason: &str, message: &str) -> Value {
    let mut p = pod(role, name, false);
    p["status"]["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": reason, "message": message}});
    p
}

fn pod_group(phase: &str, unschedulable: bool) -> Value {
    let status = if unschedulable { "True" } else { "False" };
    json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": SVC, "namespace": NS, "labels": {"fusioninfer.io/service": SVC}},
        "spec": {"minMember": 2},
        "status": {
            "phase": phase,
            "conditions": [{
                "type": "Unschedulable", "status": status, "reason": "NotEnoughResources",
                "message": "2/2 tasks in gang unschedulable: pod group is not ready, 2 Pending",
            }],
        },
    })
}

fn observe(objects: Vec<Value>) -> Observed {
    Observed::from_objects(objects).unwrap()
}

/// Every child of [`pd_service`] present and fully ready.
fn all_ready() -> Vec<Value> {
    vec![
        sts("decode", 1, 1),
        sts("prefill", 2, 2),
        deployment("router", 1, 1),
        pod("decode", "llm-decode-0", true),
        pod("prefill", "llm-prefill-0", true),
        pod("prefill", "llm-prefill-1", true),
    ]
}

/// Aggregates and checks the conventions every status must follow: the three conditions in a
/// fixed order, CamelCase reasons the API server accepts, non-empty messages, generations set.
fn aggregate(isvc: &InferenceService, objects: Vec<Value>, now: Time) -> InferenceServiceStatus {
    let status = aggregate_status(isvc, &observe(objects), now);
    check_conventions(&status);
    assert_eq!(
        status.components.keys().collect::<Vec<_>>(),
        {
            let mut roles: Vec<_> = isvc.spec.roles.iter().map(|r| &r.name).collect();
            roles.sort();
            roles
        },
        "one component per role"
    );
    status
}

fn check_conventions(status: &InferenceServiceStatus) {
    assert_eq!(status.observed_generation, Some(GENERATION));
    let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Progressing", "Degraded"]);
    for c in &status.conditions {
        assert!(
            ["True", "False", "Unknown"].contains(&c.status.as_str()),
            "{c:?}"
        );
        let mut chars = c.reason.chars();
        assert!(
            chars.next().is_some_and(|f| f.is_ascii_uppercase()),
            "reason not CamelCase: {c:?}"
        );
        assert!(
            chars.all(|ch| ch.is_ascii_alphanumeric()),
            "reason not CamelCase: {c:?}"
        );
        assert!(!c.message.is_empty(), "{c:?}");
        assert_eq!(c.observed_generation, Some(GENERATION));
    }
}

fn condition<'s>(status: &'s InferenceServiceStatus, type_: &str) -> &'s Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

/// `(status, reason)` of a condition, for compact assertions.
fn cond(status: &InferenceServiceStatus, type_: &str) -> (String, String) {
    let c = condition(status, type_);
    (c.status.clone(), c.reason.clone())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

fn phase(status: &InferenceServiceStatus, role: &str) -> ComponentPhase {
    status.components[role].phase
}

#[test]
fn all_ready_is_running_and_ready() {
    let isvc = pd_service(json!({}));
    let status = aggregate(&isvc, all_ready(), at(100));

    assert_eq!(
        status.summary.as_deref(),
        Some("decode 1/1, prefill 2/2, router 1/1")
    );
    assert_eq!(cond(&status, "Ready"), pair("True", "AllRolesReady"));
    assert_eq!(cond(&status, "Progressing"), pair("False", "AllRolesReady"));
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
    assert_eq!(
        status.components["prefill"],
        ComponentStatus {
            desired_replicas: 2,
            ready_replicas: 2,
            nodes_per_replica: 1,
            total_pods: 2,
            ready_pods: 2,
            phase: ComponentPhase::Running,
            last_update_time: Some(at(100)),
        }
    );
    for role in ["decode", "router"] {
        assert_eq!(phase(&status, role), ComponentPhase::Running, "{role}");
    }
    for c in &status.conditions {
        assert_eq!(
            c.last_transition_time,
            at(100),
            "first status: every condition transitions now"
        );
    }
}

#[test]
fn partial_readiness_is_deploying_and_progressing() {
    let isvc = pd_service(json!({}));
    let objects = vec![
        sts("decode", 1, 1),
        sts("prefill", 2, 1),
        deployment("router", 1, 1),
        pod("decode", "llm-decode-0", true),
        pod("prefill", "llm-prefill-0", true),
        pod("prefill", "llm-prefill-1", false),
    ];
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "prefill"), ComponentPhase::Deploying);
    assert_eq!(status.components["prefill"].ready_replicas, 1);
    assert_eq!(status.components["prefill"].ready_pods, 1);
    assert_eq!(phase(&status, "decode"), ComponentPhase::Running);
    assert_eq!(
        status.summary.as_deref(),
        Some("decode 1/1, prefill 1/2, router 1/1")
    );
    assert_eq!(cond(&status, "Ready"), pair("False", "RolesNotReady"));
    assert_eq!(cond(&status, "Progressing"), pair("True", "Deploying"));
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
    assert_eq!(
        condition(&status, "Progressing").message,
        "role prefill: 1/2 replicas ready"
    );
    assert_eq!(
        condition(&status, "Ready").message,
        "role prefill: 1/2 replicas ready"
    );
}

#[test]
fn crash_loop_fails_the_role_and_degrades_the_service() {
    let isvc = pd_service(json!({}));
    let mut objects = all_ready();
    objects[0] = sts("decode", 1, 0);
    objects[3] = waiting_pod(
        "decode",
        "llm-decode-0",
        "CrashLoopBackOff",
        "back-off 5m0s restarting failed container=vllm pod=llm-decode-0",
    );
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Failed);
    assert_eq!(phase(&status, "prefill"), ComponentPhase::Running);
    let expected = "role decode: pod llm-decode-0 container vllm is in CrashLoopBackOff: \
                    back-off 5m0s restarting failed container=vllm pod=llm-decode-0";
    assert_eq!(cond(&status, "Degraded"), pair("True", "CrashLoopBackOff"));
    assert_eq!(condition(&status, "Degraded").message, expected);
    assert_eq!(cond(&status, "Ready"), pair("False", "CrashLoopBackOff"));
    assert_eq!(condition(&status, "Ready").message, expected);
    assert_eq!(
        cond(&status, "Progressing"),
        pair("False", "CrashLoopBackOff")
    );
}

#[test]
fn fatal_waiting_reasons_fail_the_role() {
    let isvc = pd_service(json!({}));
    for reason in [
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
    ] {
        let mut objects = all_ready();
        objects[1] = sts("prefill", 2, 1);
        objects[5] = waiting_pod(
            "prefill",
            "llm-prefill-1",
            reason,
            "image \"vllm/nope\" not found",
        );
        let status = aggregate(&isvc, objects, at(100));

        assert_eq!(
            phase(&status, "prefill"),
            ComponentPhase::Failed,
            "{reason}"
        );
        assert_eq!(cond(&status, "Degraded"), pair("True", reason));
        assert_eq!(
            condition(&status, "Degraded").message,
            format!(
                "role prefill: pod llm-prefill-1 container vllm is in {reason}: image \"vllm/nope\" not found"
            )
        );
        // Counts are still reported for a failed role.
        assert_eq!(status.components["prefill"].ready_replicas, 1, "{reason}");
    }
}

#[test]
fn crash_looping_init_container_fails_the_role() {
    let isvc = pd_service(json!({}));
    let mut objects = all_ready();
    objects[0] = sts("decode", 1, 0);
    let mut p = pod("decode", "llm-decode-0", false);
    p["status"]["initContainerStatuses"] = json!([{
        "name": "fetch-model", "image": "busybox", "imageID": "", "ready": false, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    }]);
    objects[3] = p;
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Failed);
    assert_eq!(
        condition(&status, "Degraded").message,
        "role decode: pod llm-decode-0 init container fetch-model is in CrashLoopBackOff"
    );
}

#[test]
fn transient_waiting_reasons_are_not_failures() {
    let isvc = pd_service(json!({}));
    let mut objects = all_ready();
    objects[0] = sts("decode", 1, 0);
    objects[3] = waiting_pod("decode", "llm-decode-0", "ContainerCreating", "");
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Deploying);
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
    assert_eq!(cond(&status, "Progressing"), pair("True", "Deploying"));
}

#[test]
fn failing_pods_are_reported_in_name_order_whatever_the_input_order() {
    let isvc = pd_service(json!({}));
    let failing = |name: &str| {
        waiting_pod(
            "prefill",
            name,
            "ImagePullBackOff",
            "Back-off pulling image",
        )
    };
    let forward = vec![
        sts("prefill", 2, 0),
        failing("llm-prefill-0"),
        failing("llm-prefill-1"),
    ];
    let backward = vec![
        failing("llm-prefill-1"),
        failing("llm-prefill-0"),
        sts("prefill", 2, 0),
    ];

    let a = aggregate(&isvc, forward, at(100));
    let b = aggregate(&isvc, backward, at(100));
    assert_eq!(a, b);
    assert_eq!(
        condition(&a, "Degraded").message,
        "role prefill: pod llm-prefill-0 container vllm is in ImagePullBackOff: \
         Back-off pulling image (and 1 more failing pod)"
    );
}

#[test]
fn several_failing_roles_are_all_named_and_the_first_gives_the_reason() {
    let isvc = pd_service(json!({}));
    let objects = vec![
        sts("decode", 1, 0),
        sts("prefill", 2, 0),
        deployment("router", 1, 1),
        waiting_pod("decode", "llm-decode-0", "CrashLoopBackOff", "back-off"),
        waiting_pod("prefill", "llm-prefill-0", "ErrImagePull", "denied"),
    ];
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(cond(&status, "Degraded"), pair("True", "CrashLoopBackOff"));
    assert_eq!(
        condition(&status, "Degraded").message,
        "role decode: pod llm-decode-0 container vllm is in CrashLoopBackOff: back-off; \
         role prefill: pod llm-prefill-0 container vllm is in ErrImagePull: denied"
    );
}

#[test]
fn terminating_pods_are_ignored() {
    let isvc = pd_service(json!({}));
    let mut objects = all_ready();
    let mut dying = waiting_pod("decode", "llm-decode-old", "CrashLoopBackOff", "back-off");
    dying["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    objects.push(dying);
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Running);
    assert_eq!(cond(&status, "Ready"), pair("True", "AllRolesReady"));
}

#[test]
fn unschedulable_pod_group_fails_every_serving_role_but_not_the_router() {
    let isvc = pd_service(json!({"schedulingStrategy": {"schedulerName": "volcano"}}));
    let mut p0 = pod("decode", "llm-decode-0", false);
    p0["spec"] = json!({"containers": [{"name": "vllm"}]});
    p0["status"] = json!({"phase": "Pending"});
    let objects = vec![
        sts("decode", 1, 0),
        sts("prefill", 2, 0),
        deployment("router", 1, 1),
        p0,
        pod_group("Pending", true),
    ];
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Failed);
    assert_eq!(phase(&status, "prefill"), ComponentPhase::Failed);
    assert_eq!(phase(&status, "router"), ComponentPhase::Running);
    assert_eq!(cond(&status, "Degraded"), pair("True", "Unschedulable"));
    let message = &condition(&status, "Degraded").message;
    for role in ["decode", "prefill"] {
        assert!(
            message.contains(&format!(
                "role {role}: PodGroup llm cannot be scheduled (NotEnoughResources): \
                 2/2 tasks in gang unschedulable"
            )),
            "{message}"
        );
    }
    assert!(!message.contains("router"), "{message}");
    assert_eq!(cond(&status, "Ready"), pair("False", "Unschedulable"));
}

#[test]
fn placed_pod_group_with_stale_unschedulable_condition_is_not_a_failure() {
    // Volcano leaves Unschedulable=True behind once the gang fits; the phase says it runs.
    let isvc = pd_service(json!({"schedulingStrategy": {"schedulerName": "volcano"}}));
    let mut objects = all_ready();
    objects.push(pod_group("Running", true));
    let status = aggregate(&isvc, objects, at(100));
    assert_eq!(cond(&status, "Ready"), pair("True", "AllRolesReady"));

    let mut objects = all_ready();
    objects.push(pod_group("Inqueue", false));
    let status = aggregate(&isvc, objects, at(100));
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
}

#[test]
fn pod_group_is_ignored_without_volcano() {
    // A leftover PodGroup from when the service used Volcano governs none of its pods now.
    let isvc = pd_service(json!({"schedulingStrategy": {"schedulerName": "my-scheduler"}}));
    let mut objects = all_ready();
    objects.push(pod_group("Pending", true));
    let status = aggregate(&isvc, objects, at(100));
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
    assert_eq!(phase(&status, "decode"), ComponentPhase::Running);
}

#[test]
fn child_without_status_is_unknown() {
    let isvc = pd_service(json!({}));
    let mut objects = all_ready();
    objects[0] = sts_without_status("decode");
    objects.remove(3);
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Unknown);
    assert_eq!(status.components["decode"].ready_replicas, 0);
    assert_eq!(cond(&status, "Ready"), pair("Unknown", "StatusUnknown"));
    assert_eq!(
        cond(&status, "Progressing"),
        pair("Unknown", "StatusUnknown")
    );
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
    assert_eq!(
        condition(&status, "Ready").message,
        "role decode: StatefulSet llm-decode has not reported status yet"
    );
}

#[test]
fn unknown_next_to_deploying_makes_ready_false() {
    let isvc = pd_service(json!({}));
    let objects = vec![
        sts_without_status("decode"),
        sts("prefill", 2, 1),
        deployment("router", 1, 1),
    ];
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Unknown);
    assert_eq!(phase(&status, "prefill"), ComponentPhase::Deploying);
    assert_eq!(cond(&status, "Ready"), pair("False", "RolesNotReady"));
    assert_eq!(
        condition(&status, "Ready").message,
        "role decode: StatefulSet llm-decode has not reported status yet; \
         role prefill: 1/2 replicas ready"
    );
    assert_eq!(cond(&status, "Progressing"), pair("True", "Deploying"));
}

#[test]
fn missing_child_is_pending() {
    let isvc = pd_service(json!({}));
    let objects = vec![sts("prefill", 2, 2), deployment("router", 1, 1)];
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Pending);
    assert_eq!(status.components["decode"].ready_replicas, 0);
    assert_eq!(status.components["decode"].total_pods, 1);
    assert_eq!(cond(&status, "Ready"), pair("False", "RolesNotReady"));
    assert_eq!(cond(&status, "Progressing"), pair("True", "Deploying"));
    assert_eq!(
        condition(&status, "Progressing").message,
        "role decode: StatefulSet llm-decode not created yet"
    );
}

#[test]
fn nothing_observed_leaves_every_role_pending() {
    let isvc = pd_service(json!({}));
    let status = aggregate(&isvc, vec![], at(100));
    for role in ["decode", "prefill", "router"] {
        assert_eq!(phase(&status, role), ComponentPhase::Pending, "{role}");
    }
    assert_eq!(
        status.summary.as_deref(),
        Some("decode 0/1, prefill 0/2, router 0/1")
    );
    assert!(
        condition(&status, "Progressing")
            .message
            .contains("Deployment llm-router not created yet")
    );
}

#[test]
fn created_but_unscheduled_pods_are_pending_with_the_scheduler_message() {
    let isvc = pd_service(json!({}));
    let mut unplaced = pod("decode", "llm-decode-0", false);
    unplaced["spec"] = json!({"containers": [{"name": "vllm"}]});
    unplaced["status"] = json!({
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
        }],
    });
    let mut objects = all_ready();
    objects[0] = sts("decode", 1, 0);
    objects[3] = unplaced;
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Pending);
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
    assert_eq!(
        condition(&status, "Progressing").message,
        "role decode: 0/1 replicas ready (pod llm-decode-0 is unschedulable: \
         0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)"
    );
}

#[test]
fn scheduled_but_unready_pods_are_deploying() {
    let isvc = pd_service(json!({}));
    let mut objects = all_ready();
    objects[0] = sts("decode", 1, 0);
    objects[3] = pod("decode", "llm-decode-0", false);
    let status = aggregate(&isvc, objects, at(100));
    assert_eq!(phase(&status, "decode"), ComponentPhase::Deploying);
}

#[test]
fn workload_status_decides_between_pending_and_deploying_without_pods() {
    let isvc = pd_service(json!({}));
    let mut no_pods_yet = sts("decode", 1, 0);
    no_pods_yet["status"]["replicas"] = json!(0);
    let status = aggregate(&isvc, vec![no_pods_yet], at(100));
    assert_eq!(phase(&status, "decode"), ComponentPhase::Pending);

    let status = aggregate(&isvc, vec![sts("decode", 1, 0)], at(100));
    assert_eq!(phase(&status, "decode"), ComponentPhase::Deploying);
}

fn multinode_service() -> InferenceService {
    let template = json!({"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]}});
    service(json!({
        "roles": [
            {"name": "prefill", "componentType": "prefiller", "replicas": 2,
             "multinode": {"nodeCount": 4}, "template": template},
            {"name": "decode", "componentType": "decoder", "replicas": 1, "template": template},
        ]
    }))
}

#[test]
fn leader_worker_set_readiness_counts_groups_and_pods() {
    let isvc = multinode_service();
    // Group 0 fully ready (4 pods), group 1 has 1 of 4 ready: 1 ready replica, 5 ready pods.
    let mut objects = vec![
        lws("prefill", 2, 4, 1),
        sts("decode", 1, 1),
        pod("decode", "llm-decode-0", true),
    ];
    for group in 0..2 {
        for index in 0..4 {
            let ready = group == 0 || index == 0;
            objects.push(pod(
                "prefill",
                &format!("llm-prefill-{group}-{index}"),
                ready,
            ));
        }
    }
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(
        status.components["prefill"],
        ComponentStatus {
            desired_replicas: 2,
            ready_replicas: 1,
            nodes_per_replica: 4,
            total_pods: 8,
            ready_pods: 5,
            phase: ComponentPhase::Deploying,
            last_update_time: Some(at(100)),
        }
    );
    assert_eq!(status.summary.as_deref(), Some("prefill 1/2, decode 1/1"));
}

#[test]
fn leader_worker_set_ready_pods_fall_back_to_ready_groups_without_pods() {
    let isvc = multinode_service();
    let status = aggregate(
        &isvc,
        vec![lws("prefill", 2, 4, 2), sts("decode", 1, 1)],
        at(100),
    );
    let prefill = &status.components["prefill"];
    assert_eq!(
        (
            prefill.ready_replicas,
            prefill.ready_pods,
            prefill.total_pods
        ),
        (2, 8, 8)
    );
    assert_eq!(prefill.phase, ComponentPhase::Running);
    assert_eq!(cond(&status, "Ready"), pair("True", "AllRolesReady"));
}

#[test]
fn statefulset_for_a_multinode_role_is_not_its_workload() {
    // After a role turns multi-node, its old StatefulSet does not stand in for the LWS.
    let isvc = multinode_service();
    let status = aggregate(
        &isvc,
        vec![sts("prefill", 2, 2), sts("decode", 1, 1)],
        at(100),
    );
    assert_eq!(phase(&status, "prefill"), ComponentPhase::Pending);
    assert!(
        condition(&status, "Progressing")
            .message
            .contains("LeaderWorkerSet llm-prefill not created yet")
    );
}

#[test]
fn router_is_a_component_backed_by_its_deployment() {
    let isvc = service(json!({
        "roles": [
            {"name": "worker", "componentType": "worker", "replicas": 1,
             "template": {"spec": {"containers": [{"name": "vllm"}]}}},
            {"name": "epp", "componentType": "router", "replicas": 2},
        ]
    }));
    let objects = vec![sts("worker", 1, 1), deployment("epp", 2, 1)];
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(
        status.components["epp"],
        ComponentStatus {
            desired_replicas: 2,
            ready_replicas: 1,
            nodes_per_replica: 1,
            total_pods: 2,
            ready_pods: 1,
            phase: ComponentPhase::Deploying,
            last_update_time: Some(at(100)),
        }
    );
    assert_eq!(status.summary.as_deref(), Some("worker 1/1, epp 1/2"));
    assert_eq!(
        condition(&status, "Progressing").message,
        "role epp: 1/2 replicas ready"
    );
}

#[test]
fn zero_desired_replicas_is_running() {
    let isvc = service(json!({
        "roles": [{"name": "worker", "componentType": "worker", "replicas": 0,
                   "template": {"spec": {"containers": [{"name": "vllm"}]}}}]
    }));
    let status = aggregate(&isvc, vec![sts("worker", 0, 0)], at(100));
    assert_eq!(phase(&status, "worker"), ComponentPhase::Running);
    assert_eq!(status.components["worker"].total_pods, 0);
    assert_eq!(cond(&status, "Ready"), pair("True", "AllRolesReady"));
}

#[test]
fn children_of_other_services_and_namespaces_are_ignored() {
    let isvc = pd_service(json!({"schedulingStrategy": {"schedulerName": "volcano"}}));
    let mut other_service = sts("decode", 1, 1);
    other_service["metadata"] = meta("other", "decode", "llm-decode");
    let mut other_namespace = sts("decode", 1, 1);
    other_namespace["metadata"]["namespace"] = json!("elsewhere");
    let mut unlabelled = sts("decode", 1, 1);
    unlabelled["metadata"]["labels"] = json!({"fusioninfer.io/service": SVC});
    let mut foreign_crash = waiting_pod("prefill", "other-prefill-0", "CrashLoopBackOff", "x");
    foreign_crash["metadata"]["labels"]["fusioninfer.io/service"] = json!("other");
    let mut foreign_group = pod_group("Pending", true);
    foreign_group["metadata"]["labels"]["fusioninfer.io/service"] = json!("other");
    let objects = vec![
        other_service,
        other_namespace,
        unlabelled,
        sts("prefill", 2, 2),
        deployment("router", 1, 1),
        foreign_crash,
        foreign_group,
    ];
    let status = aggregate(&isvc, objects, at(100));

    assert_eq!(phase(&status, "decode"), ComponentPhase::Pending);
    assert_eq!(phase(&status, "prefill"), ComponentPhase::Running);
    assert_eq!(cond(&status, "Degraded"), pair("False", "AsExpected"));
}

#[test]
fn children_are_matched_by_labels_not_names() {
    let isvc = pd_service(json!({}));
    let mut renamed = sts("decode", 1, 1);
    renamed["metadata"]["name"] = json!("something-else");
    let objects = vec![renamed, sts("prefill", 2, 2), deployment("router", 1, 1)];
    let status = aggregate(&isvc, objects, at(100));
    assert_eq!(phase(&status, "decode"), ComponentPhase::Running);
}

#[test]
fn the_expected_name_wins_among_several_labelled_children() {
    // E.g. a hand-made copy carrying the same labels: the planner's `{svc}-{role}` is the one.
    let isvc = pd_service(json!({}));
    let mut copy = sts("decode", 1, 0);
    copy["metadata"]["name"] = json!("aaa-decode-copy");
    let objects = vec![copy, sts("decode", 1, 1), sts("prefill", 2, 2)];
    let status = aggregate(&isvc, objects, at(100));
    assert_eq!(phase(&status, "decode"), ComponentPhase::Running);
}

#[test]
fn aggregating_again_with_unchanged_inputs_changes_nothing() {
    let scenarios: Vec<(InferenceService, Vec<Value>)> = vec![
        (pd_service(json!({})), all_ready()),
        (
            pd_service(json!({})),
            vec![sts("decode", 1, 0), sts_without_status("prefill")],
        ),
        (
            pd_service(json!({})),
            vec![
                sts("decode", 1, 0),
                waiting_pod("decode", "llm-decode-0", "CrashLoopBackOff", "back-off"),
            ],
        ),
    ];
    for (mut isvc, objects) in scenarios {
        let first = aggregate(&isvc, objects.clone(), at(100));
        isvc.status = Some(first.clone());
        let second = aggregate(&isvc, objects.clone(), at(200));
        assert_eq!(second, first, "a later aggregation must not differ");
        isvc.status = Some(second.clone());
        assert_eq!(aggregate(&isvc, objects, at(300)), first);
    }
}

#[test]
fn last_transition_time_moves_only_when_a_condition_status_flips() {
    let mut isvc = pd_service(json!({}));
    let deploying = |ready: i32| {
        vec![
            sts("decode", 1, 1),
            sts("prefill", 2, ready),
            deployment("router", 1, 1),
        ]
    };

    let t1 = aggregate(&isvc, deploying(0), at(100));
    isvc.status = Some(t1);
    // Still deploying, different counts: messages change, transitions do not.
    let t2 = aggregate(&isvc, deploying(1), at(200));
    assert_eq!(
        condition(&t2, "Ready").message,
        "role prefill: 1/2 replicas ready"
    );
    for c in &t2.conditions {
        assert_eq!(c.last_transition_time, at(100), "{}", c.type_);
    }
    isvc.status = Some(t2);
    // All ready: Ready and Progressing flip, Degraded stays False.
    let t3 = aggregate(&isvc, deploying(2), at(300));
    assert_eq!(condition(&t3, "Ready").last_transition_time, at(300));
    assert_eq!(condition(&t3, "Progressing").last_transition_time, at(300));
    assert_eq!(condition(&t3, "Degraded").last_transition_time, at(100));
}

#[test]
fn last_update_time_moves_only_for_changed_components() {
    let mut isvc = pd_service(json!({}));
    let objects = |prefill_ready: i32| {
        vec![
            sts("decode", 1, 1),
            sts("prefill", 2, prefill_ready),
            deployment("router", 1, 1),
        ]
    };
    isvc.status = Some(aggregate(&isvc, objects(1), at(100)));
    let status = aggregate(&isvc, objects(2), at(200));

    assert_eq!(status.components["prefill"].last_update_time, Some(at(200)));
    assert_eq!(status.components["decode"].last_update_time, Some(at(100)));
    assert_eq!(status.components["router"].last_update_time, Some(at(100)));
}

#[test]
fn components_of_removed_roles_are_dropped() {
    let mut isvc = pd_service(json!({}));
    let mut previous = aggregate(&isvc, all_ready(), at(100));
    previous
        .components
        .insert("gone".into(), previous.components["decode"].clone());
    isvc.status = Some(previous);
    let status = aggregate(&isvc, all_ready(), at(200));
    assert!(!status.components.contains_key("gone"));
}

#[test]
fn from_objects_sorts_objects_by_kind() {
    let mut group = pod_group("Running", false);
    group["status"]["running"] = json!(2);
    let objects = vec![
        sts("decode", 1, 1),
        lws("prefill", 2, 4, 2),
        deployment("router", 1, 1),
        pod("decode", "llm-decode-0", true),
        group,
        sts("decode2", 1, 1),
    ];
    let observed = Observed::from_objects(objects).unwrap();

    let names =
        |metas: Vec<&Option<String>>| metas.into_iter().flatten().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(
            observed
                .stateful_sets
                .iter()
                .map(|o| &o.metadata.name)
                .collect()
        ),
        ["llm-decode", "llm-decode2"]
    );
    assert_eq!(
        names(
            observed
                .leader_worker_sets
                .iter()
                .map(|o| &o.metadata.name)
                .collect()
        ),
        ["llm-prefill"]
    );
    assert_eq!(
        observed.leader_worker_sets[0]
            .status
            .as_ref()
            .unwrap()
            .ready_replicas,
        Some(2)
    );
    assert_eq!(
        names(
            observed
                .deployments
                .iter()
                .map(|o| &o.metadata.name)
                .collect()
        ),
        ["llm-router"]
    );
    assert_eq!(
        names(observed.pods.iter().map(|o| &o.metadata.name).collect()),
        ["llm-decode-0"]
    );
    assert_eq!(
        observed.pod_groups[0].status.as_ref().unwrap().running,
        Some(2)
    );
}

#[test]
fn from_objects_rejects_unknown_kinds_with_index_and_kind() {
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
    let err = Observed::from_objects(vec![sts("decode", 1, 1), service]).unwrap_err();
    match &err {
        Error::UnsupportedKind {
            index,
            api_version,
            kind,
        } => {
            assert_eq!(
                (*index, api_version.as_str(), kind.as_str()),
                (1, "v1", "Service")
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("object 1: unsupported kind \"Service\" (apiVersion \"v1\")"),
        "{text}"
    );
}

#[test]
fn from_objects_rejects_a_known_kind_under_another_api_version() {
    let mut old = sts("decode", 1, 1);
    old["apiVersion"] = json!("apps/v1beta2");
    let err = Observed::from_objects(vec![old]).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedKind { index: 0, api_version, .. } if api_version == "apps/v1beta2"),
        "{err:?}"
    );
}

#[test]
fn from_objects_rejects_objects_without_type_meta() {
    let err = Observed::from_objects(vec![pod("decode", "p", true), json!({"metadata": {}})])
        .unwrap_err();
    assert!(
        matches!(err, Error::MissingTypeMeta { index: 1 }),
        "{err:?}"
    );
    let err = Observed::from_objects(vec![json!("StatefulSet")]).unwrap_err();
    assert!(
        matches!(err, Error::MissingTypeMeta { index: 0 }),
        "{err:?}"
    );
}

#[test]
fn from_objects_reports_objects_that_do_not_fit_their_kind() {
    let mut broken = sts("decode", 1, 1);
    broken["status"]["readyReplicas"] = json!("three");
    let err = Observed::from_objects(vec![broken]).unwrap_err();
    assert!(
        matches!(&err, Error::Decode { index: 0, kind, name, .. } if kind == "StatefulSet" && name == "llm-decode"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("object 0 (StatefulSet \"llm-decode\"): "),
        "{err}"
    );
}

#[test]
fn invalid_spec_status_lists_every_error_and_keeps_components() {
    let mut isvc = pd_service(json!({}));
    let previous = aggregate(&isvc, all_ready(), at(100));
    isvc.status = Some(previous.clone());
    let errors = vec![
        "roles[0] (decode): componentType decoder cannot be mixed with worker role w".to_owned(),
        "roles[2] (router): multinode is not allowed on a router".to_owned(),
    ];
    let status = invalid_spec_status(&isvc, &errors, at(200));
    check_conventions(&status);

    assert_eq!(cond(&status, "Ready"), pair("False", "InvalidSpec"));
    assert_eq!(cond(&status, "Degraded"), pair("True", "InvalidSpec"));
    assert_eq!(cond(&status, "Progressing"), pair("False", "InvalidSpec"));
    for c in &status.conditions {
        for e in &errors {
            assert!(
                c.message.contains(e),
                "{} lacks {e:?}: {}",
                c.type_,
                c.message
            );
        }
    }
    assert_eq!(status.components, previous.components);
    assert_eq!(status.summary, previous.summary);
    // Ready and Degraded flipped; Progressing was already False.
    assert_eq!(condition(&status, "Ready").last_transition_time, at(200));
    assert_eq!(condition(&status, "Degraded").last_transition_time, at(200));
    assert_eq!(
        condition(&status, "Progressing").last_transition_time,
        at(100)
    );

    // Reporting the same errors again is a no-op.
    isvc.status = Some(status.clone());
    assert_eq!(invalid_spec_status(&isvc, &errors, at(300)), status);
}

#[test]
fn invalid_spec_status_without_previous_status() {
    let isvc = pd_service(json!({}));
    let status = invalid_spec_status(
        &isvc,
        &["roles: at least one role is required".to_owned()],
        at(100),
    );
    check_conventions(&status);
    assert!(status.components.is_empty());
    assert_eq!(
        condition(&status, "Ready").message,
        "invalid spec: roles: at least one role is required"
    );
}

#[test]
fn long_kubelet_messages_are_capped() {
    let isvc = pd_service(json!({}));
    let huge = "x".repeat(100_000);
    let objects = vec![
        sts("decode", 1, 0),
        waiting_pod("decode", "llm-decode-0", "CrashLoopBackOff", &huge),
    ];
    let status = aggregate(&isvc, objects, at(100));
    let message = &condition(&status, "Degraded").message;
    assert!(message.len() <= 2048, "{} bytes", message.len());
    assert!(
        message.starts_with(
            "role decode: pod llm-decode-0 container vllm is in CrashLoopBackOff: xxx"
        )
    );
}
