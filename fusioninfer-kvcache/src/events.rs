//! KV-cache events as vLLM's `ZmqEventPublisher` sends them: the types, and the msgpack and
//! frame codec the simulator publishes with and the endpoint picker decodes with.
//!
//! One ZMQ message per engine step that produced events, three frames: the topic (UTF-8,
//! sent even when empty), the sequence number (8 bytes, big-endian, from 0, +1 per message)
//! and the payload, a msgpack `KVEventBatch` array `[ts: float64, events, data_parallel_rank]`.
//! Every event is a msgpack **map** tagged with `"type"`; field order and the always-present
//! nullable fields follow vLLM 0.32 (see the fixture `kv-events.bin`).

use std::time::{SystemTime, UNIX_EPOCH};

use rmpv::Value;

/// Storage medium reported in events (vLLM reports `"GPU"` even on the CPU backend).
pub const MEDIUM_GPU: &str = "GPU";

/// One KV-cache event.
#[derive(Debug, Clone, PartialEq)]
pub enum KvEvent {
    /// Full blocks were written to the prefix cache.
    BlockStored(BlockStored),
    /// Cached blocks were evicted.
    BlockRemoved(BlockRemoved),
    /// The whole prefix cache was reset.
    AllBlocksCleared,
    /// An event type this version does not know (newer engines add some); carried so that a
    /// batch still decodes, and ignored by consumers.
    Unknown(String),
}

/// `BlockStored`: consecutive full blocks of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockStored {
    /// Published (64-bit) hashes, one per block.
    pub block_hashes: Vec<u64>,
    /// Hash of the block before the first one, `None` for a request's first block.
    pub parent_block_hash: Option<u64>,
    /// The token ids of all blocks (`block_size` per block).
    pub token_ids: Vec<u32>,
    /// Tokens per block.
    pub block_size: u32,
    /// Integer id of the LoRA adapter, if any.
    pub lora_id: Option<u64>,
    /// Storage medium (`"GPU"`).
    pub medium: Option<String>,
    /// Name of the LoRA adapter, if any.
    pub lora_name: Option<String>,
    /// Extra hash keys per block (`None` when the block has none; the LoRA name otherwise).
    pub extra_keys: Vec<Option<Vec<String>>>,
    /// KV-cache group index.
    pub group_idx: u32,
    /// Kind of KV-cache spec (`"full_attention"`).
    pub kv_cache_spec_kind: String,
}

/// `BlockRemoved`: cached blocks were evicted.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRemoved {
    /// Published hashes of the evicted blocks.
    pub block_hashes: Vec<u64>,
    /// Storage medium (`"GPU"`).
    pub medium: Option<String>,
    /// KV-cache group index.
    pub group_idx: u32,
}

/// A `KVEventBatch`: the payload of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEventBatch {
    /// Unix time in seconds when the batch was made.
    pub ts: f64,
    /// The events, in engine order.
    pub events: Vec<KvEvent>,
    /// Data-parallel rank (`0`; omitted only when `None`).
    pub data_parallel_rank: Option<i64>,
}

/// Errors while decoding a KV-event message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The msgpack bytes did not parse.
    #[error("msgpack: {0}")]
    Msgpack(#[from] rmpv::decode::Error),
    /// The value did not have the expected shape.
    #[error("unexpected shape: {0}")]
    Shape(String),
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn opt_str(v: &Option<String>) -> Value {
    v.as_deref().map_or(Value::Nil, Value::from)
}

impl BlockStored {
    /// Full blocks of a request without LoRA, announced like vLLM does on one GPU
    /// (`medium` `"GPU"`, one `None` extra key per block, group 0, full attention).
    pub fn new(
        block_hashes: Vec<u64>,
        parent_block_hash: Option<u64>,
        token_ids: Vec<u32>,
        block_size: u32,
    ) -> Self {
        BlockStored {
            extra_keys: vec![None; block_hashes.len()],
            block_hashes,
            parent_block_hash,
            token_ids,
            block_size,
            lora_id: None,
            medium: Some(MEDIUM_GPU.into()),
            lora_name: None,
            group_idx: 0,
            kv_cache_spec_kind: "full_attention".into(),
        }
    }
}

impl KvEvent {
    /// The msgpack value of the event (a map tagged with `type`).
    pub fn to_value(&self) -> Value {
        let map = match self {
            KvEvent::BlockStored(e) => vec![
                (s("type"), s("BlockStored")),
                (
                    s("block_hashes"),
                    Value::Array(e.block_hashes.iter().map(|&h| Value::from(h)).collect()),
                ),
                (
                    s("parent_block_hash"),
                    e.parent_block_hash.map_or(Value::Nil, Value::from),
                ),
                (
                    s("token_ids"),
                    Value::Array(e.token_ids.iter().map(|&t| Value::from(t)).collect()),
                ),
                (s("block_size"), Value::from(e.block_size)),
                (s("lora_id"), e.lora_id.map_or(Value::Nil, Value::from)),
                (s("medium"), opt_str(&e.medium)),
                (s("lora_name"), opt_str(&e.lora_name)),
                (
                    s("extra_keys"),
                    Value::Array(
                        e.extra_keys
                            .iter()
                            .map(|k| match k {
                                None => Value::Nil,
                                Some(keys) => Value::Array(keys.iter().map(|k| s(k)).collect()),
                            })
                            .collect(),
                    ),
                ),
                (s("group_idx"), Value::from(e.group_idx)),
                (s("kv_cache_spec_kind"), s(&e.kv_cache_spec_kind)),
            ],
            KvEvent::BlockRemoved(e) => vec![
                (s("type"), s("BlockRemoved")),
                (
                    s("block_hashes"),
                    Value::Array(e.block_hashes.iter().map(|&h| Value::from(h)).collect()),
                ),
                (s("medium"), opt_str(&e.medium)),
                (s("group_idx"), Value::from(e.group_idx)),
            ],
            KvEvent::AllBlocksCleared => vec![(s("type"), s("AllBlocksCleared"))],
            KvEvent::Unknown(ty) => vec![(s("type"), s(ty))],
        };
        Value::Map(map)
    }

    /// Reads an event from its msgpack value.
    pub fn from_value(v: &Value) -> Result<Self, DecodeError> {
        let map = v
            .as_map()
            .ok_or_else(|| DecodeError::Shape("event is not a map".into()))?;
        let get = |key: &str| {
            map.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        };
        let ty = get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| DecodeError::Shape("event without type".into()))?;
        let u64s = |key: &str| -> Result<Vec<u64>, DecodeError> {
            get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| DecodeError::Shape(format!("{key} is not an array")))?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .ok_or_else(|| DecodeError::Shape(format!("{key} holds a non-u64")))
                })
                .collect()
        };
        let opt_string = |key: &str| get(key).and_then(Value::as_str).map(str::to_owned);
        let group_idx = get("group_idx").and_then(Value::as_u64).unwrap_or(0) as u32;
        match ty {
            "BlockStored" => Ok(KvEvent::BlockStored(BlockStored {
                block_hashes: u64s("block_hashes")?,
                parent_block_hash: match get("parent_block_hash") {
                    None | Some(Value::Nil) => None,
                    // A parent that is there but unreadable must not pass for "first block":
                    // the chain of keys would be wrong.
                    Some(v) => Some(v.as_u64().ok_or_else(|| {
                        DecodeError::Shape("parent_block_hash is not a u64".into())
                    })?),
                },
                token_ids: u64s("token_ids")?
                    .into_iter()
                    .map(|t| {
                        u32::try_from(t).map_err(|_| {
                            DecodeError::Shape(format!("token id {t} does not fit 32 bits"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                block_size: match get("block_size").and_then(Value::as_u64) {
                    None => 0,
                    Some(size) => u32::try_from(size).map_err(|_| {
                        DecodeError::Shape(format!("block_size {size} does not fit 32 bits"))
                    })?,
                },
                lora_id: get("lora_id").and_then(Value::as_u64),
                medium: opt_string("medium"),
                lora_name: opt_string("lora_name"),
                extra_keys: get("extra_keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|k| {
                                k.as_array().map(|keys| {
                                    keys.iter()
                                        .map(|x| x.as_str().unwrap_or_default().to_owned())
                                        .collect()
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                group_idx,
                kv_cache_spec_kind: opt_string("kv_cache_spec_kind").unwrap_or_default(),
            })),
            "BlockRemoved" => Ok(KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: u64s("block_hashes")?,
                medium: opt_string("medium"),
                group_idx,
            })),
            "AllBlocksCleared" => Ok(KvEvent::AllBlocksCleared),
            other => Ok(KvEvent::Unknown(other.to_owned())),
        }
    }
}

impl KvEventBatch {
    /// A batch stamped with the current time, rank 0.
    pub fn now(events: Vec<KvEvent>) -> Self {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        KvEventBatch {
            ts,
            events,
            data_parallel_rank: Some(0),
        }
    }

    /// The msgpack payload bytes (`[ts, events, data_parallel_rank]`).
    pub fn encode(&self) -> Vec<u8> {
        let mut items = vec![
            Value::F64(self.ts),
            Value::Array(self.events.iter().map(KvEvent::to_value).collect()),
        ];
        if let Some(rank) = self.data_parallel_rank {
            items.push(Value::from(rank));
        }
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &Value::Array(items))
            .expect("writing msgpack to a Vec cannot fail");
        out
    }

    /// Reads a payload.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        let v = rmpv::decode::read_value(&mut bytes)?;
        let arr = v
            .as_array()
            .ok_or_else(|| DecodeError::Shape("batch is not an array".into()))?;
        let ts = arr
            .first()
            .and_then(Value::as_f64)
            .ok_or_else(|| DecodeError::Shape("batch[0] is not a float".into()))?;
        let events = arr
            .get(1)
            .and_then(Value::as_array)
            .ok_or_else(|| DecodeError::Shape("batch[1] is not an array".into()))?
            .iter()
            .map(KvEvent::from_value)
            .collect::<Result<_, _>>()?;
        let data_parallel_rank = arr.get(2).and_then(Value::as_i64);
        Ok(KvEventBatch {
            ts,
            events,
            data_parallel_rank,
        })
    }
}

/// The three frames of one message: topic, big-endian sequence number, payload.
pub fn frames(topic: &str, seq: u64, batch: &KvEventBatch) -> [Vec<u8>; 3] {
    [
        topic.as_bytes().to_vec(),
        seq.to_be_bytes().to_vec(),
        batch.encode(),
    ]
}

/// Reads the three frames of one message back: (topic, seq, batch).
pub fn parse_frames(frames: &[&[u8]]) -> Result<(String, u64, KvEventBatch), DecodeError> {
    let [topic, seq, payload] = frames else {
        return Err(DecodeError::Shape(format!(
            "{} frames instead of 3",
            frames.len()
        )));
    };
    let seq: [u8; 8] = (*seq)
        .try_into()
        .map_err(|_| DecodeError::Shape("seq frame is not 8 bytes".into()))?;
    Ok((
        String::from_utf8_lossy(topic).into_owned(),
        u64::from_be_bytes(seq),
        KvEventBatch::decode(payload)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_event_kinds() {
        let batch = KvEventBatch {
            ts: 1.5,
            events: vec![
                KvEvent::BlockRemoved(BlockRemoved {
                    block_hashes: vec![u64::MAX, 1],
                    medium: Some(MEDIUM_GPU.into()),
                    group_idx: 0,
                }),
                KvEvent::BlockStored(BlockStored {
                    block_hashes: vec![7],
                    parent_block_hash: Some(3),
                    token_ids: vec![1, 300, 70000],
                    block_size: 3,
                    lora_id: Some(1),
                    medium: Some(MEDIUM_GPU.into()),
                    lora_name: Some("a".into()),
                    extra_keys: vec![Some(vec!["a".into()])],
                    group_idx: 0,
                    kv_cache_spec_kind: "full_attention".into(),
                }),
                KvEvent::AllBlocksCleared,
            ],
            data_parallel_rank: Some(0),
        };
        let bytes = batch.encode();
        assert_eq!(bytes[0], 0x93, "fixarray of 3");
        assert_eq!(KvEventBatch::decode(&bytes).unwrap(), batch);
        let f = frames("t", 258, &batch);
        let (topic, seq, back) = parse_frames(&[&f[0], &f[1], &f[2]]).unwrap();
        assert_eq!((topic.as_str(), seq), ("t", 258));
        assert_eq!(back, batch);
    }

    /// A `BlockStored` map with `parent_block_hash` and `token_ids` as given.
    fn block_stored(parent: Value, token: Value) -> Value {
        let s = |text: &str| Value::from(text);
        Value::Map(vec![
            (s("type"), s("BlockStored")),
            (s("block_hashes"), Value::Array(vec![Value::from(5u64)])),
            (s("parent_block_hash"), parent),
            (s("token_ids"), Value::Array(vec![token])),
            (s("block_size"), Value::from(1u64)),
        ])
    }

    #[test]
    fn values_that_do_not_fit_are_errors_not_truncations() {
        let ok = KvEvent::from_value(&block_stored(Value::Nil, Value::from(7u64))).unwrap();
        let KvEvent::BlockStored(ok) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!((ok.parent_block_hash, ok.token_ids), (None, vec![7]));
        let too_big = Value::from(u64::from(u32::MAX) + 1);
        assert!(KvEvent::from_value(&block_stored(Value::Nil, too_big)).is_err());
        // An unreadable parent is not "no parent": the key chain would start over.
        let bad_parent = Value::from("abc");
        assert!(KvEvent::from_value(&block_stored(bad_parent, Value::from(7u64))).is_err());
    }
}
