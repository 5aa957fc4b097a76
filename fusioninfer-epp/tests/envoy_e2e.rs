//! End to end through a real Envoy (ext_proc, `FULL_DUPLEX_STREAMED` unless stated) in front of
//! the picker and simulated vLLM servers (`fusioninfer-sim`), all on loopback. The Envoy config
//! is `examples/envoy/envoy.yaml` with ports and knobs replaced (see `common::envoy_config`).
//! Without Envoy these tests skip loudly (fail under `CI=true`); `make envoy` installs it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Sum of `usage.prompt_tokens` in an answer (JSON, or the SSE usage chunk).
fn prompt_tokens(answer: &Answer) -> u64 {
    if answer.body.starts_with("data:") {
        answer
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["usage"]["prompt_tokens"].as_u64())
            .sum()
    } else {
        answer.json()["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completions_streamed_or_not_land_where_the_picker_chose() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    let sims = start_sims(3, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &[]).await;
    epp.wait_ready(3).await;
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &addresses)),
    )
    .await;
    let client = client();
    let mut expected_prompt_tokens = 0;
    let mut requests = 0;
    for i in 0..4 {
        let user = format!("question number {i}");
        for (path, body, stream) in [
            (
                "/v1/chat/completions",
                chat_body("You are terse.", &user, false),
                false,
            ),
            (
                "/v1/chat/completions",
                chat_body("You are terse.", &user, true),
                true,
            ),
            ("/v1/completions", completion_body(&user, false), false),
            ("/v1/completions", completion_body(&user, true), true),
        ] {
            let answer = post(&client, &envoy.url(path), body).await;
            requests += 1;
            assert_eq!(
                answer.status,
                200,
                "{path}: {}\n{}",
                answer.body,
                envoy.log()
            );
            let picked = answer.picked.clone().expect("x-fusioninfer-endpoint");
            assert_eq!(
                answer.served_by.as_deref(),
                Some(picked.as_str()),
                "{path}: served by another endpoint than the picker chose"
            );
            assert!(addresses.iter().any(|a| a.to_string() == picked));
            if stream {
                assert!(
                    answer.body.trim_end().ends_with("data: [DONE]"),
                    "{path}: {}",
                    answer.body
                );
            } else {
                let json = answer.json();
                assert!(json["choices"][0].is_object(), "{path}: {json}");
            }
            let tokens = prompt_tokens(&answer);
            assert!(tokens > 0, "{path}: no usage in {}", answer.body);
            expected_prompt_tokens += tokens;
        }
    }
    // The picker read every answer's usage (JSON and SSE) and counted every decision.
    assert_eq!(
        epp.metric("fusioninfer_epp_usage_tokens_total{kind=\"prompt\"}"),
        expected_prompt_tokens as f64
    );
    assert_eq!(
        epp.metric("fusioninfer_epp_responses_total{code=\"2xx\"}"),
        requests as f64
    );
    let decisions: f64 = addresses
        .iter()
        .map(|a| {
            epp.metric(&format!(
                "fusioninfer_epp_decisions_total{{endpoint=\"{a}\"}}"
            ))
        })
        .sum();
    assert_eq!(decisions, requests as f64);

    // Other paths go to some ready endpoint, untouched.
    let models = client.get(envoy.url("/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), 200);
    let served = models.headers()["x-inference-pod"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(addresses.iter().any(|a| a.to_string() == served));
    assert_eq!(
        models.json::<Value>().await.unwrap()["data"][0]["id"],
        "sim-model"
    );
    // ...and a body on another path streams through untouched (here ~100 KB to /tokenize).
    let text = words(100_000, 11);
    let body = json!({"model": "sim-model", "prompt": text}).to_string();
    let direct = post(
        &client,
        &format!("{}/tokenize", sims[0].url()),
        body.clone(),
    )
    .await;
    let through = post(&client, &envoy.url("/tokenize"), body).await;
    assert_eq!(through.status, 200, "{}", through.body);
    assert_eq!(through.json()["count"], direct.json()["count"]);
    assert!(through.picked.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_intact_and_oversized_ones_get_413() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    let sims = start_sims(3, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &["--max-request-body-bytes", "262144"]).await;
    epp.wait_ready(3).await;
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &addresses)),
    )
    .await;
    let client = client();

    // ~150 KB: three chunks of at most 62,000 bytes on the way back to Envoy.
    for (path, body) in [
        (
            "/v1/completions",
            completion_body(&words(150_000, 1), false),
        ),
        (
            "/v1/chat/completions",
            chat_body(&words(100_000, 2), &words(50_000, 3), false),
        ),
    ] {
        let direct = post(&client, &format!("{}{path}", sims[0].url()), body.clone()).await;
        assert_eq!(direct.status, 200, "{}", direct.body);
        let through = post(&client, &envoy.url(path), body.clone()).await;
        assert_eq!(through.status, 200, "{}\n{}", through.body, envoy.log());
        assert_eq!(
            prompt_tokens(&through),
            prompt_tokens(&direct),
            "{path}: the model server saw a different prompt through Envoy"
        );
    }

    let oversized = completion_body(&words(300_000, 4), false);
    let answer = post(&client, &envoy.url("/v1/completions"), oversized).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    let error = answer.json();
    assert_eq!(error["error"]["type"], "RequestTooLargeError");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("262144"),
        "{error}"
    );
    let after = post(
        &client,
        &envoy.url("/v1/completions"),
        completion_body("still serving", false),
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_naming_the_field_and_the_picker_keeps_serving() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    let sims = start_sims(3, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &[]).await;
    epp.wait_ready(3).await;
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &addresses)),
    )
    .await;
    let client = client();
    let cases: [(&str, &str, Option<&str>, &str); 6] = [
        (
            "/v1/chat/completions",
            "{\"model\": \"sim-model\", \"messages\": [",
            None,
            "invalid JSON",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            Some("model"),
            "`model`",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"sim-model","messages":[]}"#,
            Some("messages"),
            "`messages`",
        ),
        (
            "/v1/completions",
            r#"{"model":"sim-model","prompt":""}"#,
            Some("prompt"),
            "`prompt`",
        ),
        (
            "/v1/completions",
            r#"{"model":"sim-model"}"#,
            Some("prompt"),
            "`prompt`",
        ),
        ("/v1/completions", "not json at all", None, "JSON object"),
    ];
    for (path, body, param, message) in cases {
        let answer = post(&client, &envoy.url(path), body.to_owned()).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(answer.picked.is_none() && answer.served_by.is_none());
        let error = answer.json();
        assert_eq!(error["error"]["type"], "BadRequestError", "{error}");
        assert_eq!(error["error"]["code"], 400);
        assert_eq!(error["error"]["param"], json!(param), "{body}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{body}: {error}"
        );
        // And the picker keeps serving.
        let ok = post(&client, &envoy.url(path), completion_or_chat(path)).await;
        assert_eq!(ok.status, 200, "after {body}: {}", ok.body);
    }
    assert_eq!(
        epp.metric("fusioninfer_epp_rejections_total{reason=\"bad_request\"}"),
        6.0
    );
}

fn completion_or_chat(path: &str) -> String {
    if path.contains("chat") {
        chat_body("sys", "fine", false)
    } else {
        completion_body("fine", false)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_gives_503_until_one_is_ready() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    // A listed endpoint nobody serves is never ready.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);
    let epp = TestEpp::start(&[], &[]).await;
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &[dead_address])),
    )
    .await;
    let client = client();
    for endpoints in [vec![], vec![dead_address]] {
        std::fs::write(
            &epp.endpoints_file,
            endpoints_yaml(&endpoints.iter().map(|a| (*a, &[][..])).collect::<Vec<_>>()),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while epp.epp.store().known_addresses() != endpoints {
            assert!(Instant::now() < deadline, "endpoints file not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for path in ["/v1/chat/completions", "/v1/models"] {
            let answer = post(&client, &envoy.url(path), completion_or_chat(path)).await;
            assert_eq!(
                answer.status, 503,
                "{path} with {endpoints:?}: {}",
                answer.body
            );
            let error = answer.json();
            assert_eq!(error["error"]["type"], "ServiceUnavailableError");
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("no ready endpoint"),
                "{error}"
            );
            assert_eq!(answer.retry_after.as_deref(), Some("1"));
        }
    }
    // A server appears: the file is re-read, the endpoint scraped, requests flow.
    let sims = start_sims(1, |_| {}).await;
    std::fs::write(
        &epp.endpoints_file,
        endpoints_yaml(&[(sims[0].addr, &[][..])]),
    )
    .unwrap();
    epp.wait_ready(1).await;
    let answer = post(
        &client,
        &envoy.url("/v1/chat/completions"),
        chat_body("s", "u", false),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.served_by, Some(sims[0].addr.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_fleet_gets_429() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    // One running request per server and slow tokens: a few requests queue up quickly.
    let sims = start_sims(3, |c| {
        c.max_num_seqs = 1;
        c.time_scale = 1.0;
        c.latency.itl_ms = 20.0;
    })
    .await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &[]).await;
    epp.wait_ready(3).await;
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &addresses)),
    )
    .await;
    let client = client();
    // Fill every server directly: 1 running + 6 waiting (saturation: waiting >= 5).
    let mut fillers = Vec::new();
    for sim in &sims {
        for i in 0..7 {
            let client = client.clone();
            let url = format!("{}/v1/completions", sim.url());
            let body =
                json!({"model": "sim-model", "prompt": format!("filler {i}"), "max_tokens": 500})
                    .to_string();
            fillers.push(tokio::spawn(async move {
                let _ = client.post(url).body(body).send().await;
            }));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let saturated = epp
            .epp
            .store()
            .ready()
            .iter()
            .filter(|e| e.metrics.waiting_requests >= 5)
            .count();
        if saturated == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "servers never looked saturated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = post(
        &client,
        &envoy.url("/v1/chat/completions"),
        chat_body("s", "one more", false),
    )
    .await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    let error = answer.json();
    assert_eq!(error["error"]["type"], "RateLimitError");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("saturated"),
        "{error}"
    );
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    for filler in fillers {
        filler.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_prefixes_stick_to_one_endpoint_while_load_stays_bounded() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    // Two running requests per server and real-time tokens, so a hot server queues.
    let sims = start_sims(3, |c| {
        c.max_num_seqs = 2;
        c.time_scale = 1.0;
        c.latency.itl_ms = 10.0;
    })
    .await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &["--strategy", "prefix-cache"]).await;
    epp.wait_ready(3).await;
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &addresses)),
    )
    .await;
    let client = client();
    let systems: Vec<String> = (0..6).map(|g| words(3000, 100 + g)).collect();

    // Sequential requests: each group's shared system prompt keeps its endpoint.
    let mut by_group: BTreeMap<usize, BTreeMap<String, usize>> = BTreeMap::new();
    let mut cached_hits = 0;
    let mut total = 0;
    for round in 0..5 {
        for (g, system) in systems.iter().enumerate() {
            let body = chat_body(system, &format!("group {g} question {round}"), false);
            let answer = post(&client, &envoy.url("/v1/chat/completions"), body).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let served = answer.served_by.clone().unwrap();
            *by_group.entry(g).or_default().entry(served).or_default() += 1;
            if round > 0 && answer.cached_tokens.unwrap_or(0) > 0 {
                cached_hits += 1;
            }
            total += 1;
        }
    }
    for (g, served) in &by_group {
        let top = served.values().max().unwrap();
        assert!(
            *top >= 4,
            "group {g} did not stick to one endpoint: {served:?}"
        );
    }
    assert!(
        cached_hits >= 20,
        "only {cached_hits} of 24 repeat requests hit the server's prefix cache"
    );
    println!("stickiness: {by_group:?}, cached hits {cached_hits}/{total}");

    // A burst on one group: its endpoint saturates (queue >= 5) and the rest spills over;
    // nothing fails. 20 requests cannot saturate the fleet (3 x (2 running + 5 waiting)).
    let hot = by_group[&0]
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(e, _)| e.clone())
        .unwrap();
    let mut burst = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        let url = envoy.url("/v1/chat/completions");
        let body = json!({
            "model": "sim-model",
            "messages": [{"role": "system", "content": systems[0]}, {"role": "user", "content": format!("burst {i}")}],
            "max_tokens": 40,
        })
        .to_string();
        burst.push(tokio::spawn(async move { post(&client, &url, body).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for task in burst {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        *served.entry(answer.served_by.unwrap()).or_default() += 1;
    }
    println!("burst on the hot group ({hot}): {served:?}");
    let on_hot = served.get(&hot).copied().unwrap_or(0);
    assert!(
        on_hot < 20 && served.len() >= 2,
        "the burst never left the saturated endpoint: {served:?}"
    );
    assert!(on_hot > 0, "affinity ignored entirely: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_stops_receiving_traffic_within_a_scrape_interval() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    let mut sims = start_sims(3, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &["--strategy", "round-robin"]).await;
    epp.wait_ready(3).await;
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &addresses)),
    )
    .await;
    let client = client();
    let mut seen = BTreeSet::new();
    for i in 0..9 {
        let answer = post(
            &client,
            &envoy.url("/v1/completions"),
            completion_body(&format!("warm {i}"), false),
        )
        .await;
        assert_eq!(answer.status, 200);
        seen.insert(answer.served_by.unwrap());
    }
    assert_eq!(seen.len(), 3, "round robin uses every server: {seen:?}");

    let victim = sims.remove(1);
    let victim_address = victim.addr;
    let killed_at = Instant::now();
    victim.shutdown().await;
    let shutdown_took = killed_at.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    while epp.epp.store().ready_addresses().contains(&victim_address) {
        assert!(Instant::now() < deadline, "the dead server stayed ready");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let removed_after = killed_at.elapsed() - shutdown_took;
    println!(
        "dead server left the candidates {removed_after:?} after it stopped (scrape interval 50ms)"
    );
    // One interval plus a scrape's round trip; generous for a loaded CI machine.
    assert!(
        removed_after < Duration::from_millis(500),
        "took {removed_after:?}"
    );

    for i in 0..30 {
        let answer = post(
            &client,
            &envoy.url("/v1/completions"),
            completion_body(&format!("after {i}"), i % 2 == 0),
        )
        .await;
        assert_eq!(answer.status, 200, "request {i} failed: {}", answer.body);
        assert_ne!(answer.served_by, Some(victim_address.to_string()));
    }
}

/// Envoy's `failure_mode_allow` with the picker stopped. FailClose: Envoy answers 500. FailOpen:
/// requests skip the picker and go round robin to `pool_fallback` — except, in Envoy 1.40, a
/// request whose body Envoy already streamed to the (dead) picker in `FULL_DUPLEX_STREAMED`
/// mode: Envoy no longer has that body and fails it with 500. With `request_body_mode:
/// BUFFERED` Envoy keeps the body and fails open for every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_picker_stopped_envoy_fails_open_or_closed_as_configured() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    let sims = start_sims(3, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &[]).await;
    epp.wait_ready(3).await;
    let mut knobs = EnvoyKnobs::new(epp.epp.grpc_address, &addresses);
    let fail_close = Envoy::start(&envoy_binary, &envoy_config(&knobs)).await;
    knobs.failure_mode_allow = true;
    let fail_open = Envoy::start(&envoy_binary, &envoy_config(&knobs)).await;
    knobs.request_body_mode = "BUFFERED";
    let fail_open_buffered = Envoy::start(&envoy_binary, &envoy_config(&knobs)).await;
    let client = client();
    for envoy in [&fail_close, &fail_open, &fail_open_buffered] {
        let answer = post(
            &client,
            &envoy.url("/v1/chat/completions"),
            chat_body("s", "picker up", false),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.picked.is_some(), "routed by the picker");
    }

    epp.epp.shutdown(Duration::from_secs(2)).await;
    let get_models = |envoy: &Envoy| {
        let request = client.get(envoy.url("/v1/models"));
        async move { request.send().await.unwrap() }
    };

    // FailClose: Envoy answers 500 itself, with or without a body.
    let answer = post(
        &client,
        &fail_close.url("/v1/chat/completions"),
        chat_body("s", "picker down", false),
    )
    .await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert!(answer.served_by.is_none());
    assert_eq!(get_models(&fail_close).await.status(), 500);

    // FailOpen, full duplex: body-less requests reach a model server without the picker...
    let models = get_models(&fail_open).await;
    assert_eq!(models.status(), 200);
    assert!(models.headers().get("x-fusioninfer-endpoint").is_none());
    assert!(models.headers().get("x-inference-pod").is_some());
    // ...but a streamed body cannot be replayed: Envoy 1.40 fails it closed.
    let answer = post(
        &client,
        &fail_open.url("/v1/chat/completions"),
        chat_body("s", "picker down", false),
    )
    .await;
    assert_eq!(
        answer.status, 500,
        "Envoy changed its full-duplex fail-open behaviour; update the docs: {}",
        answer.body
    );

    // FailOpen, buffered request bodies: every request goes round robin to the pool.
    let mut served = BTreeSet::new();
    for i in 0..6 {
        let answer = post(
            &client,
            &fail_open_buffered.url("/v1/chat/completions"),
            chat_body("s", &format!("picker down {i}"), i % 2 == 1),
        )
        .await;
        assert_eq!(
            answer.status,
            200,
            "{}\n{}",
            answer.body,
            fail_open_buffered.log()
        );
        assert!(answer.picked.is_none(), "the picker cannot have chosen");
        served.insert(answer.served_by.unwrap());
    }
    assert_eq!(served.len(), 3, "fallback is round robin: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_body_mode_routes_too() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    let sims = start_sims(3, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &["--strategy", "round-robin"]).await;
    epp.wait_ready(3).await;
    let mut knobs = EnvoyKnobs::new(epp.epp.grpc_address, &addresses);
    knobs.request_body_mode = "BUFFERED";
    knobs.response_body_mode = "BUFFERED";
    let envoy = Envoy::start(&envoy_binary, &envoy_config(&knobs)).await;
    let client = client();
    let mut seen = BTreeSet::new();
    let mut expected_prompt_tokens = 0;
    for i in 0..6 {
        let (path, body) = if i % 2 == 0 {
            (
                "/v1/completions",
                completion_body(&format!("buffered {i}"), i % 3 == 0),
            )
        } else {
            (
                "/v1/chat/completions",
                chat_body("s", &format!("buffered {i}"), i % 3 == 0),
            )
        };
        let answer = post(&client, &envoy.url(path), body).await;
        assert_eq!(answer.status, 200, "{}\n{}", answer.body, envoy.log());
        assert_eq!(answer.served_by, answer.picked);
        expected_prompt_tokens += prompt_tokens(&answer);
        seen.insert(answer.served_by.unwrap());
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(
        epp.metric("fusioninfer_epp_usage_tokens_total{kind=\"prompt\"}"),
        expected_prompt_tokens as f64
    );
    let answer = post(&client, &envoy.url("/v1/completions"), "{".to_owned()).await;
    assert_eq!(answer.status, 400);
}
