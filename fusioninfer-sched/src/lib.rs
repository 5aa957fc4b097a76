//! `fusioninfer-sched` decides which model server an LLM inference request goes to. It is the
//! brain of FusionInfer's endpoint picker as a pure library that other platforms can embed:
//! given a parsed [`Request`], a snapshot of candidate [`Endpoint`]s with their model-server
//! metrics, and the time, [`Scheduler::schedule`] returns a [`Decision`] — a primary endpoint
//! with ordered fallbacks and headers to add, or a rejection that maps to HTTP 429 (every
//! candidate saturated) or 503 (no endpoint). No I/O, no async runtime, no hidden clock:
//! time is passed in and randomness is seeded, so decisions are reproducible.
//!
//! The scheduler is configured with an `EndpointPickerConfig` in the Gateway API Inference
//! Extension format (also with llm-d's API group), see
//! [`fusioninfer_api::epp_config::EndpointPickerConfig`]. Plugins are looked up by type name in
//! a [`Registry`]; the built-ins ([`plugins`]) carry GAIE and llm-d names and parameters so
//! their configs load. [`metrics`] turns a vLLM or SGLang `/metrics` page into
//! [`EndpointMetrics`]. [`kv_index`] is the block index that `precise-prefix-cache-scorer`
//! reads and the router feeds with the engines' KV events.
//!
//! # Writing and registering a custom scorer
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use fusioninfer_api::epp_config::EndpointPickerConfig;
//! use fusioninfer_sched::{
//!     CycleState, Endpoint, EndpointMetrics, Plugin, PluginError, Registry, Request, Scheduler, Scorer,
//! };
//!
//! /// Prefers endpoints carrying a label, e.g. a faster GPU type.
//! struct PreferLabel {
//!     key: String,
//!     value: String,
//! }
//!
//! impl Plugin for PreferLabel {
//!     fn as_scorer(&self) -> Option<&dyn Scorer> {
//!         Some(self)
//!     }
//! }
//!
//! impl Scorer for PreferLabel {
//!     fn score(&self, _request: &Request, _cycle: &mut CycleState, candidates: &[&Endpoint]) -> Vec<f64> {
//!         candidates
//!             .iter()
//!             .map(|e| if e.label(&self.key) == Some(self.value.as_str()) { 1.0 } else { 0.0 })
//!             .collect()
//!     }
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Parameters {
//!     key: String,
//!     value: String,
//! }
//!
//! let mut registry = Registry::with_builtins();
//! registry.register("prefer-label-scorer", |context| {
//!     let p: Parameters = context.parameters()?;
//!     if p.key.is_empty() {
//!         return Err(PluginError::bad_parameter("key", "must not be empty"));
//!     }
//!     Ok(Arc::new(PreferLabel { key: p.key, value: p.value }))
//! });
//!
//! let config = EndpointPickerConfig::parse(r#"
//! apiVersion: inference.networking.x-k8s.io/v1alpha1
//! kind: EndpointPickerConfig
//! plugins:
//! - name: gpu
//!   type: prefer-label-scorer
//!   parameters: {key: gpu, value: h100}
//! - type: queue-scorer
//! schedulingProfiles:
//! - name: default
//!   plugins:
//!   - {pluginRef: gpu, weight: 2}
//!   - pluginRef: queue-scorer
//! "#).expect("valid config");
//! let scheduler = Scheduler::builder(&config).registry(&registry).seed(7).build().expect("plugins build");
//!
//! let now = Instant::now();
//! let idle = EndpointMetrics::default();
//! let endpoints = [
//!     Endpoint::new("10.0.0.1:8000".parse().unwrap()).with_label("gpu", "a10").with_metrics(idle.clone(), now),
//!     Endpoint::new("10.0.0.2:8000".parse().unwrap()).with_label("gpu", "h100").with_metrics(idle, now),
//! ];
//! let decision = scheduler.schedule(&Request::completion("llama", "Hello"), &endpoints, now);
//! assert_eq!(decision.routed().unwrap().primary, endpoints[1].address);
//! ```
#![deny(missing_docs)]

pub mod decision;
mod duration;
pub mod endpoint;
pub mod error;
pub mod framework;
pub mod kv_index;
pub mod metrics;
pub mod plugins;
pub mod registry;
pub mod request;
pub mod saturation;
mod scheduler;

pub use decision::{
    Decision, ProfileRunResult, RejectReason, Rejection, Routed, SchedulingResult, Target,
};
pub use endpoint::{Endpoint, EndpointMetrics, LoraMetrics};
pub use error::{ConfigError, PluginError};
pub use framework::{
    CycleState, Filter, PdDecider, Picker, Plugin, PostDecision, PostResponse, ProfileHandler,
    ProfileResults, ResponseInfo, ScoredEndpoint, Scorer,
};
pub use registry::{PluginContext, PluginFactory, Registry};
pub use request::{ApiKind, ChatMessage, Prompt, Request};
pub use saturation::SaturationDetector;
pub use scheduler::{Scheduler, SchedulerBuilder};
