//! The native half of the `fusioninfer` Python package: FusionInfer's planner, validation, status
//! aggregation, metrics parser and scheduler, exposed to Python without re-implementing any of
//! them. Values cross the boundary as JSON text; the pure-Python half
//! (`python/fusioninfer/__init__.py`) converts dicts and checks argument types, so that wrong
//! types raise `TypeError` and bad values `ValueError`, never a crash.
#![deny(missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fusioninfer_api::{InferenceService, RoutingStrategy};
use fusioninfer_core::manifest::{parse_inference_services, to_yaml_stream};
use fusioninfer_core::plan::{PlanOptions, plan as plan_objects};
use fusioninfer_core::status::{Observed, aggregate_status as aggregate};
use fusioninfer_core::strategy::endpoint_picker_config;
use fusioninfer_core::validate::{ValidationError, validate as validate_spec};
use fusioninfer_sched::framework::ResponseInfo;
use fusioninfer_sched::{
    ChatMessage, Decision, Endpoint, EndpointMetrics, LoraMetrics, Request, Routed,
    Scheduler as Inner,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::Deserialize;

fn value_error(message: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(message.to_string())
}

/// Exactly one InferenceService from YAML or JSON text.
fn one_service(spec: &str) -> PyResult<InferenceService> {
    let mut services = parse_inference_services(spec).map_err(value_error)?;
    if services.len() != 1 {
        return Err(value_error(format!(
            "expected one InferenceService, found {}",
            services.len()
        )));
    }
    Ok(services.remove(0))
}

/// The CLI's report of an invalid spec, so Python shows the same text.
fn invalid_spec(isvc: &InferenceService, errors: &[ValidationError]) -> PyErr {
    let name = isvc.metadata.name.as_deref().unwrap_or("<unnamed>");
    let mut message = format!("{name}: {} error(s)", errors.len());
    for error in errors {
        message.push_str(&format!("\n  - {error}"));
    }
    value_error(message)
}

fn planned_json(spec: &str, epp_image: Option<String>) -> PyResult<Vec<serde_json::Value>> {
    let isvc = one_service(spec)?;
    let mut options = PlanOptions::default();
    if let Some(image) = epp_image {
        options.epp_image = image;
    }
    let objects = plan_objects(&isvc, &options).map_err(|errors| invalid_spec(&isvc, &errors))?;
    Ok(objects.iter().map(|o| o.to_json()).collect())
}

/// Every validation error of the spec, formatted as the CLI prints them; empty when valid.
#[pyfunction]
fn validate(spec: &str) -> PyResult<Vec<String>> {
    Ok(validate_spec(&one_service(spec)?)
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// The planned objects as a JSON array (what `fusioninfer render` prints).
#[pyfunction]
#[pyo3(signature = (spec, epp_image=None))]
fn plan(spec: &str, epp_image: Option<String>) -> PyResult<String> {
    Ok(serde_json::Value::Array(planned_json(spec, epp_image)?).to_string())
}

/// The planned objects as a YAML stream, byte for byte what `fusioninfer render` prints.
#[pyfunction]
#[pyo3(signature = (spec, epp_image=None))]
fn render_yaml(spec: &str, epp_image: Option<String>) -> PyResult<String> {
    Ok(to_yaml_stream(&planned_json(spec, epp_image)?))
}

/// The InferenceService CRD as JSON.
#[pyfunction]
fn crd() -> String {
    serde_json::to_string(&fusioninfer_api::crd::inference_service_crd())
        .expect("the CRD serializes")
}

/// The status aggregation of `fusioninfer-core`, as JSON. `now` is RFC 3339 (default: the
/// current time).
#[pyfunction]
#[pyo3(signature = (spec, observed, now=None))]
fn aggregate_status(spec: &str, observed: &str, now: Option<&str>) -> PyResult<String> {
    let isvc = one_service(spec)?;
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(observed).map_err(|e| value_error(format!("observed: {e}")))?;
    let observed =
        Observed::from_objects(objects).map_err(|e| value_error(format!("observed: {e}")))?;
    let now = match now {
        Some(text) => serde_json::from_value::<Time>(serde_json::Value::String(text.to_owned()))
            .map_err(|e| value_error(format!("now: {text:?} is not an RFC 3339 time: {e}")))?,
        None => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    Ok(serde_json::to_string(&aggregate(&isvc, &observed, now)).expect("status serializes"))
}

/// The EndpointPickerConfig YAML behind a strategy name.
#[pyfunction]
fn strategy_config(strategy: &str) -> PyResult<String> {
    let strategy: RoutingStrategy = strategy.parse().map_err(value_error)?;
    Ok(endpoint_picker_config(strategy).to_owned())
}

/// Parses a model server's `/metrics` page: `{"engine": "vllm"|"sglang", "metrics": {...}}`.
#[pyfunction]
fn parse_metrics(text: &str) -> PyResult<String> {
    let scraped = fusioninfer_sched::metrics::parse_metrics(text).map_err(value_error)?;
    let engine = match scraped.server {
        fusioninfer_sched::metrics::ModelServer::Vllm => "vllm",
        fusioninfer_sched::metrics::ModelServer::Sglang => "sglang",
    };
    Ok(
        serde_json::json!({"engine": engine, "metrics": metrics_json(&scraped.metrics)})
            .to_string(),
    )
}

fn metrics_json(m: &EndpointMetrics) -> serde_json::Value {
    serde_json::json!({
        "waiting": m.waiting_requests,
        "running": m.running_requests,
        "kv_cache_usage": m.kv_cache_usage,
        "block_size": m.cache_block_size,
        "num_blocks": m.cache_num_blocks,
        "lora_running": m.lora.as_ref().map(|l| l.running_adapters.clone()),
        "lora_waiting": m.lora.as_ref().map(|l| l.waiting_adapters.clone()),
        "max_loras": m.lora.as_ref().map(|l| l.max_adapters),
    })
}

/// A request as Python passes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestIn {
    model: String,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<MessageIn>>,
    #[serde(default)]
    stream: bool,
    #[serde(default, alias = "lora")]
    lora_adapter: Option<String>,
    #[serde(default)]
    target_model: Option<String>,
    #[serde(default)]
    cache_salt: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    objective: Option<String>,
    #[serde(default)]
    fairness_id: Option<String>,
    #[serde(default)]
    prompt_tokens: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageIn {
    role: String,
    content: String,
}

impl RequestIn {
    fn into_request(self) -> PyResult<Request> {
        let mut request = match (self.prompt, self.messages) {
            (Some(prompt), None) => Request::completion(self.model, prompt),
            (None, Some(messages)) if !messages.is_empty() => Request::chat(
                self.model,
                messages
                    .into_iter()
                    .map(|m| ChatMessage::new(m.role, m.content))
                    .collect(),
            ),
            (None, Some(_)) => return Err(value_error("request.messages: must not be empty")),
            (None, None) => return Err(value_error("request: needs either prompt or messages")),
            (Some(_), Some(_)) => {
                return Err(value_error("request: give prompt or messages, not both"));
            }
        };
        request.stream = self.stream;
        request.lora_adapter = self.lora_adapter;
        request.target_model = self.target_model;
        request.cache_salt = self.cache_salt;
        request.request_id = self.request_id;
        request.objective = self.objective;
        request.fairness_id = self.fairness_id;
        request.prompt_tokens = self.prompt_tokens;
        Ok(request)
    }
}

/// An endpoint as Python passes it; missing metrics take the defaults documented in the stubs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointIn {
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    metrics: MetricsIn,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsIn {
    #[serde(default)]
    waiting: u32,
    #[serde(default)]
    running: u32,
    #[serde(default)]
    kv_cache_usage: f64,
    #[serde(default)]
    block_size: Option<u32>,
    #[serde(default)]
    num_blocks: Option<u32>,
    #[serde(default)]
    lora_running: Option<Vec<String>>,
    #[serde(default)]
    lora_waiting: Option<Vec<String>>,
    #[serde(default)]
    max_loras: Option<u32>,
    /// Age of the metrics in milliseconds; `None` (JSON null) means never scraped.
    #[serde(default = "fresh")]
    age_ms: Option<f64>,
}

fn fresh() -> Option<f64> {
    Some(0.0)
}

impl Default for MetricsIn {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields default")
    }
}

impl EndpointIn {
    fn into_endpoint(self, index: usize, now: Instant) -> PyResult<Endpoint> {
        let address: SocketAddr = self.address.parse().map_err(|e| {
            value_error(format!(
                "endpoints[{index}].address: {:?} is not ip:port: {e}",
                self.address
            ))
        })?;
        let m = self.metrics;
        if !(0.0..=1.0).contains(&m.kv_cache_usage) {
            return Err(value_error(format!(
                "endpoints[{index}].metrics.kv_cache_usage: {} is not in [0, 1]",
                m.kv_cache_usage
            )));
        }
        let lora = (m.lora_running.is_some() || m.lora_waiting.is_some() || m.max_loras.is_some())
            .then(|| LoraMetrics {
                running_adapters: m.lora_running.unwrap_or_default(),
                waiting_adapters: m.lora_waiting.unwrap_or_default(),
                max_adapters: m.max_loras.unwrap_or_default(),
            });
        let metrics = EndpointMetrics {
            waiting_requests: m.waiting,
            running_requests: m.running,
            kv_cache_usage: m.kv_cache_usage,
            cache_block_size: m.block_size,
            cache_num_blocks: m.num_blocks,
            lora,
        };
        let mut endpoint = Endpoint::new(address);
        endpoint.labels = self.labels;
        match m.age_ms {
            Some(age) if age.is_finite() && age >= 0.0 => {
                let refreshed = now
                    .checked_sub(Duration::from_secs_f64(age / 1000.0))
                    .unwrap_or(now);
                Ok(endpoint.with_metrics(metrics, refreshed))
            }
            Some(age) => Err(value_error(format!(
                "endpoints[{index}].metrics.age_ms: {age} must be ≥ 0"
            ))),
            None => {
                endpoint.metrics = metrics;
                Ok(endpoint)
            }
        }
    }
}

/// Decisions kept for `Scheduler.complete`, oldest dropped first beyond this many.
const MAX_PENDING: usize = 100_000;

#[derive(Default)]
struct Pending {
    by_id: BTreeMap<u64, (Request, Routed)>,
    order: VecDeque<u64>,
    next_id: u64,
}

/// FusionInfer's request scheduler with one EndpointPickerConfig.
#[pyclass(module = "fusioninfer._native")]
struct Scheduler {
    inner: Inner,
    pending: Mutex<Pending>,
}

#[pymethods]
impl Scheduler {
    #[new]
    #[pyo3(signature = (config=None, strategy=None, seed=0))]
    fn new(config: Option<&str>, strategy: Option<&str>, seed: u64) -> PyResult<Self> {
        let text = match (config, strategy) {
            (Some(_), Some(_)) => return Err(value_error("give config or strategy, not both")),
            (Some(text), None) => text.to_owned(),
            (None, strategy) => {
                let strategy: RoutingStrategy = strategy
                    .unwrap_or("prefix-cache")
                    .parse()
                    .map_err(value_error)?;
                endpoint_picker_config(strategy).to_owned()
            }
        };
        let inner = Inner::from_yaml(&text, seed).map_err(value_error)?;
        Ok(Scheduler {
            inner,
            pending: Mutex::new(Pending::default()),
        })
    }

    /// Picks endpoints for one request: JSON of the decision.
    fn pick(&self, request: &str, endpoints: &str) -> PyResult<String> {
        let request: RequestIn =
            serde_json::from_str(request).map_err(|e| value_error(format!("request: {e}")))?;
        let request = request.into_request()?;
        let endpoints: Vec<EndpointIn> =
            serde_json::from_str(endpoints).map_err(|e| value_error(format!("endpoints: {e}")))?;
        let now = Instant::now();
        let endpoints = endpoints
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.into_endpoint(i, now))
            .collect::<PyResult<Vec<_>>>()?;
        let decision = self.inner.schedule(&request, &endpoints, now);
        let json = match &decision {
            Decision::Routed(routed) => {
                let mut pending = self.pending.lock().expect("no panics while locked");
                let id = pending.next_id;
                pending.next_id += 1;
                pending.by_id.insert(id, (request, routed.clone()));
                pending.order.push_back(id);
                while pending.order.len() > MAX_PENDING {
                    let oldest = pending.order.pop_front().expect("non-empty");
                    pending.by_id.remove(&oldest);
                }
                serde_json::json!({
                    "primary": routed.primary.to_string(),
                    "fallbacks": routed.fallbacks.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "headers": routed.headers,
                    "decision_id": id,
                })
            }
            Decision::Rejected(rejection) => serde_json::json!({
                "rejected": true,
                "status": rejection.reason.http_status(),
                "reason": rejection.reason.to_string(),
                "message": rejection.message,
            }),
        };
        Ok(json.to_string())
    }

    /// Feeds the outcome of a routed request back (load accounting, indexes).
    #[pyo3(signature = (decision_id, status=200, served_by=None))]
    fn complete(&self, decision_id: u64, status: u16, served_by: Option<&str>) -> PyResult<()> {
        let served_by = served_by
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|e| value_error(format!("served_by: {a:?}: {e}")))
            })
            .transpose()?;
        let (request, routed) = {
            let mut pending = self.pending.lock().expect("no panics while locked");
            let entry = pending.by_id.remove(&decision_id);
            pending.order.retain(|id| *id != decision_id);
            entry.ok_or_else(|| {
                value_error(format!(
                    "decision_id: {decision_id} is unknown or already completed"
                ))
            })?
        };
        let response = ResponseInfo {
            served_by: served_by.or(Some(routed.primary)),
            status,
        };
        self.inner
            .on_response(&request, &routed, &response, Instant::now());
        Ok(())
    }

    /// Names of the scheduling profiles.
    fn profiles(&self) -> Vec<String> {
        self.inner.profile_names().map(str::to_owned).collect()
    }
}

/// The `fusioninfer._native` extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(render_yaml, m)?)?;
    m.add_function(wrap_pyfunction!(crd, m)?)?;
    m.add_function(wrap_pyfunction!(aggregate_status, m)?)?;
    m.add_function(wrap_pyfunction!(strategy_config, m)?)?;
    m.add_function(wrap_pyfunction!(parse_metrics, m)?)?;
    m.add_class::<Scheduler>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
