//! Model-server `/metrics` (Prometheus text) → [`EndpointMetrics`], for vLLM and SGLang.
//!
//! | signal | vLLM | SGLang |
//! |---|---|---|
//! | waiting | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` |
//! | running | `vllm:num_requests_running` | `sglang:num_running_reqs` |
//! | KV usage | `vllm:kv_cache_usage_perc` (older: `vllm:gpu_cache_usage_perc`) | `sglang:token_usage` |
//! | cache geometry | `vllm:cache_config_info{block_size, num_gpu_blocks}` | `sglang:cache_config_info{page_size, num_pages}` |
//! | LoRA | `vllm:lora_requests_info{max_lora, running_lora_adapters, waiting_lora_adapters}`, newest series wins | – |
//!
//! A server with several engines (data parallel) reports one series per engine: counts are
//! summed and KV usage averaged. The text is parsed with `prometheus-exposition-format-rs`, the
//! crates.io parser that reads real vLLM output (names with `:`, families declared without
//! samples).

use std::collections::HashMap;

use prometheus_exposition_format_rs::parse_complete;
use prometheus_exposition_format_rs::types::{Metric, Sample};

use crate::endpoint::{EndpointMetrics, LoraMetrics};

/// The kind of model server a scrape came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelServer {
    /// vLLM.
    Vllm,
    /// SGLang.
    Sglang,
}

/// Metrics read from one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapedMetrics {
    /// Which server exposed them.
    pub server: ModelServer,
    /// The values the scheduler uses.
    pub metrics: EndpointMetrics,
}

/// Why a scrape could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// The text is not in the Prometheus exposition format.
    #[error("line {line}: not Prometheus text format: {text:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// Neither vLLM's nor SGLang's queue metrics are present.
    #[error(
        "no vLLM or SGLang metrics found (looked for vllm:num_requests_waiting and sglang:num_queue_reqs)"
    )]
    UnknownServer,
    /// A metric the scheduler needs is missing.
    #[error("metric {0} is missing")]
    Missing(&'static str),
    /// A value is not usable (negative, NaN, infinite).
    #[error("metric {metric}: value {value} is not a valid {expected}")]
    InvalidValue {
        /// The metric.
        metric: String,
        /// The value found.
        value: f64,
        /// What was expected.
        expected: &'static str,
    },
    /// A label value is not usable.
    #[error("metric {metric}: label {label}={value:?} is not a valid {expected}")]
    InvalidLabel {
        /// The metric.
        metric: String,
        /// The label.
        label: String,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

struct Names {
    server: ModelServer,
    waiting: &'static str,
    running: &'static str,
    kv_usage: &'static [&'static str],
    cache_config: &'static str,
    block_size_label: &'static str,
    num_blocks_label: &'static str,
}

const VLLM: Names = Names {
    server: ModelServer::Vllm,
    waiting: "vllm:num_requests_waiting",
    running: "vllm:num_requests_running",
    kv_usage: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    cache_config: "vllm:cache_config_info",
    block_size_label: "block_size",
    num_blocks_label: "num_gpu_blocks",
};

const SGLANG: Names = Names {
    server: ModelServer::Sglang,
    waiting: "sglang:num_queue_reqs",
    running: "sglang:num_running_reqs",
    kv_usage: &["sglang:token_usage"],
    cache_config: "sglang:cache_config_info",
    block_size_label: "page_size",
    num_blocks_label: "num_pages",
};

const VLLM_LORA: &str = "vllm:lora_requests_info";

/// Parses a `/metrics` page of vLLM or SGLang.
pub fn parse_metrics(text: &str) -> Result<ScrapedMetrics, MetricsError> {
    let families = parse_families(text)?;
    let by_name: HashMap<&str, &Metric> = families.iter().map(|m| (m.name.as_str(), m)).collect();
    let names = [VLLM, SGLANG]
        .into_iter()
        .find(|n| by_name.contains_key(n.waiting))
        .ok_or(MetricsError::UnknownServer)?;
    let samples = |name: &str| {
        by_name
            .get(name)
            .map(|m| m.samples.as_slice())
            .unwrap_or_default()
    };

    let count = |name: &'static str| -> Result<u32, MetricsError> {
        let series = samples(name);
        if series.is_empty() {
            return Err(MetricsError::Missing(name));
        }
        let mut total = 0u32;
        for sample in series {
            let value = sample.value;
            if !(value.is_finite() && value >= 0.0 && value <= f64::from(u32::MAX)) {
                return Err(MetricsError::InvalidValue {
                    metric: name.into(),
                    value,
                    expected: "count",
                });
            }
            total = total.saturating_add(value.round() as u32);
        }
        Ok(total)
    };

    let (kv_name, kv_series) = names
        .kv_usage
        .iter()
        .map(|&name| (name, samples(name)))
        .find(|(_, series)| !series.is_empty())
        .ok_or(MetricsError::Missing(names.kv_usage[0]))?;
    let mut kv_sum = 0.0;
    for sample in kv_series {
        if !(sample.value.is_finite() && sample.value >= 0.0) {
            return Err(MetricsError::InvalidValue {
                metric: kv_name.into(),
                value: sample.value,
                expected: "usage fraction",
            });
        }
        kv_sum += sample.value;
    }

    let cache_config = samples(names.cache_config).first();
    let cache_label = |label: &str| -> Result<Option<u32>, MetricsError> {
        let Some(value) = cache_config.and_then(|s| s.labels.get(label)) else {
            return Ok(None);
        };
        if value == "None" {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .map_err(|_| MetricsError::InvalidLabel {
                metric: names.cache_config.into(),
                label: label.into(),
                value: value.clone(),
                expected: "count",
            })
    };

    Ok(ScrapedMetrics {
        server: names.server,
        metrics: EndpointMetrics {
            waiting_requests: count(names.waiting)?,
            running_requests: count(names.running)?,
            kv_cache_usage: (kv_sum / kv_series.len() as f64).min(1.0),
            cache_block_size: cache_label(names.block_size_label)?,
            cache_num_blocks: cache_label(names.num_blocks_label)?,
            lora: lora(samples(VLLM_LORA))?,
        },
    })
}

/// The newest `vllm:lora_requests_info` series (its value is a timestamp).
fn lora(series: &[Sample]) -> Result<Option<LoraMetrics>, MetricsError> {
    let Some(newest) = series
        .iter()
        .filter(|s| s.value.is_finite())
        .max_by(|a, b| a.value.total_cmp(&b.value))
    else {
        return Ok(None);
    };
    let label = |name: &str| newest.labels.get(name).map(String::as_str).unwrap_or("");
    let adapters = |name: &str| {
        label(name)
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let max_adapters = label("max_lora")
        .parse()
        .map_err(|_| MetricsError::InvalidLabel {
            metric: VLLM_LORA.into(),
            label: "max_lora".into(),
            value: label("max_lora").into(),
            expected: "count",
        })?;
    Ok(Some(LoraMetrics {
        running_adapters: adapters("running_lora_adapters"),
        waiting_adapters: adapters("waiting_lora_adapters"),
        max_adapters,
    }))
}

/// Parses the exposition text. The parser wants `\n` line ends and a final newline; on error
/// the failing line is found by parsing line by line, which only happens for bad input.
fn parse_families(text: &str) -> Result<Vec<Metric>, MetricsError> {
    let mut normalized = if text.contains('\r') {
        text.replace("\r\n", "\n")
    } else {
        text.to_owned()
    };
    if !normalized.is_empty() && !normalized.ends_with('\n') {
        normalized.push('\n');
    }
    parse_complete(&normalized).map_err(|_| {
        let (line, text) = normalized
            .lines()
            .enumerate()
            .find(|(_, line)| parse_complete(&format!("{line}\n")).is_err())
            .map_or((0, String::new()), |(i, line)| (i + 1, line.to_owned()));
        MetricsError::Syntax { line, text }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sglang() {
        let text = "\
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name=\"m\"} 3
sglang:num_running_reqs{model_name=\"m\"} 7
sglang:token_usage{model_name=\"m\"} 0.25
sglang:cache_config_info{model_name=\"m\",page_size=\"64\",num_pages=\"1000\"} 1";
        let scraped = parse_metrics(text).unwrap();
        assert_eq!(scraped.server, ModelServer::Sglang);
        assert_eq!(
            scraped.metrics,
            EndpointMetrics {
                waiting_requests: 3,
                running_requests: 7,
                kv_cache_usage: 0.25,
                cache_block_size: Some(64),
                cache_num_blocks: Some(1000),
                lora: None
            }
        );
    }

    #[test]
    fn reads_old_vllm_lora_and_engines() {
        let text = "\
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 2.0\r
vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 3.0\r
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 1.0\r
vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 1.0\r
vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.5\r
vllm:gpu_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.7\r
vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"old\",waiting_lora_adapters=\"\"} 1.7e9\r
vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"a, b\",waiting_lora_adapters=\"c\"} 1.8e9\r
";
        let metrics = parse_metrics(text).unwrap().metrics;
        assert_eq!((metrics.waiting_requests, metrics.running_requests), (5, 2));
        assert!((metrics.kv_cache_usage - 0.6).abs() < 1e-9);
        assert_eq!(metrics.cache_block_size, None);
        assert_eq!(
            metrics.lora,
            Some(LoraMetrics {
                running_adapters: vec!["a".into(), "b".into()],
                waiting_adapters: vec!["c".into()],
                max_adapters: 2
            })
        );
    }

    #[test]
    fn rejects_bad_input_with_its_location() {
        let error =
            parse_metrics("vllm:num_requests_waiting 1\nthis is { not metrics\n").unwrap_err();
        assert_eq!(
            error,
            MetricsError::Syntax {
                line: 2,
                text: "this is { not metrics".into()
            }
        );
        assert_eq!(
            parse_metrics("other_metric 1\n").unwrap_err(),
            MetricsError::UnknownServer
        );
        assert_eq!(
            parse_metrics("vllm:num_requests_waiting 1\nvllm:num_requests_running 1\n")
                .unwrap_err(),
            MetricsError::Missing("vllm:kv_cache_usage_perc")
        );
        let negative = "vllm:num_requests_waiting -1\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0\n";
        assert!(matches!(
            parse_metrics(negative),
            Err(MetricsError::InvalidValue { .. })
        ));
        let nan = "vllm:num_requests_waiting 1\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc NaN\n";
        assert!(matches!(
            parse_metrics(nan),
            Err(MetricsError::InvalidValue { .. })
        ));
        let bad_label = "vllm:num_requests_waiting 1\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0\nvllm:cache_config_info{block_size=\"big\"} 1\n";
        assert!(matches!(
            parse_metrics(bad_label),
            Err(MetricsError::InvalidLabel { .. })
        ));
    }
}
