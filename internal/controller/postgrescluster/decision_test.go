package postgrescluster

import (
	"context"
	"sync"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// recordingInstances answers every status call with a streaming replica
// and records the orders given.
type recordingInstances struct {
	mu     sync.Mutex
	orders []instanceapi.Desired
}

func (f *recordingInstances) Status(context.Context, *holdfastv1.PostgresCluster, string, instanceapi.Wait) (instanceapi.Report, error) {
	r := reportOf(postgres.Replica, true)
	r.Postgres.ReceivedLSN, r.Postgres.ReplayedLSN = "0/5000000", "0/5000000"
	return *r, nil
}

func (f *recordingInstances) Desire(_ context.Context, _ *holdfastv1.PostgresCluster, _ string, d instanceapi.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orders = append(f.orders, d)
	return nil
}

// A failover decided from a stale copy of the cluster must do nothing when
// its status write conflicts: no order at the new epoch, no lease handed.
func TestADecisionThatCannotBeRecordedIsNotCarriedOut(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := holdfastv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := healthyCluster(0)
	c.Namespace = "db"
	conflicts := true
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).WithStatusSubresource(c).
		WithInterceptorFuncs(interceptor.Funcs{SubResourceUpdate: func(ctx context.Context, cl client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if conflicts {
				return apierrors.NewConflict(schema.GroupResource{Group: "holdfast.dev", Resource: "postgresclusters"}, obj.GetName(), nil)
			}
			return cl.SubResource(sub).Update(ctx, obj, opts...)
		}}).Build()
	instances := &recordingInstances{}
	r := &Reconciler{Client: cl, Recorder: events.NewFakeRecorder(100), Instances: instances}
	// demo-0, the primary, is gone: a failover to demo-1 is due at once.
	replica := runningPod("demo-1", "10.0.0.6", "replica")
	replica.Namespace = c.Namespace

	_, _, err := r.orchestrate(context.Background(), c, []corev1.Pod{*replica}, "", nil)
	if !apierrors.IsConflict(err) {
		t.Fatalf("orchestrate: %v, want the conflict", err)
	}
	if len(instances.orders) != 0 {
		t.Errorf("orders given although the decision was not recorded: %+v", instances.orders)
	}
	if n := seriesCount(t, "holdfast_operation_in_progress", map[string]string{"namespace": "db", "cluster": c.Name}); n != 0 {
		t.Errorf("%d operation-in-progress series although the decision was not recorded", n)
	}
	var leases coordinationv1.LeaseList
	if err := cl.List(context.Background(), &leases); err != nil || len(leases.Items) != 0 {
		t.Errorf("lease handed although the decision was not recorded: %v %+v", err, leases.Items)
	}

	// Recorded, it is carried out.
	conflicts = false
	if _, _, err := r.orchestrate(context.Background(), c, []corev1.Pod{*replica}, "", nil); err != nil {
		t.Fatal(err)
	}
	var stored holdfastv1.PostgresCluster
	if err := cl.Get(context.Background(), client.ObjectKeyFromObject(c), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Status.Epoch != 2 || stored.Status.TargetPrimary != "demo-1" {
		t.Errorf("stored epoch %d target %q, want 2 and demo-1", stored.Status.Epoch, stored.Status.TargetPrimary)
	}
	if len(instances.orders) != 1 || instances.orders[0].Role != postgres.Primary || instances.orders[0].Epoch != 2 {
		t.Errorf("orders %+v, want demo-1 primary at epoch 2", instances.orders)
	}
	op := stored.Status.Operation
	if op == nil {
		t.Fatal("no operation recorded")
	}
	if v := seriesValue(t, "holdfast_operation_in_progress", map[string]string{"namespace": "db", "cluster": c.Name, "kind": string(op.Kind), "phase": string(op.Phase)}); v != 1 {
		t.Errorf("holdfast_operation_in_progress for the recorded %s/%s = %v, want 1", op.Kind, op.Phase, v)
	}
}
