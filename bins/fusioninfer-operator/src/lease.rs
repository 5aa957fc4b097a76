//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it.
//!
//! Every write is conditional on the `resourceVersion` that was read (create for a missing
//! Lease, replace otherwise), so when two replicas race for an expired lease exactly one wins and
//! the other gets a 409 and stays a follower. Expiry is judged on this replica's own clock from
//! the moment it last saw the lease record change, never by comparing another machine's
//! `renewTime` with ours, so clock skew between nodes cannot cause two leaders.
//!
//! (The `kube-leader-election` crate was considered: it takes an expired lease with an
//! unconditional merge patch, so two replicas can both believe they lead until the next renew.)

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use crate::error::Error;

/// What this replica last saw of the lease record, and when.
#[derive(Debug)]
struct Seen {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    at: Instant,
}

/// One candidate's handle on the lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    duration: Duration,
    seen: Option<Seen>,
}

impl LeaseLock {
    /// A candidate called `identity` (unique per replica: the pod name) for the Lease
    /// `namespace/name`, held for `duration` after each renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            duration,
            seen: None,
        }
    }

    /// `namespace/name` of the Lease.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            lease: self.lease(),
            source: Box::new(source),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Remembers the record; restarts the expiry clock only when it changed.
    fn see(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let changed = self
            .seen
            .as_ref()
            .is_none_or(|s| s.holder != holder || s.renew_time != spec.renew_time);
        let at = match &self.seen {
            Some(seen) if !changed => seen.at,
            _ => Instant::now(),
        };
        self.seen = Some(Seen {
            holder,
            renew_time: spec.renew_time,
            resource_version: lease.resource_version(),
            at,
        });
    }

    /// Takes or renews the lease. `Ok(true)`: this replica leads until `duration` from now.
    /// `Ok(false)`: another replica holds a live lease, or won a race for it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = MicroTime(Timestamp::now());
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.see(&created);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.error(e)),
            };
        };
        self.see(&lease);
        let seen = self.seen.as_ref().map(|s| (s.holder.clone(), s.at));
        let (holder, seen_at) = seen.unwrap_or((None, Instant::now()));
        let leading = holder.as_deref() == Some(self.identity.as_str());
        if !leading && holder.is_some() {
            let ttl = lease
                .spec
                .as_ref()
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.duration, Duration::from_secs);
            if seen_at.elapsed() < ttl {
                return Ok(false);
            }
        }
        let duration_seconds = self.duration_seconds();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !leading {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(duration_seconds);
        // `lease` still carries the resourceVersion that was read: a concurrent writer makes
        // this replace fail with 409 instead of silently overwriting it.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(replaced) => {
                self.see(&replaced);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the lease up (if this replica still holds it) so that a standby takes over at once
    /// instead of waiting for it to expire. Used on graceful shutdown.
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The resourceVersion of the lease as last seen (for tests and logs).
    pub fn seen_resource_version(&self) -> Option<&str> {
        self.seen.as_ref()?.resource_version.as_deref()
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
