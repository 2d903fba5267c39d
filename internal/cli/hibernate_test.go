package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

var verbsKey = client.ObjectKey{Namespace: "db", Name: "verbs"}

func verbsCluster(hibernation bool, phase holdfastv1.ClusterPhase, history ...holdfastv1.OperationKind) *holdfastv1.PostgresCluster {
	pgc := &holdfastv1.PostgresCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "verbs", Generation: 1},
		Spec:       holdfastv1.PostgresClusterSpec{Instances: 2, Hibernation: hibernation},
		Status:     holdfastv1.PostgresClusterStatus{Phase: phase, ObservedGeneration: 1, ReadyInstances: 2},
	}
	for _, k := range history {
		pgc.Status.History = append(pgc.Status.History, holdfastv1.OperationRecord{Kind: k, Outcome: holdfastv1.OutcomeSucceeded})
	}
	return pgc
}

// operatorStep is what a fake operator does on seeing the cluster: it
// changes pgc's status and says so, or says it waits.
type operatorStep func(pgc *holdfastv1.PostgresCluster) bool

// fakeOperator reconciles the cluster as the operator does, over and
// over: it records the generation it saw, and takes the next of steps
// once that step is ready. It stops when the test ends.
func fakeOperator(t *testing.T, c client.Client, steps ...operatorStep) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		for next := 0; ctx.Err() == nil; time.Sleep(2 * time.Millisecond) {
			var pgc holdfastv1.PostgresCluster
			if err := c.Get(ctx, verbsKey, &pgc); err != nil {
				if ctx.Err() == nil {
					t.Error(err)
				}
				return
			}
			changed := pgc.Status.ObservedGeneration != pgc.Generation
			pgc.Status.ObservedGeneration = pgc.Generation
			stepped := next < len(steps) && steps[next](&pgc)
			if !changed && !stepped {
				continue
			}
			switch err := c.Status().Update(ctx, &pgc); {
			case err == nil && stepped:
				next++
			case apierrors.IsConflict(err) || ctx.Err() != nil:
				// Read again, and do it again.
			case err != nil:
				t.Error(err)
				return
			}
		}
	}()
}

// hibernateClient serves pgc, and bumps its generation on a change of
// spec as the API server does (the fake client does not).
func hibernateClient(t *testing.T, pgc *holdfastv1.PostgresCluster) client.Client {
	return fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(pgc).WithStatusSubresource(pgc).
		WithInterceptorFuncs(interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if err := c.Patch(ctx, obj, patch, opts...); err != nil {
				return err
			}
			// The fake operator may have written the status since.
			return retry.RetryOnConflict(retry.DefaultRetry, func() error {
				if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
					return err
				}
				obj.SetGeneration(obj.GetGeneration() + 1)
				return c.Update(ctx, obj)
			})
		}}).Build()
}

func TestHibernateOnWaitsForHibernated(t *testing.T) {
	defer func(p time.Duration) { hibernatePoll = p }(hibernatePoll)
	hibernatePoll = 5 * time.Millisecond
	c := hibernateClient(t, verbsCluster(false, holdfastv1.PhaseHealthy))
	now := metav1.NowMicro()
	var progress syncBuffer
	fakeOperator(t, c,
		func(pgc *holdfastv1.PostgresCluster) bool {
			if !pgc.Spec.Hibernation {
				return false
			}
			pgc.Status.Operation = &holdfastv1.Operation{Kind: holdfastv1.OperationHibernate, Phase: holdfastv1.PhasePromoting, StartedAt: now}
			return true
		},
		// Each step once hibernate has seen the one before.
		func(pgc *holdfastv1.PostgresCluster) bool {
			if !strings.Contains(progress.String(), "Hibernate: Promoting") {
				return false
			}
			pgc.Status.Operation.Phase = holdfastv1.PhaseStopping
			return true
		},
		func(pgc *holdfastv1.PostgresCluster) bool {
			if !strings.Contains(progress.String(), "Hibernate: Stopping") {
				return false
			}
			pgc.Status.Operation = nil
			pgc.Status.Phase = holdfastv1.PhaseHibernated
			pgc.Status.ReadyInstances = 0
			pgc.Status.History = append(pgc.Status.History, holdfastv1.OperationRecord{Kind: holdfastv1.OperationHibernate, Outcome: holdfastv1.OutcomeSucceeded, StartedAt: now})
			return true
		})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, err := hibernate(ctx, c, verbsKey, true, &progress)
	if err != nil {
		t.Fatalf("hibernate on: %v (progress %q)", err, progress.String())
	}
	if res.already || res.phase != holdfastv1.PhaseHibernated {
		t.Errorf("result %+v", res)
	}
	var pgc holdfastv1.PostgresCluster
	if err := c.Get(ctx, verbsKey, &pgc); err != nil || !pgc.Spec.Hibernation {
		t.Errorf("spec.hibernation %t (%v), want true", pgc.Spec.Hibernation, err)
	}
	// Each step once, in order; the cluster's state before the operator
	// saw the change is not printed as if it were progress.
	want := "Hibernate: Promoting\nHibernate: Stopping\nphase Hibernated, 0 of 2 instances ready\n"
	if progress.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", progress.String(), want)
	}
}

func TestHibernateOffReportsAFailedWake(t *testing.T) {
	defer func(p time.Duration) { hibernatePoll = p }(hibernatePoll)
	hibernatePoll = 5 * time.Millisecond
	c := hibernateClient(t, verbsCluster(true, holdfastv1.PhaseHibernated, holdfastv1.OperationHibernate))
	fakeOperator(t, c, func(pgc *holdfastv1.PostgresCluster) bool {
		if pgc.Spec.Hibernation {
			return false
		}
		now := metav1.NowMicro()
		pgc.Status.Phase = holdfastv1.PhaseDegraded
		pgc.Status.History = append(pgc.Status.History, holdfastv1.OperationRecord{Kind: holdfastv1.OperationWake, Outcome: holdfastv1.OutcomeFailed,
			Reason: "verbs-0 is not back as the primary after 5m0s", StartedAt: now, FinishedAt: now})
		return true
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := hibernate(ctx, c, verbsKey, false, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "Wake") || !strings.Contains(err.Error(), "verbs-0 is not back as the primary") {
		t.Errorf("a failed wake: %v, want its reason", err)
	}
}

func TestHibernateTimesOut(t *testing.T) {
	defer func(p time.Duration) { hibernatePoll = p }(hibernatePoll)
	hibernatePoll = 5 * time.Millisecond
	c := hibernateClient(t, verbsCluster(false, holdfastv1.PhaseHealthy))
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := hibernate(ctx, c, verbsKey, true, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "not Hibernated in time") {
		t.Errorf("no operator: %v, want a timeout", err)
	}
}

func TestHibernateAlreadyThere(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pgc      *holdfastv1.PostgresCluster
		on, want bool
	}{
		{name: "hibernated, on", pgc: verbsCluster(true, holdfastv1.PhaseHibernated, holdfastv1.OperationHibernate), on: true, want: true},
		{name: "awake, off", pgc: verbsCluster(false, holdfastv1.PhaseHealthy, holdfastv1.OperationHibernate, holdfastv1.OperationWake), want: true},
		{name: "never hibernated, Degraded, off", pgc: verbsCluster(false, holdfastv1.PhaseDegraded), want: true},
		{name: "hibernating, on", pgc: verbsCluster(true, holdfastv1.PhaseUpdating), on: true},
		{name: "awake, on", pgc: verbsCluster(false, holdfastv1.PhaseHealthy), on: true},
		{name: "hibernated, off", pgc: verbsCluster(true, holdfastv1.PhaseHibernated, holdfastv1.OperationHibernate)},
		// spec.hibernation set to false by someone else: the wake is to come.
		{name: "a wake to come, off", pgc: verbsCluster(false, holdfastv1.PhaseDegraded, holdfastv1.OperationHibernate)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := inState(tc.pgc, tc.on); got != tc.want {
				t.Fatalf("inState %t, want %t", got, tc.want)
			}
			if !tc.want {
				return
			}
			c := hibernateClient(t, tc.pgc)
			var pgc holdfastv1.PostgresCluster
			if err := c.Get(t.Context(), verbsKey, &pgc); err != nil {
				t.Fatal(err)
			}
			before := pgc.ResourceVersion
			res, err := hibernate(t.Context(), c, verbsKey, tc.on, &bytes.Buffer{})
			if err != nil || !res.already {
				t.Errorf("hibernate %t: %+v, %v; want already", tc.on, res, err)
			}
			if err := c.Get(t.Context(), verbsKey, &pgc); err != nil || pgc.ResourceVersion != before {
				t.Errorf("the cluster changed (%v)", err)
			}
		})
	}
}
