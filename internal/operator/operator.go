// Package operator wires the controllers into a controller-runtime manager.
package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/backup"
	"holdfast.dev/holdfast/internal/controller/backupschedule"
	"holdfast.dev/holdfast/internal/controller/certificates"
	"holdfast.dev/holdfast/internal/controller/instances"
	"holdfast.dev/holdfast/internal/controller/metrics"
	"holdfast.dev/holdfast/internal/controller/postgrescluster"
	"holdfast.dev/holdfast/internal/controller/roles"
	"holdfast.dev/holdfast/internal/decodeguard"
	"holdfast.dev/holdfast/internal/resources"
)

// Options configure the operator.
type Options struct {
	Resources        resources.Options
	MetricsAddr      string
	HealthAddr       string
	LeaderElection   bool
	LeaderElectionNS string
	// LeaderElectionTimings: how long a leader's lease lasts unrenewed,
	// how long the leader keeps trying to renew before it gives up, and
	// how often a standby tries to take it over.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	SkipNameValidation                        bool
	// CertificateLifetime is how long the clusters' TLS certificates are
	// valid; zero is certificates.DefaultLifetime.
	CertificateLifetime time.Duration
	// WatchNamespaces limits the operator to these namespaces; empty is all.
	WatchNamespaces []string
}

// inNamespaces limits what the operator caches to namespaces (every
// namespace when none is named). Outside them it neither sees nor touches
// anything, so a team may run its own operator for its namespaces.
func inNamespaces(o cache.Options, namespaces []string) cache.Options {
	if len(namespaces) > 0 {
		o.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
}

func durationOrNil(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}

// Scheme knows every type the operator reads or writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("registering Kubernetes types: %w", err)
	}
	if err := holdfastv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("registering Holdfast types: %w", err)
	}
	return s, nil
}

// NewManager builds a manager with every controller registered.
func NewManager(cfg *rest.Config, opts Options) (ctrl.Manager, error) {
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	// The operator caches only what it made: a cluster with thousands of
	// unrelated pods or Secrets must not fill its memory.
	ours, err := labels.NewRequirement(resources.LabelCluster, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("building the cache selector: %w", err)
	}
	selector := labels.NewSelector().Add(*ours)
	byObject := map[client.Object]cache.ByObject{}
	for _, o := range []client.Object{
		&corev1.Pod{}, &corev1.Secret{}, &corev1.ConfigMap{}, &corev1.Service{},
		&corev1.PersistentVolumeClaim{}, &appsv1.StatefulSet{}, &policyv1.PodDisruptionBudget{},
		&corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}, &coordinationv1.Lease{},
		&batchv1.CronJob{},
	} {
		byObject[o] = cache.ByObject{Label: selector}
	}
	guard, err := guardHoldfastKinds(cfg, scheme)
	if err != nil {
		return nil, err
	}
	skip := opts.SkipNameValidation
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   inNamespaces(cache.Options{ByObject: byObject, NewInformer: guard.NewInformer}, opts.WatchNamespaces),
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.HealthAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "holdfast-operator.holdfast.dev",
		LeaderElectionNamespace: opts.LeaderElectionNS,
		LeaseDuration:           durationOrNil(opts.LeaseDuration),
		RenewDeadline:           durationOrNil(opts.RenewDeadline),
		RetryPeriod:             durationOrNil(opts.RetryPeriod),
		// A leader that stops cleanly (a rollout, a drain) hands over at
		// once rather than after its lease lapses.
		LeaderElectionReleaseOnCancel: true,
		// Tests start several managers in one process.
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("adding the readiness check: %w", err)
	}
	guard.UseRecorder(mgr.GetEventRecorder("holdfast-operator"))
	// A second manager in one process (tests) would register it twice.
	for what, c := range map[string]prometheus.Collector{
		"backup": metrics.NewBackupCollector(mgr.GetClient()), "cluster": metrics.NewClusterCollector(mgr.GetClient()),
	} {
		if err := ctrlmetrics.Registry.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, fmt.Errorf("registering the %s metrics: %w", what, err)
		}
	}
	r := NewReconciler(mgr.GetClient(), mgr.GetEventRecorder("holdfast-operator"), opts)
	r.APIReader = mgr.GetAPIReader()
	r.Certificates.Reader = mgr.GetAPIReader()
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the PostgresCluster controller: %w", err)
	}
	br := &backup.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("holdfast-operator"), Instances: newDialer(mgr.GetClient(), opts)}
	if err := br.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Backup controller: %w", err)
	}
	sr := &backupschedule.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("holdfast-operator"),
		Options: opts.Resources, FieldOwner: postgrescluster.FieldOwner}
	if err := sr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the BackupSchedule controller: %w", err)
	}
	rr := &roles.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("holdfast-operator")}
	if err := rr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the roles controller: %w", err)
	}
	return mgr, nil
}

// guardHoldfastKinds decodes the operator's own kinds one object at a time,
// so that one it cannot read never stops it managing the others.
func guardHoldfastKinds(cfg *rest.Config, scheme *runtime.Scheme) (*decodeguard.Guard, error) {
	guard, err := decodeguard.New(cfg, scheme)
	if err != nil {
		return nil, err
	}
	for _, k := range []struct {
		obj   runtime.Object
		conds []metav1.Condition
	}{
		{&holdfastv1.PostgresCluster{}, []metav1.Condition{
			{Type: holdfastv1.ConditionReady, Status: metav1.ConditionFalse},
			{Type: holdfastv1.ConditionDegraded, Status: metav1.ConditionTrue}}},
		{&holdfastv1.BackupSchedule{}, []metav1.Condition{{Type: holdfastv1.ConditionReady, Status: metav1.ConditionFalse}}},
		{&holdfastv1.Backup{}, nil}, // no conditions: the Event tells
	} {
		if err := guard.Guard(k.obj, k.conds...); err != nil {
			return nil, err
		}
	}
	return guard, nil
}

// NewReconciler wires the PostgresCluster reconciler as the operator runs it.
func NewReconciler(c client.Client, rec events.EventRecorder, opts Options) *postgrescluster.Reconciler {
	return &postgrescluster.Reconciler{
		Client:       c,
		APIReader:    c,
		Recorder:     rec,
		Options:      opts.Resources,
		Instances:    newDialer(c, opts),
		Certificates: &certificates.Keeper{Client: c, Reader: c, Lifetime: opts.CertificateLifetime},
	}
}

// newDialer reaches instance managers with the operator's client
// certificate, issued with the lifetime of the cluster's certificates.
func newDialer(c client.Reader, opts Options) *instances.Dialer {
	return &instances.Dialer{Client: c, Lifetime: opts.CertificateLifetime}
}

// Run runs the operator until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	mgr, err := NewManager(cfg, opts)
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}
