//! The pure decisions of a reconcile: which desired objects need writing, which existing children
//! must go, which existing objects a plan must not take over (and the status when it would),
//! which CustomResourceDefinitions a plan needs (and the status when one is missing), and how long
//! to wait after a failure. The operator only does the I/O.

use std::collections::BTreeSet;
use std::time::Duration;

use fusioninfer_api::labels::{ROLE_NAME, SERVICE};
use fusioninfer_api::{InferenceService, InferenceServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use serde_json::Value;

use crate::plan::DesiredObject;
use crate::status::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, Observed, aggregate_status,
};

/// Reason of the conditions of a service whose plan needs a CustomResourceDefinition that is not
/// installed: nothing is applied for it until the CRD is installed.
pub const REASON_MISSING_CRD: &str = "MissingCRD";

/// Reason of the conditions of a service some of whose planned objects already exist and are not
/// controlled by it (another service derived the same name, or a user created the object): those
/// objects are left alone until someone renames or removes one side.
pub const REASON_NAME_CONFLICT: &str = "NameConflict";

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

/// The controller of an existing object, from its controller owner reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    /// `apiVersion` of the controller, e.g. `fusioninfer.io/v1alpha1`.
    pub api_version: String,
    /// Its `kind`, e.g. `InferenceService`.
    pub kind: String,
    /// Its name (in the object's namespace).
    pub name: String,
    /// Its uid.
    pub uid: String,
}

impl Controller {
    /// Whether the controller is an InferenceService (of any API version).
    pub fn is_inference_service(&self) -> bool {
        self.kind == InferenceService::kind(&())
            && self.api_version.split_once('/').map(|(group, _)| group)
                == Some(&*InferenceService::group(&()))
    }
}

/// A planned object whose name is taken by an existing object that the service does not control.
/// The operator never writes such an object: server-side apply with `force` would take it over
/// (rewrite its labels and owner references) and the two owners would then fight over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameConflict {
    /// The planned object (and so the existing one: same kind, namespace and name).
    pub object: ObjectKey,
    /// The service that planned it.
    pub service: String,
    /// The role the object belongs to, `None` for the per-service objects (PodGroup,
    /// InferencePool, HTTPRoute), named after the service alone.
    pub role: Option<String>,
    /// The existing object's controller, `None` when it has no controller owner reference.
    pub owner: Option<Controller>,
}

impl NameConflict {
    /// Whether the existing object is left over from an earlier InferenceService of the same
    /// name: one that was deleted (the current one has another uid) and whose dependents the
    /// garbage collector has not removed yet.
    pub fn left_by_earlier_service(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|owner| owner.is_inference_service() && owner.name == self.service)
    }

    /// What the user can do about it.
    fn remedy(&self) -> String {
        if self.left_by_earlier_service() {
            return "the garbage collector removes it, then this service creates its own; if it \
                    stays, delete it"
                .to_owned();
        }
        let ours = match &self.role {
            Some(role) => format!(
                "rename role \"{role}\" or InferenceService {} (the name is <service>-<role>)",
                self.service
            ),
            None => format!(
                "rename InferenceService {} (the name is the service's)",
                self.service
            ),
        };
        match &self.owner {
            // Deleting another service's object would only make that service recreate it.
            Some(owner) if owner.is_inference_service() => {
                format!(
                    "{ours}, or rename InferenceService {} or its role",
                    owner.name
                )
            }
            _ => format!("{ours}, or delete the existing object if nothing needs it"),
        }
    }
}

impl std::fmt::Display for NameConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} already exists and ", self.object)?;
        match &self.owner {
            None => write!(
                f,
                "was not created by FusionInfer (it has no controller owner reference)"
            )?,
            Some(owner) if self.left_by_earlier_service() => write!(
                f,
                "belongs to an earlier, deleted InferenceService {} (uid {})",
                owner.name, owner.uid
            )?,
            Some(owner) if owner.is_inference_service() => write!(
                f,
                "belongs to {} {} (uid {})",
                owner.kind, owner.name, owner.uid
            )?,
            Some(owner) => write!(
                f,
                "is controlled by {} {} (uid {}), not created by FusionInfer",
                owner.kind, owner.name, owner.uid
            )?,
        }
        write!(f, ": {}", self.remedy())
    }
}

/// Whether writing `planned` would take over `existing` (the live object of the same kind,
/// namespace and name), which the service with `uid` does not control: `None` when `existing`
/// carries this service's controller owner reference, whatever its labels (labels removed by hand
/// are restored by the apply), otherwise the conflict to report instead of writing.
pub fn name_conflict(
    planned: &DesiredObject,
    existing: &ObjectMeta,
    uid: &str,
) -> Option<NameConflict> {
    if is_controlled_by(existing, uid) {
        return None;
    }
    let labels = planned.metadata().labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
    let owner = existing
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| Controller {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        });
    Some(NameConflict {
        object: ObjectKey::of(planned),
        service: label(SERVICE).unwrap_or_default(),
        role: label(ROLE_NAME),
        owner,
    })
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
    let conditions = blocked_conditions(
        &previous.conditions,
        generation,
        REASON_MISSING_CRD,
        &message,
        &now,
    );
    InferenceServiceStatus {
        observed_generation: generation,
        conditions,
        components: previous.components,
        summary: previous.summary,
    }
}

/// The status of a service some of whose planned objects are taken by objects it does not
/// control: `Ready=False`, `Progressing=False` and `Degraded=True`, reason
/// [`REASON_NAME_CONFLICT`], the message naming each object, its current owner and what to
/// rename. The other planned objects may have been applied, so components and summary are
/// aggregated from what is `observed` (children controlled by the service and its pods; the
/// conflicting objects are not among them), but the conditions never claim readiness: the service
/// is not what its spec asks for until the conflict is resolved.
pub fn name_conflict_status(
    isvc: &InferenceService,
    observed: &Observed,
    conflicts: &[NameConflict],
    now: Time,
) -> InferenceServiceStatus {
    let aggregated = aggregate_status(isvc, observed, now.clone());
    let previous = isvc.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
    let message = format!(
        "{} planned object{} already exist{} and {} not this service's, so FusionInfer leaves \
         {} untouched: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        if conflicts.len() == 1 { "s" } else { "" },
        if conflicts.len() == 1 { "is" } else { "are" },
        if conflicts.len() == 1 { "it" } else { "them" },
        conflicts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    InferenceServiceStatus {
        conditions: blocked_conditions(
            previous,
            isvc.metadata.generation,
            REASON_NAME_CONFLICT,
            &message,
            &now,
        ),
        ..aggregated
    }
}

/// `Ready=False`, `Progressing=False`, `Degraded=True` with one reason and message, keeping each
/// condition's previous `lastTransitionTime` while its status stays.
fn blocked_conditions(
    previous: &[Condition],
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &Time,
) -> Vec<Condition> {
    [
        (CONDITION_READY, "False"),
        (CONDITION_PROGRESSING, "False"),
        (CONDITION_DEGRADED, "True"),
    ]
    .into_iter()
    .map(|(type_, status)| {
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time,
        }
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

    fn colliding_service() -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "fusioninfer.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "a", "namespace": "ns", "uid": "uid-a", "generation": 2},
            "spec": {
                "schedulingStrategy": {"schedulerName": "volcano"},
                "roles": [
                    {"name": "b-c", "componentType": "worker", "replicas": 1,
                     "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}
                ]
            }
        }))
        .unwrap()
    }

    fn planned<'a>(desired: &'a [DesiredObject], kind: &str) -> &'a DesiredObject {
        desired.iter().find(|o| o.kind() == kind).expect(kind)
    }

    fn owned_by(
        api_version: &str,
        kind: &str,
        name: &str,
        uid: &str,
        controller: bool,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some("a-b-c".into()),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: uid.into(),
                    controller: Some(controller),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn own_objects_are_no_conflict_whatever_their_labels() {
        let isvc = colliding_service();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        let sts = planned(&desired, "StatefulSet");
        // Labels removed by hand: still ours by its controller reference.
        let unlabelled = owned_by(
            "fusioninfer.io/v1alpha1",
            "InferenceService",
            "a",
            "uid-a",
            true,
        );
        assert!(unlabelled.labels.is_none());
        assert_eq!(name_conflict(sts, &unlabelled, "uid-a"), None);
    }

    #[test]
    fn an_object_of_another_service_is_a_conflict_naming_it_and_the_role() {
        let isvc = colliding_service();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        let sts = planned(&desired, "StatefulSet");
        let theirs = owned_by(
            "fusioninfer.io/v1alpha1",
            "InferenceService",
            "a-b",
            "uid-ab",
            true,
        );
        let conflict = name_conflict(sts, &theirs, "uid-a").expect("conflict");
        assert_eq!(
            conflict,
            NameConflict {
                object: ObjectKey {
                    api_version: "apps/v1".into(),
                    kind: "StatefulSet".into(),
                    name: "a-b-c".into(),
                },
                service: "a".into(),
                role: Some("b-c".into()),
                owner: Some(Controller {
                    api_version: "fusioninfer.io/v1alpha1".into(),
                    kind: "InferenceService".into(),
                    name: "a-b".into(),
                    uid: "uid-ab".into(),
                }),
            }
        );
        assert!(!conflict.left_by_earlier_service());
        let text = conflict.to_string();
        assert!(
            text.starts_with("StatefulSet a-b-c already exists"),
            "{text}"
        );
        assert!(
            text.contains("belongs to InferenceService a-b (uid uid-ab)"),
            "{text}"
        );
        assert!(
            text.contains("rename role \"b-c\" or InferenceService a"),
            "{text}"
        );
    }

    #[test]
    fn an_object_without_controller_was_not_created_by_fusioninfer() {
        let isvc = colliding_service();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        let sts = planned(&desired, "StatefulSet");
        for existing in [
            ObjectMeta::default(),
            // An owner reference that is not the controller does not make it ours either.
            owned_by(
                "fusioninfer.io/v1alpha1",
                "InferenceService",
                "a",
                "uid-a",
                false,
            ),
        ] {
            let conflict = name_conflict(sts, &existing, "uid-a").expect("conflict");
            assert_eq!(conflict.owner, None);
            assert!(
                conflict
                    .to_string()
                    .contains("was not created by FusionInfer"),
                "{conflict}"
            );
        }
        let foreign = owned_by("apps/v1", "Deployment", "other", "uid-d", true);
        let text = name_conflict(sts, &foreign, "uid-a").unwrap().to_string();
        assert!(
            text.ends_with("or delete the existing object if nothing needs it"),
            "{text}"
        );
        assert!(
            text.contains("controlled by Deployment other (uid uid-d), not created by FusionInfer"),
            "{text}"
        );
    }

    #[test]
    fn per_service_objects_ask_to_rename_the_service() {
        let isvc = colliding_service();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        let pod_group = planned(&desired, "PodGroup");
        let conflict = name_conflict(pod_group, &ObjectMeta::default(), "uid-a").unwrap();
        assert_eq!(conflict.role, None);
        let text = conflict.to_string();
        assert!(text.starts_with("PodGroup a already exists"), "{text}");
        assert!(
            text.contains("rename InferenceService a (the name is the service's)"),
            "{text}"
        );
    }

    #[test]
    fn leftovers_of_an_earlier_service_of_the_same_name_are_recognised() {
        let isvc = colliding_service();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        let sts = planned(&desired, "StatefulSet");
        let earlier = owned_by(
            "fusioninfer.io/v1alpha1",
            "InferenceService",
            "a",
            "uid-old",
            true,
        );
        let conflict = name_conflict(sts, &earlier, "uid-a").unwrap();
        assert!(conflict.left_by_earlier_service());
        let text = conflict.to_string();
        assert!(
            text.contains("earlier, deleted InferenceService a (uid uid-old)"),
            "{text}"
        );
        assert!(text.contains("garbage collector"), "{text}");
    }

    #[test]
    fn name_conflict_status_never_claims_ready_and_is_a_fixed_point() {
        let mut isvc = colliding_service();
        let desired = crate::plan::plan(&isvc, &Default::default()).unwrap();
        let conflicts: Vec<NameConflict> = ["StatefulSet", "Service"]
            .into_iter()
            .map(|kind| {
                let theirs = owned_by(
                    "fusioninfer.io/v1alpha1",
                    "InferenceService",
                    "a-b",
                    "uid-ab",
                    true,
                );
                name_conflict(planned(&desired, kind), &theirs, "uid-a").unwrap()
            })
            .collect();
        // Even a ready workload for the role (as observed) does not make the service Ready.
        let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "a-b-c", "namespace": "ns", "labels": {
                SERVICE: "a", ROLE_NAME: "b-c"}},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"replicas": 1, "readyReplicas": 1}
        }))
        .unwrap();
        let observed = Observed {
            stateful_sets: vec![sts],
            ..Observed::default()
        };
        assert_eq!(
            aggregate_status(
                &isvc,
                &observed,
                Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
            )
            .conditions[0]
                .status,
            "True",
            "the observed children alone would say Ready"
        );

        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let status = name_conflict_status(&isvc, &observed, &conflicts, t0.clone());
        assert_eq!(status.observed_generation, Some(2));
        let by_type = |t: &str| status.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(by_type("Ready").status, "False");
        assert_eq!(by_type("Progressing").status, "False");
        assert_eq!(by_type("Degraded").status, "True");
        for condition in &status.conditions {
            assert_eq!(condition.reason, REASON_NAME_CONFLICT);
            assert_eq!(condition.observed_generation, Some(2));
            assert_eq!(condition.last_transition_time, t0);
        }
        let message = &by_type("Ready").message;
        assert!(
            message.starts_with("2 planned objects already exist and are not"),
            "{message}"
        );
        assert!(
            message
                .contains("StatefulSet a-b-c already exists and belongs to InferenceService a-b"),
            "{message}"
        );
        assert!(
            message.contains("Service a-b-c already exists"),
            "{message}"
        );
        assert!(message.contains("rename role \"b-c\""), "{message}");
        // Components come from what is observed.
        assert_eq!(status.components["b-c"].ready_replicas, 1);
        assert_eq!(status.summary.as_deref(), Some("b-c 1/1"));

        // A fixed point: no write on the next reconcile while the conflict lasts.
        isvc.status = Some(status.clone());
        assert_eq!(
            name_conflict_status(&isvc, &observed, &conflicts, t1.clone()),
            status
        );

        // One conflict: singular wording; transitions keep their time.
        let one = name_conflict_status(&isvc, &observed, &conflicts[..1], t1);
        let ready = one.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(
            ready
                .message
                .starts_with("1 planned object already exists and is not"),
            "{}",
            ready.message
        );
        assert_eq!(ready.last_transition_time, t0);
    }
}
