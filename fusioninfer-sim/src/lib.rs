//! `fusioninfer-sim`: a model-server simulator that behaves like vLLM wherever a router can see
//! it, so FusionInfer's tests, local demo and routing benchmarks can run many "model servers"
//! on one small CPU machine.
//!
//! What is simulated, and checked against real vLLM 0.32 output (`shared/fixtures`):
//!
//! * the OpenAI surface ([`server`], [`openai`], [`errors`]): chat and text completions, JSON
//!   and SSE, `/v1/models`, `/tokenize`, LoRA load/unload, with vLLM's keys, types, SSE framing
//!   and error bodies;
//! * tokenization ([`tokenize`]): the model's `tokenizer.json` and chat template, or a
//!   documented deterministic fallback;
//! * the engine ([`engine`]): `max-num-seqs` running requests, a FIFO waiting queue (429 when
//!   full), LoRA slots, and a KV cache of fixed-size blocks with prefix caching ([`prefix_cache`])
//!   whose chained block hashes equal vLLM's ([`block_hash`]);
//! * timing ([`config::LatencyConfig`]): TTFT from uncached prompt tokens, inter-token latency,
//!   slowdown with the batch size, KV-transfer cost for disaggregated decode, all scaled by a
//!   time-scale factor and reported in model time;
//! * what routers read: `/metrics` with vLLM's `vllm:` families ([`metrics`]) and KV events on a
//!   ZMQ PUB socket with vLLM's framing ([`kv_events`]);
//! * prefill/decode disaggregation: NIXL-style `kv_transfer_params`;
//! * fault injection: failing a share of requests, extra delay, `/metrics` down or hanging.
//!
//! The binary `fusioninfer-sim` (package `fusioninfer-sim-bin`) parses flags and calls
//! [`server::start_replicas`].
#![deny(missing_docs)]

pub mod block_hash;
pub mod config;
pub mod engine;
pub mod errors;
pub mod kv_events;
pub mod metrics;
pub mod openai;
pub mod prefix_cache;
pub mod server;
pub use fusioninfer_kvcache::tokenize;

pub use config::{FaultConfig, KvEventsConfig, LatencyConfig, LoraSpec, MetricsFault, SimConfig};
pub use server::{Replica, SimServer, StartError, router, start_replicas};
pub use tokenize::ModelTokenizer;
