//! The OpenAI surface as the picker sees it: which paths are inference requests, turning a
//! request body into a scheduler [`Request`], OpenAI-style error bodies, and reading `usage`
//! from answers (JSON or server-sent events).
//!
//! | path (query ignored) | handling |
//! |---|---|
//! | `/v1/chat/completions` | body parsed (`model`, `messages`, `stream`, `cache_salt`), scheduled |
//! | `/v1/completions` | body parsed (`model`, `prompt`, `stream`, `cache_salt`), scheduled |
//! | anything else (`/v1/models`, `/health`, `/v1/embeddings`, …) | not parsed; sent to a random ready endpoint, body untouched |

use fusioninfer_sched::{ApiKind, ChatMessage, Prompt, Request};
use serde::Deserialize;
use serde_json::value::RawValue;

/// What a request path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// An inference request the scheduler places.
    Inference(ApiKind),
    /// Anything else: forwarded to a random ready endpoint.
    Passthrough,
}

/// Classifies `path` (query string allowed).
pub fn route(path: &str) -> Route {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    match path {
        "/v1/chat/completions" => Route::Inference(ApiKind::ChatCompletions),
        "/v1/completions" => Route::Inference(ApiKind::Completions),
        _ => Route::Passthrough,
    }
}

/// A request the picker refuses, with the HTTP status and an OpenAI-style error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable message.
    pub message: String,
    /// The offending request field, if one.
    pub param: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn bad_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            param,
        }
    }

    /// The OpenAI error `type` for the status.
    pub fn kind(&self) -> &'static str {
        error_type(self.status)
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Vec<u8> {
        error_body(self.status, &self.message, self.param)
    }
}

/// The OpenAI-style error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        413 => "RequestTooLargeError",
        429 => "RateLimitError",
        503 => "ServiceUnavailableError",
        _ => "InternalServerError",
    }
}

/// An OpenAI-style error body (`{"error": {"message", "type", "param", "code"}}`, the shape
/// vLLM answers with).
pub fn error_body(status: u16, message: &str, param: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": status,
        }
    }))
    .expect("a JSON value serializes")
}

/// A parsed inference request, and where its `model` value sits in the body (for a rewrite).
#[derive(Debug)]
pub struct ParsedRequest {
    /// What the scheduler sees.
    pub request: Request,
    /// Byte range of the `model` JSON string (quotes included) in the body.
    pub model_span: std::ops::Range<usize>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    messages: Option<serde_json::Value>,
    #[serde(default)]
    prompt: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    cache_salt: Option<serde_json::Value>,
}

/// Parses an OpenAI request body for `api`. Errors name the field (`model`, `messages`,
/// `prompt`, `stream`, `cache_salt`) where there is one.
pub fn parse_request(api: ApiKind, body: &[u8]) -> Result<ParsedRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            None,
            "the request body is empty; expected a JSON object",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(None, format!("the request body is not UTF-8: {e}")))?;
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::bad_request(
            None,
            "the request body must be a JSON object",
        ));
    }
    let parsed: Body<'_> = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(None, format!("invalid JSON in request body: {e}")))?;

    let Some(raw_model) = parsed.model else {
        return Err(ApiError::bad_request(
            Some("model"),
            "the field `model` is required",
        ));
    };
    let model: String = match serde_json::from_str::<serde_json::Value>(raw_model.get()) {
        Ok(serde_json::Value::String(model)) if !model.trim().is_empty() => model,
        Ok(serde_json::Value::String(_)) => {
            return Err(ApiError::bad_request(
                Some("model"),
                "the field `model` must not be empty",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                Some("model"),
                "the field `model` must be a string",
            ));
        }
    };
    let start = raw_model.get().as_ptr() as usize - text.as_ptr() as usize;
    let model_span = start..start + raw_model.get().len();

    let stream = match parsed.stream {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(stream)) => stream,
        Some(_) => {
            return Err(ApiError::bad_request(
                Some("stream"),
                "the field `stream` must be a boolean",
            ));
        }
    };
    let cache_salt = match parsed.cache_salt {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(salt)) => Some(salt),
        Some(_) => {
            return Err(ApiError::bad_request(
                Some("cache_salt"),
                "the field `cache_salt` must be a string",
            ));
        }
    };

    let prompt = match api {
        ApiKind::ChatCompletions => Prompt::Messages(parse_messages(parsed.messages)?),
        _ => Prompt::Text(parse_prompt(parsed.prompt)?),
    };
    let request = Request {
        api,
        model,
        prompt,
        stream,
        cache_salt,
        body_bytes: body.len(),
        ..Request::default()
    };
    Ok(ParsedRequest {
        request,
        model_span,
    })
}

fn parse_messages(messages: Option<serde_json::Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let messages = match messages {
        None | Some(serde_json::Value::Null) => {
            return Err(ApiError::bad_request(
                Some("messages"),
                "the field `messages` is required",
            ));
        }
        Some(serde_json::Value::Array(messages)) => messages,
        Some(_) => {
            return Err(ApiError::bad_request(
                Some("messages"),
                "the field `messages` must be an array",
            ));
        }
    };
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            Some("messages"),
            "the field `messages` must not be empty",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| {
            let serde_json::Value::Object(mut message) = message else {
                return Err(ApiError::bad_request(
                    Some("messages"),
                    format!("`messages[{i}]` must be an object"),
                ));
            };
            let role = match message.remove("role") {
                Some(serde_json::Value::String(role)) => role,
                _ => {
                    return Err(ApiError::bad_request(
                        Some("messages"),
                        format!("`messages[{i}].role` must be a string"),
                    ));
                }
            };
            let content = match message.remove("content") {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(content)) => content,
                // Content parts: the text parts, in order; images and audio carry no prefix text.
                Some(serde_json::Value::Array(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match part {
                            serde_json::Value::String(s) => text.push_str(&s),
                            serde_json::Value::Object(part) => {
                                if let Some(serde_json::Value::String(s)) = part.get("text") {
                                    text.push_str(s);
                                }
                            }
                            _ => {}
                        }
                    }
                    text
                }
                Some(_) => {
                    return Err(ApiError::bad_request(
                        Some("messages"),
                        format!("`messages[{i}].content` must be a string or an array of parts"),
                    ));
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

fn parse_prompt(prompt: Option<serde_json::Value>) -> Result<String, ApiError> {
    let empty = || {
        ApiError::bad_request(
            Some("prompt"),
            "the field `prompt` must not be empty".to_owned(),
        )
    };
    let wrong = || {
        ApiError::bad_request(
            Some("prompt"),
            "the field `prompt` must be a string, an array of strings, or token ids",
        )
    };
    match prompt {
        None | Some(serde_json::Value::Null) => Err(ApiError::bad_request(
            Some("prompt"),
            "the field `prompt` is required",
        )),
        Some(serde_json::Value::String(text)) if text.is_empty() => Err(empty()),
        Some(serde_json::Value::String(text)) => Ok(text),
        Some(serde_json::Value::Array(items)) if items.is_empty() => Err(empty()),
        Some(serde_json::Value::Array(items)) => {
            // A batch of prompts or token ids: one text whose prefix is the first prompt, so
            // batches sharing a first prompt share a prefix.
            let mut text = String::new();
            for item in &items {
                match item {
                    serde_json::Value::String(s) => {
                        text.push_str(s);
                        text.push('\n');
                    }
                    serde_json::Value::Number(n) => {
                        text.push_str(&n.to_string());
                        text.push(' ');
                    }
                    serde_json::Value::Array(tokens) if !tokens.is_empty() => {
                        for token in tokens {
                            let serde_json::Value::Number(n) = token else {
                                return Err(wrong());
                            };
                            text.push_str(&n.to_string());
                            text.push(' ');
                        }
                        text.push('\n');
                    }
                    serde_json::Value::Array(_) => return Err(empty()),
                    _ => return Err(wrong()),
                }
            }
            if text.trim().is_empty() {
                return Err(empty());
            }
            Ok(text)
        }
        Some(_) => Err(wrong()),
    }
}

/// Token counts from an answer's `usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// `prompt_tokens`.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// `completion_tokens`.
    #[serde(default)]
    pub completion_tokens: u64,
    /// `prompt_tokens_details.cached_tokens` (vLLM reports it with
    /// `--enable-prompt-tokens-details`).
    #[serde(
        default,
        deserialize_with = "cached_tokens",
        rename = "prompt_tokens_details"
    )]
    pub cached_tokens: Option<u64>,
}

fn cached_tokens<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Details {
        cached_tokens: Option<u64>,
    }
    Ok(Option::<Details>::deserialize(d)?.and_then(|d| d.cached_tokens))
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Usage>,
}

/// Reads `usage` from a complete JSON answer.
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}

/// Reads `usage` from a server-sent-event stream as it passes, chunk by chunk, without keeping
/// more than one incomplete line. The last `usage` seen wins (vLLM sends it once, in the final
/// chunk, when `stream_options.include_usage` is set).
#[derive(Debug, Default)]
pub struct SseUsageScanner {
    partial: Vec<u8>,
    usage: Option<Usage>,
    overflowed: bool,
}

/// Longest SSE line kept while waiting for its end; longer lines are skipped.
const MAX_SSE_LINE: usize = 1 << 20;

impl SseUsageScanner {
    /// Feeds the next piece of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            let (line, rest) = chunk.split_at(newline);
            chunk = &rest[1..];
            if self.partial.is_empty() {
                if !self.overflowed {
                    self.line(line);
                }
            } else {
                let mut full = std::mem::take(&mut self.partial);
                full.extend_from_slice(line);
                if !self.overflowed {
                    self.line(&full);
                }
                full.clear();
                self.partial = full;
            }
            self.overflowed = false;
        }
        if self.partial.len() + chunk.len() > MAX_SSE_LINE {
            self.partial.clear();
            self.overflowed = true;
        } else if !self.overflowed {
            self.partial.extend_from_slice(chunk);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if data.first() != Some(&b'{') || !contains(data, b"\"usage\"") {
            return;
        }
        if let Some(usage) = usage_from_json(data) {
            self.usage = Some(usage);
        }
    }

    /// The usage seen so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ParsedRequest, ApiError> {
        parse_request(ApiKind::ChatCompletions, body.as_bytes())
    }

    fn completion(body: &str) -> Result<ParsedRequest, ApiError> {
        parse_request(ApiKind::Completions, body.as_bytes())
    }

    #[test]
    fn routes_by_path() {
        assert_eq!(
            route("/v1/chat/completions"),
            Route::Inference(ApiKind::ChatCompletions)
        );
        assert_eq!(
            route("/v1/completions?x=1"),
            Route::Inference(ApiKind::Completions)
        );
        assert_eq!(
            route("/v1/completions/"),
            Route::Inference(ApiKind::Completions)
        );
        assert_eq!(route("/v1/models"), Route::Passthrough);
        assert_eq!(route("/v1/embeddings"), Route::Passthrough);
        assert_eq!(route(""), Route::Passthrough);
    }

    #[test]
    fn parses_chat_requests() {
        let body = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi "},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"there"}]},
            {"role":"assistant","content":null,"tool_calls":[]}],"stream":true,"cache_salt":"s"}"#;
        let parsed = chat(body).unwrap();
        let request = parsed.request;
        assert_eq!(request.model, "m");
        assert!(request.stream);
        assert_eq!(request.cache_salt.as_deref(), Some("s"));
        assert_eq!(request.body_bytes, body.len());
        assert_eq!(
            request.prompt,
            Prompt::Messages(vec![
                ChatMessage::new("system", "be brief"),
                ChatMessage::new("user", "hi there"),
                ChatMessage::new("assistant", ""),
            ])
        );
        assert_eq!(&body[parsed.model_span], "\"m\"");
    }

    #[test]
    fn parses_completion_prompts() {
        assert_eq!(
            completion(r#"{"model":"m","prompt":"hello"}"#)
                .unwrap()
                .request
                .prompt,
            Prompt::Text("hello".into())
        );
        assert_eq!(
            completion(r#"{"model":"m","prompt":["a","b"]}"#)
                .unwrap()
                .request
                .prompt,
            Prompt::Text("a\nb\n".into())
        );
        assert_eq!(
            completion(r#"{"model":"m","prompt":[1,2,3]}"#)
                .unwrap()
                .request
                .prompt,
            Prompt::Text("1 2 3 ".into())
        );
        assert_eq!(
            completion(r#"{"model":"m","prompt":[[1,2],[3]]}"#)
                .unwrap()
                .request
                .prompt,
            Prompt::Text("1 2 \n3 \n".into())
        );
        let parsed = completion(r#"{ "prompt":"x",  "model" : "llama" }"#).unwrap();
        assert_eq!(parsed.model_span, 27..34);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&str, Option<&str>, &str); 14] = [
            ("", None, "empty"),
            ("   ", None, "empty"),
            ("[1]", None, "JSON object"),
            ("{\"model\":", None, "invalid JSON"),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
                "`model` is required",
            ),
            (
                r#"{"model":"","messages":[]}"#,
                Some("model"),
                "`model` must not be empty",
            ),
            (
                r#"{"model":3,"messages":[]}"#,
                Some("model"),
                "`model` must be a string",
            ),
            (
                r#"{"model":"m"}"#,
                Some("messages"),
                "`messages` is required",
            ),
            (
                r#"{"model":"m","messages":[]}"#,
                Some("messages"),
                "`messages` must not be empty",
            ),
            (
                r#"{"model":"m","messages":{}}"#,
                Some("messages"),
                "must be an array",
            ),
            (
                r#"{"model":"m","messages":[1]}"#,
                Some("messages"),
                "`messages[0]` must be an object",
            ),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages"),
                "`messages[0].role`",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                Some("stream"),
                "`stream` must be a boolean",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"cache_salt":1}"#,
                Some("cache_salt"),
                "`cache_salt`",
            ),
        ];
        for (body, param, message) in cases {
            let error = chat(body).expect_err(body);
            assert_eq!(error.status, 400, "{body}");
            assert_eq!(error.param, param, "{body}");
            assert!(
                error.message.contains(message),
                "{body}: {:?} lacks {message:?}",
                error.message
            );
        }
        for (body, message) in [
            (r#"{"model":"m"}"#, "`prompt` is required"),
            (r#"{"model":"m","prompt":""}"#, "`prompt` must not be empty"),
            (r#"{"model":"m","prompt":[]}"#, "`prompt` must not be empty"),
            (
                r#"{"model":"m","prompt":[[]]}"#,
                "`prompt` must not be empty",
            ),
            (r#"{"model":"m","prompt":{}}"#, "`prompt` must be a string"),
            (
                r#"{"model":"m","prompt":[true]}"#,
                "`prompt` must be a string",
            ),
        ] {
            let error = completion(body).expect_err(body);
            assert_eq!(error.param, Some("prompt"), "{body}");
            assert!(error.message.contains(message), "{body}: {}", error.message);
        }
    }

    #[test]
    fn error_bodies_are_openai_shaped() {
        let error = ApiError::bad_request(Some("model"), "the field `model` is required");
        let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"message": "the field `model` is required",
                "type": "BadRequestError", "param": "model", "code": 400}})
        );
        let body: serde_json::Value =
            serde_json::from_slice(&error_body(429, "busy", None)).unwrap();
        assert_eq!(body["error"]["type"], "RateLimitError");
        assert_eq!(body["error"]["param"], serde_json::Value::Null);
    }

    #[test]
    fn usage_from_answers() {
        let json = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        assert_eq!(
            usage_from_json(json),
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
                cached_tokens: Some(8)
            })
        );
        assert_eq!(usage_from_json(br#"{"usage":null}"#), None);
        assert_eq!(usage_from_json(b"not json"), None);

        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        // Every split point, including inside the usage line.
        for split in 0..stream.len() {
            let mut scanner = SseUsageScanner::default();
            scanner.feed(&stream[..split]);
            scanner.feed(&stream[split..]);
            assert_eq!(
                scanner.usage(),
                Some(Usage {
                    prompt_tokens: 7,
                    completion_tokens: 2,
                    cached_tokens: None
                }),
                "split at {split}"
            );
        }
        let mut scanner = SseUsageScanner::default();
        for byte in stream {
            scanner.feed(std::slice::from_ref(byte));
        }
        assert_eq!(scanner.usage().map(|u| u.prompt_tokens), Some(7));
    }

    #[test]
    fn overlong_sse_lines_are_skipped_not_kept() {
        let mut scanner = SseUsageScanner::default();
        let long = vec![b'x'; MAX_SSE_LINE + 10];
        scanner.feed(b"data: ");
        scanner.feed(&long);
        assert!(scanner.partial.len() <= MAX_SSE_LINE);
        scanner.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n");
        assert_eq!(scanner.usage().map(|u| u.prompt_tokens), Some(1));
    }
}
