//! The per-request logic: pass through, or run the two-step hand-off.
//!
//! With `x-prefiller-host-port` on an inference path the sidecar checks the target against the
//! [`Allowlist`], sends [`prefill_body`] to it, and then sends [`decode_body`] with the
//! prefiller's `kv_transfer_params` to the local engine, whose answer (streamed or not) goes
//! back to the client unchanged: its `usage` is the decoder's, which counts the whole prompt
//! and the transferred tokens as cached, exactly what a monolithic server would report.
//! Prefiller 5xx, connection failure, timeout or an answer without parameters: the original
//! body goes to the local engine, which prefills itself. Prefiller 4xx: its answer is the
//! client's. Everything else is passed through with the header removed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use fusioninfer_epp::openai::error_body;
use fusioninfer_sched::decision::headers::PREFILLER_HOST_PORT;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::allowlist::Allowlist;
use crate::metrics::{PdMetrics, PrefillOutcome};
use crate::rewrite::{
    decode_body, is_inference_path, kv_transfer_params, parse_prefiller, prefill_body,
};

/// How the sidecar talks to the engine and the prefillers.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// The local engine (the decoder), e.g. `127.0.0.1:8200`.
    pub engine: SocketAddr,
    /// Limit on one whole prefill call (connect, prefill, answer); past it the decoder prefills.
    pub prefill_timeout: Duration,
    /// Limit on opening a connection to the engine or a prefiller.
    pub connect_timeout: Duration,
    /// Largest request body read for a hand-off (larger: 413).
    pub max_body_bytes: usize,
}

/// The decode-side proxy: cheap to share between connections.
#[derive(Debug)]
pub struct Proxy {
    settings: ProxySettings,
    allowlist: Allowlist,
    metrics: PdMetrics,
    client: Client<HttpConnector, Body>,
}

/// Headers that describe one hop and are not forwarded (RFC 9110 §7.6.1), plus the ones the
/// sidecar recomputes.
const HOP_BY_HOP: [header::HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::HOST,
    header::CONTENT_LENGTH,
];

fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in HOP_BY_HOP {
        out.remove(name);
    }
    out.remove("keep-alive");
    out.remove(PREFILLER_HOST_PORT);
    out
}

/// An OpenAI-style error answered by the sidecar itself; `param` names the offending field.
fn error(status: StatusCode, message: &str, param: Option<&str>) -> Response<Body> {
    let mut response = Response::new(Body::from(error_body(status.as_u16(), message, param)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An upstream answer whose body has been read.
struct Buffered {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Proxy {
    /// A proxy in front of `settings.engine`, allowing `allowlist`'s prefill targets.
    pub fn new(settings: ProxySettings, allowlist: Allowlist) -> Arc<Proxy> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Arc::new(Proxy {
            settings,
            allowlist,
            metrics: PdMetrics::new(),
            client,
        })
    }

    /// The metrics' text exposition.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode(self.allowlist.len())
    }

    /// The allowlist in use.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// Handles one client request.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let prefiller = parts.headers.get(PREFILLER_HOST_PORT).cloned();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let headers = forwardable(&parts.headers);
        let Some(prefiller) = prefiller.filter(|_| is_inference_path(parts.uri.path())) else {
            self.metrics.request("passthrough");
            return self
                .forward(parts.method, &path_and_query, headers, body)
                .await;
        };
        let target = match parse_prefiller(prefiller.as_bytes()) {
            Ok(target) => target,
            Err(why) => {
                return self.refuse(
                    "malformed",
                    StatusCode::BAD_REQUEST,
                    &format!("header {PREFILLER_HOST_PORT}: {why}"),
                    Some(PREFILLER_HOST_PORT),
                );
            }
        };
        if !self.allowlist.contains(&target) {
            tracing::warn!(%target, "prefill target not in the allowlist");
            return self.refuse(
                "not_allowed",
                StatusCode::FORBIDDEN,
                &format!(
                    "header {PREFILLER_HOST_PORT}: {target} is not a prefill server of this pool"
                ),
                Some(PREFILLER_HOST_PORT),
            );
        }
        let original = match axum::body::to_bytes(body, self.settings.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return self.refuse(
                    "body_too_large",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the request body is larger than {} bytes, or could not be read",
                        self.settings.max_body_bytes
                    ),
                    None,
                );
            }
        };
        self.metrics.request("pd");
        // Not a JSON object: the engine gives the client its own 400, without a hand-off.
        let Ok(prefill) = prefill_body(&original) else {
            return self
                .forward(parts.method, &path_and_query, headers, Body::from(original))
                .await;
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.settings.prefill_timeout,
            self.buffered(target, &path_and_query, headers.clone(), prefill),
        )
        .await;
        // The prefiller's parameters are read once; `Ok` carries them to the decode request.
        let mut params = None;
        let outcome = match &answer {
            Err(_) => PrefillOutcome::Timeout,
            Ok(Err(_)) => PrefillOutcome::Unreachable,
            Ok(Ok(a)) if a.status.is_client_error() => PrefillOutcome::ClientError,
            Ok(Ok(a)) if !a.status.is_success() => PrefillOutcome::ServerError,
            Ok(Ok(a)) => {
                params = kv_transfer_params(&a.body);
                if params.is_some() {
                    PrefillOutcome::Ok
                } else {
                    PrefillOutcome::NoKvParams
                }
            }
        };
        self.metrics.prefill(outcome, started.elapsed());
        let decode = match (outcome, answer, params) {
            (PrefillOutcome::ClientError, Ok(Ok(a)), _) => {
                let mut response = Response::new(Body::from(a.body));
                *response.status_mut() = a.status;
                *response.headers_mut() = forwardable(&a.headers);
                return response;
            }
            (PrefillOutcome::Ok, _, Some(params)) => match decode_body(&original, &params) {
                Ok(body) => body,
                // prefill_body parsed the same bytes; unreachable, but never a panic.
                Err(_) => original.to_vec(),
            },
            (outcome, answer, _) => {
                let detail = match answer {
                    Err(_) => format!("no answer within {:?}", self.settings.prefill_timeout),
                    Ok(Err(e)) => e,
                    Ok(Ok(a)) => format!("status {}", a.status),
                };
                tracing::warn!(%target, outcome = outcome.as_str(), %detail, "prefill failed; decoding locally");
                original.to_vec()
            }
        };
        self.forward(parts.method, &path_and_query, headers, Body::from(decode))
            .await
    }

    fn request(
        &self,
        to: SocketAddr,
        method: axum::http::Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Request<Body>, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{to}{path_and_query}"))
            .body(body)
            .map_err(|e| format!("building the request to {to}: {e}"))?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends a request to a prefiller and reads the whole answer.
    async fn buffered(
        &self,
        to: SocketAddr,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Buffered, String> {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(header::ACCEPT_ENCODING);
        let request = self.request(
            to,
            axum::http::Method::POST,
            path_and_query,
            headers,
            Body::from(body),
        )?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("sending to {to}: {e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {to}: {e}"))?
            .to_bytes();
        Ok(Buffered {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Counts a refusal and answers it.
    fn refuse(
        &self,
        reason: &'static str,
        status: StatusCode,
        message: &str,
        param: Option<&str>,
    ) -> Response<Body> {
        self.metrics.request("refused");
        self.metrics.refusal(reason);
        error(status, message, param)
    }

    /// Sends a request to the engine and streams its answer back; 502 when it cannot be
    /// reached.
    async fn forward(
        &self,
        method: axum::http::Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Response<Body> {
        let to = self.settings.engine;
        let request = match self.request(to, method, path_and_query, headers, body) {
            Ok(request) => request,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e, None),
        };
        match self.client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                parts.headers = forwardable(&parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                tracing::warn!(engine = %to, error = ?e, "engine unreachable");
                error(
                    StatusCode::BAD_GATEWAY,
                    &format!("the model server behind this sidecar is unreachable: {e}"),
                    None,
                )
            }
        }
    }
}
