//! Helpers shared by the integration tests. Each test crate uses a different subset.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fusioninfer_sched::{Endpoint, EndpointMetrics};

/// The project's shared folder: `$FUSIONINFER_SHARED`, else `../shared` next to the workspace
/// root. `None` (with a loud message) when it is missing outside CI; in CI (`CI=true`) a
/// missing folder fails the test, because the fixtures must be there.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("FUSIONINFER_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "shared folder {} is missing; CI must provide it (or set FUSIONINFER_SHARED)",
            dir.display()
        );
    }
    // Straight to stderr: the test harness captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED: shared folder {} not found; set FUSIONINFER_SHARED to run the fixture tests !!!!!!!!\n",
        dir.display()
    );
    None
}

/// The text of `shared/<relative>`, or `None` when the shared folder is missing (see
/// [`shared_dir`]). A missing file inside an existing shared folder is a test failure.
pub fn shared_file(relative: &str) -> Option<String> {
    let path = shared_dir()?.join(relative);
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// `10.0.<i/250>.<i%250+1>:8000`.
pub fn address(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8000))
}

/// An endpoint with fresh metrics at `now`.
pub fn endpoint(i: usize, metrics: EndpointMetrics, now: Instant) -> Endpoint {
    Endpoint::new(address(i)).with_metrics(metrics, now)
}

/// Metrics with only the queue and KV usage set.
pub fn load(waiting: u32, kv: f64) -> EndpointMetrics {
    EndpointMetrics {
        waiting_requests: waiting,
        kv_cache_usage: kv,
        ..EndpointMetrics::default()
    }
}

/// `n` idle endpoints with fresh metrics.
pub fn idle_pool(n: usize, now: Instant) -> Vec<Endpoint> {
    (0..n).map(|i| endpoint(i, load(0, 0.0), now)).collect()
}

/// Deterministic lowercase text (xorshift) of `len` bytes.
pub fn text(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}
