//! Property tests over generated `InferenceService` specs, valid and invalid:
//! - validation and planning never panic, and neither does writing the objects out;
//! - an invalid spec's errors name the role they are about, and `plan` refuses with them;
//! - a valid spec's objects keep Kubernetes name limits, come out identical every time, and
//!   pass the upstream schemas of `../shared/crds` (built-in kinds: a typed round trip);
//! - our CRD agrees with the Rust validation: what Rust accepts, the CRD accepts; what Rust
//!   rejects for topology alone, the CRD's CEL rejects too.

use fusioninfer_api::{InferenceService, RoutingStrategy};
use fusioninfer_core::manifest::to_yaml_stream;
use fusioninfer_core::plan::{DesiredObject, PlanOptions, plan};
use fusioninfer_core::validate::{ValidationError, validate};
use fusioninfer_tests::{UpstreamSchemas, api_server_verdict, check_emitted, shared_dir};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

// ---- generators ----

/// Picks from `valid`, or once in 25 from `invalid`: with a dozen choices per role, about a
/// third of the specs stay valid.
fn pick<T: Clone + std::fmt::Debug + 'static>(valid: Vec<T>, invalid: Vec<T>) -> BoxedStrategy<T> {
    prop_oneof![24 => select(valid), 1 => select(invalid)].boxed()
}

/// Component types of the roles: mostly a valid topology in random order, sometimes anything.
fn kinds() -> impl Strategy<Value = Vec<&'static str>> {
    let router = prop::option::of(Just("router"));
    let monolithic = router
        .clone()
        .prop_map(|router| std::iter::once("worker").chain(router).collect::<Vec<_>>());
    let disaggregated = (1..=2usize, 1..=2usize, router).prop_map(|(p, d, router)| {
        std::iter::repeat_n("prefiller", p)
            .chain(std::iter::repeat_n("decoder", d))
            .chain(router)
            .collect::<Vec<_>>()
    });
    let anything = prop::collection::vec(
        select(vec!["worker", "prefiller", "decoder", "router"]),
        1..6,
    );
    prop_oneof![
        3 => monolithic.prop_shuffle(),
        4 => disaggregated.prop_shuffle(),
        2 => anything,
    ]
}

fn role_name(kind: &str, index: usize) -> BoxedStrategy<String> {
    let unique = format!("{}-{index}", &kind[..1]);
    let shared = ["w", "p", "d", "r", "main"].map(String::from).to_vec();
    let invalid = ["Bad", "1x", "x-", "", "a_b"].map(String::from).to_vec();
    let long = [30usize, 45, 50, 51, 55, 60]
        .map(|n| format!("l{}", "o".repeat(n - 1)))
        .to_vec();
    // A router's objects may be longer than a StatefulSet's (63 against 52), so its name
    // meets the CRD's own limit of 50 first: try that often.
    let long_weight = if kind == "router" { 6 } else { 2 };
    prop_oneof![
        24 => Just(unique),
        2 => select(shared),
        1 => select(invalid),
        long_weight => select(long),
    ]
    .boxed()
}

fn quantity() -> BoxedStrategy<String> {
    let valid = [
        "1", "500m", "16Gi", "1.5", "2e3", "0", "100Mi", "8", "+2", "1k",
    ];
    let invalid = ["abc", "1.2.3", " 1", "-1", "1Zi", "1e99", "", "16 Gi"];
    pick(
        valid.map(String::from).to_vec(),
        invalid.map(String::from).to_vec(),
    )
}

fn resource_list() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        select(vec!["cpu", "memory", "nvidia.com/gpu"]),
        quantity(),
        0..3,
    )
    .prop_map(|map| {
        map.into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect()
    })
}

fn container(name: &'static str) -> impl Strategy<Value = Value> {
    let port = pick(
        // Roles that disagree on the port are refused when a router fronts them: keep it rare.
        vec![
            None,
            None,
            None,
            None,
            Some(8000),
            Some(8000),
            Some(8000),
            Some(8080),
        ],
        vec![Some(0), Some(70000)],
    );
    let resources = prop::option::weighted(0.6, (resource_list(), resource_list()));
    (port, any::<bool>(), resources).prop_map(move |(port, metrics, resources)| {
        let mut c = json!({"name": name, "image": "vllm/vllm-openai:v0.32.0"});
        let mut ports = Vec::new();
        if metrics {
            ports.push(json!({"name": "metrics", "containerPort": 9400}));
        }
        if let Some(port) = port {
            ports.push(json!({"name": "http", "containerPort": port}));
        }
        if !ports.is_empty() {
            c["ports"] = ports.into();
        }
        if let Some((requests, limits)) = resources {
            c["resources"] = json!({"requests": requests, "limits": limits});
        }
        c
    })
}

fn template_metadata() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(select(vec![
        json!({"labels": {"team": "a"}}),
        json!({"labels": {"fusioninfer.io/serving": "true", "fusioninfer.io/role-name": "x"}}),
        json!({"annotations": {"example.com/note": "kept"}}),
    ]))
}

fn with_metadata(mut template: Value, metadata: Option<Value>) -> Value {
    if let Some(metadata) = metadata {
        template["metadata"] = metadata;
    }
    template
}

/// A serving role's template: usually one or two containers, sometimes none or absent.
fn serving_template() -> BoxedStrategy<Option<Value>> {
    let containers = prop_oneof![
        3 => container("vllm").prop_map(|c| vec![c]),
        1 => (container("vllm"), container("sidecar")).prop_map(|(a, b)| vec![a, b]),
    ];
    let good = (containers, template_metadata())
        .prop_map(|(containers, metadata)| {
            Some(with_metadata(
                json!({"spec": {"containers": containers}}),
                metadata,
            ))
        })
        .boxed();
    prop_oneof![
        24 => good,
        1 => Just(None),
        1 => Just(Some(json!({"spec": {"containers": []}}))),
    ]
    .boxed()
}

/// A router's template overrides the endpoint picker pod.
fn router_template() -> BoxedStrategy<Option<Value>> {
    let unnamed_pair =
        json!({"spec": {"containers": [{"name": "proxy", "image": "envoy"}, {"image": "my/epp"}]}});
    let valid = vec![
        json!({"spec": {"containers": [{"name": "epp", "image": "my/epp:1", "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "128Mi"}}}]}}),
        json!({"spec": {"containers": [{"image": "my/epp:2"}]}}),
        json!({"spec": {"containers": [{"name": "proxy", "image": "envoy"}], "nodeSelector": {"pool": "cpu"}}}),
        json!({"metadata": {"labels": {"fusioninfer.io/serving": "true", "team": "a"}}}),
    ];
    let invalid = vec![
        unnamed_pair,
        json!({"spec": {"containers": [{"name": "epp", "resources": {"requests": {"memory": "lots"}}}]}}),
    ];
    prop_oneof![2 => Just(None), 1 => pick(valid, invalid).prop_map(Some)].boxed()
}

const EPP_CONFIG: &str = "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: queue-scorer\n- type: max-score-picker\nschedulingProfiles:\n- name: default\n  plugins:\n  - {pluginRef: queue-scorer, weight: 2}\n  - pluginRef: max-score-picker\n";

fn endpoint_picker_config() -> BoxedStrategy<String> {
    let valid = vec![
        EPP_CONFIG.to_owned(),
        EPP_CONFIG.replace("inference.networking.x-k8s.io", "llm-d.ai"),
    ];
    let invalid = vec![
        "plugins: [".to_owned(),
        EPP_CONFIG.replace("pluginRef: queue-scorer", "pluginRef: nope"),
        format!("{EPP_CONFIG}extra: 1\n"),
    ];
    pick(valid, invalid)
}

fn httproute() -> BoxedStrategy<Value> {
    let valid = vec![
        json!({"parentRefs": [{"name": "gw"}]}),
        json!({
            "parentRefs": [{"name": "gw", "namespace": "gateways", "sectionName": "https"}],
            "hostnames": ["llm.example.com"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}]}],
        }),
        json!({}),
        json!({"rules": []}),
    ];
    let invalid = vec![
        json!({"rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}),
        json!({"parentRefs": [{"name": "gw", "sectionNam": "x"}]}),
        json!({"parentRefs": "gw"}),
    ];
    pick(valid, invalid)
}

/// Router-only fields, present with probability `p` each.
fn router_fields(p: f64) -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::weighted(p, select(RoutingStrategy::ALL.to_vec())),
        prop::option::weighted(p / 2.0, endpoint_picker_config()),
        prop::option::weighted(p, httproute()),
        prop::option::weighted(p, select(vec!["FailOpen", "FailClose"])),
    )
        .prop_map(|(strategy, config, route, failure_mode)| {
            let mut fields = Map::new();
            if let Some(s) = strategy {
                fields.insert("strategy".into(), s.as_str().into());
            }
            if let Some(c) = config {
                fields.insert("endpointPickerConfig".into(), c.into());
            }
            if let Some(r) = route {
                fields.insert("httproute".into(), r);
            }
            if let Some(f) = failure_mode {
                fields.insert("failureMode".into(), f.into());
            }
            fields
        })
}

fn role(kind: &'static str, index: usize) -> BoxedStrategy<Value> {
    let router = kind == "router";
    let replicas = pick(vec![0, 1, 1, 2, 3, 4], vec![-1]);
    let multinode = if router {
        pick(vec![None], vec![Some(2)])
    } else {
        pick(
            vec![None, None, None, Some(1), Some(2), Some(3), Some(5)],
            vec![Some(0), Some(-1)],
        )
    };
    let template = if router {
        router_template()
    } else {
        serving_template()
    };
    let extra = if router {
        router_fields(0.5).boxed()
    } else {
        router_fields(0.02).boxed()
    };
    (role_name(kind, index), replicas, multinode, template, extra)
        .prop_map(move |(name, replicas, multinode, template, extra)| {
            let mut role = json!({"name": name, "componentType": kind, "replicas": replicas});
            if let Some(count) = multinode {
                role["multinode"] = json!({"nodeCount": count});
            }
            if let Some(template) = template {
                role["template"] = template;
            }
            role.as_object_mut().unwrap().extend(extra);
            role
        })
        .boxed()
}

fn scheduling() -> BoxedStrategy<Option<Value>> {
    pick(
        vec![
            None,
            None,
            Some(json!({"schedulerName": "volcano"})),
            Some(
                json!({"schedulerName": "volcano", "queue": "inference", "priorityClassName": "high"}),
            ),
            Some(json!({"schedulerName": "my-scheduler"})),
            Some(json!({})),
        ],
        vec![
            Some(json!({"priorityClassName": "high"})),
            Some(json!({"schedulerName": "my-scheduler", "queue": "q"})),
            Some(json!({"schedulerName": ""})),
            Some(json!({"schedulerName": "My Scheduler"})),
        ],
    )
}

fn service_name() -> BoxedStrategy<Option<String>> {
    let long = |n: usize| format!("s{}", "v".repeat(n - 1));
    pick(
        vec![
            Some("llm".to_owned()),
            Some("a".to_owned()),
            Some("svc-1".to_owned()),
            Some(long(20)),
            Some(long(40)),
        ],
        vec![
            None,
            Some(String::new()),
            Some("Bad_Name".to_owned()),
            Some(long(62)),
            Some(long(64)),
        ],
    )
}

/// A generated spec as JSON (so that a failing case prints readably).
fn spec() -> impl Strategy<Value = Value> {
    let roles = kinds().prop_flat_map(move |kinds| {
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| role(kind, i))
            .collect::<Vec<_>>()
    });
    (
        roles,
        service_name(),
        scheduling(),
        prop::option::of(select(vec!["default", "team-a"])),
        any::<bool>(),
    )
        .prop_map(|(roles, name, scheduling, namespace, uid)| {
            let mut metadata = Map::new();
            if let Some(name) = name {
                metadata.insert("name".into(), name.into());
            }
            if let Some(ns) = namespace {
                metadata.insert("namespace".into(), ns.into());
            }
            if uid {
                metadata.insert("uid".into(), "6f1c1f4e-0000-4000-8000-00000000beef".into());
            }
            let mut spec = json!({"roles": roles});
            if let Some(s) = scheduling {
                spec["schedulingStrategy"] = s;
            }
            json!({
                "apiVersion": "fusioninfer.io/v1alpha1",
                "kind": "InferenceService",
                "metadata": metadata,
                "spec": spec,
            })
        })
}

/// A generated spec the Rust validation accepts.
fn valid_spec() -> impl Strategy<Value = Value> {
    spec().prop_filter("valid specs only", |value| {
        validate(&isvc(value)).is_empty()
    })
}

fn isvc(value: &Value) -> InferenceService {
    serde_json::from_value(value.clone()).expect("generated specs fit the API types")
}

/// A runner for `cases` cases (`PROPTEST_CASES` overrides, for a longer hunt).
fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        // Failures print the minimal spec; no regression files in the source tree.
        failure_persistence: None,
        ..Config::default()
    })
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

// ---- independent checks of names ----

/// DNS-1035 label, written here independently of the code under test.
fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A Kubernetes label value: ≤ 63 characters, alphanumerics with `-_.` inside.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c)))
}

/// Every label map in an emitted object: its own, its pod templates' and its selectors'.
fn label_maps(object: &Value) -> Vec<(&'static str, &Value)> {
    let spec = &object["spec"];
    [
        ("metadata.labels", &object["metadata"]["labels"]),
        (
            "spec.template.metadata.labels",
            &spec["template"]["metadata"]["labels"],
        ),
        (
            "leaderTemplate labels",
            &spec["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["labels"],
        ),
        (
            "workerTemplate labels",
            &spec["leaderWorkerTemplate"]["workerTemplate"]["metadata"]["labels"],
        ),
        (
            "spec.selector.matchLabels",
            &spec["selector"]["matchLabels"],
        ),
        ("Service spec.selector", &spec["selector"]),
    ]
    .into_iter()
    .filter(|(place, v)| {
        v.is_object() && (!place.starts_with("Service") || object["kind"] == "Service")
    })
    .collect()
}

/// Names and label values of `object` that Kubernetes would refuse or that would break a
/// controller creating children from it.
fn name_problems(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let mut problems = Vec::new();
    // Every name is `{service}` or `{service}-{role}`: a DNS-1035 label, which also fits the
    // 253 characters of a DNS subdomain.
    if !is_dns1035_label(name) {
        problems.push(format!("{kind} name {name:?} is not a DNS-1035 label"));
    }
    // StatefulSet pods get `controller-revision-hash: {name}-{hash}` (hash ≤ 10 characters),
    // and a LeaderWorkerSet makes one StatefulSet `{name}-{group}` per group.
    let longest_statefulset = match kind {
        "StatefulSet" => Some(name.to_owned()),
        "LeaderWorkerSet" => {
            let groups = object["spec"]["replicas"].as_i64().unwrap_or(1).max(1);
            Some(format!("{name}-{}", groups - 1))
        }
        _ => None,
    };
    if let Some(sts) = longest_statefulset
        && sts.len() > 52
    {
        problems.push(format!(
            "{kind} makes StatefulSet {sts:?}, over 52 characters"
        ));
    }
    for (place, labels) in label_maps(object) {
        for (key, value) in labels.as_object().unwrap() {
            let value = value.as_str().unwrap_or("<not a string>");
            if !is_label_value(value) {
                problems.push(format!("{kind} {name} {place}: {key}={value:?}"));
            }
        }
    }
    problems
}

// ---- properties ----

/// The role a field like `spec.roles[3].multinode` is about.
fn role_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("spec.roles[")?
        .split_once(']')?
        .0
        .parse()
        .ok()
}

fn errors_name_their_roles(
    isvc: &InferenceService,
    errors: &[ValidationError],
) -> Result<(), TestCaseError> {
    for error in errors {
        check(!error.message.is_empty() && !error.field.is_empty(), || {
            format!("empty field or message: {error:?}")
        })?;
        match role_index(&error.field) {
            Some(i) => {
                let role = isvc.spec.roles.get(i);
                check(role.is_some(), || format!("{error:?}: no role {i}"))?;
                check(
                    error.role.as_deref() == role.map(|r| r.name.as_str()),
                    || format!("{error:?} does not name role {i} {:?}", role.unwrap().name),
                )?;
            }
            None => check(error.role.is_none(), || {
                format!("{error:?} names a role but not its field")
            })?,
        }
    }
    Ok(())
}

fn to_yaml(objects: &[DesiredObject]) -> String {
    to_yaml_stream(
        &objects
            .iter()
            .map(DesiredObject::to_json)
            .collect::<Vec<_>>(),
    )
}

#[test]
fn specs_never_panic_and_errors_name_their_roles_and_valid_output_is_stable() {
    runner(256)
        .run(&spec(), |value| {
            let isvc = isvc(&value);
            let errors = validate(&isvc);
            let planned = plan(&isvc, &PlanOptions::default());
            if !errors.is_empty() {
                errors_name_their_roles(&isvc, &errors)?;
                check(planned.as_ref().err() == Some(&errors), || {
                    format!("plan must refuse with the validation errors: {planned:#?}")
                })?;
                return Ok(());
            }
            let objects = planned.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            check(!objects.is_empty(), || "a valid spec plans objects".into())?;
            let yaml = to_yaml(&objects);
            for object in &objects {
                let json = object.to_json();
                let problems = name_problems(&json);
                check(problems.is_empty(), || format!("{problems:#?}"))?;
                check(json["metadata"]["name"] == object.name(), || {
                    "name() is metadata.name".into()
                })?;
            }
            let again = plan(&isvc, &PlanOptions::default()).unwrap();
            check(again == objects, || "plan differs between runs".into())?;
            check(to_yaml(&again) == yaml, || {
                "YAML differs between runs".into()
            })?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn valid_specs_emit_objects_the_upstream_schemas_accept() {
    let Some(shared) = shared_dir() else { return };
    let schemas = UpstreamSchemas::get(&shared);
    runner(64)
        .run(&valid_spec(), |value| {
            let isvc = isvc(&value);
            let objects = plan(&isvc, &PlanOptions::default()).unwrap();
            for object in objects {
                let json = object.to_json();
                let problems = check_emitted(schemas, &json);
                check(problems.is_empty(), || {
                    format!("{} {}: {problems:#?}", object.kind(), object.name())
                })?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn our_crd_accepts_what_the_rust_validation_accepts() {
    runner(128)
        .run(&valid_spec(), |value| {
            let verdict = api_server_verdict(&value_of(&value));
            check(verdict.is_empty(), || {
                format!("Rust accepts, the CRD refuses: {verdict:#?}")
            })
        })
        .unwrap();
}

#[test]
fn our_crd_rejects_what_the_rust_validation_rejects_for_topology() {
    runner(256)
        .run(&spec(), |value| {
            let errors = validate(&isvc(&value));
            if errors.is_empty() || errors.iter().any(|e| e.field != "spec.roles") {
                return Ok(());
            }
            let verdict = api_server_verdict(&value_of(&value));
            check(!verdict.is_empty(), || {
                format!("Rust refuses the topology, the CRD accepts: {errors:#?}")
            })
        })
        .unwrap();
}

/// The spec as the API server would receive it: serialized from the typed object.
fn value_of(value: &Value) -> Value {
    serde_json::to_value(isvc(value)).unwrap()
}

/// The generators reach both sides: enough valid specs for the schema checks to mean
/// something, and invalid ones of every kind the properties rely on.
#[test]
fn generators_produce_valid_and_invalid_specs() {
    use proptest::strategy::ValueTree;
    // A fixed seed: the counts below are a statement about the generators, not about luck.
    let mut runner = TestRunner::deterministic();
    let (mut valid, mut topology_only, mut with_role) = (0, 0, 0);
    for _ in 0..300 {
        let value = spec().new_tree(&mut runner).unwrap().current();
        let errors = validate(&isvc(&value));
        if errors.is_empty() {
            valid += 1;
        } else if errors.iter().all(|e| e.field == "spec.roles") {
            topology_only += 1;
        }
        if errors.iter().any(|e| e.role.is_some()) {
            with_role += 1;
        }
    }
    eprintln!("valid {valid}, topology-only {topology_only}, naming a role {with_role} (of 300)");
    assert!(valid >= 40, "valid: {valid}/300");
    assert!(topology_only >= 5, "topology-only: {topology_only}/300");
    assert!(with_role >= 100, "errors naming a role: {with_role}/300");
}
