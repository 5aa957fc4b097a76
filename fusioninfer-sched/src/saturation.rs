//! When an endpoint is too busy to take more work. A profile only picks among unsaturated
//! candidates; when every candidate is saturated the request is rejected with 429.

use std::time::{Duration, Instant};

use fusioninfer_api::epp_config::SaturationDetectorConfig;

use crate::duration::parse_go_duration;
use crate::endpoint::Endpoint;
use crate::error::ConfigError;

/// Thresholds of the upstream `utilization-detector`.
#[derive(Clone, Debug, PartialEq)]
pub struct SaturationDetector {
    /// Waiting requests at or above which an endpoint is saturated.
    pub queue_depth_threshold: u32,
    /// KV-cache usage at or above which an endpoint is saturated.
    pub kv_cache_util_threshold: f64,
    /// Metrics older than this (or missing) make an endpoint saturated.
    pub metrics_staleness_threshold: Duration,
}

impl Default for SaturationDetector {
    fn default() -> Self {
        SaturationDetector {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            metrics_staleness_threshold: Duration::from_millis(200),
        }
    }
}

impl SaturationDetector {
    /// The detector a config's `saturationDetector` describes (defaults for absent fields).
    pub fn from_config(config: Option<&SaturationDetectorConfig>) -> Result<Self, ConfigError> {
        let mut detector = SaturationDetector::default();
        let Some(config) = config else {
            return Ok(detector);
        };
        if let Some(depth) = config.queue_depth_threshold {
            detector.queue_depth_threshold = depth;
        }
        if let Some(kv) = config.kv_cache_util_threshold {
            if !(kv > 0.0 && kv <= 1.0) {
                return Err(ConfigError::Saturation {
                    field: "kvCacheUtilThreshold".into(),
                    message: format!("{kv} must be in (0, 1]"),
                });
            }
            detector.kv_cache_util_threshold = kv;
        }
        if let Some(staleness) = &config.metrics_staleness_threshold {
            detector.metrics_staleness_threshold =
                parse_go_duration(staleness).map_err(|message| ConfigError::Saturation {
                    field: "metricsStalenessThreshold".into(),
                    message,
                })?;
        }
        Ok(detector)
    }

    /// Whether `endpoint`'s metrics are missing or older than the staleness threshold.
    pub fn is_stale(&self, endpoint: &Endpoint, now: Instant) -> bool {
        endpoint
            .metrics_age(now)
            .is_none_or(|age| age > self.metrics_staleness_threshold)
    }

    /// Whether `endpoint` should get no more work at `now`.
    pub fn is_saturated(&self, endpoint: &Endpoint, now: Instant) -> bool {
        let metrics = &endpoint.metrics;
        self.is_stale(endpoint, now)
            || metrics.waiting_requests >= self.queue_depth_threshold
            || metrics.kv_cache_usage >= self.kv_cache_util_threshold
            || metrics.kv_cache_usage.is_nan()
    }

    /// Whether every endpoint is saturated (true for none): the pool-level admission check.
    pub fn all_saturated(&self, endpoints: &[Endpoint], now: Instant) -> bool {
        endpoints
            .iter()
            .all(|endpoint| self.is_saturated(endpoint, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::EndpointMetrics;

    fn endpoint(waiting: u32, kv: f64, refreshed: Option<Instant>) -> Endpoint {
        let mut endpoint = Endpoint::new("10.0.0.1:8000".parse().unwrap());
        endpoint.metrics = EndpointMetrics {
            waiting_requests: waiting,
            kv_cache_usage: kv,
            ..Default::default()
        };
        endpoint.metrics_refreshed_at = refreshed;
        endpoint
    }

    #[test]
    fn upstream_defaults() {
        let detector = SaturationDetector::default();
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(100);
        assert!(!detector.is_saturated(&endpoint(4, 0.79, Some(t0)), now));
        assert!(detector.is_saturated(&endpoint(5, 0.0, Some(t0)), now));
        assert!(detector.is_saturated(&endpoint(0, 0.8, Some(t0)), now));
        assert!(detector.is_saturated(&endpoint(0, 0.0, None), now));
        assert!(
            !detector.is_saturated(&endpoint(0, 0.0, Some(t0)), t0 + Duration::from_millis(200))
        );
        assert!(
            detector.is_saturated(&endpoint(0, 0.0, Some(t0)), t0 + Duration::from_millis(201))
        );
        assert!(detector.all_saturated(&[], now));
    }

    #[test]
    fn config_overrides_and_rejects_nonsense() {
        let config = SaturationDetectorConfig {
            queue_depth_threshold: Some(10),
            kv_cache_util_threshold: Some(0.9),
            metrics_staleness_threshold: Some("1s".into()),
        };
        let detector = SaturationDetector::from_config(Some(&config)).unwrap();
        assert_eq!(detector.queue_depth_threshold, 10);
        assert_eq!(detector.metrics_staleness_threshold, Duration::from_secs(1));
        let bad = SaturationDetectorConfig {
            kv_cache_util_threshold: Some(1.5),
            ..Default::default()
        };
        let error = SaturationDetector::from_config(Some(&bad)).unwrap_err();
        assert!(
            error.to_string().contains("kvCacheUtilThreshold"),
            "{error}"
        );
        let bad = SaturationDetectorConfig {
            metrics_staleness_threshold: Some("soon".into()),
            ..Default::default()
        };
        let error = SaturationDetector::from_config(Some(&bad)).unwrap_err();
        assert!(
            error.to_string().contains("metricsStalenessThreshold"),
            "{error}"
        );
    }
}
