//! API failures injected with `tower-test`: the operator's client talks to a mock whose handler
//! forwards to the in-memory API server, except for requests a test chooses to fail (409, 500,
//! 422) or to leave unanswered (a hung API server). Time is paused, so the reconcile timeout
//! fires deterministically, without waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fusioninfer_core::reconcile::BACKOFF_BASE;
use fusioninfer_operator::error_policy;
use fusioninfer_operator::kinds::InstalledCrds;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::scenarios::PD_VOLCANO;
use crate::support::{ApiCall, CallLog, Harness, fake_api, recording};

/// What to do with a matching request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answer with this HTTP status and a Kubernetes `Status` body.
    Status(u16),
    /// Never answer.
    Hang,
}

type Matcher = Box<dyn Fn(&Method, &str) -> bool + Send + Sync>;

/// Faults on or off, for requests matching a predicate.
#[derive(Clone)]
struct Faults {
    on: Arc<AtomicBool>,
    rule: Arc<Mutex<Option<(Fault, Matcher)>>>,
}

impl Faults {
    fn set(&self, fault: Fault, matcher: impl Fn(&Method, &str) -> bool + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Some((fault, Box::new(matcher)));
        self.on.store(true, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.on.store(false, Ordering::SeqCst);
    }

    fn pick(&self, method: &Method, path: &str) -> Option<Fault> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        let rule = self.rule.lock().unwrap();
        let (fault, matcher) = rule.as_ref()?;
        matcher(method, path).then_some(*fault)
    }
}

fn status_response(code: u16) -> Response<Body> {
    let reason = match code {
        409 => "Conflict",
        422 => "Invalid",
        500 => "InternalError",
        _ => "Unknown",
    };
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected {code}"), "reason": reason, "code": code
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// A harness whose operator client goes through a tower-test mock.
async fn faulty_harness() -> (Harness, Faults) {
    let installed = InstalledCrds::all();
    let fake = fake_api(&installed).await;
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let faults = Faults {
        on: Arc::default(),
        rule: Arc::new(Mutex::new(None)),
    };
    let injector = faults.clone();
    let upstream = fake.clone();
    tokio::spawn(async move {
        let mut hung = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            match injector.pick(request.method(), request.uri().path()) {
                Some(Fault::Status(code)) => respond.send_response(status_response(code)),
                Some(Fault::Hang) => hung.push(respond),
                None => {
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        match upstream.send(request).await {
                            Ok(response) => respond.send_response(response),
                            Err(e) => respond.send_error(e),
                        }
                    });
                }
            }
        }
    });
    let mocked = kube::Client::new(mock, "default");
    let mut harness = Harness::over(fake, installed);
    // The operator's client: recorded, then through the mock, then the in-memory server.
    let log = CallLog::default();
    let ctx = fusioninfer_operator::Context::new(
        recording(mocked, &log),
        fusioninfer_core::plan::PlanOptions::default(),
        InstalledCrds::all(),
        harness.ctx.metrics.clone(),
        "test-operator",
    )
    .with_reconcile_timeout(std::time::Duration::from_secs(30));
    harness.ctx = Arc::new(ctx);
    harness.log = log;
    (harness, faults)
}

fn status_writes(calls: &[ApiCall]) -> usize {
    calls
        .iter()
        .filter(|c| matches!(c, ApiCall::Resource { verb, resource, .. } if verb == "patch" && resource == "inferenceservices/status"))
        .count()
}

async fn service_ref(
    h: &Harness,
) -> (
    Arc<fusioninfer_api::InferenceService>,
    ObjectRef<fusioninfer_api::InferenceService>,
) {
    let isvc = h.get("llm", "chat").await;
    let reference = ObjectRef::from_obj(&isvc);
    (Arc::new(isvc), reference)
}

/// 409 on one apply: the reconcile fails, the others are still applied, the status is not
/// written, the error policy backs off exponentially per object, and a success resets it.
pub async fn conflict_on_apply_requeues_with_backoff() -> CallLog {
    let (h, faults) = faulty_harness().await;
    h.create(PD_VOLCANO).await;
    faults.set(Fault::Status(409), |m, p| {
        m == Method::PATCH && p.ends_with("/statefulsets/chat-decode")
    });
    let error = h
        .reconcile("llm", "chat")
        .await
        .expect_err("conflict fails the reconcile");
    assert_eq!(error.metric_label(), "conflict");
    assert!(
        error.to_string().contains("StatefulSet chat-decode"),
        "{error}"
    );
    assert_eq!(
        status_writes(&h.log.calls()),
        0,
        "no status after a failed apply"
    );
    assert!(h.get("llm", "chat").await.status.is_none());
    // The other objects were applied.
    assert_eq!(h.children("llm").await.len(), 15);

    let (isvc, reference) = service_ref(&h).await;
    assert_eq!(
        error_policy(isvc.clone(), &error, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    let again = h
        .reconcile("llm", "chat")
        .await
        .expect_err("still conflicting");
    assert_eq!(
        error_policy(isvc.clone(), &again, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE * 2)
    );
    assert_eq!(
        error_policy(isvc.clone(), &again, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE * 4)
    );
    assert_eq!(h.ctx.failures(&reference), 3);

    faults.clear();
    h.reconcile("llm", "chat").await.expect("recovers");
    assert_eq!(h.ctx.failures(&reference), 0, "success resets the backoff");
    assert_eq!(
        error_policy(isvc, &again, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    assert_eq!(h.children("llm").await.len(), 16);
    assert_eq!(status_writes(&h.log.calls()), 1);
    h.log
}

/// 500 on a list: error, no write at all, no status.
pub async fn server_error_on_list_requeues() -> CallLog {
    let (h, faults) = faulty_harness().await;
    h.create(PD_VOLCANO).await;
    faults.set(Fault::Status(500), |m, p| {
        m == Method::GET && p.ends_with("/pods")
    });
    let error = h
        .reconcile("llm", "chat")
        .await
        .expect_err("500 fails the reconcile");
    assert_eq!(error.metric_label(), "server_error");
    assert_eq!(status_writes(&h.log.calls()), 0);
    let (isvc, _) = service_ref(&h).await;
    assert_eq!(
        error_policy(isvc, &error, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    h.log
}

/// A Ready service whose new generation cannot be applied (500) keeps its old status: the
/// status never claims the new generation.
pub async fn failed_apply_does_not_claim_the_new_generation() -> CallLog {
    let (h, faults) = faulty_harness().await;
    h.create(PD_VOLCANO).await;
    h.reconcile("llm", "chat").await.expect("reconcile");
    for (name, replicas) in [("chat-prefill", 2), ("chat-decode", 1)] {
        Api::<StatefulSet>::namespaced(h.api.clone(), "llm")
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"replicas": replicas, "readyReplicas": replicas}})),
            )
            .await
            .unwrap();
    }
    Api::<Deployment>::namespaced(h.api.clone(), "llm")
        .patch_status(
            "chat-router",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1, "readyReplicas": 1}})),
        )
        .await
        .unwrap();
    h.reconcile("llm", "chat").await.expect("reconcile");
    let ready = h.get("llm", "chat").await;
    let before = ready.status.clone().unwrap();
    assert!(
        before
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    let mut isvc = ready;
    isvc.spec.roles[1].replicas = 3;
    let isvc = h.update(&isvc).await;
    faults.set(Fault::Status(500), |m, p| {
        m == Method::PATCH && p.ends_with("/statefulsets/chat-decode")
    });
    let error = h.reconcile("llm", "chat").await.expect_err("apply fails");
    assert_eq!(error.metric_label(), "server_error");
    let after = h.get("llm", "chat").await.status.unwrap();
    assert_eq!(after, before, "status untouched");
    assert_ne!(after.observed_generation, isvc.metadata.generation);
    h.log
}

/// A request that never returns: the reconcile times out (paused clock, no real wait), nothing
/// panics, no status is written, the error policy requeues.
pub async fn hung_api_server_times_out() -> CallLog {
    let (h, faults) = faulty_harness().await;
    h.create(PD_VOLCANO).await;
    faults.set(Fault::Hang, |m, p| {
        m == Method::GET && p.ends_with("/statefulsets")
    });
    let error = h.reconcile("llm", "chat").await.expect_err("times out");
    assert!(
        matches!(error, fusioninfer_operator::Error::Timeout(_)),
        "{error}"
    );
    assert_eq!(error.metric_label(), "timeout");
    assert_eq!(status_writes(&h.log.calls()), 0);
    let (isvc, _) = service_ref(&h).await;
    assert_eq!(
        error_policy(isvc, &error, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    assert!(
        h.ctx
            .metrics
            .encode()
            .contains("reconcile_errors_total{error=\"timeout\"} 1")
    );
    h.log
}

/// 409 on the status write (someone else wrote it): error, requeue; the next reconcile writes it.
pub async fn conflict_on_status_requeues() -> CallLog {
    let (h, faults) = faulty_harness().await;
    h.create(PD_VOLCANO).await;
    faults.set(Fault::Status(409), |m, p| {
        m == Method::PATCH && p.ends_with("/status")
    });
    let error = h
        .reconcile("llm", "chat")
        .await
        .expect_err("status conflict");
    assert_eq!(error.metric_label(), "conflict");
    assert!(h.get("llm", "chat").await.status.is_none());
    faults.clear();
    h.reconcile("llm", "chat").await.expect("recovers");
    assert!(h.get("llm", "chat").await.status.is_some());
    h.log
}

/// 500 on the read by name of a planned object missing from the labelled list: that object is
/// not written (the operator cannot tell whose it is), the others are, no status, quick retry.
pub async fn failed_lookup_requeues_quickly() -> CallLog {
    let (h, faults) = faulty_harness().await;
    h.create(PD_VOLCANO).await;
    faults.set(Fault::Status(500), |m, p| {
        m == Method::GET && p.ends_with("/statefulsets/chat-decode")
    });
    let error = h.reconcile("llm", "chat").await.expect_err("get fails");
    assert_eq!(error.metric_label(), "server_error");
    assert!(
        error.to_string().contains("get StatefulSet chat-decode"),
        "{error}"
    );
    let children = h.children("llm").await;
    assert_eq!(children.len(), 15);
    assert!(
        !children
            .iter()
            .any(|(kind, name, _)| kind == "StatefulSet" && name == "chat-decode"),
        "not written without knowing whose it would be"
    );
    assert_eq!(status_writes(&h.log.calls()), 0);
    let (isvc, _) = service_ref(&h).await;
    assert_eq!(
        error_policy(isvc, &error, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    faults.clear();
    h.reconcile("llm", "chat").await.expect("recovers");
    assert_eq!(h.children("llm").await.len(), 16);
    h.log
}

/// 422 (the API server rejects a planned object): error, and a Warning Event tells the user.
pub async fn rejected_apply_publishes_an_event() -> CallLog {
    let (h, faults) = faulty_harness().await;
    h.create(PD_VOLCANO).await;
    faults.set(Fault::Status(422), |m, p| {
        m == Method::PATCH && p.ends_with("/httproutes/chat")
    });
    let error = h.reconcile("llm", "chat").await.expect_err("rejected");
    assert_eq!(error.metric_label(), "rejected");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(h.api.clone(), "llm")
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason.as_deref(), Some("ApplyRejected"));
    assert!(
        events[0]
            .note
            .as_deref()
            .unwrap()
            .contains("HTTPRoute chat")
    );
    h.log
}
