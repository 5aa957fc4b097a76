//! The KV block pool with prefix caching, modelled on vLLM v1's `BlockPool`.
//!
//! A fixed number of blocks. Each block has a reference count (running requests using it) and,
//! once full, a chained hash under which it can be found again. Blocks with no references sit in
//! a free queue in LRU order: freeing appends to the tail, allocation pops from the head, and a
//! popped block that was cached loses its hash (eviction, reported as `BlockRemoved`). Blocks in
//! the free queue can still be hit, which takes them out of the queue again.

use std::collections::HashMap;

use crate::block_hash::BlockDigest;

/// Index of a block in the pool.
pub type BlockId = u32;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    hash: Option<BlockDigest>,
    prev: u32,
    next: u32,
    in_free: bool,
}

/// The pool. Not thread-safe by itself; the engine keeps it under its lock.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockDigest, BlockId>,
}

impl BlockPool {
    /// A pool of `num_blocks` empty blocks, all free.
    pub fn new(num_blocks: usize) -> Self {
        let n = u32::try_from(num_blocks).expect("block count fits in u32");
        let mut pool = BlockPool {
            blocks: vec![
                Block {
                    ref_cnt: 0,
                    hash: None,
                    prev: NIL,
                    next: NIL,
                    in_free: false,
                };
                num_blocks
            ],
            head: NIL,
            tail: NIL,
            num_free: 0,
            cached: HashMap::new(),
        };
        for id in 0..n {
            pool.push_tail(id);
        }
        pool
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks with no references (including cached ones that may be evicted).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Blocks that hold a hash (whether referenced or not).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// `vllm:kv_cache_usage_perc`: the fraction of blocks referenced by running requests.
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        1.0 - self.num_free as f64 / self.blocks.len() as f64
    }

    /// The cached block for a digest, if any.
    pub fn lookup(&self, digest: &BlockDigest) -> Option<BlockId> {
        self.cached.get(digest).copied()
    }

    /// How many of the leading `digests` are cached.
    pub fn longest_prefix(&self, digests: &[BlockDigest]) -> usize {
        digests
            .iter()
            .take_while(|d| self.cached.contains_key(*d))
            .count()
    }

    /// Whether the block is currently in the free queue.
    pub fn is_free(&self, id: BlockId) -> bool {
        self.blocks[id as usize].in_free
    }

    /// Takes a reference on cached blocks (a prefix hit), removing them from the free queue.
    pub fn touch(&mut self, ids: &[BlockId]) {
        for &id in ids {
            if self.blocks[id as usize].in_free {
                self.unlink(id);
            }
            self.blocks[id as usize].ref_cnt += 1;
        }
    }

    /// Allocates `n` blocks from the head of the free queue. Returns the blocks and the digests
    /// evicted to make room, or `None` (and changes nothing) when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<(Vec<BlockId>, Vec<BlockDigest>)> {
        if n > self.num_free {
            return None;
        }
        let mut ids = Vec::with_capacity(n);
        let mut evicted = Vec::new();
        for _ in 0..n {
            let id = self.head;
            self.unlink(id);
            let block = &mut self.blocks[id as usize];
            block.ref_cnt = 1;
            if let Some(h) = block.hash.take() {
                self.cached.remove(&h);
                evicted.push(h);
            }
            ids.push(id);
        }
        Some((ids, evicted))
    }

    /// Registers a full block under its digest. Returns false (and leaves the block uncached)
    /// when another block already holds that digest.
    pub fn cache(&mut self, id: BlockId, digest: BlockDigest) -> bool {
        if self.cached.contains_key(&digest) {
            return false;
        }
        self.cached.insert(digest, id);
        self.blocks[id as usize].hash = Some(digest);
        true
    }

    /// Drops one reference on each block, in the order given; blocks that reach zero go to the
    /// tail of the free queue. Pass a request's blocks in reverse so its tail is evicted first.
    pub fn free(&mut self, ids: impl IntoIterator<Item = BlockId>) {
        for id in ids {
            let block = &mut self.blocks[id as usize];
            debug_assert!(block.ref_cnt > 0, "double free of block {id}");
            block.ref_cnt = block.ref_cnt.saturating_sub(1);
            if block.ref_cnt == 0 && !block.in_free {
                self.push_tail(id);
            }
        }
    }

    /// Drops every hash, as vLLM's `reset_prefix_cache` does. Refuses (returns false) while any
    /// block is referenced.
    pub fn reset(&mut self) -> bool {
        if self.num_free != self.blocks.len() {
            return false;
        }
        self.cached.clear();
        for b in &mut self.blocks {
            b.hash = None;
        }
        true
    }

    fn push_tail(&mut self, id: BlockId) {
        let tail = self.tail;
        {
            let b = &mut self.blocks[id as usize];
            b.prev = tail;
            b.next = NIL;
            b.in_free = true;
        }
        if tail == NIL {
            self.head = id;
        } else {
            self.blocks[tail as usize].next = id;
        }
        self.tail = id;
        self.num_free += 1;
    }

    fn unlink(&mut self, id: BlockId) {
        let (prev, next) = {
            let b = &mut self.blocks[id as usize];
            debug_assert!(b.in_free);
            b.in_free = false;
            (b.prev, b.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        self.num_free -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: u8) -> BlockDigest {
        [x; 32]
    }

    #[test]
    fn lru_eviction_order_and_hits() {
        let mut pool = BlockPool::new(3);
        let (a, ev) = pool.allocate(2).unwrap();
        assert!(ev.is_empty());
        assert!(pool.cache(a[0], d(1)));
        assert!(pool.cache(a[1], d(2)));
        assert!((pool.usage() - 2.0 / 3.0).abs() < 1e-9);
        // Free in reverse: block with d(2) goes first to the tail, then d(1).
        pool.free(a.iter().rev().copied());
        assert_eq!(pool.num_free(), 3);
        assert_eq!(pool.longest_prefix(&[d(1), d(2), d(3)]), 2);
        // Allocating 1 takes the never-used block; 2 more evict d(2) then d(1).
        let (_, ev) = pool.allocate(1).unwrap();
        assert!(ev.is_empty());
        let (_, ev) = pool.allocate(1).unwrap();
        assert_eq!(ev, vec![d(2)]);
        assert_eq!(pool.longest_prefix(&[d(1)]), 1);
        assert!(pool.allocate(2).is_none());
    }

    #[test]
    fn touched_blocks_are_not_evicted() {
        let mut pool = BlockPool::new(2);
        let (a, _) = pool.allocate(1).unwrap();
        pool.cache(a[0], d(9));
        pool.free(a.clone());
        pool.touch(&a);
        assert_eq!(pool.num_free(), 1);
        let (_, ev) = pool.allocate(1).unwrap();
        assert!(ev.is_empty());
        assert!(pool.allocate(1).is_none());
        assert!(!pool.reset(), "reset refused while blocks are in use");
    }
}
