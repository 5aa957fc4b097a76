//! The kinds the operator applies, prunes and watches, with the CRD each optional one needs.
//! One table: the controller owns exactly these kinds (those installed), and the prune step
//! lists exactly these, so a kind cannot be applied without also being cleaned up.

use std::collections::BTreeSet;

use fusioninfer_core::reconcile::{OPTIONAL_CRDS, RequiredCrd};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::discovery::ApiResource;

/// One kind the planner can emit.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedKind {
    /// Group, version, kind and plural of the kind.
    pub resource: ApiResource,
    /// The CRD that serves it, for kinds not built into Kubernetes.
    pub crd: Option<&'static RequiredCrd>,
}

impl ManagedKind {
    /// `Kind` for messages.
    pub fn kind(&self) -> &str {
        &self.resource.kind
    }
}

/// Every kind the planner can emit: the built-in ones, then one per entry of
/// [`OPTIONAL_CRDS`].
pub fn managed_kinds() -> Vec<ManagedKind> {
    let builtin = |resource: ApiResource| ManagedKind {
        resource,
        crd: None,
    };
    let mut kinds = vec![
        builtin(ApiResource::erase::<StatefulSet>(&())),
        builtin(ApiResource::erase::<Service>(&())),
        builtin(ApiResource::erase::<ServiceAccount>(&())),
        builtin(ApiResource::erase::<Role>(&())),
        builtin(ApiResource::erase::<RoleBinding>(&())),
        builtin(ApiResource::erase::<ConfigMap>(&())),
        builtin(ApiResource::erase::<Deployment>(&())),
    ];
    kinds.extend(OPTIONAL_CRDS.iter().map(|crd| {
        let (group, version) = crd
            .api_version
            .split_once('/')
            .unwrap_or(("", crd.api_version));
        ManagedKind {
            resource: ApiResource {
                group: group.to_owned(),
                version: version.to_owned(),
                api_version: crd.api_version.to_owned(),
                kind: crd.kind.to_owned(),
                plural: crd.plural().to_owned(),
            },
            crd: Some(crd),
        }
    }));
    kinds
}

/// The optional CRDs the cluster serves, as found by [`crate::discovery::discover_crds`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstalledCrds {
    names: BTreeSet<&'static str>,
}

impl InstalledCrds {
    /// Every optional CRD installed.
    pub fn all() -> InstalledCrds {
        InstalledCrds {
            names: OPTIONAL_CRDS.iter().map(|crd| crd.name).collect(),
        }
    }

    /// Every optional CRD installed except those named.
    pub fn all_except(missing: &[&str]) -> InstalledCrds {
        InstalledCrds {
            names: OPTIONAL_CRDS
                .iter()
                .map(|crd| crd.name)
                .filter(|name| !missing.contains(name))
                .collect(),
        }
    }

    /// Records that `crd` is installed.
    pub fn insert(&mut self, crd: &'static RequiredCrd) {
        self.names.insert(crd.name);
    }

    /// Whether `crd` is installed.
    pub fn contains(&self, crd: &RequiredCrd) -> bool {
        self.names.contains(crd.name)
    }

    /// Whether the cluster serves `kind` (built-in kinds always).
    pub fn serves(&self, kind: &ManagedKind) -> bool {
        kind.crd.is_none_or(|crd| self.contains(crd))
    }

    /// Names of the installed optional CRDs.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.names.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusioninfer_api::inference_pool::InferencePool;
    use fusioninfer_api::lws::LeaderWorkerSet;
    use fusioninfer_api::volcano::PodGroup;
    use gateway_api::apis::standard::httproutes::HttpRoute;

    #[test]
    fn optional_kinds_match_their_rust_types() {
        let kinds = managed_kinds();
        for expected in [
            ApiResource::erase::<LeaderWorkerSet>(&()),
            ApiResource::erase::<PodGroup>(&()),
            ApiResource::erase::<InferencePool>(&()),
            ApiResource::erase::<HttpRoute>(&()),
        ] {
            let kind = kinds
                .iter()
                .find(|k| k.resource.kind == expected.kind)
                .expect("listed");
            assert_eq!(kind.resource, expected);
            assert!(kind.crd.is_some());
        }
        assert_eq!(kinds.len(), 11);
    }

    #[test]
    fn installed_set_decides_what_is_served() {
        let kinds = managed_kinds();
        let none = InstalledCrds::default();
        assert_eq!(kinds.iter().filter(|k| none.serves(k)).count(), 7);
        assert!(kinds.iter().all(|k| InstalledCrds::all().serves(k)));
        let without_lws = InstalledCrds::all_except(&[OPTIONAL_CRDS[0].name]);
        assert_eq!(kinds.iter().filter(|k| without_lws.serves(k)).count(), 10);
    }
}
