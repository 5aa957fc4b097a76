//! Tokenization, chat templates and the token ids the simulator "generates".
//!
//! With a Hugging Face `tokenizer.json` the simulator tokenizes exactly like vLLM does for that
//! model (the `tokenizers` crate, pure Rust with `fancy-regex`): no special tokens are added
//! unless the tokenizer's post-processor adds them, and chat prompts are rendered with the
//! model's chat template (`chat_template.jinja` beside `tokenizer.json`, else the
//! `chat_template` of `tokenizer_config.json`, else [`DEFAULT_CHAT_TEMPLATE`]) in a Jinja
//! environment set up like transformers' (`trim_blocks`, `lstrip_blocks`), then tokenized
//! without adding special tokens.
//!
//! Without a tokenizer file the **fallback** is used. It is deterministic and documented here:
//! text is cut into pieces — a run of letters/digits together with one space before it, or any
//! other single character — pieces longer than 4 characters are cut into 4-character chunks,
//! and each piece's id is `256 + fnv1a64(piece) % (32000 - 256)`. English text comes out at
//! roughly 1.3 tokens per word, close enough to real BPE for cache and latency behaviour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use minijinja::Environment;
use serde_json::Value;

/// The template used when a model has none: the fixture model's template
/// (`<|role|>\ncontent<|end|>\n` per message, then `<|assistant|>\n`).
pub const DEFAULT_CHAT_TEMPLATE: &str = "{% for m in messages %}{{ '<|' + m['role'] + '|>' }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|end|>' }}\n{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}\n{% endif %}\n";

const FALLBACK_VOCAB: u64 = 32000;
const FALLBACK_SYLLABLES: [&str; 24] = [
    "ka", "mi", "ro", "su", "te", "na", "lo", "ve", "chi", "zu", "an", "er", "on", "qi", "po",
    "th", "ex", "ne", "ri", "ba", "do", "gu", "li", "sa",
];

/// Errors while loading a tokenizer or applying a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.json` could not be read or parsed.
    #[error("loading tokenizer {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// Encoding failed.
    #[error("tokenizing: {0}")]
    Encode(String),
}

enum Backend {
    Hf(Box<tokenizers::Tokenizer>),
    Fallback,
}

/// A tokenizer plus chat template plus the vocabulary used for generated text.
pub struct ModelTokenizer {
    backend: Backend,
    template: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Token ids the generator picks from, with their text.
    output_vocab: Vec<(u32, String)>,
    fallback_text: HashMap<u32, String>,
    description: String,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("description", &self.description)
            .finish()
    }
}

fn template_env(source: String) -> Result<Environment<'static>, TokenizerError> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TokenizerError::Template(e.to_string()))?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template_owned("chat", source)
        .map_err(|e| TokenizerError::Template(e.to_string()))?;
    Ok(env)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn fallback_id(piece: &str) -> u32 {
    (256 + fnv1a(piece.as_bytes()) % (FALLBACK_VOCAB - 256)) as u32
}

/// The fallback's pieces of `text` (see the module docs).
pub fn fallback_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let mut end = start + c.len_utf8();
        let word_start = c.is_alphanumeric()
            || (c == ' ' && chars.peek().is_some_and(|&(_, n)| n.is_alphanumeric()));
        if word_start {
            while let Some(&(i, n)) = chars.peek() {
                if !n.is_alphanumeric() {
                    break;
                }
                end = i + n.len_utf8();
                chars.next();
            }
        }
        let mut piece = &text[start..end];
        // Cut long pieces into chunks of 4 characters.
        while piece.chars().count() > 4 {
            let cut = piece.char_indices().nth(4).map_or(piece.len(), |(i, _)| i);
            pieces.push(&piece[..cut]);
            piece = &piece[cut..];
        }
        pieces.push(piece);
    }
    pieces
}

fn is_plain_text(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 12
        && s.chars().any(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
}

impl ModelTokenizer {
    /// The deterministic fallback tokenizer with [`DEFAULT_CHAT_TEMPLATE`].
    pub fn fallback() -> Self {
        let mut output_vocab = Vec::new();
        let mut fallback_text = HashMap::new();
        for s in FALLBACK_SYLLABLES {
            for text in [format!(" {s}"), s.to_string()] {
                let id = fallback_id(&text);
                fallback_text.insert(id, text.clone());
                output_vocab.push((id, text));
            }
        }
        ModelTokenizer {
            backend: Backend::Fallback,
            template: template_env(DEFAULT_CHAT_TEMPLATE.to_string())
                .expect("the built-in template compiles"),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            output_vocab,
            fallback_text,
            description: "fallback (deterministic, see fusioninfer_kvcache::tokenize)".into(),
        }
    }

    /// Loads `tokenizer.json`; the chat template is `chat_template` if given, else found beside
    /// the tokenizer as described in the module docs.
    pub fn from_file(path: &Path, chat_template: Option<&Path>) -> Result<Self, TokenizerError> {
        let load_err = |message: String| TokenizerError::Load {
            path: path.to_path_buf(),
            message,
        };
        let tk = tokenizers::Tokenizer::from_file(path).map_err(|e| load_err(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let config: Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        let token_field = |key: &str, default: &str| -> String {
            match &config[key] {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .to_string(),
                _ => default.to_string(),
            }
        };
        let template_source = match chat_template {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| load_err(format!("chat template {}: {e}", p.display())))?,
            ),
            None => std::fs::read_to_string(dir.join("chat_template.jinja"))
                .ok()
                .or_else(|| config["chat_template"].as_str().map(str::to_owned)),
        };
        let template =
            template_env(template_source.unwrap_or_else(|| DEFAULT_CHAT_TEMPLATE.to_string()))?;
        let special: std::collections::HashSet<u32> = tk
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let vocab = tk.get_vocab_size(true) as u32;
        let mut output_vocab = Vec::new();
        for id in 0..vocab {
            if special.contains(&id) {
                continue;
            }
            if let Ok(text) = tk.decode(&[id], false)
                && is_plain_text(&text)
            {
                output_vocab.push((id, text));
                if output_vocab.len() >= 4096 {
                    break;
                }
            }
        }
        if output_vocab.is_empty() {
            return Err(load_err("no plain-text tokens to generate from".into()));
        }
        Ok(ModelTokenizer {
            backend: Backend::Hf(Box::new(tk)),
            template,
            bos_token: token_field("bos_token", "<s>"),
            eos_token: token_field("eos_token", "</s>"),
            output_vocab,
            fallback_text: HashMap::new(),
            description: format!("{}", path.display()),
        })
    }

    /// Where the tokenizer came from.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Token ids of `text`. `add_special_tokens` lets the tokenizer's post-processor add BOS/EOS
    /// (vLLM passes true for completions and false for rendered chat prompts).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        match &self.backend {
            Backend::Hf(tk) => tk
                .encode(text, add_special_tokens)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| TokenizerError::Encode(e.to_string())),
            Backend::Fallback => Ok(fallback_pieces(text).into_iter().map(fallback_id).collect()),
        }
    }

    /// Token strings of ids (`/tokenize` with `return_token_strs`).
    pub fn token_strs(&self, ids: &[u32]) -> Vec<Option<String>> {
        ids.iter()
            .map(|&id| match &self.backend {
                Backend::Hf(tk) => tk.id_to_token(id),
                Backend::Fallback => self.fallback_text.get(&id).cloned(),
            })
            .collect()
    }

    /// Text of ids (`/detokenize`). The fallback knows only the ids it generates.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.backend {
            Backend::Hf(tk) => tk.decode(ids, true).unwrap_or_default(),
            Backend::Fallback => ids
                .iter()
                .filter_map(|id| self.fallback_text.get(id).map(String::as_str))
                .collect(),
        }
    }

    /// Renders chat `messages` with the chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        extra: Option<&serde_json::Map<String, Value>>,
    ) -> Result<String, TokenizerError> {
        let mut ctx = serde_json::Map::new();
        if let Some(extra) = extra {
            ctx.extend(extra.clone());
        }
        ctx.insert("messages".into(), Value::Array(messages.to_vec()));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        ctx.insert("bos_token".into(), Value::String(self.bos_token.clone()));
        ctx.insert("eos_token".into(), Value::String(self.eos_token.clone()));
        ctx.entry("tools").or_insert(Value::Null);
        let tmpl = self
            .template
            .get_template("chat")
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        tmpl.render(minijinja::Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| TokenizerError::Template(e.to_string()))
    }

    /// Token ids of a chat prompt as vLLM computes them: `messages` rendered with the chat
    /// template, then encoded (`add_special_tokens` is false unless the request says otherwise,
    /// since the template already placed the special tokens).
    pub fn chat_token_ids(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        chat_template_kwargs: Option<&serde_json::Map<String, Value>>,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let text =
            self.apply_chat_template(messages, add_generation_prompt, chat_template_kwargs)?;
        self.encode(&text, add_special_tokens)
    }

    /// Prompt token ids of an OpenAI request body (`chat` for `/v1/chat/completions`, else a
    /// `/v1/completions`-style `prompt`), with vLLM's defaults: chat `add_generation_prompt`
    /// true and `add_special_tokens` false, completion `add_special_tokens` true. A completion
    /// prompt given as token ids is taken as is. `Ok(None)` when the body has no single prompt
    /// to tokenize (a batch of prompts, a missing field).
    pub fn request_token_ids(
        &self,
        chat: bool,
        body: &serde_json::Map<String, Value>,
    ) -> Result<Option<Vec<u32>>, TokenizerError> {
        let flag =
            |key: &str, default: bool| body.get(key).and_then(Value::as_bool).unwrap_or(default);
        if chat {
            let Some(messages) = body.get("messages").and_then(Value::as_array) else {
                return Ok(None);
            };
            let kwargs = body.get("chat_template_kwargs").and_then(Value::as_object);
            return self
                .chat_token_ids(
                    messages,
                    flag("add_generation_prompt", true),
                    kwargs,
                    flag("add_special_tokens", false),
                )
                .map(Some);
        }
        let add_special = flag("add_special_tokens", true);
        let ids = |items: &[Value]| -> Option<Vec<u32>> {
            items
                .iter()
                .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect()
        };
        match body.get("prompt") {
            Some(Value::String(text)) => self.encode(text, add_special).map(Some),
            Some(Value::Array(items)) => match items.as_slice() {
                [Value::String(text)] => self.encode(text, add_special).map(Some),
                [Value::Array(tokens)] => Ok(ids(tokens)),
                tokens if tokens.iter().all(Value::is_number) => Ok(ids(tokens)),
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// The `n`-th candidate for generated tokens, chosen by `r` (any u64).
    pub fn output_token(&self, r: u64) -> (u32, &str) {
        let (id, text) = &self.output_vocab[(r % self.output_vocab.len() as u64) as usize];
        (*id, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_is_deterministic_and_wordish() {
        let t = ModelTokenizer::fallback();
        assert_eq!(
            fallback_pieces("Hello world, extraordinary!"),
            vec![
                "Hell", "o", " wor", "ld", ",", " ext", "raor", "dina", "ry", "!"
            ]
        );
        let a = t.encode("Hello world", true).unwrap();
        assert_eq!(a, t.encode("Hello world", false).unwrap());
        assert_eq!(a.len(), 4);
        assert!(a.iter().all(|&id| (256..32000).contains(&id)));
        let (id, text) = t.output_token(3);
        assert_eq!(t.decode(&[id]), text);
    }

    #[test]
    fn default_template_renders_like_the_fixture_model() {
        let t = ModelTokenizer::fallback();
        let msgs = vec![serde_json::json!({"role": "user", "content": "Hi"})];
        assert_eq!(
            t.apply_chat_template(&msgs, true, None).unwrap(),
            "<|user|>\nHi<|end|>\n<|assistant|>\n"
        );
        assert_eq!(
            t.apply_chat_template(&msgs, false, None).unwrap(),
            "<|user|>\nHi<|end|>\n"
        );
    }
}
