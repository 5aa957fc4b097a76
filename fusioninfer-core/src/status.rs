//! Status aggregation: from an `InferenceService` and the child objects observed in the cluster
//! to the `status` the operator writes. Pure: no I/O, and the clock comes in as `now`.
//!
//! The result is a fixed point: aggregating again with unchanged inputs (and the previous result
//! as `isvc.status`) yields an identical status whatever `now` is, so the operator can skip the
//! write when nothing changed. Timestamps therefore move only when what they stamp changes.
//!
//! Children are matched to roles by their `fusioninfer.io/service` and `fusioninfer.io/role-name`
//! labels (and namespace), never by name; the name `{service}-{role}` only breaks ties.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fusioninfer_api::labels::{ROLE_NAME, SERVICE, VOLCANO_SCHEDULER};
use fusioninfer_api::lws::LeaderWorkerSet;
use fusioninfer_api::volcano::PodGroup;
use fusioninfer_api::{
    ComponentPhase, ComponentStatus, ComponentType, InferenceService, InferenceServiceStatus, Role,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use serde_json::Value;

use crate::names::{role_object_name, service_name, service_object_name};

/// Condition type: every role has all its desired replicas ready.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: some role is still being created, scheduled or started.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: some role failed in a way that will not heal without intervention.
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Reason: every role is ready (`Ready=True`, `Progressing=False`).
pub const REASON_ALL_ROLES_READY: &str = "AllRolesReady";
/// Reason: some roles are pending or deploying, none failed (`Ready=False`).
pub const REASON_ROLES_NOT_READY: &str = "RolesNotReady";
/// Reason: some roles are pending or deploying (`Progressing=True`).
pub const REASON_DEPLOYING: &str = "Deploying";
/// Reason: a child object has not reported status yet (`Unknown` conditions).
pub const REASON_STATUS_UNKNOWN: &str = "StatusUnknown";
/// Reason: nothing is failing (`Degraded=False`).
pub const REASON_AS_EXPECTED: &str = "AsExpected";
/// Reason: the Volcano PodGroup of the service cannot be placed.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// Reason: the spec failed validation; nothing was planned from it.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// Container waiting reasons that mean the pod will not start without a change by someone:
/// kubelet keeps retrying, but with back-off and without a different outcome.
/// - `CrashLoopBackOff`: the container keeps exiting.
/// - `ImagePullBackOff`, `ErrImagePull`: the image cannot be pulled (wrong name/tag, no access).
/// - `InvalidImageName`: the image reference does not parse; kubelet never retries.
/// - `ErrImageNeverPull`: `imagePullPolicy: Never` and the image is not on the node.
/// - `CreateContainerConfigError`: a referenced Secret/ConfigMap (key) is missing.
///
/// `CreateContainerError` and `RunContainerError` are left out: they are often transient
/// (runtime hiccups, name conflicts) and a lasting one turns into `CrashLoopBackOff` anyway.
pub const FATAL_WAITING_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
];

/// Kubernetes caps `Condition.message` at 32768 bytes; stay under it.
const MAX_CONDITION_MESSAGE: usize = 32 * 1024 - 1;
/// Cap on one quoted message (kubelet or scheduler text), so one pod cannot crowd out the rest.
const MAX_DETAIL: usize = 1024;

/// The child objects of services as read from the cluster. It may hold objects of other
/// services too: aggregation picks out the ones labelled for the service at hand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// StatefulSets (single-node serving roles).
    pub stateful_sets: Vec<StatefulSet>,
    /// LeaderWorkerSets (multi-node serving roles).
    pub leader_worker_sets: Vec<LeaderWorkerSet>,
    /// Deployments (the router's endpoint picker).
    pub deployments: Vec<Deployment>,
    /// Pods of all roles; used for failure detection, scheduling state and LWS pod readiness.
    pub pods: Vec<Pod>,
    /// Volcano PodGroups (one per gang-scheduled service).
    pub pod_groups: Vec<PodGroup>,
}

/// Why plain objects could not be sorted into an [`Observed`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no string `apiVersion` or `kind`.
    #[error("object {index}: missing apiVersion or kind")]
    MissingTypeMeta {
        /// Position in the input list.
        index: usize,
    },
    /// The apiVersion/kind is not one status aggregation reads.
    #[error(
        "object {index}: unsupported kind {kind:?} (apiVersion {api_version:?}); expected \
         apps/v1 StatefulSet or Deployment, leaderworkerset.x-k8s.io/v1 LeaderWorkerSet, v1 Pod, \
         or scheduling.volcano.sh/v1beta1 PodGroup"
    )]
    UnsupportedKind {
        /// Position in the input list.
        index: usize,
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// The object has a supported kind but does not fit its type.
    #[error("object {index} ({kind} {name:?}): {source}")]
    Decode {
        /// Position in the input list.
        index: usize,
        /// The object's `kind`.
        kind: String,
        /// The object's `metadata.name`, or `""`.
        name: String,
        /// What serde rejected.
        source: serde_json::Error,
    },
}

impl Observed {
    /// Sorts plain Kubernetes objects (as JSON, e.g. from `kubectl get -o json` items or the
    /// Python bindings) into typed lists by `apiVersion` and `kind`.
    ///
    /// # Errors
    ///
    /// The first object that has no `apiVersion`/`kind`, has a kind not listed on [`Observed`]
    /// (see [`Error::UnsupportedKind`]), or does not deserialize into its type.
    pub fn from_objects(values: Vec<Value>) -> Result<Observed, Error> {
        let mut observed = Observed::default();
        for (index, value) in values.into_iter().enumerate() {
            let type_meta =
                |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
            let (Some(api_version), Some(kind)) = (type_meta("apiVersion"), type_meta("kind"))
            else {
                return Err(Error::MissingTypeMeta { index });
            };
            let (av, k) = (api_version.as_str(), kind.as_str());
            if is::<StatefulSet>(av, k) {
                observed.stateful_sets.push(decode(index, &kind, value)?);
            } else if is::<LeaderWorkerSet>(av, k) {
                observed
                    .leader_worker_sets
                    .push(decode(index, &kind, value)?);
            } else if is::<Deployment>(av, k) {
                observed.deployments.push(decode(index, &kind, value)?);
            } else if is::<Pod>(av, k) {
                observed.pods.push(decode(index, &kind, value)?);
            } else if is::<PodGroup>(av, k) {
                observed.pod_groups.push(decode(index, &kind, value)?);
            } else {
                return Err(Error::UnsupportedKind {
                    index,
                    api_version,
                    kind,
                });
            }
        }
        Ok(observed)
    }
}

fn is<K: kube::Resource<DynamicType = ()>>(api_version: &str, kind: &str) -> bool {
    K::api_version(&()) == api_version && K::kind(&()) == kind
}

fn decode<T: serde::de::DeserializeOwned>(
    index: usize,
    kind: &str,
    value: Value,
) -> Result<T, Error> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    serde_json::from_value(value).map_err(|source| Error::Decode {
        index,
        kind: kind.to_owned(),
        name,
        source,
    })
}

/// The status of `isvc` given the observed children: one component per role (router included),
/// a per-role summary, and the `Ready`, `Progressing` and `Degraded` conditions.
///
/// Timestamps come from `isvc.status` (the previous status) wherever the stamped thing did not
/// change: a condition's `lastTransitionTime` while its status stays, a component's
/// `lastUpdateTime` while its entry stays. Only the three condition types above are emitted;
/// they are the only ones the operator owns.
pub fn aggregate_status(
    isvc: &InferenceService,
    observed: &Observed,
    now: Time,
) -> InferenceServiceStatus {
    let ctx = Context::new(isvc, observed);
    let previous = isvc.status.as_ref();
    let views: Vec<RoleView> = isvc.spec.roles.iter().map(|role| ctx.view(role)).collect();

    let mut components = BTreeMap::new();
    for view in &views {
        let mut entry = view.component.clone();
        let prev = previous.and_then(|s| s.components.get(&view.role));
        entry.last_update_time = match prev {
            Some(prev) if same_entry(prev, &entry) && prev.last_update_time.is_some() => {
                prev.last_update_time.clone()
            }
            _ => Some(now.clone()),
        };
        components.insert(view.role.clone(), entry);
    }

    let generation = isvc.metadata.generation;
    let prev_conditions = previous.map_or(&[][..], |s| s.conditions.as_slice());
    let conditions = role_conditions(&views)
        .into_iter()
        .map(|c| c.into_condition(prev_conditions, generation, &now))
        .collect();

    InferenceServiceStatus {
        observed_generation: generation,
        conditions,
        components,
        summary: Some(summary(&views)),
    }
}

/// The status of an `isvc` whose spec failed validation: `Ready=False`, `Degraded=True` and
/// `Progressing=False`, all with reason `InvalidSpec` and every error in the message. The
/// components and summary stay as previously observed (nothing new was planned), and
/// `observedGeneration` moves on, because this generation has been looked at.
pub fn invalid_spec_status(
    isvc: &InferenceService,
    errors: &[String],
    now: Time,
) -> InferenceServiceStatus {
    let previous = isvc.status.clone().unwrap_or_default();
    let generation = isvc.metadata.generation;
    let message = match errors {
        [] => "the spec is invalid".to_owned(),
        [one] => format!("invalid spec: {one}"),
        many => format!("invalid spec ({} errors): {}", many.len(), many.join("; ")),
    };
    let conditions = [
        (CONDITION_READY, "False"),
        (CONDITION_PROGRESSING, "False"),
        (CONDITION_DEGRADED, "True"),
    ]
    .into_iter()
    .map(|(type_, status)| {
        NewCondition {
            type_,
            status,
            reason: REASON_INVALID_SPEC.to_owned(),
            message: message.clone(),
        }
        .into_condition(&previous.conditions, generation, &now)
    })
    .collect();
    InferenceServiceStatus {
        observed_generation: generation,
        conditions,
        components: previous.components,
        summary: previous.summary,
    }
}

/// Whether two component entries are equal apart from their timestamp.
fn same_entry(a: &ComponentStatus, b: &ComponentStatus) -> bool {
    ComponentStatus {
        last_update_time: None,
        ..a.clone()
    } == ComponentStatus {
        last_update_time: None,
        ..b.clone()
    }
}

/// What aggregation found out about one role.
struct RoleView {
    role: String,
    /// The entry, without `lastUpdateTime`.
    component: ComponentStatus,
    /// Set exactly when the phase is `Failed`.
    failure: Option<Failure>,
    /// Why the role is not ready, for condition messages (empty when `Running`).
    detail: String,
}

struct Failure {
    reason: String,
    message: String,
}

/// Service identity and the observed objects, for matching children to roles.
struct Context<'a> {
    service: &'a str,
    namespace: Option<&'a str>,
    gang_scheduled: bool,
    observed: &'a Observed,
}

/// What the role's workload object (StatefulSet, LeaderWorkerSet or Deployment) says.
struct Workload {
    kind: &'static str,
    name: String,
    /// `None` until the workload controller first writes status.
    status: Option<WorkloadStatus>,
}

struct WorkloadStatus {
    /// Replicas (LWS: groups) whose pods are all ready.
    ready_replicas: i32,
    /// Replicas (LWS: groups) created so far.
    created_replicas: i32,
}

impl<'a> Context<'a> {
    fn new(isvc: &'a InferenceService, observed: &'a Observed) -> Self {
        let gang_scheduled = isvc
            .spec
            .scheduling_strategy
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            == Some(VOLCANO_SCHEDULER);
        Context {
            service: service_name(isvc),
            namespace: isvc.metadata.namespace.as_deref(),
            gang_scheduled,
            observed,
        }
    }

    /// Whether `meta` belongs to this service (and, given `role`, to that role).
    fn owns(&self, meta: &ObjectMeta, role: Option<&str>) -> bool {
        if let (Some(mine), Some(theirs)) = (self.namespace, meta.namespace.as_deref())
            && mine != theirs
        {
            return false;
        }
        let labels = meta.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
        label(SERVICE) == Some(self.service) && role.is_none_or(|r| label(ROLE_NAME) == Some(r))
    }

    /// The object of this role among `objects`: label match, the expected name first, then the
    /// smallest name, so the choice does not depend on list order.
    fn pick<'o, T>(
        &self,
        objects: &'o [T],
        meta: fn(&T) -> &ObjectMeta,
        role: &str,
    ) -> Option<&'o T> {
        let expected = role_object_name(self.service, role);
        objects
            .iter()
            .filter(|o| self.owns(meta(o), Some(role)))
            .min_by_key(|o| {
                let name = meta(o).name.as_deref().unwrap_or("");
                (name != expected, name)
            })
    }

    fn workload(&self, role: &Role) -> Option<Workload> {
        let observed = self.observed;
        let named = |kind, meta: &ObjectMeta, status| Workload {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            status,
        };
        if role.component_type == ComponentType::Router {
            self.pick(&observed.deployments, |d| &d.metadata, &role.name)
                .map(|d| {
                    let status = d.status.as_ref().map(|s| WorkloadStatus {
                        ready_replicas: s.ready_replicas.unwrap_or(0),
                        created_replicas: s.replicas.unwrap_or(0),
                    });
                    named("Deployment", &d.metadata, status)
                })
        } else if role.is_multinode() {
            self.pick(&observed.leader_worker_sets, |l| &l.metadata, &role.name)
                .map(|l| {
                    let status = l.status.as_ref().map(|s| WorkloadStatus {
                        ready_replicas: s.ready_replicas.unwrap_or(0),
                        created_replicas: s.replicas.unwrap_or(0),
                    });
                    named("LeaderWorkerSet", &l.metadata, status)
                })
        } else {
            self.pick(&observed.stateful_sets, |s| &s.metadata, &role.name)
                .map(|s| {
                    let status = s.status.as_ref().map(|s| WorkloadStatus {
                        ready_replicas: s.ready_replicas.unwrap_or(0),
                        created_replicas: s.replicas,
                    });
                    named("StatefulSet", &s.metadata, status)
                })
        }
    }

    /// Live pods of the role, sorted by name so messages do not depend on list order.
    /// Terminating pods are left out: they are on their way out and say nothing about the
    /// replicas that replace them.
    fn pods(&self, role: &str) -> Vec<&'a Pod> {
        let mut pods: Vec<&Pod> = self
            .observed
            .pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none() && self.owns(&p.metadata, Some(role))
            })
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    /// The service's PodGroup when it says the gang cannot be placed: condition `Unschedulable`
    /// is `True` and the group is not running. Volcano leaves a stale `Unschedulable=True` next
    /// to `Scheduled=True` once the gang fits, but then moves the phase to `Running` as soon as
    /// `minMember` pods are bound, so the phase tells a stale condition from a live one.
    /// Only read under `schedulerName: volcano`: otherwise no pod belongs to a PodGroup.
    fn unschedulable_gang(&self) -> Option<Failure> {
        if !self.gang_scheduled {
            return None;
        }
        let expected = service_object_name(self.service);
        let group = self
            .observed
            .pod_groups
            .iter()
            .filter(|g| self.owns(&g.metadata, None))
            .min_by_key(|g| {
                let name = g.metadata.name.as_deref().unwrap_or("");
                (name != expected, name)
            })?;
        let status = group.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Running" | "Completed")) {
            return None;
        }
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Unschedulable" && c.status == "True")?;
        let mut message = format!(
            "PodGroup {} cannot be scheduled",
            group.metadata.name.as_deref().unwrap_or(&expected)
        );
        if let Some(reason) = condition.reason.as_deref().filter(|r| !r.is_empty()) {
            let _ = write!(message, " ({reason})");
        }
        if let Some(detail) = condition.message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(": ");
            message.push_str(&truncate(detail, MAX_DETAIL));
        }
        Some(Failure {
            reason: REASON_UNSCHEDULABLE.to_owned(),
            message,
        })
    }

    fn view(&self, role: &Role) -> RoleView {
        let nodes_per_replica = role.nodes_per_replica().max(1);
        let desired = role.replicas.max(0);
        let workload = self.workload(role);
        let pods = self.pods(&role.name);
        let wl_status = workload.as_ref().and_then(|w| w.status.as_ref());
        let ready_replicas = wl_status.map_or(0, |s| s.ready_replicas);
        // An LWS reports whole groups only; pods show progress inside a group. Without pods in
        // the input, assume the ready groups' pods are the ready ones.
        let ready_pods = if role.is_multinode() && role.component_type != ComponentType::Router {
            if pods.is_empty() {
                ready_replicas.saturating_mul(nodes_per_replica)
            } else {
                i32::try_from(pods.iter().filter(|p| pod_ready(p)).count()).unwrap_or(i32::MAX)
            }
        } else {
            ready_replicas
        };
        let mut component = ComponentStatus {
            desired_replicas: desired,
            ready_replicas,
            nodes_per_replica,
            total_pods: desired.saturating_mul(nodes_per_replica),
            ready_pods,
            phase: ComponentPhase::Unknown,
            last_update_time: None,
        };
        let counts = format!("{ready_replicas}/{desired} replicas ready");
        let name = &role.name;

        let gang_failure = (role.component_type != ComponentType::Router)
            .then(|| self.unschedulable_gang())
            .flatten();
        let failure = pod_failure(&pods).or(gang_failure).map(|f| Failure {
            reason: f.reason,
            message: format!("role {name}: {}", f.message),
        });

        let (phase, detail) = if let Some(failure) = &failure {
            (ComponentPhase::Failed, failure.message.clone())
        } else {
            match (&workload, wl_status) {
                (None, _) => {
                    let kind = expected_kind(role);
                    let detail = format!(
                        "role {name}: {kind} {} not created yet",
                        role_object_name(self.service, name)
                    );
                    (ComponentPhase::Pending, detail)
                }
                (Some(w), None) => {
                    let detail = format!(
                        "role {name}: {} {} has not reported status yet",
                        w.kind, w.name
                    );
                    (ComponentPhase::Unknown, detail)
                }
                (Some(_), Some(_)) if ready_replicas >= desired => {
                    (ComponentPhase::Running, String::new())
                }
                (Some(_), Some(s)) => {
                    let scheduled = if pods.is_empty() {
                        s.created_replicas > 0
                    } else {
                        pods.iter().any(|p| pod_scheduled(p))
                    };
                    let phase = if ready_replicas > 0 || scheduled {
                        ComponentPhase::Deploying
                    } else {
                        ComponentPhase::Pending
                    };
                    let mut detail = format!("role {name}: {counts}");
                    if let Some(why) = pods.iter().find_map(|p| unschedulable_pod(p)) {
                        let _ = write!(detail, " ({why})");
                    }
                    (phase, detail)
                }
            }
        };
        component.phase = phase;
        RoleView {
            role: role.name.clone(),
            component,
            failure,
            detail,
        }
    }
}

fn expected_kind(role: &Role) -> &'static str {
    match role.component_type {
        ComponentType::Router => "Deployment",
        _ if role.is_multinode() => "LeaderWorkerSet",
        _ => "StatefulSet",
    }
}

/// The first fatal container state among `pods` (already sorted), with a count of the other
/// failing pods. Init containers count: a crash-looping init container blocks the pod too.
fn pod_failure(pods: &[&Pod]) -> Option<Failure> {
    let mut failing = pods.iter().filter_map(|pod| {
        let status = pod.status.as_ref()?;
        let init = status
            .init_container_statuses
            .iter()
            .flatten()
            .map(|c| (c, "init container"));
        let main = status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| (c, "container"));
        init.chain(main)
            .find_map(|(c, what)| fatal_waiting(pod, c, what))
    });
    let mut first = failing.next()?;
    let others = failing.count();
    if others > 0 {
        let s = if others == 1 { "" } else { "s" };
        let _ = write!(first.message, " (and {others} more failing pod{s})");
    }
    Some(first)
}

fn fatal_waiting(pod: &Pod, container: &ContainerStatus, what: &str) -> Option<Failure> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !FATAL_WAITING_REASONS.contains(&reason) {
        return None;
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let mut message = format!("pod {pod_name} {what} {} is in {reason}", container.name);
    if let Some(detail) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(": ");
        message.push_str(&truncate(detail, MAX_DETAIL));
    }
    Some(Failure {
        reason: reason.to_owned(),
        message,
    })
}

fn pod_condition<'p>(
    pod: &'p Pod,
    type_: &str,
) -> Option<&'p k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn pod_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn pod_scheduled(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
        || pod_condition(pod, "PodScheduled").is_some_and(|c| c.status == "True")
}

/// Why the scheduler left `pod` unplaced, if it did. Not a failure: capacity may still appear
/// (autoscaler, other pods finishing), so the role stays `Pending` with this as the detail.
fn unschedulable_pod(pod: &Pod) -> Option<String> {
    let c = pod_condition(pod, "PodScheduled")?;
    if c.status != "False" || c.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let name = pod.metadata.name.as_deref().unwrap_or("");
    Some(match c.message.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => format!("pod {name} is unschedulable: {}", truncate(m, MAX_DETAIL)),
        None => format!("pod {name} is unschedulable"),
    })
}

/// `decode 1/1, prefill 2/2, router 1/1`: ready/desired replicas in spec order.
fn summary(views: &[RoleView]) -> String {
    views
        .iter()
        .map(|v| {
            format!(
                "{} {}/{}",
                v.role, v.component.ready_replicas, v.component.desired_replicas
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A condition before timestamps are settled.
struct NewCondition {
    type_: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

impl NewCondition {
    /// Keeps the previous `lastTransitionTime` when the status did not change (the Kubernetes
    /// convention: reason and message may change without a transition).
    fn into_condition(
        self,
        previous: &[Condition],
        generation: Option<i64>,
        now: &Time,
    ) -> Condition {
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == self.type_)
            .filter(|c| c.status == self.status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: self.type_.to_owned(),
            status: self.status.to_owned(),
            reason: self.reason,
            message: truncate(&self.message, MAX_CONDITION_MESSAGE),
            observed_generation: generation,
            last_transition_time,
        }
    }
}

/// `Ready`, `Progressing` and `Degraded` from the per-role views, in that order.
fn role_conditions(views: &[RoleView]) -> [NewCondition; 3] {
    let with = |phases: &[ComponentPhase]| -> Vec<&RoleView> {
        views
            .iter()
            .filter(|v| phases.contains(&v.component.phase))
            .collect()
    };
    let details = |vs: &[&RoleView]| {
        vs.iter()
            .map(|v| v.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let failed = with(&[ComponentPhase::Failed]);
    let moving = with(&[ComponentPhase::Pending, ComponentPhase::Deploying]);
    let unknown = with(&[ComponentPhase::Unknown]);
    let not_running: Vec<&RoleView> = views
        .iter()
        .filter(|v| v.component.phase != ComponentPhase::Running)
        .collect();
    // The first failing role in spec order names the reason; messages list every failing role.
    let failure_reason = failed
        .first()
        .and_then(|v| v.failure.as_ref())
        .map(|f| f.reason.clone());
    let all_ready = format!("all roles ready: {}", summary(views));

    let ready = if not_running.is_empty() {
        NewCondition {
            type_: CONDITION_READY,
            status: "True",
            reason: REASON_ALL_ROLES_READY.into(),
            message: all_ready.clone(),
        }
    } else if let Some(reason) = &failure_reason {
        NewCondition {
            type_: CONDITION_READY,
            status: "False",
            reason: reason.clone(),
            message: details(&not_running),
        }
    } else if moving.is_empty() {
        NewCondition {
            type_: CONDITION_READY,
            status: "Unknown",
            reason: REASON_STATUS_UNKNOWN.into(),
            message: details(&unknown),
        }
    } else {
        NewCondition {
            type_: CONDITION_READY,
            status: "False",
            reason: REASON_ROLES_NOT_READY.into(),
            message: details(&not_running),
        }
    };

    let progressing = if !moving.is_empty() {
        NewCondition {
            type_: CONDITION_PROGRESSING,
            status: "True",
            reason: REASON_DEPLOYING.into(),
            message: details(&moving),
        }
    } else if !unknown.is_empty() {
        NewCondition {
            type_: CONDITION_PROGRESSING,
            status: "Unknown",
            reason: REASON_STATUS_UNKNOWN.into(),
            message: details(&unknown),
        }
    } else if let Some(reason) = &failure_reason {
        NewCondition {
            type_: CONDITION_PROGRESSING,
            status: "False",
            reason: reason.clone(),
            message: details(&failed),
        }
    } else {
        NewCondition {
            type_: CONDITION_PROGRESSING,
            status: "False",
            reason: REASON_ALL_ROLES_READY.into(),
            message: all_ready,
        }
    };

    let degraded = match failure_reason {
        Some(reason) => NewCondition {
            type_: CONDITION_DEGRADED,
            status: "True",
            reason,
            message: details(&failed),
        },
        None => NewCondition {
            type_: CONDITION_DEGRADED,
            status: "False",
            reason: REASON_AS_EXPECTED.into(),
            message: "no role is failing".into(),
        },
    };
    [ready, progressing, degraded]
}

/// `s` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_limit_and_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééé", 6); // 10 bytes; room for one é (2) + … (3)
        assert!(cut.len() <= 6, "{cut:?}");
        assert_eq!(cut, "é…");
    }
}
