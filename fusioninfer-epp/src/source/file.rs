//! The static endpoint source: a YAML (or JSON) file listing endpoints, re-read when its
//! contents change. Local mode writes it; tests use it instead of a cluster.
//!
//! ```yaml
//! endpoints:                       # or the list alone, without this key
//! - address: 127.0.0.1:8001        # ip:port where requests go (IP literal: Envoy dials it)
//!   labels:                        # optional; role filters and the engine type read them
//!     fusioninfer.io/component-type: decoder
//!     llm-d.ai/engine-type: vllm   # vllm (default) or sglang
//!   metricsAddress: 127.0.0.1:9001 # optional; where /metrics is scraped if not `address`
//!   kvEventsAddress: tcp://127.0.0.1:5557 # optional; the KV-event publisher (ZMQ)
//! ```
//!
//! A file that does not parse leaves the previous endpoints in place (and is reported once);
//! until the file has parsed once the picker is not ready.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::endpoints::EndpointSpec;
use crate::source::Discovery;

#[derive(Deserialize)]
#[serde(untagged)]
enum FileShape {
    List(Vec<serde_json::Value>),
    Wrapped { endpoints: Vec<serde_json::Value> },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    metrics_address: Option<String>,
    #[serde(default)]
    kv_events_address: Option<String>,
}

/// Parses an endpoints file (YAML, or JSON which YAML reads too). Errors name the entry.
pub fn parse_endpoints_file(text: &str) -> Result<Vec<EndpointSpec>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let shape: FileShape = serde_saphyr::from_str(text)
        .map_err(|e| format!("expected a list of endpoints or {{endpoints: [...]}}: {e}"))?;
    let entries = match shape {
        FileShape::List(entries) | FileShape::Wrapped { endpoints: entries } => entries,
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let entry: Entry =
                serde_json::from_value(value).map_err(|e| format!("endpoints[{i}]: {e}"))?;
            let address = parse_address(&entry.address)
                .map_err(|e| format!("endpoints[{i}].address: {e}"))?;
            let metrics_address = entry
                .metrics_address
                .as_deref()
                .map(parse_address)
                .transpose()
                .map_err(|e| format!("endpoints[{i}].metricsAddress: {e}"))?;
            let kv_events_address = entry
                .kv_events_address
                .map(|a| parse_zmq_address(&a))
                .transpose()
                .map_err(|e| format!("endpoints[{i}].kvEventsAddress: {e}"))?;
            Ok(EndpointSpec {
                address,
                labels: entry.labels,
                metrics_address,
                kv_events_address,
            })
        })
        .collect()
}

/// A ZMQ address the subscriber can connect to: `tcp://host:port` or `ipc://path`.
fn parse_zmq_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    let valid = match text.split_once("://") {
        Some(("tcp", rest)) => rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
        Some(("ipc", path)) => !path.is_empty(),
        _ => false,
    };
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not tcp://host:port or ipc://path"))
    }
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not ip:port (an IP literal; the gateway connects to it directly)")
    })
}

/// Reads `path` every `interval` and hands changed contents to `discovery`. Runs until the
/// task is dropped.
pub async fn watch(path: PathBuf, interval: Duration, discovery: std::sync::Arc<Discovery>) {
    let mut last: Option<Vec<u8>> = None;
    let mut last_error: Option<String> = None;
    loop {
        match read(&path).await {
            Ok(bytes) if last.as_ref() != Some(&bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                match parse_endpoints_file(&text) {
                    Ok(endpoints) => {
                        tracing::info!(path = %path.display(), endpoints = endpoints.len(), "endpoints file loaded");
                        discovery.update(endpoints);
                        last_error = None;
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "endpoints file rejected; keeping the previous endpoints");
                        last_error = Some(error);
                    }
                }
                last = Some(bytes);
            }
            Ok(_) => {}
            Err(error) => {
                if last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(path = %path.display(), %error, "endpoints file unreadable; keeping the previous endpoints");
                    last_error = Some(error);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, String> {
    tokio::fs::read(path).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_list_and_wrapped_forms() {
        let list = parse_endpoints_file(
            "- address: 127.0.0.1:8001\n  labels: {fusioninfer.io/component-type: decoder}\n- address: '[::1]:8002'\n  metricsAddress: 127.0.0.1:9002\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].address, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(list[0].labels["fusioninfer.io/component-type"], "decoder");
        assert_eq!(list[1].address, "[::1]:8002".parse().unwrap());
        assert_eq!(
            list[1].metrics_address,
            Some("127.0.0.1:9002".parse().unwrap())
        );
        let wrapped = parse_endpoints_file("endpoints:\n- address: 127.0.0.1:8001\n").unwrap();
        assert_eq!(wrapped.len(), 1);
        assert_eq!(parse_endpoints_file("").unwrap(), vec![]);
        assert_eq!(parse_endpoints_file("endpoints: []").unwrap(), vec![]);
    }

    #[test]
    fn kv_events_addresses_are_checked() {
        let list = parse_endpoints_file(
            "- address: 127.0.0.1:8001\n  kvEventsAddress: tcp://127.0.0.1:5557\n",
        )
        .unwrap();
        assert_eq!(
            list[0].kv_events_address.as_deref(),
            Some("tcp://127.0.0.1:5557")
        );
        let error =
            parse_endpoints_file("- address: 127.0.0.1:8001\n  kvEventsAddress: 127.0.0.1:5557\n")
                .unwrap_err();
        assert!(error.contains("endpoints[0].kvEventsAddress"), "{error}");
    }

    #[test]
    fn json_is_read_too() {
        let list = parse_endpoints_file(
            r#"{"endpoints": [{"address": "10.0.0.1:8000", "labels": {"a": "b"}}]}"#,
        )
        .unwrap();
        assert_eq!(list[0].labels["a"], "b");
        let list = parse_endpoints_file(r#"[{"address": "10.0.0.1:8000"}]"#).unwrap();
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn errors_name_the_entry() {
        let error = parse_endpoints_file("- address: localhost:8000\n").unwrap_err();
        assert!(error.contains("endpoints[0].address"), "{error}");
        let error =
            parse_endpoints_file("- address: 127.0.0.1:1\n- adress: 127.0.0.1:2\n").unwrap_err();
        assert!(error.contains("endpoints[1]"), "{error}");
        let error =
            parse_endpoints_file("- address: 127.0.0.1:1\n  metricsAddress: x\n").unwrap_err();
        assert!(error.contains("metricsAddress"), "{error}");
        assert!(parse_endpoints_file("just text").is_err());
    }
}
