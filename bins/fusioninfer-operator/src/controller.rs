//! The reconcile function, its error policy and the kube-runtime `Controller`.
//!
//! A reconcile is a function of what it observes: the InferenceService as the watch cache holds
//! it, its children as listed now. It never relies on what an earlier reconcile did, so it can
//! be interrupted, repeated or run after a restart with the same outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fusioninfer_api::InferenceService;
use fusioninfer_api::InferenceServiceStatus;
use fusioninfer_api::labels::SERVICE;
use fusioninfer_core::plan::{PlanOptions, plan};
use fusioninfer_core::reconcile::{
    REASON_MISSING_CRD, REASON_NAME_CONFLICT, missing_crd_status, missing_crds,
    name_conflict_status, requeue_backoff,
};
use fusioninfer_core::status::{
    CONDITION_READY, REASON_INVALID_SPEC, aggregate_status, invalid_spec_status,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::apply::{Children, apply_desired, list_pods, managed_selector, prune, write_status};
use crate::error::Error;
use crate::kinds::{InstalledCrds, ManagedKind, managed_kinds};
use crate::metrics::{Metrics, Write};

/// How often a healthy service is reconciled without any watch event: a safety net for missed
/// events. Cheap, since an unchanged service costs only list calls.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(300);

/// When a service whose planned names are taken by objects it does not control is retried
/// (besides any change to the service itself, which reconciles it at once): a person has to
/// resolve the conflict, so the quick backoff meant for 409s and outages would only add load.
pub const NAME_CONFLICT_REQUEUE: Duration = RESYNC_PERIOD;

/// Longest time one reconcile may take before it is abandoned and retried.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest Event note Kubernetes accepts (events.k8s.io/v1 `note`: 1 kB).
const MAX_EVENT_NOTE: usize = 1024;

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Planner options (the endpoint-picker image).
    pub plan_options: PlanOptions,
    /// The optional CRDs found at start-up.
    pub installed: InstalledCrds,
    /// The managed kinds the cluster serves: listed for pruning and owned by the controller.
    pub kinds: Vec<ManagedKind>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Longest time one reconcile may take.
    pub reconcile_timeout: Duration,
    /// Consecutive failures per service, for the backoff; cleared by a successful reconcile.
    failures: Mutex<HashMap<ObjectRef<InferenceService>, u32>>,
}

impl Context {
    /// A context for a cluster serving the `installed` optional CRDs. `instance` identifies this
    /// replica in Events (the pod name).
    pub fn new(
        client: Client,
        plan_options: PlanOptions,
        installed: InstalledCrds,
        metrics: Arc<Metrics>,
        instance: &str,
    ) -> Context {
        let kinds = managed_kinds()
            .into_iter()
            .filter(|k| installed.serves(k))
            .collect();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: crate::CONTROLLER_NAME.to_owned(),
                instance: Some(instance.to_owned()),
            },
        );
        Context {
            client,
            plan_options,
            installed,
            kinds,
            recorder,
            metrics,
            reconcile_timeout: DEFAULT_RECONCILE_TIMEOUT,
            failures: Mutex::default(),
        }
    }

    /// Sets the reconcile timeout.
    pub fn with_reconcile_timeout(mut self, timeout: Duration) -> Context {
        self.reconcile_timeout = timeout;
        self
    }

    /// Consecutive failed reconciles of `service` (0 after a success).
    pub fn failures(&self, service: &ObjectRef<InferenceService>) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.get(service).copied().unwrap_or(0)
    }

    fn record_failure(&self, service: ObjectRef<InferenceService>) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(service).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn clear_failures(&self, service: &ObjectRef<InferenceService>) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(service);
    }
}

/// Makes the cluster match the plan of `isvc` and writes its status.
///
/// - Invalid spec: no child is created, changed or deleted; the status says `InvalidSpec` with
///   every validation message and a Warning Event is published (once per status change).
/// - A plan needing a CRD that is not installed: likewise, with reason `MissingCRD`.
/// - Otherwise: apply what differs, prune what is no longer planned, then write the aggregated
///   status if it changed. If any apply fails the status is left alone and the error goes to
///   [`error_policy`], so the status never claims more than was achieved.
/// - A planned object whose name is taken by an object this service does not control is not
///   written (the others are): the status says `NameConflict` with `Ready=False`, a Warning Event
///   names the object and its owner (once per status change), nothing is pruned, and the
///   reconcile fails with [`Error::NameConflict`], retried on the slow path.
///
/// The whole reconcile is bounded by [`Context::reconcile_timeout`].
pub async fn reconcile(isvc: Arc<InferenceService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = tokio::time::Instant::now();
    let result =
        match tokio::time::timeout(ctx.reconcile_timeout, reconcile_service(&isvc, &ctx)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(ctx.reconcile_timeout)),
        };
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.clear_failures(&ObjectRef::from_obj(&*isvc));
    }
    result
}

/// Requeues a failed service after [`requeue_backoff`] of its consecutive failures: 1 s, 2 s,
/// 4 s, … up to 5 minutes, per service, reset by its next successful reconcile. An error only a
/// person can resolve ([`Error::needs_a_person`]: a name conflict) is retried after
/// [`NAME_CONFLICT_REQUEUE`] instead.
pub fn error_policy(isvc: Arc<InferenceService>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.record_failure(ObjectRef::from_obj(&*isvc));
    let delay = if error.needs_a_person() {
        NAME_CONFLICT_REQUEUE
    } else {
        requeue_backoff(failures)
    };
    tracing::warn!(
        namespace = isvc.namespace().unwrap_or_default(),
        name = isvc.name_any(),
        error = %error,
        kind = error.metric_label(),
        failures,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn reconcile_service(isvc: &InferenceService, ctx: &Context) -> Result<Action, Error> {
    let name = isvc
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let namespace = isvc
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("namespace"))?;
    if isvc.metadata.deletion_timestamp.is_some() {
        // Children carry owner references; the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let uid = isvc
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingMetadata("uid"))?;
    let now = Time(Timestamp::now());

    let desired = match plan(isvc, &ctx.plan_options) {
        Ok(desired) => desired,
        Err(errors) => {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let status = invalid_spec_status(isvc, &messages, now);
            report_blocked(isvc, ctx, &status, REASON_INVALID_SPEC).await?;
            return Ok(Action::await_change());
        }
    };
    let missing = missing_crds(&desired, |crd| ctx.installed.contains(crd));
    if !missing.is_empty() {
        let status = missing_crd_status(isvc, &missing, now);
        report_blocked(isvc, ctx, &status, REASON_MISSING_CRD).await?;
        return Ok(Action::await_change());
    }

    let mut children = Children::list(&ctx.client, namespace, name, &ctx.kinds).await?;
    let outcome = apply_desired(
        &ctx.client,
        namespace,
        uid,
        &desired,
        &mut children,
        &ctx.metrics,
    )
    .await?;
    if !outcome.conflicts.is_empty() {
        // Reported even when other objects failed: the status says why the service cannot
        // become ready, and claims nothing more (its conditions are never Ready).
        let pods = list_pods(&ctx.client, namespace, name).await?;
        let observed = children.observed(uid, pods)?;
        let status = name_conflict_status(isvc, &observed, &outcome.conflicts, now.clone());
        report_blocked(isvc, ctx, &status, REASON_NAME_CONFLICT).await?;
    }
    if !outcome.failures.is_empty() {
        let error = Error::Apply {
            total: desired.len(),
            failures: outcome.failures,
        };
        if error.is_rejection() {
            // The API server refused a planned object (admission, schema): a retry will not
            // help, so tell the user where they look. Best effort: the error is returned anyway.
            let note = error.to_string();
            if let Err(event_error) = publish(isvc, ctx, "ApplyRejected", &note).await {
                tracing::warn!(error = %event_error, "could not publish event");
            }
        }
        return Err(error);
    }
    if !outcome.conflicts.is_empty() {
        // Nothing is pruned while the plan is not fully applied: the object a conflicting one
        // would replace (a StatefulSet turning into a LeaderWorkerSet) keeps serving.
        return Err(Error::NameConflict {
            conflicts: outcome.conflicts,
        });
    }
    prune(
        &ctx.client,
        namespace,
        &desired,
        uid,
        &mut children,
        &ctx.metrics,
    )
    .await?;

    let pods = list_pods(&ctx.client, namespace, name).await?;
    let observed = children.observed(uid, pods)?;
    let status = aggregate_status(isvc, &observed, now);
    write_status(&ctx.client, isvc, &status, &ctx.metrics).await?;
    Ok(Action::requeue(RESYNC_PERIOD))
}

/// For a service the operator cannot (fully) act on: when its status changes, publish a Warning
/// Event with the reason and the `Ready` message, then write the status. The Event goes first so
/// that a failure to publish it is retried together with the status write.
async fn report_blocked(
    isvc: &InferenceService,
    ctx: &Context,
    status: &InferenceServiceStatus,
    reason: &str,
) -> Result<(), Error> {
    if isvc.status.as_ref() == Some(status) {
        return Ok(());
    }
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    tracing::warn!(
        namespace = isvc.namespace().unwrap_or_default(),
        name = isvc.name_any(),
        reason,
        %message,
        "blocked"
    );
    publish(isvc, ctx, reason, &message).await?;
    write_status(&ctx.client, isvc, status, &ctx.metrics).await?;
    Ok(())
}

async fn publish(
    isvc: &InferenceService,
    ctx: &Context,
    reason: &str,
    note: &str,
) -> Result<(), Error> {
    ctx.metrics.wrote(Write::Event);
    ctx.recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: reason.to_owned(),
                note: Some(truncate(note, MAX_EVENT_NOTE)),
                action: "Reconcile".to_owned(),
                secondary: None,
            },
            &isvc.object_ref(&()),
        )
        .await
        .map_err(|source| Error::Event {
            target: format!(
                "InferenceService {}/{}",
                isvc.namespace().unwrap_or_default(),
                isvc.name_any()
            ),
            source: Box::new(source),
        })
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The service a pod belongs to, from its `fusioninfer.io/service` label.
pub fn pod_service(pod: Pod) -> Option<ObjectRef<InferenceService>> {
    let service = pod.labels().get(SERVICE)?;
    let namespace = pod.namespace()?;
    Some(ObjectRef::new(service).within(&namespace))
}

/// The controller: InferenceServices in every namespace; owns each managed kind the cluster
/// serves (changes to a child reconcile its owner); watches the pods FusionInfer's workloads
/// create, mapped to their service by label, so the status follows pods that crash-loop or cannot
/// pull their image. Child and pod watches are restricted to objects labelled
/// `app.kubernetes.io/managed-by=fusioninfer`.
pub fn controller(client: Client, kinds: &[ManagedKind]) -> Controller<InferenceService> {
    let managed = watcher::Config::default().labels(&managed_selector());
    let mut controller = Controller::new(
        Api::<InferenceService>::all(client.clone()),
        watcher::Config::default(),
    );
    for kind in kinds {
        controller = controller.owns_with(
            Api::<DynamicObject>::all_with(client.clone(), &kind.resource),
            kind.resource.clone(),
            managed.clone(),
        );
    }
    controller.watches(Api::<Pod>::all(client), managed, pod_service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        let long = "é".repeat(600);
        let cut = truncate(&long, MAX_EVENT_NOTE);
        assert!(cut.len() <= MAX_EVENT_NOTE);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn pods_map_to_their_service_by_label() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {SERVICE: "svc"}}
        }))
        .unwrap();
        assert_eq!(pod_service(pod), Some(ObjectRef::new("svc").within("ns")));
        let unlabelled: Pod = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}}),
        )
        .unwrap();
        assert_eq!(pod_service(unlabelled), None);
    }
}
