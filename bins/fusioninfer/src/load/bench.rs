//! The routing benchmark's workload, oracle and report (`make bench`).
//!
//! Workload: `groups` system prompts (each ≈ `system_words` × 1.3 tokens) with Zipf(`zipf_s`)
//! popularity, each request adding its own short question; a seeded order; every request
//! streamed with `max_tokens` output tokens; a closed loop with a fixed number of requests in
//! flight (several levels: load-aware routing matters once a server's running slots fill up).
//! The fleet is sized by the caller so that all system prompts together are more than one
//! server's KV cache holds and less than the fleet's.
//!
//! Oracle: the prefix-cache hits an ideal router over an unbounded cache would get — for each
//! request in sending order, the longest token prefix it shares with any earlier request,
//! counted like vLLM (whole blocks, at most `prompt_tokens - 1`). Token ids come from a
//! simulator's `/tokenize`, so they are the ones the servers hash.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};

use super::{Job, Outcome, quantile, text};

/// Workload parameters (the benchmark runs it at several concurrency levels).
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Distinct system prompts.
    pub groups: usize,
    /// Requests in all.
    pub requests: usize,
    /// Words per system prompt.
    pub system_words: usize,
    /// Words per question.
    pub user_words: usize,
    /// Zipf exponent of group popularity (0 = uniform).
    pub zipf_s: f64,
    /// Output tokens per request.
    pub max_tokens: u32,
    /// Seed of popularity draws, order and text.
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            groups: 16,
            requests: 480,
            system_words: 700,
            user_words: 20,
            zipf_s: 1.0,
            max_tokens: 8,
            seed: 2026,
        }
    }
}

/// The jobs, in sending order.
pub fn jobs(w: &Workload) -> Vec<Job> {
    let systems: Vec<String> = (0..w.groups)
        .map(|g| {
            format!(
                "System prompt {g}. You answer for team {g}. {}",
                text(
                    w.seed.wrapping_mul(31).wrapping_add(g as u64),
                    w.system_words
                )
            )
        })
        .collect();
    let weights: Vec<f64> = (0..w.groups)
        .map(|g| 1.0 / ((g + 1) as f64).powf(w.zipf_s))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut rng = fastrand::Rng::with_seed(w.seed);
    (0..w.requests)
        .map(|i| {
            let mut x = rng.f64() * total;
            let mut group = w.groups - 1;
            for (g, weight) in weights.iter().enumerate() {
                if x < *weight {
                    group = g;
                    break;
                }
                x -= weight;
            }
            Job {
                group,
                api: super::Api::Chat,
                stream: true,
                system: systems[group].clone(),
                user: format!(
                    "Question {i}: {}?",
                    text(w.seed ^ (0x9e37_79b9 + i as u64), w.user_words)
                ),
                max_tokens: w.max_tokens,
            }
        })
        .collect()
}

/// Oracle cached tokens per request (see the module docs). `tokens[i]` are request `i`'s
/// prompt tokens; `groups[i]` its group: the longest shared prefix is searched among earlier
/// requests of the same group and the first request of every other group (prompts of different
/// groups part within the chat template's first few tokens).
pub fn oracle_cached(tokens: &[Vec<u32>], groups: &[usize], block_size: usize) -> Vec<u64> {
    let mut first_of_group: BTreeMap<usize, usize> = BTreeMap::new();
    let mut seen_in_group: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut out = Vec::with_capacity(tokens.len());
    for (i, prompt) in tokens.iter().enumerate() {
        let group = groups[i];
        let candidates = seen_in_group
            .get(&group)
            .into_iter()
            .flatten()
            .chain(first_of_group.values())
            .copied();
        let lcp = candidates
            .map(|j| common_prefix(prompt, &tokens[j]))
            .max()
            .unwrap_or(0);
        let limit = prompt.len().saturating_sub(1);
        let hit = lcp.min(limit) / block_size.max(1) * block_size.max(1);
        out.push(hit as u64);
        first_of_group.entry(group).or_insert(i);
        seen_in_group.entry(group).or_default().push(i);
    }
    out
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One strategy's results.
#[derive(Clone, Debug, PartialEq)]
pub struct StrategyResult {
    /// Strategy name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Requests in flight (closed loop).
    pub concurrency: usize,
    /// Requests sent.
    pub requests: usize,
    /// Requests answered 200 in full.
    pub ok: usize,
    /// Model-time TTFT percentiles (ms): p50, p90.
    pub ttft_model_ms: (f64, f64),
    /// Wall-clock TTFT percentiles (ms): p50, p90.
    pub ttft_wall_ms: (f64, f64),
    /// Wall-clock duration of the run (s).
    pub seconds: f64,
    /// Completed requests per wall second.
    pub requests_per_s: f64,
    /// Output tokens per wall second.
    pub output_tokens_per_s: f64,
    /// Σ cached / Σ prompt tokens.
    pub hit_rate: f64,
    /// The oracle's Σ cached / Σ prompt tokens.
    pub oracle_hit_rate: f64,
    /// Most requests one server answered, over the fair share (1.0 = perfectly even).
    pub max_share: f64,
}

impl StrategyResult {
    /// Summarises one run. `oracle[i]` is the oracle's cached tokens for job `i`; `servers` is
    /// the fleet size.
    pub fn new(
        name: &str,
        description: &str,
        concurrency: usize,
        outcomes: &[Outcome],
        oracle: &[u64],
        seconds: f64,
        servers: usize,
    ) -> StrategyResult {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok()).collect();
        let model: Vec<f64> = ok.iter().filter_map(|o| o.model_ttft_ms).collect();
        let wall: Vec<f64> = ok
            .iter()
            .map(|o| o.wall_ttft.as_secs_f64() * 1000.0)
            .collect();
        let q = |v: &[f64], p| quantile(v, p).unwrap_or(f64::NAN);
        let prompt: u64 = ok.iter().map(|o| o.prompt_tokens).sum();
        let cached: u64 = ok.iter().map(|o| o.cached_tokens).sum();
        let oracle_cached: u64 = ok
            .iter()
            .map(|o| oracle.get(o.index).copied().unwrap_or(0))
            .sum();
        let output: u64 = ok.iter().map(|o| o.completion_tokens).sum();
        let mut per_server: BTreeMap<&str, usize> = BTreeMap::new();
        for o in &ok {
            *per_server
                .entry(o.server.as_deref().unwrap_or("?"))
                .or_default() += 1;
        }
        let fair = ok.len() as f64 / servers.max(1) as f64;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        StrategyResult {
            name: name.to_owned(),
            description: description.to_owned(),
            concurrency,
            requests: outcomes.len(),
            ok: ok.len(),
            ttft_model_ms: (q(&model, 0.5), q(&model, 0.9)),
            ttft_wall_ms: (q(&wall, 0.5), q(&wall, 0.9)),
            seconds,
            requests_per_s: ok.len() as f64 / seconds.max(1e-9),
            output_tokens_per_s: output as f64 / seconds.max(1e-9),
            hit_rate: ratio(cached, prompt),
            oracle_hit_rate: ratio(oracle_cached, prompt),
            max_share: per_server.values().copied().max().unwrap_or(0) as f64 / fair.max(1e-9),
        }
    }

    /// Hit rate as a fraction of the oracle's.
    pub fn of_oracle(&self) -> f64 {
        if self.oracle_hit_rate == 0.0 {
            0.0
        } else {
            self.hit_rate / self.oracle_hit_rate
        }
    }

    /// The results as JSON (for the chart script).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.ok,
            "ttft_model_ms_p50": self.ttft_model_ms.0,
            "ttft_model_ms_p90": self.ttft_model_ms.1,
            "ttft_wall_ms_p50": self.ttft_wall_ms.0,
            "ttft_wall_ms_p90": self.ttft_wall_ms.1,
            "seconds": self.seconds,
            "requests_per_s": self.requests_per_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "hit_rate": self.hit_rate,
            "oracle_hit_rate": self.oracle_hit_rate,
            "of_oracle": self.of_oracle(),
            "max_share": self.max_share,
        })
    }
}

/// The markdown table.
pub fn markdown_table(results: &[StrategyResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| in flight | strategy | ok | TTFT p50 / p90, model ms | TTFT p50 / p90, wall ms | req/s | output tok/s | prefix hit rate | of oracle | max share of fair |\n",
    );
    out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {}/{} | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} | {:.0} | {:.3} | {:.0} % | {:.2}× |",
            r.concurrency,
            r.name,
            r.ok,
            r.requests,
            r.ttft_model_ms.0,
            r.ttft_model_ms.1,
            r.ttft_wall_ms.0,
            r.ttft_wall_ms.1,
            r.requests_per_s,
            r.output_tokens_per_s,
            r.hit_rate,
            100.0 * r.of_oracle(),
            r.max_share,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn workload_is_seeded_and_skewed() {
        let w = Workload {
            requests: 400,
            ..Workload::default()
        };
        let a = jobs(&w);
        assert_eq!(a, jobs(&w));
        let mut counts = vec![0usize; w.groups];
        for j in &a {
            counts[j.group] += 1;
        }
        assert!(counts[0] > counts[w.groups - 1] * 3, "{counts:?}");
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        assert_ne!(
            jobs(&Workload {
                seed: 1,
                ..w.clone()
            }),
            a
        );
    }

    #[test]
    fn the_oracle_counts_whole_blocks_of_earlier_prefixes() {
        let shared: Vec<u32> = (0..40).collect();
        let with = |tail: &[u32]| shared.iter().chain(tail).copied().collect::<Vec<u32>>();
        let tokens = vec![
            with(&[100, 101]),
            with(&[200]),
            (500..520).collect(),
            with(&[100, 101]),
        ];
        let groups = [0, 0, 1, 0];
        // 40 shared tokens = 2 whole blocks of 16; the repeat shares all 42 but is capped at
        // 41 → 2 blocks as well.
        assert_eq!(oracle_cached(&tokens, &groups, 16), vec![0, 32, 0, 32]);
        assert_eq!(oracle_cached(&tokens, &groups, 1), vec![0, 40, 0, 41]);
    }

    #[test]
    fn results_summarise_outcomes() {
        let outcome = |index, server: &str, cached, ttft| Outcome {
            index,
            group: 0,
            status: 200,
            server: Some(server.to_owned()),
            prompt_tokens: 100,
            cached_tokens: cached,
            completion_tokens: 8,
            model_ttft_ms: Some(ttft),
            wall_ttft: Duration::from_millis(ttft as u64),
            ..Outcome::default()
        };
        let outcomes = vec![
            outcome(0, "a", 0, 100.0),
            outcome(1, "a", 80, 20.0),
            outcome(2, "b", 80, 20.0),
            outcome(3, "a", 0, 100.0),
        ];
        let r = StrategyResult::new("x", "d", 3, &outcomes, &[0, 96, 96, 96], 2.0, 2);
        assert_eq!(r.ok, 4);
        assert!((r.hit_rate - 0.4).abs() < 1e-9);
        assert!((r.oracle_hit_rate - 0.72).abs() < 1e-9);
        assert!((r.of_oracle() - 0.4 / 0.72).abs() < 1e-9);
        assert_eq!(r.ttft_model_ms, (20.0, 100.0));
        assert!((r.max_share - 1.5).abs() < 1e-9);
        assert!((r.requests_per_s - 2.0).abs() < 1e-9);
        let table = markdown_table(&[r]);
        assert!(table.contains("| 3 | x | 4/4 | 20 / 100 |"), "{table}");
    }
}
