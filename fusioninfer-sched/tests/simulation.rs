//! A discrete-time simulation of a fleet of model servers under a shared-prefix workload,
//! driven through the real scheduler with the planner's strategy configs.
//!
//! The model, and what it leaves out:
//! - Time advances in steps of 10 ms; every step the scheduler sees freshly scraped metrics
//!   (waiting, running, KV usage) as of the start of the step, so requests arriving in the same
//!   step see the same, slightly outdated, load — as a router between scrapes does.
//! - Workload: 32 groups, each with a 2 KiB "system prompt" (32 blocks of 64 bytes), followed
//!   by a 256-byte unique user part (4 blocks). Groups are equally popular; 3.5 requests arrive
//!   per step on average (seeded, so runs are identical).
//! - A server runs at most 8 requests at once and queues the rest (FIFO). A request occupies a
//!   slot for its prefill — one step per 16 uncached blocks — plus 10 decode steps. So load is
//!   real: queues form where traffic piles up, and cache misses cost time.
//! - A server's prefix cache is an LRU of 320 blocks (10 system prompts; a tighter 224 blocks,
//!   7 prompts, in the second test): when a request starts, its leading blocks found in the
//!   cache are hits; then all its blocks are cached.
//!   Reported KV usage is the active requests' blocks over 400 blocks (the cached-but-idle
//!   blocks are not counted as used, as in vLLM), so at most 0.72.
//! - Hit rate = cached blocks / prompt blocks over all requests. The oracle computes every
//!   system prompt once in the whole fleet and hits on everything else except unique parts.
//! - Not modelled: token-level details, variable output lengths, preemption, network.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use common::{address, text};
use fusioninfer_api::RoutingStrategy;
use fusioninfer_core::strategy::endpoint_picker_config;
use fusioninfer_sched::{Decision, Endpoint, EndpointMetrics, Request, Scheduler};
use lru::LruCache;

const SERVERS: usize = 8;
const GROUPS: usize = 32;
const BLOCK_BYTES: usize = 64;
const PREFIX_BLOCKS: usize = 32;
const UNIQUE_BLOCKS: usize = 4;
const SLOTS: usize = 8;
const PREFILL_BLOCKS_PER_STEP: usize = 16;
const DECODE_STEPS: u32 = 10;
/// 10 system prompts per server: the fleet holds 2.5× the 32-prompt working set, one server
/// under a third of it.
const CACHE_BLOCKS: usize = 320;
/// 7 system prompts per server: the fleet holds only 1.75× the working set.
const TIGHT_CACHE_BLOCKS: usize = 224;
const KV_POOL_BLOCKS: f64 = 400.0;
const ARRIVAL_STEPS: u64 = 1000;
const ARRIVALS_PER_STEP_X2: u32 = 7; // mean 3.5 per step
const STEP: Duration = Duration::from_millis(10);
/// Workload and tie-break seeds the main assertion must hold for.
const SEEDS: [u64; 3] = [2024, 7, 99];

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Block {
    Prefix { group: usize, index: usize },
    Unique { request: u64, index: usize },
}

struct Job {
    id: u64,
    group: usize,
    remaining_steps: u32,
}

struct Server {
    waiting: VecDeque<Job>,
    running: Vec<Job>,
    cache: LruCache<Block, ()>,
    routed: usize,
}

#[derive(Debug)]
struct Outcome {
    requests: usize,
    rejected: usize,
    hit_blocks: usize,
    prompt_blocks: usize,
    routed_per_server: Vec<usize>,
}

impl Outcome {
    fn hit_rate(&self) -> f64 {
        self.hit_blocks as f64 / self.prompt_blocks as f64
    }

    /// Every system prompt computed once per fleet; unique parts always computed.
    fn oracle_hit_rate(&self) -> f64 {
        let misses = GROUPS * PREFIX_BLOCKS + self.requests * UNIQUE_BLOCKS;
        (self.prompt_blocks - misses) as f64 / self.prompt_blocks as f64
    }

    fn max_share_of_fair(&self) -> f64 {
        let fair = self.requests as f64 / SERVERS as f64;
        *self.routed_per_server.iter().max().unwrap() as f64 / fair
    }
}

fn blocks(id: u64, group: usize) -> impl Iterator<Item = Block> {
    (0..PREFIX_BLOCKS)
        .map(move |index| Block::Prefix { group, index })
        .chain((0..UNIQUE_BLOCKS).map(move |index| Block::Unique { request: id, index }))
}

/// One run; `seed` drives both the workload and the scheduler's tie breaks.
fn simulate(strategy: RoutingStrategy, cache_blocks: usize, seed: u64) -> Outcome {
    let scheduler = Scheduler::from_yaml(endpoint_picker_config(strategy), seed).unwrap();
    let system_prompts: Vec<String> = (0..GROUPS)
        .map(|g| text(g as u64, PREFIX_BLOCKS * BLOCK_BYTES))
        .collect();
    let addresses: Vec<SocketAddr> = (0..SERVERS).map(address).collect();
    let mut servers: Vec<Server> = (0..SERVERS)
        .map(|_| Server {
            waiting: VecDeque::new(),
            running: Vec::new(),
            cache: LruCache::new(NonZeroUsize::new(cache_blocks).unwrap()),
            routed: 0,
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(1));
    let t0 = Instant::now();
    let mut outcome = Outcome {
        requests: 0,
        rejected: 0,
        hit_blocks: 0,
        prompt_blocks: 0,
        routed_per_server: Vec::new(),
    };
    let mut next_id = 0u64;
    let mut step = 0u64;
    loop {
        let now = t0 + STEP * step as u32;
        let busy = servers
            .iter()
            .any(|s| !s.running.is_empty() || !s.waiting.is_empty());
        if step >= ARRIVAL_STEPS && !busy {
            break;
        }
        // The scrape at the start of the step.
        let endpoints: Vec<Endpoint> = servers
            .iter()
            .zip(&addresses)
            .map(|(server, &address)| {
                let active_blocks = server.running.len() * (PREFIX_BLOCKS + UNIQUE_BLOCKS);
                let metrics = EndpointMetrics {
                    waiting_requests: server.waiting.len() as u32,
                    running_requests: server.running.len() as u32,
                    kv_cache_usage: active_blocks as f64 / KV_POOL_BLOCKS,
                    ..EndpointMetrics::default()
                };
                Endpoint::new(address).with_metrics(metrics, now)
            })
            .collect();
        if step < ARRIVAL_STEPS {
            // Sum of 7 coin flips: mean 3.5 arrivals per step.
            let arrivals = (0..ARRIVALS_PER_STEP_X2).filter(|_| rng.bool()).count();
            for _ in 0..arrivals {
                let group = rng.usize(..GROUPS);
                let id = next_id;
                next_id += 1;
                let prompt = format!(
                    "{}{}",
                    system_prompts[group],
                    text(1_000_000 + id, UNIQUE_BLOCKS * BLOCK_BYTES)
                );
                outcome.requests += 1;
                match scheduler.schedule(&Request::completion("llama", prompt), &endpoints, now) {
                    Decision::Routed(routed) => {
                        let server = addresses.iter().position(|&a| a == routed.primary).unwrap();
                        servers[server].waiting.push_back(Job {
                            id,
                            group,
                            remaining_steps: 0,
                        });
                        servers[server].routed += 1;
                    }
                    Decision::Rejected(_) => outcome.rejected += 1,
                }
            }
        }
        for server in &mut servers {
            for job in &mut server.running {
                job.remaining_steps -= 1;
            }
            server.running.retain(|job| job.remaining_steps > 0);
            while server.running.len() < SLOTS {
                let Some(mut job) = server.waiting.pop_front() else {
                    break;
                };
                let hits = blocks(job.id, job.group)
                    .take_while(|block| server.cache.contains(block))
                    .count();
                for block in blocks(job.id, job.group) {
                    server.cache.put(block, ());
                }
                let prompt_blocks = PREFIX_BLOCKS + UNIQUE_BLOCKS;
                outcome.hit_blocks += hits;
                outcome.prompt_blocks += prompt_blocks;
                job.remaining_steps =
                    (prompt_blocks - hits).div_ceil(PREFILL_BLOCKS_PER_STEP) as u32 + DECODE_STEPS;
                server.running.push(job);
            }
        }
        step += 1;
    }
    outcome.routed_per_server = servers.iter().map(|s| s.routed).collect();
    outcome
}

fn report(name: &str, outcome: &Outcome) {
    println!(
        "{name:13} hit rate {:.3} (oracle {:.3}, {:.0}% of it), max share {:.2}x fair, per server {:?}, rejected {}",
        outcome.hit_rate(),
        outcome.oracle_hit_rate(),
        100.0 * outcome.hit_rate() / outcome.oracle_hit_rate(),
        outcome.max_share_of_fair(),
        outcome.routed_per_server,
        outcome.rejected
    );
}

#[test]
fn prefix_cache_strategy_approaches_the_oracle_while_round_robin_does_not() {
    for seed in SEEDS {
        let prefix = simulate(RoutingStrategy::PrefixCache, CACHE_BLOCKS, seed);
        report(&format!("prefix-cache/{seed}"), &prefix);
        let oracle = prefix.oracle_hit_rate();
        assert!(prefix.requests > 3000, "{prefix:?}");
        assert_eq!(prefix.rejected, 0, "the fleet is not overloaded");
        assert!(
            prefix.hit_rate() >= 0.9 * oracle,
            "seed {seed}: hit rate {:.3} vs oracle {oracle:.3}",
            prefix.hit_rate()
        );
        assert!(
            prefix.max_share_of_fair() <= 2.0,
            "seed {seed}: {:?}",
            prefix.routed_per_server
        );
    }
    // Round robin spreads every system prompt over every server, each of which caches under a
    // third of them.
    let round_robin = simulate(RoutingStrategy::RoundRobin, CACHE_BLOCKS, SEEDS[0]);
    report("round-robin", &round_robin);
    assert_eq!(round_robin.rejected, 0);
    assert!(
        round_robin.hit_rate() < 0.4 * round_robin.oracle_hit_rate(),
        "{:.3}",
        round_robin.hit_rate()
    );
    assert!(
        round_robin.max_share_of_fair() <= 1.01,
        "{:?}",
        round_robin.routed_per_server
    );
}

/// With caches of 7 prompts the load scorers (weight 4 together) spread groups over more
/// servers than the caches hold and the default profile falls clearly short of the oracle
/// (77-84 % of it depending on the seed at the time of writing); it must still beat round
/// robin by far and stay balanced.
#[test]
fn under_tight_caches_prefix_affinity_still_far_beats_round_robin() {
    let prefix = simulate(RoutingStrategy::PrefixCache, TIGHT_CACHE_BLOCKS, SEEDS[0]);
    let round_robin = simulate(RoutingStrategy::RoundRobin, TIGHT_CACHE_BLOCKS, SEEDS[0]);
    report("prefix-cache", &prefix);
    report("round-robin", &round_robin);
    assert!(
        prefix.hit_rate() >= 3.0 * round_robin.hit_rate(),
        "{:.3} vs {:.3}",
        prefix.hit_rate(),
        round_robin.hit_rate()
    );
    assert!(
        prefix.max_share_of_fair() <= 2.0,
        "{:?}",
        prefix.routed_per_server
    );
}
