//! The ext_proc conversation with the gateway, one [`Session`] per HTTP request.
//!
//! Request side, for the inference paths (see [`crate::openai`]):
//!
//! * `FULL_DUPLEX_STREAMED` (what GAIE gateways use): headers and body chunks are held until
//!   the end of the body (its `end_of_stream`, or the trailers); then the body is parsed, the
//!   scheduler picks, and the picker answers the headers phase — destination header
//!   `x-gateway-destination-endpoint`, decision headers (`x-prefiller-host-port`, …),
//!   `content-length`, a generated `x-request-id` if there was none, control headers removed,
//!   dynamic metadata `envoy.lb` / `x-gateway-destination-endpoint` (primary then fallbacks),
//!   `clear_route_cache` — and then sends the body back in chunks of at most
//!   [`MAX_BODY_CHUNK`] bytes.
//! * `BUFFERED`: the headers phase is answered at once without changes; the whole body arrives
//!   in one message and its answer carries the same mutations and metadata.
//!
//! Other paths are routed to a random ready endpoint as soon as the headers arrive; their body
//! is streamed back untouched (never buffered, so no size limit applies).
//!
//! Rejections are immediate responses with an OpenAI-style JSON error: 400 (not an OpenAI
//! request; the message names the field), 413 (body over the limit), 429 (every candidate
//! saturated), 503 (no ready endpoint), 500 (scheduler failure, or an unsupported body mode:
//! `STREAMED`, `NONE` or `GRPC` for a request with a body).
//!
//! Response side: headers and body pass through (echoed chunk by chunk in
//! `FULL_DUPLEX_STREAMED`, `CONTINUE` otherwise); `usage` is read from JSON answers and from
//! server-sent events as they pass; when the answer ends (or the stream is cut) the scheduler's
//! post-response hooks run (load accounting) and the token counters grow. The picker adds the
//! response header `x-fusioninfer-endpoint` with the endpoint it chose.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse, StreamedBodyResponse,
    TrailersResponse, body_mutation, external_processor_server, processing_request,
    processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use fusioninfer_kvcache::ModelTokenizer;
use fusioninfer_sched::{ApiKind, Endpoint, Request, ResponseInfo, Routed, Scheduler, decision};
use futures::Stream;
use tonic::Status;

use crate::endpoints::EndpointStore;
use crate::metrics::{EppMetrics, RejectionReason};
use crate::openai::{self, Route, SseUsageScanner, Usage};

/// Largest body chunk sent back to the gateway (the reference EPP's limit, under Envoy's
/// 64 KiB recommendation).
pub const MAX_BODY_CHUNK: usize = 62_000;

/// Request header (and `envoy.lb` metadata key) naming the destination.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// Dynamic metadata namespace the destination goes in.
pub const DESTINATION_NAMESPACE: &str = "envoy.lb";
/// Metadata namespace of the gateway's optional candidate subset hint.
pub const SUBSET_HINT_NAMESPACE: &str = "envoy.lb.subset_hint";
/// Key of the subset hint: a list of `ip:port`.
pub const SUBSET_HINT_KEY: &str = "x-gateway-destination-endpoint-subset";
/// `envoy.lb` key with which the gateway reports the endpoint that actually served.
pub const SERVED_KEY: &str = "x-gateway-destination-endpoint-served";
/// Response header with the endpoint the picker chose.
pub const PICKED_RESPONSE_HEADER: &str = "x-fusioninfer-endpoint";
/// Control header: the model to serve instead of the body's `model` (the body is rewritten).
pub const MODEL_REWRITE_HEADER: &str = "x-gateway-model-name-rewrite";

/// Control headers read and removed before forwarding.
pub const CONTROL_HEADERS: [&str; 3] = [
    fusioninfer_sched::request::headers::OBJECTIVE,
    fusioninfer_sched::request::headers::FAIRNESS_ID,
    MODEL_REWRITE_HEADER,
];

/// Headers only the picker may set; a client's values are removed.
const DECISION_HEADERS: [&str; 3] = [
    DESTINATION_HEADER,
    decision::headers::PREFILLER_HOST_PORT,
    decision::headers::DATA_PARALLEL_HOST_PORT,
];

/// Settings of the request handling.
#[derive(Clone, Debug)]
pub struct PickerSettings {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Base models; other models count as LoRA adapters. Empty: a model is an adapter if a
    /// ready server reports it as one.
    pub base_models: Vec<String>,
    /// Tokenizes prompts into [`Request::token_ids`]; set only when a scheduler plugin reads
    /// them (`precise-prefix-cache-scorer`).
    pub tokenizer: Option<Arc<ModelTokenizer>>,
}

impl Default for PickerSettings {
    fn default() -> Self {
        PickerSettings {
            max_body_bytes: 16 * 1024 * 1024,
            base_models: Vec::new(),
            tokenizer: None,
        }
    }
}

/// What every session shares.
pub struct Picker {
    scheduler: Arc<Scheduler>,
    store: Arc<EndpointStore>,
    metrics: Arc<EppMetrics>,
    settings: PickerSettings,
}

impl std::fmt::Debug for Picker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Picker {
    /// A picker choosing among `store`'s ready endpoints with `scheduler`.
    pub fn new(
        scheduler: Arc<Scheduler>,
        store: Arc<EndpointStore>,
        metrics: Arc<EppMetrics>,
        settings: PickerSettings,
    ) -> Arc<Self> {
        Arc::new(Picker {
            scheduler,
            store,
            metrics,
            settings,
        })
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }
}

/// The prompt's token ids as the model server computes them, or `None` (the scorer then falls
/// back to approximate matching) when the body has no single prompt or the template fails.
fn token_ids(tokenizer: &ModelTokenizer, api: ApiKind, body: &[u8]) -> Option<Vec<u32>> {
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let chat = api == ApiKind::ChatCompletions;
    match tokenizer.request_token_ids(chat, &map) {
        Ok(ids) => ids,
        Err(error) => {
            tracing::debug!(%error, "tokenizing the prompt failed; approximate prefix scoring");
            None
        }
    }
}

/// The tonic service.
#[derive(Clone, Debug)]
pub struct ExtProcService {
    picker: Arc<Picker>,
}

impl ExtProcService {
    /// A service over `picker`.
    pub fn new(picker: Arc<Picker>) -> Self {
        ExtProcService { picker }
    }

    /// The tonic server, accepting messages up to the body limit plus room for headers.
    pub fn into_server(self) -> external_processor_server::ExternalProcessorServer<Self> {
        let limit = self.picker.settings.max_body_bytes.saturating_add(1 << 20);
        external_processor_server::ExternalProcessorServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl external_processor_server::ExternalProcessor for ExtProcService {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: tonic::Request<tonic::Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
        // The session runs inside the response stream, driven by the task that sends the
        // answers: no extra task or channel hop per message. Dropping the stream (the gateway
        // went away) drops the session, which releases the request's load accounting.
        let state = StreamState {
            inbound: request.into_inner(),
            session: Session::new(Arc::clone(&self.picker)),
            pending: VecDeque::new(),
            ended: false,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(item) = state.pending.pop_front() {
                    return Some((item, state));
                }
                if state.ended {
                    return None;
                }
                match state.inbound.message().await {
                    Ok(Some(message)) => match state.session.handle(message) {
                        Ok(responses) => state.pending.extend(responses.into_iter().map(Ok)),
                        Err(status) => {
                            state.pending.push_back(Err(status));
                            state.ended = true;
                        }
                    },
                    Ok(None) => return None,
                    Err(status) => {
                        tracing::debug!(%status, "ext_proc stream ended with an error");
                        return None;
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

struct StreamState {
    inbound: tonic::Streaming<ProcessingRequest>,
    session: Session,
    pending: VecDeque<Result<ProcessingResponse, Status>>,
    ended: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the request headers.
    Start,
    /// Inference request: collecting the body.
    Buffering,
    /// Passthrough request: headers answered, body chunks echoed as they come.
    Streaming,
    /// Request answered; waiting for (or passing) the response.
    Forwarded,
    /// Answered with an immediate response, or the response is complete.
    Done,
}

/// The routing outcome kept for the response phase.
struct Forwarded {
    primary: SocketAddr,
    scheduled: Option<(Request, Routed)>,
}

/// One HTTP request's ext_proc conversation. [`Session::handle`] takes each message from the
/// gateway and returns the messages to send back; it never blocks and never panics on
/// malformed input (protocol violations become a gRPC error).
pub struct Session {
    picker: Arc<Picker>,
    phase: Phase,
    request_mode: BodySendMode,
    response_mode: BodySendMode,
    path: String,
    request_id: Option<String>,
    request_id_generated: bool,
    objective: Option<String>,
    fairness_id: Option<String>,
    model_rewrite: Option<String>,
    subset: Option<Vec<String>>,
    body: Vec<u8>,
    forwarded: Option<Forwarded>,
    response_status: u16,
    served_by: Option<SocketAddr>,
    sse: Option<SseUsageScanner>,
    json: Option<Vec<u8>>,
    finished: bool,
}

/// Most bytes of a JSON answer kept to read its `usage`.
const MAX_JSON_ANSWER: usize = 4 << 20;

impl Session {
    /// A session for one request.
    pub fn new(picker: Arc<Picker>) -> Self {
        Session {
            picker,
            phase: Phase::Start,
            request_mode: BodySendMode::FullDuplexStreamed,
            response_mode: BodySendMode::FullDuplexStreamed,
            path: String::new(),
            request_id: None,
            request_id_generated: false,
            objective: None,
            fairness_id: None,
            model_rewrite: None,
            subset: None,
            body: Vec::new(),
            forwarded: None,
            response_status: 0,
            served_by: None,
            sse: None,
            json: None,
            finished: false,
        }
    }

    /// Handles one message from the gateway.
    pub fn handle(
        &mut self,
        message: ProcessingRequest,
    ) -> Result<Vec<ProcessingResponse>, Status> {
        if let Some(config) = &message.protocol_config {
            self.request_mode = BodySendMode::try_from(config.request_body_mode)
                .unwrap_or(BodySendMode::FullDuplexStreamed);
            self.response_mode = BodySendMode::try_from(config.response_body_mode)
                .unwrap_or(BodySendMode::FullDuplexStreamed);
        }
        let Some(request) = message.request else {
            return Err(Status::invalid_argument(
                "ProcessingRequest carries no request headers, body or trailers",
            ));
        };
        use processing_request::Request as R;
        match request {
            R::RequestHeaders(headers) => {
                self.on_request_headers(headers, message.metadata_context.as_ref())
            }
            R::RequestBody(body) => self.on_request_body(body),
            R::RequestTrailers(_) => self.on_request_trailers(),
            R::ResponseHeaders(headers) => {
                self.on_response_headers(headers, message.metadata_context.as_ref())
            }
            R::ResponseBody(body) => self.on_response_body(body),
            R::ResponseTrailers(_) => self.on_response_trailers(),
        }
    }

    fn unexpected(&self, what: &str) -> Status {
        Status::failed_precondition(format!("unexpected {what} in phase {:?}", self.phase))
    }

    fn on_request_headers(
        &mut self,
        headers: HttpHeaders,
        metadata: Option<&Metadata>,
    ) -> Result<Vec<ProcessingResponse>, Status> {
        if self.phase != Phase::Start {
            return Err(self.unexpected("request headers"));
        }
        let mut content_length: Option<u64> = None;
        for header in headers.headers.iter().flat_map(|h| &h.headers) {
            let key = header.key.as_str();
            let value = || header_value(header);
            if key.eq_ignore_ascii_case(":path") {
                self.path = value();
            } else if key.eq_ignore_ascii_case("content-length") {
                content_length = value().trim().parse().ok();
            } else if key.eq_ignore_ascii_case(fusioninfer_sched::request::headers::REQUEST_ID) {
                self.request_id = Some(value()).filter(|v| !v.is_empty());
            } else if key.eq_ignore_ascii_case(CONTROL_HEADERS[0]) {
                self.objective = Some(value());
            } else if key.eq_ignore_ascii_case(CONTROL_HEADERS[1]) {
                self.fairness_id = Some(value());
            } else if key.eq_ignore_ascii_case(MODEL_REWRITE_HEADER) {
                self.model_rewrite = Some(value()).filter(|v| !v.trim().is_empty());
            }
        }
        if self.request_id.is_none() {
            self.request_id = Some(new_request_id());
            self.request_id_generated = true;
        }
        self.subset = metadata.and_then(subset_hint);

        let route = openai::route(&self.path);
        if route == Route::Passthrough {
            return Ok(self.route_passthrough(headers.end_of_stream));
        }
        if let Some(length) = content_length
            && length > self.picker.settings.max_body_bytes as u64
        {
            return Ok(self.body_too_large(length));
        }
        if headers.end_of_stream {
            return Ok(self.finish_request(false, false));
        }
        match self.request_mode {
            BodySendMode::FullDuplexStreamed => {
                self.phase = Phase::Buffering;
                if let Some(length) = content_length {
                    self.body.reserve(length as usize);
                }
                Ok(Vec::new())
            }
            BodySendMode::Buffered | BodySendMode::BufferedPartial => {
                self.phase = Phase::Buffering;
                Ok(vec![headers_response(CommonResponse::default(), None)])
            }
            mode => Ok(self.reject(
                500,
                RejectionReason::Unsupported,
                format!(
                    "the gateway sends request bodies in {} mode; the endpoint picker needs FULL_DUPLEX_STREAMED or BUFFERED",
                    mode.as_str_name()
                ),
                None,
            )),
        }
    }

    fn on_request_body(&mut self, body: HttpBody) -> Result<Vec<ProcessingResponse>, Status> {
        match self.phase {
            Phase::Buffering => {
                let total = self.body.len() as u64 + body.body.len() as u64;
                if total > self.picker.settings.max_body_bytes as u64 {
                    return Ok(self.body_too_large(total));
                }
                self.body.extend_from_slice(&body.body);
                let complete =
                    body.end_of_stream || self.request_mode != BodySendMode::FullDuplexStreamed;
                if complete {
                    Ok(self.finish_request(true, false))
                } else {
                    Ok(Vec::new())
                }
            }
            Phase::Streaming => {
                self.picker.metrics.body_bytes(body.body.len());
                Ok(vec![self.pass_body(body, true)])
            }
            _ => Err(self.unexpected("request body")),
        }
    }

    fn on_request_trailers(&mut self) -> Result<Vec<ProcessingResponse>, Status> {
        match self.phase {
            // Trailers end a full-duplex body that had no end_of_stream.
            Phase::Buffering if self.request_mode == BodySendMode::FullDuplexStreamed => {
                let mut responses = self.finish_request(true, true);
                if self.phase == Phase::Forwarded {
                    responses.push(trailers_response(true));
                }
                Ok(responses)
            }
            Phase::Buffering | Phase::Streaming | Phase::Forwarded => {
                Ok(vec![trailers_response(true)])
            }
            _ => Err(self.unexpected("request trailers")),
        }
    }

    /// A non-inference request: a random ready endpoint, decided on the headers.
    fn route_passthrough(&mut self, end_of_stream: bool) -> Vec<ProcessingResponse> {
        let started = Instant::now();
        let picked = {
            let ready = self.picker.store.ready();
            let candidates: Vec<&Endpoint> = match &self.subset {
                Some(subset) => {
                    let subset: HashSet<&str> = subset.iter().map(String::as_str).collect();
                    ready
                        .iter()
                        .filter(|e| subset.contains(e.address.to_string().as_str()))
                        .collect()
                }
                None => ready.iter().collect(),
            };
            if candidates.is_empty() {
                None
            } else {
                Some(candidates[fastrand::usize(..candidates.len())].address)
            }
        };
        let Some(primary) = picked else {
            self.picker.metrics.decision_time(started.elapsed());
            return self.reject(
                503,
                RejectionReason::NoEndpoint,
                "no ready endpoint".to_owned(),
                None,
            );
        };
        self.picker
            .metrics
            .decision(started.elapsed(), &primary.to_string());
        tracing::debug!(request_id = self.request_id.as_deref().unwrap_or(""), path = %self.path, endpoint = %primary, "passthrough request routed");
        let mutation = self.routing_mutation(primary, &Default::default(), None);
        let metadata = destination_metadata(&primary.to_string());
        self.forwarded = Some(Forwarded {
            primary,
            scheduled: None,
        });
        let common = CommonResponse {
            header_mutation: Some(mutation),
            clear_route_cache: true,
            ..Default::default()
        };
        if end_of_stream {
            self.phase = Phase::Forwarded;
        } else {
            self.phase = Phase::Streaming;
        }
        vec![headers_response(common, Some(metadata))]
    }

    /// The body is complete (or absent): parse, schedule, answer.
    fn finish_request(&mut self, had_body: bool, trailers_follow: bool) -> Vec<ProcessingResponse> {
        self.picker.metrics.body_bytes(self.body.len());
        let Route::Inference(api) = openai::route(&self.path) else {
            // Passthrough requests never buffer.
            return self.reject(
                500,
                RejectionReason::Internal,
                "internal routing error".into(),
                None,
            );
        };
        let parsed = match openai::parse_request(api, &self.body) {
            Ok(parsed) => parsed,
            Err(error) => {
                return self.reject(
                    error.status,
                    RejectionReason::BadRequest,
                    error.message,
                    error.param,
                );
            }
        };
        let mut request = parsed.request;
        if let Some(tokenizer) = &self.picker.settings.tokenizer {
            request.token_ids = token_ids(tokenizer, api, &self.body);
            if let Some(ids) = &request.token_ids {
                request.prompt_tokens = u32::try_from(ids.len()).ok();
            }
        }
        request.request_id = self.request_id.clone();
        request.objective = self.objective.clone();
        request.fairness_id = self.fairness_id.clone();
        let mut body_changed = false;
        if let Some(rewrite) = self.model_rewrite.clone()
            && rewrite != request.model
        {
            let replacement = serde_json::to_vec(&rewrite).expect("a string serializes");
            self.body.splice(parsed.model_span, replacement);
            request.target_model = Some(rewrite);
            request.body_bytes = self.body.len();
            body_changed = true;
        }

        let started = Instant::now();
        let decision = {
            let ready = self.picker.store.ready();
            request.lora_adapter = self.lora_adapter(&request, &ready);
            match &self.subset {
                None => self.picker.scheduler.schedule(&request, &ready, started),
                Some(subset) => {
                    let subset: HashSet<&str> = subset.iter().map(String::as_str).collect();
                    let candidates: Vec<Endpoint> = ready
                        .iter()
                        .filter(|e| subset.contains(e.address.to_string().as_str()))
                        .cloned()
                        .collect();
                    self.picker
                        .scheduler
                        .schedule(&request, &candidates, started)
                }
            }
        };
        let elapsed = started.elapsed();
        let routed = match decision {
            fusioninfer_sched::Decision::Routed(routed) => routed,
            fusioninfer_sched::Decision::Rejected(rejection) => {
                self.picker.metrics.decision_time(elapsed);
                let reason = match rejection.reason {
                    fusioninfer_sched::RejectReason::Saturated => RejectionReason::Saturated,
                    fusioninfer_sched::RejectReason::NoEndpoint => RejectionReason::NoEndpoint,
                    fusioninfer_sched::RejectReason::Internal => RejectionReason::Internal,
                };
                let message = match rejection.reason {
                    fusioninfer_sched::RejectReason::NoEndpoint => {
                        format!("no ready endpoint: {}", rejection.message)
                    }
                    _ => rejection.message,
                };
                return self.reject(rejection.reason.http_status(), reason, message, None);
            }
        };
        let primary = routed.primary;
        self.picker.metrics.decision(elapsed, &primary.to_string());
        tracing::debug!(
            request_id = self.request_id.as_deref().unwrap_or(""),
            model = %request.model,
            endpoint = %primary,
            fallbacks = routed.fallbacks.len(),
            body_bytes = self.body.len(),
            decision_us = elapsed.as_micros() as u64,
            "request routed"
        );

        let content_length = (had_body || body_changed).then_some(self.body.len());
        let mutation = self.routing_mutation(primary, &routed.headers, content_length);
        let metadata = destination_metadata(&routed.destination_list());
        self.forwarded = Some(Forwarded {
            primary,
            scheduled: Some((request, routed)),
        });
        self.phase = Phase::Forwarded;
        let mut common = CommonResponse {
            header_mutation: Some(mutation),
            clear_route_cache: true,
            ..Default::default()
        };
        let body = std::mem::take(&mut self.body);
        if !had_body {
            return vec![headers_response(common, Some(metadata))];
        }
        match self.request_mode {
            BodySendMode::FullDuplexStreamed => {
                let mut responses = Vec::with_capacity(2 + body.len() / MAX_BODY_CHUNK);
                responses.push(headers_response(common, Some(metadata)));
                responses.extend(streamed_body(&body, !trailers_follow));
                responses
            }
            _ => {
                if body_changed {
                    common.body_mutation = Some(BodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(body)),
                    });
                }
                vec![ProcessingResponse {
                    response: Some(processing_response::Response::RequestBody(BodyResponse {
                        response: Some(common),
                    })),
                    dynamic_metadata: Some(metadata),
                    ..Default::default()
                }]
            }
        }
    }

    /// Whether the target model is a LoRA adapter (see [`PickerSettings::base_models`]).
    fn lora_adapter(&self, request: &Request, ready: &[Endpoint]) -> Option<String> {
        let target = request.target_model();
        let base = &self.picker.settings.base_models;
        let adapter = if base.is_empty() {
            ready.iter().any(|e| {
                e.metrics
                    .lora
                    .as_ref()
                    .is_some_and(|l| l.is_running(target) || l.is_waiting(target))
            })
        } else {
            !base.iter().any(|b| b == target)
        };
        adapter.then(|| target.to_owned())
    }

    fn routing_mutation(
        &self,
        primary: SocketAddr,
        decision_headers: &std::collections::BTreeMap<String, String>,
        content_length: Option<usize>,
    ) -> HeaderMutation {
        let mut set_headers = Vec::with_capacity(4 + decision_headers.len());
        set_headers.push(set_header(DESTINATION_HEADER, &primary.to_string()));
        for (key, value) in decision_headers {
            set_headers.push(set_header(key, value));
        }
        if self.request_id_generated
            && let Some(id) = &self.request_id
        {
            set_headers.push(set_header(
                fusioninfer_sched::request::headers::REQUEST_ID,
                id,
            ));
        }
        if let Some(length) = content_length {
            set_headers.push(set_header("content-length", &length.to_string()));
        }
        let remove_headers = CONTROL_HEADERS
            .iter()
            .chain(DECISION_HEADERS.iter())
            .filter(|h| **h != DESTINATION_HEADER && !decision_headers.contains_key(**h))
            .map(|h| (*h).to_owned())
            .collect();
        HeaderMutation {
            set_headers,
            remove_headers,
        }
    }

    fn body_too_large(&mut self, bytes: u64) -> Vec<ProcessingResponse> {
        self.picker.metrics.body_bytes(bytes as usize);
        let limit = self.picker.settings.max_body_bytes;
        self.reject(
            413,
            RejectionReason::BodyTooLarge,
            format!("the request body ({bytes} bytes or more) exceeds the limit of {limit} bytes"),
            None,
        )
    }

    fn reject(
        &mut self,
        status: u16,
        reason: RejectionReason,
        message: String,
        param: Option<&'static str>,
    ) -> Vec<ProcessingResponse> {
        self.phase = Phase::Done;
        self.body = Vec::new();
        self.picker.metrics.rejection(reason);
        let request_id = self.request_id.clone().unwrap_or_default();
        if status >= 500 && reason != RejectionReason::NoEndpoint {
            tracing::warn!(%request_id, path = %self.path, status, reason = reason.as_str(), %message, "request rejected");
        } else {
            tracing::info!(%request_id, path = %self.path, status, reason = reason.as_str(), %message, "request rejected");
        }
        let mut set_headers = vec![
            set_header("content-type", "application/json"),
            set_header(fusioninfer_sched::request::headers::REQUEST_ID, &request_id),
        ];
        if status == 429 || status == 503 {
            set_headers.push(set_header("retry-after", "1"));
        }
        vec![ProcessingResponse {
            response: Some(processing_response::Response::ImmediateResponse(
                ImmediateResponse {
                    status: Some(HttpStatus {
                        code: i32::from(status),
                    }),
                    headers: Some(HeaderMutation {
                        set_headers,
                        remove_headers: Vec::new(),
                    }),
                    body: openai::error_body(status, &message, param),
                    grpc_status: None,
                    details: format!("fusioninfer_epp_{}", reason.as_str()),
                },
            )),
            ..Default::default()
        }]
    }

    /// Answers a body chunk without changing it.
    fn pass_body(&self, body: HttpBody, request: bool) -> ProcessingResponse {
        let mode = if request {
            self.request_mode
        } else {
            self.response_mode
        };
        let common = if mode == BodySendMode::FullDuplexStreamed {
            CommonResponse {
                body_mutation: Some(BodyMutation {
                    mutation: Some(body_mutation::Mutation::StreamedResponse(
                        StreamedBodyResponse {
                            body: body.body,
                            end_of_stream: body.end_of_stream,
                            ..Default::default()
                        },
                    )),
                }),
                ..Default::default()
            }
        } else {
            CommonResponse::default()
        };
        let response = BodyResponse {
            response: Some(common),
        };
        ProcessingResponse {
            response: Some(if request {
                processing_response::Response::RequestBody(response)
            } else {
                processing_response::Response::ResponseBody(response)
            }),
            ..Default::default()
        }
    }

    fn on_response_headers(
        &mut self,
        headers: HttpHeaders,
        metadata: Option<&Metadata>,
    ) -> Result<Vec<ProcessingResponse>, Status> {
        if !matches!(self.phase, Phase::Forwarded | Phase::Streaming)
            || self.response_status != 0
            || self.finished
        {
            return Err(self.unexpected("response headers"));
        }
        let mut content_type = String::new();
        for header in headers.headers.iter().flat_map(|h| &h.headers) {
            if header.key.eq_ignore_ascii_case(":status") {
                self.response_status = header_value(header).trim().parse().unwrap_or(0);
            } else if header.key.eq_ignore_ascii_case("content-type") {
                content_type = header_value(header).to_ascii_lowercase();
            }
        }
        self.served_by = metadata.and_then(served_endpoint);
        if content_type.contains("text/event-stream") {
            self.sse = Some(SseUsageScanner::default());
        } else if content_type.contains("json") {
            self.json = Some(Vec::new());
        }
        let picked = self.forwarded.as_ref().map(|f| f.primary.to_string());
        let mutation = picked.map(|p| HeaderMutation {
            set_headers: vec![set_header(PICKED_RESPONSE_HEADER, &p)],
            remove_headers: Vec::new(),
        });
        let response = ProcessingResponse {
            response: Some(processing_response::Response::ResponseHeaders(
                HeadersResponse {
                    response: Some(CommonResponse {
                        header_mutation: mutation,
                        ..Default::default()
                    }),
                },
            )),
            ..Default::default()
        };
        if headers.end_of_stream {
            self.finish_response();
        }
        Ok(vec![response])
    }

    fn on_response_body(&mut self, body: HttpBody) -> Result<Vec<ProcessingResponse>, Status> {
        if self.forwarded.is_none() || self.finished {
            return Err(self.unexpected("response body"));
        }
        if let Some(scanner) = &mut self.sse {
            scanner.feed(&body.body);
        } else if let Some(json) = &mut self.json {
            if json.len() + body.body.len() <= MAX_JSON_ANSWER {
                json.extend_from_slice(&body.body);
            } else {
                self.json = None;
            }
        }
        let end = body.end_of_stream;
        let response = self.pass_body(body, false);
        if end {
            self.finish_response();
        }
        Ok(vec![response])
    }

    fn on_response_trailers(&mut self) -> Result<Vec<ProcessingResponse>, Status> {
        if self.forwarded.is_none() || self.finished {
            return Err(self.unexpected("response trailers"));
        }
        self.finish_response();
        Ok(vec![trailers_response(false)])
    }

    fn finish_response(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let usage: Option<Usage> = match (&self.sse, &self.json) {
            (Some(scanner), _) => scanner.usage(),
            (None, Some(json)) => openai::usage_from_json(json),
            _ => None,
        };
        self.json = None;
        self.picker.metrics.response(self.response_status, usage);
        if let Some(Forwarded {
            primary,
            scheduled: Some((request, routed)),
        }) = &self.forwarded
        {
            let info = ResponseInfo {
                served_by: self.served_by.or(Some(*primary)),
                status: self.response_status,
            };
            self.picker
                .scheduler
                .on_response(request, routed, &info, Instant::now());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A stream cut before the answer ended still releases the load it was counted for.
        if self.forwarded.is_some() && !self.finished {
            self.finished = true;
            self.picker.metrics.response(0, None);
            if let Some(Forwarded {
                primary,
                scheduled: Some((request, routed)),
            }) = &self.forwarded
            {
                let info = ResponseInfo {
                    served_by: self.served_by.or(Some(*primary)),
                    status: 0,
                };
                self.picker
                    .scheduler
                    .on_response(request, routed, &info, Instant::now());
            }
        }
    }
}

/// A header value as text (Envoy sends `raw_value`; older gateways `value`).
fn header_value(header: &HeaderValue) -> String {
    if header.raw_value.is_empty() {
        header.value.clone()
    } else {
        String::from_utf8_lossy(&header.raw_value).into_owned()
    }
}

fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: String::new(),
            raw_value: value.as_bytes().to_vec(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn headers_response(common: CommonResponse, metadata: Option<Struct>) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse {
                response: Some(common),
            },
        )),
        dynamic_metadata: metadata,
        ..Default::default()
    }
}

fn trailers_response(request: bool) -> ProcessingResponse {
    let response = TrailersResponse::default();
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestTrailers(response)
        } else {
            processing_response::Response::ResponseTrailers(response)
        }),
        ..Default::default()
    }
}

/// The body as streamed body responses of at most [`MAX_BODY_CHUNK`] bytes; the last carries
/// `end_of_stream` when `end` (an empty body gives one empty chunk).
pub fn streamed_body(body: &[u8], end: bool) -> Vec<ProcessingResponse> {
    let chunks: Vec<&[u8]> = if body.is_empty() {
        vec![&[][..]]
    } else {
        body.chunks(MAX_BODY_CHUNK).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| ProcessingResponse {
            response: Some(processing_response::Response::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    body_mutation: Some(BodyMutation {
                        mutation: Some(body_mutation::Mutation::StreamedResponse(
                            StreamedBodyResponse {
                                body: chunk.to_vec(),
                                end_of_stream: end && i == last,
                                ..Default::default()
                            },
                        )),
                    }),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        })
        .collect()
}

/// `{"envoy.lb": {"x-gateway-destination-endpoint": destinations}}`.
pub fn destination_metadata(destinations: &str) -> Struct {
    let inner = Struct {
        fields: [(
            DESTINATION_HEADER.to_owned(),
            Value {
                kind: Some(value::Kind::StringValue(destinations.to_owned())),
            },
        )]
        .into(),
    };
    Struct {
        fields: [(
            DESTINATION_NAMESPACE.to_owned(),
            Value {
                kind: Some(value::Kind::StructValue(inner)),
            },
        )]
        .into(),
    }
}

/// The gateway's candidate subset (`envoy.lb.subset_hint`), if it sent one.
fn subset_hint(metadata: &Metadata) -> Option<Vec<String>> {
    let hint = metadata.filter_metadata.get(SUBSET_HINT_NAMESPACE)?;
    let value = hint.fields.get(SUBSET_HINT_KEY)?;
    match &value.kind {
        Some(value::Kind::ListValue(list)) => Some(
            list.values
                .iter()
                .filter_map(|v| match &v.kind {
                    Some(value::Kind::StringValue(s)) => Some(s.trim().to_owned()),
                    _ => None,
                })
                .collect(),
        ),
        Some(value::Kind::StringValue(s)) => Some(
            s.split(',')
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
        ),
        _ => None,
    }
}

/// The endpoint the gateway reports as having served the request, if it does.
fn served_endpoint(metadata: &Metadata) -> Option<SocketAddr> {
    let lb = metadata.filter_metadata.get(DESTINATION_NAMESPACE)?;
    match &lb.fields.get(SERVED_KEY)?.kind {
        Some(value::Kind::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A random version-4 UUID.
pub fn new_request_id() -> String {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_tokenized_like_the_simulator_or_left_to_the_fallback() {
        let tokenizer = ModelTokenizer::fallback();
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"Hello world"}]}"#;
        let rendered = tokenizer
            .apply_chat_template(
                &[serde_json::json!({"role": "user", "content": "Hello world"})],
                true,
                None,
            )
            .unwrap();
        assert_eq!(
            token_ids(&tokenizer, ApiKind::ChatCompletions, chat),
            Some(tokenizer.encode(&rendered, false).unwrap())
        );
        let completion = br#"{"model":"m","prompt":[7,8,9]}"#;
        assert_eq!(
            token_ids(&tokenizer, ApiKind::Completions, completion),
            Some(vec![7, 8, 9])
        );
        for unusable in [
            &br#"{"model":"m","prompt":["a","b"]}"#[..],
            br#"{"model":"m","messages":"nope"}"#,
            b"[1, 2]",
            b"not json",
        ] {
            let api = if unusable.starts_with(br#"{"model":"m","messages""#) {
                ApiKind::ChatCompletions
            } else {
                ApiKind::Completions
            };
            assert_eq!(token_ids(&tokenizer, api, unusable), None);
        }
    }
}
