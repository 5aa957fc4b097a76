//! One test per validation rule, through the public API: each error names the field, the role
//! (when there is one) and what is allowed, and every error is returned, not just the first.

mod common;

use common::*;
use fusioninfer_api::InferenceService;
use fusioninfer_core::plan::{PlanOptions, plan};
use fusioninfer_core::validate::{ValidationError, validate};
use serde_json::{Value, json};

/// The single error of `isvc`, which must have `field` and `role`.
fn only_error(isvc: &InferenceService, field: &str, role: Option<&str>) -> ValidationError {
    let errors = validate(isvc);
    assert_eq!(fields(&errors), [field], "{errors:#?}");
    assert_eq!(errors[0].role.as_deref(), role, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

fn assert_valid(isvc: &InferenceService) {
    let errors = validate(isvc);
    assert!(errors.is_empty(), "{errors:#?}");
}

fn long(prefix: &str, len: usize) -> String {
    assert!(prefix.len() <= len);
    format!("{prefix}{}", "a".repeat(len - prefix.len()))
}

// ---- topology ----

#[test]
fn valid_topologies_have_no_errors() {
    assert_valid(&service(vec![worker("w")]));
    assert_valid(&service(vec![worker("w"), router("r")]));
    assert_valid(&service(vec![prefiller("p"), decoder("d")]));
    assert_valid(&service(vec![
        prefiller("p1"),
        prefiller("p2"),
        decoder("d1"),
        decoder("d2"),
        router("r"),
    ]));
    assert_valid(&service(vec![
        router("r"),
        decoder("d"),
        with(prefiller("p"), json!({"multinode": {"nodeCount": 4}})),
    ]));
}

#[test]
fn mixing_worker_with_prefiller_or_decoder_names_both_roles() {
    let isvc = service(vec![worker("w"), decoder("dec"), prefiller("pre")]);
    let error = only_error(&isvc, "spec.roles", None);
    for name in ["\"w\"", "\"dec\"", "\"pre\""] {
        assert!(error.message.contains(name), "{name}: {}", error.message);
    }
    assert!(
        error.message.contains("cannot be mixed"),
        "{}",
        error.message
    );
}

#[test]
fn monolithic_needs_exactly_one_worker() {
    let error = only_error(&service(vec![worker("a"), worker("b")]), "spec.roles", None);
    assert!(
        error.message.contains("exactly one worker"),
        "{}",
        error.message
    );
    assert!(error.message.contains("\"a\", \"b\""), "{}", error.message);
}

#[test]
fn prefillers_alone_need_a_decoder_and_decoders_alone_a_prefiller() {
    let error = only_error(
        &service(vec![prefiller("p1"), prefiller("p2"), router("r")]),
        "spec.roles",
        None,
    );
    assert!(
        error.message.contains("\"p1\", \"p2\"") && error.message.contains("decoder"),
        "{}",
        error.message
    );
    let error = only_error(&service(vec![decoder("d")]), "spec.roles", None);
    assert!(
        error.message.contains("\"d\"") && error.message.contains("prefiller"),
        "{}",
        error.message
    );
}

#[test]
fn a_router_alone_has_no_serving_role() {
    let error = only_error(&service(vec![router("r")]), "spec.roles", None);
    assert!(
        error.message.contains("no serving role"),
        "{}",
        error.message
    );
}

#[test]
fn at_most_one_router() {
    let error = only_error(
        &service(vec![worker("w"), router("r1"), router("r2")]),
        "spec.roles",
        None,
    );
    assert!(
        error.message.contains("\"r1\", \"r2\"") && error.message.contains("at most one router"),
        "{}",
        error.message
    );
}

#[test]
fn roles_must_be_present_and_at_most_sixteen() {
    let errors = validate(&service(vec![]));
    assert_eq!(fields(&errors), ["spec.roles", "spec.roles"], "{errors:#?}");
    assert!(
        errors[0].message.contains("at least one role"),
        "{errors:#?}"
    );

    let mut roles = vec![prefiller("p"), decoder("d")];
    roles.extend((0..15).map(|i| decoder(&format!("d{i}"))));
    let error = only_error(&service(roles), "spec.roles", None);
    assert!(error.message.contains("at most 16"), "{}", error.message);
}

// ---- names ----

#[test]
fn duplicate_role_names_name_both_indices() {
    let isvc = service(vec![prefiller("x"), decoder("d"), decoder("x")]);
    let error = only_error(&isvc, "spec.roles[2].name", Some("x"));
    assert!(
        error.message.contains("spec.roles[0]") && error.message.contains("unique"),
        "{}",
        error.message
    );
}

#[test]
fn role_names_are_dns_1035_labels() {
    for bad in ["Worker", "1worker", "worker-", "wor_ker", "wörker", "-w"] {
        let error = only_error(&service(vec![worker(bad)]), "spec.roles[0].name", Some(bad));
        assert!(
            error.message.contains("DNS-1035"),
            "{bad}: {}",
            error.message
        );
    }
    let error = only_error(&service(vec![worker("")]), "spec.roles[0].name", Some(""));
    assert!(error.message.contains("empty"), "{}", error.message);
    // Letters, digits and inner dashes are fine.
    assert_valid(&service(vec![worker("w-1-b")]));
}

#[test]
fn service_names_are_dns_1035_labels() {
    for bad in ["LLM", "llm_1", "1llm", "llm."] {
        let isvc = named_service(bad, json!({"roles": [worker("w")]}));
        let error = only_error(&isvc, "metadata.name", None);
        assert!(
            error.message.contains("DNS-1035"),
            "{bad}: {}",
            error.message
        );
    }
    let mut isvc = service(vec![worker("w")]);
    isvc.metadata.name = None;
    let error = only_error(&isvc, "metadata.name", None);
    assert!(error.message.contains("needs a name"), "{}", error.message);
}

/// `{svc}-{role}` names a StatefulSet, whose controller labels pods with `{name}-{hash}`: at
/// most 52 characters.
#[test]
fn statefulset_names_stop_at_52_characters() {
    let svc = long("s", 20);
    let ok = long("w", 52 - 21);
    assert_valid(&named_service(&svc, json!({"roles": [worker(&ok)]})));
    let too_long = long("w", 53 - 21);
    let isvc = named_service(&svc, json!({"roles": [worker(&too_long)]}));
    let error = only_error(&isvc, "spec.roles[0].name", Some(&too_long));
    assert!(
        error.message.contains("53 characters") && error.message.contains("limit of 52"),
        "{}",
        error.message
    );
}

/// A LeaderWorkerSet makes one worker StatefulSet per group, `{svc}-{role}-{group}`: the
/// largest group index counts.
#[test]
fn leaderworkerset_worker_statefulset_names_stop_at_52_characters() {
    let svc = long("s", 20);
    let lws = |role: &str, replicas: i32| {
        named_service(
            &svc,
            json!({"roles": [with(worker(role), json!({"replicas": replicas, "multinode": {"nodeCount": 2}}))]}),
        )
    };
    // 21 + role + "-9" = 52 with ten groups.
    let role = long("w", 52 - 21 - 2);
    assert_valid(&lws(&role, 10));
    // Eleven groups: the last is "-10", one character more.
    let error = only_error(&lws(&role, 11), "spec.roles[0].name", Some(&role));
    assert!(
        error.message.contains(&format!("{svc}-{role}-10")),
        "{}",
        error.message
    );
    let longer = long("w", 53 - 21 - 2);
    only_error(&lws(&longer, 10), "spec.roles[0].name", Some(&longer));
    // Zero replicas still names group 0 when scaled up: the limit holds for "-0".
    assert_valid(&lws(&role, 0));
}

/// A router's objects are named `{svc}-{role}`, among them a Service: a DNS-1035 label, at
/// most 63 characters.
#[test]
fn router_service_names_stop_at_63_characters() {
    let svc = long("s", 12);
    let ok = long("r", 63 - 13);
    assert_valid(&named_service(
        &svc,
        json!({"roles": [worker("w"), router(&ok)]}),
    ));
    let svc = long("s", 13);
    let isvc = named_service(&svc, json!({"roles": [worker("w"), router(&ok)]}));
    let error = only_error(&isvc, "spec.roles[1].name", Some(&ok));
    assert!(
        error.message.contains("64 characters") && error.message.contains("limit of 63"),
        "{}",
        error.message
    );
}

/// The CRD caps role names at 50 characters; a spec Rust accepts must install.
#[test]
fn role_names_stop_at_50_characters_like_the_crd() {
    let name = long("r", 51);
    let isvc = named_service("s", json!({"roles": [worker("w"), router(&name)]}));
    let error = only_error(&isvc, "spec.roles[1].name", Some(&name));
    assert!(error.message.contains("50"), "{}", error.message);
    assert_valid(&named_service(
        "s",
        json!({"roles": [worker("w"), router(&long("r", 50))]}),
    ));
}

#[test]
fn service_names_over_63_characters_fail_once_per_role() {
    let svc = long("s", 64);
    let isvc = named_service(&svc, json!({"roles": [worker("w"), router("r")]}));
    let errors = validate(&isvc);
    assert_eq!(
        fields(&errors),
        ["metadata.name", "spec.roles[0].name", "spec.roles[1].name"],
        "{errors:#?}"
    );
}

// ---- router-only fields ----

#[test]
fn router_only_fields_are_rejected_on_every_serving_kind() {
    let fields_of_router = json!({
        "strategy": "queue-size",
        "endpointPickerConfig": "not even parsed",
        "httproute": {"parentRefs": [{"name": "gw"}]},
        "failureMode": "FailOpen",
    });
    for (kind, roles) in [
        ("worker", vec![with(worker("x"), fields_of_router.clone())]),
        (
            "prefiller",
            vec![with(prefiller("x"), fields_of_router.clone()), decoder("d")],
        ),
        (
            "decoder",
            vec![prefiller("p"), with(decoder("x"), fields_of_router.clone())],
        ),
    ] {
        let index = roles.iter().position(|r| r["name"] == "x").unwrap();
        let errors = validate(&service(roles));
        let expected: Vec<String> = [
            "strategy",
            "endpointPickerConfig",
            "httproute",
            "failureMode",
        ]
        .iter()
        .map(|f| format!("spec.roles[{index}].{f}"))
        .collect();
        assert_eq!(fields(&errors), expected, "{kind}: {errors:#?}");
        for error in &errors {
            assert_eq!(error.role.as_deref(), Some("x"));
            assert!(
                error.message.contains("only allowed on a router role")
                    && error.message.contains(kind),
                "{error}"
            );
        }
    }
}

#[test]
fn each_router_only_field_alone_is_rejected() {
    for (field, value) in [
        ("strategy", json!("round-robin")),
        ("endpointPickerConfig", json!("x")),
        ("httproute", json!({})),
        ("failureMode", json!("FailClose")),
    ] {
        let isvc = service(vec![with(worker("w"), json!({ field: value }))]);
        only_error(&isvc, &format!("spec.roles[0].{field}"), Some("w"));
    }
}

#[test]
fn multinode_is_not_allowed_on_a_router() {
    let isvc = service(vec![
        worker("w"),
        with(router("r"), json!({"multinode": {"nodeCount": 2}})),
    ]);
    let error = only_error(&isvc, "spec.roles[1].multinode", Some("r"));
    assert!(
        error.message.contains("not allowed on a router"),
        "{}",
        error.message
    );
    // Even nodeCount 1 is refused: the field itself is router-incompatible.
    let isvc = service(vec![
        worker("w"),
        with(router("r"), json!({"multinode": {"nodeCount": 1}})),
    ]);
    only_error(&isvc, "spec.roles[1].multinode", Some("r"));
}

#[test]
fn pd_disaggregation_needs_prefillers_and_decoders() {
    let isvc = service(vec![
        worker("w"),
        with(router("r"), json!({"strategy": "pd-disaggregation"})),
    ]);
    let error = only_error(&isvc, "spec.roles[1].strategy", Some("r"));
    assert!(error.message.contains("prefiller") && error.message.contains("decoder"));
    assert_valid(&service(vec![
        prefiller("p"),
        decoder("d"),
        with(router("r"), json!({"strategy": "pd-disaggregation"})),
    ]));
}

// ---- numbers ----

#[test]
fn node_count_must_be_at_least_one() {
    for count in [0, -1, i32::MIN] {
        let isvc = service(vec![with(
            worker("w"),
            json!({"multinode": {"nodeCount": count}}),
        )]);
        let error = only_error(&isvc, "spec.roles[0].multinode.nodeCount", Some("w"));
        assert!(error.message.contains("≥ 1"), "{}", error.message);
    }
    assert_valid(&service(vec![with(
        worker("w"),
        json!({"multinode": {"nodeCount": 1}}),
    )]));
}

#[test]
fn replicas_must_not_be_negative() {
    for (roles, index) in [
        (vec![with(worker("w"), json!({"replicas": -1}))], 0),
        (
            vec![worker("w"), with(router("r"), json!({"replicas": -3}))],
            1,
        ),
    ] {
        let name = roles[index]["name"].as_str().unwrap().to_owned();
        let error = only_error(
            &service(roles),
            &format!("spec.roles[{index}].replicas"),
            Some(&name),
        );
        assert!(error.message.contains("≥ 0"), "{}", error.message);
    }
    assert_valid(&service(vec![with(worker("w"), json!({"replicas": 0}))]));
}

#[test]
fn replicas_times_node_count_must_fit() {
    let isvc = service(vec![with(
        worker("w"),
        json!({"replicas": i32::MAX, "multinode": {"nodeCount": 2}}),
    )]);
    let errors = validate(&isvc);
    assert!(
        fields(&errors).contains(&"spec.roles[0].multinode.nodeCount")
            || fields(&errors).contains(&"spec.roles[0].replicas"),
        "{errors:#?}"
    );
}

/// Huge role sizes that each fit an int32 must not overflow the PodGroup's sums.
#[test]
fn volcano_totals_must_fit() {
    let big = with(
        prefiller("p"),
        json!({"replicas": i32::MAX / 2 + 1, "template": {"spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}}),
    );
    let isvc = named_service(
        "s",
        json!({
            "schedulingStrategy": {"schedulerName": "volcano"},
            "roles": [big.clone(), with(big, json!({"name": "p2"})), decoder("d")],
        }),
    );
    let errors = validate(&isvc);
    assert_eq!(fields(&errors), ["spec.roles[1].replicas"], "{errors:#?}");
    assert_eq!(errors[0].role.as_deref(), Some("p2"));
    assert!(errors[0].message.contains("minMember"), "{errors:#?}");
    assert!(plan(&isvc, &PlanOptions::default()).is_err());
    // Without Volcano nothing sums the roles, and the same sizes are fine.
    let mut isvc = isvc;
    isvc.spec.scheduling_strategy = None;
    assert!(plan(&isvc, &PlanOptions::default()).is_ok());

    // One quantity near the top of what parses, times two pods, overflows the sum.
    let huge = with(
        prefiller("p"),
        json!({"replicas": 2, "template": {"spec": {"containers": [
            {"name": "c", "resources": {"requests": {"memory": "100000000000E"}}}]}}}),
    );
    let isvc = named_service(
        "s",
        json!({
            "schedulingStrategy": {"schedulerName": "volcano"},
            "roles": [huge, decoder("d")],
        }),
    );
    let errors = validate(&isvc);
    assert_eq!(fields(&errors), ["spec.roles[0].template.spec.containers"]);
    assert_eq!(errors[0].role.as_deref(), Some("p"));
    assert!(errors[0].message.contains("memory"), "{errors:#?}");
    assert!(plan(&isvc, &PlanOptions::default()).is_err());
}

// ---- templates ----

#[test]
fn serving_roles_need_a_template_with_a_container() {
    let isvc = service(vec![json!({"name": "w", "componentType": "worker"})]);
    let error = only_error(&isvc, "spec.roles[0].template", Some("w"));
    assert!(
        error.message.contains("at least one container"),
        "{}",
        error.message
    );
    // A template without a pod spec is as good as none.
    let isvc = service(vec![with(
        worker("w"),
        json!({"template": {"metadata": {}}}),
    )]);
    only_error(&isvc, "spec.roles[0].template", Some("w"));
    let isvc = service(vec![
        prefiller("p"),
        with(
            decoder("d"),
            json!({"template": {"spec": {"containers": []}}}),
        ),
    ]);
    only_error(&isvc, "spec.roles[1].template.spec.containers", Some("d"));
    // A router needs no template.
    assert_valid(&service(vec![worker("w"), router("r")]));
}

#[test]
fn bad_resource_quantities_name_the_container_field() {
    let isvc = service(vec![with(
        worker("w"),
        json!({"template": {"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "16 Gi", "nvidia.com/gpu": "one"}}},
        ]}}}),
    )]);
    let errors = validate(&isvc);
    assert_eq!(
        fields(&errors),
        [
            "spec.roles[0].template.spec.containers[1].resources.limits.memory",
            "spec.roles[0].template.spec.containers[1].resources.limits.nvidia.com/gpu",
        ],
        "{errors:#?}"
    );
    assert!(
        errors[0].message.contains("\"16 Gi\""),
        "{}",
        errors[0].message
    );
    assert!(errors.iter().all(|e| e.role.as_deref() == Some("w")));
}

#[test]
fn negative_resource_quantities_are_rejected() {
    let isvc = service(vec![with(
        worker("w"),
        json!({"template": {"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "-1"}}},
        ]}}}),
    )]);
    let error = only_error(
        &isvc,
        "spec.roles[0].template.spec.containers[0].resources.requests.cpu",
        Some("w"),
    );
    assert!(
        error.message.contains("≥ 0") || error.message.contains("negative"),
        "{error}"
    );
}

#[test]
fn router_template_quantities_are_checked_too() {
    let isvc = service(vec![
        worker("w"),
        with(
            router("r"),
            json!({"template": {"spec": {"containers": [
                {"name": "epp", "resources": {"requests": {"memory": "lots"}}},
            ]}}}),
        ),
    ]);
    only_error(
        &isvc,
        "spec.roles[1].template.spec.containers[0].resources.requests.memory",
        Some("r"),
    );
}

// ---- router configuration ----

const EPP_CONFIG: &str = r#"
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: max-score-picker
"#;

fn with_epp_config(text: &str) -> InferenceService {
    service(vec![
        worker("w"),
        with(router("r"), json!({"endpointPickerConfig": text})),
    ])
}

#[test]
fn endpoint_picker_config_must_parse() {
    assert_valid(&with_epp_config(EPP_CONFIG));
    for bad in ["plugins: [", "just a string", "apiVersion: 3\nkind: [x]\n"] {
        let error = only_error(
            &with_epp_config(bad),
            "spec.roles[1].endpointPickerConfig",
            Some("r"),
        );
        assert!(error.message.contains("EndpointPickerConfig"), "{error}");
    }
    // Unknown fields are parse errors too.
    let error = only_error(
        &with_epp_config(&format!("{EPP_CONFIG}\nschedulingProfile: []\n")),
        "spec.roles[1].endpointPickerConfig",
        Some("r"),
    );
    assert!(error.message.contains("schedulingProfile"), "{error}");
}

#[test]
fn endpoint_picker_config_errors_name_the_field_inside_the_config() {
    let text = EPP_CONFIG
        .replace("pluginRef: queue-scorer", "pluginRef: queue-scorerr")
        .replace("kind: EndpointPickerConfig", "kind: Config");
    let errors = validate(&with_epp_config(&text));
    assert_eq!(
        fields(&errors),
        [
            "spec.roles[1].endpointPickerConfig.kind",
            "spec.roles[1].endpointPickerConfig.schedulingProfiles[0].plugins[0].pluginRef",
        ],
        "{errors:#?}"
    );
    assert!(
        errors[1].message.contains("\"queue-scorerr\""),
        "{}",
        errors[1]
    );
    assert!(errors.iter().all(|e| e.role.as_deref() == Some("r")));
}

fn with_route(route: Value) -> InferenceService {
    service(vec![
        worker("w"),
        with(router("r"), json!({"httproute": route})),
    ])
}

#[test]
fn httproute_must_fit_the_gateway_api_type() {
    assert_valid(&with_route(json!({
        "parentRefs": [{"name": "gw", "namespace": "gateways"}],
        "hostnames": ["llm.example.com"],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}]}],
    })));
    for bad in [
        json!({"parentRefs": "gw"}),
        json!({"parentRefs": [{"namespace": "no-name"}]}),
        json!({"rules": [{"matches": [{"path": {"type": "Sometimes"}}]}]}),
        json!(["not", "an", "object"]),
    ] {
        let error = only_error(
            &with_route(bad.clone()),
            "spec.roles[1].httproute",
            Some("r"),
        );
        assert!(error.message.contains("HTTPRouteSpec"), "{bad}: {error}");
    }
}

#[test]
fn httproute_unknown_fields_are_named() {
    let errors = validate(&with_route(json!({
        "parentRefs": [{"name": "gw", "sectionNam": "http"}],
        "rules": [{"matches": [{"path": {"value": "/"}, "header": []}]}],
        "hostname": "x",
    })));
    assert_eq!(
        fields(&errors),
        [
            "spec.roles[1].httproute.hostname",
            "spec.roles[1].httproute.parentRefs[0].sectionNam",
            "spec.roles[1].httproute.rules[0].matches[0].header",
        ],
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e.role.as_deref() == Some("r") && e.message.contains("unknown field"))
    );
}

#[test]
fn httproute_backend_refs_are_refused() {
    let error = only_error(
        &with_route(json!({"rules": [
            {"matches": [{"path": {"value": "/a"}}]},
            {"backendRefs": [{"name": "elsewhere", "port": 80}]},
        ]})),
        "spec.roles[1].httproute.rules[1].backendRefs",
        Some("r"),
    );
    assert!(error.message.contains("InferencePool"), "{error}");
    // An empty list asks for nothing and is accepted.
    assert_valid(&with_route(json!({"rules": [{"backendRefs": []}]})));
}

#[test]
fn serving_ports_must_agree_when_a_router_fronts_them() {
    let port = |role: Value, number: i64| {
        with(
            role,
            json!({"template": {"spec": {"containers": [
                {"name": "vllm", "ports": [{"name": "metrics", "containerPort": 9000}, {"name": "http", "containerPort": number}]}
            ]}}}),
        )
    };
    let isvc = service(vec![
        port(prefiller("p"), 8000),
        decoder("d"), // no http port: 8000 too
        port(decoder("d2"), 8080),
        router("r"),
    ]);
    let error = only_error(
        &isvc,
        "spec.roles[2].template.spec.containers[0].ports",
        Some("d2"),
    );
    assert!(
        error.message.contains("8080")
            && error.message.contains("8000")
            && error.message.contains("\"p\""),
        "{error}"
    );
    // Without a router there is no pool, and different ports are fine.
    assert_valid(&service(vec![
        port(prefiller("p"), 8000),
        port(decoder("d"), 8080),
    ]));
}

#[test]
fn serving_port_must_be_a_port_number() {
    for bad in [0, 65536, -1] {
        let isvc = service(vec![with(
            worker("w"),
            json!({"template": {"spec": {"containers": [
                {"name": "vllm", "ports": [{"name": "http", "containerPort": bad}]}
            ]}}}),
        )]);
        let error = only_error(
            &isvc,
            "spec.roles[0].template.spec.containers[0].ports",
            Some("w"),
        );
        assert!(error.message.contains("65535"), "{error}");
    }
}

// ---- scheduling ----

#[test]
fn queue_and_priority_class_need_volcano() {
    for scheduler in [json!(null), json!("default-scheduler")] {
        let isvc = named_service(
            "s",
            json!({
                "schedulingStrategy": {"schedulerName": scheduler, "queue": "q", "priorityClassName": "high"},
                "roles": [worker("w")],
            }),
        );
        let errors = validate(&isvc);
        assert_eq!(
            fields(&errors),
            [
                "spec.schedulingStrategy.queue",
                "spec.schedulingStrategy.priorityClassName"
            ],
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.role.is_none() && e.message.contains("volcano"))
        );
    }
    assert_valid(&named_service(
        "s",
        json!({
            "schedulingStrategy": {"schedulerName": "volcano", "queue": "q", "priorityClassName": "high"},
            "roles": [worker("w")],
        }),
    ));
}

#[test]
fn scheduler_name_must_be_a_dns_subdomain() {
    for bad in ["My Scheduler", "sched_1", "-x", "x.", "a..b"] {
        let isvc = named_service(
            "s",
            json!({"schedulingStrategy": {"schedulerName": bad}, "roles": [worker("w")]}),
        );
        let error = only_error(&isvc, "spec.schedulingStrategy.schedulerName", None);
        assert!(error.message.contains("DNS-1123"), "{bad}: {error}");
    }
    for good in ["default-scheduler", "my.scheduler-2", "volcano"] {
        assert_valid(&named_service(
            "s",
            json!({"schedulingStrategy": {"schedulerName": good}, "roles": [worker("w")]}),
        ));
    }
}

#[test]
fn scheduler_name_must_not_be_empty() {
    let isvc = named_service(
        "s",
        json!({"schedulingStrategy": {"schedulerName": ""}, "roles": [worker("w")]}),
    );
    let error = only_error(&isvc, "spec.schedulingStrategy.schedulerName", None);
    assert!(error.message.contains("empty"), "{error}");
    assert_valid(&named_service(
        "s",
        json!({"schedulingStrategy": {}, "roles": [worker("w")]}),
    ));
}

// ---- all errors at once ----

#[test]
fn every_error_is_returned_each_naming_its_role_and_field() {
    let isvc = named_service(
        "s",
        json!({
            "schedulingStrategy": {"queue": "q"},
            "roles": [
                with(worker("w"), json!({"replicas": -1, "failureMode": "FailOpen"})),
                json!({"name": "Bad", "componentType": "decoder", "template": template()}),
                with(decoder("w"), json!({"multinode": {"nodeCount": 0}})),
                with(router("r"), json!({
                    "strategy": "pd-disaggregation",
                    "multinode": {"nodeCount": 2},
                    "endpointPickerConfig": "kind: [",
                })),
                router("r2"),
            ],
        }),
    );
    let errors = validate(&isvc);
    let got: Vec<(&str, Option<&str>)> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.role.as_deref()))
        .collect();
    let expected = [
        ("spec.roles[0].replicas", Some("w")),
        ("spec.roles[0].failureMode", Some("w")),
        ("spec.roles[1].name", Some("Bad")),
        ("spec.roles[2].name", Some("w")),
        ("spec.roles[2].multinode.nodeCount", Some("w")),
        ("spec.roles[3].multinode", Some("r")),
        ("spec.roles[3].strategy", Some("r")),
        ("spec.roles[3].endpointPickerConfig", Some("r")),
        ("spec.roles", None),
        ("spec.roles", None),
        ("spec.schedulingStrategy.queue", None),
    ];
    for want in expected {
        assert!(got.contains(&want), "missing {want:?} in {got:#?}");
    }
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    // Messages are never empty and Display names role and field.
    for error in &errors {
        assert!(!error.message.is_empty());
        let shown = error.to_string();
        assert!(shown.starts_with(&error.field), "{shown}");
        if let Some(role) = &error.role {
            assert!(shown.contains(&format!("(role {role:?})")), "{shown}");
        }
    }
    // plan refuses with exactly the same errors.
    assert_eq!(plan(&isvc, &PlanOptions::default()).unwrap_err(), errors);
}

#[test]
fn multinode_replicas_stop_at_the_leaderworkerset_maximum() {
    let lws = |replicas: i32| {
        named_service(
            "s",
            json!({"roles": [with(worker("w"), json!({"replicas": replicas, "multinode": {"nodeCount": 2}}))]}),
        )
    };
    assert_valid(&lws(1_000_000));
    let error = only_error(&lws(1_000_001), "spec.roles[0].replicas", Some("w"));
    assert!(error.message.contains("1000000"), "{error}");
    // A StatefulSet has no such cap.
    assert_valid(&named_service(
        "s",
        json!({"roles": [with(worker("w"), json!({"replicas": 1_000_001}))]}),
    ));
}

#[test]
fn router_template_containers_need_names_when_there_are_several() {
    let router_with = |containers: Value| {
        service(vec![
            worker("w"),
            with(
                router("r"),
                json!({"template": {"spec": {"containers": containers}}}),
            ),
        ])
    };
    // A single unnamed container is the endpoint picker.
    assert_valid(&router_with(json!([{"image": "my/epp:1"}])));
    assert_valid(&router_with(
        json!([{"name": "epp", "image": "my/epp:1"}, {"name": "sidecar", "image": "x"}]),
    ));
    let error = only_error(
        &router_with(json!([{"name": "sidecar", "image": "x"}, {"image": "my/epp:1"}])),
        "spec.roles[1].template.spec.containers[1].name",
        Some("r"),
    );
    assert!(error.message.contains("epp"), "{error}");
}

#[test]
fn quantities_with_spaces_are_rejected() {
    let isvc = service(vec![with(
        worker("w"),
        json!({"template": {"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": " 1"}}},
        ]}}}),
    )]);
    only_error(
        &isvc,
        "spec.roles[0].template.spec.containers[0].resources.requests.cpu",
        Some("w"),
    );
}

#[test]
fn container_names_are_unique_in_a_pod() {
    let two_named_vllm = json!({"spec": {"containers": [
        {"name": "vllm", "image": "vllm/vllm-openai:v0.32.0"},
        {"name": "vllm", "image": "busybox"},
    ]}});
    let isvc = service(vec![with(worker("w"), json!({"template": two_named_vllm}))]);
    let error = only_error(
        &isvc,
        "spec.roles[0].template.spec.containers[1].name",
        Some("w"),
    );
    assert!(error.message.contains("containers[0]"), "{}", error.message);
}

#[test]
fn decoders_leave_the_pd_sidecars_container_name_to_it() {
    let with_sidecar_name = json!({"spec": {"containers": [
        {"name": "vllm", "image": "vllm/vllm-openai:v0.32.0"},
        {"name": "pd-sidecar", "image": "my/proxy"},
    ]}});
    let roles = |strategy: &str| {
        vec![
            prefiller("p"),
            with(decoder("d"), json!({"template": with_sidecar_name.clone()})),
            with(router("r"), json!({"strategy": strategy})),
        ]
    };
    let error = only_error(
        &service(roles("pd-disaggregation")),
        "spec.roles[1].template.spec.containers[1].name",
        Some("d"),
    );
    assert!(error.message.contains("sidecar"), "{}", error.message);
    // No sidecar is planned without a prefill-naming router: the name is the user's.
    assert_valid(&service(roles("prefix-cache")));
}
