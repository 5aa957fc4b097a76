//! The `InferenceService` custom resource: one LLM service described as a list of roles.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most roles one service may declare; it bounds the cost of the CEL rules over `roles`.
pub const MAX_ROLES: u32 = 16;

/// Desired state: the roles that make up one inference service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "fusioninfer.io",
    version = "v1alpha1",
    kind = "InferenceService",
    namespaced,
    status = "InferenceServiceStatus",
    shortname = "fisvc",
    category = "fusioninfer",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Roles","type":"string","description":"ready/desired replicas per role","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceSpec {
    /// The components of the service. Monolithic: exactly one `worker`. Disaggregated: at least
    /// one `prefiller` and one `decoder`. Either may add one `router`.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        validation = Rule::new("self.all(r, self.exists_one(s, s.name == r.name))")
            .message("role names must be unique"),
        validation = Rule::new("self.filter(r, r.componentType == 'router').size() <= 1")
            .message("at most one role may have componentType router"),
        validation = Rule::new("self.exists(r, r.componentType == 'worker') ? (self.filter(r, r.componentType == 'worker').size() == 1 && !self.exists(r, r.componentType == 'prefiller' || r.componentType == 'decoder')) : (self.exists(r, r.componentType == 'prefiller') && self.exists(r, r.componentType == 'decoder'))")
            .message("roles must be either exactly one worker (monolithic) or at least one prefiller and one decoder (disaggregated), never both"),
        validation = Rule::new("!self.exists(r, r.componentType == 'router' && has(r.strategy) && r.strategy == 'pd-disaggregation') || (self.exists(r, r.componentType == 'prefiller') && self.exists(r, r.componentType == 'decoder'))")
            .message("strategy pd-disaggregation needs prefiller and decoder roles"),
    )]
    pub roles: Vec<Role>,

    /// Pod scheduling policy for every serving pod of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_strategy: Option<SchedulingStrategy>,
}

/// One component of the service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.componentType == 'router' || (!has(self.strategy) && !has(self.endpointPickerConfig) && !has(self.httproute) && !has(self.failureMode))")
        .message("strategy, endpointPickerConfig, httproute and failureMode are only allowed on a router role"),
    validation = Rule::new("self.componentType != 'router' || !has(self.multinode)")
        .message("multinode is not allowed on a router role"),
    validation = Rule::new("self.componentType == 'router' || (has(self.template) && has(self.template.spec) && self.template.spec.containers.size() >= 1)")
        .message("worker, prefiller and decoder roles need a template with at least one container"),
)]
pub struct Role {
    /// Unique name of the role; a DNS-1035 label. Derived object names are `{service}-{name}`,
    /// so the service and role names together must stay within Kubernetes name limits.
    #[schemars(
        length(min = 1, max = 50),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// What the role does.
    pub component_type: ComponentType,

    /// Serving replicas (for a router: endpoint-picker replicas).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Spread each replica over several nodes (a LeaderWorkerSet). Not allowed on a router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multinode: Option<Multinode>,

    /// Pod template. Required for worker, prefiller and decoder; on a router it overrides the
    /// endpoint-picker pod (image, resources, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateSpec>,

    /// Router only: routing strategy; `prefix-cache` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RoutingStrategy>,

    /// Router only: a complete EndpointPickerConfig (YAML, GAIE format); overrides `strategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_picker_config: Option<String>,

    /// Router only: a Gateway API HTTPRouteSpec (parentRefs, hostnames, rules[].matches).
    /// Backend refs are always the service's InferencePool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub httproute: Option<serde_json::Value>,

    /// Router only: what the gateway does when the endpoint picker is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<FailureMode>,
}

fn default_replicas() -> i32 {
    1
}

/// An object whose content the API server keeps as given; the planner checks its shape.
fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// What a role does.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum ComponentType {
    /// A monolithic model server (prefill and decode in one engine).
    #[default]
    Worker,
    /// A prefill-only engine of a disaggregated service.
    Prefiller,
    /// A decode engine of a disaggregated service.
    Decoder,
    /// The endpoint picker and the Gateway API objects in front of the model servers.
    Router,
}

impl ComponentType {
    /// The value used in the CRD and in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentType::Worker => "worker",
            ComponentType::Prefiller => "prefiller",
            ComponentType::Decoder => "decoder",
            ComponentType::Router => "router",
        }
    }
}

/// Built-in routing strategies of the router role.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingStrategy {
    /// Prefix-cache affinity balanced with queue depth and KV-cache load (the default).
    #[default]
    PrefixCache,
    /// Least KV-cache usage.
    KvCacheUtilization,
    /// Shortest waiting queue.
    QueueSize,
    /// Prefer servers that already have the requested LoRA adapter.
    LoraAffinity,
    /// Plain rotation over ready servers.
    RoundRobin,
    /// Pick a decode server, and a prefill server when the uncached prompt is long enough.
    PdDisaggregation,
    /// Prefix-cache affinity from the servers' own KV-cache events, balanced with load.
    KvAware,
}

impl RoutingStrategy {
    /// Every strategy, in declaration order.
    pub const ALL: [RoutingStrategy; 7] = [
        RoutingStrategy::PrefixCache,
        RoutingStrategy::KvCacheUtilization,
        RoutingStrategy::QueueSize,
        RoutingStrategy::LoraAffinity,
        RoutingStrategy::RoundRobin,
        RoutingStrategy::PdDisaggregation,
        RoutingStrategy::KvAware,
    ];

    /// The value used in the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingStrategy::PrefixCache => "prefix-cache",
            RoutingStrategy::KvCacheUtilization => "kv-cache-utilization",
            RoutingStrategy::QueueSize => "queue-size",
            RoutingStrategy::LoraAffinity => "lora-affinity",
            RoutingStrategy::RoundRobin => "round-robin",
            RoutingStrategy::PdDisaggregation => "pd-disaggregation",
            RoutingStrategy::KvAware => "kv-aware",
        }
    }
}

impl std::str::FromStr for RoutingStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RoutingStrategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| {
                let allowed: Vec<_> = RoutingStrategy::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown strategy {s:?}; allowed: {}", allowed.join(", "))
            })
    }
}

/// Gateway behaviour when the endpoint picker cannot be reached.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Forward the request to some pool endpoint anyway.
    FailOpen,
    /// Reject the request (the upstream default).
    #[default]
    FailClose,
}

impl FailureMode {
    /// The value used in the CRD and in the InferencePool.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::FailOpen => "FailOpen",
            FailureMode::FailClose => "FailClose",
        }
    }
}

/// Multi-node replicas.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Multinode {
    /// Pods (nodes) per replica, leader included.
    #[schemars(range(min = 1))]
    pub node_count: i32,
}

/// Pod scheduling policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingStrategy {
    /// `volcano` turns on gang scheduling with a PodGroup; any other value is set as the pods'
    /// `schedulerName`; absent means the cluster's default scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Volcano queue of the PodGroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Priority class of the PodGroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state, written by the operator through the status subresource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceStatus {
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, following Kubernetes conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Per-role state, keyed by role name (the router's endpoint picker included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
    /// One line of ready/desired replicas per role, e.g. `decode 1/1, prefill 2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// State of one role.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas requested.
    pub desired_replicas: i32,
    /// Replicas whose every pod is ready.
    pub ready_replicas: i32,
    /// Pods per replica (`multinode.nodeCount`, else 1).
    pub nodes_per_replica: i32,
    /// `desiredReplicas × nodesPerReplica`.
    pub total_pods: i32,
    /// Ready pods across all replicas.
    pub ready_pods: i32,
    /// Lifecycle summary.
    pub phase: ComponentPhase,
    /// When this entry last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

/// Lifecycle of one role.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ComponentPhase {
    /// Nothing created or scheduled yet.
    Pending,
    /// Some pods exist but not all replicas are ready.
    Deploying,
    /// Every desired replica is ready.
    Running,
    /// Pods crash-loop, cannot pull images, or the gang cannot be scheduled.
    Failed,
    /// A child object has not reported status yet.
    #[default]
    Unknown,
}

impl InferenceService {
    /// The role named `name`, if any.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.spec.roles.iter().find(|r| r.name == name)
    }
}

impl Role {
    /// The containers of the role's pod template (none without a template).
    pub fn containers(&self) -> &[Container] {
        self.template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .map_or(&[], |s| s.containers.as_slice())
    }

    /// Pods per replica: `multinode.nodeCount`, else 1.
    pub fn nodes_per_replica(&self) -> i32 {
        self.multinode.as_ref().map_or(1, |m| m.node_count)
    }

    /// Whether the role becomes a LeaderWorkerSet rather than a StatefulSet.
    pub fn is_multinode(&self) -> bool {
        self.nodes_per_replica() >= 2
    }
}
