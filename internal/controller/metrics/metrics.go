// Package metrics holds the operator's own Prometheus series, registered
// with controller-runtime's registry and served on the operator's metrics
// endpoint beside controller-runtime's (reconcile latency per controller is
// controller_runtime_reconcile_time_seconds). Every series is labelled with
// the cluster's namespace and name; a deleted cluster's series go with it.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

var (
	operations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_operations_total",
		Help: "Operations (failovers, switchovers, rolling updates, ...) that ended, by kind and outcome, once their end was written to the cluster's status.history.",
	}, []string{"namespace", "cluster", "kind", "outcome"})
	inProgress = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "holdfast_operation_in_progress",
		Help: "1 for the operation status.operation records, by kind and phase; no series while none runs.",
	}, []string{"namespace", "cluster", "kind", "phase"})
	instanceErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_instance_api_errors_total",
		Help: "Calls from the operator to an instance manager's API that failed, by call (status, desire).",
	}, []string{"namespace", "cluster", "call"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(operations, inProgress, instanceErrors)
}

// Recorded counts what a status write has just recorded for a cluster:
// the operations that ended (ended, in order) and the one now running.
// Call it only after the write succeeded, so that a look whose write
// conflicted, and is taken again, counts nothing twice.
func Recorded(c *holdfastv1.PostgresCluster, ended []holdfastv1.OperationRecord, running *holdfastv1.Operation) {
	for _, rec := range ended {
		operations.WithLabelValues(c.Namespace, c.Name, string(rec.Kind), string(rec.Outcome)).Inc()
	}
	inProgress.DeletePartialMatch(prometheus.Labels{"namespace": c.Namespace, "cluster": c.Name})
	if running != nil {
		inProgress.WithLabelValues(c.Namespace, c.Name, string(running.Kind), string(running.Phase)).Set(1)
	}
}

// InstanceCallFailed counts a failed call to one of c's instances.
func InstanceCallFailed(c *holdfastv1.PostgresCluster, call string) {
	instanceErrors.WithLabelValues(c.Namespace, c.Name, call).Inc()
}

// Forget drops a deleted cluster's series.
func Forget(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "cluster": name}
	operations.DeletePartialMatch(labels)
	inProgress.DeletePartialMatch(labels)
	instanceErrors.DeletePartialMatch(labels)
}
