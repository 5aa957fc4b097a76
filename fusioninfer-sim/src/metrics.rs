//! Engine statistics and their Prometheus text exposition, shaped like vLLM 0.32's `/metrics`.
//!
//! Every `vllm:` family of the captured vLLM output is exported with the same name, type,
//! HELP text and label names (`engine`, `model_name` and the family's own labels, sorted as
//! prometheus_client prints them); counters come with their `_created` gauge family as
//! prometheus_client writes them. `vllm:lora_requests_info` is exported only with LoRA enabled,
//! as in vLLM. Families vLLM's Python process adds (`python_gc_*`, `process_*`, `http_*`) are
//! not exported. Times are model time (see [`crate::config::SimConfig::time_scale`]).

use std::fmt::Write;

/// A fixed-bucket histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with upper bounds `bounds` (without `+Inf`).
    pub fn new(bounds: Vec<f64>) -> Self {
        let n = bounds.len();
        Histogram {
            bounds,
            counts: vec![0; n],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// vLLM's `build_1_2_5_buckets(max)`.
pub fn buckets_1_2_5(max: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut exp = 1usize;
    loop {
        for m in [1usize, 2, 5] {
            let v = m.saturating_mul(exp);
            if v > max {
                return out;
            }
            out.push(v as f64);
        }
        exp = exp.saturating_mul(10);
    }
}

const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const REQUEST_LATENCY_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const ITERATION_TOKEN_BUCKETS: [f64; 13] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

/// Finish reasons vLLM labels `request_success_total` with, in its order.
pub const FINISH_REASONS: [&str; 5] = ["stop", "length", "abort", "error", "repetition"];

/// Cumulative engine statistics.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Unix time the counters were created.
    pub created: f64,
    /// `vllm:prompt_tokens_total`.
    pub prompt_tokens: u64,
    /// `vllm:generation_tokens_total`.
    pub generation_tokens: u64,
    /// `vllm:prefix_cache_queries_total`.
    pub prefix_queries: u64,
    /// `vllm:prefix_cache_hits_total`.
    pub prefix_hits: u64,
    /// `vllm:external_prefix_cache_queries_total` (remote-prefill decode requests).
    pub external_queries: u64,
    /// `vllm:external_prefix_cache_hits_total`.
    pub external_hits: u64,
    /// Prompt tokens computed locally.
    pub tokens_local_compute: u64,
    /// `vllm:request_success_total` by [`FINISH_REASONS`] index.
    pub success: [u64; 5],
    /// `vllm:admission_rejections_total{reason="max_num_queued_reqs"}`.
    pub queue_rejections: u64,
    /// `vllm:time_to_first_token_seconds`.
    pub ttft: Histogram,
    /// `vllm:inter_token_latency_seconds`.
    pub itl: Histogram,
    /// `vllm:request_time_per_output_token_seconds`.
    pub tpot: Histogram,
    /// `vllm:e2e_request_latency_seconds`.
    pub e2e: Histogram,
    /// `vllm:request_queue_time_seconds`.
    pub queue: Histogram,
    /// `vllm:request_inference_time_seconds`.
    pub inference: Histogram,
    /// `vllm:request_prefill_time_seconds`.
    pub prefill: Histogram,
    /// `vllm:request_decode_time_seconds`.
    pub decode: Histogram,
    /// `vllm:request_prompt_tokens`.
    pub req_prompt_tokens: Histogram,
    /// `vllm:request_generation_tokens`.
    pub req_generation_tokens: Histogram,
    /// `vllm:iteration_tokens_total`.
    pub iteration_tokens: Histogram,
    /// `vllm:request_max_num_generation_tokens`.
    pub max_num_generation_tokens: Histogram,
    /// `vllm:request_params_n`.
    pub params_n: Histogram,
    /// `vllm:request_params_max_tokens`.
    pub params_max_tokens: Histogram,
    /// `vllm:request_num_preemptions`.
    pub num_preemptions: Histogram,
    /// `vllm:request_prefill_kv_computed_tokens`.
    pub prefill_kv_computed: Histogram,
}

impl Stats {
    /// Empty statistics for a model with `max_model_len`.
    pub fn new(max_model_len: usize, created: f64) -> Self {
        let tokens = buckets_1_2_5(max_model_len);
        let lat = REQUEST_LATENCY_BUCKETS.to_vec();
        Stats {
            created,
            prompt_tokens: 0,
            generation_tokens: 0,
            prefix_queries: 0,
            prefix_hits: 0,
            external_queries: 0,
            external_hits: 0,
            tokens_local_compute: 0,
            success: [0; 5],
            queue_rejections: 0,
            ttft: Histogram::new(TTFT_BUCKETS.to_vec()),
            itl: Histogram::new(ITL_BUCKETS.to_vec()),
            tpot: Histogram::new(ITL_BUCKETS.to_vec()),
            e2e: Histogram::new(lat.clone()),
            queue: Histogram::new(lat.clone()),
            inference: Histogram::new(lat.clone()),
            prefill: Histogram::new(lat.clone()),
            decode: Histogram::new(lat),
            req_prompt_tokens: Histogram::new(tokens.clone()),
            req_generation_tokens: Histogram::new(tokens.clone()),
            iteration_tokens: Histogram::new(ITERATION_TOKEN_BUCKETS.to_vec()),
            max_num_generation_tokens: Histogram::new(tokens.clone()),
            params_n: Histogram::new(vec![1.0, 2.0, 5.0, 10.0, 20.0]),
            params_max_tokens: Histogram::new(tokens.clone()),
            num_preemptions: Histogram::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0]),
            prefill_kv_computed: Histogram::new(tokens),
        }
    }
}

/// Everything `/metrics` shows at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
    /// Served model name.
    pub model: &'a str,
    /// Requests running.
    pub running: usize,
    /// Requests waiting for capacity.
    pub waiting_capacity: usize,
    /// Requests waiting for a LoRA slot.
    pub waiting_deferred: usize,
    /// KV usage 0..=1.
    pub kv_usage: f64,
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the cache.
    pub num_blocks: usize,
    /// Longest context.
    pub max_model_len: usize,
    /// LoRA info series `(max_lora, running, waiting, timestamp)`, oldest first; `None` when
    /// LoRA is disabled.
    pub lora_info: Option<Vec<(usize, String, String, f64)>>,
    /// Counters and histograms.
    pub stats: &'a Stats,
}

/// Formats a float like prometheus_client's `floatToGoString`.
pub fn go_float(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d == f64::INFINITY {
        return "+Inf".into();
    }
    if d == f64::NEG_INFINITY {
        return "-Inf".into();
    }
    let s = python_repr(d);
    if let Some(dot) = s.find('.')
        && d > 0.0
        && dot > 6
        && !s.contains('e')
    {
        let digits = format!("{}{}", &s[1..dot], &s[dot + 1..]);
        let mantissa = format!("{}.{}", &s[..1], digits);
        let mantissa = mantissa.trim_end_matches(['0', '.']);
        return format!("{mantissa}e+0{}", dot - 1);
    }
    s
}

/// Python's `repr(float)` for the values metrics hold.
fn python_repr(d: f64) -> String {
    let s = format!("{d:?}");
    if let Some((m, e)) = s.split_once('e') {
        let (sign, digits) = match e.strip_prefix('-') {
            Some(rest) => ('-', rest),
            None => ('+', e),
        };
        let m = m.strip_suffix(".0").unwrap_or(m);
        return format!("{m}e{sign}{digits:0>2}");
    }
    // Python switches to exponent notation at 1e16.
    if d.abs() >= 1e16 {
        let e = format!("{d:e}");
        if let Some((m, exp)) = e.split_once('e') {
            return format!("{m}e+{exp:0>2}");
        }
    }
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out<'a> {
    text: String,
    base: Vec<(&'a str, String)>,
    created: f64,
}

impl<'a> Out<'a> {
    fn header(&mut self, name: &str, ty: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {ty}");
    }

    fn sample(&mut self, name: &str, extra: &[(&str, String)], value: f64, with_base: bool) {
        let mut labels: Vec<(&str, String)> = if with_base {
            self.base.clone()
        } else {
            Vec::new()
        };
        labels.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        labels.sort_by(|a, b| a.0.cmp(b.0));
        let body: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(
            self.text,
            "{name}{{{}}} {}",
            body.join(","),
            go_float(value)
        );
    }

    fn gauge(&mut self, name: &str, help: &str, series: &[(&[(&str, String)], f64)]) {
        self.header(name, "gauge", help);
        for (labels, v) in series {
            self.sample(name, labels, *v, true);
        }
    }

    /// A counter family `{base}_total` plus its `{base}_created` gauge family.
    fn counter(&mut self, base: &str, help: &str, series: &[(&[(&str, String)], f64)]) {
        self.counter_with(base, help, series, true);
    }

    fn counter_with(
        &mut self,
        base: &str,
        help: &str,
        series: &[(&[(&str, String)], f64)],
        with_base: bool,
    ) {
        let total = format!("{base}_total");
        self.header(&total, "counter", help);
        for (labels, v) in series {
            self.sample(&total, labels, *v, with_base);
        }
        let created = format!("{base}_created");
        self.header(&created, "gauge", help);
        let ts = self.created;
        for (labels, _) in series {
            self.sample(&created, labels, ts, with_base);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            self.sample(&bucket, &[("le", go_float(*b))], *c as f64, true);
        }
        self.sample(&bucket, &[("le", "+Inf".into())], h.count as f64, true);
        self.sample(&format!("{name}_count"), &[], h.count as f64, true);
        self.sample(&format!("{name}_sum"), &[], h.sum, true);
        let created = format!("{name}_created");
        self.header(&created, "gauge", help);
        let ts = self.created;
        self.sample(&created, &[], ts, true);
    }
}

/// Renders the exposition text.
pub fn render(s: &Snapshot<'_>) -> String {
    let st = s.stats;
    let mut o = Out {
        text: String::with_capacity(48 * 1024),
        base: vec![("engine", "0".into()), ("model_name", s.model.to_string())],
        created: st.created,
    };
    let none: &[(&str, String)] = &[];
    let mfu = "(for Model Flops Utilization calculations).";
    o.counter(
        "vllm:estimated_flops_per_gpu",
        &format!("Estimated number of floating point operations per GPU {mfu}"),
        &[(none, 0.0)],
    );
    o.counter(
        "vllm:estimated_read_bytes_per_gpu",
        &format!("Estimated number of bytes read from memory per GPU {mfu}"),
        &[(none, 0.0)],
    );
    o.counter(
        "vllm:estimated_write_bytes_per_gpu",
        &format!("Estimated number of bytes written to memory per GPU {mfu}"),
        &[(none, 0.0)],
    );
    o.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &[(none, s.running as f64)],
    );
    o.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        &[(none, (s.waiting_capacity + s.waiting_deferred) as f64)],
    );
    o.gauge(
        "vllm:num_requests_waiting_by_reason",
        "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
        &[
            (&[("reason", "capacity".into())], s.waiting_capacity as f64),
            (&[("reason", "deferred".into())], s.waiting_deferred as f64),
        ],
    );
    o.gauge(
        "vllm:engine_sleep_state",
        "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
        &[
            (&[("sleep_state", "awake".into())], 1.0),
            (&[("sleep_state", "weights_offloaded".into())], 0.0),
            (&[("sleep_state", "discard_all".into())], 0.0),
        ],
    );
    o.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        &[(none, s.kv_usage)],
    );
    o.counter(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        &[(none, st.prefix_queries as f64)],
    );
    o.counter(
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        &[(none, st.prefix_hits as f64)],
    );
    o.counter(
        "vllm:external_prefix_cache_queries",
        "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.",
        &[(none, st.external_queries as f64)],
    );
    o.counter(
        "vllm:external_prefix_cache_hits",
        "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.",
        &[(none, st.external_hits as f64)],
    );
    o.counter(
        "vllm:mm_cache_queries",
        "Multi-modal cache queries, in terms of number of queried items.",
        &[(none, 0.0)],
    );
    o.counter(
        "vllm:mm_cache_hits",
        "Multi-modal cache hits, in terms of number of cached items.",
        &[(none, 0.0)],
    );
    o.counter(
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        &[(none, 0.0)],
    );
    o.counter(
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        &[(none, st.prompt_tokens as f64)],
    );
    o.counter(
        "vllm:prompt_tokens_by_source",
        "Number of prompt tokens by source.",
        &[
            (
                &[("source", "local_compute".into())],
                st.tokens_local_compute as f64,
            ),
            (
                &[("source", "local_cache_hit".into())],
                st.prefix_hits as f64,
            ),
            (
                &[("source", "external_kv_transfer".into())],
                st.external_hits as f64,
            ),
        ],
    );
    o.counter(
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        &[(none, (st.prefix_hits + st.external_hits) as f64)],
    );
    o.counter(
        "vllm:prompt_tokens_cached_by_source",
        "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.",
        &[
            (&[("source", "device".into())], st.prefix_hits as f64),
            (&[("source", "host".into())], 0.0),
            (&[("source", "p2p".into())], st.external_hits as f64),
            (&[("source", "disk".into())], 0.0),
            (&[("source", "external_unspecified".into())], 0.0),
        ],
    );
    o.counter(
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        &[(none, st.generation_tokens as f64)],
    );
    let reasons: Vec<[(&str, String); 1]> = FINISH_REASONS
        .iter()
        .map(|r| [("finished_reason", r.to_string())])
        .collect();
    let success: Vec<(&[(&str, String)], f64)> = reasons
        .iter()
        .zip(st.success)
        .map(|(l, v)| (&l[..], v as f64))
        .collect();
    o.counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        &success,
    );
    // vLLM labels this family with model_name and reason only (no engine).
    let model_label = [("model_name", s.model.to_string())];
    let rej_reqs = [
        model_label[0].clone(),
        ("reason", "max_num_queued_reqs".to_string()),
    ];
    let rej_tokens = [
        model_label[0].clone(),
        ("reason", "max_num_queued_tokens".to_string()),
    ];
    o.counter_with(
        "vllm:admission_rejections",
        "Number of admission attempts rejected by a queue limit, by reason.",
        &[
            (&rej_reqs[..], st.queue_rejections as f64),
            (&rej_tokens[..], 0.0),
        ],
        false,
    );
    o.histogram(
        "vllm:request_prompt_tokens",
        "Number of prefill tokens processed.",
        &st.req_prompt_tokens,
    );
    o.histogram(
        "vllm:request_generation_tokens",
        "Number of generation tokens processed.",
        &st.req_generation_tokens,
    );
    o.histogram(
        "vllm:iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        &st.iteration_tokens,
    );
    o.histogram(
        "vllm:request_max_num_generation_tokens",
        "Histogram of maximum number of requested generation tokens.",
        &st.max_num_generation_tokens,
    );
    o.histogram(
        "vllm:request_params_n",
        "Histogram of the n request parameter.",
        &st.params_n,
    );
    o.histogram(
        "vllm:request_params_max_tokens",
        "Histogram of the max_tokens request parameter.",
        &st.params_max_tokens,
    );
    o.histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &st.ttft,
    );
    o.histogram(
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &st.itl,
    );
    o.histogram(
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        &st.tpot,
    );
    o.histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &st.e2e,
    );
    o.histogram(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        &st.queue,
    );
    o.histogram(
        "vllm:request_inference_time_seconds",
        "Histogram of time spent in RUNNING phase for request.",
        &st.inference,
    );
    o.histogram(
        "vllm:request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
        &st.prefill,
    );
    o.histogram(
        "vllm:request_decode_time_seconds",
        "Histogram of time spent in DECODE phase for request.",
        &st.decode,
    );
    o.histogram(
        "vllm:request_num_preemptions",
        "Histogram of the number of times a request was preempted.",
        &st.num_preemptions,
    );
    o.histogram(
        "vllm:request_prefill_kv_computed_tokens",
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
        &st.prefill_kv_computed,
    );
    if let Some(series) = &s.lora_info {
        o.header(
            "vllm:lora_requests_info",
            "gauge",
            "Running stats on lora requests.",
        );
        for (max_lora, running, waiting, ts) in series {
            o.sample(
                "vllm:lora_requests_info",
                &[
                    ("max_lora", max_lora.to_string()),
                    ("running_lora_adapters", running.clone()),
                    ("waiting_lora_adapters", waiting.clone()),
                ],
                *ts,
                false,
            );
        }
    }
    let tokens = s.num_blocks * s.block_size;
    let bs = s.block_size.to_string();
    let cache_info: Vec<(&str, String)> = vec![
        ("_block_size_resolved", "True".into()),
        ("block_size", bs.clone()),
        ("cache_dtype", "auto".into()),
        ("cache_hit_alignment_tokens", "None".into()),
        ("effective_attention_block_size", bs),
        ("enable_mamba_shared_prefix_checkpoint", "False".into()),
        ("enable_prefix_caching", "True".into()),
        ("gpu_memory_utilization", "0.92".into()),
        ("hash_block_size", "None".into()),
        ("is_attention_free", "False".into()),
        ("kv_cache_dtype_skip_layers", "[]".into()),
        ("kv_cache_layout", "None".into()),
        (
            "kv_cache_max_concurrency",
            python_repr(tokens as f64 / s.max_model_len.max(1) as f64),
        ),
        ("kv_cache_memory_bytes", "None".into()),
        ("kv_cache_size_tokens", tokens.to_string()),
        ("kv_offloading_backend", "native".into()),
        ("kv_offloading_size", "None".into()),
        ("kv_sharing_fast_prefill", "False".into()),
        ("mamba_block_size", "None".into()),
        ("mamba_cache_dtype", "auto".into()),
        ("mamba_cache_mode", "none".into()),
        ("mamba_page_size_padded", "None".into()),
        ("mamba_ssm_cache_dtype", "float32".into()),
        ("num_cpu_blocks", "None".into()),
        ("num_gpu_blocks", s.num_blocks.to_string()),
        ("num_gpu_blocks_override", "None".into()),
        ("prefix_cache_retention_interval", "0".into()),
        ("prefix_caching_hash_algo", "sha256".into()),
        ("prefix_match_unit", "None".into()),
        ("replayssm_buffer_len", "16".into()),
        ("skip_page_size_padded", "None".into()),
        ("sliding_window", "None".into()),
        ("swa_bounded_replay", "True".into()),
        ("use_kda_recoverssm", "False".into()),
        ("use_replayssm", "False".into()),
        ("user_specified_block_size", "True".into()),
    ];
    // vLLM labels the info gauge with `engine` and the config, not `model_name`.
    o.header(
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig",
    );
    let mut cache_info = cache_info;
    cache_info.push(("engine", "0".into()));
    o.sample("vllm:cache_config_info", &cache_info, 1.0, false);
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_prometheus_client() {
        assert_eq!(go_float(0.0), "0.0");
        assert_eq!(go_float(4624.0), "4624.0");
        assert_eq!(go_float(0.13086795806884766), "0.13086795806884766");
        assert_eq!(go_float(1795300409.0174558), "1.7953004090174558e+09");
        assert_eq!(go_float(0.001), "0.001");
        assert_eq!(go_float(2560.0), "2560.0");
        assert_eq!(go_float(1e-5), "1e-05");
        assert_eq!(python_repr(128.0), "128.0");
    }

    #[test]
    fn buckets_follow_max_model_len() {
        assert_eq!(
            buckets_1_2_5(4096),
            vec![
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0
            ]
        );
    }

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(vec![1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(5.0);
        assert_eq!(h.counts, vec![1, 2]);
        assert_eq!(h.count(), 3);
        assert!((h.sum() - 7.0).abs() < 1e-12);
    }
}
