//! The sidecar in process between simulated vLLM servers (`fusioninfer-sim`, which speaks the
//! NIXL-style `kv_transfer_params`) on loopback: one prefiller, one decoder behind the sidecar,
//! and a third server that answers the same requests alone, as a monolithic server would. The
//! gateway path (Envoy → endpoint picker → sidecar) is covered by `fusioninfer up`'s tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fusioninfer_pd::{Options, RunningSidecar};
use fusioninfer_sim::ModelTokenizer;
use fusioninfer_sim::config::SimConfig;
use fusioninfer_sim::server::SimServer;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const HEADER: &str = "x-prefiller-host-port";

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn pod(&self) -> &str {
        self.headers
            .get("x-inference-pod")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The usage of a JSON answer, or of the SSE usage chunk.
    fn usage(&self) -> Value {
        if self.body.starts_with("data:") {
            self.body
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|v| v["usage"].is_object())
                .map(|v| v["usage"].clone())
                .unwrap_or(Value::Null)
        } else {
            self.json()["usage"].clone()
        }
    }
}

/// One request on a fresh connection, the whole answer read (bounded by a 30 s timeout).
async fn send(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let call = async {
        let stream = tokio::net::TcpStream::connect(to).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", to.to_string())
            .header("content-type", "application/json");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let response = sender
            .send_request(builder.body(Full::new(Bytes::from(bytes))).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("answered within 30 s")
}

/// A sample of a Prometheus text; the series must be there.
fn sample(text: &str, series: &str) -> f64 {
    find_sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A counter of the sidecar's, whose labelled series appear on first use (0 when absent).
fn count(text: &str, series: &str) -> f64 {
    find_sample(text, series).unwrap_or(0.0)
}

fn find_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|rest| rest.trim().parse().ok())
    })
}

async fn metrics(at: SocketAddr) -> String {
    send(at, "GET", "/metrics", &[], None).await.body
}

async fn sim(instance: &str) -> SimServer {
    let config = SimConfig {
        port: 0,
        instance: instance.to_owned(),
        time_scale: 0.01,
        max_model_len: 1 << 16,
        ..SimConfig::default()
    };
    SimServer::start(config, Arc::new(ModelTokenizer::fallback()))
        .await
        .expect("simulator starts")
}

struct Setup {
    prefill: SimServer,
    decode: SimServer,
    sidecar: RunningSidecar,
}

impl Setup {
    async fn start(tweak: impl FnOnce(&mut Options)) -> Setup {
        let prefill = sim("prefill-0").await;
        let decode = sim("decode-0").await;
        let mut options = Options::local(decode.addr, vec![prefill.addr]);
        tweak(&mut options);
        let sidecar = RunningSidecar::start(&options)
            .await
            .expect("sidecar starts");
        Setup {
            prefill,
            decode,
            sidecar,
        }
    }

    fn header(&self) -> String {
        self.prefill.addr.to_string()
    }

    async fn stop(self) {
        self.sidecar.shutdown(Duration::from_secs(5)).await;
        self.prefill.shutdown().await;
        self.decode.shutdown().await;
    }
}

fn long_prompt(seed: usize) -> String {
    (0..300)
        .map(|i| format!("word{} ", (i * 7 + seed) % 97))
        .collect()
}

fn chat(prompt: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": "sim-model",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 5,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefiller_prefills_the_decoder_decodes_and_usage_matches_a_monolithic_server() {
    let setup = Setup::start(|_| {}).await;
    let alone = sim("alone").await;
    for (i, (path, stream)) in [
        ("/v1/chat/completions", false),
        ("/v1/chat/completions", true),
        ("/v1/completions", false),
        ("/v1/completions", true),
    ]
    .into_iter()
    .enumerate()
    {
        let prompt = long_prompt(i);
        let body = if path == "/v1/completions" {
            let mut body = json!({"model": "sim-model", "prompt": prompt, "max_tokens": 5});
            if stream {
                body["stream"] = json!(true);
                body["stream_options"] = json!({"include_usage": true});
            }
            body
        } else {
            chat(&prompt, stream)
        };
        let prefill_before = metrics(setup.prefill.addr).await;
        let decode_before = metrics(setup.decode.addr).await;
        let answer = send(
            setup.sidecar.address,
            "POST",
            path,
            &[(HEADER, &setup.header())],
            Some(&body),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.pod(), "decode-0", "the decoder answers");
        let reference = send(alone.addr, "POST", path, &[], Some(&body)).await;
        let (usage, expected) = (answer.usage(), reference.usage());
        assert_eq!(
            usage["prompt_tokens"], expected["prompt_tokens"],
            "{path} {stream}"
        );
        assert_eq!(
            usage["completion_tokens"], 5,
            "the client's max_tokens, not 1"
        );
        assert_eq!(usage["total_tokens"], expected["total_tokens"]);
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert!(
            cached > 0,
            "the transferred tokens count as cached: {usage}"
        );
        if stream {
            assert!(
                answer.body.trim_end().ends_with("data: [DONE]"),
                "{}",
                answer.body
            );
            assert!(
                answer.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/event-stream")
            );
        }
        assert!(
            !answer.body.contains("\"do_remote_prefill\":true"),
            "the prefiller's parameters are not the client's business"
        );

        let prompt_tokens = expected["prompt_tokens"].as_f64().unwrap();
        let prefill_after = metrics(setup.prefill.addr).await;
        let decode_after = metrics(setup.decode.addr).await;
        let delta = |before: &str, after: &str, series: &str| {
            sample(after, series) - sample(before, series)
        };
        let prompt_series = "vllm:prompt_tokens_total{engine=\"0\",model_name=\"sim-model\"}";
        let generation_series =
            "vllm:generation_tokens_total{engine=\"0\",model_name=\"sim-model\"}";
        assert_eq!(
            delta(&prefill_before, &prefill_after, prompt_series),
            prompt_tokens
        );
        assert_eq!(
            delta(&prefill_before, &prefill_after, generation_series),
            1.0,
            "the prefiller generates one token"
        );
        assert_eq!(delta(&decode_before, &decode_after, generation_series), 5.0);
        assert!(
            delta(
                &decode_before,
                &decode_after,
                "vllm:external_prefix_cache_hits_total{engine=\"0\",model_name=\"sim-model\"}"
            ) > 0.0,
            "the decoder pulled remote KV:\n{decode_after}"
        );
    }
    let own = metrics(setup.sidecar.metrics_address).await;
    assert_eq!(
        count(
            &own,
            "fusioninfer_pd_prefill_requests_total{outcome=\"ok\"}"
        ),
        4.0,
        "{own}"
    );
    assert_eq!(
        sample(&own, "fusioninfer_pd_prefill_duration_seconds_count"),
        4.0
    );
    assert_eq!(sample(&own, "fusioninfer_pd_allowed_prefillers"), 1.0);
    alone.shutdown().await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_header_everything_passes_through_to_the_engine() {
    let setup = Setup::start(|_| {}).await;
    for path in ["/v1/models", "/health", "/metrics"] {
        let answer = send(setup.sidecar.address, "GET", path, &[], None).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.pod(), "decode-0", "{path}");
    }
    let models = send(setup.sidecar.address, "GET", "/v1/models", &[], None).await;
    assert_eq!(models.json()["data"][0]["id"], "sim-model");
    let answer = send(
        setup.sidecar.address,
        "POST",
        "/v1/chat/completions",
        &[],
        Some(&chat(&long_prompt(9), false)),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        sample(
            &metrics(setup.prefill.addr).await,
            "vllm:prompt_tokens_total{engine=\"0\",model_name=\"sim-model\"}"
        ),
        0.0,
        "no prefill without the header"
    );
    let own = metrics(setup.sidecar.metrics_address).await;
    assert_eq!(
        count(&own, "fusioninfer_pd_requests_total{mode=\"passthrough\"}"),
        5.0
    );
    assert_eq!(
        sample(&own, "fusioninfer_pd_prefill_duration_seconds_count"),
        0.0
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_outside_the_allowlist_and_malformed_headers_are_refused() {
    let setup = Setup::start(|_| {}).await;
    // The decoder itself is a real server, just not an allowed prefiller.
    let outsider = setup.decode.addr.to_string();
    let answer = send(
        setup.sidecar.address,
        "POST",
        "/v1/chat/completions",
        &[(HEADER, &outsider)],
        Some(&chat("hello", false)),
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let error = &answer.json()["error"];
    assert_eq!(error["param"], HEADER);
    assert_eq!(error["type"], "PermissionDeniedError");
    assert_eq!(error["code"], 403);
    assert!(error["message"].as_str().unwrap().contains(&outsider));

    for bad in ["prefill-0:8000", "10.0.0.1", "not an address"] {
        let answer = send(
            setup.sidecar.address,
            "POST",
            "/v1/completions",
            &[(HEADER, bad)],
            Some(&json!({"model": "sim-model", "prompt": "hi"})),
        )
        .await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert_eq!(answer.json()["error"]["param"], HEADER);
    }
    for server in [&setup.prefill, &setup.decode] {
        assert_eq!(
            sample(
                &metrics(server.addr).await,
                "vllm:prompt_tokens_total{engine=\"0\",model_name=\"sim-model\"}"
            ),
            0.0,
            "nothing was forwarded"
        );
    }
    let own = metrics(setup.sidecar.metrics_address).await;
    assert_eq!(
        count(
            &own,
            "fusioninfer_pd_refusals_total{reason=\"not_allowed\"}"
        ),
        1.0
    );
    assert_eq!(
        count(&own, "fusioninfer_pd_refusals_total{reason=\"malformed\"}"),
        3.0
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_unreachable_prefiller_falls_back_to_local_decode() {
    // A port nothing listens on, allowed as a prefiller.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let setup = Setup::start(|o| {
        o.prefillers.as_mut().unwrap().push(closed);
        o.prefill_timeout = Duration::from_millis(300);
    })
    .await;
    let faults = |value: Value| {
        let to = setup.prefill.addr;
        async move {
            let answer = send(to, "POST", "/admin/faults", &[], Some(&value)).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    };
    let cases = [
        (
            json!({"fail_rate": 1.0, "fail_status": 503}),
            setup.header(),
            "server_error",
        ),
        (
            json!({"fail_rate": 0.0, "extra_delay_ms": 2000}),
            setup.header(),
            "timeout",
        ),
        (
            json!({"extra_delay_ms": 0}),
            closed.to_string(),
            "unreachable",
        ),
    ];
    for (i, (fault, target, reason)) in cases.into_iter().enumerate() {
        faults(fault).await;
        let decode_before = metrics(setup.decode.addr).await;
        let answer = send(
            setup.sidecar.address,
            "POST",
            "/v1/chat/completions",
            &[(HEADER, &target)],
            Some(&chat(&long_prompt(20 + i), i % 2 == 1)),
        )
        .await;
        assert_eq!(answer.status, 200, "{reason}: {}", answer.body);
        assert_eq!(answer.pod(), "decode-0");
        assert_eq!(answer.usage()["completion_tokens"], 5, "{reason}");
        let decode_after = metrics(setup.decode.addr).await;
        let external =
            "vllm:external_prefix_cache_queries_total{engine=\"0\",model_name=\"sim-model\"}";
        assert_eq!(
            sample(&decode_after, external),
            sample(&decode_before, external),
            "{reason}: the decoder prefilled itself"
        );
        let own = metrics(setup.sidecar.metrics_address).await;
        assert_eq!(
            count(
                &own,
                &format!("fusioninfer_pd_fallbacks_total{{reason=\"{reason}\"}}")
            ),
            1.0,
            "{own}"
        );
    }
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefiller_4xx_is_the_clients_answer() {
    let setup = Setup::start(|_| {}).await;
    let mut body = chat(&long_prompt(3), true);
    body["model"] = json!("no-such-model");
    let direct = send(
        setup.prefill.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        Some(&{
            let mut b = body.clone();
            b.as_object_mut().unwrap().remove("stream_options");
            b["stream"] = json!(false);
            b
        }),
    )
    .await;
    let answer = send(
        setup.sidecar.address,
        "POST",
        "/v1/chat/completions",
        &[(HEADER, &setup.header())],
        Some(&body),
    )
    .await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert_eq!(
        answer.body, direct.body,
        "the prefiller's error, byte for byte"
    );
    assert_eq!(answer.pod(), "prefill-0");
    let own = metrics(setup.sidecar.metrics_address).await;
    assert_eq!(
        count(
            &own,
            "fusioninfer_pd_prefill_requests_total{outcome=\"client_error\"}"
        ),
        1.0
    );
    assert_eq!(
        count(
            &own,
            "fusioninfer_pd_fallbacks_total{reason=\"client_error\"}"
        ),
        0.0
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_with_413() {
    let setup = Setup::start(|o| o.max_body_bytes = 1024).await;
    let answer = send(
        setup.sidecar.address,
        "POST",
        "/v1/chat/completions",
        &[(HEADER, &setup.header())],
        Some(&chat(&long_prompt(1), false)),
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.json()["error"]["type"], "RequestTooLargeError");
    let own = metrics(setup.sidecar.metrics_address).await;
    assert_eq!(
        count(
            &own,
            "fusioninfer_pd_refusals_total{reason=\"body_too_large\"}"
        ),
        1.0
    );
    // Without the header the body is streamed to the engine, whatever its size.
    let answer = send(
        setup.sidecar.address,
        "POST",
        "/v1/chat/completions",
        &[],
        Some(&chat(&long_prompt(1), false)),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    setup.stop().await;
}
