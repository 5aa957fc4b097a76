//! Error responses shaped like vLLM's: `{"error": {"message", "type", "param", "code"}}`.
//!
//! Request-validation errors (what FastAPI/pydantic reject) use `"type": "Bad Request"`, a
//! pydantic-style message and `param` = the error location (`body.<field>`, or `body.<offset>`
//! for invalid JSON); errors raised by the serving code use `BadRequestError` / `NotFoundError`
//! with vLLM's wording. Invalid JSON is 400, not 422, as in vLLM 0.32.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status (also the body's `code`).
    pub status: StatusCode,
    /// `error.message`.
    pub message: String,
    /// `error.type`.
    pub kind: String,
    /// `error.param`.
    pub param: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: u16,
}

/// Python's `repr()` of a string (single quotes unless the text holds one and no double quote).
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: String, param: Option<&str>) -> Self {
        ApiError {
            status,
            message,
            kind: kind.into(),
            param: param.map(str::to_owned),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error: Inner {
                message: &self.message,
                kind: &self.kind,
                param: self.param.as_deref(),
                code: self.status.as_u16(),
            },
        })
        .expect("error bodies serialize")
    }

    /// A pydantic-style validation error at `loc` (e.g. `body.messages`).
    pub fn validation(kind: &str, loc: &str, msg: &str, input: &str, ctx: Option<&str>) -> Self {
        let ctx = ctx.map(|c| format!(", 'ctx': {{'error': {}}}", py_repr(c)));
        let message = format!(
            "1 validation error:\n  {{'type': {}, 'loc': {}, 'msg': {}, 'input': {}{}}}",
            py_repr(kind),
            py_repr(loc),
            py_repr(msg),
            input,
            ctx.unwrap_or_default()
        );
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", message, Some(loc))
    }

    /// A required field is missing from a JSON object with `items` keys.
    pub fn missing(field: &str, items: usize) -> Self {
        Self::validation(
            "missing",
            &format!("body.{field}"),
            "Field required",
            &py_repr(&format!("<dict of {items} items>")),
            None,
        )
    }

    /// The body is not valid JSON (`pos` is the character offset, `reason` Python's wording).
    pub fn invalid_json(pos: usize, reason: &str) -> Self {
        Self::validation(
            "json_invalid",
            &format!("body.{pos}"),
            "JSON decode error",
            &py_repr("<dict of 0 items>"),
            Some(reason),
        )
    }

    /// A field has the wrong type.
    pub fn invalid_field(loc: &str, msg: &str) -> Self {
        Self::validation("value_error", loc, msg, "'...'", None)
    }

    /// An engine-side 400 (`BadRequestError`).
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            message.into(),
            param,
        )
    }

    /// The requested model is neither the served model nor a loaded adapter.
    pub fn model_not_found(model: &str, valid: &[String]) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!(
                "The model `{model}` does not exist. Valid aliases: {}.",
                valid.join(", ")
            ),
            Some("model"),
        )
    }

    /// A 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundError", message.into(), None)
    }

    /// The waiting queue is full (simulator-specific; vLLM 0.32 counts these as admission
    /// rejections).
    pub fn queue_full(limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsError",
            format!("The server is overloaded: the waiting queue is full ({limit} requests)."),
            None,
        )
    }

    /// An injected failure.
    pub fn injected(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(
            status,
            "InternalServerError",
            "Injected failure (fusioninfer-sim fault injection).".into(),
            None,
        )
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            message.into(),
            None,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs_like_python() {
        assert_eq!(py_repr("abc"), "'abc'");
        assert_eq!(
            py_repr("Expecting ',' delimiter"),
            "\"Expecting ',' delimiter\""
        );
        assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
    }

    #[test]
    fn missing_field_matches_vllm_wording() {
        let e = ApiError::missing("messages", 2);
        assert_eq!(
            e.body(),
            r#"{"error":{"message":"1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', 'msg': 'Field required', 'input': '<dict of 2 items>'}","type":"Bad Request","param":"body.messages","code":400}}"#
        );
    }
}
