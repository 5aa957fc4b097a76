//! The generated CRD schema is structural, as the API server requires of `apiextensions/v1` CRDs.

use serde_json::Value;

/// Problems that make a schema non-structural (see the Kubernetes docs on structural schemas).
fn structural_problems(schema: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        return;
    };
    let flag = |key: &str| node.get(key) == Some(&Value::Bool(true));
    if node.contains_key("$ref") {
        out.push(format!("{path}: $ref is not allowed"));
    }
    if in_junctor {
        for key in [
            "description",
            "type",
            "default",
            "additionalProperties",
            "nullable",
        ] {
            if node.contains_key(key) {
                out.push(format!("{path}: {key} inside allOf/anyOf/oneOf/not"));
            }
        }
    } else if !node.contains_key("type")
        && !flag("x-kubernetes-int-or-string")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        out.push(format!("{path}: no type"));
    }
    if node.contains_key("properties")
        && node
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
    {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    for (key, value) in node {
        match key.as_str() {
            "properties" => {
                for (name, child) in value.as_object().into_iter().flatten() {
                    structural_problems(child, &format!("{path}.{name}"), in_junctor, out);
                }
            }
            "items" | "additionalProperties" => {
                structural_problems(value, &format!("{path}[{key}]"), in_junctor, out)
            }
            "allOf" | "anyOf" | "oneOf" => {
                for (i, child) in value.as_array().into_iter().flatten().enumerate() {
                    structural_problems(child, &format!("{path}.{key}[{i}]"), true, out);
                }
            }
            "not" => structural_problems(value, &format!("{path}.not"), true, out),
            _ => {}
        }
    }
}

fn crd_schema() -> Value {
    let crd = serde_json::to_value(fusioninfer_api::crd::inference_service_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn generated_crd_schema_is_structural() {
    let schema = crd_schema();
    let mut problems = Vec::new();
    structural_problems(&schema, "", false, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    // Only name/generateName restrictions are allowed on the root metadata.
    if let Some(metadata) = schema["properties"].get("metadata") {
        assert_eq!(
            metadata,
            &serde_json::json!({"type": "object"}),
            "metadata must not be restricted"
        );
    }
}

#[test]
fn structural_check_bites() {
    let mut problems = Vec::new();
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"properties": {}},
            "b": {"type": "string", "anyOf": [{"type": "string"}]},
            "c": {"$ref": "#/x"}
        }
    });
    structural_problems(&bad, "", false, &mut problems);
    assert_eq!(problems.len(), 4, "{problems:#?}");
}
