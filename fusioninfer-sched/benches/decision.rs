//! One scheduling decision with the planner's default strategy (prefix-cache: prefix affinity,
//! queue and KV-cache scorers, max-score picker) for 8, 64 and 256 endpoints and 1, 8 and
//! 64 KiB prompts, against a warmed prefix index.
//!
//! Criterion measures the mean; afterwards a second pass times single calls to report p50 and
//! p99 (criterion has no percentiles). `FUSIONINFER_BENCH_SAMPLES` sets that pass's calls per
//! case (default 5000); it is skipped in `--test` mode.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use fusioninfer_api::RoutingStrategy;
use fusioninfer_core::strategy::endpoint_picker_config;
use fusioninfer_sched::{ChatMessage, Endpoint, EndpointMetrics, Request, Scheduler};

const ENDPOINTS: [usize; 3] = [8, 64, 256];
const PROMPT_KIB: [usize; 3] = [1, 8, 64];
/// Distinct shared prefixes ("system prompts") in the warmed index.
const PREFIX_GROUPS: usize = 32;

struct Case {
    scheduler: Scheduler,
    endpoints: Vec<Endpoint>,
    requests: Vec<Request>,
    now: Instant,
}

/// Deterministic filler text (xorshift), so prompts differ without a random crate.
fn text(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

fn case(endpoint_count: usize, prompt_kib: usize) -> Case {
    let scheduler = Scheduler::from_yaml(endpoint_picker_config(RoutingStrategy::PrefixCache), 42)
        .expect("strategy loads");
    let now = Instant::now();
    let endpoints: Vec<Endpoint> = (0..endpoint_count)
        .map(|i| {
            let address = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 8000));
            let metrics = EndpointMetrics {
                waiting_requests: (i % 4) as u32,
                running_requests: (i % 7) as u32,
                kv_cache_usage: (i % 10) as f64 / 20.0,
                cache_block_size: Some(16),
                cache_num_blocks: Some(8192),
                lora: None,
            };
            Endpoint::new(address).with_metrics(metrics, now)
        })
        .collect();
    let prompt_bytes = prompt_kib * 1024;
    let requests: Vec<Request> = (0..PREFIX_GROUPS * 4)
        .map(|i| {
            let group = i % PREFIX_GROUPS;
            let system = text(group as u64, prompt_bytes * 3 / 4);
            let user = text(1000 + i as u64, prompt_bytes / 4);
            Request::chat(
                "llama",
                vec![
                    ChatMessage::new("system", system),
                    ChatMessage::new("user", user),
                ],
            )
        })
        .collect();
    // Warm the index: every prompt routed once.
    for request in &requests {
        black_box(scheduler.schedule(request, &endpoints, now));
    }
    Case {
        scheduler,
        endpoints,
        requests,
        now,
    }
}

fn bench_decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    for endpoint_count in ENDPOINTS {
        for prompt_kib in PROMPT_KIB {
            let case = case(endpoint_count, prompt_kib);
            let id = BenchmarkId::new(
                format!("{endpoint_count}_endpoints"),
                format!("{prompt_kib}KiB"),
            );
            let mut next = 0;
            group.bench_function(id, |b| {
                b.iter(|| {
                    next = (next + 1) % case.requests.len();
                    black_box(case.scheduler.schedule(
                        &case.requests[next],
                        &case.endpoints,
                        case.now,
                    ))
                })
            });
        }
    }
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_percentiles(samples: usize) {
    println!("\nPer-call latency over {samples} calls per case (one Instant pair per call):");
    println!("| endpoints | prompt | p50 | p99 |");
    println!("|---:|---:|---:|---:|");
    for endpoint_count in ENDPOINTS {
        for prompt_kib in PROMPT_KIB {
            let case = case(endpoint_count, prompt_kib);
            let mut times: Vec<Duration> = (0..samples)
                .map(|i| {
                    let request = &case.requests[i % case.requests.len()];
                    let start = Instant::now();
                    black_box(case.scheduler.schedule(request, &case.endpoints, case.now));
                    start.elapsed()
                })
                .collect();
            times.sort();
            println!(
                "| {endpoint_count} | {prompt_kib} KiB | {:.1} µs | {:.1} µs |",
                percentile(&times, 0.50).as_secs_f64() * 1e6,
                percentile(&times, 0.99).as_secs_f64() * 1e6
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    bench_decisions(&mut criterion);
    criterion.final_summary();
    if !std::env::args().any(|arg| arg == "--test" || arg == "--list") {
        let samples = std::env::var("FUSIONINFER_BENCH_SAMPLES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5000);
        print_percentiles(samples);
    }
}
