//! The metrics parser on real vLLM 0.32 `/metrics` output (shared fixtures).

mod common;

use fusioninfer_sched::EndpointMetrics;
use fusioninfer_sched::metrics::{ModelServer, parse_metrics};

const FIXTURES: &str = "fixtures/vllm-0.32.0-cpu";

#[test]
fn reads_real_vllm_idle_and_after_pages() {
    for page in ["metrics-idle.txt", "metrics-after.txt"] {
        let Some(text) = common::shared_file(&format!("{FIXTURES}/{page}")) else {
            return;
        };
        let scraped = parse_metrics(&text).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert_eq!(scraped.server, ModelServer::Vllm, "{page}");
        // The CPU capture: idle queue, 4096 blocks of 128 tokens, no LoRA.
        assert_eq!(
            scraped.metrics,
            EndpointMetrics {
                waiting_requests: 0,
                running_requests: 0,
                kv_cache_usage: 0.0,
                cache_block_size: Some(128),
                cache_num_blocks: Some(4096),
                lora: None,
            },
            "{page}"
        );
    }
}

#[test]
fn picks_the_right_series_among_all_vllm_families() {
    let Some(text) = common::shared_file(&format!("{FIXTURES}/metrics-after.txt")) else {
        return;
    };
    // Same page with a busy engine: only the wanted series change, look-alikes stay as they are.
    let busy = text
        .replace(
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"tiny-llama\"} 0.0",
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"tiny-llama\"} 3.0",
        )
        .replace(
            "vllm:num_requests_running{engine=\"0\",model_name=\"tiny-llama\"} 0.0",
            "vllm:num_requests_running{engine=\"0\",model_name=\"tiny-llama\"} 9.0",
        )
        .replace(
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"tiny-llama\"} 0.0",
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"tiny-llama\"} 0.42",
        );
    assert_ne!(busy, text, "the fixture no longer has the expected series");
    let metrics = parse_metrics(&busy).unwrap().metrics;
    assert_eq!((metrics.waiting_requests, metrics.running_requests), (3, 9));
    assert_eq!(metrics.kv_cache_usage, 0.42);

    // Older vLLM named KV usage gpu_cache_usage_perc.
    let old = busy.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc");
    assert_eq!(parse_metrics(&old).unwrap().metrics.kv_cache_usage, 0.42);

    // A LoRA-enabled server adds lora_requests_info; the newest series wins.
    let lora = format!(
        "{text}vllm:lora_requests_info{{max_lora=\"2\",running_lora_adapters=\"\",waiting_lora_adapters=\"x\"}} 1.795300409e+09\n\
         vllm:lora_requests_info{{max_lora=\"2\",running_lora_adapters=\"sql,chat\",waiting_lora_adapters=\"\"}} 1.795300419e+09\n"
    );
    let lora = parse_metrics(&lora).unwrap().metrics.lora.unwrap();
    assert_eq!(lora.running_adapters, ["sql", "chat"]);
    assert!(lora.waiting_adapters.is_empty());
    assert_eq!(lora.max_adapters, 2);
}

#[test]
fn a_truncated_page_is_an_error_not_zeroes() {
    let Some(text) = common::shared_file(&format!("{FIXTURES}/metrics-idle.txt")) else {
        return;
    };
    let cut = text
        .find("vllm:num_requests_running{")
        .expect("fixture has the running series");
    // Cut in the middle of a sample line.
    let truncated = &text[..cut + 30];
    assert!(parse_metrics(truncated).is_err());
}
