//! The checked-in CRD matches the Rust types, installs with a client-side `kubectl apply`, and
//! its CEL rules compile, stay within budget, and say what the Rust validation says.

use fusioninfer_api::crd::inference_service_crd;
use fusioninfer_core::manifest::{parse_inference_services, to_yaml_stream};
use fusioninfer_tests::{api_server_verdict, assert_golden, examples, workspace_root};
use serde_json::Value;

const CRD_PATH: &str = "deploy/crd/fusioninfer.io_inferenceservices.yaml";

fn crd_json() -> Value {
    serde_json::to_value(inference_service_crd()).unwrap()
}

fn schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn checked_in_crd_matches_the_types() {
    assert_golden(CRD_PATH, &to_yaml_stream(&[crd_json()]));
}

#[test]
fn crd_fits_a_client_side_apply() {
    // kubectl stores the compact JSON in the last-applied-configuration annotation (≤ 256 KiB).
    let compact = serde_json::to_string(&crd_json()).unwrap();
    assert!(
        compact.len() < 256 * 1024,
        "compact CRD is {} bytes",
        compact.len()
    );
    let file = std::fs::read_to_string(workspace_root().join(CRD_PATH)).unwrap();
    let parsed: Value = serde_saphyr::from_str(&file).unwrap();
    assert_eq!(
        parsed,
        crd_json(),
        "the YAML file parses back to the same CRD"
    );
}

#[test]
fn crd_keeps_the_typed_pod_template_and_printer_columns() {
    let crd = crd_json();
    let version = &crd["spec"]["versions"][0];
    let template = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["roles"]
        ["items"]["properties"]["template"];
    assert!(
        template["properties"]["spec"]["properties"]["containers"]["items"]["properties"]["image"]
            .is_object()
    );
    assert!(
        template
            .get("x-kubernetes-preserve-unknown-fields")
            .is_none()
    );
    assert!(
        !serde_json::to_string(template)
            .unwrap()
            .contains("\"description\"")
    );
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let columns: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Ready", "Roles", "Reason", "Age"]);
    let short_names = crd["spec"]["names"]["shortNames"].as_array().unwrap();
    assert!(!short_names.contains(&"isvc".into()), "KServe owns isvc");
}

#[test]
fn cel_rules_compile_within_the_cost_budget() {
    let compiled = kube_cel::compile_schema(&schema());
    fn walk(node: &kube_cel::CompiledSchema, out: &mut Vec<String>) {
        for result in &node.validations {
            match result {
                Err(e) => out.push(format!("compile: {e}")),
                Ok(rule) => {
                    for warning in kube_cel::estimate_rule_cost(&rule.rule.rule, node) {
                        out.push(format!("cost: {warning:?}"));
                    }
                }
            }
        }
        node.properties
            .values()
            .chain(node.items.as_deref())
            .chain(node.additional_properties.as_deref())
            .for_each(|c| walk(c, out));
    }
    let mut problems = Vec::new();
    walk(&compiled, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn examples_pass_the_crd_schema_and_cel_rules() {
    for (name, isvc) in examples() {
        let problems = api_server_verdict(&serde_json::to_value(&isvc).unwrap());
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
}

#[test]
fn cel_rules_reject_the_broken_example_with_the_rust_messages() {
    let text = std::fs::read_to_string(
        workspace_root().join("examples/invalid/mixed-worker-decoder.yaml"),
    )
    .unwrap();
    let isvc = parse_inference_services(&text).unwrap().remove(0);
    let problems = api_server_verdict(&serde_json::to_value(&isvc).unwrap());
    for expected in [
        "roles must be either exactly one worker",
        "only allowed on a router role",
        "multinode is not allowed on a router role",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "missing {expected:?} in {problems:#?}"
        );
    }
}

#[test]
fn crd_limits_match_the_rust_validation() {
    let roles = &schema()["properties"]["spec"]["properties"]["roles"];
    assert_eq!(
        roles["maxItems"],
        fusioninfer_api::MAX_ROLES,
        "spec.roles maxItems"
    );
    assert_eq!(
        roles["items"]["properties"]["name"]["maxLength"],
        fusioninfer_core::names::ROLE_NAME_MAX,
        "spec.roles[].name maxLength"
    );
}

#[test]
fn api_server_verdict_reports_schema_unknown_field_and_cel_problems() {
    let (_, isvc) = examples().remove(0);
    let good = serde_json::to_value(&isvc).unwrap();
    assert!(api_server_verdict(&good).is_empty());
    let mut bad = good.clone();
    bad["spec"]["roles"][0]["replicas"] = (-1).into();
    assert!(!api_server_verdict(&bad).is_empty(), "replicas minimum 0");
    let mut bad = good.clone();
    bad["spec"]["roles"][0]["replicaz"] = 1.into();
    assert!(
        api_server_verdict(&bad)
            .iter()
            .any(|p| p.contains("replicaz")),
        "unknown field"
    );
    let mut bad = good;
    let role = bad["spec"]["roles"][0].clone();
    bad["spec"]["roles"].as_array_mut().unwrap().push(role);
    assert!(
        api_server_verdict(&bad)
            .iter()
            .any(|p| p.contains("role names must be unique")),
        "CEL rule"
    );
}
