//! The `InferenceService` CustomResourceDefinition as installed by `deploy/`.
//!
//! The derived CRD embeds the full `PodTemplateSpec` schema so the API server validates pod
//! templates. Its upstream descriptions alone would push the object past the 256 KiB that a
//! client-side `kubectl apply` can store in its last-applied annotation, so descriptions of the
//! embedded Kubernetes types are removed; FusionInfer's own descriptions are kept.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::InferenceService;

/// The CRD with descriptions of embedded Kubernetes types stripped.
pub fn inference_service_crd() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(InferenceService::crd()).expect("a CRD serializes to JSON");
    if let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            for embedded in [
                "/schema/openAPIV3Schema/properties/spec/properties/roles/items/properties/template",
                "/schema/openAPIV3Schema/properties/status/properties/conditions/items",
            ] {
                if let Some(schema) = version.pointer_mut(embedded) {
                    strip_descriptions(schema);
                }
            }
        }
    }
    serde_json::from_value(crd).expect("stripping descriptions keeps a valid CRD")
}

/// Removes `description` keywords from a schema and its subschemas, leaving properties that
/// happen to be named `description` alone.
fn strip_descriptions(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    object.remove("description");
    for (keyword, value) in object.iter_mut() {
        match keyword.as_str() {
            "properties" | "patternProperties" => {
                if let Some(props) = value.as_object_mut() {
                    props.values_mut().for_each(strip_descriptions);
                }
            }
            "allOf" | "anyOf" | "oneOf" => {
                if let Some(list) = value.as_array_mut() {
                    list.iter_mut().for_each(strip_descriptions);
                }
            }
            "items" | "additionalProperties" | "not" => strip_descriptions(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_keeps_properties_named_description() {
        let mut schema = serde_json::json!({
            "description": "drop me",
            "properties": {"description": {"type": "string", "description": "drop me too"}},
            "items": {"description": "x", "type": "string"}
        });
        strip_descriptions(&mut schema);
        assert_eq!(
            schema,
            serde_json::json!({
                "properties": {"description": {"type": "string"}},
                "items": {"type": "string"}
            })
        );
    }
}
