//! The simulator's KV-event publisher: a ZMQ PUB socket sending batches with vLLM's framing
//! (the codec is [`fusioninfer_kvcache::events`], re-exported here).

use bytes::Bytes;
use tokio::sync::mpsc;

pub use fusioninfer_kvcache::events::*;

/// How the PUB socket attaches to its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// Always bind (the simulator's default, so tests can subscribe to it).
    #[default]
    Bind,
    /// Always connect (to a subscriber that binds, as llm-d's indexer does).
    Connect,
    /// vLLM's rule: bind `tcp://*:…` and `ipc://…`, connect anything else.
    Auto,
}

/// Sends event batches to the publisher task; cheap to clone.
#[derive(Clone, Debug)]
pub struct KvEventSink {
    tx: mpsc::UnboundedSender<Vec<KvEvent>>,
}

impl KvEventSink {
    /// Queues one batch (one message); empty batches are dropped, as vLLM sends nothing then.
    pub fn publish(&self, events: Vec<KvEvent>) {
        if !events.is_empty() {
            let _ = self.tx.send(events);
        }
    }

    /// A sink whose batches are received by the caller instead of a socket (tests, in-process
    /// consumers).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Vec<KvEvent>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (KvEventSink { tx }, rx)
    }
}

/// A running ZMQ PUB publisher.
#[derive(Debug)]
pub struct KvEventPublisher {
    /// Where batches go.
    pub sink: KvEventSink,
    /// The endpoint actually bound or connected (port resolved when binding port 0).
    pub endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl KvEventPublisher {
    /// Opens the PUB socket on `endpoint` and starts the task that numbers and sends batches.
    pub async fn start(
        endpoint: &str,
        topic: String,
        mode: EndpointMode,
    ) -> Result<Self, zeromq::ZmqError> {
        use zeromq::{Socket, SocketSend};
        let mut socket = zeromq::PubSocket::new();
        let bind = match mode {
            EndpointMode::Bind => true,
            EndpointMode::Connect => false,
            EndpointMode::Auto => endpoint.starts_with("tcp://*") || endpoint.starts_with("ipc://"),
        };
        let resolved = if bind {
            // zeromq spells "all interfaces" as 0.0.0.0.
            let ep = endpoint.replacen("tcp://*:", "tcp://0.0.0.0:", 1);
            socket.bind(&ep).await?.to_string()
        } else {
            socket.connect(endpoint).await?;
            endpoint.to_owned()
        };
        let (sink, mut rx) = KvEventSink::channel();
        let task = tokio::spawn(async move {
            let mut seq: u64 = 0;
            while let Some(events) = rx.recv().await {
                let batch = KvEventBatch::now(events);
                let msg: Vec<Bytes> = frames(&topic, seq, &batch)
                    .into_iter()
                    .map(Bytes::from)
                    .collect();
                seq += 1;
                let Ok(msg) = zeromq::ZmqMessage::try_from(msg) else {
                    continue;
                };
                if let Err(e) = socket.send(msg).await {
                    tracing::warn!("kv-events publish failed: {e}");
                }
            }
        });
        Ok(KvEventPublisher {
            sink,
            endpoint: resolved,
            task,
        })
    }
}

impl Drop for KvEventPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
