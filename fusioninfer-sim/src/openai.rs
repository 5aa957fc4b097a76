//! OpenAI-compatible request and response types, with vLLM 0.32's fields and key order.
//!
//! Requests are read leniently (unknown fields are ignored, as vLLM does for sampling options
//! the simulator has no use for). Responses carry every key vLLM sends, `null` where vLLM sends
//! `null`; stream chunks leave out what vLLM leaves out.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final usage chunk.
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// Put usage into every chunk.
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model or LoRA adapter name (default: the served model).
    #[serde(default)]
    pub model: Option<String>,
    /// Chat messages, passed to the chat template as given.
    pub messages: Vec<Value>,
    /// Output limit (legacy name).
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Output limit (preferred name).
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    /// Stream with SSE.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Stream options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1 is simulated).
    #[serde(default)]
    pub n: Option<i64>,
    /// KV-transfer parameters (P/D disaggregation).
    #[serde(default)]
    pub kv_transfer_params: Option<Value>,
    /// Append the assistant header (default true).
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    /// Let the tokenizer add special tokens to the rendered prompt (default false).
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    /// Extra template variables.
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// Model or LoRA adapter name (default: the served model).
    #[serde(default)]
    pub model: Option<String>,
    /// A string, a list with one string, a list of token ids, or a list with one list of ids.
    pub prompt: Value,
    /// Output limit (vLLM's default for completions is 16).
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Stream with SSE.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Stream options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1 is simulated).
    #[serde(default)]
    pub n: Option<i64>,
    /// KV-transfer parameters (P/D disaggregation).
    #[serde(default)]
    pub kv_transfer_params: Option<Value>,
    /// Let the tokenizer add special tokens (default true).
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
}

/// `POST /tokenize`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    /// Model name (checked like inference requests).
    #[serde(default)]
    pub model: Option<String>,
    /// Text to tokenize.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Chat messages to render and tokenize.
    #[serde(default)]
    pub messages: Option<Vec<Value>>,
    /// Special tokens (default true for `prompt`, false for `messages`).
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    /// Append the assistant header (default true).
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    /// Also return the token strings.
    #[serde(default)]
    pub return_token_strs: Option<bool>,
}

/// `/tokenize` response.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizeResponse {
    /// Number of tokens.
    pub count: usize,
    /// The server's context length.
    pub max_model_len: usize,
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Token strings, when asked for.
    pub token_strs: Option<Vec<Option<String>>>,
}

/// `prompt_tokens_details` of a non-streamed response.
#[derive(Debug, Clone, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    /// Tokens of full blocks newly written to the cache (chat only; `null` for completions).
    pub created_cache_tokens: Option<usize>,
    /// Always `null`.
    pub multimodal_tokens: Option<usize>,
}

/// `usage` of a non-streamed response.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt + completion tokens.
    pub total_tokens: usize,
    /// Completion tokens.
    pub completion_tokens: usize,
    /// Cache details (vLLM's `--enable-prompt-tokens-details`).
    pub prompt_tokens_details: PromptTokensDetails,
    /// Always `null`.
    pub completion_tokens_details: Option<Value>,
}

/// `prompt_tokens_details` of a stream usage chunk (nulls left out).
#[derive(Debug, Clone, Serialize)]
pub struct StreamPromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    /// Tokens of full blocks newly written to the cache (chat only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_cache_tokens: Option<usize>,
}

/// `usage` of a stream chunk.
#[derive(Debug, Clone, Serialize)]
pub struct StreamUsage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt + completion tokens.
    pub total_tokens: usize,
    /// Completion tokens.
    pub completion_tokens: usize,
    /// Cache details.
    pub prompt_tokens_details: StreamPromptTokensDetails,
}

/// An assistant message.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    /// `"assistant"`.
    pub role: &'static str,
    /// Generated text.
    pub content: String,
    /// `null`.
    pub refusal: Option<Value>,
    /// `null`.
    pub annotations: Option<Value>,
    /// `null`.
    pub audio: Option<Value>,
    /// `null`.
    pub function_call: Option<Value>,
    /// `null`.
    pub reasoning: Option<Value>,
}

/// A chat choice.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// 0.
    pub index: usize,
    /// The message.
    pub message: AssistantMessage,
    /// `null`.
    pub logprobs: Option<Value>,
    /// `stop`, `length` or `abort`.
    pub finish_reason: String,
    /// `null`.
    pub stop_reason: Option<Value>,
    /// `null`.
    pub token_ids: Option<Value>,
    /// `null`.
    pub routed_experts: Option<Value>,
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionResponse {
    /// `chatcmpl-…`.
    pub id: String,
    /// `"chat.completion"`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model or adapter name as requested.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// `null`.
    pub service_tier: Option<Value>,
    /// `vllm-<version>-<hash>`.
    pub system_fingerprint: String,
    /// Token counts.
    pub usage: Usage,
    /// `null`.
    pub prompt_logprobs: Option<Value>,
    /// `null`.
    pub prompt_token_ids: Option<Value>,
    /// `null`.
    pub prompt_text: Option<Value>,
    /// NIXL hand-off parameters for prefill requests, else `null`.
    pub kv_transfer_params: Option<Value>,
    /// `null`.
    pub ec_transfer_params: Option<Value>,
    /// `null`.
    pub metrics: Option<Value>,
}

/// A completion choice.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    /// 0.
    pub index: usize,
    /// Generated text.
    pub text: String,
    /// `null`.
    pub logprobs: Option<Value>,
    /// `stop`, `length` or `abort`.
    pub finish_reason: String,
    /// `null`.
    pub stop_reason: Option<Value>,
    /// `null`.
    pub token_ids: Option<Value>,
    /// `null`.
    pub prompt_logprobs: Option<Value>,
    /// `null`.
    pub prompt_token_ids: Option<Value>,
    /// `null`.
    pub routed_experts: Option<Value>,
}

/// `text_completion`.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionResponse {
    /// `cmpl-…`.
    pub id: String,
    /// `"text_completion"`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model or adapter name as requested.
    pub model: String,
    /// One choice.
    pub choices: Vec<CompletionChoice>,
    /// `null`.
    pub service_tier: Option<Value>,
    /// `vllm-<version>-<hash>`.
    pub system_fingerprint: String,
    /// Token counts.
    pub usage: Usage,
    /// NIXL hand-off parameters for prefill requests, else `null`.
    pub kv_transfer_params: Option<Value>,
    /// `null`.
    pub ec_transfer_params: Option<Value>,
    /// `null`.
    pub metrics: Option<Value>,
}

/// `delta` of the first chat chunk.
#[derive(Debug, Clone, Serialize)]
pub struct RoleDelta {
    /// `"assistant"`.
    pub role: &'static str,
    /// `""`.
    pub content: &'static str,
}

/// `delta` of a content chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ContentDelta {
    /// Text of this token.
    pub content: String,
}

/// The role choice of the first chat chunk.
#[derive(Debug, Clone, Serialize)]
pub struct RoleChoice {
    /// 0.
    pub index: usize,
    /// The role delta.
    pub delta: RoleDelta,
    /// `null`.
    pub logprobs: Option<Value>,
    /// `null`.
    pub finish_reason: Option<String>,
}

/// A chat content choice.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunkChoice {
    /// 0.
    pub index: usize,
    /// The content delta.
    pub delta: ContentDelta,
    /// `null`.
    pub logprobs: Option<Value>,
    /// Set on the last chunk.
    pub finish_reason: Option<String>,
    /// Present (as `null`) only on the last chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Option<Value>>,
    /// `null`.
    pub token_ids: Option<Value>,
}

/// A completion stream choice.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionChunkChoice {
    /// 0.
    pub index: usize,
    /// Text of this token.
    pub text: String,
    /// `null`.
    pub logprobs: Option<Value>,
    /// Set on the last chunk.
    pub finish_reason: Option<String>,
    /// `null`.
    pub stop_reason: Option<Value>,
    /// `null`.
    pub prompt_token_ids: Option<Value>,
    /// `null`.
    pub token_ids: Option<Value>,
}

/// One SSE chunk. `C` is the choice type (`()` for the usage chunk's empty list).
#[derive(Debug, Clone, Serialize)]
pub struct Chunk<C: Serialize> {
    /// Same id on every chunk.
    pub id: String,
    /// `chat.completion.chunk` or `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model or adapter name as requested.
    pub model: String,
    /// The choices (empty in the usage chunk).
    pub choices: Vec<C>,
    /// Usage (only in the usage chunk, or every chunk with `continuous_usage_stats`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<StreamUsage>,
    /// `null` on the first chat chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Option<Value>>,
    /// `null` on the first chat chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_text: Option<Option<Value>>,
    /// Only in the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

/// A `model_permission` entry.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPermission {
    /// `modelperm-…`.
    pub id: String,
    /// `"model_permission"`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// false.
    pub allow_create_engine: bool,
    /// true.
    pub allow_sampling: bool,
    /// true.
    pub allow_logprobs: bool,
    /// false.
    pub allow_search_indices: bool,
    /// true.
    pub allow_view: bool,
    /// false.
    pub allow_fine_tuning: bool,
    /// `"*"`.
    pub organization: &'static str,
    /// `null`.
    pub group: Option<Value>,
    /// false.
    pub is_blocking: bool,
}

/// A `/v1/models` entry.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// Served name.
    pub id: String,
    /// `"model"`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// `"vllm"`.
    pub owned_by: &'static str,
    /// Model path (adapter path for LoRAs).
    pub root: String,
    /// Base model for adapters, else `null`.
    pub parent: Option<String>,
    /// Context length (`null` for adapters).
    pub max_model_len: Option<usize>,
    /// One permission entry.
    pub permission: Vec<ModelPermission>,
}

/// `/v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// `"list"`.
    pub object: &'static str,
    /// Served model then adapters.
    pub data: Vec<ModelCard>,
}

/// `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter`.
#[derive(Debug, Clone, Deserialize)]
pub struct LoraRequest {
    /// Adapter name.
    pub lora_name: String,
    /// Adapter path (not read).
    #[serde(default)]
    pub lora_path: Option<String>,
}
