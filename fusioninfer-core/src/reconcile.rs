//! The pure decisions of a reconcile: which desired objects need writing, which existing children
//! must go, which CustomResourceDefinitions a plan needs (and the status when one is missing),
//! and how long to wait after a failure. The operator only does the I/O.

use std::collections::BTreeSet;
use std::time::Duration;

use fusioninfer_api::{InferenceService, InferenceServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use serde_json::Value;

use crate::plan::DesiredObject;
use crate::status::{CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY};

/// Reason of the conditions of a service whose plan needs a CustomResourceDefinition that is not
/// installed: nothing is applied for it until the CRD is installed.
pub const REASON_MISSING_CRD: &str = "MissingCRD";

/// First retry delay after a failed reconcile.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay after repeated failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

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

/// A JSON merge patch (RFC 7386) that turns `previous` into `next`: `next`'s content, with `null`
/// for every key that `previous` has and `next` lacks, at any depth of nested objects (arrays are
/// replaced whole, as merge patch does). The operator writes the status this way so that a
/// removed role's component entry disappears instead of lingering.
pub fn merge_patch(previous: &Value, next: &Value) -> Value {
    match (previous, next) {
        (Value::Object(previous), Value::Object(next)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in next {
                let value = match previous.get(key) {
                    Some(old) => merge_patch(old, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), value);
            }
            for key in previous.keys() {
                if !next.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => next.clone(),
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

/// Whether `meta` carries a controller owner reference to the object with this `uid`: only such
/// objects are pruned, so children of a deleted-and-recreated service of the same name, or objects
/// someone else labelled like ours, are never touched.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// How long to wait before retrying a service whose reconcile failed `failures` times in a row
/// (1 for the first failure): [`BACKOFF_BASE`] doubled per further failure, capped at
/// [`BACKOFF_MAX`]. Conflicts and API hiccups usually clear within a second; an API server that
/// stays down is not hammered.
pub fn requeue_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_MAX)
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

impl RequiredCrd {
    /// API group of the kind (the CRD name after the plural).
    pub fn group(&self) -> &'static str {
        self.name.split_once('.').map_or("", |(_, group)| group)
    }

    /// Resource (plural) name of the kind (the CRD name up to the first dot).
    pub fn plural(&self) -> &'static str {
        self.name
            .split_once('.')
            .map_or(self.name, |(plural, _)| plural)
    }
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

/// The optional CRDs `desired` needs that `installed` says are absent, in [`OPTIONAL_CRDS`] order.
pub fn missing_crds(
    desired: &[DesiredObject],
    installed: impl Fn(&RequiredCrd) -> bool,
) -> Vec<&'static RequiredCrd> {
    required_crds(desired)
        .into_iter()
        .filter(|crd| !installed(crd))
        .collect()
}

/// The status of a service whose plan needs CRDs that are not installed: `Ready=False`,
/// `Progressing=False` and `Degraded=True`, reason [`REASON_MISSING_CRD`], the message naming each
/// CRD, the kind that needs it and what installs it. Like an invalid spec, nothing was applied,
/// so components and summary stay as previously observed; `observedGeneration` moves on.
pub fn missing_crd_status(
    isvc: &InferenceService,
    missing: &[&RequiredCrd],
    now: Time,
) -> InferenceServiceStatus {
    let previous = isvc.status.clone().unwrap_or_default();
    let generation = isvc.metadata.generation;
    let needs: Vec<String> = missing
        .iter()
        .map(|crd| format!("{} for {} ({})", crd.name, crd.kind, crd.install_hint))
        .collect();
    let message = format!(
        "CustomResourceDefinition not installed: {}; nothing is applied for this service until \
         it is installed and the operator restarted (it discovers CRDs at start-up)",
        needs.join("; ")
    );
    let conditions = [
        (CONDITION_READY, "False"),
        (CONDITION_PROGRESSING, "False"),
        (CONDITION_DEGRADED, "True"),
    ]
    .into_iter()
    .map(|(type_, status)| {
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: REASON_MISSING_CRD.to_owned(),
            message: message.clone(),
            observed_generation: generation,
            last_transition_time,
        }
    })
    .collect();
    InferenceServiceStatus {
        observed_generation: generation,
        conditions,
        components: previous.components,
        summary: previous.summary,
    }
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
    fn merge_patch_nulls_removed_keys_and_replaces_arrays() {
        let previous = json!({"components": {"a": {"x": 1}, "b": {"x": 2}}, "summary": "s",
                              "conditions": [{"type": "Ready"}, {"type": "Degraded"}]});
        let next = json!({"components": {"a": {"x": 3}}, "conditions": [{"type": "Ready"}]});
        let patch = merge_patch(&previous, &next);
        assert_eq!(
            patch,
            json!({"components": {"a": {"x": 3}, "b": null}, "summary": null,
                   "conditions": [{"type": "Ready"}]})
        );
        // Applying the patch (RFC 7386) gives `next`.
        fn apply(target: &mut Value, patch: &Value) {
            match (target.as_object_mut(), patch.as_object()) {
                (Some(target), Some(patch)) => {
                    for (k, v) in patch {
                        if v.is_null() {
                            target.remove(k);
                        } else {
                            apply(target.entry(k.clone()).or_insert(Value::Null), v);
                        }
                    }
                }
                _ => *target = patch.clone(),
            }
        }
        let mut applied = previous.clone();
        apply(&mut applied, &patch);
        assert_eq!(applied, next);
        assert_eq!(merge_patch(&Value::Null, &next), next);
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

    fn multinode_service() -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "fusioninfer.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "s", "namespace": "ns", "generation": 3},
            "spec": {"roles": [
                {"name": "w", "componentType": "worker", "multinode": {"nodeCount": 2},
                 "template": {"spec": {"containers": [{"name": "c"}]}}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn controlled_by_needs_a_controller_reference_with_the_uid() {
        let meta = |controller, uid: &str| ObjectMeta {
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    uid: uid.into(),
                    controller,
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        assert!(is_controlled_by(&meta(Some(true), "u1"), "u1"));
        assert!(!is_controlled_by(&meta(Some(true), "u2"), "u1"));
        assert!(!is_controlled_by(&meta(None, "u1"), "u1"));
        assert!(!is_controlled_by(&ObjectMeta::default(), "u1"));
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        assert_eq!(requeue_backoff(0), BACKOFF_BASE);
        assert_eq!(requeue_backoff(1), BACKOFF_BASE);
        assert_eq!(requeue_backoff(2), BACKOFF_BASE * 2);
        assert_eq!(requeue_backoff(4), BACKOFF_BASE * 8);
        assert_eq!(requeue_backoff(20), BACKOFF_MAX);
        assert_eq!(requeue_backoff(u32::MAX), BACKOFF_MAX);
        let delays: Vec<_> = (1..12).map(requeue_backoff).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn crd_names_split_into_plural_and_group() {
        let lws = &OPTIONAL_CRDS[0];
        assert_eq!(lws.plural(), "leaderworkersets");
        assert_eq!(lws.group(), "leaderworkerset.x-k8s.io");
        for crd in &OPTIONAL_CRDS {
            assert_eq!(format!("{}.{}", crd.plural(), crd.group()), crd.name);
            assert!(crd.api_version.starts_with(&format!("{}/", crd.group())));
        }
    }

    #[test]
    fn missing_crd_status_names_the_crd_and_keeps_transition_times() {
        let mut isvc = multinode_service();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        assert!(missing_crds(&desired, |_| true).is_empty());
        let missing = missing_crds(&desired, |crd| crd.kind != "LeaderWorkerSet");
        assert_eq!(missing, [&OPTIONAL_CRDS[0]]);

        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let status = missing_crd_status(&isvc, &missing, t0.clone());
        assert_eq!(status.observed_generation, Some(3));
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "False")
        );
        assert_eq!(ready.reason, REASON_MISSING_CRD);
        assert!(
            ready
                .message
                .contains("leaderworkersets.leaderworkerset.x-k8s.io"),
            "{}",
            ready.message
        );
        assert!(ready.message.contains("install LeaderWorkerSet"));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );

        // A fixed point: computing again later with this status as the previous one changes
        // nothing, so the operator makes no write.
        isvc.status = Some(status.clone());
        assert_eq!(missing_crd_status(&isvc, &missing, t1), status);
    }
}
