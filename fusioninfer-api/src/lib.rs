//! The FusionInfer API: the `InferenceService` custom resource (group `fusioninfer.io`, version
//! `v1alpha1`) and typed models of the third-party objects FusionInfer emits that `k8s-openapi`
//! does not ship (LeaderWorkerSet, Volcano PodGroup, InferencePool).
//!
//! This crate only describes data. Validation, planning and status aggregation live in
//! `fusioninfer-core`; the generated CRD (with embedded-type descriptions stripped so that it
//! installs with a client-side `kubectl apply`) comes from [`crd::inference_service_crd`].
#![deny(missing_docs)]

pub mod crd;
pub mod epp_config;
pub mod inference_pool;
pub mod inference_service;
pub mod labels;
pub mod lws;
pub mod volcano;

pub use inference_service::*;
