//! Reading `InferenceService` manifests and writing object streams, as YAML.

use fusioninfer_api::InferenceService;
use kube::Resource;
use serde_json::Value;

/// A manifest that is not an `InferenceService`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// A document is not an InferenceService, or a field does not fit the API.
    #[error("document {document}: {field}: {message}")]
    Field {
        /// 1-based position of the document in the stream.
        document: usize,
        /// Path of the offending field, e.g. `spec.roles[0].componentType`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The stream holds no document.
    #[error("no InferenceService found")]
    Empty,
}

/// Parses every `InferenceService` in a YAML (or JSON) stream; empty documents are skipped.
pub fn parse_inference_services(text: &str) -> Result<Vec<InferenceService>, ManifestError> {
    let documents: Vec<Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let services = documents
        .into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(index, document)| {
            inference_service_from_value(document).map_err(|e| e.in_document(index + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if services.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok(services)
}

/// Converts one parsed document, naming the field that does not fit.
pub fn inference_service_from_value(document: Value) -> Result<InferenceService, ManifestError> {
    let field_error = |field: &str, message: String| ManifestError::Field {
        document: 1,
        field: field.into(),
        message,
    };
    let expected_version = InferenceService::api_version(&());
    let expected_kind = InferenceService::kind(&());
    match document.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == expected_version => {}
        other => {
            return Err(field_error(
                "apiVersion",
                format!("{other:?} must be {expected_version:?}"),
            ));
        }
    }
    match document.get("kind").and_then(Value::as_str) {
        Some(k) if k == expected_kind => {}
        other => {
            return Err(field_error(
                "kind",
                format!("{other:?} must be {expected_kind:?}"),
            ));
        }
    }
    serde_path_to_error::deserialize(document).map_err(|e| {
        let field = e.path().to_string();
        field_error(&field, e.into_inner().to_string())
    })
}

impl ManifestError {
    fn in_document(self, index: usize) -> Self {
        match self {
            ManifestError::Field { field, message, .. } => ManifestError::Field {
                document: index,
                field,
                message,
            },
            other => other,
        }
    }
}

/// Writes objects as a YAML stream (`---` between documents), the way `helm template` does.
pub fn to_yaml_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|object| serde_saphyr::to_string(object).expect("JSON values serialize to YAML"))
        .map(|doc| format!("---\n{doc}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_that_does_not_fit() {
        let text = "apiVersion: fusioninfer.io/v1alpha1\nkind: InferenceService\nmetadata: {name: a}\nspec:\n  roles:\n  - name: w\n    componentType: workerz\n";
        let err = parse_inference_services(text).unwrap_err();
        let ManifestError::Field {
            document,
            field,
            message,
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            (document, field.as_str()),
            (1, "spec.roles[0].componentType")
        );
        assert!(message.contains("workerz"), "{message}");
    }

    #[test]
    fn rejects_other_kinds_and_empty_streams() {
        let err = parse_inference_services("apiVersion: v1\nkind: Pod\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::Field { ref field, .. } if field == "apiVersion"),
            "{err}"
        );
        assert_eq!(
            parse_inference_services("---\n").unwrap_err(),
            ManifestError::Empty
        );
        assert!(matches!(
            parse_inference_services("a: [").unwrap_err(),
            ManifestError::Yaml(_)
        ));
    }

    #[test]
    fn yaml_stream_round_trips() {
        let objects = vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"b": "x\ny\n"}),
        ];
        let text = to_yaml_stream(&objects);
        let back: Vec<Value> = serde_saphyr::from_str_multiple(&text).unwrap();
        assert_eq!(back, objects);
    }
}
