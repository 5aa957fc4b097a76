//! Local mode's plan for the examples: ports, names, labels, the endpoint picker's files and
//! arguments, Envoy's configuration, per-role options and their errors. Pure: nothing starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fusioninfer_api::{ComponentType, InferenceService, RoutingStrategy};
use fusioninfer_cli::local::plan::{
    ADDRESSES_ANNOTATION, COMMAND_ANNOTATION, SIM_ARGS_ANNOTATION, model_from_container,
};
use fusioninfer_cli::local::{
    BackendSource, Launch, LocalOptions, LocalPlan, Ports, SchedulerOverride,
};
use fusioninfer_core::manifest::parse_inference_services;
use fusioninfer_core::plan::{PlanOptions, plan};
use fusioninfer_core::strategy::endpoint_picker_config;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> InferenceService {
    let text = std::fs::read_to_string(root().join("examples").join(name)).unwrap();
    parse_inference_services(&text).unwrap().remove(0)
}

fn local(isvc: &InferenceService) -> LocalPlan {
    LocalPlan::new(isvc, &LocalOptions::default()).unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn the_demo_runs_four_simulators_behind_the_prefix_cache_picker() {
    let isvc = example("local-demo.yaml");
    let plan = local(&isvc);
    assert_eq!(plan.service, "local-demo");
    assert_eq!(plan.roles.len(), 1);
    let worker = &plan.roles[0];
    assert_eq!(worker.component_type, ComponentType::Worker);
    assert_eq!(worker.source, BackendSource::Simulator);
    assert_eq!(worker.model, "Qwen/Qwen3-0.6B");
    let names: Vec<&str> = worker.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "local-demo-worker-0",
            "local-demo-worker-1",
            "local-demo-worker-2",
            "local-demo-worker-3"
        ]
    );
    let ports: Vec<u16> = worker.backends.iter().map(|b| b.address.port()).collect();
    assert_eq!(ports, [8001, 8002, 8003, 8004]);
    assert!(worker.backends.iter().all(|b| b.address.ip().is_loopback()));
    // The simulator gets the address, model, pod name and the annotation's flags.
    assert_eq!(
        worker.backends[2].launch,
        Some(Launch::Simulator(
            [
                "--host",
                "127.0.0.1",
                "--port",
                "8003",
                "--model",
                "Qwen/Qwen3-0.6B",
                "--instance",
                "local-demo-worker-2",
                "--time-scale",
                "0.2"
            ]
            .map(str::to_owned)
            .to_vec()
        ))
    );
    assert_eq!(plan.router.describe, "strategy prefix-cache");
    assert_eq!(
        plan.router.config,
        endpoint_picker_config(RoutingStrategy::PrefixCache)
    );
    assert_eq!(plan.base_url(), "http://127.0.0.1:8080/v1");
    assert_eq!(plan.model(), "Qwen/Qwen3-0.6B");
}

#[test]
fn servers_carry_the_labels_the_planner_gives_their_pods() {
    let isvc = example("monolithic-qwen3-8b.yaml");
    let planned: Vec<serde_json::Value> = plan(&isvc, &PlanOptions::default())
        .unwrap()
        .iter()
        .map(|o| o.to_json())
        .collect();
    let sts = planned.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    let expected: BTreeMap<String, String> =
        serde_json::from_value(sts["spec"]["template"]["metadata"]["labels"].clone()).unwrap();
    let local = local(&isvc);
    for backend in local.backends() {
        assert_eq!(backend.labels, expected);
    }
    assert_eq!(
        expected["team"], "search",
        "the template's own labels are kept"
    );
    assert_eq!(expected["fusioninfer.io/component-type"], "worker");

    let file: serde_json::Value = serde_json::from_str(&local.endpoints_file()).unwrap();
    let endpoints = file["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0]["address"], "127.0.0.1:8001");
    assert_eq!(endpoints[1]["labels"]["fusioninfer.io/serving"], "true");
}

#[test]
fn disaggregated_roles_get_their_component_types_and_the_pd_config() {
    let isvc = example("pd-router.yaml");
    let plan = local(&isvc);
    let roles: Vec<(&str, ComponentType, usize)> = plan
        .roles
        .iter()
        .map(|r| (r.name.as_str(), r.component_type, r.backends.len()))
        .collect();
    assert_eq!(
        roles,
        [
            ("prefill", ComponentType::Prefiller, 2),
            ("decode", ComponentType::Decoder, 2)
        ]
    );
    let types: Vec<(u16, &str)> = plan
        .backends()
        .map(|b| {
            (
                b.address.port(),
                b.labels["fusioninfer.io/component-type"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            (8001, "prefiller"),
            (8002, "prefiller"),
            (8003, "decoder"),
            (8006, "decoder")
        ]
    );
    assert_eq!(
        plan.router.config,
        endpoint_picker_config(RoutingStrategy::PdDisaggregation)
    );
    // Each decoder: the sidecar where the picker routes, the simulator behind it, the
    // sidecar's metrics; every prefiller allowed.
    let prefillers: Vec<SocketAddr> = vec![addr("127.0.0.1:8001"), addr("127.0.0.1:8002")];
    for (backend, engine) in plan.roles[1].backends.iter().zip([8004, 8007]) {
        let sidecar = backend.sidecar.as_ref().expect("decoders get a sidecar");
        assert_eq!(sidecar.engine, addr(&format!("127.0.0.1:{engine}")));
        assert_eq!(sidecar.metrics, addr(&format!("127.0.0.1:{}", engine + 1)));
        assert_eq!(sidecar.prefillers, prefillers);
        let Some(Launch::Simulator(args)) = &backend.launch else {
            panic!("{:?}", backend.launch)
        };
        let port = args.iter().position(|a| a == "--port").unwrap();
        assert_eq!(
            args[port + 1],
            engine.to_string(),
            "the simulator sits behind"
        );
        let sidecar_args = sidecar.args(backend.address).join(" ");
        assert!(
            sidecar_args.contains(&format!(
                "--port {} --engine-host 127.0.0.1 --engine-port {engine}",
                backend.address.port()
            )),
            "{sidecar_args}"
        );
        assert!(
            sidecar_args.contains("--prefillers 127.0.0.1:8001,127.0.0.1:8002"),
            "{sidecar_args}"
        );
    }
    assert!(plan.roles[0].backends.iter().all(|b| b.sidecar.is_none()));
    let ports: Vec<u16> = plan.ports_to_bind().iter().map(|p| p.port).collect();
    for port in 8001..=8008 {
        assert!(ports.contains(&port), "{port} is bound by the plan");
    }
    assert_eq!(plan.model(), "meta-llama/Llama-3.1-8B-Instruct");
}

#[test]
fn a_custom_endpoint_picker_config_is_passed_through() {
    let isvc = example("custom-epp-config.yaml");
    let router = isvc
        .spec
        .roles
        .iter()
        .find(|r| r.component_type == ComponentType::Router)
        .unwrap();
    let plan = local(&isvc);
    assert_eq!(
        Some(plan.router.config.as_str()),
        router.endpoint_picker_config.as_deref()
    );
    assert!(plan.router.describe.contains("endpointPickerConfig"));
}

#[test]
fn multinode_roles_run_one_server_per_replica_with_the_leader_labels() {
    let isvc = example("monolithic-multinode.yaml");
    let plan = local(&isvc);
    let role = &plan.roles[0];
    let replicas = isvc.spec.roles[0].replicas as usize;
    assert_eq!(role.backends.len(), replicas);
    assert!(
        role.backends
            .iter()
            .all(|b| b.labels.get("fusioninfer.io/serving").map(String::as_str) == Some("true"))
    );
}

#[test]
fn the_picker_and_envoy_get_the_planned_ports() {
    let isvc = example("local-demo.yaml");
    let ports = Ports {
        gateway: 18080,
        gateway_admin: 18081,
        first_backend: 18100,
        epp_grpc: 18082,
        epp_health: 18083,
        epp_metrics: 18084,
    };
    let plan = LocalPlan::new(
        &isvc,
        &LocalOptions {
            ports,
            epp_seed: Some(9),
            ..LocalOptions::default()
        },
    )
    .unwrap();
    let args = plan.epp_args(Path::new("/run/e.json"), Path::new("/run/c.yaml"));
    let joined = args.join(" ");
    for expected in [
        "--endpoints-file /run/e.json",
        "--config-file /run/c.yaml",
        "--bind-address 127.0.0.1",
        "--grpc-port 18082",
        "--grpc-health-port 18083",
        "--metrics-port 18084",
        "--seed 9",
    ] {
        assert!(joined.contains(expected), "{expected} missing in {joined}");
    }
    let envoy: serde_json::Value = serde_saphyr::from_str(&plan.envoy_config()).unwrap();
    assert_eq!(
        envoy["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
        18080
    );
    assert_eq!(
        envoy["admin"]["address"]["socket_address"]["port_value"],
        18081
    );
    let clusters = envoy["static_resources"]["clusters"].as_array().unwrap();
    let epp = clusters.iter().find(|c| c["name"] == "epp").unwrap();
    assert_eq!(
        epp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["port_value"],
        18082
    );
    let fallback = clusters
        .iter()
        .find(|c| c["name"] == "pool_fallback")
        .unwrap();
    assert_eq!(
        fallback["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let mut bound: Vec<u16> = plan.ports_to_bind().iter().map(|p| p.port).collect();
    bound.sort();
    assert_eq!(
        bound,
        [
            18080, 18081, 18082, 18083, 18084, 18100, 18101, 18102, 18103
        ]
    );
}

#[test]
fn fail_open_routers_let_envoy_bypass_the_picker() {
    let mut isvc = example("local-demo.yaml");
    let router = isvc
        .spec
        .roles
        .iter_mut()
        .find(|r| r.component_type == ComponentType::Router)
        .unwrap();
    router.failure_mode = Some(fusioninfer_api::FailureMode::FailOpen);
    assert!(
        local(&isvc)
            .envoy_config()
            .contains("failure_mode_allow: true")
    );
    assert!(
        local(&example("local-demo.yaml"))
            .envoy_config()
            .contains("failure_mode_allow: false")
    );
}

#[test]
fn overrides_replace_the_routers_scheduler() {
    let isvc = example("local-demo.yaml");
    let plan = LocalPlan::new(
        &isvc,
        &LocalOptions {
            scheduler: Some(SchedulerOverride::Strategy(RoutingStrategy::RoundRobin)),
            ..LocalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        plan.router.config,
        endpoint_picker_config(RoutingStrategy::RoundRobin)
    );
    let plan = LocalPlan::new(
        &isvc,
        &LocalOptions {
            scheduler: Some(SchedulerOverride::Config {
                name: "mine".to_owned(),
                text: "kind: EndpointPickerConfig\n".to_owned(),
            }),
            ..LocalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(plan.router.describe, "mine");
    assert_eq!(plan.router.config, "kind: EndpointPickerConfig\n");
}

#[test]
fn no_router_role_routes_with_the_default_strategy() {
    let mut isvc = example("local-demo.yaml");
    isvc.spec
        .roles
        .retain(|r| r.component_type != ComponentType::Router);
    let plan = local(&isvc);
    assert_eq!(
        plan.router.config,
        endpoint_picker_config(RoutingStrategy::PrefixCache)
    );
    assert!(plan.router.describe.contains("no router role"));
}

#[test]
fn per_role_commands_and_addresses_replace_the_simulator() {
    let isvc = example("pd-router.yaml");
    let options = LocalOptions {
        role_commands: BTreeMap::from([(
            "prefill".to_owned(),
            "vllm serve {model} --port {port} # {name} {replica}".to_owned(),
        )]),
        role_addresses: BTreeMap::from([(
            "decode".to_owned(),
            vec![
                addr("127.0.0.1:7000"),
                addr("127.0.0.1:7001"),
                addr("127.0.0.1:7002"),
            ],
        )]),
        sim_args: vec!["--time-scale".to_owned(), "0".to_owned()],
        ..LocalOptions::default()
    };
    let plan = LocalPlan::new(&isvc, &options).unwrap();
    let prefill = &plan.roles[0];
    assert!(matches!(prefill.source, BackendSource::Command(_)));
    assert_eq!(
        prefill.backends[1].launch,
        Some(Launch::Shell(
            "vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8002 # llama-pd-prefill-1 1"
                .to_owned()
        ))
    );
    let decode = &plan.roles[1];
    assert_eq!(decode.source, BackendSource::External);
    assert_eq!(
        decode.backends.len(),
        3,
        "the address list decides the count"
    );
    assert!(decode.backends.iter().all(|b| b.launch.is_none()));
    assert_eq!(
        decode.backends[0].labels["fusioninfer.io/component-type"],
        "decoder"
    );
    // External servers' ports are not ours to check.
    assert!(!plan.ports_to_bind().iter().any(|p| p.port == 7000));
    // The endpoint picker still sees all five.
    let file: serde_json::Value = serde_json::from_str(&plan.endpoints_file()).unwrap();
    assert_eq!(file["endpoints"].as_array().unwrap().len(), 5);
}

#[test]
fn annotations_configure_roles_and_flags_win() {
    let mut isvc = example("local-demo.yaml");
    let annotations = isvc.spec.roles[0]
        .template
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(
        SIM_ARGS_ANNOTATION.to_owned(),
        "--time-scale 0.5 --num-blocks 64".to_owned(),
    );
    let plan = LocalPlan::new(
        &isvc,
        &LocalOptions {
            sim_args: vec!["--time-scale=0".to_owned()],
            ..LocalOptions::default()
        },
    )
    .unwrap();
    let Some(Launch::Simulator(args)) = &plan.roles[0].backends[0].launch else {
        panic!("simulated");
    };
    let joined = args.join(" ");
    assert!(
        joined.ends_with("--time-scale 0 --num-blocks 64"),
        "{joined}"
    );

    let mut with_addresses = isvc.clone();
    with_addresses.spec.roles[0]
        .template
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap()
        .insert(
            ADDRESSES_ANNOTATION.to_owned(),
            "127.0.0.1:9500, 127.0.0.1:9501".to_owned(),
        );
    let plan = local(&with_addresses);
    assert_eq!(plan.roles[0].source, BackendSource::External);
    assert_eq!(plan.roles[0].backends.len(), 2);

    let mut with_command = isvc;
    with_command.spec.roles[0]
        .template
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap()
        .insert(
            COMMAND_ANNOTATION.to_owned(),
            "my-engine --port {port}".to_owned(),
        );
    let plan = local(&with_command);
    assert_eq!(
        plan.roles[0].backends[3].launch,
        Some(Launch::Shell("my-engine --port 8004".to_owned()))
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let isvc = example("pd-router.yaml");
    let options = LocalOptions {
        role_addresses: BTreeMap::from([
            ("decode".to_owned(), vec![addr("10.0.0.5:8000")]),
            ("nope".to_owned(), vec![addr("127.0.0.1:1")]),
        ]),
        role_commands: BTreeMap::from([("decode".to_owned(), "x".to_owned())]),
        sim_args: vec!["--port".to_owned(), "1".to_owned()],
        ports: Ports {
            epp_metrics: 8001,
            ..Ports::default()
        },
        ..LocalOptions::default()
    };
    let errors = LocalPlan::new(&isvc, &options).unwrap_err().0;
    let all = errors.join("\n");
    for expected in [
        "no serving role \"nope\" (serving roles: prefill, decode)",
        "role decode: both addresses and a command given",
        "simulator flag --port is set by `fusioninfer up` itself",
        "port 8001 is planned twice",
    ] {
        assert!(all.contains(expected), "{expected:?} missing in\n{all}");
    }

    let options = LocalOptions {
        role_addresses: BTreeMap::from([("decode".to_owned(), vec![addr("10.0.0.5:8000")])]),
        ..LocalOptions::default()
    };
    let errors = LocalPlan::new(&isvc, &options).unwrap_err().0;
    assert!(
        errors[0].contains("10.0.0.5:8000 is not a loopback address"),
        "{errors:?}"
    );
}

#[test]
fn invalid_specs_fail_with_the_validation_errors() {
    let isvc = example("invalid/mixed-worker-decoder.yaml");
    let errors = LocalPlan::new(&isvc, &LocalOptions::default())
        .unwrap_err()
        .0;
    assert!(errors.len() >= 2, "{errors:?}");
}

#[test]
fn model_names_come_from_the_engine_command_line() {
    for (name, expected) in [
        ("monolithic-qwen3-8b.yaml", Some("Qwen/Qwen3-8B")),
        ("pd-router.yaml", Some("meta-llama/Llama-3.1-8B-Instruct")),
    ] {
        let isvc = example(name);
        assert_eq!(
            model_from_container(&isvc.spec.roles[0]).as_deref(),
            expected,
            "{name}"
        );
    }
    let with_args = |args: &[&str]| {
        let mut isvc = example("local-demo.yaml");
        let container = &mut isvc.spec.roles[0]
            .template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .containers[0];
        container.command = None;
        container.args = Some(args.iter().map(|s| (*s).to_owned()).collect());
        model_from_container(&isvc.spec.roles[0])
    };
    assert_eq!(
        with_args(&["vllm", "serve", "org/m", "--port", "8000"]).as_deref(),
        Some("org/m")
    );
    assert_eq!(
        with_args(&["--model=org/a", "--served-model-name", "alias"]).as_deref(),
        Some("alias")
    );
    assert_eq!(
        with_args(&["--model-path", "org/s"]).as_deref(),
        Some("org/s")
    );
    assert_eq!(with_args(&["--port", "8000"]), None);
}

#[test]
fn kv_aware_simulators_publish_kv_events_where_the_picker_subscribes() {
    let plan = local(&example("kv-aware.yaml"));
    assert_eq!(
        plan.router.config,
        endpoint_picker_config(RoutingStrategy::KvAware)
    );
    let backend = plan.backends().nth(1).unwrap();
    assert_eq!(backend.address, addr("127.0.0.1:8002"));
    assert_eq!(backend.kv_events, Some(addr("127.0.0.1:10002")));
    let Some(Launch::Simulator(args)) = &backend.launch else {
        panic!("a simulator");
    };
    assert!(
        args.ends_with(&[
            "--kv-events-endpoint".to_owned(),
            "tcp://127.0.0.1:10002".to_owned(),
            "--kv-events-topic".to_owned(),
            "kv@{host}:{port}@{model}".to_owned(),
        ]),
        "{args:?}"
    );
    let file: serde_json::Value = serde_json::from_str(&plan.endpoints_file()).unwrap();
    assert_eq!(
        file["endpoints"][1]["kvEventsAddress"],
        "tcp://127.0.0.1:10002"
    );
    assert!(
        plan.ports_to_bind().iter().any(|p| p.port == 10002),
        "KV-event ports are checked for conflicts"
    );

    // Strategies that do not read KV events start plain simulators.
    let demo = local(&example("local-demo.yaml"));
    assert!(demo.backends().all(|b| b.kv_events.is_none()));
    assert!(!demo.endpoints_file().contains("kvEventsAddress"));
}
