//! Every object the planner emits for the examples is accepted by the upstream schemas
//! (`../shared/crds`) or round-trips through its typed `k8s-openapi` struct.

use fusioninfer_core::plan::{PlanOptions, plan};
use fusioninfer_tests::{UpstreamSchemas, check_emitted, examples, shared_dir};

const UID: &str = "6f1c1f4e-0000-4000-8000-000000000001";

#[test]
fn examples_emit_objects_the_api_server_accepts() {
    let Some(shared) = shared_dir() else { return };
    let schemas = UpstreamSchemas::get(&shared);
    let mut checked_kinds = std::collections::BTreeSet::new();
    for (name, mut isvc) in examples() {
        isvc.metadata.uid = Some(UID.to_owned());
        let objects =
            plan(&isvc, &PlanOptions::default()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        for object in objects {
            let json = object.to_json();
            let problems = check_emitted(schemas, &json);
            assert!(
                problems.is_empty(),
                "{name}: {} {}: {problems:#?}",
                object.kind(),
                object.name()
            );
            assert_eq!(
                json["metadata"]["ownerReferences"][0]["uid"],
                UID,
                "{name}: {}",
                object.kind()
            );
            checked_kinds.insert(object.kind());
        }
    }
    // The examples exercise every kind the planner can emit.
    let expected = [
        "ConfigMap",
        "Deployment",
        "HTTPRoute",
        "InferencePool",
        "LeaderWorkerSet",
        "PodGroup",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ];
    assert_eq!(checked_kinds.into_iter().collect::<Vec<_>>(), expected);
}

#[test]
fn schema_check_catches_what_the_api_server_would_reject() {
    let Some(shared) = shared_dir() else { return };
    let schemas = UpstreamSchemas::get(&shared);
    let (_, isvc) = examples()
        .into_iter()
        .find(|(n, _)| n == "pd-volcano")
        .expect("pd-volcano example");
    let objects = plan(&isvc, &PlanOptions::default()).unwrap();
    let pool = objects
        .iter()
        .find(|o| o.kind() == "InferencePool")
        .unwrap()
        .to_json();
    let lws = objects
        .iter()
        .find(|o| o.kind() == "LeaderWorkerSet")
        .unwrap()
        .to_json();

    let mut bad = pool.clone();
    bad["spec"]["targetPorts"] = serde_json::json!([]);
    assert!(
        !schemas.check(&bad).is_empty(),
        "empty targetPorts (minItems 1) must fail"
    );

    let mut bad = pool.clone();
    bad["spec"]["endpointPickerRef"]["failureMode"] = "Sometimes".into();
    assert!(
        !schemas.check(&bad).is_empty(),
        "unknown failureMode enum value must fail"
    );

    let mut bad = lws.clone();
    bad["spec"]["leaderWorkerTemplate"]["sizee"] = 2.into();
    let problems = schemas.check(&bad);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("sizee") && p.contains("unknown field")),
        "{problems:?}"
    );

    let mut bad = pool;
    bad["spec"]["targetPorts"] = serde_json::json!([{"number": 8000}, {"number": 8000}]);
    let problems = schemas.check(&bad);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("CEL") && p.contains("unique")),
        "the pool's CEL rule on unique ports must fire: {problems:?}"
    );
}
