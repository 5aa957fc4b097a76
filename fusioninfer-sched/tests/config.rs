//! Building schedulers from EndpointPickerConfigs: upstream defaults, errors that name the
//! culprit, rejections, hooks.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{address, endpoint, idle_pool, load};
use fusioninfer_api::epp_config::EndpointPickerConfig;
use fusioninfer_sched::decision::headers::{DATA_PARALLEL_HOST_PORT, PREFILLER_HOST_PORT};
use fusioninfer_sched::plugins::ActiveRequestScorer;
use fusioninfer_sched::{
    ConfigError, CycleState, Decision, Endpoint, Plugin, PostDecision, ProfileRunResult, Registry,
    RejectReason, Request, ResponseInfo, Scheduler, SchedulingResult, Scorer, Target,
};

const HEADER: &str =
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n";

fn scheduler(body: &str) -> Result<Scheduler, ConfigError> {
    Scheduler::from_yaml(&format!("{HEADER}{body}"), 1)
}

fn primary(decision: &Decision) -> std::net::SocketAddr {
    decision
        .routed()
        .unwrap_or_else(|| panic!("rejected: {decision:?}"))
        .primary
}

#[test]
fn errors_name_the_plugin_type_and_parameter() {
    let error = scheduler("plugins:\n- {name: p, type: no-such-scorer}\nschedulingProfiles:\n- {name: d, plugins: [{pluginRef: p}]}\n")
        .err()
        .unwrap();
    assert!(
        matches!(&error, ConfigError::UnknownPluginType { name, type_name, .. } if name == "p" && type_name == "no-such-scorer")
    );
    assert!(
        error.to_string().contains("queue-scorer"),
        "lists known types: {error}"
    );

    let cases = [
        (
            "{name: prefix, type: prefix-cache-scorer, parameters: {blockSize: big}}",
            "prefix",
            "blockSize",
        ),
        (
            "{name: prefix, type: prefix-cache-scorer, parameters: {blokSize: 64}}",
            "prefix",
            "blokSize",
        ),
        (
            "{name: prefix, type: prefix-cache-scorer, parameters: {maxPrefixBlocksToMatch: 0}}",
            "prefix",
            "maxPrefixBlocksToMatch",
        ),
        (
            "{name: q, type: queue-scorer, parameters: {weight: 2}}",
            "q",
            "weight",
        ),
        (
            "{name: pick, type: max-score-picker, parameters: {maxNumOfEndpoints: 0}}",
            "pick",
            "maxNumOfEndpoints",
        ),
        (
            "{name: f, type: by-label, parameters: {validValues: [a]}}",
            "f",
            "label",
        ),
        (
            "{name: f, type: by-label, parameters: {label: role}}",
            "f",
            "validValues",
        ),
        (
            "{name: a, type: active-request-scorer, parameters: {requestTimeout: soon}}",
            "a",
            "requestTimeout",
        ),
        (
            "{name: p, type: prefix-cache-scorer, parameters: [1, 2]}",
            "p",
            "parameters",
        ),
    ];
    for (plugin, name, parameter) in cases {
        let error = scheduler(&format!("plugins:\n- {plugin}\nschedulingProfiles:\n- {{name: d, plugins: [{{pluginRef: {name}}}]}}\n"))
            .err()
            .unwrap_or_else(|| panic!("{plugin} was accepted"));
        match &error {
            ConfigError::BadParameter {
                name: n,
                parameter: p,
                ..
            } => {
                assert_eq!((n.as_str(), p.as_str()), (name, parameter), "{error}")
            }
            other => panic!("{plugin}: {other}"),
        }
        assert!(error.to_string().contains(parameter), "{error}");
    }
}

#[test]
fn structural_and_profile_errors() {
    let invalid = scheduler(
        "plugins: []\nschedulingProfiles:\n- {name: d, plugins: [{pluginRef: missing}]}\n",
    )
    .err()
    .unwrap();
    assert!(
        matches!(invalid, ConfigError::Invalid(_)) && invalid.to_string().contains("missing"),
        "{invalid}"
    );

    let two_pickers = scheduler(
        "plugins:\n- {name: a, type: max-score-picker}\n- {name: b, type: random-picker}\nschedulingProfiles:\n- {name: d, plugins: [{pluginRef: a}, {pluginRef: b}]}\n",
    )
    .err()
    .unwrap();
    assert!(
        matches!(&two_pickers, ConfigError::Profile { profile, .. } if profile == "d"),
        "{two_pickers}"
    );

    let handler_in_profile = scheduler(
        "plugins:\n- {name: h, type: single-profile-handler}\nschedulingProfiles:\n- {name: d, plugins: [{pluginRef: h}]}\n",
    )
    .err()
    .unwrap();
    assert!(
        handler_in_profile
            .to_string()
            .contains("not a filter, scorer or picker"),
        "{handler_in_profile}"
    );

    let no_handler = scheduler(
        "plugins:\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: a, plugins: [{pluginRef: queue-scorer}]}\n- {name: b, plugins: [{pluginRef: queue-scorer}]}\n",
    )
    .err()
    .unwrap();
    assert!(
        matches!(no_handler, ConfigError::ProfileHandler(_)),
        "{no_handler}"
    );

    // A handler whose decider is itself.
    let cycle = scheduler(
        "plugins:\n- {name: pd, type: pd-profile-handler, parameters: {deciderPluginName: pd}}\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: decode, plugins: [{pluginRef: queue-scorer}]}\n- {name: prefill, plugins: [{pluginRef: queue-scorer}]}\n",
    )
    .err()
    .unwrap();
    assert!(matches!(cycle, ConfigError::ReferenceCycle(_)), "{cycle}");

    let missing_prefill = scheduler(
        "plugins:\n- {type: pd-profile-handler}\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: decode, plugins: [{pluginRef: queue-scorer}]}\n",
    )
    .err()
    .unwrap();
    assert!(
        missing_prefill.to_string().contains("prefill"),
        "{missing_prefill}"
    );

    let bad_saturation = scheduler(
        "plugins:\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: d, plugins: [{pluginRef: queue-scorer}]}\nsaturationDetector: {kvCacheUtilThreshold: 2}\n",
    )
    .err()
    .unwrap();
    assert!(
        matches!(bad_saturation, ConfigError::Saturation { .. }),
        "{bad_saturation}"
    );
}

#[test]
fn accepts_llm_d_api_group_and_defaults_handler_and_picker() {
    let config = format!(
        "{}plugins:\n- {{type: queue-scorer}}\nschedulingProfiles:\n- {{name: default, plugins: [{{pluginRef: queue-scorer}}]}}\n",
        HEADER.replace("inference.networking.x-k8s.io", "llm-d.ai")
    );
    let scheduler = Scheduler::from_yaml(&config, 3).unwrap();
    let now = Instant::now();
    let endpoints = vec![
        endpoint(0, load(3, 0.0), now),
        endpoint(1, load(1, 0.0), now),
        endpoint(2, load(2, 0.0), now),
    ];
    let decision = scheduler.schedule(&Request::completion("m", "hi"), &endpoints, now);
    assert_eq!(
        primary(&decision),
        address(1),
        "max-score picker by default"
    );
    assert!(decision.routed().unwrap().fallbacks.is_empty());
}

#[test]
fn unweighted_scorers_weigh_one_and_weights_multiply() {
    // Endpoint 0: short queue, half-full cache. Endpoint 1: long queue, empty cache.
    let now = Instant::now();
    let endpoints = vec![
        endpoint(0, load(0, 0.5), now),
        endpoint(1, load(4, 0.0), now),
    ];
    let with_kv_weight = |weight: &str| {
        let scheduler = scheduler(&format!(
            "plugins:\n- {{type: queue-scorer}}\n- {{type: kv-cache-utilization-scorer}}\nschedulingProfiles:\n- name: d\n  plugins:\n  - {{pluginRef: queue-scorer}}\n  - {{pluginRef: kv-cache-utilization-scorer{weight}}}\n"
        ))
        .unwrap();
        primary(&scheduler.schedule(&Request::default(), &endpoints, now))
    };
    // 1 + 0.5 vs 0 + 1 → endpoint 0, with weight absent or 1; 1 + 1.5 vs 0 + 3 → endpoint 1.
    assert_eq!(with_kv_weight(""), address(0));
    assert_eq!(with_kv_weight(", weight: 1"), address(0));
    assert_eq!(with_kv_weight(", weight: 3"), address(1));
}

#[test]
fn rejections_map_to_429_and_503() {
    let scheduler = scheduler(
        "plugins:\n- {name: decoders, type: by-label, parameters: {label: role, validValues: [decode]}}\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: d, plugins: [{pluginRef: decoders}, {pluginRef: queue-scorer}]}\nsaturationDetector: {queueDepthThreshold: 2, metricsStalenessThreshold: 1s}\n",
    )
    .unwrap();
    let now = Instant::now();
    let request = Request::default();
    let reason = |endpoints: &[Endpoint]| {
        scheduler
            .schedule(&request, endpoints, now)
            .rejection()
            .map(|r| r.reason)
    };

    assert_eq!(reason(&[]), Some(RejectReason::NoEndpoint));
    assert_eq!(RejectReason::NoEndpoint.http_status(), 503);
    let unlabelled = idle_pool(2, now);
    assert_eq!(reason(&unlabelled), Some(RejectReason::NoEndpoint));

    let labelled = |waiting: u32, refreshed: Instant| {
        endpoint(0, load(waiting, 0.0), refreshed).with_label("role", "decode")
    };
    assert_eq!(reason(&[labelled(1, now)]), None);
    // The config's threshold (2), not the default (5).
    assert_eq!(reason(&[labelled(2, now)]), Some(RejectReason::Saturated));
    assert_eq!(RejectReason::Saturated.http_status(), 429);
    // The config's staleness (1 s): 900 ms old is fresh, 1.1 s old is saturated.
    assert_eq!(
        scheduler
            .schedule(
                &request,
                &[labelled(0, now)],
                now + Duration::from_millis(900)
            )
            .rejection(),
        None
    );
    assert_eq!(
        scheduler
            .schedule(
                &request,
                &[labelled(0, now)],
                now + Duration::from_millis(1100)
            )
            .rejection()
            .map(|r| r.reason),
        Some(RejectReason::Saturated)
    );
}

#[test]
fn max_num_of_endpoints_gives_ordered_fallbacks() {
    let scheduler = scheduler(
        "plugins:\n- {type: queue-scorer}\n- {type: max-score-picker, parameters: {maxNumOfEndpoints: 3}}\nschedulingProfiles:\n- {name: d, plugins: [{pluginRef: queue-scorer}, {pluginRef: max-score-picker}]}\n",
    )
    .unwrap();
    let now = Instant::now();
    let endpoints: Vec<_> = [4, 0, 3, 1]
        .into_iter()
        .enumerate()
        .map(|(i, q)| endpoint(i, load(q, 0.0), now))
        .collect();
    let routed = scheduler
        .schedule(&Request::default(), &endpoints, now)
        .routed()
        .cloned()
        .unwrap();
    assert_eq!(routed.primary, address(1));
    assert_eq!(routed.fallbacks, [address(3), address(2)]);
    assert_eq!(
        routed.destination_list(),
        format!("{},{},{}", address(1), address(3), address(2))
    );
}

#[test]
fn misbehaving_custom_plugins_are_internal_errors_not_panics() {
    struct OneScore;
    impl Plugin for OneScore {
        fn as_scorer(&self) -> Option<&dyn Scorer> {
            Some(self)
        }
    }
    impl Scorer for OneScore {
        fn score(&self, _: &Request, _: &mut CycleState, _: &[&Endpoint]) -> Vec<f64> {
            vec![1.0]
        }
    }
    let mut registry = Registry::with_builtins();
    registry.register("one-score", |_| Ok(Arc::new(OneScore)));
    let config = EndpointPickerConfig::parse(&format!(
        "{HEADER}plugins:\n- {{type: one-score}}\nschedulingProfiles:\n- {{name: d, plugins: [{{pluginRef: one-score}}]}}\n"
    ))
    .unwrap();
    let scheduler = Scheduler::builder(&config)
        .registry(&registry)
        .seed(1)
        .build()
        .unwrap();
    let now = Instant::now();
    let decision = scheduler.schedule(&Request::default(), &idle_pool(3, now), now);
    assert_eq!(
        decision.rejection().map(|r| r.reason.http_status()),
        Some(500)
    );
}

#[test]
fn pd_handler_parameters_of_both_llm_d_generations() {
    let profiles = "schedulingProfiles:\n- {name: decode, plugins: [{pluginRef: decoders}, {pluginRef: queue-scorer}]}\n- {name: prefill, plugins: [{pluginRef: prefillers}, {pluginRef: queue-scorer}]}\n";
    let filters = "- {name: decoders, type: decode-filter}\n- {name: prefillers, type: prefill-filter}\n- {type: queue-scorer}\n";
    let now = Instant::now();
    let endpoints = vec![
        endpoint(0, load(0, 0.0), now)
            .with_label(fusioninfer_api::labels::COMPONENT_TYPE, "decoder"),
        endpoint(1, load(0, 0.0), now)
            .with_label(fusioninfer_api::labels::COMPONENT_TYPE, "prefiller"),
    ];
    let request = Request::completion("m", "x".repeat(4000));

    // New generation: a handler names its decider plugin; primaryPort sends the request to the
    // pod's primary port and names the chosen rank in a header.
    let disagg = scheduler(&format!(
        "plugins:\n- {{type: disagg-profile-handler, parameters: {{prefillDeciderPluginName: decider, primaryPort: 9000}}}}\n- {{name: decider, type: prefix-based-pd-decider, parameters: {{nonCachedTokens: 500}}}}\n{filters}{profiles}"
    ))
    .unwrap();
    let routed = disagg
        .schedule(&request, &endpoints, now)
        .routed()
        .cloned()
        .unwrap();
    assert_eq!(routed.primary, "10.0.0.1:9000".parse().unwrap());
    assert_eq!(
        routed.headers.get(DATA_PARALLEL_HOST_PORT),
        Some(&address(0).to_string())
    );
    assert_eq!(
        routed.headers.get(PREFILLER_HOST_PORT),
        Some(&address(1).to_string()),
        "default header handler added"
    );
    // 1000 estimated tokens, threshold 500 → prefill; a short prompt stays on decode alone.
    let short = disagg
        .schedule(&Request::completion("m", "short"), &endpoints, now)
        .routed()
        .cloned()
        .unwrap();
    assert!(!short.headers.contains_key(PREFILLER_HOST_PORT));

    // A disagg handler without a decider never prefills, so a prefill profile is an error.
    let error = scheduler(&format!(
        "plugins:\n- {{type: disagg-profile-handler}}\n{filters}{profiles}"
    ))
    .err()
    .unwrap();
    assert!(error.to_string().contains("never run"), "{error}");

    let bad_port = scheduler(&format!(
        "plugins:\n- {{type: pd-profile-handler, parameters: {{primaryPort: 70000}}}}\n{filters}{profiles}"
    ));
    assert!(
        matches!(bad_port, Err(ConfigError::BadParameter { parameter, .. }) if parameter == "primaryPort")
    );
    let bad_prefix = scheduler(&format!(
        "plugins:\n- {{type: pd-profile-handler, parameters: {{prefixPluginName: nope}}}}\n{filters}{profiles}"
    ));
    assert!(
        matches!(bad_prefix, Err(ConfigError::BadParameter { parameter, .. }) if parameter == "prefixPluginName")
    );
}

#[test]
fn active_request_accounting_follows_decisions_and_responses() {
    let config = EndpointPickerConfig::parse(&format!(
        "{HEADER}plugins:\n- {{type: active-request-scorer, parameters: {{requestTimeout: 10s}}}}\nschedulingProfiles:\n- {{name: d, plugins: [{{pluginRef: active-request-scorer}}]}}\n"
    ))
    .unwrap();
    let scheduler = Scheduler::builder(&config).seed(9).build().unwrap();
    let now = Instant::now();
    let endpoints = idle_pool(2, now);
    let request = Request::default();
    // In-flight counts spread traffic: the second request avoids the first's endpoint.
    let first = scheduler
        .schedule(&request, &endpoints, now)
        .routed()
        .cloned()
        .unwrap();
    let second = scheduler
        .schedule(&request, &endpoints, now)
        .routed()
        .cloned()
        .unwrap();
    assert_ne!(first.primary, second.primary);
    // Both busy; finishing the first makes its endpoint the preferred one again.
    scheduler.on_response(
        &request,
        &first,
        &ResponseInfo {
            served_by: Some(first.primary),
            status: 200,
        },
        now,
    );
    let third = scheduler
        .schedule(&request, &endpoints, now)
        .routed()
        .cloned()
        .unwrap();
    assert_eq!(third.primary, first.primary);

    // Unanswered requests expire after the timeout.
    let tracker = ActiveRequestScorer::new(Duration::from_secs(10));
    let result = SchedulingResult::single(
        "d",
        ProfileRunResult {
            targets: vec![Target::at(address(0))],
        },
    );
    tracker.post_decision(
        &request,
        &CycleState::new(7, now, 0),
        &endpoints,
        &result,
        &mut BTreeMap::new(),
    );
    assert_eq!(tracker.in_flight(address(0)), 1);
    let candidates: Vec<&Endpoint> = endpoints.iter().collect();
    let mut cycle = CycleState::new(8, now + Duration::from_secs(9), 0);
    assert_eq!(tracker.score(&request, &mut cycle, &candidates), [0.0, 1.0]);
    let mut cycle = CycleState::new(9, now + Duration::from_secs(10), 0);
    assert_eq!(tracker.score(&request, &mut cycle, &candidates), [1.0, 1.0]);
    assert_eq!(tracker.in_flight(address(0)), 0);
}
