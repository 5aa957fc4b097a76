//! The topology planner: an `InferenceService` becomes the exact set of Kubernetes objects that
//! realise it. Pure and deterministic: the same spec and options give the same objects, in the
//! same order, every time.

use std::collections::BTreeMap;

use fusioninfer_api::epp_config::EndpointPickerConfig;
use fusioninfer_api::inference_pool::{
    EndpointPickerRef, InferencePool, InferencePoolSpec, LabelSelector as PoolSelector, Port,
};
use fusioninfer_api::labels::{SERVING, VOLCANO_GROUP_NAME, VOLCANO_SCHEDULER, VOLCANO_TASK_SPEC};
use fusioninfer_api::lws::{LeaderWorkerSet, LeaderWorkerSetSpec, LeaderWorkerTemplate};
use fusioninfer_api::volcano::{PodGroup, PodGroupSpec};
use fusioninfer_api::{ComponentType, InferenceService, Role, RoutingStrategy};
use gateway_api::apis::standard::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteSpec,
};
use k8s_openapi::DeepMerge;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    GRPCAction, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role as RbacRole, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;

use crate::labels::{role_labels, role_selector, service_labels, serving_selector};
use crate::names::{role_object_name, service_name, service_object_name};
use crate::quantity::Nanos;
use crate::strategy::endpoint_picker_config;
use crate::validate::{ValidationError, validate};

/// Port of the endpoint picker's ext_proc gRPC server.
pub const EPP_GRPC_PORT: i32 = 9002;
/// Port of the endpoint picker's gRPC health service.
pub const EPP_HEALTH_PORT: i32 = 9003;
/// Port of the endpoint picker's Prometheus metrics.
pub const EPP_METRICS_PORT: i32 = 9090;
/// Serving port used when the first container declares no port named `http`.
pub const DEFAULT_SERVING_PORT: i32 = 8000;
/// Key of the EndpointPickerConfig in the endpoint picker's ConfigMap.
pub const EPP_CONFIG_KEY: &str = "config.yaml";
/// Where the endpoint picker's ConfigMap is mounted.
pub const EPP_CONFIG_DIR: &str = "/etc/fusioninfer/epp";
/// Name of the endpoint picker container (a router template's container of this name, or its
/// only unnamed container, overrides it).
pub const EPP_CONTAINER: &str = "epp";
/// Endpoint picker image used when the caller does not choose one.
pub const DEFAULT_EPP_IMAGE: &str = concat!(
    "ghcr.io/fusioninfer/fusioninfer-epp:v",
    env!("CARGO_PKG_VERSION")
);

/// Prefill/decode sidecar image used when the caller does not choose one.
pub const DEFAULT_PD_SIDECAR_IMAGE: &str = concat!(
    "ghcr.io/fusioninfer/fusioninfer-pd-sidecar:v",
    env!("CARGO_PKG_VERSION")
);
/// Name of the prefill/decode sidecar container on decode pods.
pub const PD_SIDECAR_CONTAINER: &str = "pd-sidecar";
/// Resource requests of the PD sidecar container (counted in the Volcano PodGroup too).
pub const PD_SIDECAR_REQUESTS: [(&str, &str); 2] = [("cpu", "100m"), ("memory", "64Mi")];
/// Environment variable telling a decode pod's engine container the port to listen on (its
/// command says `--port $(FUSIONINFER_ENGINE_PORT)`): the serving port is the sidecar's.
pub const PD_ENGINE_PORT_ENV: &str = "FUSIONINFER_ENGINE_PORT";
/// The decode engine's internal port (the next free one when the serving port is this).
pub const PD_ENGINE_PORT: i32 = 8200;
/// The sidecar's Prometheus metrics port (the next free one when taken).
pub const PD_SIDECAR_METRICS_PORT: i32 = 9091;

/// Choices the caller makes that are not part of the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Image of the endpoint picker container.
    pub epp_image: String,
    /// Image of the prefill/decode sidecar container (decode pods of a
    /// `pd-disaggregation` router).
    pub pd_sidecar_image: String,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            epp_image: DEFAULT_EPP_IMAGE.to_owned(),
            pd_sidecar_image: DEFAULT_PD_SIDECAR_IMAGE.to_owned(),
        }
    }
}

/// One object the planner wants to exist.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(missing_docs)]
// A plan holds a dozen objects at most; boxing every variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum DesiredObject {
    PodGroup(PodGroup),
    StatefulSet(StatefulSet),
    LeaderWorkerSet(LeaderWorkerSet),
    Service(Service),
    ServiceAccount(ServiceAccount),
    Role(RbacRole),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Deployment(Deployment),
    InferencePool(InferencePool),
    HttpRoute(HttpRoute),
}

macro_rules! each_object {
    ($self:expr, $obj:ident => $body:expr) => {
        match $self {
            DesiredObject::PodGroup($obj) => $body,
            DesiredObject::StatefulSet($obj) => $body,
            DesiredObject::LeaderWorkerSet($obj) => $body,
            DesiredObject::Service($obj) => $body,
            DesiredObject::ServiceAccount($obj) => $body,
            DesiredObject::Role($obj) => $body,
            DesiredObject::RoleBinding($obj) => $body,
            DesiredObject::ConfigMap($obj) => $body,
            DesiredObject::Deployment($obj) => $body,
            DesiredObject::InferencePool($obj) => $body,
            DesiredObject::HttpRoute($obj) => $body,
        }
    };
}

impl DesiredObject {
    /// `apiVersion` of the object.
    pub fn api_version(&self) -> String {
        each_object!(self, o => api_version_of(o))
    }

    /// `kind` of the object.
    pub fn kind(&self) -> String {
        each_object!(self, o => kind_of(o))
    }

    /// Metadata of the object.
    pub fn metadata(&self) -> &ObjectMeta {
        each_object!(self, o => o.meta())
    }

    /// `metadata.name` of the object.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// The object as JSON, with `apiVersion` and `kind`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("planned objects serialize to JSON");
        if let Some(object) = value.as_object_mut() {
            // kube-derived custom resources already carry these; k8s-openapi types do too. Insert
            // them anyway so every output is self-describing whatever the type's serializer does.
            object.insert("apiVersion".into(), self.api_version().into());
            object.insert("kind".into(), self.kind().into());
        }
        value
    }
}

fn api_version_of<K: Resource<DynamicType = ()>>(_: &K) -> String {
    K::api_version(&()).into_owned()
}

fn kind_of<K: Resource<DynamicType = ()>>(_: &K) -> String {
    K::kind(&()).into_owned()
}

/// Validates `isvc` and plans its objects. Invalid specs return every validation error and no
/// objects.
pub fn plan(
    isvc: &InferenceService,
    options: &PlanOptions,
) -> Result<Vec<DesiredObject>, Vec<ValidationError>> {
    let errors = validate(isvc);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Planner::new(isvc, options).objects())
}

struct Planner<'a> {
    isvc: &'a InferenceService,
    options: &'a PlanOptions,
    service: &'a str,
    volcano: bool,
    /// The router names prefillers: decode pods get the sidecar.
    pd: bool,
}

impl<'a> Planner<'a> {
    fn new(isvc: &'a InferenceService, options: &'a PlanOptions) -> Self {
        let volcano = isvc
            .spec
            .scheduling_strategy
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            == Some(VOLCANO_SCHEDULER);
        let pd = plans_pd_sidecar(isvc);
        Planner {
            isvc,
            options,
            service: service_name(isvc),
            volcano,
            pd,
        }
    }

    fn objects(&self) -> Vec<DesiredObject> {
        let mut objects = Vec::new();
        if self.volcano {
            objects.push(DesiredObject::PodGroup(self.pod_group()));
        }
        for role in &self.isvc.spec.roles {
            match role.component_type {
                ComponentType::Router => objects.extend(self.router(role)),
                _ if role.is_multinode() => {
                    objects.push(DesiredObject::LeaderWorkerSet(self.leader_worker_set(role)))
                }
                _ => {
                    objects.push(DesiredObject::StatefulSet(self.stateful_set(role)));
                    objects.push(DesiredObject::Service(self.headless_service(role)));
                }
            }
        }
        objects
    }

    fn serving_roles(&self) -> impl Iterator<Item = &'a Role> {
        self.isvc
            .spec
            .roles
            .iter()
            .filter(|r| r.component_type != ComponentType::Router)
    }

    fn metadata(&self, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.isvc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: self.owner_reference().map(|o| vec![o]),
            ..Default::default()
        }
    }

    /// Controller reference to the InferenceService; absent when rendering a spec that has no
    /// `metadata.uid` yet (it was never stored by an API server).
    fn owner_reference(&self) -> Option<OwnerReference> {
        let uid = self.isvc.metadata.uid.clone()?;
        Some(OwnerReference {
            api_version: InferenceService::api_version(&()).into_owned(),
            kind: InferenceService::kind(&()).into_owned(),
            name: self.service.to_owned(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }

    /// The role's pod template with FusionInfer's labels and scheduling settings added. The
    /// user's labels and annotations are kept; FusionInfer's own keys win on conflict.
    fn pod_template(&self, role: &Role, serving: bool) -> PodTemplateSpec {
        let mut template = role.template.clone().unwrap_or_default();
        let metadata = template.metadata.get_or_insert_with(Default::default);
        let labels = metadata.labels.get_or_insert_with(Default::default);
        labels.extend(role_labels(self.service, role));
        if serving {
            labels.insert(SERVING.to_owned(), "true".to_owned());
        } else {
            labels.remove(SERVING);
        }
        let spec = template.spec.get_or_insert_with(Default::default);
        let scheduling = self.isvc.spec.scheduling_strategy.as_ref();
        if self.volcano {
            let annotations = metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(
                VOLCANO_GROUP_NAME.to_owned(),
                service_object_name(self.service),
            );
            annotations.insert(VOLCANO_TASK_SPEC.to_owned(), role.name.clone());
            spec.scheduler_name = Some(VOLCANO_SCHEDULER.to_owned());
        } else if let Some(name) = scheduling.and_then(|s| s.scheduler_name.clone()) {
            spec.scheduler_name = Some(name);
        }
        if self.pd && role.component_type == ComponentType::Decoder {
            if serving {
                self.add_pd_sidecar(role, spec);
            } else if let Some(engine) = spec.containers.first_mut() {
                // LWS workers share the leader's command: `$(FUSIONINFER_ENGINE_PORT)` must
                // resolve there too.
                set_engine_port(engine, pd_ports(serving_port(role)).0);
            }
        }
        template
    }

    fn stateful_set(&self, role: &Role) -> StatefulSet {
        let name = role_object_name(self.service, &role.name);
        StatefulSet {
            metadata: self.metadata(name.clone(), role_labels(self.service, role)),
            spec: Some(StatefulSetSpec {
                replicas: Some(role.replicas),
                service_name: Some(name),
                // Model servers do not depend on each other: start and replace them in parallel.
                pod_management_policy: Some("Parallel".to_owned()),
                selector: LabelSelector {
                    match_labels: Some(role_selector(self.service, &role.name)),
                    ..Default::default()
                },
                template: self.pod_template(role, true),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn headless_service(&self, role: &Role) -> Service {
        let port = serving_port(role);
        Service {
            metadata: self.metadata(
                role_object_name(self.service, &role.name),
                role_labels(self.service, role),
            ),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_owned()),
                selector: Some(role_selector(self.service, &role.name)),
                ports: Some(vec![ServicePort {
                    name: Some("http".to_owned()),
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn leader_worker_set(&self, role: &Role) -> LeaderWorkerSet {
        let name = role_object_name(self.service, &role.name);
        let mut lws = LeaderWorkerSet::new(
            &name,
            LeaderWorkerSetSpec {
                replicas: Some(role.replicas),
                leader_worker_template: LeaderWorkerTemplate {
                    size: Some(role.nodes_per_replica()),
                    leader_template: Some(self.pod_template(role, true)),
                    worker_template: self.pod_template(role, false),
                    // A multi-node engine cannot survive losing a member: restart the group.
                    restart_policy: Some("RecreateGroupOnPodRestart".to_owned()),
                },
                startup_policy: Some("LeaderCreated".to_owned()),
            },
        );
        lws.metadata = self.metadata(name, role_labels(self.service, role));
        lws
    }

    fn pod_group(&self) -> PodGroup {
        let GangTotals {
            min_member,
            min_task_member,
            min_resources,
        } = gang_totals(&self.isvc.spec.roles, self.pd).expect("validated totals fit");
        let scheduling = self
            .isvc
            .spec
            .scheduling_strategy
            .clone()
            .unwrap_or_default();
        let name = service_object_name(self.service);
        let mut group = PodGroup::new(
            &name,
            PodGroupSpec {
                min_member: Some(min_member),
                min_task_member,
                min_resources: min_resources
                    .into_iter()
                    .map(|(k, v)| (k, v.to_quantity()))
                    .collect(),
                queue: scheduling.queue,
                priority_class_name: scheduling.priority_class_name,
            },
        );
        group.metadata = self.metadata(name, service_labels(self.service));
        group
    }

    fn router(&self, role: &Role) -> Vec<DesiredObject> {
        let name = role_object_name(self.service, &role.name);
        let labels = role_labels(self.service, role);
        let pool = service_object_name(self.service);
        let config = router_config(role);
        let mut objects = Vec::new();
        if self.pd {
            objects.extend(self.pd_sidecar_rbac());
        }
        objects.extend(self.pool_reader_rbac(&name, &labels, &[]));
        objects.extend([
            DesiredObject::ConfigMap(ConfigMap {
                metadata: self.metadata(name.clone(), labels.clone()),
                data: Some(BTreeMap::from([(EPP_CONFIG_KEY.to_owned(), config)])),
                ..Default::default()
            }),
            DesiredObject::Deployment(self.epp_deployment(role, &name, &pool)),
            DesiredObject::Service(self.epp_service(role, &name)),
            DesiredObject::InferencePool(self.inference_pool(role, &name, &pool)),
        ]);
        if let Some(route) = self.http_route(role, &pool) {
            objects.push(DesiredObject::HttpRoute(route));
        }
        objects
    }

    /// A ServiceAccount `name`, a Role reading the pool ([`epp_rbac_rules`]) and a RoleBinding
    /// of the Role to the account and to `other_accounts` (accounts a template names itself).
    fn pool_reader_rbac(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        other_accounts: &[String],
    ) -> [DesiredObject; 3] {
        let subject = |account: &str| Subject {
            kind: "ServiceAccount".to_owned(),
            name: account.to_owned(),
            namespace: self.isvc.metadata.namespace.clone(),
            ..Default::default()
        };
        let mut subjects = vec![subject(name)];
        subjects.extend(other_accounts.iter().map(|a| subject(a)));
        [
            DesiredObject::ServiceAccount(ServiceAccount {
                metadata: self.metadata(name.to_owned(), labels.clone()),
                ..Default::default()
            }),
            DesiredObject::Role(RbacRole {
                metadata: self.metadata(name.to_owned(), labels.clone()),
                rules: Some(epp_rbac_rules()),
            }),
            DesiredObject::RoleBinding(RoleBinding {
                metadata: self.metadata(name.to_owned(), labels.clone()),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".to_owned()),
                    kind: "Role".to_owned(),
                    name: name.to_owned(),
                },
                subjects: Some(subjects),
            }),
        ]
    }

    /// The decode pods' sidecar reads the pool's prefill pods (its allowlist) with its own
    /// account; decode templates that name an account of their own get it bound instead.
    fn pd_sidecar_rbac(&self) -> [DesiredObject; 3] {
        let mut own_accounts: Vec<String> = self
            .serving_roles()
            .filter(|r| r.component_type == ComponentType::Decoder)
            .filter_map(|r| {
                r.template
                    .as_ref()?
                    .spec
                    .as_ref()?
                    .service_account_name
                    .clone()
            })
            .collect();
        own_accounts.sort();
        own_accounts.dedup();
        self.pool_reader_rbac(
            &pd_sidecar_account(self.service),
            &service_labels(self.service),
            &own_accounts,
        )
    }

    /// Puts the sidecar on the serving port of a decode pod and moves the engine (the first
    /// container) to an internal port, given to it in [`PD_ENGINE_PORT_ENV`].
    fn add_pd_sidecar(&self, role: &Role, spec: &mut PodSpec) {
        let serving = serving_port(role);
        let (engine, metrics) = pd_ports(serving);
        if spec.service_account_name.is_none() {
            spec.service_account_name = Some(pd_sidecar_account(self.service));
        }
        if let Some(container) = spec.containers.first_mut() {
            set_engine_port(container, engine);
            // The pod's `http` port is the sidecar's now; the engine's is `engine`.
            for port in container.ports.iter_mut().flatten() {
                if port.name.as_deref() == Some("http") || port.container_port == serving {
                    port.name = Some("engine".to_owned());
                    port.container_port = engine;
                }
            }
            // Probes of the serving port check the engine itself.
            for probe in [
                &mut container.liveness_probe,
                &mut container.readiness_probe,
                &mut container.startup_probe,
            ]
            .into_iter()
            .flatten()
            {
                let ports = [
                    probe.http_get.as_mut().map(|h| &mut h.port),
                    probe.tcp_socket.as_mut().map(|t| &mut t.port),
                ];
                for port in ports.into_iter().flatten() {
                    if *port == IntOrString::Int(serving)
                        || *port == IntOrString::String("http".to_owned())
                    {
                        *port = IntOrString::Int(engine);
                    }
                }
            }
        }
        spec.containers.retain(|c| c.name != PD_SIDECAR_CONTAINER);
        spec.containers
            .push(self.pd_sidecar_container(serving, engine, metrics));
    }

    fn pd_sidecar_container(&self, serving: i32, engine: i32, metrics: i32) -> Container {
        Container {
            name: PD_SIDECAR_CONTAINER.to_owned(),
            image: Some(self.options.pd_sidecar_image.clone()),
            args: Some(
                [
                    "--port",
                    &serving.to_string(),
                    "--engine-port",
                    &engine.to_string(),
                    "--metrics-port",
                    &metrics.to_string(),
                    "--pool-name",
                    &service_object_name(self.service),
                    "--pool-namespace",
                    "$(POD_NAMESPACE)",
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            env: Some(vec![pod_namespace_env()]),
            ports: Some(vec![
                tcp_port("http", serving),
                tcp_port("pd-metrics", metrics),
            ]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    // 503 until its prefill allowlist has synced.
                    path: Some("/ready".to_owned()),
                    port: IntOrString::Int(metrics),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                ..Default::default()
            }),
            resources: Some(ResourceRequirements {
                requests: Some(
                    PD_SIDECAR_REQUESTS
                        .iter()
                        .map(|(resource, quantity)| {
                            ((*resource).to_owned(), Quantity((*quantity).to_owned()))
                        })
                        .collect(),
                ),
                limits: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    Quantity("512Mi".to_owned()),
                )])),
                ..Default::default()
            }),
            // The pod's securityContext is the user's: the seccomp profile is set here.
            security_context: Some(SecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..restricted_security_context()
            }),
            ..Default::default()
        }
    }

    fn epp_deployment(&self, role: &Role, name: &str, pool: &str) -> Deployment {
        let labels = role_labels(self.service, role);
        let mut template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels.clone()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                service_account_name: Some(name.to_owned()),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                containers: vec![self.epp_container(pool)],
                volumes: Some(vec![Volume {
                    name: "config".to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: name.to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        if let Some(mut overrides) = role.template.clone() {
            // A single unnamed container in the router template means "the EPP container".
            if let Some(spec) = overrides.spec.as_mut()
                && let [only] = spec.containers.as_mut_slice()
                && only.name.is_empty()
            {
                only.name = EPP_CONTAINER.to_owned();
            }
            // Resources given for the endpoint picker replace its defaults as a whole: merged
            // key by key, a lower memory limit would fall under the default request.
            let epp_resources = overrides
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .find(|c| c.name == EPP_CONTAINER)
                .and_then(|c| c.resources.clone());
            template.merge_from(overrides);
            if let Some(resources) = epp_resources
                && let Some(epp) = template
                    .spec
                    .iter_mut()
                    .flat_map(|s| &mut s.containers)
                    .find(|c| c.name == EPP_CONTAINER)
            {
                epp.resources = Some(resources);
            }
            // The selector depends on these labels: a template cannot take them away. Nor can
            // it make the endpoint picker a serving pod that the InferencePool would select.
            let pod_labels = template
                .metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(Default::default);
            pod_labels.extend(labels.clone());
            pod_labels.remove(SERVING);
        }
        Deployment {
            metadata: self.metadata(name.to_owned(), labels),
            spec: Some(DeploymentSpec {
                replicas: Some(role.replicas),
                selector: LabelSelector {
                    match_labels: Some(role_selector(self.service, &role.name)),
                    ..Default::default()
                },
                template,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn epp_container(&self, pool: &str) -> Container {
        let grpc_probe = |service: &str, period: i32| Probe {
            grpc: Some(GRPCAction {
                port: EPP_HEALTH_PORT,
                service: Some(service.to_owned()),
            }),
            period_seconds: Some(period),
            ..Default::default()
        };
        Container {
            name: EPP_CONTAINER.to_owned(),
            image: Some(self.options.epp_image.clone()),
            args: Some(
                [
                    "--pool-name",
                    pool,
                    "--pool-namespace",
                    "$(POD_NAMESPACE)",
                    "--config-file",
                    &format!("{EPP_CONFIG_DIR}/{EPP_CONFIG_KEY}"),
                    "--grpc-port",
                    &EPP_GRPC_PORT.to_string(),
                    "--grpc-health-port",
                    &EPP_HEALTH_PORT.to_string(),
                    "--metrics-port",
                    &EPP_METRICS_PORT.to_string(),
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            env: Some(vec![pod_namespace_env()]),
            ports: Some(vec![
                tcp_port("grpc", EPP_GRPC_PORT),
                tcp_port("grpc-health", EPP_HEALTH_PORT),
                tcp_port("metrics", EPP_METRICS_PORT),
            ]),
            liveness_probe: Some(grpc_probe("liveness", 10)),
            readiness_probe: Some(grpc_probe("readiness", 2)),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity("500m".to_owned())),
                    ("memory".to_owned(), Quantity("256Mi".to_owned())),
                ])),
                limits: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    Quantity("1Gi".to_owned()),
                )])),
                ..Default::default()
            }),
            security_context: Some(restricted_security_context()),
            volume_mounts: Some(vec![VolumeMount {
                name: "config".to_owned(),
                mount_path: EPP_CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn epp_service(&self, role: &Role, name: &str) -> Service {
        let port = |name: &str, number: i32, app_protocol: Option<&str>| ServicePort {
            name: Some(name.to_owned()),
            port: number,
            target_port: Some(IntOrString::Int(number)),
            protocol: Some("TCP".to_owned()),
            app_protocol: app_protocol.map(str::to_owned),
            ..Default::default()
        };
        Service {
            metadata: self.metadata(name.to_owned(), role_labels(self.service, role)),
            spec: Some(ServiceSpec {
                selector: Some(role_selector(self.service, &role.name)),
                ports: Some(vec![
                    port("grpc", EPP_GRPC_PORT, Some("kubernetes.io/h2c")),
                    port("grpc-health", EPP_HEALTH_PORT, Some("kubernetes.io/h2c")),
                    port("metrics", EPP_METRICS_PORT, None),
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn inference_pool(&self, role: &Role, epp_service: &str, pool: &str) -> InferencePool {
        let port = self
            .serving_roles()
            .next()
            .map_or(DEFAULT_SERVING_PORT, serving_port);
        let mut object = InferencePool::new(
            pool,
            InferencePoolSpec {
                selector: PoolSelector {
                    match_labels: serving_selector(self.service),
                },
                target_ports: vec![Port { number: port }],
                app_protocol: Some("http".to_owned()),
                endpoint_picker_ref: EndpointPickerRef {
                    group: String::new(),
                    kind: "Service".to_owned(),
                    name: epp_service.to_owned(),
                    port: Port {
                        number: EPP_GRPC_PORT,
                    },
                    failure_mode: Some(role.failure_mode.unwrap_or_default().as_str().to_owned()),
                },
            },
        );
        object.metadata = self.metadata(pool.to_owned(), role_labels(self.service, role));
        object
    }

    /// The user's route with every rule sent to the pool; no route without `httproute`, since a
    /// route without parent Gateways attaches to nothing.
    fn http_route(&self, role: &Role, pool: &str) -> Option<HttpRoute> {
        let mut spec: HttpRouteSpec =
            serde_json::from_value(role.httproute.clone()?).expect("validated HTTPRoute spec");
        let backend = HttpRouteRulesBackendRefs {
            group: Some(<InferencePool as Resource>::group(&()).into_owned()),
            kind: Some(<InferencePool as Resource>::kind(&()).into_owned()),
            name: pool.to_owned(),
            ..Default::default()
        };
        let rules = spec
            .rules
            .get_or_insert_with(|| vec![HttpRouteRules::default()]);
        if rules.is_empty() {
            rules.push(HttpRouteRules::default());
        }
        for rule in rules {
            rule.backend_refs = Some(vec![backend.clone()]);
        }
        let mut route = HttpRoute::new(pool, spec);
        route.metadata = self.metadata(pool.to_owned(), role_labels(self.service, role));
        Some(route)
    }
}

/// A named TCP container port.
fn tcp_port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

/// Tells the engine container its port in [`PD_ENGINE_PORT_ENV`].
fn set_engine_port(container: &mut Container, port: i32) {
    let env = container.env.get_or_insert_with(Default::default);
    env.retain(|e| e.name != PD_ENGINE_PORT_ENV);
    env.push(EnvVar {
        name: PD_ENGINE_PORT_ENV.to_owned(),
        value: Some(port.to_string()),
        ..Default::default()
    });
}

/// `POD_NAMESPACE` from the downward API (`--pool-namespace $(POD_NAMESPACE)`).
fn pod_namespace_env() -> EnvVar {
    EnvVar {
        name: "POD_NAMESPACE".to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.namespace".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// FusionInfer's own containers: non-root, no privilege escalation, no capabilities, read-only
/// root filesystem, the runtime's default seccomp profile.
fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The EndpointPickerConfig text of a router role: its own, or its strategy's.
fn router_config(role: &Role) -> String {
    match &role.endpoint_picker_config {
        Some(text) => text.clone(),
        None => {
            endpoint_picker_config(role.strategy.unwrap_or(RoutingStrategy::PrefixCache)).to_owned()
        }
    }
}

/// Whether an EndpointPickerConfig names a prefiller per request, so that decode pods need the
/// prefill/decode sidecar ([`EndpointPickerConfig::names_prefillers`]).
pub fn names_prefillers(config: &str) -> bool {
    EndpointPickerConfig::parse(config).is_ok_and(|config| config.names_prefillers())
}

/// The ServiceAccount of the decode pods' sidecar (`{service}-pd-sidecar`).
pub fn pd_sidecar_account(service: &str) -> String {
    format!("{service}-pd-sidecar")
}

/// The decode engine's internal port and the sidecar's metrics port for a serving port: the
/// defaults, moved past the serving port when it is one of them.
pub fn pd_ports(serving: i32) -> (i32, i32) {
    let engine = if serving == PD_ENGINE_PORT {
        PD_ENGINE_PORT + 1
    } else {
        PD_ENGINE_PORT
    };
    let metrics = if serving == PD_SIDECAR_METRICS_PORT {
        PD_SIDECAR_METRICS_PORT + 1
    } else {
        PD_SIDECAR_METRICS_PORT
    };
    (engine, metrics)
}

/// What the endpoint picker and the prefill/decode sidecar may read: pods and InferencePools of
/// their own namespace, read-only.
pub fn epp_rbac_rules() -> Vec<PolicyRule> {
    let read = || ["get", "list", "watch"].map(str::to_owned).to_vec();
    vec![
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".to_owned()]),
            verbs: read(),
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec![<InferencePool as Resource>::group(&()).into_owned()]),
            resources: Some(vec![<InferencePool as Resource>::plural(&()).into_owned()]),
            verbs: read(),
            ..Default::default()
        },
    ]
}

/// The port model servers of `role` listen on: the container port named `http` of the first
/// container, else [`DEFAULT_SERVING_PORT`].
pub fn serving_port(role: &Role) -> i32 {
    role.containers()
        .first()
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some("http")))
        .map_or(DEFAULT_SERVING_PORT, |p| p.container_port)
}

/// Resources one pod of `role` needs: per resource, the sum over its containers of the request,
/// or the limit where there is no request (Kubernetes defaults the request to the limit).
pub fn pod_resources(role: &Role) -> BTreeMap<String, Nanos> {
    try_pod_resources(role).expect("validated quantities parse and fit")
}

/// What the Volcano PodGroup of a service asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GangTotals {
    /// Pods of every serving role (`minMember`).
    pub min_member: i32,
    /// Pods per serving role (`minTaskMember`), keyed by role name.
    pub min_task_member: BTreeMap<String, i32>,
    /// [`pod_resources`] × pods, summed over the serving roles (`minResources`).
    pub min_resources: BTreeMap<String, Nanos>,
}

/// A total of the PodGroup that does not fit: the role (index in `spec.roles`) and field
/// where it overflowed, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotalsError {
    /// Index of the role in `spec.roles`.
    pub role: usize,
    /// Path of the field below `spec.roles[role]`, e.g. `replicas`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Whether the planner puts the PD sidecar on decode pods: the router's scheduler config names
/// prefillers (see [`names_prefillers`]).
pub fn plans_pd_sidecar(isvc: &InferenceService) -> bool {
    isvc.spec
        .roles
        .iter()
        .find(|r| r.component_type == ComponentType::Router)
        .is_some_and(|router| names_prefillers(&router_config(router)))
}

/// The PodGroup's totals over the serving roles of `roles`, or where they stop fitting (an
/// int32 pod count, an i128 nano-unit quantity). With `pd_sidecar` (see [`plans_pd_sidecar`])
/// each decode pod that gets the sidecar (every replica's leader) also counts its requests.
/// Expects replicas ≥ 0 and nodeCount ≥ 1.
pub fn gang_totals(roles: &[Role], pd_sidecar: bool) -> Result<GangTotals, TotalsError> {
    let mut totals = GangTotals::default();
    for (index, role) in roles.iter().enumerate() {
        if role.component_type == ComponentType::Router {
            continue;
        }
        let error = |field: &str, message: String| TotalsError {
            role: index,
            field: field.to_owned(),
            message,
        };
        let pods = role
            .replicas
            .checked_mul(role.nodes_per_replica())
            .ok_or_else(|| error("replicas", "replicas × nodeCount is too large".to_owned()))?;
        totals.min_member = totals.min_member.checked_add(pods).ok_or_else(|| {
            error(
                "replicas",
                format!(
                    "the PodGroup's minMember (pods of all serving roles) exceeds {}",
                    i32::MAX
                ),
            )
        })?;
        totals.min_task_member.insert(role.name.clone(), pods);
        let too_large = |resource: &str| {
            error(
                "template.spec.containers",
                format!(
                    "the PodGroup's total {resource} (requests × pods of all serving roles) is too large"
                ),
            )
        };
        let mut per_pod_sets = vec![(try_pod_resources(role).map_err(|e| too_large(&e))?, pods)];
        if pd_sidecar && role.component_type == ComponentType::Decoder {
            let sidecar = PD_SIDECAR_REQUESTS
                .iter()
                .map(|(resource, quantity)| {
                    let value = Nanos::parse(quantity).expect("constant quantities parse");
                    ((*resource).to_owned(), value)
                })
                .collect();
            per_pod_sets.push((sidecar, role.replicas));
        }
        for (per_pod_resources, count) in per_pod_sets {
            for (resource, per_pod) in per_pod_resources {
                let sum = totals.min_resources.entry(resource.clone()).or_default();
                *sum = per_pod
                    .checked_mul(i128::from(count))
                    .and_then(|total| sum.checked_add(total))
                    .ok_or_else(|| too_large(&resource))?;
            }
        }
    }
    Ok(totals)
}

/// [`pod_resources`], or the resource whose quantity does not parse or whose sum overflows.
fn try_pod_resources(role: &Role) -> Result<BTreeMap<String, Nanos>, String> {
    let mut total: BTreeMap<String, Nanos> = BTreeMap::new();
    for container in role.containers() {
        let Some(resources) = &container.resources else {
            continue;
        };
        let mut effective = resources.requests.clone().unwrap_or_default();
        for (resource, limit) in resources.limits.iter().flatten() {
            effective
                .entry(resource.clone())
                .or_insert_with(|| limit.clone());
        }
        for (resource, quantity) in effective {
            let value = Nanos::parse(&quantity.0).map_err(|_| resource.clone())?;
            let sum = total.entry(resource.clone()).or_default();
            *sum = sum.checked_add(value).ok_or(resource)?;
        }
    }
    Ok(total)
}
