//! The request rewriting of the hand-off, as pure functions over JSON bodies (protocol facts:
//! `../shared/reference/protocols.md` §5).
//!
//! * [`prefill_body`]: what the prefiller gets — the client's body with NIXL's
//!   `kv_transfer_params {do_remote_decode: true, …}`, `stream: false`, `max_tokens` and
//!   `max_completion_tokens` 1, and no `stream_options` or `min_tokens`;
//! * [`kv_transfer_params`]: the parameters the prefiller answers with;
//! * [`decode_body`]: what the local engine gets — the client's body untouched (stream flag,
//!   limits and `stream_options` as sent) plus the prefiller's parameters.

use std::net::SocketAddr;

use serde_json::{Map, Value, json};

/// Why a body cannot be rewritten.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// Not JSON.
    #[error("the request body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("the request body is not a JSON object")]
    NotObject,
}

/// The paths whose requests go through the two-step protocol (every other path is passed
/// through, the header only stripped): the picker's own classification, so that every request
/// it gives a prefiller is handed off.
pub fn is_inference_path(path: &str) -> bool {
    matches!(
        fusioninfer_epp::openai::route(path),
        fusioninfer_epp::openai::Route::Inference(_)
    )
}

/// NIXL's request-side parameters: "prefill only, keep the KV blocks for a remote decoder".
pub fn remote_decode_params() -> Value {
    json!({
        "do_remote_decode": true,
        "do_remote_prefill": false,
        "remote_engine_id": null,
        "remote_block_ids": null,
        "remote_host": null,
        "remote_port": null,
    })
}

fn object(body: &[u8]) -> Result<Map<String, Value>, RewriteError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RewriteError::NotObject),
        Err(e) => Err(RewriteError::NotJson(e.to_string())),
    }
}

/// The prefiller's request: `body` with one output token, no streaming, and
/// [`remote_decode_params`].
pub fn prefill_body(body: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut map = object(body)?;
    map.insert("kv_transfer_params".to_owned(), remote_decode_params());
    map.insert("stream".to_owned(), Value::Bool(false));
    map.insert("max_tokens".to_owned(), json!(1));
    map.insert("max_completion_tokens".to_owned(), json!(1));
    map.remove("stream_options");
    // vLLM refuses min_tokens > max_tokens (400): the client's minimum is the decoder's business.
    map.remove("min_tokens");
    Ok(serde_json::to_vec(&Value::Object(map)).expect("a JSON value serializes"))
}

/// The `kv_transfer_params` object of a prefiller's JSON answer; `None` when the answer has
/// none (an engine without a KV connector), so that the decoder prefills itself.
pub fn kv_transfer_params(response: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(response).ok()?;
    match value.get("kv_transfer_params") {
        Some(params @ Value::Object(_)) => Some(params.clone()),
        _ => None,
    }
}

/// The local engine's request: `body` as the client sent it, with `kv_transfer_params`
/// replaced by the prefiller's.
pub fn decode_body(body: &[u8], params: &Value) -> Result<Vec<u8>, RewriteError> {
    let mut map = object(body)?;
    map.insert("kv_transfer_params".to_owned(), params.clone());
    Ok(serde_json::to_vec(&Value::Object(map)).expect("a JSON value serializes"))
}

/// Parses an `x-prefiller-host-port` value: `ip:port` or `[ipv6]:port`. Names are refused:
/// the allowlist holds addresses, and resolving a client-chosen name is what an open proxy does.
pub fn parse_prefiller(value: &[u8]) -> Result<SocketAddr, String> {
    let text = std::str::from_utf8(value).map_err(|_| "is not UTF-8".to_owned())?;
    text.trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not an ip:port address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn the_prefill_request_asks_for_one_token_unstreamed_with_remote_decode() {
        let original = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 50,
            "max_completion_tokens": 60,
            "temperature": 0.5,
            "min_tokens": 20,
            "kv_transfer_params": {"do_remote_prefill": true},
        });
        let out = parse(&prefill_body(original.to_string().as_bytes()).unwrap());
        assert_eq!(out["stream"], false);
        assert!(
            out.get("min_tokens").is_none(),
            "more than max_tokens: vLLM says 400"
        );
        assert_eq!(out["max_tokens"], 1);
        assert_eq!(out["max_completion_tokens"], 1);
        assert!(out.get("stream_options").is_none());
        assert_eq!(out["kv_transfer_params"], remote_decode_params());
        assert_eq!(
            out["kv_transfer_params"]["do_remote_decode"], true,
            "a client's own params are replaced"
        );
        for key in [
            "remote_engine_id",
            "remote_block_ids",
            "remote_host",
            "remote_port",
        ] {
            assert!(out["kv_transfer_params"][key].is_null(), "{key}");
        }
        assert_eq!(out["model"], "m");
        assert_eq!(out["messages"], original["messages"]);
        assert_eq!(out["temperature"], 0.5);
    }

    #[test]
    fn the_decode_request_is_the_original_plus_the_prefillers_params() {
        let original = json!({
            "model": "m",
            "prompt": "hello",
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 7,
        });
        let params = json!({"do_remote_prefill": true, "do_remote_decode": false,
            "remote_block_ids": [1, 2], "remote_engine_id": "e", "remote_host": "10.0.0.1",
            "remote_port": 5600, "tp_size": 1});
        let out = parse(&decode_body(original.to_string().as_bytes(), &params).unwrap());
        let mut expected = original.clone();
        expected["kv_transfer_params"] = params;
        assert_eq!(out, expected);
    }

    #[test]
    fn params_come_from_the_prefillers_answer_only_when_an_object() {
        let answer = json!({"id": "x", "kv_transfer_params": {"remote_engine_id": "e"}});
        assert_eq!(
            kv_transfer_params(answer.to_string().as_bytes()),
            Some(json!({"remote_engine_id": "e"}))
        );
        assert_eq!(kv_transfer_params(br#"{"kv_transfer_params": null}"#), None);
        assert_eq!(kv_transfer_params(br#"{"id": "x"}"#), None);
        assert_eq!(kv_transfer_params(b"data: {}"), None);
    }

    #[test]
    fn non_objects_are_refused_with_the_reason() {
        assert_eq!(prefill_body(b"[1]"), Err(RewriteError::NotObject));
        assert!(matches!(prefill_body(b"{"), Err(RewriteError::NotJson(_))));
        assert!(matches!(
            decode_body(b"nope", &json!({})),
            Err(RewriteError::NotJson(_))
        ));
    }

    #[test]
    fn prefiller_addresses_parse_and_names_do_not() {
        assert_eq!(
            parse_prefiller(b"10.0.0.7:8000").unwrap(),
            "10.0.0.7:8000".parse().unwrap()
        );
        assert_eq!(
            parse_prefiller(b"[fd00::1]:8000").unwrap(),
            "[fd00::1]:8000".parse().unwrap()
        );
        assert!(parse_prefiller(b"prefill-0.svc:8000").is_err());
        assert!(parse_prefiller(b"10.0.0.7").is_err());
        assert!(parse_prefiller(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn only_completion_paths_are_handed_off() {
        assert!(is_inference_path("/v1/chat/completions"));
        assert!(is_inference_path("/v1/completions"));
        assert!(
            is_inference_path("/v1/completions/"),
            "the picker routes it as one"
        );
        for path in [
            "/v1/models",
            "/metrics",
            "/health",
            "/v1/chat/completions/x",
        ] {
            assert!(!is_inference_path(path), "{path}");
        }
    }
}
