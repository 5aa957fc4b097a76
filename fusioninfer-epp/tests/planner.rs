//! The picker against what the planner emits for every example with a router: the EPP
//! container's exact arguments parse, its ConfigMap config builds a scheduler, the
//! InferencePool selects exactly the serving pods of the planned workloads (with the labels the
//! PD role filters read), and the Role grants what the Kubernetes source uses.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use fusioninfer_core::plan::{PlanOptions, epp_rbac_rules, plan};
use fusioninfer_epp::source::kubernetes::pool_endpoints;
use fusioninfer_epp::{Options, SourceKind};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

/// (file, planned objects as JSON) for every example that plans a router.
fn planned_routers() -> Vec<(String, Vec<Value>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(services) = fusioninfer_core::manifest::parse_inference_services(&text) else {
            continue;
        };
        for service in services {
            let Ok(objects) = plan(&service, &PlanOptions::default()) else {
                continue;
            };
            let objects: Vec<Value> = objects.iter().map(|o| o.to_json()).collect();
            if objects.iter().any(|o| o["kind"] == "InferencePool") {
                out.push((path.display().to_string(), objects));
            }
        }
    }
    assert!(!out.is_empty(), "no example plans a router");
    out
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn epp_args(objects: &[Value]) -> Vec<String> {
    let deployment = find(objects, "Deployment")[0];
    let container = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "epp")
        .expect("epp container");
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_planners_epp_arguments_parse_exactly() {
    for (file, objects) in planned_routers() {
        let args = epp_args(&objects);
        let options = Options::try_parse_from(
            std::iter::once("fusioninfer-epp".to_owned()).chain(args.clone()),
        )
        .unwrap_or_else(|e| panic!("{file}: {args:?}: {e}"));
        let pool = find(&objects, "InferencePool")[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            options.source(),
            SourceKind::Kubernetes {
                pool,
                namespace: "$(POD_NAMESPACE)".into()
            },
            "{file}"
        );
        assert_eq!(
            (
                options.grpc_port,
                options.grpc_health_port,
                options.metrics_port
            ),
            (9002, 9003, 9090),
            "{file}"
        );
        assert_eq!(
            options.config_file.as_deref(),
            Some(std::path::Path::new("/etc/fusioninfer/epp/config.yaml"))
        );
    }
}

#[test]
fn the_planners_configmap_builds_a_scheduler() {
    let dir = std::env::temp_dir().join(format!("fusioninfer-epp-planner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (file, objects)) in planned_routers().into_iter().enumerate() {
        let config = find(&objects, "ConfigMap")
            .into_iter()
            .find_map(|c| c["data"]["config.yaml"].as_str())
            .unwrap_or_else(|| panic!("{file}: no EPP config"));
        let path = dir.join(format!("config-{i}.yaml"));
        std::fs::write(&path, config).unwrap();
        let options = Options::try_parse_from([
            "fusioninfer-epp",
            "--endpoints-file",
            "unused",
            "--config-file",
            path.to_str().unwrap(),
        ])
        .unwrap();
        options
            .build_scheduler()
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

fn ready_pod(name: &str, ip: &str, labels: BTreeMap<String, String>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn labels_of(template: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default()
}

#[test]
fn the_planned_pool_selects_exactly_the_serving_pods() {
    for (file, objects) in planned_routers() {
        let pool: fusioninfer_api::inference_pool::InferencePool =
            serde_json::from_value(find(&objects, "InferencePool")[0].clone()).unwrap();
        // One pod per pod template the planner emits: serving ones (StatefulSet pods, LWS
        // leaders) and non-serving ones (LWS workers, the EPP itself).
        let mut pods = Vec::new();
        let mut serving = Vec::new();
        let mut next_ip = 1;
        let mut add = |template: &Value, expect_serving: bool, pods: &mut Vec<Pod>| {
            let labels = labels_of(template);
            let ip = format!("10.0.0.{next_ip}");
            next_ip += 1;
            if expect_serving {
                serving.push((ip.clone(), labels.clone()));
            }
            pods.push(ready_pod(&ip, &ip, labels));
        };
        for set in find(&objects, "StatefulSet") {
            add(&set["spec"]["template"], true, &mut pods);
        }
        for lws in find(&objects, "LeaderWorkerSet") {
            let template = &lws["spec"]["leaderWorkerTemplate"];
            if template["leaderTemplate"].is_object() {
                add(&template["leaderTemplate"], true, &mut pods);
                add(&template["workerTemplate"], false, &mut pods);
            } else {
                add(&template["workerTemplate"], true, &mut pods);
            }
        }
        for deployment in find(&objects, "Deployment") {
            add(&deployment["spec"]["template"], false, &mut pods);
        }
        let endpoints = pool_endpoints(&pool.spec, &pods);
        let ports = pool.spec.target_ports.len();
        assert_eq!(
            endpoints.len(),
            serving.len() * ports,
            "{file}: {endpoints:?}"
        );
        for (ip, labels) in &serving {
            let endpoint = endpoints
                .iter()
                .find(|e| e.address.ip().to_string() == *ip)
                .unwrap_or_else(|| panic!("{file}: serving pod {ip} not selected"));
            assert_eq!(&endpoint.labels, labels, "{file}: labels kept");
            assert!(
                endpoint
                    .labels
                    .contains_key(fusioninfer_api::labels::COMPONENT_TYPE),
                "{file}: role filters need the component type"
            );
        }
    }
}

#[test]
fn the_planners_role_grants_what_the_kubernetes_source_uses() {
    // The source lists and watches pods and InferencePools (kube-runtime watchers); nothing
    // else. The planner grants get/list/watch on exactly those.
    let rules = epp_rbac_rules();
    let granted: Vec<(String, Vec<String>)> = rules
        .iter()
        .flat_map(|rule| {
            rule.resources
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r, rule.verbs.clone()))
        })
        .collect();
    for resource in ["pods", "inferencepools"] {
        let verbs = granted
            .iter()
            .find(|(r, _)| r == resource)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{resource} not granted"));
        for verb in ["list", "watch"] {
            assert!(verbs.contains(&verb.to_owned()), "{resource} {verb}");
        }
    }
    assert_eq!(granted.len(), 2, "{granted:?}");
}
