//! vLLM-compatible prefix-cache block hashes.
//!
//! vLLM (v1 engine, `prefix_caching_hash_algo="sha256"`) hashes every full block as
//! `sha256(pickle.dumps((parent_hash, tuple(token_ids), extra_keys), protocol=5))`, where
//! `parent_hash` is the parent's full 32-byte digest (for the first block `NONE_HASH` =
//! `sha256(pickle.dumps("vllm-none-hash", protocol=5))`) and `extra_keys` is `None` or a tuple
//! (the LoRA name for adapter requests). KV events publish the low 64 bits of the digest read
//! as a big-endian integer. This module writes exactly the pickle bytes CPython produces for
//! that tuple, so the simulator's hashes equal the real engine's (checked against the captured
//! KV events in the fidelity tests).

use sha2::{Digest, Sha256};

/// A full 32-byte block digest, chained into the next block's hash.
pub type BlockDigest = [u8; 32];

/// The digest that stands in for the parent of a request's first block.
pub fn none_hash() -> BlockDigest {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&[0x80, 5]); // PROTO 5
    let mut body = Vec::new();
    push_str(&mut body, "vllm-none-hash");
    body.push(b'.');
    frame(&mut out, &body);
    Sha256::digest(&out).into()
}

/// The hash of one full block: `parent` chained with the block's token ids and the request's
/// extra keys (`Some(lora_name)` for LoRA requests, `None` otherwise).
pub fn hash_block(parent: &BlockDigest, token_ids: &[u32], extra_key: Option<&str>) -> BlockDigest {
    Sha256::digest(pickle_block(parent, token_ids, extra_key)).into()
}

/// The 64-bit value vLLM publishes for a digest (`int.from_bytes(h, "big") & (2**64 - 1)`).
pub fn published_hash(digest: &BlockDigest) -> u64 {
    let mut low = [0u8; 8];
    low.copy_from_slice(&digest[24..]);
    u64::from_be_bytes(low)
}

/// The digests of every full block of `tokens`, chained from [`none_hash`].
pub fn hash_full_blocks(
    tokens: &[u32],
    block_size: usize,
    extra_key: Option<&str>,
) -> Vec<BlockDigest> {
    let mut parent = none_hash();
    tokens
        .chunks_exact(block_size.max(1))
        .map(|block| {
            parent = hash_block(&parent, block, extra_key);
            parent
        })
        .collect()
}

/// `pickle.dumps((parent, tuple(token_ids), extra), protocol=5)` as CPython writes it.
fn pickle_block(parent: &BlockDigest, token_ids: &[u32], extra_key: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(48 + token_ids.len() * 3);
    // parent bytes: SHORT_BINBYTES + MEMOIZE
    body.push(b'C');
    body.push(32);
    body.extend_from_slice(parent);
    body.push(0x94);
    // tuple of ints
    push_tuple(&mut body, token_ids.len(), |b| {
        for &t in token_ids {
            push_int(b, i64::from(t));
        }
    });
    // extra keys
    match extra_key {
        None => body.push(b'N'),
        Some(name) => push_tuple(&mut body, 1, |b| push_str(b, name)),
    }
    body.push(0x87); // TUPLE3
    body.push(0x94); // MEMOIZE
    body.push(b'.'); // STOP
    let mut out = Vec::with_capacity(body.len() + 11);
    out.extend_from_slice(&[0x80, 5]);
    frame(&mut out, &body);
    out
}

/// Protocol-4+ framing: a FRAME opcode with the little-endian length, when the frame holds at
/// least 4 bytes (CPython's `_FRAME_SIZE_MIN`).
fn frame(out: &mut Vec<u8>, body: &[u8]) {
    if body.len() >= 4 {
        out.push(0x95);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(body);
}

fn push_tuple(out: &mut Vec<u8>, len: usize, items: impl FnOnce(&mut Vec<u8>)) {
    match len {
        0 => {
            out.push(b')'); // EMPTY_TUPLE, not memoized
            return;
        }
        1..=3 => items(out),
        _ => {
            out.push(b'('); // MARK
            items(out);
        }
    }
    out.push(match len {
        1 => 0x85,
        2 => 0x86,
        3 => 0x87,
        _ => b't',
    });
    out.push(0x94);
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    if (0..=0xff).contains(&v) {
        out.push(b'K');
        out.push(v as u8);
    } else if (0..=0xffff).contains(&v) {
        out.push(b'M');
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&v) {
        out.push(b'J');
        out.extend_from_slice(&(v as i32).to_le_bytes());
    } else {
        // LONG1: minimal two's-complement little-endian bytes.
        let bytes = v.to_le_bytes();
        let mut n = 8;
        while n > 1 {
            let last = bytes[n - 1];
            let prev_sign = bytes[n - 2] & 0x80;
            if (last == 0 && prev_sign == 0) || (last == 0xff && prev_sign != 0) {
                n -= 1;
            } else {
                break;
            }
        }
        out.push(0x8a);
        out.push(n as u8);
        out.extend_from_slice(&bytes[..n]);
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if b.len() <= 0xff {
        out.push(0x8c); // SHORT_BINUNICODE
        out.push(b.len() as u8);
    } else {
        out.push(b'X'); // BINUNICODE
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(b);
    out.push(0x94);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Byte strings produced by CPython 3.11 `pickle.dumps(..., protocol=5)`.
    #[test]
    fn pickle_bytes_match_cpython() {
        let parent = [b'a'; 32];
        assert_eq!(
            hex(&pickle_block(&parent, &[1, 300, 70000], None)),
            "800595330000000000000043206161616161616161616161616161616161616161616161616161616161616161944b014d2c014a7011010087944e87942e"
        );
        assert_eq!(
            hex(&pickle_block(&parent, &[1, 300, 70000, 5], Some("lora"))),
            "8005953e000000000000004320616161616161616161616161616161616161616161616161616161616161616194284b014d2c014a701101004b0574948c046c6f726194859487942e"
        );
    }

    #[test]
    fn published_hash_is_low_64_bits_big_endian() {
        let mut d = [0u8; 32];
        d[31] = 1;
        d[24] = 0x80;
        assert_eq!(published_hash(&d), 0x8000_0000_0000_0001);
    }

    #[test]
    fn chained_hashes_depend_on_parent_and_lora() {
        let tokens: Vec<u32> = (0..32).collect();
        let plain = hash_full_blocks(&tokens, 16, None);
        let lora = hash_full_blocks(&tokens, 16, Some("a"));
        assert_eq!(plain.len(), 2);
        assert_ne!(plain[0], lora[0]);
        assert_eq!(plain[1], hash_block(&plain[0], &tokens[16..], None));
        assert_ne!(plain[1], hash_block(&none_hash(), &tokens[16..], None));
    }
}
