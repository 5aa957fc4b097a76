//! Typed errors. Every failure the operator can meet is a variant, so the error policy, the
//! metrics and the logs can tell a conflict from an outage from a rejected object.

use std::time::Duration;

use fusioninfer_core::reconcile::NameConflict;

/// A planned object the API server did not accept, or could not be read before the first apply.
#[derive(Debug)]
pub struct ApplyFailure {
    /// `apply`, or `get` for the read that checks who owns an existing object of that name.
    pub action: &'static str,
    /// `Kind name` of the object.
    pub object: String,
    /// What the API server (or the transport) said.
    pub source: kube::Error,
}

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action} {target}: {source}")]
    Api {
        /// What was being done: `list`, `delete`, `write status of`, …
        action: &'static str,
        /// What it was done to.
        target: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Some planned objects could not be applied. The others were applied; the status is not
    /// written, so it never claims more than was achieved.
    #[error("{} of {total} planned objects could not be applied: {}", failures.len(), describe(failures))]
    Apply {
        /// How many objects were planned.
        total: usize,
        /// Each object that failed, with why.
        failures: Vec<ApplyFailure>,
    },
    /// Planned objects whose names are taken by existing objects this service does not control
    /// (another service derived the same name, or a user created the object). They were not
    /// written; the service's status says `NameConflict`. Retrying soon does not help: a person
    /// has to rename or remove one side.
    #[error("{} planned object(s) not applied: {}", conflicts.len(), describe_conflicts(conflicts))]
    NameConflict {
        /// Each object, with its current owner.
        conflicts: Vec<NameConflict>,
    },
    /// An object read from the API server does not fit its type.
    #[error("{target} from the API server does not fit its type: {source}")]
    Decode {
        /// The object.
        target: String,
        /// What serde rejected.
        #[source]
        source: serde_json::Error,
    },
    /// The reconcile did not finish in time (an API call hung); it is retried.
    #[error("reconcile did not finish within {0:?}")]
    Timeout(Duration),
    /// The InferenceService lacks metadata an API server always sets.
    #[error("InferenceService has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// The planner emitted a kind the operator has no table entry for (a bug).
    #[error("planned kind {0} is not one the operator manages")]
    UnmanagedKind(String),
    /// A Kubernetes Event could not be published.
    #[error("publishing an event for {target}: {source}")]
    Event {
        /// The object the event is about.
        target: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// API discovery of an optional kind failed (other than "not served").
    #[error("discovering {api_version}: {source}")]
    Discovery {
        /// The group/version asked for.
        api_version: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A leader-election Lease call failed.
    #[error("leader-election lease {lease}: {source}")]
    Lease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Another replica took the lease over, or renewing it kept failing: this replica stops
    /// reconciling and exits so that it cannot act next to the new leader.
    #[error("lost leadership of lease {0}")]
    LostLease(String),
    /// The metrics and health server could not bind or serve.
    #[error("metrics and health server on {addr}: {source}")]
    Server {
        /// The bind address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No Kubernetes client configuration could be loaded.
    #[error("Kubernetes client configuration: {0}")]
    Config(#[source] Box<kube::Error>),
}

fn describe(failures: &[ApplyFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} {}: {}", f.action, f.object, f.source))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_conflicts(conflicts: &[NameConflict]) -> String {
    conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The `error` label of the `reconcile_errors_total` metric: a small fixed set, so that
    /// dashboards can tell conflicts (harmless, retried at once) from outages and rejections.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api { source, .. }
            | Error::Event { source, .. }
            | Error::Discovery { source, .. }
            | Error::Lease { source, .. } => kube_error_label(source),
            Error::Apply { failures, .. } => failures
                .first()
                .map_or("rejected", |f| kube_error_label(&f.source)),
            Error::NameConflict { .. } => "name_conflict",
            Error::Decode { .. } => "decode",
            Error::Timeout(_) => "timeout",
            Error::MissingMetadata(_) | Error::UnmanagedKind(_) => "internal",
            Error::LostLease(_) => "lost_lease",
            Error::Server { .. } | Error::Config(_) => "startup",
        }
    }

    /// Whether the API server rejected something the operator sent (4xx other than a conflict):
    /// retrying the same request will not help, a user has to look, so it deserves an Event.
    pub fn is_rejection(&self) -> bool {
        self.metric_label() == "rejected"
    }

    /// Whether only a person can resolve the error (a name conflict): the error policy then
    /// requeues on the slow resync period instead of the quick backoff meant for conflicts and
    /// outages.
    pub fn needs_a_person(&self) -> bool {
        matches!(self, Error::NameConflict { .. })
    }
}

/// `conflict` for 409, `server_error` for 5xx, `rejected` for other API errors, `transport`
/// for everything that never got an API answer.
pub fn kube_error_label(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.code == 409 => "conflict",
        kube::Error::Api(status) if status.code >= 500 => "server_error",
        kube::Error::Api(_) => "rejected",
        _ => "transport",
    }
}

/// Whether a client error is the API server's "not found".
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
