//! A small, deterministic OpenAI load generator for the demo and the routing benchmark.
//!
//! Why our own rather than inference-perf: it needs no Python ≥ 3.12, builds with the rest of
//! the workspace, generates the same requests from the same seed, is bounded in count and time
//! by construction, only ever dials the loopback URL it is given, and reads what the simulator
//! reports per request (the `x-inference-pod` header, `usage.prompt_tokens_details.cached_tokens`
//! and the `x-sim-*` model-time headers), which a generic tool would not.
//!
//! * [`Job`]: one request; [`send`] sends it and returns an [`Outcome`];
//! * [`http`]: a minimal HTTP/1.1 client for loopback URLs;
//! * [`run`]: a closed loop over a list of jobs with fixed concurrency and a deadline;
//! * [`text`]: deterministic filler text for prompts;
//! * [`demo`] and [`bench`](mod@bench): the two workloads and their reports.

pub mod bench;
pub mod demo;
pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use http::LoopbackUrl;

/// Which OpenAI API a job uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions` with a system and a user message.
    Chat,
    /// `POST /v1/completions` with one prompt.
    Completions,
}

impl Api {
    /// The path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Completions => "/completions",
        }
    }

    /// `chat` or `completions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
        }
    }
}

/// One request of a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Index of its prefix group.
    pub group: usize,
    /// The API.
    pub api: Api,
    /// Streamed (SSE) or not.
    pub stream: bool,
    /// The shared part of the prompt (the group's system prompt).
    pub system: String,
    /// The request's own part.
    pub user: String,
    /// `max_tokens`.
    pub max_tokens: u32,
}

impl Job {
    /// The request body for `model`.
    pub fn body(&self, model: &str) -> Value {
        let mut body = match self.api {
            Api::Chat => json!({
                "model": model,
                "messages": [
                    {"role": "system", "content": self.system},
                    {"role": "user", "content": self.user},
                ],
            }),
            Api::Completions => json!({
                "model": model,
                "prompt": format!("{}\n\n{}", self.system, self.user),
            }),
        };
        body["max_tokens"] = json!(self.max_tokens);
        if self.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// The body of `POST /tokenize` giving the same prompt tokens as the request.
    pub fn tokenize_body(&self, model: &str) -> Value {
        match self.api {
            Api::Chat => json!({"model": model, "messages": self.body(model)["messages"]}),
            Api::Completions => {
                json!({"model": model, "prompt": self.body(model)["prompt"], "add_special_tokens": true})
            }
        }
    }
}

/// What happened to one job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Index of the job in its workload.
    pub index: usize,
    /// Its prefix group.
    pub group: usize,
    /// HTTP status (0: no answer).
    pub status: u16,
    /// Transport or protocol error, or the error body of a non-200 answer.
    pub error: Option<String>,
    /// The server that answered: `x-inference-pod`, else the picker's `x-fusioninfer-endpoint`.
    pub server: Option<String>,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens` (else `x-sim-cached-tokens`).
    pub cached_tokens: u64,
    /// `usage.completion_tokens`.
    pub completion_tokens: u64,
    /// Model-time TTFT from the simulator: `x-sim-queue-ms` + `x-sim-first-token-ms`.
    pub model_ttft_ms: Option<f64>,
    /// Wall time to the first generated text (the whole answer when not streamed).
    pub wall_ttft: Duration,
    /// Wall time to the end of the answer.
    pub wall_total: Duration,
}

impl Outcome {
    /// Answered 200 with a complete body.
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }
}

/// Longest a request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends one job to `base_url` (`http://127.0.0.1:8080/v1`) and reads the whole answer,
/// giving up after [`REQUEST_TIMEOUT`].
pub async fn send(base_url: &LoopbackUrl, model: &str, index: usize, job: &Job) -> Outcome {
    let start = Instant::now();
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        send_inner(base_url, model, index, job, start),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Outcome {
            index,
            group: job.group,
            error: Some(format!("no complete answer within {REQUEST_TIMEOUT:?}")),
            wall_total: start.elapsed(),
            wall_ttft: start.elapsed(),
            ..Outcome::default()
        },
    }
}

async fn send_inner(
    base_url: &LoopbackUrl,
    model: &str,
    index: usize,
    job: &Job,
    start: Instant,
) -> Outcome {
    let mut outcome = Outcome {
        index,
        group: job.group,
        ..Outcome::default()
    };
    let mut response =
        match http::request("POST", base_url, job.api.path(), Some(&job.body(model))).await {
            Ok(r) => r,
            Err(e) => {
                outcome.error = Some(e);
                outcome.wall_total = start.elapsed();
                outcome.wall_ttft = outcome.wall_total;
                return outcome;
            }
        };
    outcome.status = response.status;
    let header = |name: &str| response.header(name).map(str::to_owned);
    outcome.server = header("x-inference-pod").or_else(|| header("x-fusioninfer-endpoint"));
    let sim_ms = |name: &str| header(name).and_then(|v| v.parse::<f64>().ok());
    outcome.model_ttft_ms = match (sim_ms("x-sim-queue-ms"), sim_ms("x-sim-first-token-ms")) {
        (Some(q), Some(f)) => Some(q + f),
        _ => None,
    };
    let sim_cached = header("x-sim-cached-tokens").and_then(|v| v.parse::<u64>().ok());

    let mut usage: Option<Value> = None;
    if outcome.status != 200 {
        let text = response.bytes().await.unwrap_or_default();
        outcome.error = Some(String::from_utf8_lossy(&text).chars().take(300).collect());
    } else if job.stream {
        let mut buffer: Vec<u8> = Vec::new();
        let mut done = false;
        while let Some(chunk) = response.chunk().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    outcome.error = Some(format!("stream broke: {e}"));
                    break;
                }
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = find_event_end(&buffer) {
                let event: Vec<u8> = buffer.drain(..end).collect();
                for line in String::from_utf8_lossy(&event).lines() {
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim();
                    if data == "[DONE]" {
                        done = true;
                        continue;
                    }
                    let Ok(value) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    let choice = &value["choices"][0];
                    let text = choice["delta"]["content"]
                        .as_str()
                        .or_else(|| choice["text"].as_str())
                        .unwrap_or("");
                    if !text.is_empty() && outcome.wall_ttft.is_zero() {
                        outcome.wall_ttft = start.elapsed();
                    }
                    if value["usage"].is_object() {
                        usage = Some(value["usage"].clone());
                    }
                }
            }
        }
        if !done && outcome.error.is_none() {
            outcome.error = Some("stream ended without [DONE]".to_owned());
        }
    } else {
        match response
            .bytes()
            .await
            .map(|b| serde_json::from_slice::<Value>(&b))
        {
            Ok(Ok(value)) => {
                outcome.wall_ttft = start.elapsed();
                usage = value.get("usage").cloned();
            }
            Ok(Err(e)) => outcome.error = Some(format!("unreadable answer: {e}")),
            Err(e) => outcome.error = Some(format!("answer broke: {e}")),
        }
    }
    outcome.wall_total = start.elapsed();
    if outcome.wall_ttft.is_zero() {
        outcome.wall_ttft = outcome.wall_total;
    }
    if let Some(usage) = usage {
        outcome.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0);
        outcome.completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
        outcome.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .or(sim_cached)
            .unwrap_or(0);
    } else if outcome.ok() {
        outcome.cached_tokens = sim_cached.unwrap_or(0);
    }
    outcome
}

/// End of the first complete SSE event (`\n\n` or `\r\n\r\n`) in `buffer`, past the separator.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sends `jobs` in order with at most `concurrency` in flight; jobs not started before
/// `deadline` are skipped (their outcome says so). Outcomes come back in job order.
pub async fn run(
    base_url: &LoopbackUrl,
    model: &str,
    jobs: &[Job],
    concurrency: usize,
    deadline: Duration,
) -> Vec<Outcome> {
    let start = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.iter().enumerate() {
        let permit = Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .expect("semaphore open");
        if start.elapsed() >= deadline {
            drop(permit);
            handles.push(None);
            continue;
        }
        let base_url = base_url.clone();
        let model = model.to_owned();
        let job = job.clone();
        handles.push(Some(tokio::spawn(async move {
            let outcome = send(&base_url, &model, index, &job).await;
            drop(permit);
            outcome
        })));
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    for (index, handle) in handles.into_iter().enumerate() {
        let skipped = || Outcome {
            index,
            group: jobs[index].group,
            error: Some("not sent: the time limit was reached".to_owned()),
            ..Outcome::default()
        };
        outcomes.push(match handle {
            Some(h) => h.await.unwrap_or_else(|_| skipped()),
            None => skipped(),
        });
    }
    outcomes
}

const WORDS: &[&str] = &[
    "account",
    "answer",
    "archive",
    "balance",
    "batch",
    "billing",
    "branch",
    "budget",
    "cache",
    "capacity",
    "channel",
    "check",
    "client",
    "cluster",
    "commit",
    "contract",
    "credit",
    "customer",
    "deadline",
    "delivery",
    "deploy",
    "detail",
    "device",
    "discount",
    "document",
    "domain",
    "draft",
    "entry",
    "estimate",
    "event",
    "export",
    "feature",
    "feedback",
    "field",
    "filter",
    "flight",
    "format",
    "guide",
    "history",
    "hotel",
    "import",
    "incident",
    "invoice",
    "issue",
    "journey",
    "ledger",
    "license",
    "limit",
    "luggage",
    "merge",
    "message",
    "metric",
    "module",
    "notice",
    "option",
    "order",
    "owner",
    "package",
    "partner",
    "payment",
    "period",
    "policy",
    "priority",
    "profile",
    "project",
    "quota",
    "receipt",
    "record",
    "refund",
    "region",
    "release",
    "report",
    "request",
    "review",
    "route",
    "schedule",
    "section",
    "service",
    "session",
    "setting",
    "status",
    "storage",
    "summary",
    "support",
    "ticket",
    "timeline",
    "transfer",
    "update",
    "upgrade",
    "usage",
    "version",
    "voucher",
    "warranty",
    "window",
    "workflow",
    "always",
    "carefully",
    "clearly",
    "never",
    "only",
    "politely",
    "quickly",
    "the",
    "a",
    "each",
    "every",
    "its",
    "their",
    "your",
    "with",
    "for",
    "from",
    "about",
    "before",
    "after",
    "when",
    "unless",
    "and",
    "or",
    "but",
    "must",
    "should",
    "may",
    "will",
    "can",
    "check",
    "confirm",
    "explain",
    "keep",
    "mention",
    "list",
    "name",
    "quote",
];

/// `words` pseudo-random words from a small business vocabulary, seeded, as sentences of
/// 8–15 words.
pub fn text(seed: u64, words: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::new();
    let mut left_in_sentence = 0;
    for i in 0..words {
        if left_in_sentence == 0 {
            if i > 0 {
                out.push_str(". ");
            }
            left_in_sentence = rng.usize(8..16);
            let word = WORDS[rng.usize(..WORDS.len())];
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(WORDS[rng.usize(..WORDS.len())]);
        }
        left_in_sentence -= 1;
    }
    out.push('.');
    out
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_deterministic_and_sized() {
        assert_eq!(text(7, 50), text(7, 50));
        assert_ne!(text(7, 50), text(8, 50));
        assert_eq!(text(1, 120).split_whitespace().count(), 120);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(quantile(&v, 1.0), Some(10.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn sse_events_split_on_blank_lines() {
        assert_eq!(find_event_end(b"data: 1\n\ndata: 2"), Some(9));
        assert_eq!(find_event_end(b"data: 1\r\n\r\n"), Some(11));
        assert_eq!(find_event_end(b"data: 1\n"), None);
    }

    #[test]
    fn bodies_follow_the_openai_shapes() {
        let job = Job {
            group: 0,
            api: Api::Chat,
            stream: true,
            system: "sys".to_owned(),
            user: "hi".to_owned(),
            max_tokens: 4,
        };
        let body = job.body("m");
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(job.tokenize_body("m")["messages"][1]["content"], "hi");
        let job = Job {
            api: Api::Completions,
            stream: false,
            ..job
        };
        assert_eq!(job.body("m")["prompt"], "sys\n\nhi");
        assert!(job.body("m").get("stream").is_none());
    }
}
