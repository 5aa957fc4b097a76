//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fusioninfer_sim::kv_events::{KvEventBatch, parse_frames};
use fusioninfer_sim::{ModelTokenizer, SimConfig, SimServer};
use serde_json::Value;
use zeromq::{Socket, SocketRecv};

/// The fixture folder, or `None` (after a loud message) outside CI when shared/ is missing.
pub fn fixtures() -> Option<PathBuf> {
    fusioninfer_tests::shared_dir().map(|d| d.join("fixtures").join("vllm-0.32.0-cpu"))
}

/// A config for tests: loopback, ephemeral port, fast clock.
pub fn test_config() -> SimConfig {
    SimConfig {
        host: "127.0.0.1".into(),
        port: 0,
        time_scale: 0.0,
        ..SimConfig::default()
    }
}

pub async fn start(cfg: SimConfig) -> SimServer {
    SimServer::start(cfg, Arc::new(ModelTokenizer::fallback()))
        .await
        .expect("simulator starts")
}

pub async fn start_with(cfg: SimConfig, tok: Arc<ModelTokenizer>) -> SimServer {
    SimServer::start(cfg, tok).await.expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    fusioninfer_tests::http_client(Duration::from_secs(30))
}

/// POSTs raw bytes as JSON; returns status, headers and body text.
pub async fn post_raw(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let res = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.expect("body"))
}

pub async fn post_json(url: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let (status, headers, text) = post_raw(url, body.to_string()).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}

pub async fn get_text(url: &str) -> (u16, String) {
    let res = client().get(url).send().await.expect("request sent");
    (res.status().as_u16(), res.text().await.expect("body"))
}

pub fn header_f64(h: &reqwest::header::HeaderMap, name: &str) -> f64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("header {name} missing"))
}

/// The `data:` payloads of an SSE body, checking vLLM's framing on the way.
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(!body.contains('\r'), "no CR in SSE");
    assert!(body.ends_with("data: [DONE]\n\n"), "ends with [DONE]");
    let events: Vec<String> = body
        .split_terminator("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event is a single data line: {e:?}"))
                .to_string()
        })
        .collect();
    for e in &events {
        assert!(!e.contains('\n'), "one line per event");
    }
    events
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences in key sets and value types between `ours` and `theirs`, recursively. Arrays
/// are compared element by element against the fixture's first element.
pub fn shape_diff(ours: &Value, theirs: &Value, path: &str, out: &mut Vec<String>) {
    if kind(ours) != kind(theirs) {
        out.push(format!(
            "{path}: {} vs fixture {}",
            kind(ours),
            kind(theirs)
        ));
        return;
    }
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                out.push(format!("{path}.{k}: extra key"));
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing key"));
            }
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    shape_diff(v, w, &format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let Some(first) = b.first() {
                for (i, v) in a.iter().enumerate() {
                    shape_diff(v, first, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

pub fn assert_same_shape(ours: &Value, theirs: &Value, what: &str) {
    let mut diff = Vec::new();
    shape_diff(ours, theirs, "$", &mut diff);
    assert!(
        diff.is_empty(),
        "{what}: shape differs from vLLM: {diff:#?}"
    );
}

/// A SUB socket connected to `endpoint`, subscribed to everything.
pub async fn subscribe(endpoint: &str) -> zeromq::SubSocket {
    let mut sub = zeromq::SubSocket::new();
    sub.connect(endpoint).await.expect("SUB connects");
    sub.subscribe("").await.expect("SUB subscribes");
    sub
}

/// Receives one message (topic, seq, batch), or `None` after `wait`.
pub async fn recv_batch(
    sub: &mut zeromq::SubSocket,
    wait: Duration,
) -> Option<(String, u64, KvEventBatch)> {
    let msg = tokio::time::timeout(wait, sub.recv()).await.ok()?.ok()?;
    let frames: Vec<Vec<u8>> = msg.into_vec().into_iter().map(|b| b.to_vec()).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    Some(parse_frames(&refs).expect("valid KV-event frames"))
}

/// Waits until the subscription is live: resets the (empty) prefix cache, which publishes an
/// `AllBlocksCleared`, until one arrives (bounded: 50 tries). Returns the last seq seen.
pub async fn sync_subscriber(server_url: &str, sub: &mut zeromq::SubSocket) -> u64 {
    for _ in 0..50 {
        let (status, _, _) = post_raw(&format!("{server_url}/reset_prefix_cache"), "").await;
        assert_eq!(status, 200);
        if let Some((_, seq, _)) = recv_batch(sub, Duration::from_millis(100)).await {
            // Drain any further resets that were in flight.
            let mut last = seq;
            while let Some((_, s, _)) = recv_batch(sub, Duration::from_millis(50)).await {
                last = s;
            }
            return last;
        }
    }
    panic!("KV-event subscription never became live");
}

/// Samples named `name` in exposition text: (labels, value).
pub fn samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let metrics = prometheus_exposition_format_rs::parse_complete(text)
        .unwrap_or_else(|e| panic!("metrics parse: {e:?}"));
    metrics
        .into_iter()
        .filter(|m| m.name == name)
        .flat_map(|m| m.samples)
        .map(|s| {
            let mut labels: Vec<(String, String)> = s.labels.into_iter().collect();
            labels.sort();
            (labels, s.value)
        })
        .collect()
}

/// Per metric name starting with `prefix`: the declared type (`None` for names that only have
/// samples, like `_bucket`) and the set of label-name sets of its samples.
pub fn families(
    text: &str,
    prefix: &str,
) -> std::collections::BTreeMap<String, (Option<String>, std::collections::BTreeSet<Vec<String>>)> {
    use prometheus_exposition_format_rs::types::MetricType;
    let metrics = prometheus_exposition_format_rs::parse_complete(text)
        .unwrap_or_else(|e| panic!("metrics parse: {e:?}"));
    let mut out = std::collections::BTreeMap::new();
    for m in metrics.into_iter().filter(|m| m.name.starts_with(prefix)) {
        let ty = match m.data_type {
            MetricType::Untyped => None,
            t => Some(format!("{t:?}")),
        };
        let sets = m
            .samples
            .iter()
            .map(|s| {
                let mut names: Vec<String> = s.labels.keys().cloned().collect();
                names.sort();
                names
            })
            .collect();
        out.insert(m.name, (ty, sets));
    }
    out
}

/// The value of a metric series whose labels include `with`.
pub fn metric(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .find(|(labels, _)| {
            with.iter()
                .all(|(k, v)| labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} with {with:?}"))
}

/// Polls `url/metrics` until `pred` holds (bounded: 200 × 10 ms).
pub async fn wait_metrics(url: &str, pred: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        let (status, text) = get_text(&format!("{url}/metrics")).await;
        if status == 200 && pred(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("metrics condition not reached");
}

/// Asserts two `families` maps are equal, listing only the names that differ.
pub fn assert_same_families(ours: &str, theirs: &str, prefix: &str, what: &str) {
    let a = families(ours, prefix);
    let b = families(theirs, prefix);
    let mut diff = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => diff.push(format!("{k}: not in vLLM's output")),
            Some(w) if w != v => diff.push(format!("{k}: ours {v:?}, vLLM {w:?}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diff.push(format!("{k}: missing"));
    }
    assert!(diff.is_empty(), "{what}: metric families differ: {diff:#?}");
}
