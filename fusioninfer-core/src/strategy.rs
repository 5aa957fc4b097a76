//! The EndpointPickerConfig behind each built-in routing strategy. One place for them: the
//! planner writes them into the endpoint picker's ConfigMap and the EPP's `--strategy` shortcut
//! loads the same text.

use fusioninfer_api::RoutingStrategy;

/// The EndpointPickerConfig YAML that `strategy` stands for.
pub fn endpoint_picker_config(strategy: RoutingStrategy) -> &'static str {
    match strategy {
        RoutingStrategy::PrefixCache => include_str!("strategies/prefix-cache.yaml"),
        RoutingStrategy::KvCacheUtilization => include_str!("strategies/kv-cache-utilization.yaml"),
        RoutingStrategy::QueueSize => include_str!("strategies/queue-size.yaml"),
        RoutingStrategy::LoraAffinity => include_str!("strategies/lora-affinity.yaml"),
        RoutingStrategy::RoundRobin => include_str!("strategies/round-robin.yaml"),
        RoutingStrategy::PdDisaggregation => include_str!("strategies/pd-disaggregation.yaml"),
        RoutingStrategy::KvAware => include_str!("strategies/kv-aware.yaml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusioninfer_api::epp_config::EndpointPickerConfig;

    #[test]
    fn every_strategy_config_parses() {
        for strategy in RoutingStrategy::ALL {
            let config = EndpointPickerConfig::parse(endpoint_picker_config(strategy))
                .unwrap_or_else(|e| panic!("{}: {e:?}", strategy.as_str()));
            assert!(!config.scheduling_profiles.is_empty());
        }
    }
}
