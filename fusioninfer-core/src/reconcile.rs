//! The pure decisions of a reconcile: which desired objects need writing, which existing children
//! must go, and which CustomResourceDefinitions a plan needs. The operator only does the I/O.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::plan::DesiredObject;

/// Identity of an object in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`, e.g. `StatefulSet`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The key of a planned object.
    pub fn of(object: &DesiredObject) -> ObjectKey {
        ObjectKey {
            api_version: object.api_version(),
            kind: object.kind(),
            name: object.name().to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// Whether server-side applying `desired` would change `live`: false when every field the plan
/// sets already has that value. Fields the API server or other controllers added (defaults,
/// status, annotations of others) do not count, so an unchanged spec makes no writes while a
/// hand edit of a planned field is restored.
pub fn needs_apply(desired: &Value, live: &Value) -> bool {
    !is_subset(desired, live)
}

fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(desired), Value::Object(live)) => desired.iter().all(|(key, value)| {
            live.get(key).is_some_and(|l| is_subset(value, l))
                || (value.is_null() && !live.contains_key(key))
        }),
        (Value::Array(desired), Value::Array(live)) => {
            desired.len() == live.len() && desired.iter().zip(live).all(|(d, l)| is_subset(d, l))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        _ => desired == live,
    }
}

/// Existing children that are not in the plan any more and must be deleted: those `owned` by the
/// service (the caller lists them by the service's labels and checks the controller owner
/// reference) whose key the plan no longer contains.
pub fn to_prune(desired: &[DesiredObject], owned: &[ObjectKey]) -> Vec<ObjectKey> {
    let planned: BTreeSet<ObjectKey> = desired.iter().map(ObjectKey::of).collect();
    owned
        .iter()
        .filter(|key| !planned.contains(key))
        .cloned()
        .collect()
}

/// A CustomResourceDefinition a plan needs, by name, with the kind that needs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequiredCrd {
    /// CRD name, e.g. `leaderworkersets.leaderworkerset.x-k8s.io`.
    pub name: &'static str,
    /// `apiVersion` of the kind.
    pub api_version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// What installs it.
    pub install_hint: &'static str,
}

/// Third-party kinds the planner can emit, with the CRD that serves each.
pub const OPTIONAL_CRDS: [RequiredCrd; 4] = [
    RequiredCrd {
        name: "leaderworkersets.leaderworkerset.x-k8s.io",
        api_version: "leaderworkerset.x-k8s.io/v1",
        kind: "LeaderWorkerSet",
        install_hint: "install LeaderWorkerSet (kubernetes-sigs/lws) for multinode roles",
    },
    RequiredCrd {
        name: "podgroups.scheduling.volcano.sh",
        api_version: "scheduling.volcano.sh/v1beta1",
        kind: "PodGroup",
        install_hint: "install Volcano for schedulerName: volcano",
    },
    RequiredCrd {
        name: "inferencepools.inference.networking.k8s.io",
        api_version: "inference.networking.k8s.io/v1",
        kind: "InferencePool",
        install_hint: "install the Gateway API Inference Extension CRDs for router roles",
    },
    RequiredCrd {
        name: "httproutes.gateway.networking.k8s.io",
        api_version: "gateway.networking.k8s.io/v1",
        kind: "HTTPRoute",
        install_hint: "install the Gateway API CRDs for router roles with httproute",
    },
];

/// The optional CRDs `desired` needs, in [`OPTIONAL_CRDS`] order.
pub fn required_crds(desired: &[DesiredObject]) -> Vec<&'static RequiredCrd> {
    OPTIONAL_CRDS
        .iter()
        .filter(|crd| {
            desired
                .iter()
                .any(|o| o.api_version() == crd.api_version && o.kind() == crd.kind)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unchanged_fields_need_no_apply_even_with_server_additions() {
        let desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let live = json!({
            "metadata": {"resourceVersion": "7", "annotations": {"other": "x"}},
            "spec": {"replicas": 2, "revisionHistoryLimit": 10,
                     "template": {"spec": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}}},
            "status": {"readyReplicas": 1}
        });
        assert!(!needs_apply(&desired, &live));
    }

    #[test]
    fn hand_edits_of_planned_fields_need_apply() {
        let desired = json!({"spec": {"replicas": 2, "args": ["a", "b"]}});
        assert!(needs_apply(
            &desired,
            &json!({"spec": {"replicas": 3, "args": ["a", "b"]}})
        ));
        assert!(needs_apply(
            &desired,
            &json!({"spec": {"replicas": 2, "args": ["a"]}})
        ));
        assert!(needs_apply(&desired, &json!({"spec": {"replicas": 2}})));
        assert!(needs_apply(&desired, &json!({})));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(!needs_apply(&json!({"a": 1}), &json!({"a": 1.0})));
    }

    #[test]
    fn prune_keeps_planned_objects_only() {
        let key = |kind: &str, name: &str| ObjectKey {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
        };
        let owned = [key("StatefulSet", "s-decode"), key("StatefulSet", "s-gone")];
        let isvc: fusioninfer_api::InferenceService = serde_json::from_value(json!({
            "apiVersion": "fusioninfer.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "s"},
            "spec": {"roles": [
                {"name": "decode", "componentType": "decoder", "template": {"spec": {"containers": [{"name": "c"}]}}},
                {"name": "prefill", "componentType": "prefiller", "template": {"spec": {"containers": [{"name": "c"}]}}}
            ]}
        }))
        .unwrap();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        assert_eq!(to_prune(&desired, &owned), [key("StatefulSet", "s-gone")]);
        assert!(required_crds(&desired).is_empty());
    }
}
