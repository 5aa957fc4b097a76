//! A raw ext_proc client: builds the messages Envoy sends and collects the picker's answers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse,
    ProtocolConfiguration, body_mutation, processing_request, processing_response,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value};
use tokio::sync::mpsc;
use tonic::transport::Channel;

pub type Client = ExternalProcessorClient<Channel>;

pub async fn connect(address: SocketAddr) -> Client {
    ExternalProcessorClient::connect(format!("http://{address}"))
        .await
        .expect("connects")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub fn header_map(pairs: &[(&str, &[u8])]) -> HeaderMap {
    HeaderMap {
        headers: pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).to_owned(),
                value: String::new(),
                raw_value: v.to_vec(),
            })
            .collect(),
    }
}

/// Request headers for `path`, with the protocol configuration Envoy sends first.
pub fn request_headers(
    path: &str,
    extra: &[(&str, &str)],
    end_of_stream: bool,
    mode: BodySendMode,
) -> ProcessingRequest {
    let mut pairs: Vec<(&str, &[u8])> = vec![
        (":method", b"POST"),
        (":path", path.as_bytes()),
        (":authority", b"gateway"),
        ("content-type", b"application/json"),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes())));
    ProcessingRequest {
        request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
            headers: Some(header_map(&pairs)),
            end_of_stream,
            ..Default::default()
        })),
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: mode as i32,
            response_body_mode: BodySendMode::FullDuplexStreamed as i32,
            send_body_without_waiting_for_header_response: false,
        }),
        ..Default::default()
    }
}

pub fn request_body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestBody(HttpBody {
            body: bytes.to_vec(),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn request_trailers() -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestTrailers(HttpTrailers {
            trailers: Some(header_map(&[("x-trailer", b"1")])),
        })),
        ..Default::default()
    }
}

pub fn response_headers(
    status: &str,
    content_type: &str,
    end_of_stream: bool,
) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(&[
                (":status", status.as_bytes()),
                ("content-type", content_type.as_bytes()),
            ])),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn response_body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseBody(HttpBody {
            body: bytes.to_vec(),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Metadata carrying the gateway's subset hint.
pub fn subset_metadata(addresses: &[&str]) -> Metadata {
    let list = ListValue {
        values: addresses
            .iter()
            .map(|a| Value {
                kind: Some(value::Kind::StringValue((*a).to_owned())),
            })
            .collect(),
    };
    let hint = Struct {
        fields: [(
            "x-gateway-destination-endpoint-subset".to_owned(),
            Value {
                kind: Some(value::Kind::ListValue(list)),
            },
        )]
        .into(),
    };
    Metadata {
        filter_metadata: [("envoy.lb.subset_hint".to_owned(), hint)].into(),
        ..Default::default()
    }
}

/// Sends `messages`, half-closes, and collects every answer until the picker ends the stream.
pub async fn exchange(
    client: &Client,
    messages: Vec<ProcessingRequest>,
) -> Result<Vec<ProcessingResponse>, tonic::Status> {
    match exchange_all(client, messages).await {
        (responses, None) => Ok(responses),
        (_, Some(status)) => Err(status),
    }
}

/// Like [`exchange`], but keeps the answers received before a gRPC error.
pub async fn exchange_all(
    client: &Client,
    messages: Vec<ProcessingRequest>,
) -> (Vec<ProcessingResponse>, Option<tonic::Status>) {
    let (tx, rx) = mpsc::channel(messages.len().max(1));
    for message in messages {
        tx.send(message).await.expect("queue");
    }
    drop(tx);
    let mut client = client.clone();
    let call = async move {
        let mut responses = Vec::new();
        let mut stream = match client
            .process(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(stream) => stream.into_inner(),
            Err(status) => return (responses, Some(status)),
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) => responses.push(response),
                Ok(None) => return (responses, None),
                Err(status) => return (responses, Some(status)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the picker answered within 20 s")
}

/// The common response of a headers or body answer.
pub fn common(response: &ProcessingResponse) -> Option<&CommonResponse> {
    use processing_response::Response as R;
    match response.response.as_ref()? {
        R::RequestHeaders(h) | R::ResponseHeaders(h) => h.response.as_ref(),
        R::RequestBody(b) | R::ResponseBody(b) => b.response.as_ref(),
        _ => None,
    }
}

/// Headers set by an answer, as text.
pub fn set_headers(response: &ProcessingResponse) -> BTreeMap<String, String> {
    common(response)
        .and_then(|c| c.header_mutation.as_ref())
        .map(|m| {
            m.set_headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| {
                    let value = if h.raw_value.is_empty() {
                        h.value.clone()
                    } else {
                        String::from_utf8(h.raw_value.clone()).unwrap()
                    };
                    (h.key.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Headers removed by an answer.
pub fn removed_headers(response: &ProcessingResponse) -> Vec<String> {
    common(response)
        .and_then(|c| c.header_mutation.as_ref())
        .map(|m| m.remove_headers.clone())
        .unwrap_or_default()
}

/// The streamed body chunk of an answer, and its end_of_stream.
pub fn streamed_chunk(response: &ProcessingResponse) -> Option<(&[u8], bool)> {
    match common(response)?
        .body_mutation
        .as_ref()?
        .mutation
        .as_ref()?
    {
        body_mutation::Mutation::StreamedResponse(s) => Some((&s.body, s.end_of_stream)),
        _ => None,
    }
}

/// `envoy.lb` / `x-gateway-destination-endpoint` of an answer's dynamic metadata.
pub fn destination_metadata(response: &ProcessingResponse) -> Option<String> {
    let lb = response.dynamic_metadata.as_ref()?.fields.get("envoy.lb")?;
    let Some(value::Kind::StructValue(lb)) = &lb.kind else {
        return None;
    };
    match &lb.fields.get("x-gateway-destination-endpoint")?.kind {
        Some(value::Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The status and JSON body of an immediate response.
pub fn immediate(response: &ProcessingResponse) -> Option<(i32, serde_json::Value)> {
    match response.response.as_ref()? {
        processing_response::Response::ImmediateResponse(i) => Some((
            i.status.as_ref().map_or(0, |s| s.code),
            serde_json::from_slice(&i.body).expect("JSON error body"),
        )),
        _ => None,
    }
}

pub fn is_request_headers(response: &ProcessingResponse) -> bool {
    matches!(
        response.response,
        Some(processing_response::Response::RequestHeaders(_))
    )
}

pub fn is_request_body(response: &ProcessingResponse) -> bool {
    matches!(
        response.response,
        Some(processing_response::Response::RequestBody(_))
    )
}
