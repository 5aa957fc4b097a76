//! What `fusioninfer up` will run for one `InferenceService`: a pure function of the spec and
//! the options, so that everything it decides (ports, labels, names, the endpoint picker's
//! configuration, Envoy's configuration) is unit-tested without starting anything.
//!
//! The cluster planner is the source of truth: the spec is validated and planned exactly as
//! `fusioninfer render` does, each model server gets the labels of the pod template the planner
//! emits for its role (so the endpoint picker's role filters see what they see in a cluster), and
//! the endpoint picker gets the text of the planner's ConfigMap.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use fusioninfer_api::{ComponentType, FailureMode, InferenceService, Role, RoutingStrategy};
use fusioninfer_core::names::{role_object_name, service_name};
use fusioninfer_core::plan::{EPP_CONFIG_KEY, PlanOptions, names_prefillers, plan};
use fusioninfer_core::strategy::endpoint_picker_config;
use serde_json::Value;

use super::envoy::{EnvoySettings, envoy_config};

/// Role annotation (on `template.metadata.annotations`): comma-separated `ip:port` of model
/// servers that already run on this machine; nothing is started for the role.
pub const ADDRESSES_ANNOTATION: &str = "local.fusioninfer.io/addresses";
/// Role annotation: a shell command that starts one model server, run once per replica with
/// `{port}`, `{replica}`, `{model}` and `{name}` replaced (and `PORT` in its environment).
pub const COMMAND_ANNOTATION: &str = "local.fusioninfer.io/command";
/// Role annotation: extra simulator flags for the role's replicas (e.g. `--time-scale 0.1`).
pub const SIM_ARGS_ANNOTATION: &str = "local.fusioninfer.io/sim-args";
/// Role annotation: the served model name, when it cannot be read from the container's args.
pub const MODEL_ANNOTATION: &str = "local.fusioninfer.io/model";

/// A simulator's KV-event publisher listens this far above its serving port, when the
/// scheduler reads KV events (`precise-prefix-cache-scorer`, strategy `kv-aware`).
pub const KV_EVENTS_PORT_OFFSET: u16 = 2000;

/// Local mode binds and dials this address only.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Simulator flags that `fusioninfer up` sets itself and that may not be overridden.
const MANAGED_SIM_FLAGS: [&str; 3] = ["--host", "--port", "--replicas"];

/// The ports local mode listens on (all on 127.0.0.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Envoy's listener: the OpenAI base URL is `http://127.0.0.1:{gateway}/v1`.
    pub gateway: u16,
    /// Envoy's admin interface (readiness).
    pub gateway_admin: u16,
    /// The first model server; the others follow on consecutive ports, role after role.
    pub first_backend: u16,
    /// The endpoint picker's ext_proc gRPC port.
    pub epp_grpc: u16,
    /// The endpoint picker's gRPC health port.
    pub epp_health: u16,
    /// The endpoint picker's Prometheus metrics port.
    pub epp_metrics: u16,
}

impl Default for Ports {
    /// The cluster's ports where there is one (endpoint picker 9002/9003/9090), Envoy on 8080
    /// (admin 9901), model servers from 8001.
    fn default() -> Self {
        Ports {
            gateway: 8080,
            gateway_admin: 9901,
            first_backend: 8001,
            epp_grpc: 9002,
            epp_health: 9003,
            epp_metrics: 9090,
        }
    }
}

/// A scheduler configuration that replaces the router role's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulerOverride {
    /// One of the planner's strategies.
    Strategy(RoutingStrategy),
    /// A complete EndpointPickerConfig, with a name to show.
    Config {
        /// Shown in the summary (e.g. the file it came from).
        name: String,
        /// The EndpointPickerConfig YAML.
        text: String,
    },
}

/// How to realise the spec, beyond what the spec says.
#[derive(Clone, Debug, Default)]
pub struct LocalOptions {
    /// Where everything listens.
    pub ports: Ports,
    /// Per role: model servers already running (loopback `ip:port`); wins over the annotation.
    pub role_addresses: BTreeMap<String, Vec<SocketAddr>>,
    /// Per role: a command starting one model server; wins over the annotation.
    pub role_commands: BTreeMap<String, String>,
    /// Extra simulator flags for every simulated role (after the role's annotation, winning
    /// over it flag by flag).
    pub sim_args: Vec<String>,
    /// Replace the router role's strategy or EndpointPickerConfig.
    pub scheduler: Option<SchedulerOverride>,
    /// Seed of the endpoint picker's tie breaks (random when absent).
    pub epp_seed: Option<u64>,
}

/// Everything `fusioninfer up` will run.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalPlan {
    /// The InferenceService's name.
    pub service: String,
    /// Serving roles in spec order.
    pub roles: Vec<RolePlan>,
    /// The endpoint picker.
    pub router: RouterPlan,
    /// Envoy.
    pub gateway: GatewayPlan,
}

/// One serving role.
#[derive(Clone, Debug, PartialEq)]
pub struct RolePlan {
    /// Role name.
    pub name: String,
    /// worker, prefiller or decoder.
    pub component_type: ComponentType,
    /// Served model name.
    pub model: String,
    /// What serves the role.
    pub source: BackendSource,
    /// Its model servers (one per replica, or the given addresses).
    pub backends: Vec<Backend>,
}

/// What serves a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSource {
    /// `fusioninfer-sim` processes (the default).
    Simulator,
    /// A user command per replica (a real engine such as vLLM).
    Command(String),
    /// Servers that already run; nothing is started.
    External,
}

/// One model server.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    /// The name its pod would have (`{service}-{role}-{index}`); the simulator reports it in
    /// the `x-inference-pod` response header.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Where it serves (OpenAI API, `/health`, `/metrics`).
    pub address: SocketAddr,
    /// The labels the planner puts on the role's serving pods.
    pub labels: BTreeMap<String, String>,
    /// How to start it; `None` for an external server.
    pub launch: Option<Launch>,
    /// The prefill/decode sidecar in front of it (decoders behind a router that names
    /// prefillers): it listens on `address`, the server on [`SidecarPlan::engine`].
    pub sidecar: Option<SidecarPlan>,
    /// Its KV-event publisher (ZMQ PUB), when the scheduler reads KV events and local mode
    /// starts the server as a simulator.
    pub kv_events: Option<SocketAddr>,
}

impl Backend {
    /// Where the model server itself listens (behind its sidecar, if any).
    pub fn engine_address(&self) -> SocketAddr {
        self.sidecar.as_ref().map_or(self.address, |s| s.engine)
    }
}

/// A `fusioninfer-pd-sidecar` in front of a decoder, as the planner puts one on decode pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarPlan {
    /// The decoder behind it.
    pub engine: SocketAddr,
    /// Its Prometheus metrics.
    pub metrics: SocketAddr,
    /// The static allowlist: every prefiller of the plan.
    pub prefillers: Vec<SocketAddr>,
}

impl SidecarPlan {
    /// The sidecar's command line when it listens on `listen`.
    pub fn args(&self, listen: SocketAddr) -> Vec<String> {
        let prefillers: Vec<String> = self.prefillers.iter().map(|a| a.to_string()).collect();
        vec![
            "--bind-address".to_owned(),
            listen.ip().to_string(),
            "--port".to_owned(),
            listen.port().to_string(),
            "--engine-host".to_owned(),
            self.engine.ip().to_string(),
            "--engine-port".to_owned(),
            self.engine.port().to_string(),
            "--metrics-port".to_owned(),
            self.metrics.port().to_string(),
            "--prefillers".to_owned(),
            prefillers.join(","),
            // Local mode stops children with SIGTERM and SIGKILL after 5 s.
            "--shutdown-grace".to_owned(),
            "3s".to_owned(),
        ]
    }
}

/// How a model server process is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// The simulator binary with these arguments.
    Simulator(Vec<String>),
    /// `sh -c 'exec {command}'` with the placeholders replaced, and `PORT` set.
    Shell(String),
}

/// The endpoint picker.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterPlan {
    /// Where the configuration comes from, for people (`strategy prefix-cache`, …).
    pub describe: String,
    /// The EndpointPickerConfig YAML the picker is started with.
    pub config: String,
    /// ext_proc gRPC address.
    pub grpc: SocketAddr,
    /// gRPC health address.
    pub health: SocketAddr,
    /// Metrics address (`GET /metrics`; the readiness check reads its endpoint gauge).
    pub metrics: SocketAddr,
    /// Tie-break seed.
    pub seed: Option<u64>,
    /// The router role's failure mode (what Envoy does when the picker is unreachable).
    pub failure_mode: FailureMode,
}

/// Envoy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPlan {
    /// The listener (the OpenAI base URL's address).
    pub listener: SocketAddr,
    /// The admin interface.
    pub admin: SocketAddr,
}

/// One port local mode will bind, for the port-taken message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortUse {
    /// The port.
    pub port: u16,
    /// What listens there.
    pub what: String,
    /// The `fusioninfer up` flag that moves it.
    pub flag: &'static str,
}

/// Why a spec cannot run locally: every problem found, each naming its role or option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanErrors(pub Vec<String>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

impl LocalPlan {
    /// Plans `isvc` for local mode. The spec must be valid (the same validation as
    /// `fusioninfer validate`); role options must name serving roles; addresses must be
    /// loopback.
    pub fn new(isvc: &InferenceService, options: &LocalOptions) -> Result<LocalPlan, PlanErrors> {
        let objects: Vec<Value> = plan(isvc, &PlanOptions::default())
            .map_err(|errors| PlanErrors(errors.iter().map(ToString::to_string).collect()))?
            .iter()
            .map(|o| o.to_json())
            .collect();
        let service = service_name(isvc).to_owned();
        let mut errors = Vec::new();

        let serving: Vec<&Role> = isvc
            .spec
            .roles
            .iter()
            .filter(|r| r.component_type != ComponentType::Router)
            .collect();
        for name in options
            .role_addresses
            .keys()
            .chain(options.role_commands.keys())
        {
            if !serving.iter().any(|r| &r.name == name) {
                let known: Vec<&str> = serving.iter().map(|r| r.name.as_str()).collect();
                errors.push(format!(
                    "no serving role {name:?} (serving roles: {})",
                    known.join(", ")
                ));
            }
        }

        let router_role = isvc
            .spec
            .roles
            .iter()
            .find(|r| r.component_type == ComponentType::Router);
        let (describe, config) = match &options.scheduler {
            Some(SchedulerOverride::Strategy(s)) => (
                format!("strategy {} (--strategy)", s.as_str()),
                endpoint_picker_config(*s).to_owned(),
            ),
            Some(SchedulerOverride::Config { name, text }) => (name.clone(), text.clone()),
            None => match router_role {
                Some(role) => {
                    let text = planned_epp_config(&objects).unwrap_or_else(|| {
                        endpoint_picker_config(role.strategy.unwrap_or_default()).to_owned()
                    });
                    let describe = if role.endpoint_picker_config.is_some() {
                        format!("endpointPickerConfig of role {}", role.name)
                    } else {
                        format!("strategy {}", role.strategy.unwrap_or_default().as_str())
                    };
                    (describe, text)
                }
                None => (
                    format!(
                        "strategy {} (no router role; the default)",
                        RoutingStrategy::default().as_str()
                    ),
                    endpoint_picker_config(RoutingStrategy::default()).to_owned(),
                ),
            },
        };
        // The planner's rule: a router that names prefillers gets a sidecar on each decoder.
        let pd = names_prefillers(&config);

        let mut next_port = u32::from(options.ports.first_backend);
        let mut roles = Vec::new();
        for role in &serving {
            let annotations = role_annotations(role);
            let labels = pod_labels(&objects, &service, role);
            let model = annotations
                .get(MODEL_ANNOTATION)
                .cloned()
                .or_else(|| model_from_container(role))
                .unwrap_or_else(|| service.clone());

            let addresses = match options.role_addresses.get(&role.name) {
                Some(list) => Some(list.clone()),
                None => annotations.get(ADDRESSES_ANNOTATION).map(|text| {
                    parse_addresses(text).unwrap_or_else(|e| {
                        errors.push(format!(
                            "role {}: annotation {ADDRESSES_ANNOTATION}: {e}",
                            role.name
                        ));
                        Vec::new()
                    })
                }),
            };
            let command = options
                .role_commands
                .get(&role.name)
                .or_else(|| annotations.get(COMMAND_ANNOTATION))
                .cloned();
            let source = match (&addresses, command) {
                (Some(_), Some(_)) => {
                    errors.push(format!(
                        "role {}: both addresses and a command given; use one",
                        role.name
                    ));
                    BackendSource::External
                }
                (Some(_), None) => BackendSource::External,
                (None, Some(command)) => BackendSource::Command(command),
                (None, None) => BackendSource::Simulator,
            };

            let sim_args = match &source {
                BackendSource::Simulator => {
                    let from_annotation = annotations
                        .get(SIM_ARGS_ANNOTATION)
                        .map(|s| split_args(s))
                        .unwrap_or_default();
                    match merge_flags(&from_annotation, &options.sim_args) {
                        Ok(args) => args,
                        Err(e) => {
                            errors.push(format!("role {}: {e}", role.name));
                            Vec::new()
                        }
                    }
                }
                _ => Vec::new(),
            };

            let base_name = role_object_name(&service, &role.name);
            let mut backends = Vec::new();
            match &source {
                BackendSource::External => {
                    for (i, address) in addresses.unwrap_or_default().into_iter().enumerate() {
                        if !address.ip().is_loopback() {
                            errors.push(format!(
                                "role {}: {address} is not a loopback address; local mode only talks to this machine",
                                role.name
                            ));
                        }
                        backends.push(Backend {
                            name: format!("{base_name}-{i}"),
                            role: role.name.clone(),
                            address,
                            labels: labels.clone(),
                            launch: None,
                            sidecar: None,
                            kv_events: None,
                        });
                    }
                    if backends.is_empty() {
                        errors.push(format!("role {}: no addresses given", role.name));
                    }
                }
                BackendSource::Simulator | BackendSource::Command(_) => {
                    // A decoder with a sidecar takes three ports: the sidecar (the address the
                    // picker routes to), the server behind it, the sidecar's metrics.
                    let with_sidecar = pd && role.component_type == ComponentType::Decoder;
                    let width = if with_sidecar { 3 } else { 1 };
                    for i in 0..role.replicas.max(0) {
                        let (Ok(port), Ok(_)) = (
                            u16::try_from(next_port),
                            u16::try_from(next_port + width - 1),
                        ) else {
                            errors.push(format!(
                                "role {}: ports from {} run past 65535",
                                role.name, options.ports.first_backend
                            ));
                            break;
                        };
                        next_port += width;
                        let sidecar = with_sidecar.then(|| SidecarPlan {
                            engine: SocketAddr::new(LOOPBACK, port + 1),
                            metrics: SocketAddr::new(LOOPBACK, port + 2),
                            prefillers: Vec::new(),
                        });
                        let engine_port = sidecar.as_ref().map_or(port, |s| s.engine.port());
                        let name = format!("{base_name}-{i}");
                        let launch = match &source {
                            BackendSource::Command(command) => Launch::Shell(
                                command
                                    .replace("{port}", &engine_port.to_string())
                                    .replace("{replica}", &i.to_string())
                                    .replace("{model}", &model)
                                    .replace("{name}", &name),
                            ),
                            _ => {
                                let mut args = vec![
                                    "--host".to_owned(),
                                    LOOPBACK.to_string(),
                                    "--port".to_owned(),
                                    engine_port.to_string(),
                                    "--model".to_owned(),
                                    model.clone(),
                                    "--instance".to_owned(),
                                    name.clone(),
                                ];
                                args = merge_flags(&args, &sim_args).unwrap_or(args);
                                Launch::Simulator(args)
                            }
                        };
                        backends.push(Backend {
                            name,
                            role: role.name.clone(),
                            address: SocketAddr::new(LOOPBACK, port),
                            labels: labels.clone(),
                            launch: Some(launch),
                            sidecar,
                            kv_events: None,
                        });
                    }
                }
            }
            roles.push(RolePlan {
                name: role.name.clone(),
                component_type: role.component_type,
                model,
                source,
                backends,
            });
        }
        let prefillers: Vec<SocketAddr> = roles
            .iter()
            .filter(|r| r.component_type == ComponentType::Prefiller)
            .flat_map(|r| r.backends.iter().map(|b| b.address))
            .collect();
        for sidecar in roles
            .iter_mut()
            .flat_map(|r| r.backends.iter_mut())
            .filter_map(|b| b.sidecar.as_mut())
        {
            sidecar.prefillers = prefillers.clone();
        }
        if roles.iter().all(|r| r.backends.is_empty()) {
            errors.push("no model server to run: every serving role has 0 replicas".to_owned());
        }

        if reads_kv_events(&config) {
            for backend in roles.iter_mut().flat_map(|r| r.backends.iter_mut()) {
                let Some(Launch::Simulator(args)) = &mut backend.launch else {
                    continue;
                };
                let Some(port) = backend.address.port().checked_add(KV_EVENTS_PORT_OFFSET) else {
                    errors.push(format!(
                        "model server {}: its KV-event port runs past 65535",
                        backend.name
                    ));
                    continue;
                };
                let publisher = SocketAddr::new(LOOPBACK, port);
                args.extend([
                    "--kv-events-endpoint".to_owned(),
                    format!("tcp://{publisher}"),
                    // vLLM's topic convention (llm-d's `kv@` filter matches it).
                    "--kv-events-topic".to_owned(),
                    "kv@{host}:{port}@{model}".to_owned(),
                ]);
                backend.kv_events = Some(publisher);
            }
        }
        let at = |port| SocketAddr::new(LOOPBACK, port);
        let ports = &options.ports;
        let local = LocalPlan {
            service,
            roles,
            router: RouterPlan {
                describe,
                config,
                grpc: at(ports.epp_grpc),
                health: at(ports.epp_health),
                metrics: at(ports.epp_metrics),
                seed: options.epp_seed,
                failure_mode: router_role.and_then(|r| r.failure_mode).unwrap_or_default(),
            },
            gateway: GatewayPlan {
                listener: at(ports.gateway),
                admin: at(ports.gateway_admin),
            },
        };
        let mut seen: BTreeMap<u16, String> = BTreeMap::new();
        for port in local.ports_to_bind() {
            if let Some(first) = seen.insert(port.port, port.what.clone()) {
                errors.push(format!(
                    "port {} is planned twice: {first} and {} (move one with {})",
                    port.port, port.what, port.flag
                ));
            }
        }
        if errors.is_empty() {
            Ok(local)
        } else {
            Err(PlanErrors(errors))
        }
    }

    /// Every model server, role after role.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.roles.iter().flat_map(|r| r.backends.iter())
    }

    /// The OpenAI base URL (`http://127.0.0.1:8080/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.gateway.listener)
    }

    /// The model name of the first serving role (what a client puts in `model`).
    pub fn model(&self) -> &str {
        self.roles.first().map_or("", |r| r.model.as_str())
    }

    /// The ports this plan binds itself (external servers' ports are not ours).
    pub fn ports_to_bind(&self) -> Vec<PortUse> {
        let mut ports = vec![
            PortUse {
                port: self.gateway.listener.port(),
                what: "the Envoy listener".to_owned(),
                flag: "--port",
            },
            PortUse {
                port: self.gateway.admin.port(),
                what: "Envoy's admin interface".to_owned(),
                flag: "--envoy-admin-port",
            },
            PortUse {
                port: self.router.grpc.port(),
                what: "the endpoint picker (ext_proc gRPC)".to_owned(),
                flag: "--epp-port",
            },
            PortUse {
                port: self.router.health.port(),
                what: "the endpoint picker (gRPC health)".to_owned(),
                flag: "--epp-port",
            },
            PortUse {
                port: self.router.metrics.port(),
                what: "the endpoint picker (metrics)".to_owned(),
                flag: "--epp-metrics-port",
            },
        ];
        for backend in self.backends().filter(|b| b.launch.is_some()) {
            ports.push(PortUse {
                port: backend.address.port(),
                what: match backend.sidecar {
                    Some(_) => format!("the prefill/decode sidecar of {}", backend.name),
                    None => format!("model server {}", backend.name),
                },
                flag: "--backend-port",
            });
            if let Some(sidecar) = &backend.sidecar {
                ports.push(PortUse {
                    port: sidecar.engine.port(),
                    what: format!("model server {} (behind its sidecar)", backend.name),
                    flag: "--backend-port",
                });
                ports.push(PortUse {
                    port: sidecar.metrics.port(),
                    what: format!("the sidecar metrics of {}", backend.name),
                    flag: "--backend-port",
                });
            }
            if let Some(publisher) = backend.kv_events {
                ports.push(PortUse {
                    port: publisher.port(),
                    what: format!("model server {} (KV events)", backend.name),
                    flag: "--backend-port",
                });
            }
        }
        ports
    }

    /// The endpoint picker's endpoints file (JSON, which its YAML reader accepts): every
    /// model server with its pod labels.
    pub fn endpoints_file(&self) -> String {
        let endpoints: Vec<Value> = self
            .backends()
            .map(|b| {
                let mut entry = serde_json::json!({
                    "address": b.address.to_string(),
                    "labels": b.labels,
                });
                if let Some(publisher) = b.kv_events {
                    entry["kvEventsAddress"] = format!("tcp://{publisher}").into();
                }
                entry
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&serde_json::json!({ "endpoints": endpoints }))
            .expect("JSON");
        text.push('\n');
        text
    }

    /// The endpoint picker's command-line arguments.
    pub fn epp_args(&self, endpoints_file: &Path, config_file: &Path) -> Vec<String> {
        let mut args = vec![
            "--endpoints-file".to_owned(),
            endpoints_file.display().to_string(),
            "--config-file".to_owned(),
            config_file.display().to_string(),
            "--bind-address".to_owned(),
            LOOPBACK.to_string(),
            "--grpc-port".to_owned(),
            self.router.grpc.port().to_string(),
            "--grpc-health-port".to_owned(),
            self.router.health.port().to_string(),
            "--metrics-port".to_owned(),
            self.router.metrics.port().to_string(),
            // The file never changes while `up` runs; poll it rarely.
            "--endpoints-file-poll-interval".to_owned(),
            "2s".to_owned(),
        ];
        if let Some(seed) = self.router.seed {
            args.push("--seed".to_owned());
            args.push(seed.to_string());
        }
        args
    }

    /// Envoy's bootstrap configuration.
    pub fn envoy_config(&self) -> String {
        envoy_config(&EnvoySettings {
            listener: self.gateway.listener,
            admin: self.gateway.admin,
            epp: self.router.grpc,
            fail_open: self.router.failure_mode == FailureMode::FailOpen,
            fallback: self.backends().map(|b| b.address).collect(),
        })
    }
}

fn role_annotations(role: &Role) -> BTreeMap<String, String> {
    role.template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

/// The labels of the role's serving pods in the planner's output (StatefulSet template, or the
/// LeaderWorkerSet's leader template).
fn pod_labels(objects: &[Value], service: &str, role: &Role) -> BTreeMap<String, String> {
    let name = role_object_name(service, &role.name);
    let labels = objects
        .iter()
        .filter(|o| o["metadata"]["name"] == name.as_str())
        .find_map(|o| match o["kind"].as_str() {
            Some("StatefulSet") => o.pointer("/spec/template/metadata/labels"),
            Some("LeaderWorkerSet") => {
                o.pointer("/spec/leaderWorkerTemplate/leaderTemplate/metadata/labels")
            }
            _ => None,
        });
    labels
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_else(|| fusioninfer_core::labels::role_labels(service, role))
}

/// Whether an EndpointPickerConfig has a plugin that reads the servers' KV events.
fn reads_kv_events(config: &str) -> bool {
    fusioninfer_api::epp_config::EndpointPickerConfig::parse(config)
        .is_ok_and(|c| c.has_plugin_type("precise-prefix-cache-scorer"))
}

/// The EndpointPickerConfig in the planner's ConfigMap.
fn planned_epp_config(objects: &[Value]) -> Option<String> {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .and_then(|o| o["data"][EPP_CONFIG_KEY].as_str())
        .map(str::to_owned)
}

/// The served model name from the first container's command line: `--served-model-name X`,
/// else `--model X` / `--model-path X`, else `serve X` (`vllm serve X`).
pub fn model_from_container(role: &Role) -> Option<String> {
    let container = role.template.as_ref()?.spec.as_ref()?.containers.first()?;
    let words: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(String::as_str)
        .collect();
    let flag = |name: &str| {
        words.iter().enumerate().find_map(|(i, w)| {
            if *w == name {
                words.get(i + 1).map(|v| (*v).to_owned())
            } else {
                w.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::to_owned)
            }
        })
    };
    flag("--served-model-name")
        .or_else(|| flag("--model"))
        .or_else(|| flag("--model-path"))
        .or_else(|| {
            words
                .iter()
                .position(|w| *w == "serve")
                .and_then(|i| words.get(i + 1))
                .filter(|w| !w.starts_with('-'))
                .map(|w| (*w).to_owned())
        })
        .filter(|m| !m.is_empty())
}

/// Parses `127.0.0.1:8000, 127.0.0.1:8001`.
pub fn parse_addresses(text: &str) -> Result<Vec<SocketAddr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|_| format!("{s:?} is not ip:port"))
        })
        .collect()
}

/// Splits flags on whitespace (no quoting: simulator flags take plain values).
pub fn split_args(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// `base` with the flags of `overrides` replacing same-named flags (`--x v`, `--x=v` and bare
/// `--x` forms), in `base`'s order, new flags appended. The flags `up` manages itself
/// (`--host`, `--port`, `--replicas`) may not appear in `overrides`.
pub fn merge_flags(base: &[String], overrides: &[String]) -> Result<Vec<String>, String> {
    let parse = |args: &[String]| -> Result<Vec<(String, Vec<String>)>, String> {
        let mut flags: Vec<(String, Vec<String>)> = Vec::new();
        for arg in args {
            if let Some(flag) = arg.strip_prefix("--") {
                match flag.split_once('=') {
                    Some((name, value)) => {
                        flags.push((format!("--{name}"), vec![value.to_owned()]));
                    }
                    None => flags.push((arg.clone(), Vec::new())),
                }
            } else if let Some((_, values)) = flags.last_mut() {
                values.push(arg.clone());
            } else {
                return Err(format!(
                    "simulator argument {arg:?} does not follow a --flag"
                ));
            }
        }
        Ok(flags)
    };
    let mut merged = parse(base)?;
    for (name, values) in parse(overrides)? {
        if MANAGED_SIM_FLAGS.contains(&name.as_str()) {
            return Err(format!(
                "simulator flag {name} is set by `fusioninfer up` itself (use --backend-port to move the servers)"
            ));
        }
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = values,
            None => merged.push((name, values)),
        }
    }
    Ok(merged
        .into_iter()
        .flat_map(|(name, values)| std::iter::once(name).chain(values))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn merging_flags_overrides_by_name() {
        let base = strings(&["--time-scale", "0.1", "--seed=3", "--enable-lora"]);
        let over = strings(&["--seed", "7", "--num-blocks", "64"]);
        assert_eq!(
            merge_flags(&base, &over).unwrap(),
            strings(&[
                "--time-scale",
                "0.1",
                "--seed",
                "7",
                "--enable-lora",
                "--num-blocks",
                "64"
            ])
        );
        assert!(
            merge_flags(&base, &strings(&["--port", "1"]))
                .unwrap_err()
                .contains("--port")
        );
        assert!(merge_flags(&strings(&["stray"]), &[]).is_err());
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_addresses(" 127.0.0.1:8000,127.0.0.1:8001 ").unwrap(),
            vec![
                "127.0.0.1:8000".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:8001".parse().unwrap()
            ]
        );
        assert!(parse_addresses("localhost:80").is_err());
    }
}
