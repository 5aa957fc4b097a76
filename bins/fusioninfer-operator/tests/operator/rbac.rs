//! The operator's RBAC in `deploy/` against the API calls it actually makes.
//!
//! The calls are not listed by hand: every scenario of this test binary runs through a layer that
//! records each request as the authorizer sees it (verb, group, resource/subresource; a
//! server-side apply of a whole object also counts as a create). Then:
//! - every recorded call must be allowed (the Lease calls by the leader-election Role, all others
//!   by the ClusterRole; discovery GETs are non-resource URLs every user may read);
//! - every permission the ClusterRole grants must be used by a recorded call, or be one the
//!   operator must hold for another reason derived from the code: the rules it grants to the
//!   endpoint picker's Role (Kubernetes refuses to let anyone grant what they do not hold), and
//!   `update` on the owner's finalizers for the `blockOwnerDeletion` owner references it sets.

use std::collections::BTreeSet;

use fusioninfer_api::InferenceService;
use fusioninfer_core::plan::{PlanOptions, epp_rbac_rules, plan};
use fusioninfer_operator::kinds::managed_kinds;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::Resource;
use serde_json::Value;

use crate::support::ApiCall;
use crate::{failures, runtime, scenarios};

fn read_yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fusioninfer_tests::workspace_root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `(verb, group, resource)` triples a list of rules grants.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut triples = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none(), "resourceNames are not used");
        assert!(
            rule.non_resource_urls.is_none(),
            "no non-resource URLs needed"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcards");
                    assert_ne!(resource, "*", "no wildcards");
                    triples.insert((verb.clone(), group.clone(), resource.clone()));
                }
            }
        }
    }
    triples
}

fn triple(call: &ApiCall) -> Option<(String, String, String)> {
    match call {
        ApiCall::Resource {
            verb,
            group,
            resource,
        } => Some((verb.clone(), group.clone(), resource.clone())),
        ApiCall::NonResource { .. } => None,
    }
}

/// Every call the operator makes across all scenarios of this binary.
async fn all_calls() -> BTreeSet<ApiCall> {
    let mut calls = BTreeSet::new();
    let logs = [
        scenarios::create_applies_every_planned_object().await,
        scenarios::second_reconcile_writes_nothing().await,
        scenarios::hand_edits_are_restored().await,
        scenarios::removed_role_is_pruned().await,
        scenarios::volcano_off_deletes_the_pod_group().await,
        scenarios::topology_change_replaces_the_workload().await,
        scenarios::status_follows_children().await,
        scenarios::invalid_spec_is_reported_and_nothing_applied().await,
        scenarios::invalid_edit_leaves_children_alone().await,
        scenarios::missing_crd_blocks_only_services_needing_it().await,
        scenarios::deletion_relies_on_owner_references().await,
        scenarios::colliding_services_do_not_take_each_others_objects().await,
        scenarios::user_object_with_a_planned_name_is_not_taken_over().await,
        scenarios::owned_child_with_labels_removed_is_restored().await,
        scenarios::every_example_reconciles().await,
        failures::conflict_on_apply_requeues_with_backoff().await,
        failures::server_error_on_list_requeues().await,
        failures::failed_apply_does_not_claim_the_new_generation().await,
        failures::hung_api_server_times_out().await,
        failures::conflict_on_status_requeues().await,
        failures::failed_lookup_requeues_quickly().await,
        failures::rejected_apply_publishes_an_event().await,
        runtime::lease_handover().await,
        runtime::discovery_reads_group_versions().await,
        runtime::controller_lists_and_watches().await,
    ];
    for log in logs {
        calls.extend(log.calls());
    }
    calls
}

/// Permissions the operator holds without calling them, derived from what it creates.
fn held_for_granting() -> BTreeSet<(String, String, String)> {
    let mut held = grants(&epp_rbac_rules());
    // Owner references with blockOwnerDeletion need update on the owner's finalizers.
    let mut isvc: InferenceService = serde_saphyr::from_str(scenarios::PD_VOLCANO).unwrap();
    isvc.metadata.uid = Some("uid".into());
    let blocks = plan(&isvc, &PlanOptions::default())
        .unwrap()
        .iter()
        .flat_map(|o| o.metadata().owner_references.clone().unwrap_or_default())
        .any(|o| o.block_owner_deletion == Some(true));
    assert!(blocks);
    held.insert((
        "update".into(),
        InferenceService::group(&()).into_owned(),
        format!("{}/finalizers", InferenceService::plural(&())),
    ));
    held
}

#[tokio::test(start_paused = true)]
async fn deploy_rbac_allows_exactly_what_the_operator_does() {
    let calls = all_calls().await;
    let cluster_role: ClusterRole =
        serde_json::from_value(read_yaml_docs("deploy/rbac/cluster-role.yaml").remove(0)).unwrap();
    let leader_docs = read_yaml_docs("deploy/rbac/leader-election.yaml");
    let leader_role: Role = serde_json::from_value(
        leader_docs
            .into_iter()
            .find(|d| d["kind"] == "Role")
            .expect("a Role"),
    )
    .unwrap();
    let cluster = grants(cluster_role.rules.as_deref().unwrap_or_default());
    let leader = grants(leader_role.rules.as_deref().unwrap_or_default());

    let is_lease = |t: &(String, String, String)| t.1 == "coordination.k8s.io";
    let used: BTreeSet<_> = calls.iter().filter_map(triple).collect();
    for call in &used {
        let rules = if is_lease(call) { &leader } else { &cluster };
        assert!(
            rules.contains(call),
            "{call:?} is made but not allowed by deploy/rbac"
        );
    }
    for call in &calls {
        if let ApiCall::NonResource { verb, path } = call {
            assert!(
                verb == "get" && path.starts_with("/apis/"),
                "only discovery reads are non-resource calls: {call:?}"
            );
        }
    }

    let held = held_for_granting();
    for grant in &cluster {
        assert!(
            used.contains(grant) || held.contains(grant),
            "deploy/rbac/cluster-role.yaml grants {grant:?}, which no code path uses or must hold"
        );
    }
    let used_leases: BTreeSet<_> = used.iter().filter(|t| is_lease(t)).cloned().collect();
    assert_eq!(
        leader, used_leases,
        "leader-election Role = the Lease calls"
    );
    // Every managed kind is read by name in some scenario (a planned object missing from the
    // labelled list), so `get` on it is used, not merely held for the EPP's Role.
    for kind in managed_kinds() {
        let get = (
            "get".to_owned(),
            kind.resource.group.clone(),
            kind.resource.plural.clone(),
        );
        assert!(
            used.contains(&get),
            "no scenario reads a {} by name",
            kind.kind()
        );
    }
    // The escalation check: the operator holds every permission it grants to the EPP.
    for grant in grants(&epp_rbac_rules()) {
        assert!(
            cluster.contains(&grant),
            "cannot grant {grant:?} without holding it"
        );
    }
}
