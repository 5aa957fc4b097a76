//! KV-event subscriptions: one task per endpoint connects a ZMQ SUB socket to the endpoint's
//! publisher (vLLM `--kv-events-config`), decodes each message
//! ([`fusioninfer_kvcache::events::parse_frames`]) and applies it to the index of every
//! `precise-prefix-cache-scorer` ([`KvEventFeed`]), which detects sequence gaps and restarts.
//!
//! The publisher address is the endpoint's own (`kvEventsAddress` in the static endpoints
//! file), else, with the Kubernetes source, `tcp://<pod IP>:<socketPort>`. An endpoint without
//! either publishes nothing as far as the picker knows, and is scored approximately.
//!
//! The socket reconnects by itself after a broken connection (zeromq's SUB does); the first
//! connect is retried with a backoff of 100 ms doubling to 5 s. The task stops when the
//! endpoint leaves. Malformed messages are counted and skipped, never fatal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fusioninfer_kvcache::events::parse_frames;
use fusioninfer_sched::kv_index::KvEventFeed;
use zeromq::{Socket, SocketRecv};

use crate::endpoints::{EndpointChanges, EndpointSpec, EndpointTasks};
use crate::metrics::EppMetrics;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the per-endpoint subscriber tasks on the current tokio runtime.
#[derive(Debug)]
pub struct KvEventSubscriber {
    shared: Arc<Shared>,
    tasks: EndpointTasks,
}

#[derive(Debug)]
struct Shared {
    feeds: Vec<KvEventFeed>,
    metrics: Arc<EppMetrics>,
    pod_port: bool,
}

impl KvEventSubscriber {
    /// Subscribes for `feeds` (none: the subscriber does nothing). With `pod_port`, endpoints
    /// without an explicit publisher address are subscribed at their IP and the feed's port.
    pub fn new(feeds: Vec<KvEventFeed>, metrics: Arc<EppMetrics>, pod_port: bool) -> Self {
        KvEventSubscriber {
            shared: Arc::new(Shared {
                feeds,
                metrics,
                pod_port,
            }),
            tasks: EndpointTasks::default(),
        }
    }

    /// Where `spec`'s events are published, if anywhere.
    pub fn publisher_address(&self, spec: &EndpointSpec) -> Option<String> {
        let port = self.shared.feeds.first()?.port;
        spec.kv_events_address.clone().or_else(|| {
            self.shared
                .pod_port
                .then(|| format!("tcp://{}", SocketAddr::new(spec.address.ip(), port)))
        })
    }

    /// Starts subscribing to new endpoints and stops for removed ones.
    pub fn apply(&self, changes: &EndpointChanges) {
        if self.shared.feeds.is_empty() {
            return;
        }
        self.tasks.apply(changes, |spec| {
            let publisher = self.publisher_address(spec)?;
            let shared = Arc::clone(&self.shared);
            Some(tokio::spawn(subscribe_loop(
                shared,
                spec.address,
                publisher,
            )))
        });
    }

    /// Endpoints subscribed to.
    pub fn subscribed(&self) -> usize {
        self.tasks.len()
    }

    /// Stops every subscriber task.
    pub fn stop(&self) {
        self.tasks.stop();
    }
}

async fn connect(publisher: &str, topic: &str) -> Result<zeromq::SubSocket, String> {
    let mut socket = zeromq::SubSocket::new();
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(publisher))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    socket.subscribe(topic).await.map_err(|e| e.to_string())?;
    Ok(socket)
}

async fn subscribe_loop(shared: Arc<Shared>, endpoint: SocketAddr, publisher: String) {
    // One subscription serves every feed; each feed filters topics itself.
    let topic = shared
        .feeds
        .iter()
        .map(|f| f.topic_filter.as_str())
        .reduce(common_prefix)
        .unwrap_or("")
        .to_owned();
    let mut backoff = BACKOFF_START;
    loop {
        let mut socket = match connect(&publisher, &topic).await {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(%endpoint, %publisher, %error, "kv-events connect failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        tracing::info!(%endpoint, %publisher, "subscribed to kv events");
        backoff = BACKOFF_START;
        loop {
            match socket.recv().await {
                Ok(message) => handle(&shared, endpoint, &message.into_vec()),
                Err(error) => {
                    tracing::warn!(%endpoint, %publisher, %error, "kv-events receive failed");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

fn common_prefix<'a>(a: &'a str, b: &'a str) -> &'a str {
    let len = a
        .char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map_or(0, |((i, x), _)| i + x.len_utf8());
    &a[..len]
}

/// Applies one message's frames from `endpoint` to the feeds whose topic filter matches.
fn handle<F: AsRef<[u8]>>(shared: &Shared, endpoint: SocketAddr, frames: &[F]) {
    let frames: Vec<&[u8]> = frames.iter().map(AsRef::as_ref).collect();
    let (topic, seq, batch) = match parse_frames(&frames) {
        Ok(parsed) => parsed,
        Err(error) => {
            tracing::debug!(%endpoint, %error, "malformed kv-events message");
            shared
                .metrics
                .kv_event_message("malformed", 0, index_blocks(shared));
            return;
        }
    };
    for feed in shared
        .feeds
        .iter()
        .filter(|f| topic.starts_with(&f.topic_filter))
    {
        let outcome = feed.index.apply(endpoint, seq, &batch.events);
        let label = if outcome.restart {
            tracing::info!(%endpoint, "kv events restarted at sequence 0: endpoint cache cleared");
            "restart"
        } else if outcome.gap {
            tracing::warn!(%endpoint, seq, "kv-events sequence gap: endpoint index unknown until refilled");
            "gap"
        } else {
            "applied"
        };
        shared
            .metrics
            .kv_event_message(label, outcome.skipped_events, index_blocks(shared));
    }
}

fn index_blocks(shared: &Shared) -> usize {
    shared.feeds.iter().map(|f| f.index.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefixes() {
        assert_eq!(common_prefix("kv@a", "kv@b"), "kv@");
        assert_eq!(common_prefix("", "kv@"), "");
        assert_eq!(common_prefix("kvé", "kvé2"), "kvé");
    }
}
