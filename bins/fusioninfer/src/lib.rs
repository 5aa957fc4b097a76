//! The library behind the `fusioninfer` command-line tool.
//!
//! * [`local`]: local mode, `fusioninfer up -f FILE` — an `InferenceService` realised on this
//!   machine as model-server processes (simulators by default), the endpoint picker and Envoy,
//!   supervised until Ctrl-C;
//! * [`load`]: the load generator behind `make demo` and `make bench` (binary
//!   `fusioninfer-load`): scripted shared-prefix OpenAI workloads, per-request outcomes read from
//!   the answers, and the summaries both print.
//!
//! `render`, `validate` and `crd` are thin wrappers over `fusioninfer-core` and live in the
//! binary itself.
#![deny(missing_docs)]

pub mod load;
pub mod local;
