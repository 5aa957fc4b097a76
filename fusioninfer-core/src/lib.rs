//! FusionInfer's pure core: validation of an `InferenceService`, the topology planner that turns
//! it into Kubernetes objects, and the aggregation of observed child objects into its status.
//!
//! No I/O happens here, so any controller, CLI or test can embed it:
//!
//! ```
//! use fusioninfer_core::plan::{plan, PlanOptions};
//!
//! let isvc: fusioninfer_api::InferenceService = serde_saphyr::from_str(r#"
//! apiVersion: fusioninfer.io/v1alpha1
//! kind: InferenceService
//! metadata: {name: qwen, namespace: default}
//! spec:
//!   roles:
//!   - name: worker
//!     componentType: worker
//!     template:
//!       spec:
//!         containers: [{name: vllm, image: vllm/vllm-openai:v0.11.0}]
//! "#).unwrap();
//! let objects = plan(&isvc, &PlanOptions::default()).unwrap();
//! let kinds: Vec<_> = objects.iter().map(|o| o.kind()).collect();
//! assert_eq!(kinds, ["StatefulSet", "Service"]);
//! ```
#![deny(missing_docs)]

pub mod labels;
pub mod manifest;
pub mod names;
pub mod plan;
pub mod quantity;
pub mod reconcile;
pub mod status;
pub mod strategy;
pub mod validate;
