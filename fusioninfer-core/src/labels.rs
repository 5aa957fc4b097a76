//! The labels FusionInfer puts on the objects and pods it creates.

use std::collections::BTreeMap;

use fusioninfer_api::Role;
use fusioninfer_api::labels::{COMPONENT_TYPE, MANAGED_BY, MANAGER, ROLE_NAME, SERVICE, SERVING};

/// Labels of every object belonging to `role` of `service`.
pub fn role_labels(service: &str, role: &Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SERVICE.to_owned(), service.to_owned()),
        (ROLE_NAME.to_owned(), role.name.clone()),
        (
            COMPONENT_TYPE.to_owned(),
            role.component_type.as_str().to_owned(),
        ),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ])
}

/// Labels of the per-service objects (PodGroup, InferencePool, HTTPRoute), which belong to no
/// single role: the router's when there is one.
pub fn service_labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SERVICE.to_owned(), service.to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ])
}

/// Selector matching exactly the serving pods of `service` (StatefulSet pods and LWS leaders).
pub fn serving_selector(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SERVICE.to_owned(), service.to_owned()),
        (SERVING.to_owned(), "true".to_owned()),
    ])
}

/// Selector matching the pods of one role (workload and headless Service selectors).
pub fn role_selector(service: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SERVICE.to_owned(), service.to_owned()),
        (ROLE_NAME.to_owned(), role.to_owned()),
    ])
}
