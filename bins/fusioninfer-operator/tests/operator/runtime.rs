//! The parts around the reconcile: leader election, CRD discovery, the controller's watches, and
//! the HTTP endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fusioninfer_core::plan::PlanOptions;
use fusioninfer_core::reconcile::OPTIONAL_CRDS;
use fusioninfer_operator::controller::controller;
use fusioninfer_operator::discovery::discover_crds;
use fusioninfer_operator::kinds::InstalledCrds;
use fusioninfer_operator::lease::LeaseLock;
use fusioninfer_operator::metrics::Metrics;
use fusioninfer_operator::run::keep_lease;
use fusioninfer_operator::server::{ServerState, serve};
use fusioninfer_operator::{Context, error_policy, reconcile};
use futures::{FutureExt, StreamExt};
use http::{Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::client::Body;
use kube_fake_client::ClientBuilder;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::support::{ApiCall, CallLog, recording};

const TTL: Duration = Duration::from_secs(15);

/// Two candidates over one API server: create, renew, follower stays out, release hands over.
/// Returns the calls both made.
pub async fn lease_handover() -> CallLog {
    let api = ClientBuilder::new().build().await.unwrap();
    let log = CallLog::default();
    let client = recording(api.clone(), &log);
    let mut a = LeaseLock::new(client.clone(), "ops", "leader", "pod-a", TTL);
    let mut b = LeaseLock::new(client.clone(), "ops", "leader", "pod-b", TTL);
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "first candidate creates the lease"
    );
    assert!(!b.try_acquire_or_renew().await.unwrap(), "held and fresh");
    assert!(a.try_acquire_or_renew().await.unwrap(), "holder renews");
    assert!(!b.try_acquire_or_renew().await.unwrap());
    a.release().await.unwrap();
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "released lease is taken at once"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap());
    let lease = Api::<Lease>::namespaced(api, "ops")
        .get("leader")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    log
}

/// A crashed leader (no renewals) loses the lease once it has looked unchanged for its duration
/// on the follower's own clock; the old leader then sees it is not leading.
pub async fn lease_expires_on_the_followers_clock() {
    let api = ClientBuilder::new().build().await.unwrap();
    let mut a = LeaseLock::new(api.clone(), "ops", "leader", "pod-a", TTL);
    let mut b = LeaseLock::new(api.clone(), "ops", "leader", "pod-b", TTL);
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    assert!(!b.try_acquire_or_renew().await.unwrap(), "not expired yet");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "expired: taken over"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "the old leader follows"
    );
}

/// The leader's keeper returns `LostLease` as soon as another replica holds the lease, and `Ok`
/// when told to stop.
pub async fn keeper_notices_a_lost_lease() {
    let api = ClientBuilder::new().build().await.unwrap();
    let mut a = LeaseLock::new(api.clone(), "ops", "leader", "pod-a", TTL);
    assert!(a.try_acquire_or_renew().await.unwrap());
    let (_stop_tx, stop_rx) = watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(api.clone(), "ops");
    leases
        .patch(
            "leader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "pod-b"}})),
        )
        .await
        .unwrap();
    let kept = keep_lease(&mut a, TTL / 3, TTL * 2 / 3, stop_rx).await;
    assert!(
        matches!(kept, Err(fusioninfer_operator::Error::LostLease(_))),
        "{kept:?}"
    );

    let mut c = LeaseLock::new(api, "ops", "other", "pod-c", TTL);
    assert!(c.try_acquire_or_renew().await.unwrap());
    let (stop_tx, stop_rx) = watch::channel(false);
    let keeper =
        tokio::spawn(async move { keep_lease(&mut c, TTL / 3, TTL * 2 / 3, stop_rx).await });
    tokio::time::sleep(TTL * 2).await;
    stop_tx.send(true).unwrap();
    assert!(
        keeper.await.unwrap().is_ok(),
        "renewed throughout, stopped cleanly"
    );
}

fn json_response(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn resource_list(group_version: &str, plurals: &[&str]) -> serde_json::Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": plurals.iter().map(|p| json!({
            "name": p, "singularName": "", "namespaced": true, "kind": "X", "verbs": ["list"]
        })).collect::<Vec<_>>()
    })
}

/// Discovery: a served plural means installed, a 404 or a group/version without that plural
/// means missing, any other failure is an error. Returns the calls made.
pub async fn discovery_reads_group_versions() -> CallLog {
    let service = tower::service_fn(|request: Request<Body>| async move {
        let path = request.uri().path().to_owned();
        let response = match path.as_str() {
            "/apis/leaderworkerset.x-k8s.io/v1" => json_response(
                200,
                resource_list(
                    "leaderworkerset.x-k8s.io/v1",
                    &["leaderworkersets", "leaderworkersets/status"],
                ),
            ),
            "/apis/inference.networking.k8s.io/v1" => json_response(
                200,
                resource_list("inference.networking.k8s.io/v1", &["inferenceobjectives"]),
            ),
            "/apis/gateway.networking.k8s.io/v1" => json_response(
                200,
                resource_list("gateway.networking.k8s.io/v1", &["gateways", "httproutes"]),
            ),
            _ => json_response(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        };
        Ok::<_, Infallible>(response)
    });
    let log = CallLog::default();
    let client = recording(Client::new(service, "default"), &log);
    let installed = discover_crds(&client).await.expect("discovery");
    let names: Vec<_> = installed.names().collect();
    assert_eq!(
        names,
        [OPTIONAL_CRDS[3].name, OPTIONAL_CRDS[0].name],
        "LWS and HTTPRoute served; Volcano 404; InferencePool v1 group without the plural"
    );

    let failing = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(json_response(
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500}),
        ))
    });
    let error = discover_crds(&Client::new(failing, "default"))
        .await
        .expect_err("a failing API server is not a cluster without CRDs");
    assert!(
        matches!(error, fusioninfer_operator::Error::Discovery { .. }),
        "{error}"
    );
    log
}

/// The controller's own calls: it lists and watches InferenceServices, every managed kind and
/// pods. Runs the real controller against a mock API server whose lists are empty and whose
/// watches never answer (time is paused, so "a while" is deterministic).
pub async fn controller_lists_and_watches() -> CallLog {
    let service = tower::service_fn(|request: Request<Body>| async move {
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
        if watch {
            futures::future::pending::<()>().await;
        }
        Ok::<_, Infallible>(json_response(
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        ))
    });
    let log = CallLog::default();
    let client = recording(Client::new(service, "default"), &log);
    let ctx = Arc::new(Context::new(
        client.clone(),
        PlanOptions::default(),
        InstalledCrds::all(),
        Arc::new(Metrics::new()),
        "test",
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(
        controller(client, &ctx.kinds)
            .graceful_shutdown_on(stopped.map(|_| ()))
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {}),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = stop.send(());
    running.abort();
    let calls = log.distinct();
    let mut expected = vec![
        ApiCall::resource("list", "fusioninfer.io", "inferenceservices"),
        ApiCall::resource("watch", "fusioninfer.io", "inferenceservices"),
        ApiCall::resource("list", "", "pods"),
        ApiCall::resource("watch", "", "pods"),
    ];
    for kind in &ctx.kinds {
        for verb in ["list", "watch"] {
            expected.push(ApiCall::resource(
                verb,
                &kind.resource.group,
                &kind.resource.plural,
            ));
        }
    }
    for call in &expected {
        assert!(
            calls.contains(call),
            "controller never made {call:?}; made {calls:?}"
        );
    }
    assert_eq!(calls.len(), expected.len(), "{calls:?}");
    log
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// `/healthz`, `/readyz` (503 until discovery finished) and `/metrics` on 127.0.0.1:0.
pub async fn endpoints_serve_health_and_metrics() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        ServerState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        stopped.map(|_| ()),
    ));
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    ready.store(true, Ordering::Relaxed);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    metrics.reconciled(Duration::from_millis(3), None);
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("fusioninfer_operator_reconciles_total 1"),
        "{body}"
    );
    assert!(body.contains("fusioninfer_operator_reconcile_duration_seconds_bucket"));
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A mock API server for the whole process: Leases are served by an in-memory API server, no
/// optional CRD is installed, every list is empty and every watch stays open.
fn process_api(leases: Client) -> Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let leases = leases.clone();
        async move {
            let path = request.uri().path().to_owned();
            if path.contains("/leases") {
                return leases.send(request).await.map_err(|e| e.to_string());
            }
            if path.split('/').filter(|s| !s.is_empty()).count() == 3 {
                // /apis/{group}/{version}: discovery of a CRD that is not installed.
                return Ok(json_response(
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}),
                ));
            }
            if request
                .uri()
                .query()
                .is_some_and(|q| q.contains("watch=true"))
            {
                futures::future::pending::<()>().await;
            }
            Ok(json_response(
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            ))
        }
    });
    Client::new(service, "default")
}

fn settings(identity: &str) -> fusioninfer_operator::run::Settings {
    fusioninfer_operator::run::Settings {
        epp_image: "epp:test".into(),
        pd_sidecar_image: "pd-sidecar:test".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        lease_namespace: "ops".into(),
        lease_name: "fusioninfer-operator".into(),
        identity: identity.into(),
        lease_duration: TTL,
        concurrency: 2,
        reconcile_timeout: Duration::from_secs(30),
    }
}

async fn holder(leases: &Client) -> Option<String> {
    Api::<Lease>::namespaced(leases.clone(), "ops")
        .get_opt("fusioninfer-operator")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

/// The whole process: it takes the lease, runs the controller, and on the shutdown signal stops
/// and releases the lease for the next replica.
pub async fn process_leads_and_hands_over_on_shutdown() {
    let leases = ClientBuilder::new().build().await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(fusioninfer_operator::run::run(
        settings("pod-a"),
        process_api(leases.clone()),
        stopped.map(|_| ()),
    ));
    tokio::time::sleep(TTL).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("pod-a"));
    stop.send(()).unwrap();
    running.await.unwrap().expect("graceful shutdown");
    assert_eq!(holder(&leases).await, None, "lease released");
}

/// A leader whose lease is taken over stops with `LostLease` (and its process exits).
pub async fn process_stops_when_the_lease_is_lost() {
    let leases = ClientBuilder::new().build().await.unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(fusioninfer_operator::run::run(
        settings("pod-a"),
        process_api(leases.clone()),
        stopped.map(|_| ()),
    ));
    tokio::time::sleep(TTL).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("pod-a"));
    Api::<Lease>::namespaced(leases.clone(), "ops")
        .patch(
            "fusioninfer-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "pod-b"}})),
        )
        .await
        .unwrap();
    let result = running.await.unwrap();
    assert!(
        matches!(result, Err(fusioninfer_operator::Error::LostLease(_))),
        "{result:?}"
    );
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some("pod-b"),
        "not released by the loser"
    );
}
