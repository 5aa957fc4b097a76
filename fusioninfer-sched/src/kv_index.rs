//! The KV-block index behind `precise-prefix-cache-scorer`: which endpoint's KV cache holds
//! which blocks, learned from the engines' KV events rather than guessed from routing.
//!
//! **Keys are ours.** The engine's block hashes are seeded and Python-specific, so the index
//! keys blocks by a chained xxHash64 over the token ids the events carry ([`block_keys`]),
//! seeded with the LoRA adapter name and `cache_salt` ([`first_parent`]); a request tokenized
//! like the engine does it gets the same keys. Per endpoint a map from the engine's hash to our
//! key resolves `BlockRemoved` and `parent_block_hash`.
//!
//! **Bounded.** At most `capacity` keys are kept (least recently *stored* evicted first), each
//! with at most `max_endpoints_per_key` holders; the per-endpoint maps only hold entries of kept
//! keys, so memory is O(capacity × max_endpoints_per_key).
//!
//! **Known or not.** An endpoint's entries are trusted only while its event stream is complete:
//!
//! * the first message seen from an endpoint must have sequence 0 (a fresh engine), else what
//!   it cached before is unknown;
//! * a sequence gap (messages lost) makes it unknown, and drops its entries (some
//!   `BlockRemoved` may be among the lost);
//! * a sequence going back to 0 is an engine restart: its entries are dropped and it is known
//!   (empty); `AllBlocksCleared` likewise;
//! * an unknown endpoint becomes known again after `AllBlocksCleared`, a restart, or once it
//!   has stored as many blocks since as its cache holds ([`KvBlockIndex::set_cache_blocks`],
//!   from its `num_gpu_blocks`): by then the LRU engine has evicted most of what it held before.
//!
//! The scorer falls back to approximate prefix matching for endpoints that are unknown or have
//! published nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use fusioninfer_kvcache::events::{BlockStored, KvEvent};
use lru::LruCache;
use xxhash_rust::xxh64::xxh64;

/// Largest block size (tokens) accepted from events; engines use 16–256.
pub const MAX_BLOCK_SIZE: usize = 4096;
/// Default number of keys kept.
pub const DEFAULT_CAPACITY: usize = 1_000_000;
/// Default number of endpoints remembered per key (llm-d's `podCacheSize`).
pub const DEFAULT_MAX_ENDPOINTS_PER_KEY: usize = 10;

/// The parent of a request's first block: depends on the LoRA adapter and `cache_salt`, so
/// requests that cannot share cache never share keys.
pub fn first_parent(lora: Option<&str>, cache_salt: Option<&str>) -> u64 {
    let mut seed = Vec::with_capacity(64);
    seed.extend_from_slice(b"fusioninfer-kv\0");
    for part in [lora, cache_salt] {
        match part {
            Some(text) => {
                seed.push(1);
                seed.extend_from_slice(text.as_bytes());
                seed.push(0);
            }
            None => seed.push(0),
        }
    }
    xxh64(&seed, 0)
}

/// Chained keys of the full `block_size`-token blocks of `tokens` after `parent` (a trailing
/// partial block gets none, as engines cache only full blocks); at most `max_blocks`.
pub fn block_keys(parent: u64, tokens: &[u32], block_size: usize, max_blocks: usize) -> Vec<u64> {
    let block_size = block_size.max(1);
    let mut keys = Vec::with_capacity((tokens.len() / block_size).min(max_blocks));
    let mut previous = parent;
    let mut input = Vec::with_capacity(8 + 4 * block_size);
    for block in tokens.chunks_exact(block_size).take(max_blocks) {
        input.clear();
        input.extend_from_slice(&previous.to_le_bytes());
        for token in block {
            input.extend_from_slice(&token.to_le_bytes());
        }
        previous = xxh64(&input, 0);
        keys.push(previous);
    }
    keys
}

/// An index and where its events come from; the router subscribes to every endpoint's
/// publisher and feeds [`KvBlockIndex::apply`].
#[derive(Clone, Debug)]
pub struct KvEventFeed {
    /// The index to feed.
    pub index: std::sync::Arc<KvBlockIndex>,
    /// ZMQ subscription prefix (`""`: every topic).
    pub topic_filter: String,
    /// Publisher port on each endpoint's host when the endpoint source gives no address.
    pub port: u16,
}

/// Settings of a [`KvBlockIndex`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvIndexConfig {
    /// Most keys kept.
    pub capacity: usize,
    /// Most endpoints remembered per key.
    pub max_endpoints_per_key: usize,
}

impl Default for KvIndexConfig {
    fn default() -> Self {
        KvIndexConfig {
            capacity: DEFAULT_CAPACITY,
            max_endpoints_per_key: DEFAULT_MAX_ENDPOINTS_PER_KEY,
        }
    }
}

/// Whether an endpoint's entries can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointStatus {
    /// No event seen from it.
    Silent,
    /// Its stream has been complete since its cache was last empty.
    Known,
    /// Messages were missed; `stored_since` blocks have been stored since.
    Unknown {
        /// Blocks stored since it became unknown.
        stored_since: u64,
    },
}

/// What applying one message did, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The sequence number was not the one expected (lost messages, or a first message that
    /// is not 0).
    pub gap: bool,
    /// The sequence restarted at 0 (engine restart).
    pub restart: bool,
    /// Events that could not be applied (malformed, or a parent never seen).
    pub skipped_events: usize,
}

#[derive(Default)]
struct EndpointState {
    /// Engine hash → our key.
    engine_to_key: HashMap<u64, u64>,
    next_seq: Option<u64>,
    known: bool,
    stored_since_unknown: u64,
    block_size: Option<usize>,
    cache_blocks: Option<u64>,
}

/// Holders of one key: (endpoint, the engine's hash for it there).
type Holders = Vec<(SocketAddr, u64)>;

struct Inner {
    keys: LruCache<u64, Holders>,
    endpoints: HashMap<SocketAddr, EndpointState>,
}

/// The index; shareable across threads (the EPP's event subscribers write, scheduling reads).
pub struct KvBlockIndex {
    config: KvIndexConfig,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for KvBlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBlockIndex")
            .field("config", &self.config)
            .field("keys", &self.len())
            .finish()
    }
}

impl KvBlockIndex {
    /// An empty index.
    pub fn new(config: KvIndexConfig) -> Self {
        KvBlockIndex {
            config,
            inner: RwLock::new(Inner {
                // Grows with use; a bounded LruCache would allocate `capacity` slots up front.
                keys: LruCache::unbounded(),
                endpoints: HashMap::new(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &KvIndexConfig {
        &self.config
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `endpoint`'s status.
    pub fn status(&self, endpoint: SocketAddr) -> EndpointStatus {
        match self.read().endpoints.get(&endpoint) {
            None => EndpointStatus::Silent,
            Some(state) if state.known => EndpointStatus::Known,
            Some(state) => EndpointStatus::Unknown {
                stored_since: state.stored_since_unknown,
            },
        }
    }

    /// Block sizes the endpoints' events use, each once (usually one).
    pub fn block_sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = self
            .read()
            .endpoints
            .values()
            .filter_map(|s| s.block_size)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// The block size of `endpoint`'s events, once it has stored a block.
    pub fn block_size(&self, endpoint: SocketAddr) -> Option<usize> {
        self.read().endpoints.get(&endpoint)?.block_size
    }

    /// Records how many blocks `endpoint`'s cache holds (its `num_gpu_blocks`); an unknown
    /// endpoint becomes known after storing that many.
    pub fn set_cache_blocks(&self, endpoint: SocketAddr, blocks: u64) {
        if self
            .read()
            .endpoints
            .get(&endpoint)
            .is_some_and(|s| s.cache_blocks == Some(blocks))
        {
            return;
        }
        let mut inner = self.write();
        if let Some(state) = inner.endpoints.get_mut(&endpoint) {
            state.cache_blocks = Some(blocks);
            refill_check(state);
        }
    }

    /// Applies one message (sequence number and events) published by `endpoint`.
    pub fn apply(&self, endpoint: SocketAddr, seq: u64, events: &[KvEvent]) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        let mut inner = self.write();
        let state = inner.endpoints.entry(endpoint).or_default();
        let expected = state.next_seq;
        state.next_seq = Some(seq.wrapping_add(1));
        match expected {
            Some(next) if next == seq => {}
            None if seq == 0 => state.known = true,
            Some(_) if seq == 0 => {
                outcome.restart = true;
                inner.clear_endpoint(endpoint, true);
            }
            _ => {
                outcome.gap = true;
                inner.clear_endpoint(endpoint, false);
            }
        }
        for event in events {
            let applied = match event {
                KvEvent::BlockStored(stored) => inner.stored(endpoint, stored, &self.config),
                KvEvent::BlockRemoved(removed) => {
                    for &hash in &removed.block_hashes {
                        inner.remove_holder(endpoint, hash);
                    }
                    true
                }
                KvEvent::AllBlocksCleared => {
                    inner.clear_endpoint(endpoint, true);
                    true
                }
                KvEvent::Unknown(_) => true,
            };
            if !applied {
                outcome.skipped_events += 1;
            }
        }
        outcome
    }

    /// Forgets `endpoint` entirely (it left the pool).
    pub fn remove_endpoint(&self, endpoint: SocketAddr) {
        let mut inner = self.write();
        inner.clear_endpoint(endpoint, false);
        inner.endpoints.remove(&endpoint);
    }

    /// Endpoints with any state.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.read().endpoints.keys().copied().collect()
    }

    /// For each endpoint holding the first of `keys`: how many leading keys it holds in a row.
    pub fn longest_prefixes(&self, keys: &[u64]) -> HashMap<SocketAddr, usize> {
        let inner = self.read();
        let mut matched: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(holders) = inner.keys.peek(key) else {
                break;
            };
            let mut advanced = false;
            for &(endpoint, _) in holders {
                let count = matched.entry(endpoint).or_insert(0);
                // Only endpoints that held every earlier key continue their run; several
                // engine hashes may map to one key, so count each endpoint once per key.
                if *count == i {
                    *count = i + 1;
                    advanced = true;
                }
            }
            if !advanced {
                break;
            }
        }
        matched.retain(|_, n| *n > 0);
        matched
    }
}

fn refill_check(state: &mut EndpointState) {
    if !state.known
        && state
            .cache_blocks
            .is_some_and(|blocks| state.stored_since_unknown >= blocks)
    {
        state.known = true;
    }
}

impl Inner {
    /// Drops `endpoint`'s entries; `known` says whether its cache is now known (to be empty).
    fn clear_endpoint(&mut self, endpoint: SocketAddr, known: bool) {
        let Some(state) = self.endpoints.get_mut(&endpoint) else {
            return;
        };
        let entries: Vec<(u64, u64)> = state.engine_to_key.drain().collect();
        state.known = known;
        state.stored_since_unknown = 0;
        for (hash, key) in entries {
            self.drop_holder(key, endpoint, hash);
        }
    }

    fn drop_holder(&mut self, key: u64, endpoint: SocketAddr, hash: u64) {
        if let Some(holders) = self.keys.peek_mut(&key) {
            holders.retain(|&(e, h)| !(e == endpoint && h == hash));
            if holders.is_empty() {
                self.keys.pop(&key);
            }
        }
    }

    fn remove_holder(&mut self, endpoint: SocketAddr, hash: u64) {
        let key = self
            .endpoints
            .get_mut(&endpoint)
            .and_then(|s| s.engine_to_key.remove(&hash));
        if let Some(key) = key {
            self.drop_holder(key, endpoint, hash);
        }
    }

    /// Applies a `BlockStored`; false when it is malformed or its parent is unknown here.
    fn stored(
        &mut self,
        endpoint: SocketAddr,
        stored: &BlockStored,
        config: &KvIndexConfig,
    ) -> bool {
        let block_size = stored.block_size as usize;
        let blocks = stored.block_hashes.len();
        // A block size no engine uses would make every request's key computation allocate
        // for it: such an event is malformed, like one whose tokens do not fill its blocks.
        if !(1..=MAX_BLOCK_SIZE).contains(&block_size)
            || blocks == 0
            || stored.token_ids.len() != block_size.saturating_mul(blocks)
        {
            return false;
        }
        let Some(state) = self.endpoints.get_mut(&endpoint) else {
            return false;
        };
        let parent = match stored.parent_block_hash {
            None => first_parent(stored.lora_name.as_deref(), event_salt(stored)),
            Some(hash) => match state.engine_to_key.get(&hash) {
                Some(&key) => key,
                // Its parent was evicted from our index or never seen: the chain cannot be
                // followed, and a block whose prefix is unknown can never match a request.
                None => return false,
            },
        };
        state.block_size = Some(block_size);
        state.stored_since_unknown = state.stored_since_unknown.saturating_add(blocks as u64);
        refill_check(state);
        let keys = block_keys(parent, &stored.token_ids, block_size, blocks);
        for (&hash, key) in stored.block_hashes.iter().zip(keys) {
            self.add_holder(key, endpoint, hash, config);
        }
        true
    }

    fn add_holder(&mut self, key: u64, endpoint: SocketAddr, hash: u64, config: &KvIndexConfig) {
        if let Some(state) = self.endpoints.get_mut(&endpoint)
            && let Some(old_key) = state.engine_to_key.insert(hash, key)
            && old_key != key
        {
            self.drop_holder(old_key, endpoint, hash);
        }
        let mut dropped = Vec::new();
        match self.keys.get_mut(&key) {
            Some(holders) => {
                if !holders.contains(&(endpoint, hash)) {
                    holders.push((endpoint, hash));
                }
                while holders.len() > config.max_endpoints_per_key.max(1) {
                    dropped.push(holders.remove(0));
                }
            }
            None => {
                self.keys.push(key, vec![(endpoint, hash)]);
            }
        }
        for (e, h) in dropped {
            self.forget_mapping(e, h, key);
        }
        while self.keys.len() > config.capacity.max(1) {
            let Some((evicted, holders)) = self.keys.pop_lru() else {
                break;
            };
            for (e, h) in holders {
                self.forget_mapping(e, h, evicted);
            }
        }
    }

    /// Removes `endpoint`'s engine-hash mapping to `key` (its key entry is already gone).
    fn forget_mapping(&mut self, endpoint: SocketAddr, hash: u64, key: u64) {
        if let Some(state) = self.endpoints.get_mut(&endpoint)
            && state.engine_to_key.get(&hash) == Some(&key)
        {
            state.engine_to_key.remove(&hash);
        }
    }
}

/// The `cache_salt` of a request's first block: vLLM appends it to the first block's extra
/// keys after the LoRA name (and any multimodal hashes), so it is the last string there that
/// is not the LoRA name.
fn event_salt(stored: &BlockStored) -> Option<&str> {
    stored
        .extra_keys
        .first()?
        .as_ref()?
        .iter()
        .rev()
        .map(String::as_str)
        .find(|k| Some(*k) != stored.lora_name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusioninfer_kvcache::events::BlockRemoved;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8000))
    }

    fn stored(hashes: &[u64], parent: Option<u64>, tokens: Vec<u32>, block_size: u32) -> KvEvent {
        KvEvent::BlockStored(BlockStored::new(
            hashes.to_vec(),
            parent,
            tokens,
            block_size,
        ))
    }

    fn request_keys(tokens: &[u32]) -> Vec<u64> {
        block_keys(first_parent(None, None), tokens, 2, 100)
    }

    #[test]
    fn keys_chain_and_depend_on_lora_and_salt() {
        let a = block_keys(first_parent(None, None), &[1, 2, 3, 4, 5], 2, 10);
        assert_eq!(a.len(), 2, "partial blocks get no key");
        assert_ne!(
            a[1],
            block_keys(first_parent(None, None), &[9, 9, 3, 4], 2, 10)[1]
        );
        assert_ne!(first_parent(Some("x"), None), first_parent(None, Some("x")));
        assert_ne!(first_parent(None, None), first_parent(None, Some("")));
    }

    #[test]
    fn stored_chained_and_removed_blocks() {
        let index = KvBlockIndex::new(KvIndexConfig::default());
        index.apply(addr(1), 0, &[stored(&[10, 11], None, vec![1, 2, 3, 4], 2)]);
        // The continuation names its parent by the engine's hash.
        index.apply(addr(1), 1, &[stored(&[12], Some(11), vec![5, 6], 2)]);
        index.apply(addr(2), 0, &[stored(&[20], None, vec![1, 2], 2)]);
        let keys = request_keys(&[1, 2, 3, 4, 5, 6, 7]);
        let matched = index.longest_prefixes(&keys);
        assert_eq!(matched[&addr(1)], 3);
        assert_eq!(matched[&addr(2)], 1);
        index.apply(
            addr(1),
            2,
            &[KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![11],
                medium: None,
                group_idx: 0,
            })],
        );
        assert_eq!(
            index.longest_prefixes(&keys)[&addr(1)],
            1,
            "a hole ends the run"
        );
        assert_eq!(index.status(addr(1)), EndpointStatus::Known);
        assert_eq!(index.block_sizes(), vec![2]);
    }

    #[test]
    fn gaps_restarts_and_clears() {
        let index = KvBlockIndex::new(KvIndexConfig::default());
        let keys = request_keys(&[1, 2]);
        let first = stored(&[10], None, vec![1, 2], 2);
        assert!(index.apply(addr(1), 0, std::slice::from_ref(&first)) == ApplyOutcome::default());
        assert!(index.apply(addr(1), 2, &[]).gap);
        assert!(matches!(
            index.status(addr(1)),
            EndpointStatus::Unknown { .. }
        ));
        assert!(
            index.longest_prefixes(&keys).is_empty(),
            "a gap drops entries"
        );
        index.apply(addr(1), 3, std::slice::from_ref(&first));
        index.set_cache_blocks(addr(1), 2);
        assert!(matches!(
            index.status(addr(1)),
            EndpointStatus::Unknown { stored_since: 1 }
        ));
        index.apply(addr(1), 4, &[stored(&[11], None, vec![3, 4], 2)]);
        assert_eq!(index.status(addr(1)), EndpointStatus::Known, "refilled");
        assert!(index.apply(addr(1), 0, &[]).restart);
        assert_eq!(index.status(addr(1)), EndpointStatus::Known);
        assert!(index.is_empty(), "a restart empties the endpoint's cache");
        index.apply(addr(1), 1, std::slice::from_ref(&first));
        index.apply(addr(1), 2, &[KvEvent::AllBlocksCleared]);
        assert!(index.is_empty());
        // A first message that is not 0: history unknown.
        index.apply(addr(2), 7, std::slice::from_ref(&first));
        assert!(matches!(
            index.status(addr(2)),
            EndpointStatus::Unknown { .. }
        ));
        index.remove_endpoint(addr(2));
        assert_eq!(index.status(addr(2)), EndpointStatus::Silent);
        assert!(index.is_empty());
    }

    #[test]
    fn malformed_and_orphan_events_are_skipped() {
        let index = KvBlockIndex::new(KvIndexConfig::default());
        let outcome = index.apply(
            addr(1),
            0,
            &[
                stored(&[1], None, vec![1, 2, 3], 2),
                stored(&[1], None, vec![1, 2], 0),
                stored(&[2], Some(99), vec![1, 2], 2),
                KvEvent::Unknown("Future".into()),
                // No blocks at all, with a block size that would make every later request
                // allocate gigabytes for its keys.
                stored(&[], None, vec![], u32::MAX),
                stored(
                    &[3],
                    None,
                    vec![7; MAX_BLOCK_SIZE + 1],
                    (MAX_BLOCK_SIZE + 1) as u32,
                ),
            ],
        );
        assert_eq!(outcome.skipped_events, 5);
        assert!(index.is_empty());
        assert_eq!(index.block_size(addr(1)), None);
    }

    #[test]
    fn capacity_and_holders_are_bounded() {
        let index = KvBlockIndex::new(KvIndexConfig {
            capacity: 3,
            max_endpoints_per_key: 2,
        });
        for (i, seq) in (0..5u32).zip(0u64..) {
            index.apply(
                addr(1),
                seq,
                &[stored(&[u64::from(i)], None, vec![i, i], 2)],
            );
        }
        assert_eq!(index.len(), 3);
        assert!(
            index.longest_prefixes(&request_keys(&[0, 0])).is_empty(),
            "oldest evicted"
        );
        assert_eq!(index.longest_prefixes(&request_keys(&[4, 4]))[&addr(1)], 1);
        for e in 2..=4 {
            index.apply(addr(e), 0, &[stored(&[7], None, vec![4, 4], 2)]);
        }
        let holders = index.longest_prefixes(&request_keys(&[4, 4]));
        assert_eq!(holders.len(), 2, "{holders:?}");
        let inner = index.read();
        let mapped: usize = inner
            .endpoints
            .values()
            .map(|s| s.engine_to_key.len())
            .sum();
        let held: usize = inner.keys.iter().map(|(_, h)| h.len()).sum();
        assert_eq!(
            mapped, held,
            "per-endpoint maps hold exactly the kept entries"
        );
    }
}
