//! `deploy/`: render the kustomization (its resource list, read here without a kustomize
//! binary) and check every object.

use std::collections::BTreeMap;
use std::process::Command;

use fusioninfer_api::crd::inference_service_crd;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;

const NAMESPACE: &str = "fusioninfer-system";

/// Every object `kubectl apply -k deploy/` would create, in order.
fn render() -> Vec<Value> {
    let root = fusioninfer_tests::workspace_root().join("deploy");
    let text = std::fs::read_to_string(root.join("kustomization.yaml")).unwrap();
    let kustomization: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(kustomization["kind"], "Kustomization");
    for unsupported in [
        "patches",
        "namespace",
        "namePrefix",
        "images",
        "components",
        "bases",
    ] {
        assert!(
            kustomization.get(unsupported).is_none(),
            "this renderer reads resources only; {unsupported} would change the output"
        );
    }
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|path| {
            let path = path.as_str().expect("a file path");
            let text = std::fs::read_to_string(root.join(path))
                .unwrap_or_else(|e| panic!("deploy/{path}: {e}"));
            serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
                .unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> T {
    let object = objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn kustomization_renders_the_expected_objects() {
    let objects = render();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment"
        ]
    );
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    let mut names = BTreeMap::new();
    for object in &objects {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().expect("a name");
        assert!(
            names.insert((kind, name), ()).is_none(),
            "duplicate {kind} {name}"
        );
        let namespace = object["metadata"].get("namespace").and_then(Value::as_str);
        if cluster_scoped.contains(&kind) {
            assert_eq!(namespace, None, "{kind} {name} is cluster-scoped");
        } else {
            assert_eq!(namespace, Some(NAMESPACE), "{kind} {name}");
        }
    }
    let namespace: Namespace = typed(&objects, "Namespace");
    assert_eq!(namespace.metadata.name.as_deref(), Some(NAMESPACE));
}

#[test]
fn crd_is_the_generated_one() {
    let objects = render();
    let crd = objects
        .iter()
        .find(|o| o["kind"] == "CustomResourceDefinition")
        .unwrap();
    assert_eq!(crd, &serde_json::to_value(inference_service_crd()).unwrap());
}

#[test]
fn bindings_tie_the_roles_to_the_service_account() {
    let objects = render();
    let account: ServiceAccount = typed(&objects, "ServiceAccount");
    let account_name = account.metadata.name.unwrap();
    let cluster_role: ClusterRole = typed(&objects, "ClusterRole");
    let role: Role = typed(&objects, "Role");
    let cluster_binding: ClusterRoleBinding = typed(&objects, "ClusterRoleBinding");
    let binding: RoleBinding = typed(&objects, "RoleBinding");
    assert_eq!(cluster_binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&cluster_binding.role_ref.name),
        cluster_role.metadata.name.as_ref()
    );
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    for subjects in [cluster_binding.subjects, binding.subjects] {
        let subjects = subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, account_name);
        assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    }
    // The lease Role only covers leases.
    for rule in role.rules.unwrap() {
        assert_eq!(rule.api_groups.unwrap(), ["coordination.k8s.io"]);
        assert_eq!(rule.resources.unwrap(), ["leases"]);
    }
}

#[test]
fn operator_deployment_is_locked_down_and_probed() {
    let objects = render();
    let deployment: Deployment = typed(&objects, "Deployment");
    let account: ServiceAccount = typed(&objects, "ServiceAccount");
    let spec = deployment.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name, account.metadata.name);
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid != 0));
    assert_eq!(
        pod_security.seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    let [container] = pod.containers.as_slice() else {
        panic!("one container")
    };
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.privileged, None);
    assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert!(
        container.volume_mounts.is_none(),
        "nothing writable is needed"
    );

    let image = container.image.as_deref().unwrap();
    assert_eq!(
        image,
        format!(
            "ghcr.io/fusioninfer/fusioninfer-operator:v{}",
            env!("CARGO_PKG_VERSION")
        )
    );

    // Probes hit the endpoints the binary serves, on the port it binds.
    let args = container.args.clone().unwrap();
    let bind = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-bind-address="))
        .expect("bind address flag");
    let port: i32 = bind.rsplit(':').next().unwrap().parse().unwrap();
    let ports = container.ports.clone().unwrap();
    let named = ports
        .iter()
        .find(|p| p.container_port == port)
        .expect("declared port");
    for (probe, path) in [
        (container.liveness_probe.clone(), "/healthz"),
        (container.readiness_probe.clone(), "/readyz"),
    ] {
        let get = probe.expect("probe").http_get.expect("httpGet");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                named.name.clone().unwrap()
            )
        );
    }
    let env: Vec<_> = container.env.clone().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e.name == name).expect(name);
        let from = var.value_from.clone().unwrap().field_ref.unwrap();
        assert_eq!(from.field_path, field);
    }
    // Graceful shutdown lets a reconcile finish (default timeout 60 s) before SIGKILL.
    assert!(pod.termination_grace_period_seconds.unwrap() > 60);

    // Every flag the Deployment passes exists in the binary.
    let help = Command::new(env!("CARGO_BIN_EXE_fusioninfer-operator"))
        .arg("--help")
        .output()
        .expect("run the operator binary");
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in &args {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "{flag} is not a flag of the binary:\n{help}"
        );
    }
}

#[test]
fn dockerfiles_build_their_binary_as_non_root() {
    let bins = fusioninfer_tests::workspace_root().join("bins");
    let mut with_dockerfile = Vec::new();
    for entry in std::fs::read_dir(&bins).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(dockerfile) = std::fs::read_to_string(dir.join("Dockerfile")) else {
            continue;
        };
        let manifest: toml_like::Package = toml_like::package(&dir.join("Cargo.toml"));
        let package = manifest.name;
        assert!(
            dockerfile.contains(&format!("cargo build --release --locked -p {package}")),
            "{}: builds -p {package}",
            dir.display()
        );
        assert!(
            dockerfile.contains("USER 65532:65532"),
            "{}: non-root",
            dir.display()
        );
        assert!(
            dockerfile.contains(":nonroot"),
            "{}: distroless nonroot",
            dir.display()
        );
        with_dockerfile.push(package);
    }
    with_dockerfile.sort();
    for required in ["fusioninfer", "fusioninfer-operator"] {
        assert!(
            with_dockerfile.iter().any(|p| p == required),
            "{required} has a Dockerfile"
        );
    }
}

/// Just enough of Cargo.toml: the package name.
mod toml_like {
    pub struct Package {
        pub name: String,
    }

    pub fn package(path: &std::path::Path) -> Package {
        let text = std::fs::read_to_string(path).unwrap();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .expect("package name")
            .trim_matches('"')
            .to_owned();
        Package { name }
    }
}
