//! Spec builders shared by the validation and planner tests.
#![allow(dead_code)]

use fusioninfer_api::InferenceService;
use fusioninfer_core::validate::ValidationError;
use serde_json::{Value, json};

/// Default service name of the builders.
pub const SVC: &str = "llm";

/// A pod template with one container `vllm`.
pub fn template() -> Value {
    json!({"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.32.0"}]}})
}

/// A serving role of `kind` (`worker`, `prefiller`, `decoder`) with one container.
pub fn serving(name: &str, kind: &str) -> Value {
    json!({"name": name, "componentType": kind, "template": template()})
}

/// A worker role.
pub fn worker(name: &str) -> Value {
    serving(name, "worker")
}

/// A prefiller role.
pub fn prefiller(name: &str) -> Value {
    serving(name, "prefiller")
}

/// A decoder role.
pub fn decoder(name: &str) -> Value {
    serving(name, "decoder")
}

/// A router role without template.
pub fn router(name: &str) -> Value {
    json!({"name": name, "componentType": "router"})
}

/// `role` with `extra`'s keys set (a shallow merge).
pub fn with(mut role: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("object") {
        role[k] = v.clone();
    }
    role
}

/// An InferenceService named [`SVC`] in namespace `default` with these roles.
pub fn service(roles: Vec<Value>) -> InferenceService {
    named_service(SVC, json!({"roles": roles}))
}

/// An InferenceService named `name` (no namespace, no uid) with this spec.
pub fn named_service(name: &str, spec: Value) -> InferenceService {
    serde_json::from_value(json!({
        "apiVersion": "fusioninfer.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("test spec fits the API types")
}

/// The errors' fields, in order.
pub fn fields(errors: &[ValidationError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}
