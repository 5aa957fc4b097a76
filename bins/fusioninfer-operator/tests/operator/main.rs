//! The operator against an in-memory API server (kube-fake-client), with API failures injected
//! through tower-test, plus its deployment manifests and RBAC. One test binary: the scenarios
//! are shared by the behaviour tests and the RBAC check. No test waits on a wall clock: where
//! time matters (timeouts, lease expiry, watches) the tokio clock is paused.

mod deploy;
mod failures;
mod rbac;
mod runtime;
mod scenarios;
mod support;

mod reconcile {
    use crate::scenarios;

    #[tokio::test]
    async fn create_applies_every_planned_object() {
        scenarios::create_applies_every_planned_object().await;
    }

    #[tokio::test]
    async fn second_reconcile_writes_nothing() {
        scenarios::second_reconcile_writes_nothing().await;
    }

    #[tokio::test]
    async fn hand_edits_are_restored() {
        scenarios::hand_edits_are_restored().await;
    }

    #[tokio::test]
    async fn removed_role_is_pruned() {
        scenarios::removed_role_is_pruned().await;
    }

    #[tokio::test]
    async fn volcano_off_deletes_the_pod_group() {
        scenarios::volcano_off_deletes_the_pod_group().await;
    }

    #[tokio::test]
    async fn topology_change_replaces_the_workload() {
        scenarios::topology_change_replaces_the_workload().await;
    }

    #[tokio::test]
    async fn status_follows_children() {
        scenarios::status_follows_children().await;
    }

    #[tokio::test]
    async fn invalid_spec_is_reported_and_nothing_applied() {
        scenarios::invalid_spec_is_reported_and_nothing_applied().await;
    }

    #[tokio::test]
    async fn invalid_edit_leaves_children_alone() {
        scenarios::invalid_edit_leaves_children_alone().await;
    }

    #[tokio::test]
    async fn missing_crd_blocks_only_services_needing_it() {
        scenarios::missing_crd_blocks_only_services_needing_it().await;
    }

    #[tokio::test]
    async fn deletion_relies_on_owner_references() {
        scenarios::deletion_relies_on_owner_references().await;
    }

    #[tokio::test]
    async fn colliding_services_do_not_take_each_others_objects() {
        scenarios::colliding_services_do_not_take_each_others_objects().await;
    }

    #[tokio::test]
    async fn user_object_with_a_planned_name_is_not_taken_over() {
        scenarios::user_object_with_a_planned_name_is_not_taken_over().await;
    }

    #[tokio::test]
    async fn owned_child_with_labels_removed_is_restored() {
        scenarios::owned_child_with_labels_removed_is_restored().await;
    }

    #[tokio::test]
    async fn every_example_reconciles() {
        scenarios::every_example_reconciles().await;
    }
}

mod api_failures {
    use crate::failures;

    #[tokio::test]
    async fn conflict_on_apply_requeues_with_backoff() {
        failures::conflict_on_apply_requeues_with_backoff().await;
    }

    #[tokio::test]
    async fn server_error_on_list_requeues() {
        failures::server_error_on_list_requeues().await;
    }

    #[tokio::test]
    async fn failed_apply_does_not_claim_the_new_generation() {
        failures::failed_apply_does_not_claim_the_new_generation().await;
    }

    #[tokio::test(start_paused = true)]
    async fn hung_api_server_times_out() {
        failures::hung_api_server_times_out().await;
    }

    #[tokio::test]
    async fn conflict_on_status_requeues() {
        failures::conflict_on_status_requeues().await;
    }

    #[tokio::test]
    async fn failed_lookup_requeues_quickly() {
        failures::failed_lookup_requeues_quickly().await;
    }

    #[tokio::test]
    async fn rejected_apply_publishes_an_event() {
        failures::rejected_apply_publishes_an_event().await;
    }
}

mod process {
    use crate::runtime;

    #[tokio::test]
    async fn lease_handover() {
        runtime::lease_handover().await;
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expires_on_the_followers_clock() {
        runtime::lease_expires_on_the_followers_clock().await;
    }

    #[tokio::test(start_paused = true)]
    async fn keeper_notices_a_lost_lease() {
        runtime::keeper_notices_a_lost_lease().await;
    }

    #[tokio::test]
    async fn discovery_reads_group_versions() {
        runtime::discovery_reads_group_versions().await;
    }

    #[tokio::test(start_paused = true)]
    async fn controller_lists_and_watches() {
        runtime::controller_lists_and_watches().await;
    }

    #[tokio::test(start_paused = true)]
    async fn process_leads_and_hands_over_on_shutdown() {
        runtime::process_leads_and_hands_over_on_shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn process_stops_when_the_lease_is_lost() {
        runtime::process_stops_when_the_lease_is_lost().await;
    }

    #[tokio::test]
    async fn endpoints_serve_health_and_metrics() {
        runtime::endpoints_serve_health_and_metrics().await;
    }
}
