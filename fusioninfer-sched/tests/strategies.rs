//! Every routing strategy the planner emits loads and behaves as its name says.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{address, endpoint, load, text};
use fusioninfer_api::RoutingStrategy;
use fusioninfer_api::labels::COMPONENT_TYPE;
use fusioninfer_core::strategy::endpoint_picker_config;
use fusioninfer_sched::decision::headers::{DATA_PARALLEL_HOST_PORT, PREFILLER_HOST_PORT};
use fusioninfer_sched::{
    ChatMessage, Endpoint, EndpointMetrics, LoraMetrics, Request, Routed, Scheduler,
};

fn strategy(strategy: RoutingStrategy) -> Scheduler {
    Scheduler::from_yaml(endpoint_picker_config(strategy), 11)
        .unwrap_or_else(|e| panic!("{}: {e}", strategy.as_str()))
}

fn route(scheduler: &Scheduler, request: &Request, endpoints: &[Endpoint], now: Instant) -> Routed {
    scheduler
        .schedule(request, endpoints, now)
        .routed()
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "rejected: {:?}",
                scheduler.schedule(request, endpoints, now)
            )
        })
}

fn chat(system: &str, user: &str) -> Request {
    Request::chat(
        "llama",
        vec![
            ChatMessage::new("system", system),
            ChatMessage::new("user", user),
        ],
    )
}

#[test]
fn every_planner_strategy_loads() {
    for s in RoutingStrategy::ALL {
        let scheduler = strategy(s);
        assert!(scheduler.profile_names().count() >= 1, "{}", s.as_str());
    }
}

#[test]
fn prefix_cache_sticks_to_the_cached_endpoint_until_it_saturates_then_spreads() {
    let scheduler = strategy(RoutingStrategy::PrefixCache);
    let now = Instant::now();
    let mut endpoints: Vec<Endpoint> = (0..4).map(|i| endpoint(i, load(0, 0.0), now)).collect();
    let system = text(1, 2048);
    let mut picks = Vec::new();
    for i in 0..8 {
        let routed = route(
            &scheduler,
            &chat(&system, &text(100 + i, 256)),
            &endpoints,
            now,
        );
        picks.push(routed.primary);
        // The server queues what it was sent (the scrape shows it before the next request).
        let chosen = endpoints
            .iter_mut()
            .find(|e| e.address == routed.primary)
            .unwrap();
        chosen.metrics.waiting_requests += 1;
    }
    let home = picks[0];
    assert!(
        picks[..5].iter().all(|&p| p == home),
        "sticks while below 5 waiting: {picks:?}"
    );
    assert!(
        picks[5..].iter().all(|&p| p != home),
        "saturated home gets no more: {picks:?}"
    );
    // Once spilled, the second endpoint now holds the prefix and keeps the overflow.
    assert!(picks[6..].iter().all(|&p| p == picks[5]), "{picks:?}");
}

#[test]
fn kv_cache_and_queue_strategies_pick_the_least_loaded() {
    let now = Instant::now();
    let endpoints = vec![
        endpoint(0, load(1, 0.7), now),
        endpoint(1, load(3, 0.1), now),
        endpoint(2, load(0, 0.5), now),
    ];
    let request = Request::completion("llama", "hello");
    assert_eq!(
        route(
            &strategy(RoutingStrategy::KvCacheUtilization),
            &request,
            &endpoints,
            now
        )
        .primary,
        address(1)
    );
    assert_eq!(
        route(
            &strategy(RoutingStrategy::QueueSize),
            &request,
            &endpoints,
            now
        )
        .primary,
        address(2)
    );
}

#[test]
fn lora_affinity_prefers_servers_with_the_adapter() {
    let scheduler = strategy(RoutingStrategy::LoraAffinity);
    let now = Instant::now();
    let with_lora =
        |i: usize, waiting: u32, running: &[&str], waiting_adapters: &[&str], max: u32| {
            let metrics = EndpointMetrics {
                waiting_requests: waiting,
                lora: Some(LoraMetrics {
                    running_adapters: running.iter().map(|s| s.to_string()).collect(),
                    waiting_adapters: waiting_adapters.iter().map(|s| s.to_string()).collect(),
                    max_adapters: max,
                }),
                ..EndpointMetrics::default()
            };
            endpoint(i, metrics, now)
        };
    let endpoints = vec![
        with_lora(0, 1, &["other"], &[], 1),      // full, adapter absent
        with_lora(1, 1, &["other"], &["sql"], 2), // adapter waiting, no room
        with_lora(2, 1, &["sql"], &[], 1),        // adapter running
        with_lora(3, 1, &["other"], &[], 4),      // room to load
    ];
    let lora_request = Request {
        lora_adapter: Some("sql".into()),
        ..Request::completion("sql", "select")
    };
    assert_eq!(
        route(&scheduler, &lora_request, &endpoints, now).primary,
        address(2)
    );
    let without_running: Vec<_> = endpoints
        .iter()
        .filter(|e| e.address != address(2))
        .cloned()
        .collect();
    assert_eq!(
        route(&scheduler, &lora_request, &without_running, now).primary,
        address(3)
    );
    let only_waiting_or_full = vec![endpoints[0].clone(), endpoints[1].clone()];
    assert_eq!(
        route(&scheduler, &lora_request, &only_waiting_or_full, now).primary,
        address(1)
    );

    // Base-model requests have no adapter preference: the queue decides.
    let mut busy = endpoints.clone();
    busy[2].metrics.waiting_requests = 4;
    busy[0].metrics.waiting_requests = 0;
    assert_eq!(
        route(&scheduler, &Request::completion("llama", "hi"), &busy, now).primary,
        address(0)
    );
}

#[test]
fn round_robin_rotates_evenly() {
    let scheduler = strategy(RoutingStrategy::RoundRobin);
    let now = Instant::now();
    // Loads differ, and round robin ignores them (while nobody is saturated).
    let endpoints: Vec<_> = (0..4)
        .map(|i| endpoint(i, load(i as u32, 0.1 * i as f64), now))
        .collect();
    let picks: Vec<SocketAddr> = (0..8)
        .map(|_| {
            route(
                &scheduler,
                &Request::completion("llama", "same prompt"),
                &endpoints,
                now,
            )
            .primary
        })
        .collect();
    let expected: Vec<SocketAddr> = (0..8).map(|i| address(i % 4)).collect();
    assert_eq!(picks, expected);
}

#[test]
fn pd_disaggregation_decodes_on_decoders_and_prefills_long_uncached_prompts() {
    let scheduler = strategy(RoutingStrategy::PdDisaggregation);
    let now = Instant::now();
    let role = |i: usize, component: &str| {
        endpoint(i, load(0, 0.0), now).with_label(COMPONENT_TYPE, component)
    };
    let endpoints = vec![
        role(0, "decoder"),
        role(1, "decoder"),
        role(2, "prefiller"),
        role(3, "prefiller"),
    ];
    let decoders = [address(0), address(1)];
    let prefillers = [address(2).to_string(), address(3).to_string()];

    // ~1100 tokens, none cached: decode primary, prefill announced in the header.
    let long = chat(&text(7, 4096), &text(8, 300));
    let first = route(&scheduler, &long, &endpoints, now);
    assert!(decoders.contains(&first.primary), "{first:?}");
    let prefiller = first
        .headers
        .get(PREFILLER_HOST_PORT)
        .expect("long uncached prompt is prefilled remotely");
    assert!(prefillers.contains(prefiller), "{prefiller}");
    assert_eq!(
        first.result.profiles.keys().collect::<Vec<_>>(),
        ["decode", "prefill"]
    );

    // The same prompt again: cached on the decode endpoint, so the uncached part is below the
    // threshold (128 tokens) and decode serves alone — on the same decoder.
    let again = route(&scheduler, &long, &endpoints, now);
    assert_eq!(again.primary, first.primary);
    assert!(
        !again.headers.contains_key(PREFILLER_HOST_PORT),
        "{again:?}"
    );

    // A short prompt never needs a prefill endpoint.
    let short = route(
        &scheduler,
        &Request::completion("llama", "hi"),
        &endpoints,
        now,
    );
    assert!(decoders.contains(&short.primary));
    assert_eq!(short.headers.get(PREFILLER_HOST_PORT), None);

    // No decoder → 503 even though prefillers are idle.
    let prefill_only: Vec<_> = endpoints[2..].to_vec();
    let rejection = scheduler
        .schedule(&long, &prefill_only, now)
        .rejection()
        .cloned()
        .unwrap();
    assert_eq!(rejection.reason.http_status(), 503);

    // Saturated prefillers → decode alone instead of failing.
    let mut busy_prefill = endpoints.clone();
    for e in &mut busy_prefill[2..] {
        e.metrics.waiting_requests = 10;
    }
    let fresh = chat(&text(9, 4096), &text(10, 300));
    let routed = route(&scheduler, &fresh, &busy_prefill, now);
    assert!(decoders.contains(&routed.primary));
    assert_eq!(routed.headers.get(PREFILLER_HOST_PORT), None);
    // No primaryPort in the strategy: the destination is not rewritten, no rank header.
    assert_eq!(routed.headers.get(DATA_PARALLEL_HOST_PORT), None);
}
