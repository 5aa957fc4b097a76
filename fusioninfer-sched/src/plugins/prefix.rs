//! `prefix-cache-scorer`: approximate prefix-cache affinity (GAIE semantics).
//!
//! The prompt text is cut into fixed-size blocks of bytes; each block's hash chains the
//! previous one (xxHash64), the first seeded with the target model and `cache_salt`, so equal
//! hashes mean equal prefixes. After each decision the hashes are recorded for the chosen
//! endpoints (decode and prefill alike) in a per-endpoint LRU that mimics the server's cache.
//! An endpoint's score is the share of the request's blocks it is believed to hold.
//!
//! Parameters: `blockSizeTokens` (block size in tokens of [`AVERAGE_CHARS_PER_TOKEN`]
//! bytes), legacy `blockSize` (in bytes; `blockSizeTokens` wins if both are set), `autoTune`
//! (take the block size and cache capacity from the endpoints' reported cache config; on by
//! default only when no block size is given), `maxPrefixBlocksToMatch` (default 256),
//! `lruCapacityPerServer` (blocks per endpoint, default 31250).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use lru::LruCache;
use serde::Deserialize;
use xxhash_rust::xxh64::{Xxh64, xxh64};

use crate::decision::SchedulingResult;
use crate::endpoint::Endpoint;
use crate::framework::{CycleState, Plugin, PostDecision, Scorer};
use crate::plugins::at_least_one;
use crate::registry::Registry;
use crate::request::{AVERAGE_CHARS_PER_TOKEN, Request};

/// vLLM's default KV block size, used when nothing better is known.
const DEFAULT_BLOCK_SIZE_TOKENS: usize = 16;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Parameters {
    block_size: Option<usize>,
    block_size_tokens: Option<usize>,
    auto_tune: Option<bool>,
    #[serde(default = "default_max_blocks")]
    max_prefix_blocks_to_match: usize,
    #[serde(default = "default_lru_capacity")]
    lru_capacity_per_server: usize,
}

fn default_max_blocks() -> usize {
    256
}

fn default_lru_capacity() -> usize {
    31250
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("prefix-cache-scorer", |c| {
        let p: Parameters = c.parameters()?;
        let fixed_block_bytes = match (p.block_size_tokens, p.block_size) {
            (Some(tokens), _) => {
                Some(at_least_one("blockSizeTokens", tokens)? * AVERAGE_CHARS_PER_TOKEN)
            }
            (None, Some(bytes)) => Some(at_least_one("blockSize", bytes)?),
            (None, None) => None,
        };
        let auto_tune = p.auto_tune.unwrap_or(fixed_block_bytes.is_none());
        let config = PrefixCacheConfig {
            block_bytes: fixed_block_bytes
                .unwrap_or(DEFAULT_BLOCK_SIZE_TOKENS * AVERAGE_CHARS_PER_TOKEN),
            auto_tune,
            max_blocks: at_least_one("maxPrefixBlocksToMatch", p.max_prefix_blocks_to_match)?,
            lru_capacity: at_least_one("lruCapacityPerServer", p.lru_capacity_per_server)?,
        };
        Ok(Arc::new(PrefixCacheScorer::new(c.name(), config)))
    });
}

/// Settings of a [`PrefixCacheScorer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixCacheConfig {
    /// Block size in bytes of prompt text (used as is unless auto-tuned).
    pub block_bytes: usize,
    /// Take block size and LRU capacity from the endpoints' reported cache config.
    pub auto_tune: bool,
    /// At most this many leading blocks are hashed.
    pub max_blocks: usize,
    /// Blocks remembered per endpoint (unless auto-tuned).
    pub lru_capacity: usize,
}

impl Default for PrefixCacheConfig {
    /// The settings of a `prefix-cache-scorer` configured without parameters.
    fn default() -> Self {
        PrefixCacheConfig {
            block_bytes: DEFAULT_BLOCK_SIZE_TOKENS * AVERAGE_CHARS_PER_TOKEN,
            auto_tune: true,
            max_blocks: default_max_blocks(),
            lru_capacity: default_lru_capacity(),
        }
    }
}

/// What the scorer computed for the request of a cycle; stored in the [`CycleState`] under
/// the plugin's instance name so that other plugins (the PD handler) can read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixMatch {
    /// Block size in bytes used for this request.
    pub block_bytes: usize,
    /// Chained block hashes of the prompt.
    pub hashes: Vec<u64>,
    matched_blocks: EndpointMap<usize>,
}

impl PrefixMatch {
    /// Leading blocks `endpoint` is believed to hold.
    pub fn matched_blocks(&self, endpoint: SocketAddr) -> usize {
        self.matched_blocks.get(&endpoint).copied().unwrap_or(0)
    }

    /// Prompt tokens believed cached on `endpoint`.
    pub fn cached_tokens(&self, endpoint: SocketAddr) -> u32 {
        let bytes = self.matched_blocks(endpoint) * self.block_bytes;
        u32::try_from(bytes / AVERAGE_CHARS_PER_TOKEN).unwrap_or(u32::MAX)
    }
}

/// Scores endpoints by the share of the prompt's leading blocks they are believed to cache.
pub struct PrefixCacheScorer {
    name: String,
    config: PrefixCacheConfig,
    index: RwLock<PrefixIndex>,
}

impl std::fmt::Debug for PrefixCacheScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCacheScorer")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl PrefixCacheScorer {
    /// A scorer whose per-cycle [`PrefixMatch`] is stored under `instance_name`.
    pub fn new(instance_name: &str, config: PrefixCacheConfig) -> Self {
        PrefixCacheScorer {
            name: instance_name.to_owned(),
            config,
            index: RwLock::new(PrefixIndex::default()),
        }
    }

    /// Chained block hashes of `text` for `model` and `salt`; a trailing partial block is
    /// not hashed.
    pub fn block_hashes(
        model: &str,
        salt: Option<&str>,
        text: &[u8],
        block_bytes: usize,
        max_blocks: usize,
    ) -> Vec<u64> {
        let mut hasher = Xxh64::new(0);
        hasher.update(model.as_bytes());
        if let Some(salt) = salt {
            hasher.update(salt.as_bytes());
        }
        let mut previous = hasher.digest();
        let block_bytes = block_bytes.max(1);
        let blocks = text.chunks_exact(block_bytes).take(max_blocks);
        let mut hashes = Vec::with_capacity(blocks.len());
        // One-shot hashing of block ‖ previous hash is cheaper than streaming.
        let mut input = Vec::with_capacity(block_bytes + 8);
        for block in blocks {
            input.clear();
            input.extend_from_slice(block);
            input.extend_from_slice(&previous.to_le_bytes());
            previous = xxh64(&input, 0);
            hashes.push(previous);
        }
        hashes
    }

    /// Computes the request's [`PrefixMatch`] unless this cycle already has it.
    fn ensure_prefix_match(
        &self,
        request: &Request,
        cycle: &mut CycleState,
        candidates: &[&Endpoint],
    ) {
        if cycle.get::<PrefixMatch>(&self.name).is_some() {
            return;
        }
        let block_bytes = self.block_bytes(candidates.iter().copied());
        let hashes = self.request_hashes(request, block_bytes);
        let matched_blocks = self.read_index().matched_blocks(&hashes);
        cycle.insert(
            &self.name,
            PrefixMatch {
                block_bytes,
                hashes,
                matched_blocks,
            },
        );
    }

    fn request_hashes(&self, request: &Request, block_bytes: usize) -> Vec<u64> {
        let text = request
            .prompt
            .cache_text_prefix(block_bytes.saturating_mul(self.config.max_blocks));
        Self::block_hashes(
            request.target_model(),
            request.cache_salt.as_deref(),
            &text,
            block_bytes,
            self.config.max_blocks,
        )
    }

    fn block_bytes<'e>(&self, mut endpoints: impl Iterator<Item = &'e Endpoint>) -> usize {
        if !self.config.auto_tune {
            return self.config.block_bytes;
        }
        endpoints
            .find_map(|e| e.metrics.cache_block_size)
            .map_or(self.config.block_bytes, |tokens| {
                tokens as usize * AVERAGE_CHARS_PER_TOKEN
            })
    }

    /// Blocks of `block_bytes` that `endpoint`'s cache holds: its reported capacity when
    /// auto-tuning, else `lruCapacityPerServer`.
    fn capacity(&self, endpoint: Option<&Endpoint>, block_bytes: usize) -> usize {
        let reported =
            endpoint.and_then(|e| Some((e.metrics.cache_num_blocks?, e.metrics.cache_block_size?)));
        match reported {
            Some((blocks, tokens)) if self.config.auto_tune => {
                (blocks as usize * tokens as usize * AVERAGE_CHARS_PER_TOKEN / block_bytes.max(1))
                    .max(1)
            }
            _ => self.config.lru_capacity,
        }
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, PrefixIndex> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, PrefixIndex> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Plugin for PrefixCacheScorer {
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        Some(self)
    }
    fn as_post_decision(&self) -> Option<&dyn PostDecision> {
        Some(self)
    }
    fn retain_endpoints(&self, is_live: &dyn Fn(SocketAddr) -> bool) {
        let mut index = self.write_index();
        let gone: Vec<SocketAddr> = index
            .per_endpoint
            .keys()
            .copied()
            .filter(|&e| !is_live(e))
            .collect();
        for endpoint in gone {
            index.remove_endpoint(endpoint);
        }
    }
}

impl Scorer for PrefixCacheScorer {
    fn score(
        &self,
        request: &Request,
        cycle: &mut CycleState,
        candidates: &[&Endpoint],
    ) -> Vec<f64> {
        self.ensure_prefix_match(request, cycle, candidates);
        let Some(matched) = cycle.get::<PrefixMatch>(&self.name) else {
            return vec![0.0; candidates.len()];
        };
        let total = matched.hashes.len();
        candidates
            .iter()
            .map(|endpoint| {
                let blocks = matched
                    .matched_blocks
                    .get(&endpoint.address)
                    .copied()
                    .unwrap_or(0);
                if total == 0 {
                    0.0
                } else {
                    blocks as f64 / total as f64
                }
            })
            .collect()
    }
}

impl PostDecision for PrefixCacheScorer {
    fn post_decision(
        &self,
        request: &Request,
        cycle: &CycleState,
        endpoints: &[Endpoint],
        result: &SchedulingResult,
        _: &mut BTreeMap<String, String>,
    ) {
        let computed;
        let matched = match cycle.get::<PrefixMatch>(&self.name) {
            Some(matched) => matched,
            // A profile without this scorer picked the endpoint: hash now so the index still learns.
            None => {
                let block_bytes = self.block_bytes(endpoints.iter());
                computed = PrefixMatch {
                    hashes: self.request_hashes(request, block_bytes),
                    block_bytes,
                    matched_blocks: EndpointMap::default(),
                };
                &computed
            }
        };
        if matched.hashes.is_empty() {
            return;
        }
        let mut index = self.write_index();
        for target in result.profiles.values().filter_map(|r| r.targets.first()) {
            let endpoint = endpoints.iter().find(|e| e.address == target.endpoint);
            index.add(
                target.endpoint,
                &matched.hashes,
                self.capacity(endpoint, matched.block_bytes),
            );
        }
    }
}

/// Block hashes are xxHash64 values already: hashing them again only costs time.
#[derive(Clone, Copy, Default)]
struct BlockHashHasher(u64);

impl Hasher for BlockHashHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type BuildBlockHasher = BuildHasherDefault<BlockHashHasher>;

/// A multiply-rotate hasher (FxHash style) for endpoint addresses: the keys are the pool's own
/// addresses, so SipHash's flooding protection buys nothing, and the prefix match hashes an
/// address per matched block.
#[derive(Clone, Copy, Default)]
struct EndpointHasher(u64);

impl Hasher for EndpointHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type EndpointMap<V> = HashMap<SocketAddr, V, BuildHasherDefault<EndpointHasher>>;

/// Which endpoints are believed to hold which blocks.
#[derive(Default)]
struct PrefixIndex {
    holders: HashMap<u64, Vec<SocketAddr>, BuildBlockHasher>,
    per_endpoint: EndpointMap<LruCache<u64, (), BuildBlockHasher>>,
}

impl PrefixIndex {
    /// Leading blocks held per endpoint; stops at the first block nobody holds.
    fn matched_blocks(&self, hashes: &[u64]) -> EndpointMap<usize> {
        let mut matched = EndpointMap::default();
        for hash in hashes {
            let Some(holders) = self.holders.get(hash) else {
                break;
            };
            for &endpoint in holders {
                *matched.entry(endpoint).or_insert(0) += 1;
            }
        }
        matched
    }

    /// Records that `endpoint` now holds `hashes`, evicting its least recently used blocks
    /// beyond `capacity`. The LRU grows as blocks arrive rather than reserving `capacity`
    /// entries up front: a bounded `LruCache` allocates its whole table on first insert, which
    /// cost ~1 MB per endpoint at the default 31,250 blocks whatever the traffic.
    fn add(&mut self, endpoint: SocketAddr, hashes: &[u64], capacity: usize) {
        let capacity = capacity.max(1);
        let PrefixIndex {
            holders,
            per_endpoint,
        } = self;
        let cache = per_endpoint
            .entry(endpoint)
            .or_insert_with(|| LruCache::unbounded_with_hasher(BuildBlockHasher::default()));
        let mut added = Vec::new();
        for &hash in hashes {
            if cache.get(&hash).is_some() {
                continue; // refreshed
            }
            cache.push(hash, ());
            added.push(hash);
            evict_beyond(cache, capacity, holders, endpoint);
        }
        // Also applies a capacity lowered since the last call (e.g. from the endpoint's
        // reported cache size).
        evict_beyond(cache, capacity, holders, endpoint);
        // A block pushed and evicted again within this call (capacity below the prompt's
        // block count) never became a holder entry.
        for hash in added {
            if cache.contains(&hash) {
                holders.entry(hash).or_default().push(endpoint);
            }
        }
    }

    fn remove_endpoint(&mut self, endpoint: SocketAddr) {
        if let Some(cache) = self.per_endpoint.remove(&endpoint) {
            for (&hash, ()) in cache.iter() {
                remove_holder(&mut self.holders, hash, endpoint);
            }
        }
    }

    #[cfg(test)]
    fn is_consistent(&self) -> bool {
        let held: usize = self.holders.values().map(Vec::len).sum();
        let cached: usize = self.per_endpoint.values().map(LruCache::len).sum();
        held == cached
            && self.per_endpoint.iter().all(|(endpoint, cache)| {
                cache
                    .iter()
                    .all(|(hash, ())| self.holders.get(hash).is_some_and(|h| h.contains(endpoint)))
            })
    }
}

/// Drops `cache`'s least recently used blocks until at most `capacity` remain.
fn evict_beyond(
    cache: &mut LruCache<u64, (), BuildBlockHasher>,
    capacity: usize,
    holders: &mut HashMap<u64, Vec<SocketAddr>, BuildBlockHasher>,
    endpoint: SocketAddr,
) {
    while cache.len() > capacity {
        if let Some((evicted, ())) = cache.pop_lru() {
            remove_holder(holders, evicted, endpoint);
        }
    }
}

fn remove_holder(
    holders: &mut HashMap<u64, Vec<SocketAddr>, BuildBlockHasher>,
    hash: u64,
    endpoint: SocketAddr,
) {
    if let Some(endpoints) = holders.get_mut(&hash) {
        endpoints.retain(|&e| e != endpoint);
        if endpoints.is_empty() {
            holders.remove(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{ProfileRunResult, Target};
    use std::time::Instant;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8000))
    }

    fn config(lru_capacity: usize) -> PrefixCacheConfig {
        PrefixCacheConfig {
            block_bytes: 4,
            auto_tune: false,
            max_blocks: 8,
            lru_capacity,
        }
    }

    fn routed(
        scorer: &PrefixCacheScorer,
        prompt: &str,
        endpoints: &[Endpoint],
        to: SocketAddr,
    ) -> Vec<f64> {
        let request = Request::completion("model", prompt);
        let mut cycle = CycleState::new(0, Instant::now(), 0);
        let candidates: Vec<&Endpoint> = endpoints.iter().collect();
        let scores = scorer.score(&request, &mut cycle, &candidates);
        let result = SchedulingResult::single(
            "default",
            ProfileRunResult {
                targets: vec![Target::at(to)],
            },
        );
        scorer.post_decision(&request, &cycle, endpoints, &result, &mut BTreeMap::new());
        scores
    }

    #[test]
    fn hashes_chain_and_depend_on_model_and_salt() {
        let a = PrefixCacheScorer::block_hashes("m", None, b"aaaabbbbcc", 4, 10);
        assert_eq!(a.len(), 2, "the partial block is not hashed");
        let b = PrefixCacheScorer::block_hashes("m", None, b"xxxxbbbb", 4, 10);
        assert_ne!(
            a[1], b[1],
            "the second block hash depends on the first block"
        );
        assert_ne!(
            a,
            PrefixCacheScorer::block_hashes("other", None, b"aaaabbbb", 4, 10)
        );
        assert_ne!(
            a,
            PrefixCacheScorer::block_hashes("m", Some("salt"), b"aaaabbbb", 4, 10)
        );
        assert_eq!(
            PrefixCacheScorer::block_hashes("m", None, b"aaaabbbbcccc", 4, 2),
            a
        );
    }

    #[test]
    fn scores_matched_share_after_routing() {
        let scorer = PrefixCacheScorer::new("prefix", config(100));
        let endpoints = [Endpoint::new(addr(1)), Endpoint::new(addr(2))];
        assert_eq!(
            routed(&scorer, "aaaabbbbcccc", &endpoints, addr(1)),
            [0.0, 0.0]
        );
        assert_eq!(
            routed(&scorer, "aaaabbbbdddd", &endpoints, addr(2)),
            [2.0 / 3.0, 0.0]
        );
        assert_eq!(
            routed(&scorer, "aaaabbbbcccc", &endpoints, addr(1)),
            [1.0, 2.0 / 3.0]
        );
        assert_eq!(
            routed(&scorer, "abc", &endpoints, addr(1)),
            [0.0, 0.0],
            "shorter than a block"
        );
        assert!(scorer.read_index().is_consistent());
    }

    #[test]
    fn lru_evicts_and_index_stays_consistent() {
        let scorer = PrefixCacheScorer::new("prefix", config(3));
        let endpoints = [Endpoint::new(addr(1)), Endpoint::new(addr(2))];
        routed(&scorer, "aaaabbbbcccc", &endpoints, addr(1));
        // Five new blocks into a capacity of three: the old prompt is gone, and even the new
        // prompt's first blocks were pushed out.
        routed(&scorer, "eeeeffffgggghhhhiiii", &endpoints, addr(1));
        assert!(scorer.read_index().is_consistent());
        assert_eq!(
            routed(&scorer, "aaaabbbbcccc", &endpoints, addr(2)),
            [0.0, 0.0]
        );
        scorer.retain_endpoints(&|e| e == addr(1));
        assert!(scorer.read_index().is_consistent());
        assert!(!scorer.read_index().per_endpoint.contains_key(&addr(2)));
    }

    #[test]
    fn auto_tune_uses_reported_cache_geometry() {
        let scorer = PrefixCacheScorer::new(
            "prefix",
            PrefixCacheConfig {
                auto_tune: true,
                ..config(5)
            },
        );
        let mut endpoint = Endpoint::new(addr(1));
        endpoint.metrics.cache_block_size = Some(2);
        endpoint.metrics.cache_num_blocks = Some(100);
        assert_eq!(scorer.block_bytes([&endpoint].into_iter()), 8);
        assert_eq!(scorer.capacity(Some(&endpoint), 8), 100);
        assert_eq!(scorer.capacity(None, 8), 5);
        assert_eq!(scorer.block_bytes(std::iter::empty()), 4);
    }
}
