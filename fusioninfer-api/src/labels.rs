//! Label and annotation keys shared by the planner, the operator and the endpoint picker.
//! One place for each key, so that what the planner writes is what the EPP selects on.

/// Name of the owning `InferenceService`.
pub const SERVICE: &str = "fusioninfer.io/service";
/// Name of the role (from `spec.roles[].name`).
pub const ROLE_NAME: &str = "fusioninfer.io/role-name";
/// Component type of the role (`worker`, `prefiller`, `decoder`, `router`).
pub const COMPONENT_TYPE: &str = "fusioninfer.io/component-type";
/// Set to `"true"` only on pods that serve inference traffic (StatefulSet pods and LWS leaders);
/// the InferencePool selects on it so that LWS worker pods are never picked.
pub const SERVING: &str = "fusioninfer.io/serving";
/// Standard `app.kubernetes.io/managed-by` key.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`] on everything FusionInfer creates.
pub const MANAGER: &str = "fusioninfer";

/// Pod annotation that makes a pod join a Volcano PodGroup.
pub const VOLCANO_GROUP_NAME: &str = "scheduling.k8s.io/group-name";
/// Pod annotation naming the Volcano task (matches a key of `minTaskMember`).
pub const VOLCANO_TASK_SPEC: &str = "volcano.sh/task-spec";
/// Scheduler name that turns on gang scheduling.
pub const VOLCANO_SCHEDULER: &str = "volcano";

/// Label LWS puts on every pod of a group: `"0"` is the leader.
pub const LWS_WORKER_INDEX: &str = "leaderworkerset.sigs.k8s.io/worker-index";
/// Label LWS puts on every pod of a LeaderWorkerSet, valued with its name.
pub const LWS_NAME: &str = "leaderworkerset.sigs.k8s.io/name";
