//! The HTTP surface: an axum [`Router`] per simulated server, and [`SimServer`] to run one (or
//! [`start_replicas`] to run several on consecutive ports in one process).
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (JSON or SSE), `GET
//! /v1/models`, `GET /health`, `GET /metrics`, `GET /version`, `POST /tokenize`, `POST
//! /detokenize`, `POST /v1/load_lora_adapter`, `POST /v1/unload_lora_adapter`, `POST
//! /reset_prefix_cache` (vLLM's dev endpoint), and the simulator's own `GET|POST /admin/faults`
//! (fault injection at run time) and `GET /admin/state` (occupancy). Every response carries
//! `x-inference-pod: <instance>`; inference responses also carry `x-sim-queue-ms`,
//! `x-sim-first-token-ms` (model time from admission to the first token) and
//! `x-sim-cached-tokens`, so tests can check the latency model without timing anything.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::config::{FaultConfig, MetricsFault, SimConfig};
use crate::engine::{Engine, FinishReason, Running, Submission, SubmitError};
use crate::errors::ApiError;
use crate::kv_events::KvEventPublisher;
use crate::openai::*;
use crate::tokenize::ModelTokenizer;

/// The state behind one simulated server's router.
pub struct Replica {
    engine: Arc<Engine>,
    tokenizer: Arc<ModelTokenizer>,
    faults: Mutex<FaultConfig>,
    fail_rng: Mutex<fastrand::Rng>,
    id_rng: Mutex<fastrand::Rng>,
    instance: String,
    port: u16,
    fingerprint: String,
    engine_id: String,
    kv_events_endpoint: Option<String>,
    shutdown: watch::Receiver<bool>,
    /// Keeps the shutdown channel open for replicas not owned by a [`SimServer`].
    _shutdown_tx: Option<watch::Sender<bool>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("instance", &self.instance)
            .finish()
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Replica {
    fn new(
        engine: Arc<Engine>,
        tokenizer: Arc<ModelTokenizer>,
        port: u16,
        kv_events_endpoint: Option<String>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let cfg = engine.config();
        let instance = cfg.expand(&cfg.instance, port);
        let h = fnv(instance.as_bytes()) ^ cfg.seed;
        let engine_id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 32) as u32,
            (h >> 16) as u16,
            h & 0xfff,
            (h >> 12) & 0xfff,
            fnv(&h.to_le_bytes()) & 0xffff_ffff_ffff
        );
        Replica {
            fingerprint: format!(
                "vllm-{}-{:08x}",
                cfg.version,
                fnv(cfg.model.as_bytes()) as u32
            ),
            faults: Mutex::new(cfg.faults.clone()),
            fail_rng: Mutex::new(fastrand::Rng::with_seed(cfg.seed)),
            id_rng: Mutex::new(fastrand::Rng::with_seed(h)),
            instance,
            port,
            engine_id,
            kv_events_endpoint,
            shutdown,
            _shutdown_tx: None,
            engine,
            tokenizer,
        }
    }

    /// A replica for in-process use, without a listener or KV-event socket: serve it with
    /// [`router`] (e.g. through `tower::ServiceExt::oneshot`). `cfg.port` only names the
    /// instance.
    pub fn standalone(
        cfg: SimConfig,
        tokenizer: Arc<ModelTokenizer>,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        cfg.validate()?;
        let port = cfg.port;
        let (tx, rx) = watch::channel(false);
        let mut replica = Replica::new(Engine::new(cfg, None), tokenizer, port, None, rx);
        replica._shutdown_tx = Some(tx);
        Ok(Arc::new(replica))
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The instance name (the `x-inference-pod` header).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn cfg(&self) -> &SimConfig {
        self.engine.config()
    }

    fn faults(&self) -> FaultConfig {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn new_id(&self, prefix: &str) -> String {
        let r = self
            .id_rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .u64(..);
        format!("{prefix}{r:016x}")
    }

    /// Draws whether to fail this request (one draw per request, seeded).
    fn draw_failure(&self, rate: f64) -> bool {
        let x = self
            .fail_rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .f64();
        x < rate
    }

    fn served_names(&self) -> Vec<String> {
        let mut names = vec![self.cfg().model.clone()];
        names.extend(self.engine.loras().into_iter().map(|l| l.name));
        names
    }

    /// Resolves the request's `model`: `Ok(None)` for the base model, `Ok(Some(lora))` for an
    /// adapter.
    fn resolve_model(&self, model: Option<&str>) -> Result<Option<String>, ApiError> {
        match model {
            None => Ok(None),
            Some(m) if m == self.cfg().model => Ok(None),
            Some(m) if self.engine.has_lora(m) => Ok(Some(m.to_owned())),
            Some(m) => Err(ApiError::model_not_found(m, &self.served_names())),
        }
    }
}

/// Builds the router of one simulated server (usable in-process with `tower::ServiceExt`, see
/// [`Replica::standalone`]).
pub fn router(replica: Arc<Replica>) -> Router {
    let pod = HeaderValue::from_str(&replica.instance)
        .unwrap_or_else(|_| HeaderValue::from_static("fusioninfer-sim"));
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/version", get(version))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/v1/load_lora_adapter", post(load_lora))
        .route("/v1/unload_lora_adapter", post(unload_lora))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .route("/admin/faults", get(get_faults).post(set_faults))
        .route("/admin/state", get(admin_state))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"detail":"Not Found"}"#,
            )
        })
        .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
        .layer(axum::middleware::map_response(move |mut res: Response| {
            let pod = pod.clone();
            async move {
                res.headers_mut()
                    .insert(HeaderName::from_static("x-inference-pod"), pod);
                res
            }
        }))
        .with_state(replica)
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_string(value).expect("responses serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Parses a request body like FastAPI does, with vLLM's error shapes.
fn parse_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation(
            "missing",
            "body",
            "Field required",
            "None",
            None,
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| json_error(body, &e))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::validation(
            "model_attributes_type",
            "body",
            "Input should be a valid dictionary or object to extract fields from",
            "'...'",
            None,
        )),
    }
}

/// Maps a serde_json error to Python's `json` error position and wording (best effort: the
/// common truncated-body case matches vLLM exactly).
fn json_error(body: &[u8], e: &serde_json::Error) -> ApiError {
    let text = String::from_utf8_lossy(body);
    let (pos, reason) = if e.is_eof() {
        let last = text.trim_end().chars().last();
        let reason = match last {
            Some('[') | Some(':') => "Expecting value",
            Some('{') | Some(',') => "Expecting property name enclosed in double quotes",
            _ => "Expecting ',' delimiter",
        };
        (text.chars().count(), reason)
    } else {
        let mut offset = 0usize;
        for (i, line) in text.split('\n').enumerate() {
            if i + 1 == e.line() {
                let col = e.column().saturating_sub(1).min(line.len());
                let byte = offset + col;
                offset = text.char_indices().take_while(|(b, _)| *b < byte).count();
                break;
            }
            offset += line.len() + 1;
        }
        (offset, "Expecting value")
    };
    ApiError::invalid_json(pos, reason)
}

fn typed<T: serde::de::DeserializeOwned>(
    map: serde_json::Map<String, Value>,
) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::invalid_field("body", &e.to_string()))
}

/// What a validated inference request will do.
struct Plan {
    id: String,
    created: u64,
    model: String,
    lora: Option<String>,
    prompt: Vec<u32>,
    n_out: usize,
    finish: FinishReason,
    max_tokens_param: Option<usize>,
    token_seed: u64,
    stream: bool,
    include_usage: bool,
    continuous_usage: bool,
    remote_decode: bool,
    remote_prefill: bool,
}

fn kv_flag(params: &Option<Value>, key: &str) -> bool {
    params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[allow(clippy::too_many_arguments)]
fn plan(
    rep: &Replica,
    id_prefix: &str,
    model: Option<&str>,
    prompt: Vec<u32>,
    max_tokens: Option<i64>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<&StreamOptions>,
    kv_transfer_params: &Option<Value>,
    lora: Option<String>,
) -> Result<Plan, ApiError> {
    let cfg = rep.cfg();
    let max_len = cfg.max_model_len;
    if stream_options.is_some() && !stream.unwrap_or(false) {
        return Err(ApiError::validation(
            "value_error",
            "body",
            "Value error, Stream options can only be defined when `stream=True`.",
            "'...'",
            None,
        ));
    }
    if let Some(n) = n
        && n != 1
    {
        return Err(ApiError::bad_request(
            format!("n={n} is not supported by fusioninfer-sim (only n=1)."),
            Some("n"),
        ));
    }
    if let Some(m) = max_tokens {
        if m > max_len as i64 {
            return Err(ApiError::bad_request(
                format!(
                    "max_tokens={m} cannot be greater than max_model_len={max_len}. Please request fewer output tokens. (parameter=max_tokens, value={m})"
                ),
                Some("max_tokens"),
            ));
        }
        if m < 1 {
            return Err(ApiError::bad_request(
                format!(
                    "max_tokens must be at least 1, got {m}. (parameter=max_tokens, value={m})"
                ),
                Some("max_tokens"),
            ));
        }
    }
    if prompt.is_empty() {
        return Err(ApiError::bad_request(
            "The decoder prompt cannot be empty",
            Some("input_tokens"),
        ));
    }
    let plen = prompt.len();
    if plen > max_len {
        let v = max_len + 1;
        return Err(ApiError::bad_request(
            format!(
                "This model's maximum context length is {max_len} tokens. However, your prompt contains at least {v} input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={v})"
            ),
            Some("input_tokens"),
        ));
    }
    if plen == max_len {
        return Err(ApiError::bad_request(
            format!(
                "This model's maximum context length is {max_len} tokens. However, your request has {plen} input tokens, which leaves no room for output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={plen})"
            ),
            Some("input_tokens"),
        ));
    }
    let room = max_len - plen;
    let mut prompt_seed = fnv(&cfg.seed.to_le_bytes());
    for t in &prompt {
        prompt_seed = (prompt_seed ^ u64::from(*t)).wrapping_mul(0x0100_0000_01b3);
    }
    if let Some(l) = &lora {
        prompt_seed ^= fnv(l.as_bytes());
    }
    let (n_out, finish) = match max_tokens {
        Some(m) => ((m as usize).min(room), FinishReason::Length),
        None => {
            let cap = cfg.default_max_tokens.min(room);
            let len = 1 + fastrand::Rng::with_seed(prompt_seed ^ 0x5eed).usize(..cap);
            (len, FinishReason::Stop)
        }
    };
    let opts = stream_options.cloned().unwrap_or_default();
    Ok(Plan {
        id: rep.new_id(id_prefix),
        created: unix_secs(),
        model: model.unwrap_or(&cfg.model).to_owned(),
        lora,
        prompt,
        n_out,
        finish,
        max_tokens_param: max_tokens.map(|m| m as usize),
        token_seed: prompt_seed,
        stream: stream.unwrap_or(false),
        include_usage: opts.include_usage.unwrap_or(false),
        continuous_usage: opts.continuous_usage_stats.unwrap_or(false),
        remote_decode: kv_flag(kv_transfer_params, "do_remote_decode"),
        remote_prefill: kv_flag(kv_transfer_params, "do_remote_prefill"),
    })
}

/// Applies faults, queues the request and waits for admission.
async fn admit(rep: &Replica, plan: &Plan) -> Result<Running, ApiError> {
    let faults = rep.faults();
    if faults.extra_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.extra_delay_ms.min(600_000))).await;
    }
    if faults.fail_rate > 0.0 && rep.draw_failure(faults.fail_rate) {
        return Err(ApiError::injected(faults.fail_status));
    }
    let pending = rep
        .engine
        .submit(Submission {
            prompt: plan.prompt.clone(),
            max_output: plan.n_out,
            max_tokens_param: plan.max_tokens_param,
            lora: plan.lora.clone(),
            remote_prefill: plan.remote_prefill,
        })
        .map_err(|e| match e {
            SubmitError::QueueFull(n) => ApiError::queue_full(n),
            SubmitError::TooLarge { .. } => {
                ApiError::bad_request(e.to_string(), Some("input_tokens"))
            }
            SubmitError::Closed => ApiError::unavailable(e.to_string()),
        })?;
    pending
        .admitted()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

fn sim_headers(running: &Running) -> HeaderMap {
    let mut h = HeaderMap::new();
    let info = &running.info;
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    };
    put(
        "x-sim-queue-ms",
        format!("{:.3}", info.queue_seconds * 1000.0),
    );
    put(
        "x-sim-first-token-ms",
        format!("{:.3}", info.first_token_seconds * 1000.0),
    );
    put("x-sim-cached-tokens", info.cached_tokens.to_string());
    h
}

/// Runs the token loop: sleeps per the latency model (scaled) and hands each token's text to
/// `emit`; `emit` returning false (client gone) aborts.
async fn generate(
    mut running: Running,
    plan: &Plan,
    tokenizer: &ModelTokenizer,
    mut emit: impl FnMut(usize, &str) -> bool,
) -> FinishReason {
    let engine = Arc::clone(running.engine());
    let start = tokio::time::Instant::now();
    let mut rng = fastrand::Rng::with_seed(plan.token_seed);
    let mut virt = running.info.first_token_seconds;
    for k in 0..plan.n_out {
        let itl = if k > 0 { engine.itl_seconds() } else { 0.0 };
        virt += itl;
        tokio::time::sleep_until(start + engine.wall_duration(virt)).await;
        let (id, text) = tokenizer.output_token(rng.u64(..));
        if k == 0 {
            running.first_token(id);
        } else {
            running.next_token(id, itl);
        }
        if !emit(k, text) {
            running.finish(FinishReason::Abort);
            return FinishReason::Abort;
        }
    }
    running.finish(plan.finish);
    plan.finish
}

fn kv_transfer_out(rep: &Replica, plan: &Plan, block_ids: &[u32]) -> Option<Value> {
    plan.remote_decode.then(|| {
        let cfg = rep.cfg();
        serde_json::json!({
            "do_remote_prefill": true,
            "do_remote_decode": false,
            "remote_block_ids": block_ids,
            "remote_engine_id": rep.engine_id,
            "remote_request_id": plan.id,
            "remote_host": cfg.kv_side_channel_host.clone().unwrap_or_else(|| cfg.host.clone()),
            "remote_port": cfg.kv_side_channel_port,
            "tp_size": 1,
        })
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Completion,
}

async fn run_inference(rep: Arc<Replica>, plan: Plan, api: Api) -> Response {
    let running = match admit(&rep, &plan).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let headers = sim_headers(&running);
    let info = running.info.clone();
    if plan.stream {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let rep2 = Arc::clone(&rep);
        tokio::spawn(async move {
            stream_task(rep2, plan, api, running, tx).await;
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let body = Body::from_stream(tokio_stream::StreamExt::map(stream, Ok::<_, Infallible>));
        let mut res = Response::new(body);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        res.headers_mut().extend(headers);
        return res;
    }
    let mut text = String::new();
    let tokenizer = Arc::clone(&rep.tokenizer);
    let finish = generate(running, &plan, &tokenizer, |_, t| {
        text.push_str(t);
        true
    })
    .await;
    let usage = Usage {
        prompt_tokens: info.prompt_tokens,
        total_tokens: info.prompt_tokens + plan.n_out,
        completion_tokens: plan.n_out,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: info.cached_tokens,
            created_cache_tokens: (api == Api::Chat).then_some(info.created_cache_tokens),
            multimodal_tokens: None,
        },
        completion_tokens_details: None,
    };
    let kv = kv_transfer_out(&rep, &plan, &info.block_ids);
    let mut res = match api {
        Api::Chat => json_response(
            StatusCode::OK,
            &ChatCompletionResponse {
                id: plan.id.clone(),
                object: "chat.completion",
                created: plan.created,
                model: plan.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: text,
                        refusal: None,
                        annotations: None,
                        audio: None,
                        function_call: None,
                        reasoning: None,
                    },
                    logprobs: None,
                    finish_reason: finish.as_str().into(),
                    stop_reason: None,
                    token_ids: None,
                    routed_experts: None,
                }],
                service_tier: None,
                system_fingerprint: rep.fingerprint.clone(),
                usage,
                prompt_logprobs: None,
                prompt_token_ids: None,
                prompt_text: None,
                kv_transfer_params: kv,
                ec_transfer_params: None,
                metrics: None,
            },
        ),
        Api::Completion => json_response(
            StatusCode::OK,
            &CompletionResponse {
                id: plan.id.clone(),
                object: "text_completion",
                created: plan.created,
                model: plan.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    text,
                    logprobs: None,
                    finish_reason: finish.as_str().into(),
                    stop_reason: None,
                    token_ids: None,
                    prompt_logprobs: None,
                    prompt_token_ids: None,
                    routed_experts: None,
                }],
                service_tier: None,
                system_fingerprint: rep.fingerprint.clone(),
                usage,
                kv_transfer_params: kv,
                ec_transfer_params: None,
                metrics: None,
            },
        ),
    };
    res.headers_mut().extend(headers);
    res
}

fn sse<T: Serialize>(value: &T) -> Bytes {
    let mut s = String::from("data: ");
    s.push_str(&serde_json::to_string(value).expect("chunks serialize"));
    s.push_str("\n\n");
    Bytes::from(s)
}

async fn stream_task(
    rep: Arc<Replica>,
    plan: Plan,
    api: Api,
    running: Running,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    let info = running.info.clone();
    let n = plan.n_out;
    let usage_at = |generated: usize| StreamUsage {
        prompt_tokens: info.prompt_tokens,
        total_tokens: info.prompt_tokens + generated,
        completion_tokens: generated,
        prompt_tokens_details: StreamPromptTokensDetails {
            cached_tokens: info.cached_tokens,
            created_cache_tokens: (api == Api::Chat).then_some(info.created_cache_tokens),
        },
    };
    let object = match api {
        Api::Chat => "chat.completion.chunk",
        Api::Completion => "text_completion",
    };
    let chunk = |usage: Option<StreamUsage>| Chunk::<()> {
        id: plan.id.clone(),
        object,
        created: plan.created,
        model: plan.model.clone(),
        choices: Vec::new(),
        usage,
        prompt_token_ids: None,
        prompt_text: None,
        system_fingerprint: None,
    };
    let finish_str = plan.finish.as_str();
    let tokenizer = Arc::clone(&rep.tokenizer);
    let finish = generate(running, &plan, &tokenizer, |k, text| {
        let last = k + 1 == n;
        let usage = plan.continuous_usage.then(|| usage_at(k + 1));
        let base = chunk(usage);
        if api == Api::Chat && k == 0 {
            let role = Chunk {
                id: base.id.clone(),
                object,
                created: base.created,
                model: base.model.clone(),
                choices: vec![RoleChoice {
                    index: 0,
                    delta: RoleDelta {
                        role: "assistant",
                        content: "",
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
                usage: plan.continuous_usage.then(|| usage_at(0)),
                prompt_token_ids: Some(None),
                prompt_text: Some(None),
                system_fingerprint: None,
            };
            if tx.send(sse(&role)).is_err() {
                return false;
            }
        }
        let finish_reason = last.then(|| finish_str.to_string());
        let bytes = match api {
            Api::Chat => sse(&Chunk {
                id: base.id,
                object,
                created: base.created,
                model: base.model,
                choices: vec![ChatChunkChoice {
                    index: 0,
                    delta: ContentDelta {
                        content: text.to_owned(),
                    },
                    logprobs: None,
                    finish_reason,
                    stop_reason: last.then_some(None),
                    token_ids: None,
                }],
                usage: base.usage,
                prompt_token_ids: None,
                prompt_text: None,
                system_fingerprint: None,
            }),
            Api::Completion => sse(&Chunk {
                id: base.id,
                object,
                created: base.created,
                model: base.model,
                choices: vec![CompletionChunkChoice {
                    index: 0,
                    text: text.to_owned(),
                    logprobs: None,
                    finish_reason,
                    stop_reason: None,
                    prompt_token_ids: None,
                    token_ids: None,
                }],
                usage: base.usage,
                prompt_token_ids: None,
                prompt_text: None,
                system_fingerprint: None,
            }),
        };
        tx.send(bytes).is_ok()
    })
    .await;
    if finish == FinishReason::Abort {
        return;
    }
    if plan.include_usage {
        let mut last = chunk(Some(usage_at(n)));
        last.system_fingerprint = Some(rep.fingerprint.clone());
        let _ = tx.send(sse(&last));
    }
    let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
}

async fn chat_completions(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let result = async {
        let map = parse_body(&body)?;
        if !map.contains_key("messages") {
            return Err(ApiError::missing("messages", map.len()));
        }
        let req: ChatCompletionRequest = typed(map)?;
        let lora = rep.resolve_model(req.model.as_deref())?;
        let prompt = rep
            .tokenizer
            .chat_token_ids(
                &req.messages,
                req.add_generation_prompt.unwrap_or(true),
                req.chat_template_kwargs.as_ref(),
                req.add_special_tokens.unwrap_or(false),
            )
            .map_err(|e| ApiError::bad_request(e.to_string(), None))?;
        plan(
            &rep,
            "chatcmpl-",
            req.model.as_deref(),
            prompt,
            req.max_completion_tokens.or(req.max_tokens),
            req.n,
            req.stream,
            req.stream_options.as_ref(),
            &req.kv_transfer_params,
            lora,
        )
    }
    .await;
    match result {
        Ok(plan) => run_inference(rep, plan, Api::Chat).await,
        Err(e) => e.into_response(),
    }
}

fn completion_prompt(
    rep: &Replica,
    prompt: &Value,
    add_special: bool,
) -> Result<Vec<u32>, ApiError> {
    let encode = |s: &str| {
        rep.tokenizer
            .encode(s, add_special)
            .map_err(|e| ApiError::bad_request(e.to_string(), None))
    };
    let ids = |a: &[Value]| -> Option<Vec<u32>> {
        a.iter()
            .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect()
    };
    let multiple = || {
        ApiError::bad_request(
            "fusioninfer-sim serves one prompt per request (batched prompts are not supported).",
            Some("prompt"),
        )
    };
    match prompt {
        Value::String(s) => encode(s),
        Value::Array(a) if a.is_empty() => Err(ApiError::bad_request(
            "The decoder prompt cannot be empty",
            Some("input_tokens"),
        )),
        Value::Array(a) => match &a[0] {
            Value::String(s) if a.len() == 1 => encode(s),
            Value::String(_) => Err(multiple()),
            Value::Number(_) => ids(a).ok_or_else(|| {
                ApiError::invalid_field("body.prompt", "Input should be a list of token ids")
            }),
            Value::Array(inner) if a.len() == 1 => ids(inner).ok_or_else(|| {
                ApiError::invalid_field("body.prompt", "Input should be a list of token ids")
            }),
            Value::Array(_) => Err(multiple()),
            _ => Err(ApiError::invalid_field(
                "body.prompt",
                "Input should be a valid string or list",
            )),
        },
        _ => Err(ApiError::invalid_field(
            "body.prompt",
            "Input should be a valid string or list",
        )),
    }
}

async fn completions(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let result = async {
        let map = parse_body(&body)?;
        if !map.contains_key("prompt") {
            return Err(ApiError::missing("prompt", map.len()));
        }
        let req: CompletionRequest = typed(map)?;
        let lora = rep.resolve_model(req.model.as_deref())?;
        let prompt = completion_prompt(&rep, &req.prompt, req.add_special_tokens.unwrap_or(true))?;
        // vLLM's default max_tokens for completions is 16.
        plan(
            &rep,
            "cmpl-",
            req.model.as_deref(),
            prompt,
            Some(req.max_tokens.unwrap_or(16)),
            req.n,
            req.stream,
            req.stream_options.as_ref(),
            &req.kv_transfer_params,
            lora,
        )
    }
    .await;
    match result {
        Ok(plan) => run_inference(rep, plan, Api::Completion).await,
        Err(e) => e.into_response(),
    }
}

fn permission(rep: &Replica) -> ModelPermission {
    ModelPermission {
        id: rep.new_id("modelperm-"),
        object: "model_permission",
        created: unix_secs(),
        allow_create_engine: false,
        allow_sampling: true,
        allow_logprobs: true,
        allow_search_indices: false,
        allow_view: true,
        allow_fine_tuning: false,
        organization: "*",
        group: None,
        is_blocking: false,
    }
}

async fn models(State(rep): State<Arc<Replica>>) -> Response {
    let cfg = rep.cfg();
    let mut data = vec![ModelCard {
        id: cfg.model.clone(),
        object: "model",
        created: unix_secs(),
        owned_by: "vllm",
        root: cfg.model_root.clone().unwrap_or_else(|| cfg.model.clone()),
        parent: None,
        max_model_len: Some(cfg.max_model_len),
        permission: vec![permission(&rep)],
    }];
    for lora in rep.engine.loras() {
        data.push(ModelCard {
            id: lora.name,
            object: "model",
            created: unix_secs(),
            owned_by: "vllm",
            root: lora.path,
            parent: Some(cfg.model.clone()),
            max_model_len: None,
            permission: vec![permission(&rep)],
        });
    }
    json_response(
        StatusCode::OK,
        &ModelList {
            object: "list",
            data,
        },
    )
}

async fn health() -> Response {
    StatusCode::OK.into_response()
}

async fn version(State(rep): State<Arc<Replica>>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({"version": rep.cfg().version}),
    )
}

async fn metrics(State(rep): State<Arc<Replica>>) -> Response {
    match rep.faults().metrics {
        MetricsFault::Ok => {}
        MetricsFault::Unavailable => {
            return ApiError::unavailable("metrics unavailable (fault injection)").into_response();
        }
        MetricsFault::Hang => {
            let mut shutdown = rep.shutdown.clone();
            let _ = tokio::time::timeout(Duration::from_secs(300), shutdown.wait_for(|s| *s)).await;
            return ApiError::unavailable("metrics unavailable (fault injection)").into_response();
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=1.0.0; charset=utf-8",
        )],
        rep.engine.metrics_text(),
    )
        .into_response()
}

async fn tokenize(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let result: Result<_, ApiError> = (|| {
        let map = parse_body(&body)?;
        let req: TokenizeRequest = typed(map)?;
        rep.resolve_model(req.model.as_deref())?;
        let tokens = match (&req.messages, &req.prompt) {
            (Some(messages), _) => {
                let text = rep
                    .tokenizer
                    .apply_chat_template(messages, req.add_generation_prompt.unwrap_or(true), None)
                    .map_err(|e| ApiError::bad_request(e.to_string(), None))?;
                rep.tokenizer
                    .encode(&text, req.add_special_tokens.unwrap_or(false))
            }
            (None, Some(prompt)) => rep
                .tokenizer
                .encode(prompt, req.add_special_tokens.unwrap_or(true)),
            (None, None) => return Err(ApiError::missing("prompt", 0)),
        }
        .map_err(|e| ApiError::bad_request(e.to_string(), None))?;
        let token_strs = req
            .return_token_strs
            .unwrap_or(false)
            .then(|| rep.tokenizer.token_strs(&tokens));
        Ok(TokenizeResponse {
            count: tokens.len(),
            max_model_len: rep.cfg().max_model_len,
            tokens,
            token_strs,
        })
    })();
    match result {
        Ok(r) => json_response(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

async fn detokenize(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let result: Result<_, ApiError> = (|| {
        let map = parse_body(&body)?;
        let tokens: Vec<u32> = map
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::missing("tokens", map.len()))?
            .iter()
            .filter_map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect();
        Ok(serde_json::json!({"prompt": rep.tokenizer.decode(&tokens)}))
    })();
    match result {
        Ok(r) => json_response(StatusCode::OK, &r),
        Err(e) => e.into_response(),
    }
}

fn lora_error(e: crate::engine::LoraError) -> ApiError {
    match e {
        crate::engine::LoraError::NotFound(_) => ApiError::not_found(e.to_string()),
        _ => ApiError::bad_request(e.to_string(), None),
    }
}

async fn load_lora(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let result: Result<_, ApiError> = (|| {
        let req: LoraRequest = typed(parse_body(&body)?)?;
        let Some(path) = req.lora_path.as_deref() else {
            return Err(ApiError::bad_request(
                "Both 'lora_name' and 'lora_path' must be provided.",
                None,
            ));
        };
        rep.engine
            .load_lora(&req.lora_name, path)
            .map_err(lora_error)?;
        Ok(format!(
            "Success: LoRA adapter '{}' added successfully.",
            req.lora_name
        ))
    })();
    match result {
        Ok(msg) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], msg).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn unload_lora(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let result: Result<_, ApiError> = (|| {
        let req: LoraRequest = typed(parse_body(&body)?)?;
        rep.engine.unload_lora(&req.lora_name).map_err(lora_error)?;
        Ok(format!(
            "Success: LoRA adapter '{}' removed successfully.",
            req.lora_name
        ))
    })();
    match result {
        Ok(msg) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], msg).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn reset_prefix_cache(State(rep): State<Arc<Replica>>) -> Response {
    if rep.engine.reset_prefix_cache() {
        StatusCode::OK.into_response()
    } else {
        ApiError::bad_request(
            "Failed to reset the prefix cache: requests are running.",
            None,
        )
        .into_response()
    }
}

async fn get_faults(State(rep): State<Arc<Replica>>) -> Response {
    json_response(StatusCode::OK, &rep.faults())
}

/// Merges a partial fault configuration (`{"fail_rate": 0.5}`) into the current one.
async fn set_faults(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let result: Result<_, ApiError> = (|| {
        let patch = parse_body(&body)?;
        let mut guard = rep.faults.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = serde_json::to_value(&*guard).expect("faults serialize");
        if let Value::Object(map) = &mut current {
            map.extend(patch);
        }
        let next: FaultConfig = serde_json::from_value(current)
            .map_err(|e| ApiError::invalid_field("body", &e.to_string()))?;
        if !(0.0..=1.0).contains(&next.fail_rate) {
            return Err(ApiError::invalid_field(
                "body.fail_rate",
                "must be within 0..=1",
            ));
        }
        *guard = next.clone();
        Ok(next)
    })();
    match result {
        Ok(f) => json_response(StatusCode::OK, &f),
        Err(e) => e.into_response(),
    }
}

async fn admin_state(State(rep): State<Arc<Replica>>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "instance": rep.instance,
            "port": rep.port,
            "model": rep.cfg().model,
            "tokenizer": rep.tokenizer.description(),
            "kv_events_endpoint": rep.kv_events_endpoint,
            "engine": rep.engine.state(),
        }),
    )
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The HTTP port could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The KV-event socket could not be opened.
    #[error("KV events on {endpoint}: {message}")]
    KvEvents {
        /// Endpoint.
        endpoint: String,
        /// Cause.
        message: String,
    },
}

/// A running simulated server.
#[derive(Debug)]
pub struct SimServer {
    /// The bound address.
    pub addr: SocketAddr,
    replica: Arc<Replica>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    publisher: Option<KvEventPublisher>,
}

impl SimServer {
    /// Binds and serves one simulated server on the current tokio runtime.
    pub async fn start(cfg: SimConfig, tokenizer: Arc<ModelTokenizer>) -> Result<Self, StartError> {
        cfg.validate()?;
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let publisher = match &cfg.kv_events {
            None => None,
            Some(kv) => {
                let topic = cfg.expand(&kv.topic, local.port());
                Some(
                    KvEventPublisher::start(&kv.endpoint, topic, kv.mode)
                        .await
                        .map_err(|e| StartError::KvEvents {
                            endpoint: kv.endpoint.clone(),
                            message: e.to_string(),
                        })?,
                )
            }
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let engine = Engine::new(cfg, publisher.as_ref().map(|p| p.sink.clone()));
        let replica = Arc::new(Replica::new(
            engine,
            tokenizer,
            local.port(),
            publisher.as_ref().map(|p| p.endpoint.clone()),
            shutdown_rx.clone(),
        ));
        let app = router(Arc::clone(&replica));
        let mut stop = shutdown_rx;
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!("server error: {e}");
            }
        });
        tracing::info!(
            instance = replica.instance(),
            addr = %local,
            kv_events = ?replica.kv_events_endpoint,
            "fusioninfer-sim listening"
        );
        Ok(SimServer {
            addr: local,
            replica,
            shutdown,
            task,
            publisher,
        })
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's state (engine, instance name).
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The endpoint the KV-event PUB socket is on (port resolved), if enabled.
    pub fn kv_events_endpoint(&self) -> Option<&str> {
        self.publisher.as_ref().map(|p| p.endpoint.as_str())
    }

    /// Stops accepting, lets in-flight responses finish for up to 5 s, then stops.
    pub async fn shutdown(self) {
        self.replica.engine.close();
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        drop(self.publisher);
    }

    /// Waits until the server stops (it stops only through [`SimServer::shutdown`]).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// The KV-event endpoint of replica `i`: TCP ports shift by `i` (unless 0), IPC paths get `-i`.
pub fn replica_endpoint(endpoint: &str, i: u16) -> String {
    if i == 0 {
        return endpoint.to_owned();
    }
    if endpoint.starts_with("ipc://") {
        return format!("{endpoint}-{i}");
    }
    if let Some((head, port)) = endpoint.rsplit_once(':')
        && let Ok(p) = port.parse::<u16>()
        && p != 0
    {
        return format!("{head}:{}", p.saturating_add(i));
    }
    endpoint.to_owned()
}

/// Starts `n` servers in this process on `port, port+1, …` (each with its own engine state;
/// with port 0 each gets its own free port). On error, the ones already started are stopped.
pub async fn start_replicas(
    cfg: &SimConfig,
    n: u16,
    tokenizer: Arc<ModelTokenizer>,
) -> Result<Vec<SimServer>, StartError> {
    let mut servers = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut c = cfg.clone();
        if c.port != 0 {
            c.port = cfg.port.checked_add(i).ok_or_else(|| StartError::Bind {
                addr: format!("{}:{}+{i}", cfg.host, cfg.port),
                source: std::io::Error::other("port out of range"),
            })?;
        }
        if let Some(kv) = &mut c.kv_events {
            kv.endpoint = replica_endpoint(&kv.endpoint, i);
        }
        match SimServer::start(c, Arc::clone(&tokenizer)).await {
            Ok(s) => servers.push(s),
            Err(e) => {
                for s in servers {
                    s.shutdown().await;
                }
                return Err(e);
            }
        }
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_endpoints_shift() {
        assert_eq!(
            replica_endpoint("tcp://127.0.0.1:5557", 2),
            "tcp://127.0.0.1:5559"
        );
        assert_eq!(
            replica_endpoint("tcp://127.0.0.1:0", 2),
            "tcp://127.0.0.1:0"
        );
        assert_eq!(replica_endpoint("ipc:///tmp/kv", 1), "ipc:///tmp/kv-1");
        assert_eq!(replica_endpoint("tcp://*:5557", 0), "tcp://*:5557");
    }

    #[test]
    fn truncated_json_maps_to_python_wording() {
        let body = br#"{"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello"}"#;
        let e = parse_body(body).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("body.73"));
        assert!(e.message.contains("\"Expecting ',' delimiter\""));
    }
}
