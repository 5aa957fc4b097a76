//! Fuzz-style robustness: 10,000+ ext_proc streams of random or truncated bodies, random
//! headers, random body modes and random message orders, sent straight to the picker's gRPC
//! service (64 at a time, seeded, bounded in count and time). Every stream must be answered —
//! a well-formed request with a routing answer or an immediate response, anything else with
//! answers or a clean gRPC status — and nothing may panic. The picker must still route a
//! normal request afterwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::grpc::*;
use common::*;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    ProcessingRequest, ProtocolConfiguration, processing_request, processing_response,
};
use futures::StreamExt;
use serde_json::{Value, json};

const STREAMS: usize = 10_000;
const SEED: u64 = 0x5eed_f022;

struct Case {
    messages: Vec<ProcessingRequest>,
    /// Headers then a complete body (or headers with end_of_stream): must get a decision.
    well_formed: bool,
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let n = rng.usize(..=max);
    (0..n).map(|_| rng.u8(..)).collect()
}

fn random_json_value(rng: &mut fastrand::Rng, depth: usize) -> Value {
    match rng.u8(..if depth > 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e300),
        4 => json!(String::from_utf8_lossy(&random_bytes(rng, 40)).into_owned()),
        5 => Value::Array(
            (0..rng.usize(..4))
                .map(|_| random_json_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.usize(..4))
                .map(|i| (format!("k{i}"), random_json_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// An OpenAI-ish body: valid, with fields of random types, truncated, or deeply nested.
fn random_body(rng: &mut fastrand::Rng, chat: bool) -> Vec<u8> {
    let mut body = if chat {
        json!({"model": "sim-model", "messages": [{"role": "user", "content": words(rng.usize(1..400), rng.u64(..))}]})
    } else {
        json!({"model": "sim-model", "prompt": words(rng.usize(1..400), rng.u64(..))})
    };
    let field = [
        "model",
        "messages",
        "prompt",
        "stream",
        "cache_salt",
        "stream_options",
    ][rng.usize(..6)];
    match rng.u8(..10) {
        0..=2 => {}
        3 | 4 => body[field] = random_json_value(rng, 0),
        5 => {
            body.as_object_mut().unwrap().remove(field);
        }
        6 => {
            let mut nested = String::new();
            let depth = rng.usize(1..300);
            nested.push_str(&"[".repeat(depth));
            nested.push_str(&"]".repeat(rng.usize(..=depth)));
            return nested.into_bytes();
        }
        7 => return random_bytes(rng, 3000),
        _ => {}
    }
    let mut bytes = serde_json::to_vec(&body).unwrap();
    if rng.u8(..3) == 0 {
        bytes.truncate(rng.usize(..=bytes.len()));
    }
    bytes
}

fn random_path(rng: &mut fastrand::Rng) -> Vec<u8> {
    match rng.u8(..8) {
        0..=2 => b"/v1/chat/completions".to_vec(),
        3 | 4 => b"/v1/completions".to_vec(),
        5 => b"/v1/models".to_vec(),
        6 => b"/v1/completions?x=1#y".to_vec(),
        _ => random_bytes(rng, 30),
    }
}

fn random_mode(rng: &mut fastrand::Rng) -> i32 {
    match rng.u8(..10) {
        0..=5 => BodySendMode::FullDuplexStreamed as i32,
        6 | 7 => BodySendMode::Buffered as i32,
        8 => rng.i32(0..6),
        _ => rng.i32(..),
    }
}

fn headers_message(rng: &mut fastrand::Rng, path: &[u8], end_of_stream: bool) -> ProcessingRequest {
    let mut message = request_headers("/", &[], end_of_stream, BodySendMode::FullDuplexStreamed);
    let Some(processing_request::Request::RequestHeaders(headers)) = &mut message.request else {
        unreachable!()
    };
    let map = headers.headers.as_mut().unwrap();
    map.headers.retain(|h| h.key != ":path");
    map.headers.push(HeaderValue {
        key: ":path".into(),
        value: String::new(),
        raw_value: path.to_vec(),
    });
    for _ in 0..rng.usize(..4) {
        let key = [
            "content-length",
            "x-request-id",
            "x-gateway-model-name-rewrite",
            "x-gateway-inference-objective",
            "x-gateway-destination-endpoint",
            "x-prefiller-host-port",
            "random",
        ][rng.usize(..7)];
        let raw_value = match rng.u8(..4) {
            0 => b"99999999999999999999999".to_vec(),
            1 => b"-1".to_vec(),
            2 => rng.u32(..100_000).to_string().into_bytes(),
            _ => random_bytes(rng, 50),
        };
        // Envoy sends either form; exercise both.
        if rng.bool() {
            map.headers.push(HeaderValue {
                key: key.into(),
                value: String::new(),
                raw_value,
            });
        } else {
            map.headers.push(HeaderValue {
                key: key.into(),
                value: String::from_utf8_lossy(&raw_value).into_owned(),
                raw_value: Vec::new(),
            });
        }
    }
    message.protocol_config = match rng.u8(..8) {
        0 => None,
        _ => Some(ProtocolConfiguration {
            request_body_mode: random_mode(rng),
            response_body_mode: random_mode(rng),
            send_body_without_waiting_for_header_response: rng.bool(),
        }),
    };
    if rng.u8(..10) == 0 {
        message.metadata_context = Some(subset_metadata(&["127.0.0.1:1", "garbage"]));
    }
    message
}

fn random_message(rng: &mut fastrand::Rng) -> ProcessingRequest {
    match rng.u8(..8) {
        0 => {
            let path = random_path(rng);
            let end = rng.bool();
            headers_message(rng, &path, end)
        }
        1 => request_body(&random_bytes(rng, 500), rng.bool()),
        2 => request_trailers(),
        3 => response_headers(
            &rng.u16(..1000).to_string(),
            "text/event-stream",
            rng.bool(),
        ),
        4 => response_body(&random_bytes(rng, 500), rng.bool()),
        5 => response_body(b"data: {\"usage\":{\"prompt_tokens\":1}}\n\n", rng.bool()),
        6 => ProcessingRequest::default(),
        _ => ProcessingRequest {
            request: Some(processing_request::Request::ResponseTrailers(
                Default::default(),
            )),
            ..Default::default()
        },
    }
}

fn random_case(rng: &mut fastrand::Rng) -> Case {
    if rng.u8(..5) == 0 {
        // Arbitrary message soup.
        let messages = (0..rng.usize(1..8)).map(|_| random_message(rng)).collect();
        return Case {
            messages,
            well_formed: false,
        };
    }
    let path = random_path(rng);
    let chat = path.starts_with(b"/v1/chat");
    let body = random_body(rng, chat);
    let no_body = rng.u8(..10) == 0;
    let mut messages = vec![headers_message(rng, &path, no_body)];
    let mut well_formed = true;
    if !no_body {
        let pieces = rng.usize(1..5);
        let size = body.len().div_ceil(pieces).max(1);
        let chunks: Vec<&[u8]> = if body.is_empty() {
            vec![&[][..]]
        } else {
            body.chunks(size).collect()
        };
        let last = chunks.len() - 1;
        let ending = rng.u8(..10);
        for (i, chunk) in chunks.into_iter().enumerate() {
            // Mostly end_of_stream on the last chunk; sometimes trailers; sometimes cut off.
            messages.push(request_body(chunk, i == last && ending < 8));
        }
        match ending {
            8 => messages.push(request_trailers()),
            9 => well_formed = false,
            _ => {}
        }
    }
    if well_formed && rng.bool() {
        // The response phase of a routed request.
        let sse = rng.bool();
        messages.push(response_headers(
            ["200", "500", "abc"][rng.usize(..3)],
            if sse {
                "text/event-stream"
            } else {
                "application/json"
            },
            false,
        ));
        let answer = if sse {
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n".to_vec()
        } else {
            random_bytes(rng, 300)
        };
        let split = rng.usize(..=answer.len());
        messages.push(response_body(&answer[..split], false));
        messages.push(response_body(&answer[split..], true));
    }
    Case {
        messages,
        well_formed,
    }
}

/// A well-formed request's first answer decides it: headers (routing, or buffered mode's
/// pass-through), or an immediate response.
fn decided(first: &envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse) -> bool {
    matches!(
        first.response,
        Some(processing_response::Response::RequestHeaders(_))
            | Some(processing_response::Response::ImmediateResponse(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_streams_are_all_answered_without_a_panic() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&panics);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    let sims = start_sims(3, |_| {}).await;
    let addresses: Vec<_> = sims.iter().map(|s| s.addr).collect();
    let epp = TestEpp::start(&addresses, &["--max-request-body-bytes", "2048"]).await;
    epp.wait_ready(3).await;
    let client = connect(epp.epp.grpc_address).await;

    let mut rng = fastrand::Rng::with_seed(SEED);
    let cases: Vec<Case> = (0..STREAMS).map(|_| random_case(&mut rng)).collect();
    let well_formed = cases.iter().filter(|c| c.well_formed).count();
    let started = Instant::now();
    let results: Vec<(bool, (Vec<_>, Option<tonic::Status>))> = futures::stream::iter(cases)
        .map(|case| {
            let client = client.clone();
            async move { (case.well_formed, exchange_all(&client, case.messages).await) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut decided_count = 0;
    let mut immediate = 0;
    let mut grpc_errors = 0;
    for (index, (well_formed, (responses, status))) in results.iter().enumerate() {
        if *well_formed {
            let first = responses
                .first()
                .unwrap_or_else(|| panic!("well-formed stream {index} got no answer: {status:?}"));
            assert!(decided(first), "stream {index}: first answer {first:?}");
            decided_count += 1;
            if matches!(
                first.response,
                Some(processing_response::Response::ImmediateResponse(_))
            ) {
                immediate += 1;
            }
        }
        if let Some(status) = status {
            // Messages out of protocol order end the stream with a status naming it.
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
                ),
                "stream {index}: unexpected {status:?}"
            );
            grpc_errors += 1;
        }
    }
    println!(
        "{STREAMS} streams in {elapsed:?}: {well_formed} well-formed ({decided_count} decided, \
         {immediate} immediate responses), {grpc_errors} protocol errors"
    );
    assert_eq!(results.len(), STREAMS);
    assert_eq!(decided_count, well_formed);
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a panic happened");

    // Still serving.
    let responses = exchange(
        &client,
        vec![
            request_headers(
                "/v1/chat/completions",
                &[],
                false,
                BodySendMode::FullDuplexStreamed,
            ),
            request_body(chat_body("s", "after the fuzz", false).as_bytes(), true),
        ],
    )
    .await
    .unwrap();
    let destination = set_headers(&responses[0])["x-gateway-destination-endpoint"].clone();
    assert!(addresses.iter().any(|a| a.to_string() == destination));
    assert!(elapsed < Duration::from_secs(300));
}
