//! Start-up discovery of the optional CRDs. A cluster without LeaderWorkerSet, Volcano or the
//! Gateway API CRDs is normal: the operator still serves every InferenceService that does not
//! need them, and tells the others which CRD to install.
//!
//! Discovery reads `/apis/{group}/{version}` (allowed to every authenticated user by the
//! default `system:discovery` role), so it needs no rule in the operator's ClusterRole, and
//! checks that the kind's plural is served in exactly the version the planner emits.

use fusioninfer_core::reconcile::OPTIONAL_CRDS;
use kube::Client;

use crate::error::{Error, is_not_found};
use crate::kinds::InstalledCrds;

/// Which optional CRDs the API server serves. A 404 for a group/version means "not installed";
/// any other failure is an error, so that a flaky API server is not mistaken for a cluster
/// without the CRDs.
pub async fn discover_crds(client: &Client) -> Result<InstalledCrds, Error> {
    let mut installed = InstalledCrds::default();
    for crd in &OPTIONAL_CRDS {
        match client.list_api_group_resources(crd.api_version).await {
            Ok(list) => {
                if list.resources.iter().any(|r| r.name == crd.plural()) {
                    installed.insert(crd);
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(Error::Discovery {
                    api_version: crd.api_version.to_owned(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(installed)
}
