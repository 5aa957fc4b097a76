//! `fusioninfer-epp` is FusionInfer's endpoint picker (EPP): the service an ext_proc-capable
//! gateway (Envoy, kgateway, Istio, …) asks, for every OpenAI request, which model server
//! should answer it. It speaks the Gateway API Inference Extension endpoint-picker protocol
//! over Envoy's `envoy.service.ext_proc.v3.ExternalProcessor` and leaves every decision to
//! [`fusioninfer_sched`]; this crate is the I/O around it:
//!
//! * [`ext_proc`]: the per-request conversation — buffering the body (`FULL_DUPLEX_STREAMED`
//!   or `BUFFERED`), parsing it ([`openai`]), scheduling, answering with the destination header
//!   and `envoy.lb` metadata, re-chunking the body, rejecting with OpenAI-style errors, and
//!   reading `usage` from answers for load accounting;
//! * [`source`]: where endpoints come from — an InferencePool and its ready pods in
//!   Kubernetes, or a static file (local mode, tests) — applied to the [`endpoints`] store;
//! * [`scrape`]: the metrics refresh loop that keeps each endpoint's vLLM/SGLang metrics fresh
//!   and takes unreachable servers out of the candidates;
//! * [`kv_events`]: subscriptions to the model servers' KV events, feeding the index of
//!   `precise-prefix-cache-scorer` (the prompt is then tokenized with the model's tokenizer);
//! * [`metrics`]: the picker's own Prometheus metrics;
//! * [`server`]: wiring it all to the ext_proc, health and metrics ports; [`options`]: the
//!   command line, including the planner's flags and the `--strategy` shortcut.
//!
//! The binary `fusioninfer-epp` (package `fusioninfer-epp-bin`) parses [`Options`] and runs
//! [`RunningEpp`].
#![deny(missing_docs)]

pub mod endpoints;
pub mod ext_proc;
pub mod kv_events;
pub mod logging;
pub mod metrics;
pub mod openai;
pub mod options;
pub mod scrape;
pub mod server;
pub mod source;

pub use endpoints::{EndpointSpec, EndpointStore, EngineType};
pub use options::{Options, SourceKind};
pub use server::{RunningEpp, StartError};
