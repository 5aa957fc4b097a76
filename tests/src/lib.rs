//! Test support shared by FusionInfer's cross-crate tests: where the shared data lives, the
//! example specs, and checks of emitted objects against the upstream CRD schemas in
//! `../shared/crds` (OpenAPI structure, unknown fields, and their CEL rules).
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fusioninfer_api::InferenceService;
use serde_json::Value;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The shared data folder: `$FUSIONINFER_SHARED`, else `../shared` beside the checkout.
/// Outside CI a missing folder returns `None` after a loud message (the caller skips);
/// under `CI=true` it panics, because CI must run every test.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FUSIONINFER_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared"));
    if dir.is_dir() {
        return Some(dir);
    }
    let message = format!(
        "shared data folder {} is missing (set FUSIONINFER_SHARED)",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}: under CI=true this is a failure");
    }
    eprintln!("\n!!!!!!!! SKIPPING: {message} !!!!!!!!\n");
    None
}

/// Every example spec under `examples/` (not `examples/invalid/`), by file stem, sorted.
pub fn examples() -> Vec<(String, InferenceService)> {
    let dir = workspace_root().join("examples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable example");
            let stem = path
                .file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            fusioninfer_core::manifest::parse_inference_services(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .into_iter()
                .map(move |isvc| (stem.clone(), isvc))
        })
        .collect()
}

/// A compiled upstream schema.
struct UpstreamSchema {
    raw: Value,
    json_schema: jsonschema::Validator,
    cel: kube_cel::CompiledSchema,
}

/// The `openAPIV3Schema` of every CRD in `shared/crds`, keyed by (apiVersion, kind).
pub struct UpstreamSchemas {
    by_kind: BTreeMap<(String, String), UpstreamSchema>,
}

impl UpstreamSchemas {
    /// Loads and compiles the schemas once per test binary.
    pub fn get(shared: &Path) -> &'static UpstreamSchemas {
        static SCHEMAS: OnceLock<UpstreamSchemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| UpstreamSchemas::load(&shared.join("crds")))
    }

    fn load(dir: &Path) -> UpstreamSchemas {
        let mut by_kind = BTreeMap::new();
        for entry in std::fs::read_dir(dir).expect("crds/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let crd: Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("readable CRD"))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let group = crd["spec"]["group"].as_str().expect("group");
            let kind = crd["spec"]["names"]["kind"].as_str().expect("kind");
            for version in crd["spec"]["versions"].as_array().expect("versions") {
                let raw = version["schema"]["openAPIV3Schema"].clone();
                let json_schema = jsonschema::draft4::options()
                    .should_validate_formats(false)
                    .build(&raw)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let cel = kube_cel::compile_schema(&raw);
                let api_version = format!(
                    "{group}/{}",
                    version["name"].as_str().expect("version name")
                );
                by_kind.insert(
                    (api_version, kind.to_owned()),
                    UpstreamSchema {
                        raw,
                        json_schema,
                        cel,
                    },
                );
            }
        }
        UpstreamSchemas { by_kind }
    }

    /// Whether an upstream CRD describes this apiVersion and kind.
    pub fn covers(&self, api_version: &str, kind: &str) -> bool {
        self.by_kind
            .contains_key(&(api_version.to_owned(), kind.to_owned()))
    }

    /// Everything the API server would reject in `object` (empty when it would accept it):
    /// OpenAPI violations, fields the schema does not know (a strict `kubectl apply` rejects
    /// them), and failing CEL rules. Kinds without an upstream CRD are an error.
    pub fn check(&self, object: &Value) -> Vec<String> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let Some(schema) = self.by_kind.get(&(api_version.to_owned(), kind.to_owned())) else {
            return vec![format!("no upstream CRD for {api_version} {kind}")];
        };
        let mut problems: Vec<String> = schema
            .json_schema
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        unknown_fields(&schema.raw, object, "", &mut problems);
        if let Err(errors) = kube_cel::Validator::new().validate_compiled(&schema.cel, object, None)
        {
            problems.extend(errors.iter().map(|e| format!("CEL {e} (rule {})", e.rule)));
        }
        problems
    }
}

/// Our own CRD's schema, compiled once per test binary.
struct OurCrd {
    schema: Value,
    json_schema: jsonschema::Validator,
    cel: kube_cel::CompiledSchema,
}

fn our_crd() -> &'static OurCrd {
    static CRD: OnceLock<OurCrd> = OnceLock::new();
    CRD.get_or_init(|| {
        let crd = serde_json::to_value(fusioninfer_api::crd::inference_service_crd())
            .expect("the CRD serializes");
        let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        let json_schema = jsonschema::draft4::options()
            .should_validate_formats(false)
            .build(&schema)
            .expect("our CRD schema compiles");
        let cel = kube_cel::compile_schema(&schema);
        OurCrd {
            schema,
            json_schema,
            cel,
        }
    })
}

/// What the API server would say about an `InferenceService` (as JSON) from our CRD alone:
/// OpenAPI violations, unknown fields, and the messages of failing CEL rules. Empty when it
/// would accept the object.
pub fn api_server_verdict(object: &Value) -> Vec<String> {
    let crd = our_crd();
    let mut problems: Vec<String> = crd
        .json_schema
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    unknown_fields(&crd.schema, object, "", &mut problems);
    if let Err(errors) = kube_cel::Validator::new().validate_compiled(&crd.cel, object, None) {
        problems.extend(errors.iter().map(|e| e.message.clone()));
    }
    problems
}

/// Fields of `value` that `schema` does not declare, where it does not preserve unknown fields.
pub fn unknown_fields(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            // The root of a CRD schema and embedded resources implicitly carry these.
            let embedded = path.is_empty()
                || schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    unknown_fields(child_schema, child, &child_path, problems);
                } else if let Some(additional) = additional {
                    unknown_fields(additional, child, &child_path, problems);
                } else if properties.is_some()
                    && !(embedded && ["apiVersion", "kind", "metadata"].contains(&key.as_str()))
                {
                    problems.push(format!("{child_path}: unknown field"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
        }
        _ => {}
    }
}

/// Round-trips a built-in object through its typed `k8s-openapi` struct: any field the type does
/// not know, or any value of the wrong shape, shows up as a difference or an error.
pub fn check_builtin(object: &Value) -> Vec<String> {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
        object: &Value,
    ) -> Vec<String> {
        match serde_json::from_value::<T>(object.clone()) {
            Err(e) => vec![format!("does not fit the typed struct: {e}")],
            Ok(typed) => {
                let back = serde_json::to_value(&typed).expect("serializes");
                if &back == object {
                    vec![]
                } else {
                    vec![format!(
                        "changes in a typed round trip:\n{back:#}\nvs\n{object:#}"
                    )]
                }
            }
        }
    }
    match (
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    ) {
        ("apps/v1", "StatefulSet") => round_trip::<apps::StatefulSet>(object),
        ("apps/v1", "Deployment") => round_trip::<apps::Deployment>(object),
        ("v1", "Service") => round_trip::<core::Service>(object),
        ("v1", "ServiceAccount") => round_trip::<core::ServiceAccount>(object),
        ("v1", "ConfigMap") => round_trip::<core::ConfigMap>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<rbac::RoleBinding>(object),
        (api_version, kind) => vec![format!("{api_version} {kind} is not a known built-in kind")],
    }
}

/// Checks one emitted object: against its upstream CRD when there is one, else as a built-in.
pub fn check_emitted(schemas: &UpstreamSchemas, object: &Value) -> Vec<String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if schemas.covers(api_version, kind) {
        schemas.check(object)
    } else {
        check_builtin(object)
    }
}

/// Compares `actual` with the checked-in file at `path` (relative to the workspace root), or
/// rewrites the file when `UPDATE_GOLDEN=1`. Panics with the first differing line.
pub fn assert_golden(path: &str, actual: &str) {
    let full = workspace_root().join(path);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(full.parent().expect("parent")).expect("create golden dir");
        std::fs::write(&full, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("{path}: {e}; run `UPDATE_GOLDEN=1 cargo test` to create it"));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{path} differs from the generated output at line {}:\n  file:      {:?}\n  generated: {:?}\nrun `UPDATE_GOLDEN=1 cargo test` if the change is intended",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

/// An HTTP client for tests that talk to servers on loopback.
///
/// In a whole-workspace build, feature unification gives reqwest `rustls-no-provider` (from a
/// dev-dependency's jsonschema) while both the `ring` and `aws-lc-rs` rustls back ends are
/// compiled in, so rustls cannot choose a crypto provider by itself and reqwest panics when a
/// client is built. Installing `ring` (the workspace's choice) first makes it deterministic.
pub fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("an HTTP client builds")
}
