//! `fusioninfer-kvcache` holds what a model server and a KV-cache-aware router must agree on
//! byte for byte, so that FusionInfer's simulator and its endpoint picker share one
//! implementation:
//!
//! * [`events`]: vLLM's KV events (`BlockStored`, `BlockRemoved`, `AllBlocksCleared`) and
//!   their ZMQ framing and msgpack codec — the simulator encodes, the endpoint picker decodes;
//! * [`tokenize`]: the model's tokenizer and chat template (or a deterministic fallback), so
//!   the router computes the same token ids for a request as the engine does (feature
//!   `tokenize`, on by default; the codec alone has no heavy dependencies).
#![deny(missing_docs)]

pub mod events;
#[cfg(feature = "tokenize")]
pub mod tokenize;

#[cfg(feature = "tokenize")]
pub use tokenize::ModelTokenizer;
