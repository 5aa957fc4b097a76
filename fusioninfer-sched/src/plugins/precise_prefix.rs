//! `precise-prefix-cache-scorer` (llm-d's name): prefix-cache affinity from what the engines
//! report they cache (their KV events, kept in a [`KvBlockIndex`]) instead of a guess.
//!
//! An endpoint's score is the longest run of the request's leading blocks it holds, divided by
//! the request's full blocks. The request's blocks are its token ids ([`Request::token_ids`],
//! which the router fills only when a scheduler has this plugin) cut into the block size the
//! endpoint's events use. Endpoints whose index state is not known — no events yet, or events
//! lost (see [`crate::kv_index`]) — and requests without token ids are scored by the
//! approximate `prefix-cache-scorer` logic instead, which keeps learning from routing decisions
//! for exactly that purpose. Its per-cycle [`PrefixMatch`](super::PrefixMatch) is stored under
//! this plugin's name, so a PD decider referencing this plugin works as with the approximate one.
//!
//! Parameters (llm-d's, where they apply): `indexerConfig.kvBlockIndexConfig.inMemoryConfig`
//! `{size, podCacheSize}` (keys kept, default 1,000,000; endpoints per key, default 10),
//! `kvEventsConfig` `{topicFilter, podDiscoveryConfig: {socketPort}}` (ZMQ subscription prefix,
//! default `""` = every topic; the publisher port on each pod, default 5557). Accepted and
//! unused: `tokenProcessorConfig.{blockSize, hashSeed}` (the block size comes from the events,
//! and keys do not depend on the engine's hash seed), `kvEventsConfig.{zmqEndpoint,
//! concurrency, discoverPods}`, the rest of `indexerConfig` (tokenizer settings are the
//! router's flags).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

use crate::decision::SchedulingResult;
use crate::endpoint::Endpoint;
use crate::error::PluginError;
use crate::framework::{CycleState, Plugin, PostDecision, Scorer};
use crate::kv_index::{
    DEFAULT_CAPACITY, DEFAULT_MAX_ENDPOINTS_PER_KEY, EndpointStatus, KvBlockIndex, KvEventFeed,
    KvIndexConfig, block_keys, first_parent,
};
use crate::plugins::at_least_one;
use crate::plugins::prefix::{PrefixCacheConfig, PrefixCacheScorer};
use crate::registry::Registry;
use crate::request::Request;

/// vLLM's default publisher port in llm-d's deployments.
pub const DEFAULT_KV_EVENTS_PORT: u16 = 5557;
/// Block size assumed for an endpoint that reports none (vLLM's GPU default).
const DEFAULT_BLOCK_SIZE: usize = 16;
/// Blocks of a request looked at, at most (bounds the work per request).
const MAX_REQUEST_BLOCKS: usize = 4096;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Parameters {
    #[serde(default, rename = "tokenProcessorConfig")]
    _token_processor_config: TokenProcessorConfig,
    #[serde(default)]
    indexer_config: IndexerConfig,
    #[serde(default)]
    kv_events_config: KvEventsConfig,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenProcessorConfig {
    #[serde(rename = "blockSize")]
    _block_size: Option<usize>,
    #[serde(rename = "hashSeed")]
    _hash_seed: Option<String>,
}

/// Tokenizer and prefix-store settings of llm-d's indexer pass through unread.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct IndexerConfig {
    #[serde(default)]
    kv_block_index_config: KvBlockIndexConfig,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KvBlockIndexConfig {
    #[serde(default)]
    in_memory_config: InMemoryConfig,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InMemoryConfig {
    size: Option<usize>,
    pod_cache_size: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KvEventsConfig {
    topic_filter: Option<String>,
    #[serde(default)]
    pod_discovery_config: PodDiscoveryConfig,
    #[serde(rename = "zmqEndpoint")]
    _zmq_endpoint: Option<String>,
    #[serde(rename = "concurrency")]
    _concurrency: Option<usize>,
    #[serde(rename = "discoverPods")]
    _discover_pods: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodDiscoveryConfig {
    socket_port: Option<u16>,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("precise-prefix-cache-scorer", |c| {
        let p: Parameters = c.parameters()?;
        let memory = &p.indexer_config.kv_block_index_config.in_memory_config;
        let config = KvIndexConfig {
            capacity: at_least_one(
                "indexerConfig.kvBlockIndexConfig.inMemoryConfig.size",
                memory.size.unwrap_or(DEFAULT_CAPACITY),
            )?,
            max_endpoints_per_key: at_least_one(
                "indexerConfig.kvBlockIndexConfig.inMemoryConfig.podCacheSize",
                memory
                    .pod_cache_size
                    .unwrap_or(DEFAULT_MAX_ENDPOINTS_PER_KEY),
            )?,
        };
        let port = p
            .kv_events_config
            .pod_discovery_config
            .socket_port
            .unwrap_or(DEFAULT_KV_EVENTS_PORT);
        if port == 0 {
            return Err(PluginError::bad_parameter(
                "kvEventsConfig.podDiscoveryConfig.socketPort",
                "must be a port number",
            ));
        }
        let feed = KvEventFeed {
            index: Arc::new(KvBlockIndex::new(config)),
            topic_filter: p.kv_events_config.topic_filter.unwrap_or_default(),
            port,
        };
        Ok(Arc::new(PrecisePrefixCacheScorer::new(c.name(), feed)))
    });
}

/// Scores endpoints by the leading request blocks their engines reported caching.
#[derive(Debug)]
pub struct PrecisePrefixCacheScorer {
    feed: KvEventFeed,
    fallback: PrefixCacheScorer,
}

impl PrecisePrefixCacheScorer {
    /// A scorer over `feed`'s index; its approximate fallback stores its per-cycle match
    /// under `instance_name`.
    pub fn new(instance_name: &str, feed: KvEventFeed) -> Self {
        PrecisePrefixCacheScorer {
            feed,
            fallback: PrefixCacheScorer::new(instance_name, PrefixCacheConfig::default()),
        }
    }

    /// The index and where its events come from.
    pub fn feed(&self) -> &KvEventFeed {
        &self.feed
    }
}

impl Plugin for PrecisePrefixCacheScorer {
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        Some(self)
    }
    fn as_post_decision(&self) -> Option<&dyn PostDecision> {
        Some(self)
    }
    fn retain_endpoints(&self, is_live: &dyn Fn(SocketAddr) -> bool) {
        for endpoint in self.feed.index.endpoints() {
            if !is_live(endpoint) {
                self.feed.index.remove_endpoint(endpoint);
            }
        }
        self.fallback.retain_endpoints(is_live);
    }
    fn kv_event_feed(&self) -> Option<&KvEventFeed> {
        Some(&self.feed)
    }
}

impl Scorer for PrecisePrefixCacheScorer {
    fn score(
        &self,
        request: &Request,
        cycle: &mut CycleState,
        candidates: &[&Endpoint],
    ) -> Vec<f64> {
        let mut scores = self.fallback.score(request, cycle, candidates);
        let Some(tokens) = request.token_ids.as_deref() else {
            return scores;
        };
        let index = &self.feed.index;
        let parent = first_parent(
            request.lora_adapter.as_deref(),
            request.cache_salt.as_deref(),
        );
        // Keys and matches per block size (one in practice).
        let mut by_size: HashMap<usize, (usize, HashMap<SocketAddr, usize>)> = HashMap::new();
        for (score, endpoint) in scores.iter_mut().zip(candidates) {
            if let Some(blocks) = endpoint.metrics.cache_num_blocks {
                index.set_cache_blocks(endpoint.address, u64::from(blocks));
            }
            if index.status(endpoint.address) != EndpointStatus::Known {
                continue;
            }
            let block_size = index
                .block_size(endpoint.address)
                .or(endpoint.metrics.cache_block_size.map(|b| b as usize))
                .unwrap_or(DEFAULT_BLOCK_SIZE);
            let (total, matched) = by_size.entry(block_size).or_insert_with(|| {
                let keys = block_keys(parent, tokens, block_size, MAX_REQUEST_BLOCKS);
                (keys.len(), index.longest_prefixes(&keys))
            });
            *score = if *total == 0 {
                0.0
            } else {
                matched.get(&endpoint.address).copied().unwrap_or(0) as f64 / *total as f64
            };
        }
        scores
    }
}

impl PostDecision for PrecisePrefixCacheScorer {
    fn post_decision(
        &self,
        request: &Request,
        cycle: &CycleState,
        endpoints: &[Endpoint],
        result: &SchedulingResult,
        headers: &mut BTreeMap<String, String>,
    ) {
        // The approximate index stays warm for endpoints that are (or become) unknown.
        self.fallback
            .post_decision(request, cycle, endpoints, result, headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{ProfileRunResult, Target};
    use fusioninfer_kvcache::events::{BlockStored, KvEvent};
    use std::time::Instant;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8000))
    }

    fn stored(hash: u64, tokens: Vec<u32>) -> KvEvent {
        let block_size = tokens.len() as u32;
        KvEvent::BlockStored(BlockStored::new(vec![hash], None, tokens, block_size))
    }

    fn scorer() -> PrecisePrefixCacheScorer {
        PrecisePrefixCacheScorer::new(
            "precise",
            KvEventFeed {
                index: Arc::new(KvBlockIndex::new(KvIndexConfig::default())),
                topic_filter: String::new(),
                port: DEFAULT_KV_EVENTS_PORT,
            },
        )
    }

    fn score(
        scorer: &PrecisePrefixCacheScorer,
        request: &Request,
        endpoints: &[Endpoint],
    ) -> Vec<f64> {
        let mut cycle = CycleState::new(0, Instant::now(), 0);
        let candidates: Vec<&Endpoint> = endpoints.iter().collect();
        scorer.score(request, &mut cycle, &candidates)
    }

    #[test]
    fn known_endpoints_score_by_reported_blocks_others_fall_back() {
        let scorer = scorer();
        let index = &scorer.feed().index;
        let endpoints = [
            Endpoint::new(addr(1)),
            Endpoint::new(addr(2)),
            Endpoint::new(addr(3)),
        ];
        let mut request = Request::completion(
            "m",
            "a prompt long enough for the approximate fallback's blocks ".repeat(4),
        );
        request.token_ids = Some(vec![1, 2, 3, 4, 5]);
        index.apply(addr(1), 0, &[stored(1, vec![1, 2])]);
        index.apply(addr(2), 0, &[stored(1, vec![1, 2])]);
        index.apply(addr(2), 1, &[KvEvent::AllBlocksCleared]);
        assert_eq!(score(&scorer, &request, &endpoints), [0.5, 0.0, 0.0]);

        // The approximate fallback learns from routing to the silent endpoint 3.
        let mut cycle = CycleState::new(0, Instant::now(), 0);
        let candidates: Vec<&Endpoint> = endpoints.iter().collect();
        scorer.score(&request, &mut cycle, &candidates);
        let result = SchedulingResult::single(
            "default",
            ProfileRunResult {
                targets: vec![Target::at(addr(3))],
            },
        );
        scorer.post_decision(&request, &cycle, &endpoints, &result, &mut BTreeMap::new());
        let scores = score(&scorer, &request, &endpoints);
        assert_eq!(scores[..2], [0.5, 0.0]);
        assert_eq!(scores[2], 1.0, "silent endpoints use the approximate index");

        // Without token ids everything is approximate.
        request.token_ids = None;
        assert_eq!(score(&scorer, &request, &endpoints), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn lora_and_salt_separate_keys() {
        let scorer = scorer();
        scorer
            .feed()
            .index
            .apply(addr(1), 0, &[stored(1, vec![1, 2])]);
        let endpoints = [Endpoint::new(addr(1))];
        let mut request = Request::completion("m", "x");
        request.token_ids = Some(vec![1, 2]);
        assert_eq!(score(&scorer, &request, &endpoints), [1.0]);
        request.cache_salt = Some("s".into());
        assert_eq!(score(&scorer, &request, &endpoints), [0.0]);
        request.cache_salt = None;
        request.lora_adapter = Some("a".into());
        assert_eq!(score(&scorer, &request, &endpoints), [0.0]);
    }

    #[test]
    fn parameters_follow_llm_d() {
        let config = fusioninfer_api::epp_config::EndpointPickerConfig::parse(
            r#"
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    tokenProcessorConfig: {blockSize: 64, hashSeed: "42"}
    indexerConfig:
      kvBlockIndexConfig: {inMemoryConfig: {size: 5, podCacheSize: 2}, enableMetrics: true}
      tokenizersPoolConfig: {workersCount: 4}
    kvEventsConfig: {topicFilter: "kv@", concurrency: 4, discoverPods: true, podDiscoveryConfig: {socketPort: 5556}}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: precise-prefix-cache-scorer}]
"#,
        )
        .unwrap();
        let scheduler = crate::Scheduler::builder(&config).build().unwrap();
        let feeds = scheduler.kv_event_feeds();
        assert_eq!(feeds.len(), 1);
        assert_eq!(feeds[0].port, 5556);
        assert_eq!(feeds[0].topic_filter, "kv@");
        assert_eq!(feeds[0].index.config().capacity, 5);
        assert_eq!(feeds[0].index.config().max_endpoints_per_key, 2);

        let typo = config_error("kvEventsConfig: {topicFiltr: x}");
        assert!(typo.contains("topicFiltr"), "{typo}");
        assert!(
            config_error("indexerConfig: {kvBlockIndexConfig: {inMemoryConfig: {size: 0}}}")
                .contains("size")
        );
    }

    fn config_error(parameters: &str) -> String {
        let yaml = format!(
            "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: precise-prefix-cache-scorer\n  parameters: {{{parameters}}}\nschedulingProfiles:\n- name: default\n  plugins: [{{pluginRef: precise-prefix-cache-scorer}}]\n"
        );
        let config = fusioninfer_api::epp_config::EndpointPickerConfig::parse(&yaml).unwrap();
        match crate::Scheduler::builder(&config).build() {
            Ok(_) => panic!("{parameters} should be rejected"),
            Err(error) => error.to_string(),
        }
    }
}
