//! Simulator configuration: everything one simulated server needs except its tokenizer.

use serde::{Deserialize, Serialize};

use crate::kv_events::EndpointMode;

/// The latency model. All times are *model* time; [`SimConfig::time_scale`] maps them to wall
/// time. With `r` requests running (including this one) the slowdown factor is
/// `1 + running_slowdown * (r - 1)`, and
///
/// * TTFT (local prefill) = `(ttft_overhead_ms + uncached_prompt_tokens * prefill_us_per_token / 1000) * slowdown`
/// * TTFT (decode of a remote prefill) = `ttft_overhead_ms * slowdown + kv_transfer_overhead_ms
///   + transferred_tokens * kv_transfer_us_per_token / 1000`
/// * every further output token = `itl_ms * slowdown` (with `r` read when the token is made)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyConfig {
    /// Fixed part of the time to first token, in ms.
    pub ttft_overhead_ms: f64,
    /// Prefill time per uncached prompt token, in µs.
    pub prefill_us_per_token: f64,
    /// Inter-token latency, in ms.
    pub itl_ms: f64,
    /// Relative slowdown per additional running request.
    pub running_slowdown: f64,
    /// Fixed cost of pulling KV from a remote prefiller, in ms.
    pub kv_transfer_overhead_ms: f64,
    /// Cost per transferred token, in µs.
    pub kv_transfer_us_per_token: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            ttft_overhead_ms: 15.0,
            prefill_us_per_token: 100.0,
            itl_ms: 10.0,
            running_slowdown: 0.05,
            kv_transfer_overhead_ms: 5.0,
            kv_transfer_us_per_token: 20.0,
        }
    }
}

impl LatencyConfig {
    /// The slowdown factor with `running` requests in the batch (this one included).
    pub fn slowdown(&self, running: usize) -> f64 {
        1.0 + self.running_slowdown.max(0.0) * running.saturating_sub(1) as f64
    }

    /// Model seconds from admission to the first token for a local prefill.
    pub fn prefill_seconds(&self, uncached_tokens: usize, running: usize) -> f64 {
        (self.ttft_overhead_ms + uncached_tokens as f64 * self.prefill_us_per_token / 1000.0)
            * self.slowdown(running)
            / 1000.0
    }

    /// Model seconds from admission to the first token when the KV comes from a remote
    /// prefiller (`kv_transfer_params.do_remote_prefill`).
    pub fn remote_prefill_seconds(&self, transferred_tokens: usize, running: usize) -> f64 {
        (self.ttft_overhead_ms * self.slowdown(running)
            + self.kv_transfer_overhead_ms
            + transferred_tokens as f64 * self.kv_transfer_us_per_token / 1000.0)
            / 1000.0
    }

    /// Model seconds between two output tokens.
    pub fn itl_seconds(&self, running: usize) -> f64 {
        self.itl_ms * self.slowdown(running) / 1000.0
    }
}

/// What `/metrics` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFault {
    /// Answer normally.
    #[default]
    Ok,
    /// Answer 503 at once.
    Unavailable,
    /// Never answer (until the server shuts down, or 300 s pass).
    Hang,
}

/// Fault injection, changeable at run time through `POST /admin/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Fraction (0..=1) of inference requests answered with `fail_status`.
    pub fail_rate: f64,
    /// HTTP status of injected failures.
    pub fail_status: u16,
    /// Wall-clock delay (not scaled) added before each inference request is queued.
    pub extra_delay_ms: u64,
    /// `/metrics` behaviour.
    pub metrics: MetricsFault,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            fail_rate: 0.0,
            fail_status: 500,
            extra_delay_ms: 0,
            metrics: MetricsFault::Ok,
        }
    }
}

/// The ZMQ KV-event publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvEventsConfig {
    /// ZMQ endpoint, e.g. `tcp://127.0.0.1:5557` (port 0 picks a free port when binding).
    pub endpoint: String,
    /// Topic frame (vLLM's default is empty). `{host}`, `{port}` and `{model}` are replaced.
    pub topic: String,
    /// Bind, connect, or vLLM's rule.
    pub mode: EndpointMode,
}

/// A LoRA adapter to load at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// Served name of the adapter.
    pub name: String,
    /// Path reported by `/v1/models` (nothing is read).
    pub path: String,
}

/// One simulated server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 = any free port).
    pub port: u16,
    /// Served model name.
    pub model: String,
    /// `root` reported by `/v1/models` (defaults to the model name).
    pub model_root: Option<String>,
    /// Value of the `x-inference-pod` response header (`{host}`/`{port}` are replaced).
    pub instance: String,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV-cache capacity in blocks.
    pub num_blocks: usize,
    /// Most requests running at once.
    pub max_num_seqs: usize,
    /// Most requests waiting; a request that would exceed it gets 429.
    pub max_waiting: usize,
    /// Longest prompt + output.
    pub max_model_len: usize,
    /// Output length cap when a request sets no `max_tokens` (the length is then drawn from
    /// `1..=cap` and the finish reason is `stop`).
    pub default_max_tokens: usize,
    /// The latency model.
    pub latency: LatencyConfig,
    /// Wall seconds per model second (0.01 runs 100× faster). Metrics report model time.
    pub time_scale: f64,
    /// Seed for generated tokens, ids and injected failures.
    pub seed: u64,
    /// Whether LoRA is enabled (`vllm:lora_requests_info` is exported only then).
    pub enable_lora: bool,
    /// Most distinct adapters in the running batch (vLLM `--max-loras`).
    pub max_loras: usize,
    /// Adapters loaded at start.
    pub loras: Vec<LoraSpec>,
    /// KV-event publishing, if enabled.
    pub kv_events: Option<KvEventsConfig>,
    /// Fault injection at start.
    pub faults: FaultConfig,
    /// `remote_host` reported to decoders in `kv_transfer_params` (defaults to `host`).
    pub kv_side_channel_host: Option<String>,
    /// `remote_port` reported to decoders in `kv_transfer_params`.
    pub kv_side_channel_port: u16,
    /// Version reported by `/version` and in `system_fingerprint`.
    pub version: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            host: "127.0.0.1".into(),
            port: 8000,
            model: "sim-model".into(),
            model_root: None,
            instance: "{host}:{port}".into(),
            block_size: 16,
            num_blocks: 4096,
            max_num_seqs: 256,
            max_waiting: 1024,
            max_model_len: 4096,
            default_max_tokens: 128,
            latency: LatencyConfig::default(),
            time_scale: 1.0,
            seed: 0,
            enable_lora: false,
            max_loras: 1,
            loras: Vec::new(),
            kv_events: None,
            faults: FaultConfig::default(),
            kv_side_channel_host: None,
            kv_side_channel_port: 5600,
            version: "0.32.0".into(),
        }
    }
}

/// An invalid configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid simulator configuration: {0}")]
pub struct ConfigError(pub String);

impl SimConfig {
    /// Checks the values that would make the engine misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.into()));
        if self.block_size == 0 {
            return err("block size must be positive");
        }
        if self.num_blocks == 0 || self.num_blocks > u32::MAX as usize / 2 {
            return err("num blocks must be in 1..2^31");
        }
        if self.max_num_seqs == 0 {
            return err("max-num-seqs must be positive");
        }
        if self.max_model_len < 2 {
            return err("max-model-len must be at least 2");
        }
        if !(self.time_scale.is_finite() && self.time_scale >= 0.0) {
            return err("time scale must be a finite number >= 0");
        }
        if !(0.0..=1.0).contains(&self.faults.fail_rate) {
            return err("fail rate must be within 0..=1");
        }
        if self.default_max_tokens == 0 {
            return err("default max tokens must be positive");
        }
        Ok(())
    }

    /// Replaces `{host}`, `{port}` and `{model}` in a template.
    pub fn expand(&self, template: &str, port: u16) -> String {
        template
            .replace("{host}", &self.host)
            .replace("{port}", &port.to_string())
            .replace("{model}", &self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_formulas() {
        let l = LatencyConfig {
            ttft_overhead_ms: 10.0,
            prefill_us_per_token: 1000.0,
            itl_ms: 5.0,
            running_slowdown: 0.5,
            kv_transfer_overhead_ms: 2.0,
            kv_transfer_us_per_token: 100.0,
        };
        assert!((l.prefill_seconds(90, 1) - 0.1).abs() < 1e-12);
        assert!((l.prefill_seconds(90, 3) - 0.2).abs() < 1e-12);
        assert!((l.itl_seconds(2) - 0.0075).abs() < 1e-12);
        assert!((l.remote_prefill_seconds(100, 1) - 0.022).abs() < 1e-12);
    }
}
