//! The `make demo` workload: four groups of six requests, each group sharing a long system
//! prompt, half of them streamed, one group on `/v1/completions`; then a table of which server
//! answered each group and how much of the prompts came from the prefix cache, and the checks
//! that decide the demo's exit code.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::{Api, Job, LoopbackUrl, Outcome, run, text};

/// The groups: name, API, and the opening of the system prompt.
pub const GROUPS: [(&str, Api, &str); 4] = [
    (
        "support-bot",
        Api::Chat,
        "You are the support assistant of Nimbus Cloud. Follow the policy below.",
    ),
    (
        "code-review",
        Api::Completions,
        "Review the following change request against the team's coding guide.",
    ),
    (
        "travel-desk",
        Api::Chat,
        "You are the travel desk of a large company. Apply the travel rules below.",
    ),
    (
        "legal-intake",
        Api::Chat,
        "You sort incoming legal questions. The intake rules are listed below.",
    ),
];

/// Requests per group.
pub const PER_GROUP: usize = 6;
/// Words of filler in each system prompt (about 1.3 simulator tokens per word).
pub const SYSTEM_WORDS: usize = 420;

/// Pass criteria.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Criteria {
    /// Most distinct servers one group may have touched.
    pub max_servers_per_group: usize,
    /// Least cached-token ratio over all requests.
    pub min_cached_ratio: f64,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            max_servers_per_group: 2,
            min_cached_ratio: 0.6,
        }
    }
}

/// The jobs, in sending order: the first request of each group alone (it fills a cache), then
/// the other five of every group in a seeded shuffle (so that no rotation over four servers can
/// line up with the groups by accident), alternating streamed and not.
pub fn jobs() -> Vec<Job> {
    let systems: Vec<String> = GROUPS
        .iter()
        .enumerate()
        .map(|(g, (_, _, opening))| format!("{opening} {}", text(1000 + g as u64, SYSTEM_WORDS)))
        .collect();
    let job = |g: usize, k: usize| Job {
        group: g,
        api: GROUPS[g].1,
        stream: k % 2 == 1,
        system: systems[g].clone(),
        user: format!(
            "Request {k} of {}: {}?",
            GROUPS[g].0,
            text(7000 + (g * PER_GROUP + k) as u64, 12)
        ),
        max_tokens: 24,
    };
    let mut rest: Vec<Job> = (1..PER_GROUP)
        .flat_map(|k| (0..GROUPS.len()).map(move |g| (g, k)))
        .map(|(g, k)| job(g, k))
        .collect();
    fastrand::Rng::with_seed(8).shuffle(&mut rest);
    let mut jobs: Vec<Job> = (0..GROUPS.len()).map(|g| job(g, 0)).collect();
    jobs.extend(rest);
    jobs
}

/// Sends the workload: the group openers one by one, the rest with four in flight.
pub async fn send_all(base_url: &LoopbackUrl, model: &str) -> Vec<Outcome> {
    let all = jobs();
    let (first, rest) = all.split_at(GROUPS.len());
    let mut outcomes = run(base_url, model, first, 1, Duration::from_secs(60)).await;
    let mut later = run(base_url, model, rest, 4, Duration::from_secs(90)).await;
    for o in &mut later {
        o.index += first.len();
    }
    outcomes.extend(later);
    outcomes
}

/// The report and whether the checks passed.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The table and the checks, ready to print.
    pub text: String,
    /// Every check passed.
    pub passed: bool,
    /// Σ cached / Σ prompt tokens over the answered requests.
    pub cached_ratio: f64,
}

/// Tabulates `outcomes` (from [`send_all`]) and applies `criteria`.
pub fn report(outcomes: &[Outcome], criteria: Criteria) -> Report {
    let all_jobs = jobs();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:<12} {:>8} {:>9}  {:<40} {:>16}",
        "group", "api", "requests", "streamed", "served by (requests)", "cached / prompt"
    );
    let mut total_prompt = 0u64;
    let mut total_cached = 0u64;
    let mut spread: Vec<(String, usize)> = Vec::new();
    for (g, (name, api, _)) in GROUPS.iter().enumerate() {
        let group: Vec<&Outcome> = outcomes.iter().filter(|o| o.group == g).collect();
        let streamed = group
            .iter()
            .filter(|o| all_jobs.get(o.index).is_some_and(|j| j.stream))
            .count();
        let mut servers: BTreeMap<String, usize> = BTreeMap::new();
        for o in group.iter().filter(|o| o.ok()) {
            *servers
                .entry(o.server.clone().unwrap_or_else(|| "?".to_owned()))
                .or_default() += 1;
        }
        let served = servers
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let prompt: u64 = group.iter().map(|o| o.prompt_tokens).sum();
        let cached: u64 = group.iter().map(|o| o.cached_tokens).sum();
        total_prompt += prompt;
        total_cached += cached;
        spread.push(((*name).to_owned(), servers.len()));
        let _ = writeln!(
            out,
            "{:<13} {:<12} {:>8} {:>9}  {:<40} {:>16}",
            name,
            api.as_str(),
            group.len(),
            streamed,
            served,
            format!("{cached} / {prompt} {:>3.0}%", percent(cached, prompt)),
        );
    }
    let ok = outcomes.iter().filter(|o| o.ok()).count();
    let _ = writeln!(
        out,
        "{:<13} {:<12} {:>8} {:>9}  {:<40} {:>16}",
        "all",
        "",
        outcomes.len(),
        outcomes
            .iter()
            .filter(|o| all_jobs.get(o.index).is_some_and(|j| j.stream))
            .count(),
        "",
        format!(
            "{total_cached} / {total_prompt} {:>3.0}%",
            percent(total_cached, total_prompt)
        ),
    );
    let ratio = if total_prompt == 0 {
        0.0
    } else {
        total_cached as f64 / total_prompt as f64
    };

    let mut passed = true;
    let mut check = |good: bool, text: String| {
        passed &= good;
        format!("  {}  {text}\n", if good { "ok  " } else { "FAIL" })
    };
    out.push_str("\nchecks\n");
    let answered = check(
        ok == outcomes.len() && !outcomes.is_empty(),
        format!("{ok}/{} requests answered 200", outcomes.len()),
    );
    out.push_str(&answered);
    for o in outcomes.iter().filter(|o| !o.ok()).take(3) {
        let _ = writeln!(
            out,
            "        request {}: status {} {}",
            o.index,
            o.status,
            o.error.as_deref().unwrap_or("")
        );
    }
    let worst = spread.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let sticky = check(
        worst <= criteria.max_servers_per_group,
        format!(
            "each group stayed on ≤ {} servers ({})",
            criteria.max_servers_per_group,
            spread
                .iter()
                .map(|(g, n)| format!("{g} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    out.push_str(&sticky);
    let cached = check(
        ratio >= criteria.min_cached_ratio,
        format!(
            "cached-token ratio {ratio:.2} ≥ {:.2} (the first request of a group pays the full prompt; the rest should find it cached)",
            criteria.min_cached_ratio
        ),
    );
    out.push_str(&cached);
    Report {
        text: out,
        passed,
        cached_ratio: ratio,
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_opens_each_group_then_mixes_them() {
        let jobs = jobs();
        assert_eq!(jobs.len(), GROUPS.len() * PER_GROUP);
        let first: Vec<usize> = jobs[..4].iter().map(|j| j.group).collect();
        assert_eq!(first, [0, 1, 2, 3]);
        assert!(jobs[..4].iter().all(|j| !j.stream));
        assert_eq!(jobs.iter().filter(|j| j.stream).count(), 12);
        assert!(jobs.iter().any(|j| j.api == Api::Completions));
        // Same group, same system prompt; different groups, different prompts.
        for j in &jobs {
            assert_eq!(j.system, jobs[j.group].system);
        }
        assert_ne!(jobs[0].system, jobs[1].system);
        // Mixed: the later requests do not cycle through the groups in order.
        let later: Vec<usize> = jobs[4..12].iter().map(|j| j.group).collect();
        assert_ne!(later, [0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(jobs, super::jobs(), "deterministic");
    }

    fn outcome(index: usize, server: &str, prompt: u64, cached: u64) -> Outcome {
        Outcome {
            index,
            group: jobs()[index].group,
            status: 200,
            server: Some(server.to_owned()),
            prompt_tokens: prompt,
            cached_tokens: cached,
            ..Outcome::default()
        }
    }

    #[test]
    fn sticky_cached_traffic_passes_and_scattered_traffic_fails() {
        let sticky: Vec<Outcome> = jobs()
            .iter()
            .enumerate()
            .map(|(i, j)| {
                outcome(
                    i,
                    &format!("s{}", j.group),
                    600,
                    if i < 4 { 0 } else { 560 },
                )
            })
            .collect();
        let r = report(&sticky, Criteria::default());
        assert!(r.passed, "{}", r.text);
        assert!(r.cached_ratio > 0.7);
        assert!(r.text.contains("s0 ×6"), "{}", r.text);

        let scattered: Vec<Outcome> = jobs()
            .iter()
            .enumerate()
            .map(|(i, _)| outcome(i, &format!("s{}", i % 4), 600, 0))
            .collect();
        let r = report(&scattered, Criteria::default());
        assert!(!r.passed);
        assert!(r.text.contains("FAIL  each group stayed"), "{}", r.text);
        assert!(r.text.contains("FAIL  cached-token ratio"), "{}", r.text);

        let mut failed = sticky.clone();
        failed[5].status = 503;
        failed[5].error = Some("no ready endpoint".to_owned());
        let r = report(&failed, Criteria::default());
        assert!(!r.passed);
        assert!(r.text.contains("23/24 requests answered 200"), "{}", r.text);
    }
}
