//! The ext_proc protocol spoken directly over gRPC (no Envoy): what the picker answers to each
//! message, message by message, with simulators as the endpoints it scrapes.

mod common;

use std::time::Duration;

use common::grpc::*;
use common::*;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const FULL_DUPLEX: BodySendMode = BodySendMode::FullDuplexStreamed;

async fn fleet(n: usize, extra: &[&str]) -> (Vec<fusioninfer_sim::SimServer>, TestEpp, Client) {
    let sims = start_sims(n, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, extra).await;
    epp.wait_ready(n).await;
    let client = connect(epp.epp.grpc_address).await;
    (sims, epp, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_exchange_routes_rechunks_and_passes_the_answer() {
    let (sims, epp, client) = fleet(3, &[]).await;
    let body = completion_body(&words(150_000, 9), true).into_bytes();
    let length = body.len().to_string();
    let mut messages = vec![request_headers(
        "/v1/completions",
        &[
            ("content-length", &length),
            ("x-gateway-inference-objective", "interactive"),
            ("x-gateway-inference-fairness-id", "tenant-a"),
            ("x-gateway-destination-endpoint", "10.6.6.6:666"),
            ("x-prefiller-host-port", "10.6.6.6:667"),
        ],
        false,
        FULL_DUPLEX,
    )];
    // Envoy's chunks are smaller than the picker's.
    for (i, chunk) in body.chunks(16_384).enumerate() {
        let last = (i + 1) * 16_384 >= body.len();
        messages.push(request_body(chunk, last));
    }
    let sse = concat!(
        "data: {\"choices\":[{\"text\":\"a\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40000,\"completion_tokens\":3}}\n\n",
        "data: [DONE]\n\n"
    );
    messages.push(response_headers("200", "text/event-stream", false));
    messages.push(response_body(&sse.as_bytes()[..30], false));
    messages.push(response_body(&sse.as_bytes()[30..], true));

    let responses = exchange(&client, messages).await.expect("answered");
    // Headers answer, then the body in chunks, then the response phase.
    let headers = &responses[0];
    assert!(is_request_headers(headers), "{headers:?}");
    let set = set_headers(headers);
    let destination = set["x-gateway-destination-endpoint"].clone();
    assert!(sims.iter().any(|s| s.addr.to_string() == destination));
    assert_eq!(
        destination_metadata(headers).as_deref(),
        Some(destination.as_str())
    );
    assert_eq!(set["content-length"], length);
    assert!(
        set["x-request-id"].len() == 36,
        "a request id is generated when absent: {set:?}"
    );
    assert!(!set.contains_key("x-prefiller-host-port"));
    let removed = removed_headers(headers);
    for header in [
        "x-gateway-inference-objective",
        "x-gateway-inference-fairness-id",
        "x-gateway-model-name-rewrite",
        "x-prefiller-host-port",
    ] {
        assert!(
            removed.contains(&header.to_owned()),
            "{header} not removed: {removed:?}"
        );
    }
    assert!(common(headers).unwrap().clear_route_cache);

    let mut echoed = Vec::new();
    let mut chunks = 0;
    let mut index = 1;
    while index < responses.len() && is_request_body(&responses[index]) {
        let (chunk, end) = streamed_chunk(&responses[index]).expect("streamed body");
        assert!(chunk.len() <= 62_000, "chunk of {} bytes", chunk.len());
        echoed.extend_from_slice(chunk);
        chunks += 1;
        assert_eq!(end, echoed.len() == body.len());
        index += 1;
    }
    assert_eq!(echoed, body, "the body comes back intact");
    assert_eq!(chunks, body.len().div_ceil(62_000));

    let response_phase = &responses[index..];
    assert_eq!(response_phase.len(), 3, "{response_phase:?}");
    assert_eq!(
        set_headers(&response_phase[0])["x-fusioninfer-endpoint"],
        destination
    );
    let mut answer = Vec::new();
    for response in &response_phase[1..] {
        answer.extend_from_slice(streamed_chunk(response).expect("echoed").0);
    }
    assert_eq!(answer, sse.as_bytes(), "the answer passes unchanged");
    assert_eq!(
        epp.metric("fusioninfer_epp_usage_tokens_total{kind=\"prompt\"}"),
        40000.0
    );
    assert_eq!(
        epp.metric("fusioninfer_epp_responses_total{code=\"2xx\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_answers_headers_at_once_and_routes_on_the_body() {
    let (sims, _epp, client) = fleet(2, &[]).await;
    let body = chat_body("s", "buffered", false).into_bytes();
    let responses = exchange(
        &client,
        vec![
            request_headers(
                "/v1/chat/completions",
                &[("x-request-id", "abc")],
                false,
                BodySendMode::Buffered,
            ),
            request_body(&body, true),
        ],
    )
    .await
    .unwrap();
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert!(is_request_headers(&responses[0]));
    assert!(
        set_headers(&responses[0]).is_empty(),
        "headers pass unchanged first"
    );
    assert!(is_request_body(&responses[1]));
    let set = set_headers(&responses[1]);
    assert!(
        sims.iter()
            .any(|s| s.addr.to_string() == set["x-gateway-destination-endpoint"])
    );
    assert!(
        !set.contains_key("x-request-id"),
        "a client's request id is kept"
    );
    assert!(common(&responses[1]).unwrap().clear_route_cache);
    assert!(
        common(&responses[1]).unwrap().body_mutation.is_none(),
        "body untouched"
    );
    assert!(destination_metadata(&responses[1]).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_end_a_full_duplex_body() {
    let (_sims, _epp, client) = fleet(1, &[]).await;
    let body = completion_body("with trailers", false).into_bytes();
    let responses = exchange(
        &client,
        vec![
            request_headers("/v1/completions", &[], false, FULL_DUPLEX),
            request_body(&body, false),
            request_trailers(),
        ],
    )
    .await
    .unwrap();
    assert!(is_request_headers(&responses[0]));
    let (chunk, end) = streamed_chunk(&responses[1]).unwrap();
    assert_eq!(chunk, &body[..]);
    assert!(!end, "the trailers end the stream, not the body");
    assert!(matches!(
        responses[2].response,
        Some(envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response::RequestTrailers(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_rewrite_header_rewrites_the_body_and_its_length() {
    let (_sims, _epp, client) = fleet(1, &[]).await;
    let body = r#"{"prompt": "hi", "model": "alias", "max_tokens": 2}"#;
    let responses = exchange(
        &client,
        vec![
            request_headers(
                "/v1/completions",
                &[("x-gateway-model-name-rewrite", "sim-model")],
                false,
                FULL_DUPLEX,
            ),
            request_body(body.as_bytes(), true),
        ],
    )
    .await
    .unwrap();
    let (chunk, end) = streamed_chunk(&responses[1]).unwrap();
    assert!(end);
    let rewritten = r#"{"prompt": "hi", "model": "sim-model", "max_tokens": 2}"#;
    assert_eq!(std::str::from_utf8(chunk).unwrap(), rewritten);
    assert_eq!(
        set_headers(&responses[0])["content-length"],
        rewritten.len().to_string()
    );
    assert!(removed_headers(&responses[0]).contains(&"x-gateway-model-name-rewrite".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_strategy_adds_the_prefiller_header() {
    let sims = start_sims(2, |_| {}).await;
    let (prefill, decode) = (sims[0].addr, sims[1].addr);
    let file = endpoints_yaml(&[
        (
            prefill,
            &[("fusioninfer.io/component-type", "prefiller")][..],
        ),
        (decode, &[("fusioninfer.io/component-type", "decoder")][..]),
    ]);
    let epp = TestEpp::start_with_file(&file, &["--strategy", "pd-disaggregation"]).await;
    epp.wait_ready(2).await;
    let client = connect(epp.epp.grpc_address).await;
    // Long enough to pass the 128-token threshold: decode primary, prefill in the header.
    let long = completion_body(&words(4_000, 5), false).into_bytes();
    let responses = exchange(
        &client,
        vec![
            request_headers(
                "/v1/completions",
                &[("x-prefiller-host-port", "10.6.6.6:1")],
                false,
                FULL_DUPLEX,
            ),
            request_body(&long, true),
        ],
    )
    .await
    .unwrap();
    let set = set_headers(&responses[0]);
    assert_eq!(set["x-gateway-destination-endpoint"], decode.to_string());
    assert_eq!(set["x-prefiller-host-port"], prefill.to_string(), "{set:?}");
    // A short prompt is decoded alone, and a client's prefill header never passes.
    let short = completion_body("hi", false).into_bytes();
    let responses = exchange(
        &client,
        vec![
            request_headers(
                "/v1/completions",
                &[("x-prefiller-host-port", "10.6.6.6:1")],
                false,
                FULL_DUPLEX,
            ),
            request_body(&short, true),
        ],
    )
    .await
    .unwrap();
    let set = set_headers(&responses[0]);
    assert_eq!(set["x-gateway-destination-endpoint"], decode.to_string());
    assert!(!set.contains_key("x-prefiller-host-port"));
    assert!(removed_headers(&responses[0]).contains(&"x-prefiller-host-port".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_hints_restrict_the_candidates() {
    let (sims, _epp, client) = fleet(3, &[]).await;
    let only = sims[2].addr.to_string();
    for path in ["/v1/chat/completions", "/v1/models"] {
        for _ in 0..5 {
            let mut headers = request_headers(path, &[], path.contains("models"), FULL_DUPLEX);
            headers.metadata_context = Some(subset_metadata(&[&only]));
            let mut messages = vec![headers];
            if !path.contains("models") {
                messages.push(request_body(chat_body("s", "u", false).as_bytes(), true));
            }
            let responses = exchange(&client, messages).await.unwrap();
            assert_eq!(
                set_headers(&responses[0])["x-gateway-destination-endpoint"],
                only
            );
        }
        let mut headers = request_headers(path, &[], true, FULL_DUPLEX);
        headers.metadata_context = Some(subset_metadata(&[]));
        let responses = exchange(&client, vec![headers]).await.unwrap();
        let status = if path.contains("models") { 503 } else { 400 };
        assert_eq!(immediate(&responses[0]).unwrap().0, status, "{path}");
    }
    let mut headers = request_headers("/v1/chat/completions", &[], false, FULL_DUPLEX);
    headers.metadata_context = Some(subset_metadata(&[]));
    let responses = exchange(
        &client,
        vec![
            headers,
            request_body(chat_body("s", "u", false).as_bytes(), true),
        ],
    )
    .await
    .unwrap();
    let (status, body) = immediate(&responses[0]).unwrap();
    assert_eq!(status, 503, "an empty subset means no candidates: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_go_to_a_random_ready_endpoint_with_their_body_streamed() {
    let (sims, _epp, client) = fleet(3, &[]).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let responses = exchange(
            &client,
            vec![request_headers("/v1/models", &[], true, FULL_DUPLEX)],
        )
        .await
        .unwrap();
        assert_eq!(responses.len(), 1);
        seen.insert(set_headers(&responses[0])["x-gateway-destination-endpoint"].clone());
    }
    assert_eq!(
        seen.len(),
        sims.len(),
        "random over every ready endpoint: {seen:?}"
    );
    // A body on another path is answered chunk by chunk, never buffered.
    let responses = exchange(
        &client,
        vec![
            request_headers("/v1/embeddings", &[], false, FULL_DUPLEX),
            request_body(b"{\"input\":", false),
            request_body(b"\"x\"}", true),
        ],
    )
    .await
    .unwrap();
    assert_eq!(responses.len(), 3);
    assert!(is_request_headers(&responses[0]));
    assert_eq!(
        streamed_chunk(&responses[1]).unwrap(),
        (&b"{\"input\":"[..], false)
    );
    assert_eq!(
        streamed_chunk(&responses[2]).unwrap(),
        (&b"\"x\"}"[..], true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_immediate_openai_errors() {
    let (_sims, epp, client) = fleet(1, &["--max-request-body-bytes", "1000"]).await;
    // Declared too large: rejected on the headers.
    let responses = exchange(
        &client,
        vec![request_headers(
            "/v1/completions",
            &[("content-length", "5000")],
            false,
            FULL_DUPLEX,
        )],
    )
    .await
    .unwrap();
    let (status, body) = immediate(&responses[0]).unwrap();
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "RequestTooLargeError");
    // Grown too large while streaming (no content-length).
    let responses = exchange(
        &client,
        vec![
            request_headers("/v1/completions", &[], false, FULL_DUPLEX),
            request_body(&[b' '; 600], false),
            request_body(&[b' '; 600], true),
        ],
    )
    .await
    .unwrap();
    assert_eq!(immediate(&responses[0]).unwrap().0, 413);
    // No body at all on an inference path.
    let responses = exchange(
        &client,
        vec![request_headers(
            "/v1/chat/completions",
            &[],
            true,
            FULL_DUPLEX,
        )],
    )
    .await
    .unwrap();
    let (status, body) = immediate(&responses[0]).unwrap();
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("empty"));
    // A body mode the picker cannot route with.
    let responses = exchange(
        &client,
        vec![request_headers(
            "/v1/completions",
            &[],
            false,
            BodySendMode::Streamed,
        )],
    )
    .await
    .unwrap();
    let (status, body) = immediate(&responses[0]).unwrap();
    assert_eq!(status, 500);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("STREAMED")
    );
    assert_eq!(
        epp.metric("fusioninfer_epp_rejections_total{reason=\"body_too_large\"}"),
        2.0
    );
    // Out-of-order messages end the stream with a gRPC error, not a panic.
    let error = exchange(&client, vec![request_body(b"{}", true)])
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    let error = exchange(&client, vec![Default::default()])
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_endpoint_source() {
    let dir = scratch_dir("health");
    let file = dir.join("endpoints.yaml");
    let epp = TestEpp::start_at(dir, file.clone(), &[]).await;
    let channel = |address: std::net::SocketAddr| {
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy()
    };
    let health = HealthClient::new(channel(epp.epp.health_address));
    let mut on_grpc_port = HealthClient::new(channel(epp.epp.grpc_address));
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status("liveness").await, ServingStatus::Serving);
    assert_eq!(
        status("readiness").await,
        ServingStatus::NotServing,
        "no endpoints file yet"
    );
    assert_eq!(
        status("envoy.service.ext_proc.v3.ExternalProcessor").await,
        ServingStatus::NotServing
    );
    std::fs::write(&file, "endpoints: []\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status("readiness").await != ServingStatus::Serving {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status("envoy.service.ext_proc.v3.ExternalProcessor").await,
        ServingStatus::Serving
    );
    let on_grpc = on_grpc_port
        .check(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        on_grpc,
        ServingStatus::Serving,
        "health is on the ext_proc port too"
    );
    // A broken file keeps the last good endpoint list.
    std::fs::write(&file, "- address: nowhere\n").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status("readiness").await, ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_serves_prometheus_text() {
    let (_sims, epp, client) = fleet(1, &[]).await;
    exchange(
        &client,
        vec![
            request_headers("/v1/completions", &[], false, FULL_DUPLEX),
            request_body(completion_body("x", false).as_bytes(), true),
        ],
    )
    .await
    .unwrap();
    fusioninfer_epp::scrape::ensure_crypto_provider();
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/metrics", epp.epp.metrics_address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "fusioninfer_epp_decision_duration_seconds_bucket",
        "fusioninfer_epp_decisions_total",
        "fusioninfer_epp_request_body_bytes_count 1",
        "fusioninfer_epp_scrapes_total",
        "fusioninfer_epp_endpoints{state=\"ready\"} 1",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
}
