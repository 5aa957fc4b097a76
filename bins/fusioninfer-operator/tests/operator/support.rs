//! Test support: an in-memory API server (kube-fake-client) behind a recording layer that notes
//! every API call the operator makes, as the RBAC authorizer would see it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use fusioninfer_api::InferenceService;
use fusioninfer_api::inference_pool::InferencePool;
use fusioninfer_api::lws::LeaderWorkerSet;
use fusioninfer_api::volcano::PodGroup;
use fusioninfer_core::plan::PlanOptions;
use fusioninfer_operator::Context;
use fusioninfer_operator::kinds::{InstalledCrds, managed_kinds};
use fusioninfer_operator::metrics::Metrics;
use futures::future::BoxFuture;
use gateway_api::apis::standard::httproutes::HttpRoute;
use http::{Method, Request, Response, Uri};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use kube_fake_client::ClientBuilder;

/// One API request, as Kubernetes authorization sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiCall {
    /// A request for a resource.
    Resource {
        /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
        verb: String,
        /// API group (`""` for core).
        group: String,
        /// Resource (plural), with `/subresource` when there is one.
        resource: String,
    },
    /// A non-resource URL (discovery).
    NonResource {
        /// `get`.
        verb: String,
        /// The path.
        path: String,
    },
}

impl ApiCall {
    /// Whether the call writes.
    pub fn is_write(&self) -> bool {
        match self {
            ApiCall::Resource { verb, .. } => !matches!(verb.as_str(), "get" | "list" | "watch"),
            ApiCall::NonResource { .. } => false,
        }
    }

    /// Shorthand for tests: `verb group/resource`.
    pub fn resource(verb: &str, group: &str, resource: &str) -> ApiCall {
        ApiCall::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        }
    }
}

/// Maps an HTTP request to the authorization attributes Kubernetes derives from it.
pub fn classify(method: &Method, uri: &Uri) -> ApiCall {
    let parts: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => ("", &[][..]),
    };
    if rest.is_empty() {
        return ApiCall::NonResource {
            verb: method.as_str().to_lowercase(),
            path: uri.path().to_owned(),
        };
    }
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub, ..] => (*resource, Some(*name), Some(*sub)),
        [] => ("", None, None),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => {
            return ApiCall::NonResource {
                verb: other.to_lowercase(),
                path: uri.path().into(),
            };
        }
    };
    ApiCall::Resource {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource: match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        },
    }
}

/// Every authorization check a request triggers: its own verb, plus `create` for a server-side
/// apply of a whole object, which Kubernetes also authorizes as a create because it creates the
/// object when it does not exist (API concepts, "Patch and Apply").
pub fn authorization_checks(request: &Request<Body>) -> Vec<ApiCall> {
    let call = classify(request.method(), request.uri());
    let apply = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    match &call {
        ApiCall::Resource {
            group, resource, ..
        } if apply && !resource.contains('/') => {
            let create = ApiCall::resource("create", group, resource);
            vec![call, create]
        }
        _ => vec![call],
    }
}

/// Calls recorded so far.
#[derive(Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<ApiCall>>>);

impl CallLog {
    /// Appends a call.
    pub fn push(&self, call: ApiCall) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Number of calls so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Calls made after the first `from`.
    pub fn since(&self, from: usize) -> Vec<ApiCall> {
        self.calls().split_off(from)
    }

    /// The distinct calls.
    pub fn distinct(&self) -> BTreeSet<ApiCall> {
        self.calls().into_iter().collect()
    }
}

/// A tower service that records each request and forwards it to another client.
#[derive(Clone)]
pub struct Recording {
    inner: Client,
    log: CallLog,
}

impl tower::Service<Request<Body>> for Recording {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        for call in authorization_checks(&request) {
            self.log.push(call);
        }
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(request).await })
    }
}

/// `inner` behind a recording layer.
pub fn recording(inner: Client, log: &CallLog) -> Client {
    Client::new(
        Recording {
            inner,
            log: log.clone(),
        },
        "default",
    )
}

/// Stands for InferenceService where kube-fake-client wants a `Default` instance to learn the
/// kind (the generated type has no `Default`).
#[derive(Default, serde::Serialize)]
pub struct InferenceServiceStatusMarker {
    #[serde(rename = "apiVersion")]
    api_version: ApiVersion,
    kind: Kind,
    #[serde(skip)]
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

#[derive(Default)]
struct ApiVersion;
#[derive(Default)]
struct Kind;

impl serde::Serialize for ApiVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&<InferenceService as kube::Resource>::api_version(&()))
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&<InferenceService as kube::Resource>::kind(&()))
    }
}

impl kube::Resource for InferenceServiceStatusMarker {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        InferenceService::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        InferenceService::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        InferenceService::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        InferenceService::plural(dt)
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// An in-memory API server serving the built-in kinds, the InferenceService CRD and the
/// optional CRDs in `installed` (a missing CRD is not served at all, as in a real cluster).
pub async fn fake_api(installed: &InstalledCrds) -> Client {
    let mut builder = ClientBuilder::new()
        .with_resource::<InferenceService>()
        .with_status_subresource::<InferenceServiceStatusMarker>()
        .with_status_subresource::<StatefulSet>()
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<Pod>();
    for kind in managed_kinds() {
        let Some(crd) = kind.crd else { continue };
        if !installed.contains(crd) {
            continue;
        }
        builder = match crd.kind {
            "LeaderWorkerSet" => builder
                .with_resource::<LeaderWorkerSet>()
                .with_status_subresource::<LeaderWorkerSet>(),
            "PodGroup" => builder
                .with_resource::<PodGroup>()
                .with_status_subresource::<PodGroup>(),
            "InferencePool" => builder.with_resource::<InferencePool>(),
            "HTTPRoute" => builder.with_resource::<HttpRoute>(),
            other => panic!("no fake registration for {other}"),
        };
    }
    builder.build().await.expect("fake client builds")
}

/// The operator under test: its context over a recorded fake API server, and a direct client
/// to the same server for the test's own reads and writes (not recorded).
pub struct Harness {
    /// What the test uses to read and write (not recorded).
    pub api: Client,
    /// The operator's context (its client is recorded).
    pub ctx: Arc<Context>,
    /// Calls the operator made.
    pub log: CallLog,
}

impl Harness {
    /// A harness over a fresh fake API server.
    pub async fn new(installed: InstalledCrds) -> Harness {
        let api = fake_api(&installed).await;
        Harness::over(api, installed)
    }

    /// A harness whose operator talks to `api` through the recording layer.
    pub fn over(api: Client, installed: InstalledCrds) -> Harness {
        let log = CallLog::default();
        let ctx = Context::new(
            recording(api.clone(), &log),
            PlanOptions::default(),
            installed,
            Arc::new(Metrics::new()),
            "test-operator",
        );
        Harness {
            api,
            ctx: Arc::new(ctx),
            log,
        }
    }

    /// Creates an InferenceService from YAML and returns it as stored.
    pub async fn create(&self, yaml: &str) -> InferenceService {
        let isvc: InferenceService = serde_saphyr::from_str(yaml).expect("test spec parses");
        self.create_object(&isvc).await
    }

    /// Creates an InferenceService and returns it as stored.
    pub async fn create_object(&self, isvc: &InferenceService) -> InferenceService {
        let ns = isvc.namespace().unwrap_or_else(|| "default".into());
        Api::<InferenceService>::namespaced(self.api.clone(), &ns)
            .create(&PostParams::default(), isvc)
            .await
            .expect("create InferenceService")
    }

    /// The InferenceService as stored now (what the controller's watch cache would hold).
    pub async fn get(&self, ns: &str, name: &str) -> InferenceService {
        Api::<InferenceService>::namespaced(self.api.clone(), ns)
            .get(name)
            .await
            .expect("InferenceService exists")
    }

    /// Replaces the spec of an InferenceService (as `kubectl edit` would).
    pub async fn update(&self, isvc: &InferenceService) -> InferenceService {
        let ns = isvc.namespace().expect("namespace");
        Api::<InferenceService>::namespaced(self.api.clone(), &ns)
            .replace(&isvc.name_any(), &PostParams::default(), isvc)
            .await
            .expect("replace InferenceService")
    }

    /// Reconciles the service as currently stored.
    pub async fn reconcile(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Action, fusioninfer_operator::Error> {
        let isvc = self.get(ns, name).await;
        fusioninfer_operator::reconcile(Arc::new(isvc), self.ctx.clone()).await
    }

    /// Every object of every managed kind the cluster serves in `ns`: (kind, name, object).
    pub async fn children(&self, ns: &str) -> Vec<(String, String, DynamicObject)> {
        let mut all = Vec::new();
        for kind in &self.ctx.kinds {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.api.clone(), ns, &kind.resource);
            for object in api.list(&ListParams::default()).await.expect("list").items {
                all.push((kind.resource.kind.clone(), object.name_any(), object));
            }
        }
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// `(kind, name, resourceVersion)` of every child plus the service itself.
    pub async fn versions(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let mut versions: Vec<_> = self
            .children(ns)
            .await
            .into_iter()
            .map(|(kind, name, o)| (kind, name, o.resource_version().unwrap_or_default()))
            .collect();
        let isvc = self.get(ns, name).await;
        versions.push((
            "InferenceService".into(),
            name.into(),
            isvc.resource_version().unwrap_or_default(),
        ));
        versions
    }
}
