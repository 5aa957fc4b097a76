//! What the scheduler answers: where to send a request, or why not to.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// Headers the scheduler adds to the forwarded request.
pub mod headers {
    /// On the request to the decode endpoint: the prefill endpoint (`ip:port`) that computes
    /// the prompt's KV cache first.
    pub const PREFILLER_HOST_PORT: &str = "x-prefiller-host-port";
    /// With a PD handler's `primaryPort`: the endpoint (`ip:port`) actually chosen, while the
    /// request itself goes to `primaryPort` on the same host.
    pub const DATA_PARALLEL_HOST_PORT: &str = "x-data-parallel-host-port";
}

/// The outcome of scheduling one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Send the request.
    Routed(Routed),
    /// Answer the client with an error instead.
    Rejected(Rejection),
}

impl Decision {
    /// The routing, if the request was not rejected.
    pub fn routed(&self) -> Option<&Routed> {
        match self {
            Decision::Routed(routed) => Some(routed),
            Decision::Rejected(_) => None,
        }
    }

    /// The rejection, if the request was rejected.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Decision::Routed(_) => None,
            Decision::Rejected(rejection) => Some(rejection),
        }
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Routed {
    /// The destination.
    pub primary: SocketAddr,
    /// Further destinations to try in order if the primary fails.
    pub fallbacks: Vec<SocketAddr>,
    /// Headers to set on the forwarded request.
    pub headers: BTreeMap<String, String>,
    /// The endpoints each scheduling profile picked (e.g. `decode` and `prefill`).
    pub result: SchedulingResult,
    /// Number of the scheduling cycle, unique per scheduler; ties a later
    /// [`crate::Scheduler::on_response`] to this decision.
    pub cycle: u64,
}

impl Routed {
    /// Primary then fallbacks, comma-separated: the value of Envoy's
    /// `x-gateway-destination-endpoint` metadata.
    pub fn destination_list(&self) -> String {
        std::iter::once(&self.primary)
            .chain(&self.fallbacks)
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Why a request was not routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The kind of failure; decides the HTTP status.
    pub reason: RejectReason,
    /// A human-readable explanation.
    pub message: String,
}

impl Rejection {
    /// Every candidate is saturated.
    pub fn saturated(message: impl Into<String>) -> Self {
        Rejection {
            reason: RejectReason::Saturated,
            message: message.into(),
        }
    }

    /// No endpoint can serve the request.
    pub fn no_endpoint(message: impl Into<String>) -> Self {
        Rejection {
            reason: RejectReason::NoEndpoint,
            message: message.into(),
        }
    }

    /// A plugin broke its contract.
    pub fn internal(message: impl Into<String>) -> Self {
        Rejection {
            reason: RejectReason::Internal,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.reason,
            self.reason.http_status(),
            self.message
        )
    }
}

/// The kinds of rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Every candidate endpoint is saturated: HTTP 429.
    Saturated,
    /// No endpoint passed the filters: HTTP 503.
    NoEndpoint,
    /// A plugin returned something impossible (wrong number of scores, a pick outside the
    /// candidates): HTTP 500.
    Internal,
}

impl RejectReason {
    /// The HTTP status to answer with.
    pub fn http_status(self) -> u16 {
        match self {
            RejectReason::Saturated => 429,
            RejectReason::NoEndpoint => 503,
            RejectReason::Internal => 500,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Saturated => "saturated",
            RejectReason::NoEndpoint => "no endpoint",
            RejectReason::Internal => "internal error",
        })
    }
}

/// The endpoints one profile picked, best first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileRunResult {
    /// Picked endpoints, in preference order; never empty in a successful run.
    pub targets: Vec<Target>,
}

/// One picked endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The endpoint picked (its [`crate::Endpoint::address`]); indexes are keyed by it.
    pub endpoint: SocketAddr,
    /// Where to send the request; differs from `endpoint` only when a profile handler
    /// redirects, e.g. to a data-parallel primary port.
    pub destination: SocketAddr,
}

impl Target {
    /// A target sent to the endpoint itself.
    pub fn at(endpoint: SocketAddr) -> Self {
        Target {
            endpoint,
            destination: endpoint,
        }
    }
}

/// The combined outcome of all profiles that ran for a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchedulingResult {
    /// The profile whose first target is the request's destination.
    pub primary_profile: String,
    /// Results of the profiles that ran successfully.
    pub profiles: BTreeMap<String, ProfileRunResult>,
    /// Headers the profile handler wants on the forwarded request.
    pub headers: BTreeMap<String, String>,
}

impl SchedulingResult {
    /// A result with one successful profile.
    pub fn single(profile: impl Into<String>, result: ProfileRunResult) -> Self {
        let profile = profile.into();
        SchedulingResult {
            profiles: BTreeMap::from([(profile.clone(), result)]),
            primary_profile: profile,
            headers: BTreeMap::new(),
        }
    }

    /// The first target of `profile`.
    pub fn first_target(&self, profile: &str) -> Option<Target> {
        self.profiles
            .get(profile)
            .and_then(|r| r.targets.first().copied())
    }
}
