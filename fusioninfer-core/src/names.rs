//! Names of the objects derived from an `InferenceService`, and the Kubernetes limits they must
//! respect. Every derived name comes from here, so validation checks exactly what the planner
//! emits.

use fusioninfer_api::{InferenceService, Role};

/// Longest DNS-1035 label (Service names, label values).
pub const DNS1035_LABEL_MAX: usize = 63;

/// Longest role name: the CRD's `maxLength` for `spec.roles[].name` (the shortest service name,
/// one character and a dash, leaves 50 of a StatefulSet's 52).
pub const ROLE_NAME_MAX: usize = 50;

/// Longest StatefulSet name whose pods can be created: the controller adds the label
/// `controller-revision-hash: {name}-{hash}` (hash ≤ 10 characters), a label value ≤ 63.
pub const STATEFULSET_NAME_MAX: usize = DNS1035_LABEL_MAX - 11;

/// Name of the StatefulSet or LeaderWorkerSet (and headless Service) of a serving role, and of
/// the endpoint-picker objects of a router role: `{service}-{role}`.
pub fn role_object_name(service: &str, role: &str) -> String {
    format!("{service}-{role}")
}

/// Name of the per-service objects: the Volcano PodGroup, the InferencePool and the HTTPRoute.
pub fn service_object_name(service: &str) -> String {
    service.to_owned()
}

/// The longest name Kubernetes will derive from this role's workload, with the limit it must
/// respect. LeaderWorkerSet creates one worker StatefulSet per group, named `{lws}-{index}`,
/// so the largest group index counts.
pub fn longest_derived_name(service: &str, role: &Role) -> (String, usize) {
    let base = role_object_name(service, &role.name);
    match role.component_type {
        fusioninfer_api::ComponentType::Router => (base, DNS1035_LABEL_MAX),
        _ if role.is_multinode() => {
            let last_group = role.replicas.max(1) - 1;
            (format!("{base}-{last_group}"), STATEFULSET_NAME_MAX)
        }
        _ => (base, STATEFULSET_NAME_MAX),
    }
}

/// The service's name, or `""` when the object has none yet.
pub fn service_name(isvc: &InferenceService) -> &str {
    isvc.metadata.name.as_deref().unwrap_or("")
}
