//! The KV events vLLM 0.32 published in the shared fixture (`kv-events.bin`), decoded, fed to
//! the index, and matched by the fixture requests tokenized with the fixture tokenizer: the
//! keys a request gets are the keys of the blocks the engine announced.

use std::net::SocketAddr;
use std::path::Path;

use fusioninfer_kvcache::ModelTokenizer;
use fusioninfer_kvcache::events::{KvEvent, KvEventBatch, parse_frames};
use fusioninfer_sched::kv_index::{
    EndpointStatus, KvBlockIndex, KvIndexConfig, block_keys, first_parent,
};

/// The messages of `kv-events.bin`: per message a big-endian u32 frame count, then per frame
/// a big-endian u32 length and the bytes.
fn read_messages(bytes: &[u8]) -> Vec<(String, u64, KvEventBatch)> {
    let mut at = 0;
    let mut take = |n: usize| -> &[u8] {
        let slice = &bytes[at..at + n];
        at += n;
        slice
    };
    let u32_of = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap()) as usize;
    let mut messages = Vec::new();
    let mut consumed = 0;
    while consumed < bytes.len() && messages.len() < 100 {
        let count = u32_of(take(4));
        let mut frames = Vec::new();
        for _ in 0..count {
            let len = u32_of(take(4));
            frames.push(take(len));
        }
        consumed += 4 + frames.iter().map(|f| 4 + f.len()).sum::<usize>();
        messages.push(parse_frames(&frames).expect("a fixture message decodes"));
    }
    messages
}

fn body(dir: &Path, name: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("requests").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn stored(batch: &KvEventBatch) -> &fusioninfer_kvcache::events::BlockStored {
    match batch.events.as_slice() {
        [KvEvent::BlockStored(stored)] => stored,
        other => panic!("expected one BlockStored, got {other:?}"),
    }
}

#[test]
fn fixture_requests_match_the_blocks_vllm_announced() {
    let Some(shared) = fusioninfer_tests::shared_dir() else {
        return;
    };
    let dir = shared.join("fixtures/vllm-0.32.0-cpu");
    let messages = read_messages(&std::fs::read(dir.join("kv-events.bin")).unwrap());
    assert_eq!(messages.len(), 4);
    for (i, (topic, seq, batch)) in messages.iter().enumerate() {
        assert_eq!(topic, "kv@127.0.0.1:8001@tiny-llama");
        assert_eq!(*seq, i as u64);
        assert_eq!(batch.data_parallel_rank, Some(0));
        assert_eq!(stored(batch).block_size, 128);
    }

    let tokenizer =
        ModelTokenizer::from_file(&dir.join("tiny-llama-tokenizer/tokenizer.json"), None).unwrap();
    let ids = |name: &str, chat: bool| {
        tokenizer
            .request_token_ids(chat, &body(&dir, name))
            .unwrap()
            .expect("one prompt")
    };
    let chat = ids("chat-nonstream.json", true);
    let completion = ids("completion-nonstream.json", false);
    let multiturn = ids("extra-chat-multiturn.json", true);
    let short = ids("extra-completion-decode-block.json", false);
    // Prompt lengths vLLM reported (usage.prompt_tokens).
    assert_eq!(
        [chat.len(), completion.len(), multiturn.len(), short.len()],
        [869, 618, 910, 122]
    );
    assert_eq!(stored(&messages[0].2).token_ids, chat[..768]);
    assert_eq!(stored(&messages[1].2).token_ids, completion[..512]);
    assert_eq!(stored(&messages[2].2).token_ids, multiturn[768..896]);
    assert_eq!(
        stored(&messages[3].2).token_ids[..122],
        short[..],
        "the decode-filled block starts with the prompt"
    );

    let endpoint: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    let index = KvBlockIndex::new(KvIndexConfig::default());
    for (_, seq, batch) in &messages {
        let outcome = index.apply(endpoint, *seq, &batch.events);
        assert_eq!(outcome.skipped_events, 0, "{outcome:?}");
        assert!(!outcome.gap);
    }
    assert_eq!(index.status(endpoint), EndpointStatus::Known);
    assert_eq!(index.len(), 6 + 4 + 1 + 1);
    let keys = |tokens: &[u32]| block_keys(first_parent(None, None), tokens, 128, usize::MAX);
    let matched = |tokens: &[u32]| {
        index
            .longest_prefixes(&keys(tokens))
            .get(&endpoint)
            .copied()
    };
    assert_eq!(matched(&chat), Some(6));
    assert_eq!(matched(&completion), Some(4));
    // The second turn chains onto the first through parent_block_hash.
    assert_eq!(matched(&multiturn), Some(7));
    assert_eq!(
        matched(&short),
        None,
        "its only full block held generated tokens"
    );
    assert!(
        index
            .longest_prefixes(&block_keys(first_parent(None, Some("s")), &chat, 128, 1))
            .is_empty(),
        "another cache_salt shares nothing"
    );
}
