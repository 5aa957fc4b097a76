//! The apply layer: the API calls of one reconcile, each deciding nothing itself.
//!
//! - Children are found by the service's labels (`fusioninfer.io/service` and
//!   `app.kubernetes.io/managed-by`), one list per managed kind, never by guessing names.
//! - A planned object is written (server-side apply, one field manager, forced) only when
//!   [`needs_apply`] says its planned fields differ from the live object, so a second reconcile of
//!   an unchanged spec sends no write at all, while a hand edit of a planned field is restored.
//! - A planned object is never written over an existing object this service does not control
//!   (another service deriving the same name, a user's object): that is a [`NameConflict`],
//!   reported instead. A planned object missing from the labelled list is read by name first
//!   (one GET, only then, so a steady-state reconcile makes none); an object found that way which
//!   carries this service's controller reference is still ours (its labels were removed by hand)
//!   and the apply restores its labels.
//! - A child is deleted only when it carries a controller reference to this service's uid and
//!   the plan no longer contains it; the delete is conditional on that uid, so an object
//!   recreated meanwhile under the same name is left alone.
//! - The status goes through the status subresource, only when it differs from the current one.

use std::collections::BTreeMap;

use fusioninfer_api::InferenceService;
use fusioninfer_api::InferenceServiceStatus;
use fusioninfer_api::labels::{MANAGED_BY, MANAGER, SERVICE};
use fusioninfer_core::plan::DesiredObject;
use fusioninfer_core::reconcile::{
    NameConflict, ObjectKey, is_controlled_by, merge_patch, name_conflict, needs_apply, to_prune,
};
use fusioninfer_core::status::Observed;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::FIELD_MANAGER;
use crate::error::{ApplyFailure, Error, is_not_found};
use crate::kinds::ManagedKind;
use crate::metrics::{Metrics, Write};

/// Label selector of everything the operator created for `service`.
pub fn child_selector(service: &str) -> String {
    format!("{SERVICE}={service},{MANAGED_BY}={MANAGER}")
}

/// Label selector of everything the operator created, for the watches.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// The live children of one service, per managed kind, as listed by its labels and then
/// updated with what the reconcile's own writes returned.
#[derive(Debug, Default)]
pub struct Children {
    by_kind: Vec<(ManagedKind, BTreeMap<String, DynamicObject>)>,
}

impl Children {
    /// Lists the children of `service` in `namespace`, one label-selected list per kind.
    pub async fn list(
        client: &Client,
        namespace: &str,
        service: &str,
        kinds: &[ManagedKind],
    ) -> Result<Children, Error> {
        let params = ListParams::default().labels(&child_selector(service));
        let mut by_kind = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &kind.resource);
            let list = api.list(&params).await.map_err(|source| Error::Api {
                action: "list",
                target: format!("{} in {namespace}", kind.resource.plural),
                source: Box::new(source),
            })?;
            let objects = list
                .items
                .into_iter()
                .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
                .collect();
            by_kind.push((kind.clone(), objects));
        }
        Ok(Children { by_kind })
    }

    fn kind_of(&self, object: &DesiredObject) -> Option<usize> {
        let (api_version, kind) = (object.api_version(), object.kind());
        self.by_kind
            .iter()
            .position(|(k, _)| k.resource.api_version == api_version && k.resource.kind == kind)
    }

    /// Keys of the children whose controller is the service with `uid`.
    pub fn controlled_keys(&self, uid: &str) -> Vec<ObjectKey> {
        self.by_kind
            .iter()
            .flat_map(|(kind, objects)| {
                objects
                    .values()
                    .filter(|o| is_controlled_by(&o.metadata, uid))
                    .map(|o| ObjectKey {
                        api_version: kind.resource.api_version.clone(),
                        kind: kind.resource.kind.clone(),
                        name: o.metadata.name.clone().unwrap_or_default(),
                    })
            })
            .collect()
    }

    /// The children status aggregation reads (workloads and the PodGroup, controlled by `uid`)
    /// plus the service's pods.
    pub fn observed(&self, uid: &str, pods: Vec<Pod>) -> Result<Observed, Error> {
        let mut observed = Observed {
            pods,
            ..Observed::default()
        };
        for (kind, objects) in &self.by_kind {
            for object in objects
                .values()
                .filter(|o| is_controlled_by(&o.metadata, uid))
            {
                match kind.resource.kind.as_str() {
                    "StatefulSet" => observed.stateful_sets.push(typed(kind, object)?),
                    "LeaderWorkerSet" => observed.leader_worker_sets.push(typed(kind, object)?),
                    "Deployment" => observed.deployments.push(typed(kind, object)?),
                    "PodGroup" => observed.pod_groups.push(typed(kind, object)?),
                    _ => {}
                }
            }
        }
        Ok(observed)
    }
}

/// `object` with its `apiVersion` and `kind` (list items may lack them) as JSON.
fn to_json(kind: &ManagedKind, object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            kind.resource.api_version.clone().into(),
        );
        map.insert("kind".into(), kind.resource.kind.clone().into());
    }
    value
}

fn typed<T: DeserializeOwned>(kind: &ManagedKind, object: &DynamicObject) -> Result<T, Error> {
    serde_json::from_value(to_json(kind, object)).map_err(|source| Error::Decode {
        target: format!(
            "{} {}",
            kind.resource.kind,
            object.metadata.name.as_deref().unwrap_or("")
        ),
        source,
    })
}

/// What [`apply_desired`] did.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// `Kind name` of each object written.
    pub applied: Vec<String>,
    /// Planned objects not written because an object of that name exists that the service does
    /// not control.
    pub conflicts: Vec<NameConflict>,
    /// Objects whose read or apply the API server (or the transport) failed.
    pub failures: Vec<ApplyFailure>,
}

/// Server-side applies every planned object that differs from its live version, in plan order
/// (PodGroup before pods, RBAC before the Deployment that uses it), except objects whose name is
/// taken by an object the service with `uid` does not control: those are left untouched and come
/// back as conflicts. A planned object missing from `children` is read by name first to find out.
/// Objects that fail or conflict do not stop the others; everything comes back together.
pub async fn apply_desired(
    client: &Client,
    namespace: &str,
    uid: &str,
    desired: &[DesiredObject],
    children: &mut Children,
    metrics: &Metrics,
) -> Result<ApplyOutcome, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut outcome = ApplyOutcome::default();
    for object in desired {
        let label = format!("{} {}", object.kind(), object.name());
        let Some(index) = children.kind_of(object) else {
            return Err(Error::UnmanagedKind(format!(
                "{} {}",
                object.api_version(),
                object.kind()
            )));
        };
        let (kind, live) = &mut children.by_kind[index];
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.resource);
        // Not labelled as this service's: it may still exist (another service's, a user's, or
        // ours with its labels removed by hand), so read it by name before writing anything.
        let fetched = if live.contains_key(object.name()) {
            None
        } else {
            match api.get_opt(object.name()).await {
                Ok(fetched) => fetched,
                Err(source) => {
                    outcome.failures.push(ApplyFailure {
                        action: "get",
                        object: label,
                        source,
                    });
                    continue;
                }
            }
        };
        let body = object.to_json();
        if let Some(existing) = fetched.as_ref().or_else(|| live.get(object.name())) {
            // Listed objects are checked too: labelled like ours but controlled by someone else
            // (an earlier service of the same name until the garbage collector removes it, or an
            // object labelled by hand) is not ours either.
            if let Some(conflict) = name_conflict(object, &existing.metadata, uid) {
                tracing::warn!(object = %label, %conflict, "name taken: not applied");
                outcome.conflicts.push(conflict);
                continue;
            }
            if !needs_apply(&body, &to_json(kind, existing)) {
                if let Some(fetched) = fetched {
                    live.insert(object.name().to_owned(), fetched);
                }
                continue;
            }
        }
        metrics.wrote(Write::Apply);
        match api
            .patch(object.name(), &params, &Patch::Apply(&body))
            .await
        {
            Ok(written) => {
                tracing::info!(object = %label, "applied");
                live.insert(object.name().to_owned(), written);
                outcome.applied.push(label);
            }
            Err(source) => outcome.failures.push(ApplyFailure {
                action: "apply",
                object: label,
                source,
            }),
        }
    }
    Ok(outcome)
}

/// Deletes the children controlled by `uid` that the plan no longer contains (a removed role, the
/// PodGroup once Volcano is switched off, the router's objects once the router is gone).
/// Returns the `Kind name` of each object deleted.
pub async fn prune(
    client: &Client,
    namespace: &str,
    desired: &[DesiredObject],
    uid: &str,
    children: &mut Children,
    metrics: &Metrics,
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    for key in to_prune(desired, &children.controlled_keys(uid)) {
        let Some((kind, live)) = children.by_kind.iter_mut().find(|(k, _)| {
            k.resource.api_version == key.api_version && k.resource.kind == key.kind
        }) else {
            continue;
        };
        let object_uid = live.get(&key.name).and_then(|o| o.metadata.uid.clone());
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.resource);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: object_uid,
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        metrics.wrote(Write::Delete);
        match api.delete(&key.name, &params).await {
            Ok(_) => {
                tracing::info!(object = %key, "pruned: no longer planned");
            }
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(Error::Api {
                    action: "delete",
                    target: key.to_string(),
                    source: Box::new(source),
                });
            }
        }
        live.remove(&key.name);
        deleted.push(key.to_string());
    }
    Ok(deleted)
}

/// The pods of `service` (all roles), for failure detection and multi-node readiness.
pub async fn list_pods(client: &Client, namespace: &str, service: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(&child_selector(service)))
        .await
        .map(|list| list.items)
        .map_err(|source| Error::Api {
            action: "list",
            target: format!("pods in {namespace}"),
            source: Box::new(source),
        })
}

/// Writes `status` through the status subresource when it differs from the service's current
/// status. Returns whether it wrote.
///
/// The write is a JSON merge patch from the current status to the new one (keys that went away,
/// such as a removed role's component, are patched to `null`), guarded by the resourceVersion the
/// status was computed from: if the service changed meanwhile the API server answers 409 and the
/// reconcile is retried on fresh data instead of overwriting it with a stale view.
pub async fn write_status(
    client: &Client,
    isvc: &InferenceService,
    status: &InferenceServiceStatus,
    metrics: &Metrics,
) -> Result<bool, Error> {
    if isvc.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let namespace = isvc
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = isvc
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let api: Api<InferenceService> = Api::namespaced(client.clone(), namespace);
    let previous = serde_json::to_value(&isvc.status).unwrap_or(Value::Null);
    let next = serde_json::to_value(status).unwrap_or(Value::Null);
    let body = serde_json::json!({
        "metadata": {"resourceVersion": isvc.metadata.resource_version},
        "status": merge_patch(&previous, &next),
    });
    metrics.wrote(Write::Status);
    api.patch_status(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&body),
    )
    .await
    .map_err(|source| Error::Api {
        action: "write status of",
        target: format!("InferenceService {namespace}/{name}"),
        source: Box::new(source),
    })?;
    Ok(true)
}
