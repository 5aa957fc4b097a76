//! Load and LoRA scorers with GAIE semantics: `queue-scorer`, `running-requests-size-scorer`,
//! `kv-cache-utilization-scorer`, `lora-affinity-scorer`.

use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::framework::{CycleState, Plugin, Scorer};
use crate::plugins::NoParameters;
use crate::registry::Registry;
use crate::request::Request;

pub(crate) fn register(registry: &mut Registry) {
    registry.register("queue-scorer", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(QueueScorer))
    });
    registry.register("running-requests-size-scorer", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(RunningRequestsScorer))
    });
    registry.register("kv-cache-utilization-scorer", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(KvCacheUtilizationScorer))
    });
    registry.register("lora-affinity-scorer", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(LoraAffinityScorer))
    });
}

/// `(max − x) / (max − min)` over the candidates: the least loaded gets 1, the most loaded 0,
/// and all get 1 when they are equal.
pub(crate) fn min_max_inverse(values: impl Iterator<Item = u32> + Clone) -> Vec<f64> {
    let min = values.clone().min().unwrap_or(0);
    let max = values.clone().max().unwrap_or(0);
    values
        .map(|v| {
            if max == min {
                1.0
            } else {
                f64::from(max - v) / f64::from(max - min)
            }
        })
        .collect()
}

/// Fewer waiting requests score higher (min-max over the candidates).
#[derive(Debug)]
pub struct QueueScorer;

impl Plugin for QueueScorer {
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        Some(self)
    }
}

impl Scorer for QueueScorer {
    fn score(&self, _: &Request, _: &mut CycleState, candidates: &[&Endpoint]) -> Vec<f64> {
        min_max_inverse(candidates.iter().map(|e| e.metrics.waiting_requests))
    }
}

/// Fewer running requests score higher (min-max over the candidates).
#[derive(Debug)]
pub struct RunningRequestsScorer;

impl Plugin for RunningRequestsScorer {
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        Some(self)
    }
}

impl Scorer for RunningRequestsScorer {
    fn score(&self, _: &Request, _: &mut CycleState, candidates: &[&Endpoint]) -> Vec<f64> {
        min_max_inverse(candidates.iter().map(|e| e.metrics.running_requests))
    }
}

/// Free KV cache: `1 − usage`.
#[derive(Debug)]
pub struct KvCacheUtilizationScorer;

impl Plugin for KvCacheUtilizationScorer {
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        Some(self)
    }
}

impl Scorer for KvCacheUtilizationScorer {
    fn score(&self, _: &Request, _: &mut CycleState, candidates: &[&Endpoint]) -> Vec<f64> {
        candidates
            .iter()
            .map(|e| 1.0 - e.metrics.kv_cache_usage.clamp(0.0, 1.0))
            .collect()
    }
}

/// For a LoRA request: 1.0 where the adapter runs, 0.8 where one more adapter fits, 0.6 where
/// it waits to load, else 0. Requests for the base model score 1 everywhere (no preference).
#[derive(Debug)]
pub struct LoraAffinityScorer;

impl Plugin for LoraAffinityScorer {
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        Some(self)
    }
}

impl Scorer for LoraAffinityScorer {
    fn score(&self, request: &Request, _: &mut CycleState, candidates: &[&Endpoint]) -> Vec<f64> {
        let Some(adapter) = request.lora_adapter.as_deref() else {
            return vec![1.0; candidates.len()];
        };
        candidates
            .iter()
            .map(|endpoint| match &endpoint.metrics.lora {
                Some(lora) if lora.is_running(adapter) => 1.0,
                Some(lora) if lora.has_room() => 0.8,
                Some(lora) if lora.is_waiting(adapter) => 0.6,
                _ => 0.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{EndpointMetrics, LoraMetrics};
    use std::time::Instant;

    fn endpoint(metrics: EndpointMetrics) -> Endpoint {
        Endpoint::new("10.0.0.1:8000".parse().unwrap()).with_metrics(metrics, Instant::now())
    }

    fn score(scorer: &dyn Scorer, request: &Request, endpoints: &[Endpoint]) -> Vec<f64> {
        let candidates: Vec<&Endpoint> = endpoints.iter().collect();
        scorer.score(
            request,
            &mut CycleState::new(0, Instant::now(), 0),
            &candidates,
        )
    }

    #[test]
    fn queue_and_running_are_min_max() {
        let eps: Vec<_> = [0, 5, 10]
            .into_iter()
            .map(|n| {
                endpoint(EndpointMetrics {
                    waiting_requests: n,
                    running_requests: 2 * n,
                    ..Default::default()
                })
            })
            .collect();
        let request = Request::default();
        assert_eq!(score(&QueueScorer, &request, &eps), [1.0, 0.5, 0.0]);
        assert_eq!(
            score(&RunningRequestsScorer, &request, &eps),
            [1.0, 0.5, 0.0]
        );
        assert_eq!(score(&QueueScorer, &request, &eps[..1]), [1.0]);
    }

    #[test]
    fn kv_is_free_fraction() {
        let eps: Vec<_> = [0.0, 0.25, 1.5]
            .into_iter()
            .map(|kv| {
                endpoint(EndpointMetrics {
                    kv_cache_usage: kv,
                    ..Default::default()
                })
            })
            .collect();
        assert_eq!(
            score(&KvCacheUtilizationScorer, &Request::default(), &eps),
            [1.0, 0.75, 0.0]
        );
    }

    #[test]
    fn lora_affinity_levels() {
        let lora = |running: &[&str], waiting: &[&str], max| {
            endpoint(EndpointMetrics {
                lora: Some(LoraMetrics {
                    running_adapters: running.iter().map(|s| s.to_string()).collect(),
                    waiting_adapters: waiting.iter().map(|s| s.to_string()).collect(),
                    max_adapters: max,
                }),
                ..Default::default()
            })
        };
        let eps = vec![
            lora(&["a"], &[], 1),
            lora(&["b"], &[], 4),
            lora(&["b"], &["a"], 2),
            lora(&["b"], &[], 1),
            endpoint(EndpointMetrics::default()),
        ];
        let mut request = Request {
            lora_adapter: Some("a".into()),
            ..Request::default()
        };
        assert_eq!(
            score(&LoraAffinityScorer, &request, &eps),
            [1.0, 0.8, 0.6, 0.0, 0.0]
        );
        request.lora_adapter = None;
        assert_eq!(score(&LoraAffinityScorer, &request, &eps), [1.0; 5]);
    }
}
