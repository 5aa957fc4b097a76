//! `InferencePool` (inference.networking.k8s.io/v1): the set of model-server pods an endpoint
//! picker chooses from, and the reference to that picker.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Spec of an InferencePool.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "inference.networking.k8s.io",
    version = "v1",
    kind = "InferencePool",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// Pods in the pool.
    pub selector: LabelSelector,
    /// Ports the model servers listen on (1–8).
    pub target_ports: Vec<Port>,
    /// `http` (default) or `kubernetes.io/h2c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The endpoint picker service.
    pub endpoint_picker_ref: EndpointPickerRef,
}

/// Only `matchLabels` is allowed by the upstream schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels every pool pod carries.
    pub match_labels: BTreeMap<String, String>,
}

/// A port number.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Port {
    /// Port number.
    pub number: i32,
}

/// Reference to the endpoint picker's Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerRef {
    /// API group; `""` for a core Service.
    pub group: String,
    /// `Service`.
    pub kind: String,
    /// Service name.
    pub name: String,
    /// Service port of the ext_proc gRPC server.
    pub port: Port,
    /// `FailOpen` or `FailClose`: what the gateway does when the picker is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<String>,
}
