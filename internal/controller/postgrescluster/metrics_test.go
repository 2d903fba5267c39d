package postgrescluster

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/metrics"
	"holdfast.dev/holdfast/internal/postgres"
)

// series are the series of the operator's registry named name whose labels
// include want.
func series(t *testing.T, name string, want map[string]string) []*dto.Metric {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			out = append(out, m)
		}
	}
	return out
}

func seriesCount(t *testing.T, name string, want map[string]string) int {
	return len(series(t, name, want))
}

// seriesValue is the value of the one series named name with labels want,
// or -1 when there is none or more than one.
func seriesValue(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	ms := series(t, name, want)
	if len(ms) != 1 {
		return -1
	}
	if g := ms[0].GetGauge(); g != nil {
		return g.GetValue()
	}
	return ms[0].GetCounter().GetValue()
}

// A switchover's whole life shows in the operator's series: in progress
// while status.operation records it, counted once by outcome when its end
// is written, gone with the cluster.
func TestOperationsShowInTheMetrics(t *testing.T) {
	c := healthyCluster(0)
	c.Namespace = "metrics-test"
	c.Annotations = map[string]string{holdfastv1.AnnotationSwitchoverTo: "demo-1"}
	primary := reportOf(postgres.Primary, true)
	primary.Desired.Epoch = 1
	views := []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: primary},
		replicaView("demo-1", "10.0.0.6", "0/1"), replicaView("demo-2", "10.0.0.7", "0/1")}

	p := decide(c, views, now, 0, "")
	if p.Operation == nil || p.Operation.Kind != holdfastv1.OperationSwitchover {
		t.Fatalf("the annotation started %+v, want a switchover", p.Operation)
	}
	metrics.Recorded(c, p.ended, p.Operation)
	in := map[string]string{"namespace": c.Namespace, "cluster": c.Name}
	if v := seriesValue(t, "holdfast_operation_in_progress", map[string]string{"namespace": c.Namespace, "cluster": c.Name, "kind": "Switchover", "phase": string(p.Operation.Phase)}); v != 1 {
		t.Errorf("switchover in progress: %v, want 1", v)
	}

	p.finish(holdfastv1.OutcomeSucceeded, "", now.Add(time.Second))
	metrics.Recorded(c, p.ended, p.Operation)
	if n := seriesCount(t, "holdfast_operation_in_progress", in); n != 0 {
		t.Errorf("%d operation-in-progress series after the switchover ended, want none", n)
	}
	ok := map[string]string{"namespace": c.Namespace, "cluster": c.Name, "kind": "Switchover", "outcome": string(holdfastv1.OutcomeSucceeded)}
	if v := seriesValue(t, "holdfast_operations_total", ok); v != 1 {
		t.Errorf("holdfast_operations_total %v = %v, want 1", ok, v)
	}
	// The next look records nothing new: nothing is counted twice.
	metrics.Recorded(c, nil, nil)
	if v := seriesValue(t, "holdfast_operations_total", ok); v != 1 {
		t.Errorf("holdfast_operations_total after a quiet look = %v, want still 1", v)
	}

	metrics.InstanceCallFailed(c, "status")
	metrics.Forget(c.Namespace, c.Name)
	for _, name := range []string{"holdfast_operations_total", "holdfast_instance_api_errors_total"} {
		if n := seriesCount(t, name, in); n != 0 {
			t.Errorf("%d %s series left for a deleted cluster", n, name)
		}
	}
}
