//! Behaviour of the topology planner, through the public API: which objects a spec becomes and
//! what they say.

mod common;

use common::*;
use fusioninfer_api::{InferenceService, RoutingStrategy};
use fusioninfer_core::manifest::to_yaml_stream;
use fusioninfer_core::plan::{DesiredObject, PlanOptions, plan};
use fusioninfer_core::strategy::endpoint_picker_config;
use serde_json::{Value, json};

const UID: &str = "0b5c3a57-1111-4222-8333-444455556666";

fn objects(isvc: &InferenceService) -> Vec<DesiredObject> {
    plan(isvc, &PlanOptions::default()).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn jsons(isvc: &InferenceService) -> Vec<Value> {
    objects(isvc).iter().map(DesiredObject::to_json).collect()
}

fn kinds_and_names(isvc: &InferenceService) -> Vec<(String, String)> {
    objects(isvc)
        .iter()
        .map(|o| (o.kind(), o.name().to_owned()))
        .collect()
}

/// The one object of `kind` named `name`.
fn find(objects: &[Value], kind: &str, name: &str) -> Value {
    let found: Vec<_> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name} in {objects:#?}");
    found[0].clone()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect()
}

fn role_labels(role: &str, kind: &str) -> Value {
    json!({
        "fusioninfer.io/service": SVC,
        "fusioninfer.io/role-name": role,
        "fusioninfer.io/component-type": kind,
        "app.kubernetes.io/managed-by": "fusioninfer",
    })
}

fn with_labels(mut labels: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        labels[k] = v.clone();
    }
    labels
}

/// A template with one container `vllm` serving on `port` (named http) with `resources`.
fn serving_template(port: i64, resources: Value) -> Value {
    json!({"spec": {"containers": [{
        "name": "vllm", "image": "vllm/vllm-openai:v0.32.0",
        "ports": [{"name": "metrics", "containerPort": 9400}, {"name": "http", "containerPort": port}],
        "resources": resources,
    }]}})
}

/// Prefill (2 × 4 nodes), decode (1 replica, single node), and a router.
fn pd(extra_spec: Value, router_extra: Value) -> InferenceService {
    let mut spec = json!({"roles": [
        with(prefiller("prefill"), json!({"replicas": 2, "multinode": {"nodeCount": 4}})),
        decoder("decode"),
        with(router("router"), router_extra),
    ]});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    named_service(SVC, spec)
}

fn volcano(queue: Value) -> Value {
    let mut scheduling = json!({"schedulerName": "volcano"});
    for (k, v) in queue.as_object().unwrap() {
        scheduling[k] = v.clone();
    }
    json!({"schedulingStrategy": scheduling})
}

// ---- serving roles ----

#[test]
fn single_node_role_becomes_a_parallel_statefulset_and_a_headless_service() {
    for multinode in [json!(null), json!({"nodeCount": 1})] {
        let mut role = with(
            worker("worker"),
            json!({"replicas": 3, "template": serving_template(8080, json!({}))}),
        );
        if !multinode.is_null() {
            role["multinode"] = multinode;
        }
        let isvc = service(vec![role]);
        assert_eq!(
            kinds_and_names(&isvc),
            pairs(&[("StatefulSet", "llm-worker"), ("Service", "llm-worker")])
        );
        let objects = jsons(&isvc);
        let sts = find(&objects, "StatefulSet", "llm-worker");
        let selector = json!({"fusioninfer.io/service": SVC, "fusioninfer.io/role-name": "worker"});
        assert_eq!(sts["apiVersion"], "apps/v1");
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["serviceName"], "llm-worker");
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(sts["spec"]["selector"], json!({"matchLabels": selector}));
        assert_eq!(
            sts["spec"]["template"]["metadata"]["labels"],
            with_labels(
                role_labels("worker", "worker"),
                json!({"fusioninfer.io/serving": "true"})
            )
        );
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["image"],
            "vllm/vllm-openai:v0.32.0"
        );
        assert!(
            sts["spec"]["template"]["spec"]
                .get("schedulerName")
                .is_none()
        );

        let svc = find(&objects, "Service", "llm-worker");
        assert_eq!(svc["spec"]["clusterIP"], "None");
        assert_eq!(svc["spec"]["selector"], selector);
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "http", "port": 8080, "targetPort": 8080}])
        );
    }
}

#[test]
fn headless_service_uses_the_default_port_without_an_http_port() {
    let objects = jsons(&service(vec![worker("w")]));
    let svc = find(&objects, "Service", "llm-w");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8000);
}

#[test]
fn multi_node_role_becomes_a_leaderworkerset_whose_leaders_alone_serve() {
    let role = with(
        prefiller("prefill"),
        json!({
            "replicas": 2,
            "multinode": {"nodeCount": 4},
            // Even a user asking for it does not make workers serving pods.
            "template": with(template(), json!({"metadata": {"labels": {"fusioninfer.io/serving": "true", "team": "a"}}})),
        }),
    );
    let isvc = service(vec![role, decoder("decode")]);
    assert_eq!(
        kinds_and_names(&isvc),
        pairs(&[
            ("LeaderWorkerSet", "llm-prefill"),
            ("StatefulSet", "llm-decode"),
            ("Service", "llm-decode"),
        ])
    );
    let objects = jsons(&isvc);
    let lws = find(&objects, "LeaderWorkerSet", "llm-prefill");
    assert_eq!(lws["apiVersion"], "leaderworkerset.x-k8s.io/v1");
    assert_eq!(lws["spec"]["replicas"], 2);
    let lwt = &lws["spec"]["leaderWorkerTemplate"];
    assert_eq!(lwt["size"], 4);
    let labels = role_labels("prefill", "prefiller");
    assert_eq!(
        lwt["leaderTemplate"]["metadata"]["labels"],
        with_labels(
            labels.clone(),
            json!({"fusioninfer.io/serving": "true", "team": "a"})
        )
    );
    assert_eq!(
        lwt["workerTemplate"]["metadata"]["labels"],
        with_labels(labels, json!({"team": "a"}))
    );
    for template in ["leaderTemplate", "workerTemplate"] {
        assert_eq!(lwt[template]["spec"]["containers"][0]["name"], "vllm");
    }
}

#[test]
fn user_template_metadata_is_kept_and_fusioninfer_keys_win() {
    let user = json!({
        "labels": {"team": "ml", "fusioninfer.io/role-name": "spoofed", "fusioninfer.io/service": "other"},
        "annotations": {"prometheus.io/scrape": "true"},
    });
    let isvc = named_service(
        SVC,
        json!({
            "schedulingStrategy": {"schedulerName": "volcano"},
            "roles": [
                with(prefiller("p"), json!({"template": with(template(), json!({"metadata": user}))})),
                with(decoder("d"), json!({"multinode": {"nodeCount": 2}, "template": with(template(), json!({"metadata": user}))})),
            ],
        }),
    );
    let objects = jsons(&isvc);
    let sts = find(&objects, "StatefulSet", "llm-p");
    let lws = find(&objects, "LeaderWorkerSet", "llm-d");
    let templates = [
        ("p", &sts["spec"]["template"]),
        ("d", &lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]),
        ("d", &lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]),
    ];
    for (role, template) in templates {
        let metadata = &template["metadata"];
        assert_eq!(metadata["labels"]["team"], "ml");
        assert_eq!(metadata["labels"]["fusioninfer.io/role-name"], role);
        assert_eq!(metadata["labels"]["fusioninfer.io/service"], SVC);
        assert_eq!(metadata["annotations"]["prometheus.io/scrape"], "true");
        // Volcano's annotations are added next to the user's.
        assert_eq!(metadata["annotations"]["scheduling.k8s.io/group-name"], SVC);
        assert_eq!(metadata["annotations"]["volcano.sh/task-spec"], role);
    }
}

// ---- metadata of every object ----

fn everything() -> InferenceService {
    pd(
        volcano(json!({"queue": "q"})),
        json!({"httproute": {"parentRefs": [{"name": "gw"}]}}),
    )
}

#[test]
fn every_object_carries_the_labels_and_the_podgroup_those_of_the_service() {
    let objects = jsons(&everything());
    let kinds: Vec<_> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "PodGroup",
            "LeaderWorkerSet",
            "StatefulSet",
            "Service",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "InferencePool",
            "HTTPRoute"
        ]
    );
    for object in &objects {
        let labels = &object["metadata"]["labels"];
        if object["kind"] == "PodGroup" {
            // It spans every serving role, so it names no single role (a documented choice).
            assert_eq!(
                *labels,
                json!({"fusioninfer.io/service": SVC, "app.kubernetes.io/managed-by": "fusioninfer"})
            );
            continue;
        }
        let role = labels["fusioninfer.io/role-name"].as_str().unwrap();
        let kind = match role {
            "prefill" => "prefiller",
            "decode" => "decoder",
            "router" => "router",
            other => panic!("unexpected role {other}"),
        };
        assert_eq!(*labels, role_labels(role, kind), "{object:#}");
    }
}

#[test]
fn owner_reference_only_when_the_service_has_a_uid() {
    let mut isvc = everything();
    for object in jsons(&isvc) {
        assert!(
            object["metadata"].get("ownerReferences").is_none(),
            "{object:#}"
        );
    }
    isvc.metadata.uid = Some(UID.to_owned());
    for object in jsons(&isvc) {
        assert_eq!(
            object["metadata"]["ownerReferences"],
            json!([{
                "apiVersion": "fusioninfer.io/v1alpha1",
                "kind": "InferenceService",
                "name": SVC,
                "uid": UID,
                "controller": true,
                "blockOwnerDeletion": true,
            }]),
            "{}",
            object["kind"]
        );
    }
}

#[test]
fn namespace_is_propagated_or_left_out() {
    let mut isvc = everything();
    isvc.metadata.namespace = Some("team-a".to_owned());
    let objects = jsons(&isvc);
    for object in &objects {
        assert_eq!(
            object["metadata"]["namespace"], "team-a",
            "{}",
            object["kind"]
        );
    }
    let binding = find(&objects, "RoleBinding", "llm-router");
    assert_eq!(binding["subjects"][0]["namespace"], "team-a");

    isvc.metadata.namespace = None;
    for object in jsons(&isvc) {
        assert!(object["metadata"].get("namespace").is_none(), "{object:#}");
    }
}

// ---- scheduling ----

#[test]
fn volcano_podgroup_sums_pods_and_resources() {
    let prefill_resources = json!({
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "8"},
        // The request wins where there is one; the limit counts where there is none.
        "limits": {"cpu": "8", "nvidia.com/gpu": "8", "ephemeral-storage": "10Gi"},
    });
    let mut prefill_template = serving_template(8000, prefill_resources);
    prefill_template["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}));
    let isvc = named_service(
        SVC,
        json!({
            "schedulingStrategy": {"schedulerName": "volcano", "queue": "inference", "priorityClassName": "high"},
            "roles": [
                with(prefiller("prefill"), json!({"replicas": 2, "multinode": {"nodeCount": 4}, "template": prefill_template})),
                with(decoder("decode"), json!({"replicas": 3, "template": serving_template(8000, json!({"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}}))})),
                // Zero replicas: in the task map with 0 pods, nothing to the sums.
                with(decoder("spare"), json!({"replicas": 0, "template": serving_template(8000, json!({"requests": {"cpu": "100"}}))})),
                // The router's pods are not part of the gang.
                with(router("router"), json!({"replicas": 5})),
            ],
        }),
    );
    let objects = jsons(&isvc);
    let group = find(&objects, "PodGroup", SVC);
    assert_eq!(group["apiVersion"], "scheduling.volcano.sh/v1beta1");
    // prefill: 2 × 4 = 8 pods, each 4.5 cpu, 16.5Gi, 8 GPUs, 10Gi storage; decode: 3 pods,
    // each 1Gi and one GPU (limits only).
    assert_eq!(
        group["spec"],
        json!({
            "minMember": 11,
            "minTaskMember": {"prefill": 8, "decode": 3, "spare": 0},
            "minResources": {
                "cpu": "36",
                "memory": "135Gi",
                "nvidia.com/gpu": "67",
                "ephemeral-storage": "80Gi",
            },
            "queue": "inference",
            "priorityClassName": "high",
        })
    );
    // Serving pods join the group under their role's task; the endpoint picker does not.
    let lws = find(&objects, "LeaderWorkerSet", "llm-prefill");
    let sts = find(&objects, "StatefulSet", "llm-decode");
    for (task, template) in [
        (
            "prefill",
            &lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"],
        ),
        (
            "prefill",
            &lws["spec"]["leaderWorkerTemplate"]["workerTemplate"],
        ),
        ("decode", &sts["spec"]["template"]),
    ] {
        assert_eq!(template["spec"]["schedulerName"], "volcano");
        assert_eq!(
            template["metadata"]["annotations"],
            json!({"scheduling.k8s.io/group-name": SVC, "volcano.sh/task-spec": task})
        );
    }
    let epp = find(&objects, "Deployment", "llm-router");
    assert!(
        epp["spec"]["template"]["spec"]
            .get("schedulerName")
            .is_none()
    );
    assert!(
        epp["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none()
    );
}

#[test]
fn volcano_podgroup_without_queue_or_priority_leaves_them_out() {
    let objects = jsons(&named_service(
        SVC,
        json!({"schedulingStrategy": {"schedulerName": "volcano"}, "roles": [worker("w")]}),
    ));
    let group = find(&objects, "PodGroup", SVC);
    assert_eq!(
        group["spec"],
        json!({"minMember": 1, "minTaskMember": {"w": 1}})
    );
}

#[test]
fn another_scheduler_is_set_on_serving_pods_without_a_podgroup() {
    let isvc = pd(
        json!({"schedulingStrategy": {"schedulerName": "my-scheduler"}}),
        json!({}),
    );
    let objects = jsons(&isvc);
    assert!(objects.iter().all(|o| o["kind"] != "PodGroup"));
    let lws = find(&objects, "LeaderWorkerSet", "llm-prefill");
    let sts = find(&objects, "StatefulSet", "llm-decode");
    for template in [
        &lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"],
        &lws["spec"]["leaderWorkerTemplate"]["workerTemplate"],
        &sts["spec"]["template"],
    ] {
        assert_eq!(template["spec"]["schedulerName"], "my-scheduler");
        assert!(template["metadata"].get("annotations").is_none());
    }
}

#[test]
fn default_scheduler_keeps_the_template_untouched() {
    let own = with(
        worker("w"),
        json!({"template": {"spec": {"schedulerName": "mine", "containers": [{"name": "c"}]}}}),
    );
    let objects = jsons(&service(vec![own]));
    assert!(objects.iter().all(|o| o["kind"] != "PodGroup"));
    let sts = find(&objects, "StatefulSet", "llm-w");
    assert_eq!(sts["spec"]["template"]["spec"]["schedulerName"], "mine");
}

// ---- router ----

#[test]
fn router_objects_in_order() {
    let isvc = service(vec![worker("w"), router("router")]);
    assert_eq!(
        kinds_and_names(&isvc),
        pairs(&[
            ("StatefulSet", "llm-w"),
            ("Service", "llm-w"),
            ("ServiceAccount", "llm-router"),
            ("Role", "llm-router"),
            ("RoleBinding", "llm-router"),
            ("ConfigMap", "llm-router"),
            ("Deployment", "llm-router"),
            ("Service", "llm-router"),
            ("InferencePool", "llm"),
        ])
    );
}

#[test]
fn endpoint_picker_rbac_is_read_only_pods_and_pools() {
    let objects = jsons(&service(vec![worker("w"), router("router")]));
    let role = find(&objects, "Role", "llm-router");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
        ])
    );
    let binding = find(&objects, "RoleBinding", "llm-router");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "llm-router"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "llm-router", "namespace": "default"}])
    );
    let deployment = find(&objects, "Deployment", "llm-router");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "llm-router"
    );
}

#[test]
fn config_map_holds_the_strategy_config_or_the_users_verbatim() {
    let config_of = |router_extra: Value| -> String {
        let isvc = pd(json!({}), router_extra);
        let objects = jsons(&isvc);
        let cm = find(&objects, "ConfigMap", "llm-router");
        let data = cm["data"].as_object().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["config.yaml"]);
        data["config.yaml"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        config_of(json!({})),
        endpoint_picker_config(RoutingStrategy::PrefixCache)
    );
    for strategy in RoutingStrategy::ALL {
        assert_eq!(
            config_of(json!({"strategy": strategy.as_str()})),
            endpoint_picker_config(strategy),
            "{}",
            strategy.as_str()
        );
    }
    // The user's text, comments and all, overrides the strategy.
    let own = "# mine\napiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: random-picker\nschedulingProfiles:\n- name: default\n  plugins: [{pluginRef: random-picker}]\n";
    assert_eq!(
        config_of(json!({"strategy": "queue-size", "endpointPickerConfig": own})),
        own
    );
}

#[test]
fn endpoint_picker_deployment_is_locked_down_and_probed() {
    let options = PlanOptions {
        epp_image: "registry.example/epp:test".to_owned(),
        ..PlanOptions::default()
    };
    let isvc = service(vec![
        worker("w"),
        with(router("router"), json!({"replicas": 2})),
    ]);
    let objects: Vec<Value> = plan(&isvc, &options)
        .unwrap()
        .iter()
        .map(DesiredObject::to_json)
        .collect();
    let deployment = find(&objects, "Deployment", "llm-router");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"fusioninfer.io/service": SVC, "fusioninfer.io/role-name": "router"})
    );
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"], role_labels("router", "router"));
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let epp = &containers[0];
    assert_eq!(epp["name"], "epp");
    assert_eq!(epp["image"], "registry.example/epp:test");
    assert_eq!(
        epp["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        })
    );
    let ports: Vec<_> = epp["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [9002, 9003, 9090]);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(epp[probe]["grpc"]["port"], 9003, "{probe}");
    }
    let args: Vec<_> = epp["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let pool_arg = args.iter().position(|a| *a == "--pool-name").unwrap();
    assert_eq!(args[pool_arg + 1], "llm");
    let config_arg = args.iter().position(|a| *a == "--config-file").unwrap();
    let mount = &epp["volumeMounts"][0];
    assert!(
        args[config_arg + 1].starts_with(mount["mountPath"].as_str().unwrap()),
        "{args:?}"
    );
    assert_eq!(
        pod["spec"]["volumes"][0]["configMap"]["name"], "llm-router",
        "the config is the ConfigMap's"
    );

    let service = find(&objects, "Service", "llm-router");
    let ports: Vec<_> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().unwrap(),
                p["targetPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(9002, 9002), (9003, 9003), (9090, 9090)]);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn default_epp_image_is_versioned() {
    let objects = jsons(&service(vec![worker("w"), router("router")]));
    let deployment = find(&objects, "Deployment", "llm-router");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(image.contains(":v"), "{image}");
}

#[test]
fn inference_pool_selects_serving_pods_on_the_serving_port() {
    let serve_on = |port: i64| json!({"template": serving_template(port, json!({}))});
    let isvc = pd(json!({}), json!({}));
    let objects = jsons(&isvc);
    let pool = find(&objects, "InferencePool", SVC);
    assert_eq!(pool["apiVersion"], "inference.networking.k8s.io/v1");
    assert_eq!(
        pool["spec"]["selector"],
        json!({"matchLabels": {"fusioninfer.io/service": SVC, "fusioninfer.io/serving": "true"}})
    );
    assert_eq!(pool["spec"]["targetPorts"], json!([{"number": 8000}]));
    let epp_ref = &pool["spec"]["endpointPickerRef"];
    assert_eq!(epp_ref["kind"], "Service");
    assert_eq!(epp_ref["name"], "llm-router");
    assert_eq!(epp_ref["port"], json!({"number": 9002}));
    assert_eq!(epp_ref["failureMode"], "FailClose");

    // The port named http of the first container; the router's failure mode is passed on.
    let isvc = named_service(
        SVC,
        json!({"roles": [
            with(prefiller("p"), serve_on(8123)),
            with(decoder("d"), serve_on(8123)),
            with(router("r"), json!({"failureMode": "FailOpen"})),
        ]}),
    );
    let objects = jsons(&isvc);
    let pool = find(&objects, "InferencePool", SVC);
    assert_eq!(pool["spec"]["targetPorts"], json!([{"number": 8123}]));
    assert_eq!(pool["spec"]["endpointPickerRef"]["failureMode"], "FailOpen");

    // Only the pods the pool selects are serving: StatefulSet pods and LWS leaders.
    let objects = jsons(&everything());
    let serving: Vec<String> = objects
        .iter()
        .flat_map(|o| {
            let spec = &o["spec"];
            [
                ("sts", &spec["template"]),
                ("leader", &spec["leaderWorkerTemplate"]["leaderTemplate"]),
                ("worker", &spec["leaderWorkerTemplate"]["workerTemplate"]),
            ]
            .into_iter()
            .filter(|(_, t)| t["metadata"]["labels"]["fusioninfer.io/serving"] == "true")
            .map(move |(what, _)| format!("{} {what}", o["metadata"]["name"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(serving, ["llm-prefill leader", "llm-decode sts"]);
}

#[test]
fn http_route_only_with_httproute_and_always_to_the_pool() {
    let isvc = pd(json!({}), json!({}));
    assert!(jsons(&isvc).iter().all(|o| o["kind"] != "HTTPRoute"));

    let route = json!({
        "parentRefs": [{"name": "gw", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["llm.example.com"],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1/completions"}}]},
            {"matches": [{"headers": [{"name": "x-model", "value": "llama"}]}]},
        ],
    });
    let objects = jsons(&pd(json!({}), json!({"httproute": route})));
    let http_route = find(&objects, "HTTPRoute", SVC);
    assert_eq!(http_route["apiVersion"], "gateway.networking.k8s.io/v1");
    let spec = &http_route["spec"];
    assert_eq!(spec["parentRefs"], route["parentRefs"]);
    assert_eq!(spec["hostnames"], route["hostnames"]);
    let backend =
        json!([{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": SVC}]);
    let rules = spec["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    for (rule, given) in rules.iter().zip(route["rules"].as_array().unwrap()) {
        assert_eq!(rule["matches"], given["matches"]);
        assert_eq!(rule["backendRefs"], backend);
    }

    // No rules, or an empty list: one catch-all rule to the pool.
    for rules in [json!(null), json!([])] {
        let mut route = json!({"parentRefs": [{"name": "gw"}]});
        if !rules.is_null() {
            route["rules"] = rules;
        }
        let objects = jsons(&pd(json!({}), json!({"httproute": route})));
        let http_route = find(&objects, "HTTPRoute", SVC);
        assert_eq!(
            http_route["spec"]["rules"],
            json!([{"backendRefs": backend}])
        );
    }
}

fn epp_pod(router_template: Value) -> Value {
    let isvc = service(vec![
        worker("w"),
        with(router("router"), json!({"template": router_template})),
    ]);
    let objects = jsons(&isvc);
    find(&objects, "Deployment", "llm-router")["spec"]["template"].clone()
}

#[test]
fn router_template_overrides_the_endpoint_picker_pod() {
    // Image and resources of the container named epp; resources replace the defaults whole.
    let pod = epp_pod(json!({"spec": {"containers": [{
        "name": "epp",
        "image": "mine/epp:1",
        "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "128Mi"}},
    }]}}));
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["image"], "mine/epp:1");
    assert_eq!(
        containers[0]["resources"],
        json!({"requests": {"cpu": "2"}, "limits": {"memory": "128Mi"}})
    );
    // Everything else of the default container stays.
    assert_eq!(containers[0]["readinessProbe"]["grpc"]["port"], 9003);
    assert_eq!(
        containers[0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );

    // A single unnamed container is the endpoint picker.
    let pod = epp_pod(json!({"spec": {"containers": [{"image": "mine/epp:2"}]}}));
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "epp");
    assert_eq!(containers[0]["image"], "mine/epp:2");
    // Without resources in the override, the defaults stay.
    assert_eq!(containers[0]["resources"]["requests"]["memory"], "256Mi");

    // Another name adds a sidecar next to the endpoint picker.
    let pod = epp_pod(json!({"spec": {
        "containers": [{"name": "proxy", "image": "envoy"}],
        "nodeSelector": {"pool": "cpu"},
    }}));
    let names: Vec<_> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["epp", "proxy"]);
    assert_eq!(pod["spec"]["nodeSelector"], json!({"pool": "cpu"}));
    assert_eq!(pod["spec"]["serviceAccountName"], "llm-router");
}

#[test]
fn router_template_labels_cannot_break_selectors() {
    let pod = epp_pod(json!({
        "metadata": {
            "labels": {
                "fusioninfer.io/role-name": "other",
                "fusioninfer.io/service": "other",
                "fusioninfer.io/serving": "true",
                "team": "a",
            },
            "annotations": {"a": "b"},
        },
    }));
    assert_eq!(
        pod["metadata"]["labels"],
        with_labels(role_labels("router", "router"), json!({"team": "a"})),
        "the pool must never select the endpoint picker"
    );
    assert_eq!(pod["metadata"]["annotations"], json!({"a": "b"}));
}

// ---- determinism ----

#[test]
fn planning_is_deterministic() {
    let mut isvc = everything();
    isvc.metadata.uid = Some(UID.to_owned());
    let first = objects(&isvc);
    let second = objects(&isvc);
    assert_eq!(first, second);
    let yaml = |objects: &[DesiredObject]| {
        to_yaml_stream(
            &objects
                .iter()
                .map(DesiredObject::to_json)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(yaml(&first), yaml(&second));
    // A clone (fresh maps, same content) plans the same.
    assert_eq!(yaml(&objects(&isvc.clone())), yaml(&first));
    // Every document of the stream is one object, apiVersion and kind included.
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&yaml(&first)).unwrap();
    assert_eq!(docs.len(), first.len());
    for (doc, object) in docs.iter().zip(&first) {
        assert_eq!(*doc, object.to_json());
        assert_eq!(doc["apiVersion"], object.api_version());
        assert_eq!(doc["kind"], object.kind());
    }
}

#[test]
fn invalid_specs_plan_nothing() {
    let errors = plan(
        &service(vec![worker("w"), decoder("d")]),
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("cannot be mixed"));
}

/// Prefill and decode on port `port` (the decoder's engine probed on `http`), behind a router
/// with `router_extra`.
fn pd_router(port: i64, decode_extra: Value, router_extra: Value) -> InferenceService {
    let mut decode_template = serving_template(port, json!({}));
    decode_template["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/health", "port": "http"}});
    decode_template["spec"]["containers"][0]["livenessProbe"] =
        json!({"tcpSocket": {"port": port}});
    service(vec![
        with(
            prefiller("prefill"),
            json!({"template": serving_template(port, json!({}))}),
        ),
        with(
            with(decoder("decode"), json!({"template": decode_template})),
            decode_extra,
        ),
        with(router("router"), router_extra),
    ])
}

fn pod_spec(objects: &[Value], kind: &str, name: &str, pointer: &str) -> Value {
    find(objects, kind, name).pointer(pointer).unwrap().clone()
}

#[test]
fn pd_disaggregation_puts_the_sidecar_on_the_decode_pods_serving_port() {
    let isvc = pd_router(8000, json!({}), json!({"strategy": "pd-disaggregation"}));
    let objects = jsons(&isvc);
    let decode = pod_spec(&objects, "StatefulSet", "llm-decode", "/spec/template/spec");
    let containers = decode["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    let (engine, sidecar) = (&containers[0], &containers[1]);
    // The engine moves to the internal port, told by the env var; its probes follow it.
    assert_eq!(
        engine["env"],
        json!([{"name": "FUSIONINFER_ENGINE_PORT", "value": "8200"}])
    );
    assert_eq!(
        engine["ports"],
        json!([{"name": "metrics", "containerPort": 9400}, {"name": "engine", "containerPort": 8200}])
    );
    assert_eq!(engine["readinessProbe"]["httpGet"]["port"], 8200);
    assert_eq!(engine["livenessProbe"]["tcpSocket"]["port"], 8200);
    // The sidecar serves the pod's port, allowlisting the pool's prefillers.
    assert_eq!(sidecar["name"], "pd-sidecar");
    assert_eq!(
        sidecar["image"],
        format!(
            "ghcr.io/fusioninfer/fusioninfer-pd-sidecar:v{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(
        sidecar["args"],
        json!([
            "--port",
            "8000",
            "--engine-port",
            "8200",
            "--metrics-port",
            "9091",
            "--pool-name",
            "llm",
            "--pool-namespace",
            "$(POD_NAMESPACE)"
        ])
    );
    assert_eq!(
        sidecar["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        sidecar["ports"],
        json!([{"name": "http", "containerPort": 8000, "protocol": "TCP"},
               {"name": "pd-metrics", "containerPort": 9091, "protocol": "TCP"}])
    );
    assert_eq!(
        sidecar["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(decode["serviceAccountName"], "llm-pd-sidecar");
    // Prefill pods, the pool and the decoders' Service keep the serving port.
    let prefill = pod_spec(
        &objects,
        "StatefulSet",
        "llm-prefill",
        "/spec/template/spec",
    );
    assert_eq!(prefill["containers"].as_array().unwrap().len(), 1);
    assert!(prefill["containers"][0].get("env").is_none());
    assert!(prefill.get("serviceAccountName").is_none());
    assert_eq!(
        find(&objects, "InferencePool", "llm")["spec"]["targetPorts"],
        json!([{"number": 8000}])
    );
    assert_eq!(
        find(&objects, "Service", "llm-decode")["spec"]["ports"][0]["port"],
        8000
    );
    // Its account may read pods and pools, nothing else, like the endpoint picker's.
    let role = find(&objects, "Role", "llm-pd-sidecar");
    assert_eq!(role["rules"], find(&objects, "Role", "llm-router")["rules"]);
    let binding = find(&objects, "RoleBinding", "llm-pd-sidecar");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "llm-pd-sidecar", "namespace": "default"}])
    );
    assert_eq!(binding["roleRef"]["name"], "llm-pd-sidecar");
    let names = kinds_and_names(&isvc);
    let sidecar_account = names
        .iter()
        .position(|(k, n)| k == "ServiceAccount" && n == "llm-pd-sidecar")
        .unwrap();
    let epp_account = names
        .iter()
        .position(|(k, n)| k == "ServiceAccount" && n == "llm-router")
        .unwrap();
    assert!(sidecar_account < epp_account, "{names:?}");
}

#[test]
fn without_a_prefill_naming_router_decoders_get_no_sidecar() {
    for router_extra in [json!({}), json!({"strategy": "queue-size"})] {
        let objects = jsons(&pd_router(8000, json!({}), router_extra));
        let decode = pod_spec(&objects, "StatefulSet", "llm-decode", "/spec/template/spec");
        assert_eq!(decode["containers"].as_array().unwrap().len(), 1);
        assert!(
            !objects
                .iter()
                .any(|o| o["metadata"]["name"] == "llm-pd-sidecar")
        );
    }
    // A hand-written configuration that names prefillers gets it, like the strategy.
    let own = endpoint_picker_config(RoutingStrategy::PdDisaggregation);
    let objects = jsons(&pd_router(
        8000,
        json!({}),
        json!({"endpointPickerConfig": own}),
    ));
    let decode = pod_spec(&objects, "StatefulSet", "llm-decode", "/spec/template/spec");
    assert_eq!(decode["containers"][1]["name"], "pd-sidecar");
}

#[test]
fn the_sidecar_respects_the_users_account_ports_and_image() {
    let mut decode_extra = json!({"template": serving_template(8200, json!({}))});
    decode_extra["template"]["spec"]["serviceAccountName"] = json!("my-engine");
    let isvc = pd_router(8200, decode_extra, json!({"strategy": "pd-disaggregation"}));
    let options = PlanOptions {
        pd_sidecar_image: "registry.example/pd:test".to_owned(),
        ..PlanOptions::default()
    };
    let objects: Vec<Value> = plan(&isvc, &options)
        .unwrap()
        .iter()
        .map(DesiredObject::to_json)
        .collect();
    let decode = pod_spec(&objects, "StatefulSet", "llm-decode", "/spec/template/spec");
    assert_eq!(
        decode["serviceAccountName"], "my-engine",
        "the user's account is kept"
    );
    let sidecar = &decode["containers"][1];
    assert_eq!(sidecar["image"], "registry.example/pd:test");
    // Serving on 8200: the engine moves to the next port.
    assert_eq!(
        sidecar["args"].as_array().unwrap()[..4],
        [
            json!("--port"),
            json!("8200"),
            json!("--engine-port"),
            json!("8201")
        ]
    );
    assert_eq!(decode["containers"][0]["env"][0]["value"], "8201");
    let subjects = &find(&objects, "RoleBinding", "llm-pd-sidecar")["subjects"];
    assert_eq!(
        subjects[1]["name"], "my-engine",
        "and bound to the Role: {subjects}"
    );
}

#[test]
fn multi_node_decoders_get_the_sidecar_on_the_leader_only() {
    let isvc = pd_router(
        8000,
        json!({"multinode": {"nodeCount": 2}}),
        json!({"strategy": "pd-disaggregation"}),
    );
    let objects = jsons(&isvc);
    let template = |which: &str| {
        pod_spec(
            &objects,
            "LeaderWorkerSet",
            "llm-decode",
            &format!("/spec/leaderWorkerTemplate/{which}/spec"),
        )
    };
    let leader = template("leaderTemplate");
    assert_eq!(leader["containers"][1]["name"], "pd-sidecar");
    let worker = template("workerTemplate");
    assert_eq!(worker["containers"].as_array().unwrap().len(), 1);
    // Workers run the leader's command, which names the engine port.
    assert_eq!(
        worker["containers"][0]["env"],
        json!([{"name": "FUSIONINFER_ENGINE_PORT", "value": "8200"}])
    );
    assert!(worker.get("serviceAccountName").is_none());
}

#[test]
fn volcano_podgroup_counts_the_pd_sidecar_of_each_decode_leader() {
    let strategy = json!({"strategy": "pd-disaggregation"});
    let mut isvc = pd(volcano(json!({})), strategy.clone());
    // Decode: 3 replicas of 2 nodes; only the 3 leaders carry the sidecar.
    isvc.spec.roles[1].replicas = 3;
    isvc.spec.roles[1].multinode = Some(serde_json::from_value(json!({"nodeCount": 2})).unwrap());
    let group = find(&jsons(&isvc), "PodGroup", SVC);
    assert_eq!(group["spec"]["minMember"], 14);
    assert_eq!(
        group["spec"]["minResources"],
        json!({"cpu": "300m", "memory": "192Mi"}),
        "the example's templates request nothing; the sidecars' requests are all there is"
    );
    // Without a prefill-naming router there is no sidecar to count.
    let plain = pd(volcano(json!({})), json!({"strategy": "prefix-cache"}));
    let group = find(&jsons(&plain), "PodGroup", SVC);
    assert_eq!(group["spec"].get("minResources"), None);
}

#[test]
fn a_pd_profile_handler_without_a_declared_header_handler_still_gets_decoders_the_sidecar() {
    // The scheduler gives a PD profile handler a default prefill-header-handler, so such a
    // config names prefillers too.
    let pd_config = endpoint_picker_config(RoutingStrategy::PdDisaggregation);
    let without_header_handler = pd_config.replace("- type: prefill-header-handler\n", "");
    assert_ne!(without_header_handler, pd_config);
    let isvc = pd_router(
        8000,
        json!({}),
        json!({"endpointPickerConfig": without_header_handler}),
    );
    let objects = jsons(&isvc);
    let decode = pod_spec(&objects, "StatefulSet", "llm-decode", "/spec/template/spec");
    let names: Vec<&str> = decode["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vllm", "pd-sidecar"]);
}
