//! The FusionInfer operator: a Kubernetes controller that makes the cluster match the plan of
//! every `InferenceService` and reports what it observes in the service's status.
//!
//! The decisions live in `fusioninfer-core` (validation, planning, "does this object need a
//! write?", "which children must go?", status aggregation); this crate only does the I/O around
//! them, in the style of kube-rs' `controller-rs`:
//!
//! - [`controller`]: the reconcile function (a function of observed state, never of what
//!   happened before), its typed [`Error`], the error policy with per-object exponential backoff,
//!   and the kube-runtime `Controller` that owns every planned kind and watches the pods;
//! - [`apply`]: server-side apply under one field manager, only for objects whose planned fields
//!   differ from the live ones (so an unchanged spec makes no writes) and never over an object
//!   the service does not control (a name conflict), label-selected pruning, and the status write
//!   through the status subresource;
//! - [`kinds`] and [`discovery`]: which kinds the operator manages and which optional CRDs
//!   (LeaderWorkerSet, Volcano, Gateway API Inference Extension, Gateway API) the cluster serves;
//! - [`lease`]: leader election on a `coordination.k8s.io` Lease with optimistic concurrency;
//! - [`metrics`] and [`server`]: Prometheus metrics, `/healthz`, `/readyz`;
//! - [`run`]: the whole process, from discovery to graceful shutdown.
#![deny(missing_docs)]

pub mod apply;
pub mod controller;
pub mod discovery;
pub mod error;
pub mod kinds;
pub mod lease;
pub mod metrics;
pub mod run;
pub mod server;

pub use controller::{Context, error_policy, reconcile};
pub use error::Error;

/// The field manager of every server-side apply the operator makes: one manager, so Kubernetes
/// attributes all planned fields to the operator and removes fields it stops planning.
pub const FIELD_MANAGER: &str = "fusioninfer-operator";

/// The controller name in Events (`reportingController`) and logs.
pub const CONTROLLER_NAME: &str = "fusioninfer-operator";
