package alerts

import "testing"

// served are the series Holdfast serves (docs/monitoring.md): an
// instance's exporter, scraped through the PodMonitor, and the operator's
// metrics endpoint. A rule or panel reading a name not here shows nothing.
var served = map[string]bool{
	// Instance.
	"holdfast_pg_up":                                       true,
	"holdfast_pg_in_recovery":                              true,
	"holdfast_pg_timeline":                                 true,
	"holdfast_pg_wal_lsn_bytes":                            true,
	"holdfast_pg_standby_replay_lag_bytes":                 true,
	"holdfast_pg_standby_replay_lag_seconds":               true,
	"holdfast_pg_standby_sync_state":                       true,
	"holdfast_pg_synchronous_standbys":                     true,
	"holdfast_pg_synchronous_standbys_required":            true,
	"holdfast_pg_slot_retained_wal_bytes":                  true,
	"holdfast_pg_archiver_ready_segments":                  true,
	"holdfast_pg_archiver_archived_total":                  true,
	"holdfast_pg_archiver_failed_total":                    true,
	"holdfast_pg_archiver_last_archived_timestamp_seconds": true,
	"holdfast_pg_archiver_last_failed_timestamp_seconds":   true,
	"holdfast_volume_size_bytes":                           true,
	"holdfast_volume_used_bytes":                           true,
	"holdfast_volume_free_bytes":                           true,
	"holdfast_pg_connections":                              true,
	"holdfast_pg_oldest_transaction_age_seconds":           true,
	"holdfast_pg_xid_age":                                  true,
	"holdfast_pg_checkpoints_total":                        true,
	"holdfast_pg_pending_restart":                          true,
	"holdfast_instance_fenced":                             true,
	"holdfast_build_info":                                  true,
	// Operator.
	"holdfast_operations_total":                        true,
	"holdfast_operation_in_progress":                   true,
	"holdfast_instance_api_errors_total":               true,
	"holdfast_backups":                                 true,
	"holdfast_backup_last_completed_timestamp_seconds": true,
	"holdfast_backup_schedule_interval_seconds":        true,
	"holdfast_cluster_instances":                       true,
	"holdfast_cluster_ready_instances":                 true,
	"holdfast_cluster_primary_available":               true,
	"holdfast_cluster_volume_full":                     true,
	"holdfast_cluster_volume_resizing":                 true,
	"holdfast_certificate_expiry_timestamp_seconds":    true,
	// controller-runtime's, on the operator's endpoint.
	"controller_runtime_reconcile_time_seconds_bucket": true,
	"controller_runtime_reconcile_time_seconds_sum":    true,
	"controller_runtime_reconcile_time_seconds_count":  true,
	"controller_runtime_reconcile_total":               true,
	"controller_runtime_reconcile_errors_total":        true,
}

// checkServed fails for each series expr reads that Holdfast does not
// serve, and returns what it reads.
func checkServed(t *testing.T, where, expr string) []selector {
	t.Helper()
	sels, err := selectors(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	if len(sels) == 0 {
		t.Errorf("%s reads no series: %s", where, expr)
	}
	for _, s := range sels {
		if !served[s.Metric] {
			t.Errorf("%s reads %s, which Holdfast does not serve", where, s.Metric)
		}
	}
	return sels
}

func TestRulesReadServedSeries(t *testing.T) {
	for _, r := range readRules(t) {
		checkServed(t, "rule "+r.Alert+r.Record, r.Expr)
	}
}
