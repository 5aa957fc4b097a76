//! `fusioninfer-pd` is the decode side of FusionInfer's prefill/decode disaggregation: a proxy
//! that sits on a decode pod's serving port in front of the engine and runs vLLM's NIXL
//! two-step hand-off when the endpoint picker names a prefiller in `x-prefiller-host-port`
//! (send the prompt to the prefiller for one token, take its `kv_transfer_params`, let the
//! local engine decode with them). It is a library so that other gateways can embed it; the
//! binary `fusioninfer-pd-sidecar` (package `fusioninfer-pd-sidecar`) parses [`Options`] and
//! runs [`RunningSidecar`].
//!
//! * [`rewrite`]: the request and answer rewriting (pure);
//! * [`proxy`]: the per-request logic, fallbacks and refusals;
//! * [`allowlist`]: which prefill targets may be called (a fixed list, or the InferencePool's
//!   prefill pods through the endpoint picker's own pool mapping), so the sidecar is no open
//!   proxy;
//! * [`metrics`]: Prometheus metrics; [`server`]: flags and the two servers.
#![deny(missing_docs)]

pub mod allowlist;
pub mod metrics;
pub mod proxy;
pub mod rewrite;
pub mod server;

pub use allowlist::Allowlist;
pub use proxy::{Proxy, ProxySettings};
pub use server::{Options, RunningSidecar, StartError};
