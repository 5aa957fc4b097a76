//! KV-event routing end to end: simulators (or a hand-driven ZMQ publisher) publish KV events,
//! the picker's subscribers feed the `kv-aware` strategy's index, and
//! `precise-prefix-cache-scorer` scores from it; through Envoy, requests the picker tokenizes
//! itself go where the blocks are.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    Envoy, EnvoyKnobs, TestEpp, client, completion_body, envoy_binary, envoy_config, post, words,
};
use fusioninfer_kvcache::ModelTokenizer;
use fusioninfer_kvcache::events::{BlockStored, KvEvent, KvEventBatch, frames};
use fusioninfer_sched::kv_index::{EndpointStatus, KvEventFeed};
use fusioninfer_sched::plugins::PrecisePrefixCacheScorer;
use fusioninfer_sched::{CycleState, Endpoint, Request, Scorer};
use fusioninfer_sim::kv_events::EndpointMode;
use fusioninfer_sim::{KvEventsConfig, SimServer};
use serde_json::json;
use zeromq::{Socket, SocketSend};

const BLOCK: usize = 16;

/// Polls `condition` every 20 ms for up to 20 s; false if it never held.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

fn endpoints_file(entries: &[(SocketAddr, String)]) -> String {
    let list: Vec<_> = entries
        .iter()
        .map(|(address, kv)| json!({"address": address.to_string(), "kvEventsAddress": kv}))
        .collect();
    json!({ "endpoints": list }).to_string()
}

fn feed(epp: &TestEpp) -> KvEventFeed {
    let feeds = epp.epp.picker().scheduler().kv_event_feeds();
    assert_eq!(feeds.len(), 1, "kv-aware has one precise scorer");
    feeds[0].clone()
}

/// The precise scores of a completion `prompt` over `endpoints` (tokenized like the
/// simulators: the fallback tokenizer).
fn scores(feed: &KvEventFeed, prompt: &str, endpoints: &[SocketAddr]) -> Vec<f64> {
    let scorer = PrecisePrefixCacheScorer::new("precise", feed.clone());
    let mut request = Request::completion("sim-model", prompt);
    let body = json!({"prompt": prompt});
    request.token_ids = ModelTokenizer::fallback()
        .request_token_ids(false, body.as_object().unwrap())
        .unwrap();
    let endpoints: Vec<Endpoint> = endpoints.iter().map(|a| Endpoint::new(*a)).collect();
    let candidates: Vec<&Endpoint> = endpoints.iter().collect();
    scorer.score(
        &request,
        &mut CycleState::new(0, Instant::now(), 0),
        &candidates,
    )
}

/// Two simulators with caches of `num_blocks` 16-token blocks publishing KV events, and a
/// `kv-aware` picker subscribed to both (synced: each has announced a cache reset).
async fn kv_aware_fleet(
    num_blocks: usize,
) -> (
    Vec<SimServer>,
    Vec<(SocketAddr, String)>,
    TestEpp,
    KvEventFeed,
) {
    let sims = common::start_sims(2, |c| {
        c.num_blocks = num_blocks;
        c.block_size = BLOCK;
        c.kv_events = Some(KvEventsConfig {
            endpoint: "tcp://127.0.0.1:0".into(),
            topic: "kv@{host}:{port}@{model}".into(),
            mode: EndpointMode::Bind,
        });
    })
    .await;
    let entries: Vec<(SocketAddr, String)> = sims
        .iter()
        .map(|s| (s.addr, s.kv_events_endpoint().unwrap().to_owned()))
        .collect();
    let epp =
        TestEpp::start_with_file(&endpoints_file(&entries), &["--strategy", "kv-aware"]).await;
    epp.wait_ready(2).await;
    let feed = feed(&epp);
    let http = client();
    // The subscription is up once a cache reset (AllBlocksCleared) has arrived.
    for sim in &sims {
        let reset = format!("{}/reset_prefix_cache", sim.url());
        let mut synced = false;
        for _ in 0..200 {
            assert_eq!(post(&http, &reset, "").await.status, 200);
            if feed.index.status(sim.addr) == EndpointStatus::Known {
                synced = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(synced, "no KV events from {}", sim.addr);
    }
    (sims, entries, epp, feed)
}

/// Sends `count` other long prompts straight to `sim`: they push earlier ones out of its
/// small cache.
async fn crowd_out(http: &reqwest::Client, sim: &SimServer, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let url = format!("{}/v1/completions", sim.url());
        let answer = post(http, &url, completion_body(&words(700, seed), false)).await;
        assert_eq!(answer.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_cache_reset_on_simulators_reach_the_scorer() {
    // 16 blocks: two ~200-token prompts do not fit together.
    let (sims, entries, epp, feed) = kv_aware_fleet(16).await;
    let addresses = [sims[0].addr, sims[1].addr];
    let http = client();

    let prompt = words(700, 1);
    let completions = |sim: usize| format!("{}/v1/completions", sims[sim].url());
    assert_eq!(
        post(&http, &completions(0), completion_body(&prompt, false))
            .await
            .status,
        200
    );
    assert!(
        eventually(|| scores(&feed, &prompt, &addresses) == [1.0, 0.0]).await,
        "the first server's stored blocks were not indexed: {:?}",
        scores(&feed, &prompt, &addresses)
    );

    // Other long prompts push the first one out of the small cache: BlockRemoved.
    crowd_out(&http, &sims[0], 2..5).await;
    assert!(
        eventually(|| scores(&feed, &prompt, &addresses)[0] == 0.0).await,
        "eviction did not reach the index: {:?}",
        scores(&feed, &prompt, &addresses)
    );

    // A cache reset (what a restarted engine announces) forgets everything on that server.
    assert_eq!(
        post(&http, &completions(1), completion_body(&prompt, false))
            .await
            .status,
        200
    );
    assert!(eventually(|| scores(&feed, &prompt, &addresses)[1] == 1.0).await);
    let reset = format!("{}/reset_prefix_cache", sims[1].url());
    assert_eq!(post(&http, &reset, "").await.status, 200);
    assert!(
        eventually(|| scores(&feed, &prompt, &addresses)[1] == 0.0).await,
        "AllBlocksCleared did not clear the server"
    );
    assert_eq!(feed.index.status(sims[1].addr), EndpointStatus::Known);
    assert!(epp.metric("fusioninfer_epp_kv_event_messages_total{outcome=\"applied\"}") > 0.0);

    // The endpoint leaving the pool drops its state.
    std::fs::write(&epp.endpoints_file, endpoints_file(&entries[..1])).unwrap();
    assert!(eventually(|| feed.index.status(sims[1].addr) == EndpointStatus::Silent).await);
}

/// POSTs through the gateway, retrying a 429 a few times: on a loaded test machine a scrape can
/// come late enough for the picker to see only stale metrics (and say so with 429 +
/// retry-after, as it should).
async fn post_retrying(http: &reqwest::Client, url: &str, body: String) -> common::Answer {
    for _ in 0..20 {
        let answer = post(http, url, body.clone()).await;
        if answer.status != 429 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    post(http, url, body).await
}

/// What the picker knew, for a failed routing assertion.
fn diagnosis(epp: &TestEpp, feed: &KvEventFeed, addresses: &[SocketAddr]) -> String {
    let status: Vec<_> = addresses
        .iter()
        .map(|a| (a, feed.index.status(*a)))
        .collect();
    let metrics: Vec<_> = epp
        .epp
        .store()
        .ready()
        .iter()
        .map(|e| (e.address, e.metrics.clone()))
        .collect();
    let kv_lines: Vec<_> = epp
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("fusioninfer_epp_kv"))
        .map(str::to_owned)
        .collect();
    format!(
        "status {status:?}\nmetrics {metrics:#?}\n{}",
        kv_lines.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_envoy_requests_follow_their_blocks_and_leave_after_eviction() {
    let Some(envoy_binary) = envoy_binary() else {
        return;
    };
    // Room for 4–5 prompts: one request in flight never brings a server near the saturation
    // detector's 80 % KV use, so the picker's choice is the scorers' alone.
    let (sims, _entries, epp, feed) = kv_aware_fleet(64).await;
    let addresses = [sims[0].addr, sims[1].addr];
    let envoy = Envoy::start(
        &envoy_binary,
        &envoy_config(&EnvoyKnobs::new(epp.epp.grpc_address, &addresses)),
    )
    .await;
    let http = client();
    let gateway = envoy.url("/v1/completions");
    let prompt = words(700, 1);
    let direct = |sim: usize| format!("{}/v1/completions", sims[sim].url());

    // Only the second server has seen the prompt (not through the picker, so approximate
    // routing could not know): the picker tokenizes the request and follows the blocks.
    assert_eq!(
        post(&http, &direct(1), completion_body(&prompt, false))
            .await
            .status,
        200
    );
    assert!(eventually(|| scores(&feed, &prompt, &addresses) == [0.0, 1.0]).await);
    for _ in 0..3 {
        let answer = post_retrying(&http, &gateway, completion_body(&prompt, false)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.picked,
            Some(sims[1].addr.to_string()),
            "{}",
            diagnosis(&epp, &feed, &addresses)
        );
        assert!(
            answer.cached_tokens.unwrap_or(0) > 0,
            "served from cache: {answer:?}"
        );
    }

    // Evicted there and cached on the first server instead: the requests move with it.
    crowd_out(&http, &sims[1], 2..10).await;
    assert_eq!(
        post(&http, &direct(0), completion_body(&prompt, false))
            .await
            .status,
        200
    );
    assert!(
        eventually(|| scores(&feed, &prompt, &addresses) == [1.0, 0.0]).await,
        "{:?}",
        scores(&feed, &prompt, &addresses)
    );
    let answer = post_retrying(&http, &gateway, completion_body(&prompt, true)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.picked,
        Some(sims[0].addr.to_string()),
        "{}",
        diagnosis(&epp, &feed, &addresses)
    );
    assert!(epp.metric("fusioninfer_epp_kv_index_blocks") > 0.0);
}

fn stored(hash: u64, tokens: Vec<u32>) -> KvEvent {
    let block_size = tokens.len() as u32;
    KvEvent::BlockStored(BlockStored::new(vec![hash], None, tokens, block_size))
}

async fn send(socket: &mut zeromq::PubSocket, parts: Vec<Vec<u8>>) {
    let parts: Vec<bytes::Bytes> = parts.into_iter().map(bytes::Bytes::from).collect();
    socket
        .send(zeromq::ZmqMessage::try_from(parts).unwrap())
        .await
        .unwrap();
}

async fn publish(socket: &mut zeromq::PubSocket, seq: u64, events: Vec<KvEvent>) {
    send(
        socket,
        frames("kv@test", seq, &KvEventBatch::now(events)).to_vec(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_gaps_restarts_and_garbage_from_a_publisher() {
    let mut publisher = zeromq::PubSocket::new();
    let bound = publisher
        .bind("tcp://127.0.0.1:0")
        .await
        .unwrap()
        .to_string();
    // An endpoint address nobody serves: the index state does not need a ready server.
    let endpoint: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let epp = TestEpp::start_with_file(
        &endpoints_file(&[(endpoint, bound.clone())]),
        &["--strategy", "kv-aware"],
    )
    .await;
    let feed = feed(&epp);
    let tokens: Vec<u32> = (1..=BLOCK as u32).collect();
    let prompt_keys = || {
        fusioninfer_sched::kv_index::block_keys(
            fusioninfer_sched::kv_index::first_parent(None, None),
            &tokens,
            BLOCK,
            1,
        )
    };
    let held = || {
        feed.index
            .longest_prefixes(&prompt_keys())
            .contains_key(&endpoint)
    };

    // Sequence 0 until the subscriber hears it (a later 0 counts as a restart, also fine).
    let mut synced = false;
    for _ in 0..400 {
        publish(&mut publisher, 0, vec![KvEvent::AllBlocksCleared]).await;
        if feed.index.status(endpoint) == EndpointStatus::Known {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(synced, "the subscriber never connected to {bound}");
    publish(&mut publisher, 1, vec![stored(7, tokens.clone())]).await;
    assert!(eventually(held).await);

    // Garbage is counted and skipped; the stream goes on.
    send(
        &mut publisher,
        vec![b"kv@test".to_vec(), vec![1, 2, 3], vec![0xc1]],
    )
    .await;
    send(
        &mut publisher,
        vec![
            b"kv@test".to_vec(),
            2u64.to_be_bytes().to_vec(),
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
        ],
    )
    .await;
    assert!(
        eventually(
            || epp.metric("fusioninfer_epp_kv_event_messages_total{outcome=\"malformed\"}") >= 2.0
        )
        .await
    );
    assert!(held(), "malformed messages change nothing");

    // Messages 2..4 lost: the endpoint is unknown and its entries are dropped.
    publish(&mut publisher, 5, vec![stored(7, tokens.clone())]).await;
    assert!(
        eventually(|| matches!(feed.index.status(endpoint), EndpointStatus::Unknown { .. })).await
    );
    assert!(epp.metric("fusioninfer_epp_kv_event_messages_total{outcome=\"gap\"}") >= 1.0);

    // The publisher restarts: sequence 0 again empties the endpoint and makes it known.
    publish(&mut publisher, 0, vec![stored(8, tokens.clone())]).await;
    assert!(eventually(|| feed.index.status(endpoint) == EndpointStatus::Known).await);
    assert!(epp.metric("fusioninfer_epp_kv_event_messages_total{outcome=\"restart\"}") >= 1.0);
    assert!(
        eventually(held).await,
        "blocks stored after the restart count"
    );
    assert!(epp.metric("fusioninfer_epp_kv_index_blocks") >= 1.0);
}
