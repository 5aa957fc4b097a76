//! Validation of an `InferenceService` beyond what its OpenAPI schema checks: topology, router
//! fields, name lengths, resource quantities, the embedded EndpointPickerConfig and HTTPRoute.
//! Every problem is returned, each naming the role and field and saying what is allowed.

use std::collections::BTreeMap;
use std::fmt;

use fusioninfer_api::epp_config::{self, EndpointPickerConfig};
use fusioninfer_api::labels::VOLCANO_SCHEDULER;
use fusioninfer_api::{ComponentType, InferenceService, MAX_ROLES, Role, RoutingStrategy};
use gateway_api::httproutes::HttpRouteSpec;

use crate::names::{DNS1035_LABEL_MAX, ROLE_NAME_MAX, longest_derived_name, service_name};
use crate::plan::{
    DEFAULT_SERVING_PORT, PD_SIDECAR_CONTAINER, gang_totals, plans_pd_sidecar, serving_port,
};
use crate::quantity::Nanos;

/// One problem with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// JSON path of the offending field, e.g. `spec.roles[2].multinode`.
    pub field: String,
    /// Name of the role concerned, when there is one.
    pub role: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Some(role) => write!(f, "{} (role {role:?}): {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Checks `isvc` and returns every problem found (empty when valid).
pub fn validate(isvc: &InferenceService) -> Vec<ValidationError> {
    let mut v = Validator::default();
    let service = service_name(isvc);
    v.service_name(service);
    let roles = &isvc.spec.roles;
    if roles.is_empty() {
        v.error("spec.roles", None, "at least one role is required");
    }
    if roles.len() > MAX_ROLES as usize {
        v.error(
            "spec.roles",
            None,
            format!(
                "at most {MAX_ROLES} roles are allowed, found {}",
                roles.len()
            ),
        );
    }
    for (index, role) in roles.iter().enumerate() {
        v.role(service, index, role, roles);
    }
    v.topology(roles);
    v.serving_ports(roles);
    v.container_names(roles, plans_pd_sidecar(isvc));
    v.scheduling(isvc);
    // Sums over every serving role; only meaningful once each role is valid on its own.
    if v.errors.is_empty() {
        v.gang_totals(isvc);
    }
    v.errors
}

/// Most replicas a LeaderWorkerSet accepts (its CRD's `spec.replicas` maximum).
pub const LWS_REPLICAS_MAX: i32 = 1_000_000;

#[derive(Default)]
struct Validator {
    errors: Vec<ValidationError>,
}

impl Validator {
    fn error(&mut self, field: impl Into<String>, role: Option<&str>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            field: field.into(),
            role: role.map(str::to_owned),
            message: message.into(),
        });
    }

    fn service_name(&mut self, service: &str) {
        if service.is_empty() {
            self.error("metadata.name", None, "the InferenceService needs a name");
        } else if let Err(problem) = dns1035_label(service) {
            self.error(
                "metadata.name",
                None,
                format!("{service:?} {problem}; it names Services and label values, which must be DNS-1035 labels"),
            );
        }
    }

    fn role(&mut self, service: &str, index: usize, role: &Role, roles: &[Role]) {
        let path = format!("spec.roles[{index}]");
        let name = Some(role.name.as_str());
        if let Err(problem) = dns1035_label(&role.name) {
            self.error(
                format!("{path}.name"),
                name,
                format!("{:?} {problem}", role.name),
            );
        }
        let name_fits = role.name.len() <= ROLE_NAME_MAX;
        if !name_fits {
            self.error(
                format!("{path}.name"),
                name,
                format!(
                    "{:?} is {} characters; role names have at most {ROLE_NAME_MAX}",
                    role.name,
                    role.name.len()
                ),
            );
        }
        if let Some(first) = roles[..index].iter().position(|r| r.name == role.name) {
            self.error(
                format!("{path}.name"),
                name,
                format!("role name {:?} is already used by spec.roles[{first}]; role names must be unique", role.name),
            );
        }
        if role.replicas < 0 {
            self.error(
                format!("{path}.replicas"),
                name,
                format!("{} must be ≥ 0", role.replicas),
            );
        }
        if let Some(multinode) = &role.multinode {
            if role.component_type == ComponentType::Router {
                self.error(
                    format!("{path}.multinode"),
                    name,
                    "multinode is not allowed on a router role; it applies to worker, prefiller and decoder roles",
                );
            } else if multinode.node_count < 1 {
                self.error(
                    format!("{path}.multinode.nodeCount"),
                    name,
                    format!("{} must be ≥ 1", multinode.node_count),
                );
            } else if role.replicas.checked_mul(multinode.node_count).is_none() {
                self.error(
                    format!("{path}.multinode.nodeCount"),
                    name,
                    "replicas × nodeCount is too large",
                );
            } else if role.is_multinode() && role.replicas > LWS_REPLICAS_MAX {
                self.error(
                    format!("{path}.replicas"),
                    name,
                    format!(
                        "{} is too many for a multi-node role: its LeaderWorkerSet allows at most {LWS_REPLICAS_MAX} replicas",
                        role.replicas
                    ),
                );
            }
        }
        if role.component_type == ComponentType::Router {
            self.router_fields(&path, role, roles);
        } else {
            self.serving_role(&path, role);
        }
        self.quantities(&path, role);
        if !service.is_empty() && name_fits && dns1035_label(&role.name).is_ok() {
            let (derived, limit) = longest_derived_name(service, role);
            if derived.len() > limit {
                self.error(
                    format!("{path}.name"),
                    name,
                    format!(
                        "derived object name {derived:?} is {} characters, over the limit of {limit}; shorten the service or role name",
                        derived.len()
                    ),
                );
            }
        }
    }

    fn serving_role(&mut self, path: &str, role: &Role) {
        let name = Some(role.name.as_str());
        let kind = role.component_type.as_str();
        let router_only = [
            ("strategy", role.strategy.is_some()),
            (
                "endpointPickerConfig",
                role.endpoint_picker_config.is_some(),
            ),
            ("httproute", role.httproute.is_some()),
            ("failureMode", role.failure_mode.is_some()),
        ];
        for (field, set) in router_only {
            if set {
                self.error(
                    format!("{path}.{field}"),
                    name,
                    format!("{field} is only allowed on a router role, not on a {kind}"),
                );
            }
        }
        let containers = role
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .map(|s| &s.containers);
        match containers {
            None => self.error(
                format!("{path}.template"),
                name,
                format!("a {kind} role needs a pod template with at least one container"),
            ),
            Some(containers) if containers.is_empty() => self.error(
                format!("{path}.template.spec.containers"),
                name,
                "at least one container is required",
            ),
            Some(_) => {
                let port = serving_port(role);
                if !(1..=65535).contains(&port) {
                    self.error(
                        format!("{path}.template.spec.containers[0].ports"),
                        name,
                        format!("the serving port (the container port named http) is {port}; it must be between 1 and 65535"),
                    );
                }
            }
        }
    }

    /// Container names must be unique within a pod (the API server rejects the pod otherwise),
    /// and with the PD sidecar planned, decoders must leave its name to it.
    fn container_names(&mut self, roles: &[Role], pd_sidecar: bool) {
        for (index, role) in roles.iter().enumerate() {
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for (c, container) in role.containers().iter().enumerate() {
                let path = format!("spec.roles[{index}].template.spec.containers[{c}].name");
                let name = container.name.as_str();
                if let Some(first) = seen.insert(name, c) {
                    self.error(
                        path.clone(),
                        Some(&role.name),
                        format!("{name:?} is also the name of containers[{first}]; container names must be unique in a pod"),
                    );
                }
                if pd_sidecar
                    && role.component_type == ComponentType::Decoder
                    && name == PD_SIDECAR_CONTAINER
                {
                    self.error(
                        path,
                        Some(&role.name),
                        format!("{name:?} is the name of the prefill/decode sidecar the router's configuration adds to decode pods; rename this container"),
                    );
                }
            }
        }
    }

    /// Resource quantities of every container of the role's template (a router's too): they
    /// must parse and not be negative, as the API server requires of pods.
    fn quantities(&mut self, path: &str, role: &Role) {
        let name = Some(role.name.as_str());
        for (c, container) in role.containers().iter().enumerate() {
            let Some(resources) = &container.resources else {
                continue;
            };
            for (section, list) in [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ] {
                for (resource, quantity) in list.iter().flatten() {
                    let field = format!(
                        "{path}.template.spec.containers[{c}].resources.{section}.{resource}"
                    );
                    match Nanos::parse(&quantity.0) {
                        Err(e) => self.error(field, name, e.to_string()),
                        Ok(value) if value < Nanos(0) => {
                            self.error(field, name, format!("{:?} must be ≥ 0", quantity.0))
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    fn router_fields(&mut self, path: &str, role: &Role, roles: &[Role]) {
        let name = Some(role.name.as_str());
        if role.strategy == Some(RoutingStrategy::PdDisaggregation) && !is_disaggregated(roles) {
            self.error(
                format!("{path}.strategy"),
                name,
                "pd-disaggregation needs at least one prefiller and one decoder role",
            );
        }
        if let Some(text) = &role.endpoint_picker_config
            && let Err(errors) = EndpointPickerConfig::parse(text)
        {
            for e in errors {
                let field = if e.field == epp_config::DOCUMENT {
                    format!("{path}.endpointPickerConfig")
                } else {
                    format!("{path}.endpointPickerConfig.{}", e.field)
                };
                self.error(field, name, e.message);
            }
        }
        // Several containers override the endpoint picker's by name: each needs one.
        let containers = role.containers();
        if containers.len() > 1 {
            for (c, container) in containers.iter().enumerate() {
                if container.name.is_empty() {
                    self.error(
                        format!("{path}.template.spec.containers[{c}].name"),
                        name,
                        "must not be empty: with several containers, name the endpoint picker's \"epp\" to override it, and give sidecars their own names",
                    );
                }
            }
        }
        if let Some(value) = &role.httproute {
            match serde_json::from_value::<HttpRouteSpec>(value.clone()) {
                Err(e) => self.error(
                    format!("{path}.httproute"),
                    name,
                    format!("not a Gateway API HTTPRouteSpec: {e}"),
                ),
                Ok(route) => {
                    let typed = serde_json::to_value(&route).expect("HTTPRoute specs serialize");
                    let mut unknown = Vec::new();
                    dropped_fields(value, &typed, &format!("{path}.httproute"), &mut unknown);
                    for field in unknown {
                        self.error(
                            field,
                            name,
                            "unknown field: not part of the Gateway API HTTPRouteSpec",
                        );
                    }
                    for (r, rule) in route.rules.iter().flatten().enumerate() {
                        if rule
                            .backend_refs
                            .as_ref()
                            .is_some_and(|refs| !refs.is_empty())
                        {
                            self.error(
                                format!("{path}.httproute.rules[{r}].backendRefs"),
                                name,
                                "backendRefs are always this service's InferencePool; remove them",
                            );
                        }
                    }
                }
            }
        }
    }

    /// The InferencePool has one port list for all its pods, so every serving role must listen
    /// on the same port when a router fronts them.
    fn serving_ports(&mut self, roles: &[Role]) {
        if !roles
            .iter()
            .any(|r| r.component_type == ComponentType::Router)
        {
            return;
        }
        let serving: Vec<(usize, &Role)> = roles
            .iter()
            .enumerate()
            .filter(|(_, r)| r.component_type != ComponentType::Router)
            .collect();
        let Some((_, first)) = serving.first() else {
            return;
        };
        let port = serving_port(first);
        for (index, role) in &serving[1..] {
            let other = serving_port(role);
            if other != port {
                self.error(
                    format!("spec.roles[{index}].template.spec.containers[0].ports"),
                    Some(&role.name),
                    format!(
                        "serves on port {other} but role {:?} serves on {port}; the InferencePool needs one serving port (the container port named http, else {DEFAULT_SERVING_PORT})",
                        first.name
                    ),
                );
            }
        }
    }

    fn topology(&mut self, roles: &[Role]) {
        let of = |kind: ComponentType| -> Vec<&str> {
            roles
                .iter()
                .filter(|r| r.component_type == kind)
                .map(|r| r.name.as_str())
                .collect()
        };
        let (workers, prefillers, decoders, routers) = (
            of(ComponentType::Worker),
            of(ComponentType::Prefiller),
            of(ComponentType::Decoder),
            of(ComponentType::Router),
        );
        let quoted = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let disaggregated: Vec<&str> = prefillers.iter().chain(&decoders).copied().collect();
        if !workers.is_empty() && !disaggregated.is_empty() {
            self.error(
                "spec.roles",
                None,
                format!(
                    "worker role(s) {} cannot be mixed with prefiller/decoder role(s) {}: use exactly one worker (monolithic) or at least one prefiller and one decoder (disaggregated)",
                    quoted(&workers),
                    quoted(&disaggregated)
                ),
            );
        } else if workers.len() > 1 {
            self.error(
                "spec.roles",
                None,
                format!(
                    "a monolithic service has exactly one worker role, found {}",
                    quoted(&workers)
                ),
            );
        } else if workers.is_empty() {
            match (prefillers.is_empty(), decoders.is_empty()) {
                (true, true) => self.error(
                    "spec.roles",
                    None,
                    "no serving role: add one worker (monolithic) or at least one prefiller and one decoder (disaggregated)",
                ),
                (false, true) => self.error(
                    "spec.roles",
                    None,
                    format!("prefiller role(s) {} need at least one decoder role", quoted(&prefillers)),
                ),
                (true, false) => self.error(
                    "spec.roles",
                    None,
                    format!("decoder role(s) {} need at least one prefiller role", quoted(&decoders)),
                ),
                (false, false) => {}
            }
        }
        if routers.len() > 1 {
            self.error(
                "spec.roles",
                None,
                format!(
                    "at most one router role is allowed, found {}",
                    quoted(&routers)
                ),
            );
        }
    }

    /// The Volcano PodGroup sums pods and resources over every serving role: the sums must fit.
    fn gang_totals(&mut self, isvc: &InferenceService) {
        let volcano = isvc
            .spec
            .scheduling_strategy
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            == Some(VOLCANO_SCHEDULER);
        if !volcano {
            return;
        }
        if let Err(e) = gang_totals(&isvc.spec.roles, plans_pd_sidecar(isvc)) {
            let role = &isvc.spec.roles[e.role];
            self.error(
                format!("spec.roles[{}].{}", e.role, e.field),
                Some(&role.name),
                e.message,
            );
        }
    }

    fn scheduling(&mut self, isvc: &InferenceService) {
        let Some(strategy) = &isvc.spec.scheduling_strategy else {
            return;
        };
        let volcano = strategy.scheduler_name.as_deref() == Some(VOLCANO_SCHEDULER);
        match strategy.scheduler_name.as_deref() {
            Some("") => self.error(
                "spec.schedulingStrategy.schedulerName",
                None,
                "must not be empty; omit it for the default scheduler",
            ),
            // It becomes the pods' schedulerName, which the API server requires to be a DNS
            // subdomain.
            Some(name) if !is_dns1123_subdomain(name) => self.error(
                "spec.schedulingStrategy.schedulerName",
                None,
                format!("{name:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit)"),
            ),
            _ => {}
        }
        for (field, set) in [
            ("queue", strategy.queue.is_some()),
            ("priorityClassName", strategy.priority_class_name.is_some()),
        ] {
            if set && !volcano {
                self.error(
                    format!("spec.schedulingStrategy.{field}"),
                    None,
                    "only used with schedulerName: volcano (it configures the Volcano PodGroup)",
                );
            }
        }
    }
}

/// Whether the roles describe a disaggregated (prefill/decode) service.
pub fn is_disaggregated(roles: &[Role]) -> bool {
    roles
        .iter()
        .any(|r| r.component_type == ComponentType::Prefiller)
        && roles
            .iter()
            .any(|r| r.component_type == ComponentType::Decoder)
}

/// Checks a DNS-1035 label: lowercase letters, digits and `-`, starting with a letter, ending
/// with a letter or digit, at most 63 characters.
pub fn dns1035_label(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > DNS1035_LABEL_MAX {
        return Err(format!(
            "is {} characters; at most {DNS1035_LABEL_MAX} are allowed",
            name.len()
        ));
    }
    let allowed = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !allowed || !bytes[0].is_ascii_lowercase() || bytes[bytes.len() - 1] == b'-' {
        return Err("is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain: dot-separated labels of lowercase letters, digits and `-`, each
/// starting and ending with a letter or digit, at most 253 characters in all.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Paths of fields present in `original` but gone from `typed` (its typed round trip): fields
/// the type does not know, which serde would otherwise drop silently.
fn dropped_fields(
    original: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (original, typed) {
        (Value::Object(original), Value::Object(typed)) => {
            for (key, value) in original {
                let field = format!("{path}.{key}");
                match typed.get(key) {
                    Some(typed_value) => dropped_fields(value, typed_value, &field, out),
                    None if !value.is_null() => out.push(field),
                    None => {}
                }
            }
        }
        (Value::Array(original), Value::Array(typed)) => {
            for (i, (value, typed_value)) in original.iter().zip(typed).enumerate() {
                dropped_fields(value, typed_value, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
