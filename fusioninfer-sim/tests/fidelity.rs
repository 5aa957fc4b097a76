//! Fidelity against real vLLM 0.32.0 output (`shared/fixtures/vllm-0.32.0-cpu`): the simulator
//! replays the capture's request sequence with the fixture model's tokenizer and must answer
//! with the same shapes, token counts, cache hits, error bodies, metrics families and KV events.
//! Without shared/ these tests skip loudly (and fail under CI=true).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fusioninfer_sim::block_hash::{hash_block, hash_full_blocks, none_hash, published_hash};
use fusioninfer_sim::kv_events::{
    EndpointMode, KvEvent, KvEventBatch, frames as encode_frames, parse_frames,
};
use fusioninfer_sim::{KvEventsConfig, ModelTokenizer, SimConfig};
use serde_json::{Value, json};

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read_json(dir: &Path, name: &str) -> Value {
    serde_json::from_str(&read(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fixture_content_type(dir: &Path, name: &str) -> String {
    read(dir, &format!("{name}.headers.txt"))
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_else(|| panic!("{name}: no content-type"))
        .trim()
        .to_string()
}

fn content_type(h: &reqwest::header::HeaderMap) -> String {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn tokenizer(dir: &Path) -> Arc<ModelTokenizer> {
    Arc::new(
        ModelTokenizer::from_file(&dir.join("tiny-llama-tokenizer/tokenizer.json"), None)
            .expect("fixture tokenizer loads with the pure-Rust tokenizers build"),
    )
}

/// The fixture server's setup: `--served-model-name tiny-llama`, block size 128 (CPU), 4096
/// blocks, max-model-len 4096, KV events with topic `kv@<ip>:<port>@<model>`.
fn fixture_config() -> SimConfig {
    SimConfig {
        model: "tiny-llama".into(),
        model_root: Some("/models/tiny-llama".into()),
        block_size: 128,
        num_blocks: 4096,
        max_model_len: 4096,
        kv_events: Some(KvEventsConfig {
            endpoint: "tcp://127.0.0.1:0".into(),
            topic: "kv@{host}:{port}@{model}".into(),
            mode: EndpointMode::Bind,
        }),
        ..test_config()
    }
}

/// Reads `kv-events.bin`: per message a u32 BE frame count, then u32 BE length + bytes per frame.
fn capture_messages(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    while i < bytes.len() {
        let n = u32_at(i);
        i += 4;
        let mut frames = Vec::new();
        for _ in 0..n {
            let len = u32_at(i);
            i += 4;
            frames.push(bytes[i..i + len].to_vec());
            i += len;
        }
        out.push(frames);
    }
    out
}

fn stored(e: &KvEvent) -> &fusioninfer_sim::kv_events::BlockStored {
    match e {
        KvEvent::BlockStored(s) => s,
        other => panic!("expected BlockStored, got {other:?}"),
    }
}

#[test]
fn kv_event_capture_decodes_reencodes_and_rehashes() {
    let Some(dir) = fixtures() else { return };
    let bin = std::fs::read(dir.join("kv-events.bin")).unwrap();
    let jsonl: Vec<Value> = read(&dir, "kv-events.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages = capture_messages(&bin);
    assert_eq!(messages.len(), jsonl.len());
    let mut batches = Vec::new();
    for (msg, rec) in messages.iter().zip(&jsonl) {
        assert_eq!(msg.len(), 3, "three frames per message");
        let refs: Vec<&[u8]> = msg.iter().map(Vec::as_slice).collect();
        let (topic, seq, batch) = parse_frames(&refs).unwrap();
        assert_eq!(topic, rec["topic"].as_str().unwrap());
        assert_eq!(seq, rec["seq"].as_u64().unwrap());
        assert_eq!(msg[2][0], 0x93, "payload is a msgpack fixarray of 3");
        // Our encoder writes the very same bytes.
        let again = encode_frames(&topic, seq, &batch);
        assert_eq!(again[0], msg[0]);
        assert_eq!(again[1], msg[1]);
        assert_eq!(again[2], msg[2], "payload bytes of seq {seq} round-trip");
        // The decoded values equal the JSON decode of the capture.
        let payload = &rec["payload"];
        assert_eq!(batch.ts, payload[0].as_f64().unwrap());
        assert_eq!(batch.data_parallel_rank, payload[2].as_i64());
        for (ev, jev) in batch.events.iter().zip(payload[1].as_array().unwrap()) {
            let s = stored(ev);
            let keys: Vec<&str> = jev
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut expected = vec![
                "type",
                "block_hashes",
                "parent_block_hash",
                "token_ids",
                "block_size",
                "lora_id",
                "medium",
                "lora_name",
                "extra_keys",
                "group_idx",
                "kv_cache_spec_kind",
            ];
            expected.sort_unstable();
            let mut keys = keys;
            keys.sort_unstable();
            assert_eq!(keys, expected);
            assert_eq!(json!(s.block_hashes), jev["block_hashes"]);
            assert_eq!(json!(s.parent_block_hash), jev["parent_block_hash"]);
            assert_eq!(json!(s.token_ids), jev["token_ids"]);
            assert_eq!(json!(s.block_size), jev["block_size"]);
            assert_eq!(json!(s.medium), jev["medium"]);
            assert_eq!(json!(s.extra_keys), jev["extra_keys"]);
            assert_eq!(json!(s.kv_cache_spec_kind), jev["kv_cache_spec_kind"]);
        }
        batches.push(batch);
    }
    // Our block hashes are vLLM's: re-derive every published hash from the token ids.
    let bs = 128;
    let chat = stored(&batches[0].events[0]);
    let chat_digests = hash_full_blocks(&chat.token_ids, bs, None);
    let published: Vec<u64> = chat_digests.iter().map(published_hash).collect();
    assert_eq!(published, chat.block_hashes);
    let completion = stored(&batches[1].events[0]);
    let digests = hash_full_blocks(&completion.token_ids, bs, None);
    assert_eq!(
        digests.iter().map(published_hash).collect::<Vec<_>>(),
        completion.block_hashes
    );
    // seq 2 chains onto the chat's last block with the full 32-byte parent digest.
    let turn2 = stored(&batches[2].events[0]);
    assert_eq!(turn2.parent_block_hash, Some(published[5]));
    let d = hash_block(&chat_digests[5], &turn2.token_ids, None);
    assert_eq!(vec![published_hash(&d)], turn2.block_hashes);
    let decode_block = stored(&batches[3].events[0]);
    let d = hash_block(&none_hash(), &decode_block.token_ids, None);
    assert_eq!(vec![published_hash(&d)], decode_block.block_hashes);
}

#[test]
fn fixture_sse_bodies_have_the_framing_we_emit() {
    let Some(dir) = fixtures() else { return };
    assert_eq!(sse_events(&read(&dir, "chat-stream.sse")).len(), 19);
    assert_eq!(sse_events(&read(&dir, "completion-stream.sse")).len(), 18);
}

#[test]
fn fixture_tokenizer_counts_match_vllm() {
    let Some(dir) = fixtures() else { return };
    let tok = tokenizer(&dir);
    let chat = read_json(&dir, "requests/chat-nonstream.json");
    let text = tok
        .apply_chat_template(chat["messages"].as_array().unwrap(), true, None)
        .unwrap();
    assert_eq!(tok.encode(&text, false).unwrap().len(), 869);
    let turn2 = read_json(&dir, "requests/extra-chat-multiturn.json");
    let text = tok
        .apply_chat_template(turn2["messages"].as_array().unwrap(), true, None)
        .unwrap();
    assert_eq!(tok.encode(&text, false).unwrap().len(), 910);
    let completion = read_json(&dir, "requests/completion-nonstream.json");
    assert_eq!(
        tok.encode(completion["prompt"].as_str().unwrap(), true)
            .unwrap()
            .len(),
        618
    );
    let tokenize = read_json(&dir, "tokenize.json");
    assert_eq!(
        json!(tok.encode("Hello world, this is a test.", true).unwrap()),
        tokenize["tokens"]
    );
}

/// The whole capture sequence, in order, against one simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_the_capture_sequence_like_vllm() {
    let Some(dir) = fixtures() else { return };
    let server = start_with(fixture_config(), tokenizer(&dir)).await;
    let url = server.url();
    let port = server.addr.port();
    let mut sub = subscribe(server.kv_events_endpoint().unwrap()).await;
    let base_seq = sync_subscriber(&url, &mut sub).await;
    let req = |name: &str| read(&dir, &format!("requests/{name}"));

    // #1 idle metrics: the same vllm: families, types and label names.
    let (status, idle) = get_text(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    assert_same_families(
        &idle,
        &read(&dir, "metrics-idle.txt"),
        "vllm:",
        "idle /metrics",
    );

    // #2 models, version, health.
    let res = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        content_type(res.headers()),
        fixture_content_type(&dir, "models")
    );
    let models: Value = res.json().await.unwrap();
    let fixture_models = read_json(&dir, "models.json");
    assert_same_shape(&models, &fixture_models, "/v1/models");
    assert_eq!(models["data"][0]["id"], fixture_models["data"][0]["id"]);
    assert_eq!(models["data"][0]["root"], fixture_models["data"][0]["root"]);
    let (status, version) = get_text(&format!("{url}/version")).await;
    assert_eq!((status, version), (200, read(&dir, "version.json")));
    let (status, body) = get_text(&format!("{url}/health")).await;
    assert_eq!((status, body.as_str()), (200, ""));

    // #3 chat, non-streamed.
    let (status, h, text) = post_raw(
        &format!("{url}/v1/chat/completions"),
        req("chat-nonstream.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type(&h),
        fixture_content_type(&dir, "chat-nonstream")
    );
    let chat: Value = serde_json::from_str(&text).unwrap();
    let fixture = read_json(&dir, "chat-nonstream.json");
    assert_same_shape(&chat, &fixture, "chat completion");
    assert_eq!(
        chat["usage"], fixture["usage"],
        "token counts and cache details"
    );
    assert!(chat["id"].as_str().unwrap().starts_with("chatcmpl-"));

    // #4 chat, streamed with usage: 1 role chunk, 16 content chunks, 1 usage chunk, [DONE].
    let (status, h, body) = post_raw(
        &format!("{url}/v1/chat/completions"),
        req("chat-stream.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type(&h), fixture_content_type(&dir, "chat-stream"));
    let ours = sse_events(&body);
    let theirs = sse_events(&read(&dir, "chat-stream.sse"));
    assert_eq!(ours.len(), theirs.len(), "chat SSE event count");
    assert_eq!(ours.last().unwrap(), "[DONE]");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate().take(ours.len() - 1) {
        let a: Value = serde_json::from_str(a).unwrap();
        let b: Value = serde_json::from_str(b).unwrap();
        assert_same_shape(&a, &b, &format!("chat chunk {i}"));
    }
    let usage: Value = serde_json::from_str(&ours[ours.len() - 2]).unwrap();
    let fixture_usage: Value = serde_json::from_str(&theirs[theirs.len() - 2]).unwrap();
    assert_eq!(
        usage["usage"], fixture_usage["usage"],
        "stream usage: 768 cached, 0 created"
    );

    // #5a-c completions: the repeat hits 512 cached tokens.
    for (name, fixture_name) in [
        ("completion-nonstream.json", "completion-nonstream-1"),
        ("completion-nonstream.json", "completion-nonstream-2"),
    ] {
        let (status, h, text) = post_raw(&format!("{url}/v1/completions"), req(name)).await;
        assert_eq!(status, 200);
        assert_eq!(content_type(&h), fixture_content_type(&dir, fixture_name));
        let ours: Value = serde_json::from_str(&text).unwrap();
        let fixture = read_json(&dir, &format!("{fixture_name}.json"));
        assert_same_shape(&ours, &fixture, fixture_name);
        assert_eq!(ours["usage"], fixture["usage"], "{fixture_name} usage");
    }
    let (status, h, body) = post_raw(
        &format!("{url}/v1/completions"),
        req("completion-stream.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type(&h),
        fixture_content_type(&dir, "completion-stream")
    );
    let ours = sse_events(&body);
    let theirs = sse_events(&read(&dir, "completion-stream.sse"));
    assert_eq!(ours.len(), theirs.len(), "completion SSE event count");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate().take(ours.len() - 1) {
        let a: Value = serde_json::from_str(a).unwrap();
        let b: Value = serde_json::from_str(b).unwrap();
        assert_same_shape(&a, &b, &format!("completion chunk {i}"));
    }
    let usage: Value = serde_json::from_str(&ours[ours.len() - 2]).unwrap();
    let fixture_usage: Value = serde_json::from_str(&theirs[theirs.len() - 2]).unwrap();
    assert_eq!(usage["usage"], fixture_usage["usage"]);

    // #6 errors: same status and the same body, word for word.
    for (name, body, path) in [
        (
            "error-invalid-json",
            "error-invalid-json.body",
            "/v1/chat/completions",
        ),
        (
            "error-missing-messages",
            "error-missing-messages.json",
            "/v1/chat/completions",
        ),
        (
            "error-unknown-model",
            "error-unknown-model.json",
            "/v1/chat/completions",
        ),
        (
            "error-too-long",
            "error-too-long.json",
            "/v1/chat/completions",
        ),
    ] {
        let (status, h, text) = post_raw(&format!("{url}{path}"), req(body)).await;
        let expected_status: u16 = read(&dir, &format!("{name}.headers.txt"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(status, expected_status, "{name} status");
        assert_eq!(content_type(&h), fixture_content_type(&dir, name));
        assert_eq!(text, read(&dir, &format!("{name}.json")), "{name} body");
    }

    // #8 tokenize, plain and with the chat template.
    for name in ["tokenize", "tokenize-messages"] {
        let (status, _, text) =
            post_raw(&format!("{url}/tokenize"), req(&format!("{name}.json"))).await;
        assert_eq!(status, 200);
        assert_eq!(text, read(&dir, &format!("{name}.json")), "{name}");
    }

    // X1: the second turn hits the first turn's 6 blocks and adds one.
    let (status, _, text) = post_raw(
        &format!("{url}/v1/chat/completions"),
        req("extra-chat-multiturn.json"),
    )
    .await;
    assert_eq!(status, 200);
    let ours: Value = serde_json::from_str(&text).unwrap();
    let fixture = read_json(&dir, "extra-chat-multiturn.json");
    assert_same_shape(&ours, &fixture, "multi-turn");
    assert_eq!(ours["usage"], fixture["usage"]);
    // X2: a block filled during decode.
    let (status, _, text) = post_raw(
        &format!("{url}/v1/completions"),
        req("extra-completion-decode-block.json"),
    )
    .await;
    assert_eq!(status, 200);
    let ours: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        ours["usage"],
        read_json(&dir, "extra-completion-decode-block.json")["usage"]
    );
    // X3: a prompt longer than max-model-len.
    let (status, _, text) = post_raw(
        &format!("{url}/v1/completions"),
        req("extra-error-prompt-too-long.json"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(text, read(&dir, "extra-error-prompt-too-long.json"));

    // #7 metrics after the run: same families, and the same totals as real vLLM.
    let res = client().get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(
        content_type(res.headers()),
        fixture_content_type(&dir, "metrics-after")
    );
    let after = res.text().await.unwrap();
    let fixture_after = read(&dir, "metrics-after.txt");
    assert_same_families(&after, &fixture_after, "vllm:", "/metrics after the run");
    for name in [
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_cached_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count",
        "vllm:iteration_tokens_total_count",
        "vllm:iteration_tokens_total_sum",
        "vllm:request_prefill_kv_computed_tokens_sum",
    ] {
        assert_eq!(
            metric(&after, name, &[]),
            metric(&fixture_after, name, &[]),
            "{name} after the capture sequence"
        );
    }
    for source in ["local_compute", "local_cache_hit", "external_kv_transfer"] {
        let name = "vllm:prompt_tokens_by_source_total";
        assert_eq!(
            metric(&after, name, &[("source", source)]),
            metric(&fixture_after, name, &[("source", source)]),
            "{name}{{source={source}}}"
        );
    }
    for reason in ["stop", "length", "abort"] {
        let name = "vllm:request_success_total";
        assert_eq!(
            metric(&after, name, &[("finished_reason", reason)]),
            metric(&fixture_after, name, &[("finished_reason", reason)])
        );
    }
    let config_info = samples(&after, "vllm:cache_config_info");
    let get = |k: &str| {
        config_info[0]
            .0
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("block_size"), "128");
    assert_eq!(get("num_gpu_blocks"), "4096");

    // KV events: the same four messages, the first three bit-identical in hashes and tokens.
    let capture = capture_messages(&std::fs::read(dir.join("kv-events.bin")).unwrap());
    let expected_topic = format!("kv@127.0.0.1:{port}@tiny-llama");
    for (i, frames) in capture.iter().enumerate() {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let (_, _, theirs) = parse_frames(&refs).unwrap();
        let (topic, seq, ours) = recv_batch(&mut sub, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("KV-event message {i} missing"));
        assert_eq!(topic, expected_topic);
        assert_eq!(seq, base_seq + 1 + i as u64, "seq numbers are contiguous");
        assert_eq!(ours.data_parallel_rank, Some(0));
        assert_eq!(ours.events.len(), theirs.events.len());
        let (a, b) = (stored(&ours.events[0]), stored(&theirs.events[0]));
        if i < 3 {
            assert_eq!(a, b, "BlockStored of message {i} equals vLLM's");
        } else {
            // The decode-filled block: 122 prompt tokens then 6 generated ones (ours differ).
            assert_eq!(a.token_ids[..122], b.token_ids[..122]);
            assert_eq!(a.token_ids.len(), b.token_ids.len());
            assert_eq!(a.parent_block_hash, None);
            let d = hash_block(&none_hash(), &a.token_ids, None);
            assert_eq!(a.block_hashes, vec![published_hash(&d)]);
        }
    }
    assert!(
        recv_batch(&mut sub, Duration::from_millis(200))
            .await
            .is_none(),
        "no further KV events (hits and errors announce nothing)"
    );
    server.shutdown().await;
}

/// Deliberate differences from the captured vLLM, each pinned here so they stay deliberate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_differences_from_vllm() {
    let Some(dir) = fixtures() else { return };
    let server = start_with(fixture_config(), tokenizer(&dir)).await;
    let url = server.url();
    // 1. Generated text is pseudo-random plain tokens, not the model's output (vLLM with the
    //    fixture's random weights produced gibberish too); same prompt and seed → same text.
    let body = read(&dir, "requests/chat-nonstream.json");
    let (_, _, a) = post_json(
        &format!("{url}/v1/chat/completions"),
        &serde_json::from_str(&body).unwrap(),
    )
    .await;
    let (_, _, b) = post_json(
        &format!("{url}/v1/chat/completions"),
        &serde_json::from_str(&body).unwrap(),
    )
    .await;
    let fixture = read_json(&dir, "chat-nonstream.json");
    assert_ne!(
        a["choices"][0]["message"]["content"],
        fixture["choices"][0]["message"]["content"]
    );
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    // 2. The system fingerprint has vLLM's form but not its hash.
    let fp = a["system_fingerprint"].as_str().unwrap();
    assert!(
        fp.starts_with("vllm-0.32.0-")
            && fp.len() == fixture["system_fingerprint"].as_str().unwrap().len()
    );
    // 3. Only n=1 is simulated: n>1 is a 400 (vLLM would return n choices).
    let (status, _, err) = post_json(
        &format!("{url}/v1/completions"),
        &json!({"model": "tiny-llama", "prompt": "hi", "n": 2}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "n");
    // 4. /metrics has every vllm: family of the capture but none of the Python process's
    //    (python_gc_*, process_*, http_*).
    let (_, text) = get_text(&format!("{url}/metrics")).await;
    assert!(families(&text, "process_").is_empty() && families(&text, "http_").is_empty());
    assert!(!families(&read(&dir, "metrics-after.txt"), "http_").is_empty());
    // 5. Responses carry the simulator's headers (x-inference-pod, x-sim-*), not uvicorn's
    //    `server`/`vary`.
    let res = client().get(format!("{url}/health")).send().await.unwrap();
    assert!(res.headers().get("x-inference-pod").is_some());
    assert!(res.headers().get("server").is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_events_round_trip_through_a_live_subscriber() {
    // Independent of the fixtures: our own frames decode back to what the engine published.
    let mut cfg = fixture_config();
    cfg.block_size = 4;
    cfg.model = "m".into();
    let server = start(cfg).await;
    let url = server.url();
    let mut sub = subscribe(server.kv_events_endpoint().unwrap()).await;
    sync_subscriber(&url, &mut sub).await;
    let prompt: Vec<u32> = (1000..1010).collect();
    let (status, _, _) = post_json(
        &format!("{url}/v1/completions"),
        &json!({"model": "m", "prompt": prompt, "max_tokens": 1}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, batch) = recv_batch(&mut sub, Duration::from_secs(5)).await.unwrap();
    let s = stored(&batch.events[0]);
    assert_eq!(s.token_ids, prompt[..8].to_vec(), "two full blocks of 4");
    assert_eq!(s.block_size, 4);
    let digests = hash_full_blocks(&prompt, 4, None);
    assert_eq!(
        s.block_hashes,
        digests.iter().map(published_hash).collect::<Vec<_>>()
    );
    let bytes = batch.encode();
    assert_eq!(KvEventBatch::decode(&bytes).unwrap(), batch);
    server.shutdown().await;
}
