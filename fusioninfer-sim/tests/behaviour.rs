//! Behaviour a router depends on: prefix-cache hits and the TTFT they buy, the latency model,
//! max-num-seqs with a FIFO waiting queue and 429, LoRA adapters in `vllm:lora_requests_info`,
//! fault injection, eviction events, seeded determinism, P/D hand-off, replicas.
//!
//! Timing is checked through the model's own clock (the `x-sim-*` headers and the metrics,
//! which report model time), never by measuring wall time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fusioninfer_sim::engine::{Engine, FinishReason, Submission};
use fusioninfer_sim::kv_events::{EndpointMode, KvEvent};
use fusioninfer_sim::{KvEventsConfig, LatencyConfig, ModelTokenizer, SimConfig, start_replicas};
use serde_json::{Value, json};

fn latency(overhead: f64, prefill_us: f64, itl: f64, slowdown: f64) -> LatencyConfig {
    LatencyConfig {
        ttft_overhead_ms: overhead,
        prefill_us_per_token: prefill_us,
        itl_ms: itl,
        running_slowdown: slowdown,
        kv_transfer_overhead_ms: 5.0,
        kv_transfer_us_per_token: 10.0,
    }
}

fn ids(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

async fn complete(
    url: &str,
    prompt: &[u32],
    max_tokens: usize,
) -> (u16, reqwest::header::HeaderMap, Value) {
    post_json(
        &format!("{url}/v1/completions"),
        &json!({"model": "sim-model", "prompt": prompt, "max_tokens": max_tokens}),
    )
    .await
}

/// Starts a long streaming completion and returns once it is admitted (headers arrived).
async fn start_stream(url: &str, prompt: &[u32], model: &str) -> reqwest::Response {
    let res = client()
        .post(format!("{url}/v1/completions"))
        .json(&json!({"model": model, "prompt": prompt, "max_tokens": 2000, "stream": true}))
        .send()
        .await
        .expect("stream starts");
    assert_eq!(res.status(), 200);
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_prefix_raises_hit_rate_and_cuts_ttft_as_modelled() {
    let cfg = SimConfig {
        latency: latency(10.0, 200.0, 5.0, 0.0),
        ..test_config()
    };
    let server = start(cfg).await;
    let url = server.url();
    let prefix = ids(1000..2024); // 1024 tokens = 64 blocks of 16
    let mut ttfts = Vec::new();
    for i in 0..8u32 {
        let mut prompt = prefix.clone();
        prompt.extend(ids(10_000 + i * 64..10_000 + (i + 1) * 64));
        let (status, h, body) = complete(&url, &prompt, 4).await;
        assert_eq!(status, 200);
        let cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert_eq!(cached, if i == 0 { 0 } else { 1024 }, "request {i}");
        assert_eq!(header_f64(&h, "x-sim-cached-tokens") as u64, cached);
        assert_eq!(
            header_f64(&h, "x-sim-queue-ms"),
            0.0,
            "sequential requests never wait"
        );
        let ttft = header_f64(&h, "x-sim-first-token-ms");
        let uncached = 1088.0 - cached as f64;
        assert!(
            (ttft - (10.0 + uncached * 0.2)).abs() < 1e-3,
            "TTFT {ttft} follows the model"
        );
        ttfts.push(ttft);
    }
    // Cold: 10 + 1088*0.2 = 227.6 ms; warm: 10 + 64*0.2 = 22.8 ms, about a tenth.
    let warm = ttfts[1..].iter().sum::<f64>() / 7.0;
    assert!(warm < ttfts[0] * 0.15, "warm {warm} vs cold {}", ttfts[0]);
    let text = get_text(&format!("{url}/metrics")).await.1;
    let hits = metric(&text, "vllm:prefix_cache_hits_total", &[]);
    let queries = metric(&text, "vllm:prefix_cache_queries_total", &[]);
    assert_eq!(hits, 7.0 * 1024.0);
    assert_eq!(queries, 8.0 * 1088.0);
    // TTFT histogram (model time, queue 0) sums the per-request first-token times.
    let sum = metric(&text, "vllm:time_to_first_token_seconds_sum", &[]);
    assert!((sum - ttfts.iter().sum::<f64>() / 1000.0).abs() < 1e-9);
    assert_eq!(
        metric(&text, "vllm:time_to_first_token_seconds_count", &[]),
        8.0
    );
    // A different prefix misses again.
    let (_, _, body) = complete(&url, &ids(50_000..51_088), 1).await;
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_slows_down_with_running_requests() {
    let cfg = SimConfig {
        latency: latency(10.0, 100.0, 50.0, 0.5),
        time_scale: 0.01,
        ..test_config()
    };
    let server = start(cfg).await;
    let url = server.url();
    let mut background = Vec::new();
    for i in 0..3u32 {
        background.push(start_stream(&url, &ids(i * 100..i * 100 + 32), "sim-model").await);
    }
    // 4 running: slowdown 1 + 0.5 * 3 = 2.5; (10 + 200 * 0.1) * 2.5 = 75 ms.
    let (status, h, _) = complete(&url, &ids(5000..5200), 1).await;
    assert_eq!(status, 200);
    assert!((header_f64(&h, "x-sim-first-token-ms") - 75.0).abs() < 1e-3);
    drop(background);
    wait_metrics(&url, |t| metric(t, "vllm:num_requests_running", &[]) == 0.0).await;
    let (_, h, _) = complete(&url, &ids(6000..6200), 1).await;
    assert!((header_f64(&h, "x-sim-first-token-ms") - 30.0).abs() < 1e-3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_num_seqs_queues_then_rejects_with_429() {
    let cfg = SimConfig {
        max_num_seqs: 2,
        max_waiting: 1,
        latency: latency(1.0, 1.0, 50.0, 0.0),
        time_scale: 0.01,
        ..test_config()
    };
    let server = start(cfg).await;
    let url = server.url();
    let a = start_stream(&url, &ids(0..20), "sim-model").await;
    let b = start_stream(&url, &ids(100..120), "sim-model").await;
    let url2 = url.clone();
    let waiting = tokio::spawn(async move { complete(&url2, &ids(200..220), 1).await });
    let text = wait_metrics(&url, |t| metric(t, "vllm:num_requests_waiting", &[]) == 1.0).await;
    assert_eq!(metric(&text, "vllm:num_requests_running", &[]), 2.0);
    assert_eq!(
        metric(
            &text,
            "vllm:num_requests_waiting_by_reason",
            &[("reason", "capacity")]
        ),
        1.0
    );
    // The queue is full: the next request is turned away at once.
    let (status, _, body) = complete(&url, &ids(300..320), 1).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], 429);
    assert!(body["error"]["message"].is_string());
    // A slot frees up: the waiting request runs and reports time spent waiting.
    drop(a);
    let (status, h, _) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("waiting request finishes")
        .unwrap();
    assert_eq!(status, 200);
    assert!(header_f64(&h, "x-sim-queue-ms") > 0.0);
    let text = get_text(&format!("{url}/metrics")).await.1;
    assert_eq!(
        metric(
            &text,
            "vllm:admission_rejections_total",
            &[("reason", "max_num_queued_reqs")]
        ),
        1.0
    );
    drop(b);
    wait_metrics(&url, |t| metric(t, "vllm:num_requests_running", &[]) == 0.0).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_admits_in_fifo_order() {
    let cfg = SimConfig {
        max_num_seqs: 1,
        ..test_config()
    };
    let engine = Engine::new(cfg, None);
    let sub = |p: u32| Submission {
        prompt: vec![p; 20],
        max_output: 4,
        max_tokens_param: Some(4),
        lora: None,
        remote_prefill: false,
    };
    let mut first = engine.submit(sub(1)).unwrap();
    let running = first.try_admitted().expect("admitted at once");
    let mut second = engine.submit(sub(2)).unwrap();
    let mut third = engine.submit(sub(3)).unwrap();
    assert!(second.try_admitted().is_none() && third.try_admitted().is_none());
    running.finish(FinishReason::Length);
    let running = second.try_admitted().expect("first in, first out");
    assert!(third.try_admitted().is_none());
    drop(running); // an abort frees the slot too
    assert!(third.try_admitted().is_some());
    // A cancelled waiter leaves the queue.
    let mut fourth = engine.submit(sub(4)).unwrap();
    assert!(fourth.try_admitted().is_some());
    assert_eq!(
        engine.state().running,
        0,
        "dropped requests release their slot"
    );
    assert_eq!(engine.state().reserved_blocks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_adapters_show_in_lora_requests_info() {
    let cfg = SimConfig {
        enable_lora: true,
        max_loras: 1,
        latency: latency(1.0, 1.0, 50.0, 0.0),
        time_scale: 0.01,
        ..test_config()
    };
    let server = start(cfg).await;
    let url = server.url();
    let load = |name: &'static str| {
        let url = url.clone();
        async move {
            post_json(
                &format!("{url}/v1/load_lora_adapter"),
                &json!({"lora_name": name, "lora_path": format!("/adapters/{name}")}),
            )
            .await
        }
    };
    let (status, _, body) = load("sql").await;
    assert_eq!(status, 200);
    assert_eq!(body, "Success: LoRA adapter 'sql' added successfully.");
    let (status, _, body) = load("sql").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already been loaded")
    );
    assert_eq!(load("chat").await.0, 200);
    let (_, models) = get_text(&format!("{url}/v1/models")).await;
    let models: Value = serde_json::from_str(&models).unwrap();
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sim-model", "chat", "sql"]);
    assert_eq!(models["data"][2]["parent"], "sim-model");
    assert_eq!(models["data"][2]["root"], "/adapters/sql");

    // A request on "sql" runs; with max_loras=1 a "chat" request must wait for a LoRA slot.
    let sql = start_stream(&url, &ids(0..20), "sql").await;
    let url2 = url.clone();
    let deferred = tokio::spawn(async move {
        post_json(
            &format!("{url2}/v1/completions"),
            &json!({"model": "chat", "prompt": [1, 2, 3], "max_tokens": 1}),
        )
        .await
    });
    let text = wait_metrics(&url, |t| metric(t, "vllm:num_requests_waiting", &[]) == 1.0).await;
    assert_eq!(
        metric(
            &text,
            "vllm:num_requests_waiting_by_reason",
            &[("reason", "deferred")]
        ),
        1.0
    );
    let series = samples(&text, "vllm:lora_requests_info");
    let newest = series
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("lora_requests_info exported");
    let label = |k: &str| newest.0.iter().find(|(a, _)| a == k).unwrap().1.clone();
    assert_eq!(label("max_lora"), "1");
    assert_eq!(label("running_lora_adapters"), "sql");
    assert_eq!(label("waiting_lora_adapters"), "chat");
    let mut names: Vec<&str> = newest.0.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["max_lora", "running_lora_adapters", "waiting_lora_adapters"]
    );
    assert!(newest.1 > 1.7e9, "the value is a Unix timestamp");

    drop(sql);
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(20), deferred)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);

    // Unloading removes the adapter: requests for it are unknown models again.
    let unload = post_json(
        &format!("{url}/v1/unload_lora_adapter"),
        &json!({"lora_name": "sql"}),
    )
    .await;
    assert_eq!(unload.0, 200);
    let (status, _, body) = post_json(
        &format!("{url}/v1/completions"),
        &json!({"model": "sql", "prompt": "hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["message"],
        "The model `sql` does not exist. Valid aliases: sim-model, chat."
    );
    let again = post_json(
        &format!("{url}/v1/unload_lora_adapter"),
        &json!({"lora_name": "sql"}),
    )
    .await;
    assert_eq!(again.0, 404);
    let text = wait_metrics(&url, |t| metric(t, "vllm:num_requests_running", &[]) == 0.0).await;
    let series = samples(&text, "vllm:lora_requests_info");
    let newest = series.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert!(
        newest
            .0
            .iter()
            .any(|(k, v)| k == "running_lora_adapters" && v.is_empty())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_metrics_absent_without_lora() {
    let server = start(test_config()).await;
    let text = get_text(&format!("{}/metrics", server.url())).await.1;
    assert!(samples(&text, "vllm:lora_requests_info").is_empty());
    let (status, _, _) = post_json(
        &format!("{}/v1/load_lora_adapter", server.url()),
        &json!({"lora_name": "a", "lora_path": "/a"}),
    )
    .await;
    assert_eq!(status, 400);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_can_be_injected_and_cleared_at_run_time() {
    let server = start(test_config()).await;
    let url = server.url();
    let set = |patch: Value| {
        let url = url.clone();
        async move { post_json(&format!("{url}/admin/faults"), &patch).await }
    };
    let (status, _, faults) = set(json!({"fail_rate": 1.0, "fail_status": 503})).await;
    assert_eq!(status, 200);
    assert_eq!(faults["fail_rate"], 1.0);
    let (status, _, body) = complete(&url, &[1, 2, 3], 1).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], 503);
    set(json!({"fail_rate": 0.0, "extra_delay_ms": 20})).await;
    let (status, _, _) = complete(&url, &[1, 2, 3], 1).await;
    assert_eq!(status, 200, "delayed, not failed");
    let (_, faults) = get_text(&format!("{url}/admin/faults")).await;
    let faults: Value = serde_json::from_str(&faults).unwrap();
    assert_eq!(faults["extra_delay_ms"], 20);
    assert_eq!(faults["fail_status"], 503, "patches merge");

    set(json!({"metrics": "unavailable"})).await;
    assert_eq!(get_text(&format!("{url}/metrics")).await.0, 503);
    set(json!({"metrics": "hang"})).await;
    let hung = client()
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err(), "a hanging /metrics never answers");
    set(json!({"metrics": "ok", "extra_delay_ms": 0})).await;
    assert_eq!(get_text(&format!("{url}/metrics")).await.0, 200);
    let (status, _, _) = set(json!({"fail_rate": 2.0})).await;
    assert_eq!(status, 400);
    server.shutdown().await;
}

async fn failure_pattern(seed: u64) -> Vec<u16> {
    let cfg = SimConfig {
        seed,
        faults: fusioninfer_sim::FaultConfig {
            fail_rate: 0.5,
            ..Default::default()
        },
        ..test_config()
    };
    let server = start(cfg).await;
    let mut out = Vec::new();
    for i in 0..40 {
        out.push(complete(&server.url(), &[i, i + 1], 1).await.0);
    }
    server.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_follow_the_seed() {
    let a = failure_pattern(7).await;
    let failed = a.iter().filter(|&&s| s == 500).count();
    assert!(
        (8..=32).contains(&failed),
        "{failed} of 40 failed at rate 0.5"
    );
    assert!(a.iter().all(|&s| s == 200 || s == 500));
    assert_eq!(a, failure_pattern(7).await, "same seed, same failures");
    assert_ne!(a, failure_pattern(8).await);
}

async fn texts(seed: u64) -> Vec<String> {
    let server = start(SimConfig {
        seed,
        ..test_config()
    })
    .await;
    let mut out = Vec::new();
    for prompt in ["Hello there", "Tell me a story", "Hello there"] {
        let (status, _, body) = post_json(
            &format!("{}/v1/chat/completions", server.url()),
            &json!({"messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["choices"][0]["finish_reason"], "stop",
            "no max_tokens: the model stops"
        );
        out.push(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    server.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_deterministic_for_a_seed() {
    let a = texts(42).await;
    assert_eq!(a[0], a[2], "same prompt, same output");
    assert_ne!(a[0], a[1]);
    assert_eq!(a, texts(42).await);
    assert_ne!(a, texts(43).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_publishes_block_removed() {
    let cfg = SimConfig {
        num_blocks: 8,
        block_size: 16,
        kv_events: Some(KvEventsConfig {
            endpoint: "tcp://127.0.0.1:0".into(),
            topic: String::new(),
            mode: EndpointMode::Bind,
        }),
        ..test_config()
    };
    let server = start(cfg).await;
    let url = server.url();
    let mut sub = subscribe(server.kv_events_endpoint().unwrap()).await;
    sync_subscriber(&url, &mut sub).await;
    let a = ids(0..64);
    assert_eq!(complete(&url, &a, 1).await.0, 200);
    let (topic, _, batch) = recv_batch(&mut sub, Duration::from_secs(5)).await.unwrap();
    assert_eq!(topic, "", "vLLM's default topic is empty");
    let KvEvent::BlockStored(stored_a) = &batch.events[0] else {
        panic!("expected BlockStored")
    };
    assert_eq!(stored_a.block_hashes.len(), 4);
    // B needs 7 of the 8 blocks: the 4 never used, then A's freed blocks from its tail.
    assert_eq!(complete(&url, &ids(1000..1100), 1).await.0, 200);
    let (_, _, batch) = recv_batch(&mut sub, Duration::from_secs(5)).await.unwrap();
    let removed: Vec<u64> = batch
        .events
        .iter()
        .filter_map(|e| match e {
            KvEvent::BlockRemoved(r) => Some(r.block_hashes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let h = &stored_a.block_hashes;
    assert_eq!(
        removed,
        vec![h[3], h[2], h[1]],
        "least recently freed first, tail first"
    );
    assert!(
        matches!(batch.events.last(), Some(KvEvent::BlockStored(s)) if s.block_hashes.len() == 6)
    );
    // A's first block survived, so A now hits exactly one block.
    let (_, _, body) = complete(&url, &a, 1).await;
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
    let text = get_text(&format!("{url}/metrics")).await.1;
    assert_eq!(metric(&text, "vllm:kv_cache_usage_perc", &[]), 0.0);
    // Resetting the cache announces AllBlocksCleared.
    assert_eq!(
        post_raw(&format!("{url}/reset_prefix_cache"), "").await.0,
        200
    );
    loop {
        let (_, _, batch) = recv_batch(&mut sub, Duration::from_secs(5)).await.unwrap();
        if batch.events == [KvEvent::AllBlocksCleared] {
            break;
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_decode_hand_off_like_nixl() {
    let cfg = SimConfig {
        latency: latency(10.0, 100.0, 5.0, 0.0),
        kv_side_channel_port: 5601,
        ..test_config()
    };
    let prefill = start(cfg.clone()).await;
    let decode = start(cfg).await;
    let prompt = ids(0..512);
    let (status, h, body) = post_json(
        &format!("{}/v1/completions", prefill.url()),
        &json!({
            "model": "sim-model", "prompt": prompt, "max_tokens": 1, "stream": false,
            "kv_transfer_params": {"do_remote_decode": true, "do_remote_prefill": false,
                "remote_engine_id": null, "remote_block_ids": null, "remote_host": null, "remote_port": null}
        }),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        (header_f64(&h, "x-sim-first-token-ms") - 61.2).abs() < 1e-3,
        "local prefill"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let params = body["kv_transfer_params"].clone();
    assert_eq!(params["do_remote_prefill"], true);
    assert_eq!(params["do_remote_decode"], false);
    assert_eq!(params["remote_block_ids"].as_array().unwrap().len(), 32);
    assert!(params["remote_block_ids"][0].is_u64());
    assert!(params["remote_engine_id"].is_string());
    assert_eq!(params["remote_host"], "127.0.0.1");
    assert_eq!(params["remote_port"], 5601);
    assert_eq!(params["tp_size"], 1);

    let (status, h, body) = post_json(
        &format!("{}/v1/completions", decode.url()),
        &json!({"model": "sim-model", "prompt": prompt, "max_tokens": 8, "kv_transfer_params": params}),
    )
    .await;
    assert_eq!(status, 200);
    // No prefill cost: overhead 10 + transfer 5 + 512 * 0.01 = 20.12 ms.
    assert!((header_f64(&h, "x-sim-first-token-ms") - 20.12).abs() < 1e-3);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 512);
    assert_eq!(body["kv_transfer_params"], Value::Null);
    let text = get_text(&format!("{}/metrics", decode.url())).await.1;
    assert_eq!(
        metric(&text, "vllm:external_prefix_cache_hits_total", &[]),
        512.0
    );
    assert_eq!(
        metric(
            &text,
            "vllm:prompt_tokens_by_source_total",
            &[("source", "external_kv_transfer")]
        ),
        512.0
    );
    prefill.shutdown().await;
    decode.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_aborts_and_frees_the_slot() {
    let cfg = SimConfig {
        latency: latency(1.0, 1.0, 50.0, 0.0),
        time_scale: 0.01,
        ..test_config()
    };
    let server = start(cfg).await;
    let url = server.url();
    let mut res = start_stream(&url, &ids(0..40), "sim-model").await;
    let first = res.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(res);
    let text = wait_metrics(&url, |t| {
        metric(
            t,
            "vllm:request_success_total",
            &[("finished_reason", "abort")],
        ) == 1.0
    })
    .await;
    assert_eq!(metric(&text, "vllm:num_requests_running", &[]), 0.0);
    assert_eq!(metric(&text, "vllm:kv_cache_usage_perc", &[]), 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_endpoints_and_request_forms() {
    let server = start(test_config()).await;
    let url = server.url();
    // Prompt forms: text, [text], [ids], [[ids]].
    for prompt in [
        json!("hello world"),
        json!(["hello world"]),
        json!([5, 6, 7]),
        json!([[5, 6, 7]]),
    ] {
        let (status, _, body) = post_json(
            &format!("{url}/v1/completions"),
            &json!({"prompt": prompt, "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, 200, "{prompt}");
        assert_eq!(body["usage"]["completion_tokens"], 2);
    }
    let (status, _, body) =
        post_json(&format!("{url}/v1/completions"), &json!({"max_tokens": 2})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "body.prompt");
    // Tokenize with token strings, and detokenize generated text.
    let (_, _, tok) = post_json(
        &format!("{url}/tokenize"),
        &json!({"prompt": "hello world", "return_token_strs": true}),
    )
    .await;
    assert_eq!(tok["count"], 4, "fallback pieces: hell|o| wor|ld");
    assert_eq!(tok["token_strs"].as_array().unwrap().len(), 4);
    let (status, _, detok) =
        post_json(&format!("{url}/detokenize"), &json!({"tokens": [1, 2]})).await;
    assert_eq!(status, 200);
    assert!(detok["prompt"].is_string());
    assert_eq!(tok["max_model_len"], 4096);
    let (_, _, chat) = post_json(
        &format!("{url}/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    )
    .await;
    let generated = chat["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!generated.is_empty());
    // Unknown routes answer like FastAPI.
    let (status, body) = get_text(&format!("{url}/nope")).await;
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#));
    // stream_options without stream is a validation error, as in vLLM.
    let (status, _, body) = post_json(
        &format!("{url}/v1/completions"),
        &json!({"prompt": "x", "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "Bad Request");
    // The state endpoint shows the engine.
    let (_, state) = get_text(&format!("{url}/admin/state")).await;
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["engine"]["running"], 0);
    assert_eq!(
        state["instance"],
        format!("127.0.0.1:{}", server.addr.port())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_have_their_own_state_and_names() {
    let cfg = SimConfig {
        instance: "sim-{port}".into(),
        ..test_config()
    };
    let servers = start_replicas(&cfg, 3, Arc::new(ModelTokenizer::fallback()))
        .await
        .unwrap();
    let mut pods = Vec::new();
    for s in &servers {
        let res = client()
            .get(format!("{}/health", s.url()))
            .send()
            .await
            .unwrap();
        pods.push(
            res.headers()["x-inference-pod"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(pods[0], format!("sim-{}", servers[0].addr.port()));
    pods.dedup();
    assert_eq!(pods.len(), 3);
    let prompt = ids(0..64);
    complete(&servers[0].url(), &prompt, 1).await;
    let (_, _, body) = complete(&servers[1].url(), &prompt, 1).await;
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
        "replica 1 does not see replica 0's cache"
    );
    let (_, _, body) = complete(&servers[0].url(), &prompt, 1).await;
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 48);
    for s in servers {
        s.shutdown().await;
    }
}
