//! The router serves in-process, without sockets (for callers that embed the simulator).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use fusioninfer_sim::{ModelTokenizer, Replica, SimConfig, router};
use tower::ServiceExt;

#[tokio::test]
async fn router_answers_without_a_listener() {
    let cfg = SimConfig {
        port: 9999,
        time_scale: 0.0,
        ..SimConfig::default()
    };
    let replica = Replica::standalone(cfg, Arc::new(ModelTokenizer::fallback())).unwrap();
    let app = router(Arc::clone(&replica));
    let req = Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"prompt": "hello", "max_tokens": 3}"#))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-inference-pod"], "127.0.0.1:9999");
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(
        replica.engine().state().cached_blocks,
        0,
        "2 tokens fill no block"
    );
    let res = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
