//! What the sidecar adds to a request: the same sequential requests sent to a simulated decoder
//! directly, through the sidecar without the header (pass-through), and through the sidecar
//! with a prefiller named (the two-step hand-off), on loopback with the simulator's latency
//! model scaled down 1000×, so that the wall time is mostly HTTP and proxy work. Prints
//! p50 / p90 / mean per path; numbers are reported in the README, never asserted.
//!
//! `cargo run -p fusioninfer-pd --example bench-pd [-- REQUESTS]` (default 300 per path).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fusioninfer_pd::{Options, RunningSidecar};
use fusioninfer_sim::ModelTokenizer;
use fusioninfer_sim::config::SimConfig;
use fusioninfer_sim::server::SimServer;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

async fn sim(instance: &str) -> SimServer {
    let config = SimConfig {
        port: 0,
        instance: instance.to_owned(),
        time_scale: 0.001,
        max_model_len: 1 << 16,
        ..SimConfig::default()
    };
    SimServer::start(config, Arc::new(ModelTokenizer::fallback()))
        .await
        .expect("simulator starts")
}

/// One request on a kept-alive connection; the answer is read whole.
async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    to: SocketAddr,
    prefiller: Option<SocketAddr>,
    body: &Bytes,
) -> Duration {
    sender.ready().await.expect("the connection stays open");
    let started = Instant::now();
    let mut request = hyper::Request::post("/v1/chat/completions")
        .header("host", to.to_string())
        .header("content-type", "application/json");
    if let Some(p) = prefiller {
        request = request.header("x-prefiller-host-port", p.to_string());
    }
    let response = sender
        .send_request(request.body(Full::new(body.clone())).unwrap())
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("body");
    started.elapsed()
}

async fn run(to: SocketAddr, prefiller: Option<SocketAddr>, n: usize) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(to).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        // A distinct ~600-token prompt each time: every request needs a real prefill.
        let prompt: String = (0..300)
            .map(|w| format!("w{} ", (w * 31 + i) % 1009))
            .collect();
        let body = Bytes::from(
            serde_json::json!({
                "model": "sim-model",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 8,
            })
            .to_string(),
        );
        times.push(post(&mut sender, to, prefiller, &body).await);
    }
    times
}

fn report(name: &str, mut times: Vec<Duration>) -> f64 {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    println!(
        "{name:<26} n={:<5} p50 {:>7.3} ms   p90 {:>7.3} ms   mean {:>7.3} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        mean
    );
    mean
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300)
        .clamp(10, 100_000);
    let prefill = sim("prefill").await;
    let decode = sim("decode").await;
    let sidecar = RunningSidecar::start(&Options::local(decode.addr, vec![prefill.addr]))
        .await
        .expect("sidecar starts");
    // Warm up every path once.
    run(decode.addr, None, 5).await;
    run(sidecar.address, Some(prefill.addr), 5).await;
    let direct = report("decoder directly", run(decode.addr, None, n).await);
    let through = report("sidecar, pass-through", run(sidecar.address, None, n).await);
    let pd = report(
        "sidecar, hand-off",
        run(sidecar.address, Some(prefill.addr), n).await,
    );
    println!(
        "pass-through adds {:.3} ms per request; the hand-off (a prefill call, then the decode) adds {:.3} ms over the direct call",
        through - direct,
        pd - direct
    );
    sidecar.shutdown(Duration::from_secs(2)).await;
    prefill.shutdown().await;
    decode.shutdown().await;
}
