//! The engine model: scheduler (max-num-seqs, FIFO waiting queue, LoRA slots), KV blocks with
//! prefix caching, KV events, LoRA adapters and statistics.
//!
//! Requests are admitted in FIFO order while fewer than `max_num_seqs` run and the KV cache can
//! hold them; a request whose LoRA adapter would exceed `max_loras` distinct adapters in the
//! batch is skipped (it stays waiting, later requests may go first), as vLLM's scheduler does.
//! A request that does not fit in the cache blocks the queue head, as in vLLM.
//!
//! On admission the request's prompt is matched against the prefix cache (at most
//! `prompt_len - 1` tokens, whole blocks, like vLLM), its remaining prompt blocks are allocated
//! (evicting least-recently-freed cached blocks, each reported as `BlockRemoved`) and its full
//! prompt blocks are cached (`BlockStored`). While decoding, every block that fills up is cached
//! and announced too. Differences from vLLM, on purpose: the blocks a request may still need for
//! its output are *reserved* at admission, so the simulator never preempts (vLLM admits more and
//! preempts under pressure); a block whose hash is already cached elsewhere is not cached a
//! second time (vLLM keeps both and announces it again).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::block_hash::{BlockDigest, hash_block, hash_full_blocks, none_hash, published_hash};
use crate::config::SimConfig;
use crate::kv_events::{BlockRemoved, BlockStored, KvEvent, KvEventSink, MEDIUM_GPU};
use crate::metrics::{FINISH_REASONS, Snapshot, Stats, render};
use crate::prefix_cache::{BlockId, BlockPool};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model stopped by itself.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The client went away.
    Abort,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// A request handed to the engine.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Prompt token ids (non-empty).
    pub prompt: Vec<u32>,
    /// Output tokens the request will produce (already clamped to the context).
    pub max_output: usize,
    /// The `max_tokens` the client asked for, if any (for metrics).
    pub max_tokens_param: Option<usize>,
    /// LoRA adapter name, if the request targets one.
    pub lora: Option<String>,
    /// The KV comes from a remote prefiller (`kv_transfer_params.do_remote_prefill`).
    pub remote_prefill: bool,
}

/// Why the engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The waiting queue is full.
    #[error("the waiting queue is full ({0} requests)")]
    QueueFull(usize),
    /// The request needs more KV blocks than the cache has.
    #[error("the request needs {needed} KV blocks but the cache has only {capacity}")]
    TooLarge {
        /// Blocks needed.
        needed: usize,
        /// Blocks in the cache.
        capacity: usize,
    },
    /// The engine was shut down.
    #[error("the engine is shutting down")]
    Closed,
}

/// What the scheduler decided when it admitted a request.
#[derive(Debug, Clone, Serialize)]
pub struct AdmitInfo {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the local prefix cache, plus those transferred from a remote
    /// prefiller (vLLM reports both as cached).
    pub cached_tokens: usize,
    /// Tokens of the prompt blocks newly written to the prefix cache.
    pub created_cache_tokens: usize,
    /// Prompt tokens transferred from a remote prefiller.
    pub external_tokens: usize,
    /// Model seconds from admission to the first token.
    pub first_token_seconds: f64,
    /// Model seconds spent waiting.
    pub queue_seconds: f64,
    /// Requests running right after admission (this one included).
    pub running_at_admission: usize,
    /// The KV blocks holding the prompt (reported to decoders as `remote_block_ids`).
    pub block_ids: Vec<BlockId>,
}

/// Engine occupancy, for `/admin/state` and tests.
#[derive(Debug, Clone, Serialize)]
pub struct EngineState {
    /// Requests running.
    pub running: usize,
    /// Requests waiting.
    pub waiting: usize,
    /// Blocks in the cache.
    pub num_blocks: usize,
    /// Blocks not referenced by running requests.
    pub free_blocks: usize,
    /// Blocks holding a cached hash.
    pub cached_blocks: usize,
    /// Blocks reserved for running requests' future output.
    pub reserved_blocks: usize,
    /// `vllm:kv_cache_usage_perc`.
    pub kv_usage: f64,
    /// Loaded LoRA adapters, by name.
    pub loras: Vec<String>,
}

/// A loaded LoRA adapter.
#[derive(Debug, Clone, Serialize)]
pub struct LoraAdapter {
    /// Served name.
    pub name: String,
    /// Path it was loaded from (nothing is read).
    pub path: String,
    /// vLLM's `lora_int_id` (from 1).
    pub id: u64,
}

/// LoRA registry errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoraError {
    /// LoRA is not enabled.
    #[error("LoRA is not enabled on this server")]
    Disabled,
    /// Already loaded.
    #[error("The lora adapter '{0}' has already been loaded.")]
    AlreadyLoaded(String),
    /// Not loaded.
    #[error("The lora adapter '{0}' cannot be found.")]
    NotFound(String),
}

struct Waiter {
    id: u64,
    prompt: Vec<u32>,
    digests: Vec<BlockDigest>,
    max_output: usize,
    max_tokens_param: Option<usize>,
    lora: Option<String>,
    remote_prefill: bool,
    enqueued: Instant,
    tx: oneshot::Sender<Running>,
}

struct Seq {
    tokens: Vec<u32>,
    blocks: Vec<BlockId>,
    digests: Vec<BlockDigest>,
    computed: usize,
    reserve: usize,
    lora: Option<String>,
}

struct State {
    pool: BlockPool,
    none_hash: BlockDigest,
    waiting: VecDeque<Waiter>,
    running: HashMap<u64, Seq>,
    reserved: usize,
    next_id: u64,
    stats: Stats,
    loras: BTreeMap<String, LoraAdapter>,
    next_lora_id: u64,
    lora_info: VecDeque<(String, String, f64)>,
    closed: bool,
    /// The request being submitted right now (admitted without waiting if scheduled at once).
    submitting: Option<u64>,
}

/// The engine of one simulated server.
pub struct Engine {
    cfg: SimConfig,
    state: Mutex<State>,
    events: Option<KvEventSink>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.cfg.model)
            .finish()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Engine {
    /// A new engine; KV events go to `events` when given.
    pub fn new(cfg: SimConfig, events: Option<KvEventSink>) -> Arc<Self> {
        let mut loras = BTreeMap::new();
        let mut next_lora_id = 1;
        for spec in &cfg.loras {
            loras.insert(
                spec.name.clone(),
                LoraAdapter {
                    name: spec.name.clone(),
                    path: spec.path.clone(),
                    id: next_lora_id,
                },
            );
            next_lora_id += 1;
        }
        let state = State {
            pool: BlockPool::new(cfg.num_blocks),
            none_hash: none_hash(),
            waiting: VecDeque::new(),
            running: HashMap::new(),
            reserved: 0,
            next_id: 0,
            stats: Stats::new(cfg.max_model_len, unix_now()),
            loras,
            next_lora_id,
            lora_info: VecDeque::new(),
            closed: false,
            submitting: None,
        };
        Arc::new(Engine {
            cfg,
            state: Mutex::new(state),
            events,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, events: Vec<KvEvent>) {
        if let Some(sink) = &self.events {
            sink.publish(events);
        }
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.cfg.block_size)
    }

    /// Queues a request. The returned [`Pending`] resolves when the scheduler admits it.
    pub fn submit(self: &Arc<Self>, sub: Submission) -> Result<Pending, SubmitError> {
        assert!(!sub.prompt.is_empty(), "empty prompts are rejected earlier");
        let bs = self.cfg.block_size;
        let total = self.blocks_for(sub.prompt.len() + sub.max_output.max(1) - 1);
        if total > self.cfg.num_blocks {
            return Err(SubmitError::TooLarge {
                needed: total,
                capacity: self.cfg.num_blocks,
            });
        }
        // Hash outside the lock.
        let digests = hash_full_blocks(&sub.prompt, bs, sub.lora.as_deref());
        let (tx, rx) = oneshot::channel();
        let mut failed = Vec::new();
        let result = {
            let mut st = self.lock();
            if st.closed {
                return Err(SubmitError::Closed);
            }
            let id = st.next_id;
            st.next_id += 1;
            st.waiting.push_back(Waiter {
                id,
                prompt: sub.prompt,
                digests,
                max_output: sub.max_output.max(1),
                max_tokens_param: sub.max_tokens_param,
                lora: sub.lora,
                remote_prefill: sub.remote_prefill,
                enqueued: Instant::now(),
                tx,
            });
            st.submitting = Some(id);
            self.schedule(&mut st, &mut failed);
            st.submitting = None;
            let still_waiting = st.waiting.back().is_some_and(|w| w.id == id);
            if still_waiting && st.waiting.len() > self.cfg.max_waiting {
                st.waiting.pop_back();
                st.stats.queue_rejections += 1;
                Err(SubmitError::QueueFull(self.cfg.max_waiting))
            } else {
                Ok(Pending {
                    rx,
                    guard: WaitGuard {
                        engine: Arc::clone(self),
                        id,
                        armed: true,
                    },
                })
            }
        };
        drop(failed);
        result
    }

    /// Admits waiting requests while capacity allows. Requests whose receiver is gone are
    /// pushed to `failed`, to be dropped (and so released) after the lock is let go.
    fn schedule(self: &Arc<Self>, st: &mut State, failed: &mut Vec<Running>) {
        let mut idx = 0;
        while idx < st.waiting.len() {
            if st.running.len() >= self.cfg.max_num_seqs {
                break;
            }
            if self.lora_blocked(st, st.waiting[idx].lora.as_deref()) {
                idx += 1;
                continue;
            }
            let Some(info) = self.try_admit(st, idx) else {
                break;
            };
            let w = st.waiting.remove(idx).expect("index in range");
            let running = Running {
                engine: Arc::clone(self),
                id: w.id,
                info,
                generated: 0,
                finished: false,
                ttft_recorded: false,
                prefill_seconds: 0.0,
                decode_seconds: 0.0,
            };
            if let Err(running) = w.tx.send(running) {
                failed.push(running);
            }
        }
        self.note_lora_info(st);
    }

    fn running_loras(st: &State) -> BTreeSet<&str> {
        st.running
            .values()
            .filter_map(|s| s.lora.as_deref())
            .collect()
    }

    fn lora_blocked(&self, st: &State, lora: Option<&str>) -> bool {
        let Some(lora) = lora else { return false };
        let running = Self::running_loras(st);
        !running.contains(lora) && running.len() >= self.cfg.max_loras.max(1)
    }

    fn try_admit(&self, st: &mut State, idx: usize) -> Option<AdmitInfo> {
        let bs = self.cfg.block_size;
        let w = &st.waiting[idx];
        let plen = w.prompt.len();
        let full = w.digests.len();
        let max_hit = (plen - 1) / bs;
        let hit = st.pool.longest_prefix(&w.digests).min(max_hit);
        let hit_ids: Vec<BlockId> = w.digests[..hit]
            .iter()
            .map(|d| st.pool.lookup(d).expect("prefix is cached"))
            .collect();
        let free_hits = hit_ids.iter().filter(|&&b| st.pool.is_free(b)).count();
        let prompt_blocks = self.blocks_for(plen);
        let total = self.blocks_for(plen + w.max_output - 1).max(prompt_blocks);
        let need_now = prompt_blocks - hit;
        let reserve = total - prompt_blocks;
        if st.pool.num_free() < free_hits + need_now + reserve + st.reserved {
            return None;
        }
        let w = st.waiting.get(idx).expect("index in range");
        let (id, prompt, digests, lora, remote, max_output, max_tokens_param, enqueued) = (
            w.id,
            w.prompt.clone(),
            w.digests.clone(),
            w.lora.clone(),
            w.remote_prefill,
            w.max_output,
            w.max_tokens_param,
            w.enqueued,
        );
        st.pool.touch(&hit_ids);
        let (new_ids, evicted) = st.pool.allocate(need_now).expect("checked free blocks");
        let mut events: Vec<KvEvent> = evicted
            .iter()
            .map(|d| {
                KvEvent::BlockRemoved(BlockRemoved {
                    block_hashes: vec![published_hash(d)],
                    medium: Some(MEDIUM_GPU.into()),
                    group_idx: 0,
                })
            })
            .collect();
        let mut blocks = hit_ids;
        blocks.extend(new_ids);
        let mut stored: Vec<usize> = Vec::new();
        for (i, digest) in digests.iter().enumerate().take(full).skip(hit) {
            if st.pool.cache(blocks[i], *digest) {
                stored.push(i);
            }
        }
        events.extend(self.stored_events(&stored, &digests, &prompt, lora.as_deref(), st));
        self.publish(events);

        let cached_local = hit * bs;
        let external = if remote { plen - cached_local } else { 0 };
        st.reserved += reserve;
        st.running.insert(
            id,
            Seq {
                tokens: prompt,
                blocks: blocks.clone(),
                digests,
                computed: plen,
                reserve,
                lora,
            },
        );
        let running = st.running.len();
        let first_token_seconds = if remote {
            self.cfg.latency.remote_prefill_seconds(external, running)
        } else {
            self.cfg
                .latency
                .prefill_seconds(plen - cached_local, running)
        };
        let queue_seconds = if st.submitting == Some(id) {
            0.0
        } else {
            self.model_seconds(enqueued.elapsed().as_secs_f64())
        };
        let s = &mut st.stats;
        s.prompt_tokens += plen as u64;
        s.prefix_queries += plen as u64;
        s.prefix_hits += cached_local as u64;
        if remote {
            s.external_queries += external as u64;
            s.external_hits += external as u64;
        } else {
            s.tokens_local_compute += (plen - cached_local) as u64;
        }
        s.req_prompt_tokens.observe(plen as f64);
        s.prefill_kv_computed
            .observe((plen - cached_local - external) as f64);
        s.params_n.observe(1.0);
        if let Some(m) = max_tokens_param {
            s.params_max_tokens.observe(m as f64);
        }
        s.max_num_generation_tokens.observe(max_output as f64);
        s.queue.observe(queue_seconds);
        s.num_preemptions.observe(0.0);
        Some(AdmitInfo {
            prompt_tokens: plen,
            cached_tokens: cached_local + external,
            created_cache_tokens: stored.len() * bs,
            external_tokens: external,
            first_token_seconds,
            queue_seconds,
            running_at_admission: running,
            block_ids: blocks,
        })
    }

    /// `BlockStored` events for the newly cached block indexes `stored` (runs of consecutive
    /// blocks become one event each).
    fn stored_events(
        &self,
        stored: &[usize],
        digests: &[BlockDigest],
        tokens: &[u32],
        lora: Option<&str>,
        st: &State,
    ) -> Vec<KvEvent> {
        let bs = self.cfg.block_size;
        let lora_id = lora.and_then(|l| st.loras.get(l)).map(|a| a.id);
        let mut events = Vec::new();
        let mut i = 0;
        while i < stored.len() {
            let start = stored[i];
            let mut end = start;
            while i + 1 < stored.len() && stored[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            i += 1;
            let n = end - start + 1;
            events.push(KvEvent::BlockStored(BlockStored {
                block_hashes: digests[start..=end].iter().map(published_hash).collect(),
                parent_block_hash: start.checked_sub(1).map(|p| published_hash(&digests[p])),
                token_ids: tokens[start * bs..(end + 1) * bs].to_vec(),
                block_size: bs as u32,
                lora_id,
                medium: Some(MEDIUM_GPU.into()),
                lora_name: lora.map(str::to_owned),
                extra_keys: vec![lora.map(|l| vec![l.to_owned()]); n],
                group_idx: 0,
                kv_cache_spec_kind: "full_attention".into(),
            }));
        }
        events
    }

    /// Wall seconds → model seconds.
    pub fn model_seconds(&self, wall: f64) -> f64 {
        if self.cfg.time_scale > 0.0 {
            wall / self.cfg.time_scale
        } else {
            0.0
        }
    }

    /// Model seconds → wall duration.
    pub fn wall_duration(&self, model_seconds: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64((model_seconds * self.cfg.time_scale).max(0.0))
    }

    fn step(&self, id: u64, token: u32, first: bool, itl: Option<f64>) {
        let bs = self.cfg.block_size;
        let mut st = self.lock();
        let none = st.none_hash;
        let mut events = Vec::new();
        let State {
            running,
            pool,
            reserved,
            stats,
            loras,
            ..
        } = &mut *st;
        let Some(seq) = running.get_mut(&id) else {
            return;
        };
        if !first {
            // This step computes the KV of the previously generated token.
            seq.computed += 1;
            if seq.computed > seq.blocks.len() * bs {
                if let Some((ids, evicted)) = pool.allocate(1) {
                    seq.blocks.extend(ids);
                    if seq.reserve > 0 {
                        seq.reserve -= 1;
                        *reserved -= 1;
                    }
                    events.extend(evicted.iter().map(|d| {
                        KvEvent::BlockRemoved(BlockRemoved {
                            block_hashes: vec![published_hash(d)],
                            medium: Some(MEDIUM_GPU.into()),
                            group_idx: 0,
                        })
                    }));
                } else {
                    debug_assert!(false, "reserved block missing");
                }
            }
            if seq.computed.is_multiple_of(bs) && seq.computed <= seq.blocks.len() * bs {
                let idx = seq.computed / bs - 1;
                let parent = seq.digests.last().copied().unwrap_or(none);
                let digest = hash_block(
                    &parent,
                    &seq.tokens[idx * bs..(idx + 1) * bs],
                    seq.lora.as_deref(),
                );
                seq.digests.push(digest);
                if pool.cache(seq.blocks[idx], digest) {
                    let lora = seq.lora.as_deref();
                    events.push(KvEvent::BlockStored(BlockStored {
                        block_hashes: vec![published_hash(&digest)],
                        parent_block_hash: idx
                            .checked_sub(1)
                            .map(|p| published_hash(&seq.digests[p])),
                        token_ids: seq.tokens[idx * bs..(idx + 1) * bs].to_vec(),
                        block_size: bs as u32,
                        lora_id: lora.and_then(|l| loras.get(l)).map(|a| a.id),
                        medium: Some(MEDIUM_GPU.into()),
                        lora_name: lora.map(str::to_owned),
                        extra_keys: vec![lora.map(|l| vec![l.to_owned()])],
                        group_idx: 0,
                        kv_cache_spec_kind: "full_attention".into(),
                    }));
                }
            }
        }
        seq.tokens.push(token);
        stats.generation_tokens += 1;
        if let Some(itl) = itl {
            stats.itl.observe(itl);
            stats.iteration_tokens.observe(1.0);
        }
        drop(st);
        self.publish(events);
    }

    fn finish(self: &Arc<Self>, id: u64, outcome: Option<(FinishReason, &Running)>) {
        let mut failed = Vec::new();
        {
            let mut st = self.lock();
            let Some(seq) = st.running.remove(&id) else {
                return;
            };
            st.pool.free(seq.blocks.iter().rev().copied());
            st.reserved -= seq.reserve;
            if let Some((reason, r)) = outcome {
                let idx = FINISH_REASONS
                    .iter()
                    .position(|x| *x == reason.as_str())
                    .unwrap_or(2);
                let s = &mut st.stats;
                s.success[idx] += 1;
                let inference = r.prefill_seconds + r.decode_seconds;
                s.e2e.observe(r.info.queue_seconds + inference);
                s.inference.observe(inference);
                s.prefill.observe(r.prefill_seconds);
                s.decode.observe(r.decode_seconds);
                s.req_generation_tokens.observe(r.generated as f64);
                if r.generated > 1 {
                    s.tpot.observe(r.decode_seconds / (r.generated - 1) as f64);
                }
            }
            self.schedule(&mut st, &mut failed);
        }
        drop(failed);
    }

    fn cancel_waiting(&self, id: u64) {
        let mut st = self.lock();
        if let Some(pos) = st.waiting.iter().position(|w| w.id == id) {
            st.waiting.remove(pos);
            self.note_lora_info(&mut st);
        }
    }

    /// Requests running now.
    pub fn num_running(&self) -> usize {
        self.lock().running.len()
    }

    /// Inter-token latency (model seconds) with the current batch.
    pub fn itl_seconds(&self) -> f64 {
        let running = self.lock().running.len().max(1);
        self.cfg.latency.itl_seconds(running)
    }

    /// Occupancy.
    pub fn state(&self) -> EngineState {
        let st = self.lock();
        EngineState {
            running: st.running.len(),
            waiting: st.waiting.len(),
            num_blocks: st.pool.num_blocks(),
            free_blocks: st.pool.num_free(),
            cached_blocks: st.pool.num_cached(),
            reserved_blocks: st.reserved,
            kv_usage: st.pool.usage(),
            loras: st.loras.keys().cloned().collect(),
        }
    }

    /// Clears the prefix cache (vLLM's `/reset_prefix_cache`); refused while requests run.
    pub fn reset_prefix_cache(&self) -> bool {
        let ok = {
            let mut st = self.lock();
            st.running.is_empty() && st.pool.reset()
        };
        if ok {
            self.publish(vec![KvEvent::AllBlocksCleared]);
        }
        ok
    }

    /// Loads a LoRA adapter.
    pub fn load_lora(&self, name: &str, path: &str) -> Result<LoraAdapter, LoraError> {
        if !self.cfg.enable_lora {
            return Err(LoraError::Disabled);
        }
        let mut st = self.lock();
        if st.loras.contains_key(name) {
            return Err(LoraError::AlreadyLoaded(name.into()));
        }
        let adapter = LoraAdapter {
            name: name.into(),
            path: path.into(),
            id: st.next_lora_id,
        };
        st.next_lora_id += 1;
        st.loras.insert(name.into(), adapter.clone());
        Ok(adapter)
    }

    /// Unloads a LoRA adapter (requests already running with it finish normally).
    pub fn unload_lora(&self, name: &str) -> Result<(), LoraError> {
        if !self.cfg.enable_lora {
            return Err(LoraError::Disabled);
        }
        let mut st = self.lock();
        st.loras
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| LoraError::NotFound(name.into()))
    }

    /// Loaded adapters, by name.
    pub fn loras(&self) -> Vec<LoraAdapter> {
        self.lock().loras.values().cloned().collect()
    }

    /// Whether `name` is a loaded adapter.
    pub fn has_lora(&self, name: &str) -> bool {
        self.lock().loras.contains_key(name)
    }

    fn lora_labels(&self, st: &State) -> (String, String) {
        let running = Self::running_loras(st);
        let waiting: BTreeSet<&str> = st
            .waiting
            .iter()
            .filter_map(|w| w.lora.as_deref())
            .collect();
        (
            running.into_iter().collect::<Vec<_>>().join(","),
            waiting.into_iter().collect::<Vec<_>>().join(","),
        )
    }

    /// Records the current LoRA label set with the current time, as vLLM does on every stats
    /// update (older label sets stay exported with their older timestamps; at most 8 kept).
    fn note_lora_info(&self, st: &mut State) {
        if !self.cfg.enable_lora {
            return;
        }
        let (running, waiting) = self.lora_labels(st);
        st.lora_info
            .retain(|(r, w, _)| !(r == &running && w == &waiting));
        st.lora_info.push_back((running, waiting, unix_now()));
        while st.lora_info.len() > 8 {
            st.lora_info.pop_front();
        }
    }

    /// The Prometheus exposition text.
    pub fn metrics_text(&self) -> String {
        let mut st = self.lock();
        self.note_lora_info(&mut st);
        let running_loras = Self::running_loras(&st);
        let full = running_loras.len() >= self.cfg.max_loras.max(1);
        let deferred = if self.cfg.enable_lora {
            st.waiting
                .iter()
                .filter(|w| {
                    w.lora
                        .as_deref()
                        .is_some_and(|l| full && !running_loras.contains(l))
                })
                .count()
        } else {
            0
        };
        let lora_info = self.cfg.enable_lora.then(|| {
            st.lora_info
                .iter()
                .map(|(r, w, ts)| (self.cfg.max_loras, r.clone(), w.clone(), *ts))
                .collect()
        });
        render(&Snapshot {
            model: &self.cfg.model,
            running: st.running.len(),
            waiting_capacity: st.waiting.len() - deferred,
            waiting_deferred: deferred,
            kv_usage: st.pool.usage(),
            block_size: self.cfg.block_size,
            num_blocks: self.cfg.num_blocks,
            max_model_len: self.cfg.max_model_len,
            lora_info,
            stats: &st.stats,
        })
    }

    /// Stops admitting; waiting requests are dropped (their callers see an error).
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.waiting.clear();
    }
}

/// Removes a cancelled request from the waiting queue.
struct WaitGuard {
    engine: Arc<Engine>,
    id: u64,
    armed: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.armed {
            self.engine.cancel_waiting(self.id);
        }
    }
}

/// A queued request.
pub struct Pending {
    rx: oneshot::Receiver<Running>,
    guard: WaitGuard,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.guard.id)
            .finish()
    }
}

impl Pending {
    /// The admitted request if the scheduler has admitted it already (never blocks).
    pub fn try_admitted(&mut self) -> Option<Running> {
        let r = self.rx.try_recv().ok();
        if r.is_some() {
            self.guard.armed = false;
        }
        r
    }

    /// Waits until the scheduler admits the request.
    pub async fn admitted(mut self) -> Result<Running, SubmitError> {
        let r = (&mut self.rx).await.map_err(|_| SubmitError::Closed);
        self.guard.armed = false;
        r
    }
}

/// An admitted request. Dropping it before [`Running::finish`] aborts it and frees its blocks.
pub struct Running {
    engine: Arc<Engine>,
    id: u64,
    /// The scheduler's decision.
    pub info: AdmitInfo,
    generated: usize,
    finished: bool,
    ttft_recorded: bool,
    prefill_seconds: f64,
    decode_seconds: f64,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("id", &self.id)
            .field("info", &self.info)
            .finish()
    }
}

impl Running {
    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Records the first output token (after the prefill of `info.first_token_seconds`).
    pub fn first_token(&mut self, token: u32) {
        self.generated += 1;
        self.prefill_seconds = self.info.first_token_seconds;
        if !self.ttft_recorded {
            self.ttft_recorded = true;
            let mut st = self.engine.lock();
            st.stats
                .ttft
                .observe(self.info.queue_seconds + self.info.first_token_seconds);
            st.stats
                .iteration_tokens
                .observe((self.info.prompt_tokens - self.info.cached_tokens + 1) as f64);
        }
        self.engine.step(self.id, token, true, None);
    }

    /// Records a further output token that took `itl` model seconds.
    pub fn next_token(&mut self, token: u32, itl: f64) {
        self.generated += 1;
        self.decode_seconds += itl;
        self.engine.step(self.id, token, false, Some(itl));
    }

    /// Output tokens so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Model seconds since admission.
    pub fn elapsed_model_seconds(&self) -> f64 {
        self.prefill_seconds + self.decode_seconds
    }

    /// Ends the request and records its statistics.
    pub fn finish(mut self, reason: FinishReason) {
        self.finished = true;
        let engine = Arc::clone(&self.engine);
        engine.finish(self.id, Some((reason, &self)));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            let engine = Arc::clone(&self.engine);
            engine.finish(self.id, Some((FinishReason::Abort, self)));
        }
    }
}
