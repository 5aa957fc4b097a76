//! What the scheduler knows about one inference request: the parts of the body and headers
//! that routing depends on. The router parses the HTTP request; this crate never sees bytes.

use std::borrow::Cow;

/// Request headers the scheduler reads (the router strips the `x-gateway-*` ones before
/// forwarding).
pub mod headers {
    /// Request id; the router generates one when the client sent none.
    pub const REQUEST_ID: &str = "x-request-id";
    /// Name of the inference objective the request belongs to.
    pub const OBJECTIVE: &str = "x-gateway-inference-objective";
    /// Fairness id (tenant) for flow control.
    pub const FAIRNESS_ID: &str = "x-gateway-inference-fairness-id";
}

/// Rough characters per token, used wherever the scheduler needs a token count of text it has
/// not tokenized (upstream GAIE and llm-d use the same constant).
pub const AVERAGE_CHARS_PER_TOKEN: usize = 4;

/// The OpenAI-compatible API a request came in on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApiKind {
    /// `/v1/chat/completions`
    #[default]
    ChatCompletions,
    /// `/v1/completions`
    Completions,
    /// `/v1/responses`
    Responses,
    /// `/v1/embeddings`
    Embeddings,
}

/// One chat message, reduced to its text (multimodal parts are the router's business).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The input text of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// A plain prompt: completions `prompt`, responses or embeddings `input` as text.
    Text(String),
    /// Chat `messages`, in order.
    Messages(Vec<ChatMessage>),
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Text(String::new())
    }
}

impl Prompt {
    /// The text prefix matching works on: the prompt itself, or the messages as
    /// `role\ncontent\n` one after another, so that a conversation and its continuation share
    /// a prefix.
    pub fn cache_text(&self) -> Cow<'_, str> {
        match self {
            Prompt::Text(text) => Cow::Borrowed(text),
            Prompt::Messages(messages) => {
                let mut text = String::with_capacity(self.cache_text_len());
                for message in messages {
                    text.push_str(&message.role);
                    text.push('\n');
                    text.push_str(&message.content);
                    text.push('\n');
                }
                Cow::Owned(text)
            }
        }
    }

    /// The first `limit` bytes (or fewer) of [`Prompt::cache_text`]; prefix matching only
    /// reads that far, and long conversations need not be copied whole.
    pub fn cache_text_prefix(&self, limit: usize) -> Cow<'_, [u8]> {
        match self {
            Prompt::Text(text) => Cow::Borrowed(&text.as_bytes()[..text.len().min(limit)]),
            Prompt::Messages(messages) => {
                let mut text = Vec::with_capacity(self.cache_text_len().min(limit));
                for message in messages {
                    for part in [
                        message.role.as_bytes(),
                        b"\n",
                        message.content.as_bytes(),
                        b"\n",
                    ] {
                        let room = limit - text.len();
                        text.extend_from_slice(&part[..part.len().min(room)]);
                    }
                    if text.len() == limit {
                        break;
                    }
                }
                Cow::Owned(text)
            }
        }
    }

    /// Length in bytes of [`Prompt::cache_text`], without building it.
    pub fn cache_text_len(&self) -> usize {
        match self {
            Prompt::Text(text) => text.len(),
            Prompt::Messages(messages) => messages
                .iter()
                .map(|m| m.role.len() + m.content.len() + 2)
                .sum(),
        }
    }
}

/// A parsed inference request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// Which API the request came in on.
    pub api: ApiKind,
    /// `model` as the client sent it.
    pub model: String,
    /// The model actually served after any rewrite (e.g. `x-gateway-model-name-rewrite`);
    /// `None` means [`Request::model`].
    pub target_model: Option<String>,
    /// The LoRA adapter the request needs, `None` for the base model.
    pub lora_adapter: Option<String>,
    /// Input text.
    pub prompt: Prompt,
    /// Whether the client asked for a streamed answer.
    pub stream: bool,
    /// vLLM `cache_salt`: requests with different salts never share cached prefixes.
    pub cache_salt: Option<String>,
    /// [`headers::REQUEST_ID`].
    pub request_id: Option<String>,
    /// [`headers::OBJECTIVE`].
    pub objective: Option<String>,
    /// [`headers::FAIRNESS_ID`].
    pub fairness_id: Option<String>,
    /// Size of the request body in bytes.
    pub body_bytes: usize,
    /// The prompt's token ids, tokenized as the model server does; only filled when a plugin
    /// needs them (see [`crate::Scheduler::kv_event_feeds`]).
    pub token_ids: Option<Vec<u32>>,
    /// Prompt length in tokens when the router knows it (e.g. from a tokenizer); otherwise
    /// [`Request::estimated_tokens`] estimates it from the text.
    pub prompt_tokens: Option<u32>,
}

impl Request {
    /// A `/v1/completions` request.
    pub fn completion(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        let prompt = Prompt::Text(prompt.into());
        Request {
            api: ApiKind::Completions,
            model: model.into(),
            body_bytes: prompt.cache_text_len(),
            prompt,
            ..Request::default()
        }
    }

    /// A `/v1/chat/completions` request.
    pub fn chat(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        let prompt = Prompt::Messages(messages);
        Request {
            api: ApiKind::ChatCompletions,
            model: model.into(),
            body_bytes: prompt.cache_text_len(),
            prompt,
            ..Request::default()
        }
    }

    /// The model that will serve the request.
    pub fn target_model(&self) -> &str {
        self.target_model.as_deref().unwrap_or(&self.model)
    }

    /// Prompt tokens: [`Request::prompt_tokens`] when known, else the text length divided by
    /// [`AVERAGE_CHARS_PER_TOKEN`].
    pub fn estimated_tokens(&self) -> u32 {
        self.prompt_tokens.unwrap_or_else(|| {
            u32::try_from(self.prompt.cache_text_len() / AVERAGE_CHARS_PER_TOKEN)
                .unwrap_or(u32::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_cache_text_is_a_prefix_of_its_continuation() {
        let first = vec![
            ChatMessage::new("system", "be brief"),
            ChatMessage::new("user", "hi"),
        ];
        let mut longer = first.clone();
        longer.push(ChatMessage::new("assistant", "hello"));
        let a = Prompt::Messages(first);
        let b = Prompt::Messages(longer);
        assert!(b.cache_text().starts_with(&*a.cache_text()));
        assert_eq!(a.cache_text().len(), a.cache_text_len());
        for limit in [0, 3, 7, 9, 100] {
            let full = b.cache_text();
            assert_eq!(
                &*b.cache_text_prefix(limit),
                &full.as_bytes()[..full.len().min(limit)],
                "{limit}"
            );
        }
        let text = Prompt::Text("héllo".into());
        assert_eq!(
            &*text.cache_text_prefix(2),
            &"héllo".as_bytes()[..2],
            "cuts bytes, not characters"
        );
    }

    #[test]
    fn token_estimate_prefers_the_known_count() {
        let mut request = Request::completion("m", "x".repeat(400));
        assert_eq!(request.estimated_tokens(), 100);
        request.prompt_tokens = Some(7);
        assert_eq!(request.estimated_tokens(), 7);
        assert_eq!(request.target_model(), "m");
        request.target_model = Some("adapter".into());
        assert_eq!(request.target_model(), "adapter");
    }
}
