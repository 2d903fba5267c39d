package envtest

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/roles"
	"holdfast.dev/holdfast/internal/credentials"
	"holdfast.dev/holdfast/internal/operator"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

const settle = 30 * time.Second

// storageClass makes a StorageClass that allows expansion, and a volume of
// size in it for the PV binder in kube-controller-manager to bind a claim to.
func storageClass(t *testing.T, size string) string {
	t.Helper()
	name := "test-" + rand8(t)
	sc := &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: name},
		Provisioner:          "holdfast.dev/none",
		AllowVolumeExpansion: ptr.To(true),
		ReclaimPolicy:        ptr.To(corev1.PersistentVolumeReclaimRetain),
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:              name,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/nonexistent/" + name}},
		},
	}
	for _, o := range []client.Object{sc, pv} {
		if err := k8s.Create(t.Context(), o); err != nil {
			t.Fatalf("creating %T: %v", o, err)
		}
	}
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), pv)
		_ = k8s.Delete(context.Background(), sc)
	})
	return name
}

func rand8(t *testing.T) string {
	p, err := credentials.Password()
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(p[:8]) // object names are lower case
}

func newCluster(ns, name string, instances int32, class string) *holdfastv1.PostgresCluster {
	return &holdfastv1.PostgresCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: holdfastv1.PostgresClusterSpec{
			Instances:       instances,
			PostgresVersion: 15,
			Storage:         holdfastv1.StorageSpec{Size: resource.MustParse("1Gi"), StorageClassName: ptr.To(class)},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi"),
			}},
			PostgreSQL: holdfastv1.PostgreSQLSpec{Parameters: map[string]holdfastv1.ParameterValue{"max_connections": "100"}},
		},
	}
}

func get[T client.Object](ctx context.Context, ns, name string, obj T) (T, error) {
	err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
	return obj, err
}

// updateSpec changes a cluster's spec as a user does, reading it afresh
// should the operator write its status in between: a status write moves
// the object's resourceVersion too.
func updateSpec(t *testing.T, ns, name string, change func(*holdfastv1.PostgresCluster)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c, err := get(t.Context(), ns, name, &holdfastv1.PostgresCluster{})
		if err != nil {
			return err
		}
		change(c)
		return k8s.Update(t.Context(), c)
	}); err != nil {
		t.Fatalf("updating the spec of %s: %v", name, err)
	}
}

func TestClusterObjects(t *testing.T) {
	ns := newNamespace(t)
	class := storageClass(t, "1Gi")
	c := newCluster(ns, "demo", 3, class)
	if err := k8s.Create(t.Context(), c); err != nil {
		t.Fatalf("creating cluster: %v", err)
	}

	var sts *appsv1.StatefulSet
	eventually(t, settle, "StatefulSet exists", func(ctx context.Context) (err error) {
		sts, err = get(ctx, ns, "demo", &appsv1.StatefulSet{})
		return err
	})
	t.Run("StatefulSet", func(t *testing.T) { checkStatefulSet(t, c, sts) })
	t.Run("Services", func(t *testing.T) { checkServices(t, c) })
	passwords := map[string]string{}
	versions := map[string]string{}
	t.Run("Secrets", func(t *testing.T) {
		for _, name := range []string{"demo-superuser", "demo-app", "demo-replication"} {
			s, err := get(t.Context(), ns, name, &corev1.Secret{})
			if err != nil {
				t.Fatalf("Secret %s: %v", name, err)
			}
			checkOwned(t, c, s)
			pw := string(s.Data["password"])
			if len(pw) != credentials.PasswordLength {
				t.Errorf("Secret %s password has %d characters, want %d", name, len(pw), credentials.PasswordLength)
			}
			if s.Type != corev1.SecretTypeBasicAuth {
				t.Errorf("Secret %s type %s, want basic-auth", name, s.Type)
			}
			for p := range valueSet(passwords) {
				if p == pw {
					t.Errorf("Secret %s reuses another role's password", name)
				}
			}
			passwords[name], versions[name] = pw, s.ResourceVersion
		}
		app, _ := get(t.Context(), ns, "demo-app", &corev1.Secret{})
		if got, want := string(app.Data["uri"]), "postgresql://app:"+passwords["demo-app"]+"@demo-rw."+ns+":5432/app?sslmode=verify-full"; got != want {
			t.Errorf("app uri = %q, want %q", got, want)
		}
	})
	t.Run("Certificates", func(t *testing.T) {
		var ca, server *corev1.Secret
		eventually(t, settle, "the cluster's CA and certificates", func(ctx context.Context) (err error) {
			if ca, err = get(ctx, ns, "demo-ca", &corev1.Secret{}); err != nil {
				return err
			}
			server, err = get(ctx, ns, "demo-server-tls", &corev1.Secret{})
			return err
		})
		checkOwned(t, c, ca)
		checkOwned(t, c, server)
		authority, err := pki.ParseCA(ca.Data["ca.crt"], ca.Data["ca.key"])
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(authority.Cert)
		leaf, err := pki.ParseLeaf(server.Data["tls.crt"], server.Data["tls.key"])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "demo-rw." + ns + ".svc.cluster.local"}); err != nil || server.Type != corev1.SecretTypeTLS {
			t.Errorf("server certificate (Secret type %s): %v", server.Type, err)
		}
		repl, err := get(t.Context(), ns, "demo-replication-tls", &corev1.Secret{})
		if err != nil {
			t.Fatal(err)
		}
		if cert, err := pki.ParseCertificate(repl.Data["tls.crt"]); err != nil || cert.Subject.CommonName != "streaming_replica" {
			t.Errorf("replication certificate: %v %v", cert, err)
		}
		published, err := get(t.Context(), ns, "demo-ca", &corev1.ConfigMap{})
		if err != nil || published.Data["ca.crt"] != string(ca.Data["ca.crt"]) {
			t.Errorf("the CA published for clients: %v %v", published, err)
		}
	})
	t.Run("ConfigMap", func(t *testing.T) {
		cm, err := get(t.Context(), ns, "demo-config", &corev1.ConfigMap{})
		if err != nil {
			t.Fatal(err)
		}
		checkOwned(t, c, cm)
		if got := cm.Data["custom.conf"]; got != "max_connections = '100'\n" {
			t.Errorf("custom.conf = %q", got)
		}
	})
	t.Run("PodDisruptionBudget", func(t *testing.T) {
		pdb, err := get(t.Context(), ns, "demo", &policyv1.PodDisruptionBudget{})
		if err != nil {
			t.Fatal(err)
		}
		checkOwned(t, c, pdb)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
		}
		if pdb.Spec.Selector.MatchLabels["holdfast.dev/cluster"] != "demo" {
			t.Errorf("selector = %v", pdb.Spec.Selector)
		}
	})

	// kube-controller-manager creates the first pod in a namespace that
	// enforces the restricted Pod Security Standard: admission would refuse
	// a pod that falls short of it.
	eventually(t, settle, "pod demo-0 admitted under the restricted standard", func(ctx context.Context) error {
		_, err := get(ctx, ns, "demo-0", &corev1.Pod{})
		return err
	})
	eventually(t, settle, "claim pgdata-demo-0 bound", func(ctx context.Context) error {
		pvc, err := get(ctx, ns, "pgdata-demo-0", &corev1.PersistentVolumeClaim{})
		if err != nil {
			return err
		}
		if pvc.Status.Phase != corev1.ClaimBound {
			return fmt.Errorf("phase %s", pvc.Status.Phase)
		}
		return nil
	})

	eventually(t, settle, "status describes the cluster", func(ctx context.Context) error {
		got, err := get(ctx, ns, "demo", &holdfastv1.PostgresCluster{})
		if err != nil {
			return err
		}
		st := got.Status
		switch {
		case st.ObservedGeneration != got.Generation:
			return fmt.Errorf("observedGeneration %d, generation %d", st.ObservedGeneration, got.Generation)
		case st.TargetPrimary != "demo-0":
			return fmt.Errorf("targetPrimary %q", st.TargetPrimary)
		case st.Phase != holdfastv1.PhaseCreating:
			return fmt.Errorf("phase %q, want Creating", st.Phase)
		case len(st.Instances) != 1 || st.Instances[0].Name != "demo-0" || st.Instances[0].Ready:
			return fmt.Errorf("instances %+v, want demo-0 not ready", st.Instances)
		case st.ReadyInstances != 0:
			return fmt.Errorf("readyInstances %d", st.ReadyInstances)
		}
		for typ, want := range map[string]metav1.ConditionStatus{
			holdfastv1.ConditionReady: metav1.ConditionFalse, holdfastv1.ConditionProgressing: metav1.ConditionTrue, holdfastv1.ConditionDegraded: metav1.ConditionFalse,
		} {
			cond := meta.FindStatusCondition(st.Conditions, typ)
			if cond == nil || cond.Status != want || cond.ObservedGeneration != got.Generation {
				return fmt.Errorf("condition %s = %+v, want %s at generation %d", typ, cond, want, got.Generation)
			}
		}
		return nil
	})
	eventually(t, settle, "Events say what was created", func(ctx context.Context) error {
		return wantEvent(ctx, ns, "demo", "created", "created StatefulSet demo")
	})

	t.Run("no-op reconcile writes nothing", func(t *testing.T) { checkNoWrites(t, ns, "demo") })

	// Change what users change: size, settings, resources, storage.
	updateSpec(t, ns, "demo", func(c *holdfastv1.PostgresCluster) {
		c.Spec.Instances = 4
		c.Spec.PostgreSQL.Parameters["work_mem"] = "8MB"
		c.Spec.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("200m")
		c.Spec.Storage.Size = resource.MustParse("2Gi")
	})
	eventually(t, settle, "StatefulSet follows the spec", func(ctx context.Context) error {
		sts, err := get(ctx, ns, "demo", &appsv1.StatefulSet{})
		if err != nil {
			return err
		}
		if r := *sts.Spec.Replicas; r != 4 {
			return fmt.Errorf("replicas %d", r)
		}
		if cpu := sts.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; cpu.String() != "200m" {
			return fmt.Errorf("cpu request %s", cpu.String())
		}
		// Claim templates are immutable; claims grow instead.
		if size := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; size.String() != "1Gi" {
			return fmt.Errorf("claim template size %s, want it left at 1Gi", size.String())
		}
		return nil
	})
	eventually(t, settle, "ConfigMap holds the new setting", func(ctx context.Context) error {
		cm, err := get(ctx, ns, "demo-config", &corev1.ConfigMap{})
		if err != nil {
			return err
		}
		if want := "max_connections = '100'\nwork_mem = '8MB'\n"; cm.Data["custom.conf"] != want {
			return fmt.Errorf("custom.conf %q", cm.Data["custom.conf"])
		}
		return nil
	})
	eventually(t, settle, "bound claim grown to 2Gi", func(ctx context.Context) error {
		pvc, err := get(ctx, ns, "pgdata-demo-0", &corev1.PersistentVolumeClaim{})
		if err != nil {
			return err
		}
		if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; size.String() != "2Gi" {
			return fmt.Errorf("request %s", size.String())
		}
		return nil
	})
	t.Run("Secrets never rewritten", func(t *testing.T) {
		for name, v := range versions {
			s, err := get(t.Context(), ns, name, &corev1.Secret{})
			if err != nil {
				t.Fatal(err)
			}
			if s.ResourceVersion != v || (passwords[name] != "" && string(s.Data["password"]) != passwords[name]) {
				t.Errorf("Secret %s changed", name)
			}
		}
	})
	t.Run("no-op reconcile after a change writes nothing", func(t *testing.T) { checkNoWrites(t, ns, "demo") })
}

func valueSet(m map[string]string) map[string]bool {
	out := map[string]bool{}
	for _, v := range m {
		out[v] = true
	}
	return out
}

func checkOwned(t *testing.T, c *holdfastv1.PostgresCluster, o client.Object) {
	t.Helper()
	refs := o.GetOwnerReferences()
	if len(refs) != 1 || refs[0].Kind != "PostgresCluster" || refs[0].Name != c.Name || !ptr.Deref(refs[0].Controller, false) {
		t.Errorf("%T %s owner references %+v, want the cluster as controller", o, o.GetName(), refs)
	}
	if o.GetLabels()["holdfast.dev/cluster"] != c.Name {
		t.Errorf("%T %s labels %v lack holdfast.dev/cluster", o, o.GetName(), o.GetLabels())
	}
}

func checkStatefulSet(t *testing.T, c *holdfastv1.PostgresCluster, sts *appsv1.StatefulSet) {
	checkOwned(t, c, sts)
	s := sts.Spec
	if *s.Replicas != 3 || s.ServiceName != "demo-headless" || s.PodManagementPolicy != appsv1.OrderedReadyPodManagement ||
		s.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		t.Errorf("replicas %d serviceName %s policy %s update %s", *s.Replicas, s.ServiceName, s.PodManagementPolicy, s.UpdateStrategy.Type)
	}
	if p := s.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType ||
		p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("claim retention %+v, want Retain/Retain by default", p)
	}
	if len(s.VolumeClaimTemplates) != 1 {
		t.Fatalf("claim templates %d", len(s.VolumeClaimTemplates))
	}
	vct := s.VolumeClaimTemplates[0].Spec
	if !slices.Equal(vct.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) ||
		ptr.Deref(vct.StorageClassName, "") != *c.Spec.Storage.StorageClassName || vct.Resources.Requests.Storage().String() != "1Gi" {
		t.Errorf("claim template %+v", vct)
	}
	pod := s.Template.Spec
	if len(pod.InitContainers) != 1 || !slices.Equal(pod.InitContainers[0].Command, []string{"/holdfast", "instance", "install", "/controller/holdfast"}) ||
		pod.InitContainers[0].Image != "holdfast:test" {
		t.Errorf("init containers %+v", pod.InitContainers)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("containers %d", len(pod.Containers))
	}
	pg := pod.Containers[0]
	if !slices.Equal(pg.Command, []string{"/controller/holdfast", "instance", "run"}) || pg.Image != "ghcr.io/holdfast-dev/holdfast-postgres:15" {
		t.Errorf("postgres container command %v image %s", pg.Command, pg.Image)
	}
	for name, p := range map[string]*corev1.Probe{"/startupz": pg.StartupProbe, "/healthz": pg.LivenessProbe, "/readyz": pg.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.String() != "status" {
			t.Errorf("probe %s = %+v", name, p)
		}
	}
	if cpu := pg.Resources.Requests[corev1.ResourceCPU]; cpu.String() != "100m" {
		t.Errorf("cpu request %s", cpu.String())
	}
	for _, sc := range []*corev1.SecurityContext{pg.SecurityContext, pod.InitContainers[0].SecurityContext} {
		if sc == nil || !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("container security context %+v is not restricted", sc)
		}
	}
	if len(pod.TopologySpreadConstraints) != 1 || pod.TopologySpreadConstraints[0].TopologyKey != corev1.LabelHostname {
		t.Errorf("topology spread %+v, want the default spread over nodes", pod.TopologySpreadConstraints)
	}
}

func checkServices(t *testing.T, c *holdfastv1.PostgresCluster) {
	want := map[string]map[string]string{
		"demo-rw":       {"holdfast.dev/cluster": "demo", "role": "primary"},
		"demo-ro":       {"holdfast.dev/cluster": "demo", "role": "replica"},
		"demo-headless": {"holdfast.dev/cluster": "demo"},
	}
	for name, sel := range want {
		svc, err := get(t.Context(), c.Namespace, name, &corev1.Service{})
		if err != nil {
			t.Errorf("Service %s: %v", name, err)
			continue
		}
		checkOwned(t, c, svc)
		if fmt.Sprint(svc.Spec.Selector) != fmt.Sprint(sel) {
			t.Errorf("Service %s selector %v, want %v", name, svc.Spec.Selector, sel)
		}
		if svc.Spec.Ports[0].Port != 5432 {
			t.Errorf("Service %s port %d", name, svc.Spec.Ports[0].Port)
		}
		headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
		if headless != (name == "demo-headless") || svc.Spec.PublishNotReadyAddresses != headless {
			t.Errorf("Service %s clusterIP %s publishNotReady %v", name, svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
		}
	}
}

func wantEvent(ctx context.Context, ns, regarding, reason, note string) error {
	var evs eventsv1.EventList
	if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		return err
	}
	var seen []string
	for _, e := range evs.Items {
		if e.Regarding.Name == regarding && e.Reason == reason && strings.Contains(e.Note, note) {
			return nil
		}
		seen = append(seen, e.Reason+": "+e.Note)
	}
	return fmt.Errorf("no %s event %q among %q", reason, note, seen)
}

// checkNoWrites reconciles an unchanged cluster through a client that counts
// every write, with each controller that reconciles clusters, and fails if
// any reconcile writes. The cluster first gets the
// chance to settle, which is what the operator running beside it is for; a
// reconciler that always finds something to change never settles.
func checkNoWrites(t *testing.T, ns, name string) {
	var writes atomic.Int64
	var last atomic.Value
	count := func(what string) { writes.Add(1); last.Store(what) }
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 1000, 2000 // polling must not be throttled into timeouts
	direct, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	c := interceptor.NewClient(direct, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			count("create " + o.GetName())
			return c.Create(ctx, o, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			count("update " + o.GetName())
			return c.Update(ctx, o, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			count("patch " + o.GetName())
			return c.Patch(ctx, o, p, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, o runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			count(fmt.Sprintf("apply %T", o))
			return c.Apply(ctx, o, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			count("delete " + o.GetName())
			return c.Delete(ctx, o, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
			count(sub + " update " + o.GetName())
			return c.SubResource(sub).Update(ctx, o, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			count(sub + " patch " + o.GetName())
			return c.SubResource(sub).Patch(ctx, o, p, opts...)
		},
	})
	recorder := &testutil.Notes{}
	// Every controller that reconciles a PostgresCluster.
	reconcilers := []reconcile.Reconciler{
		operator.NewReconciler(c, recorder, opOpts),
		&roles.Reconciler{Client: c, APIReader: c, Recorder: recorder},
	}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}}
	reconcile := func(ctx context.Context) error {
		writes.Store(0)
		for _, r := range reconcilers {
			if _, err := r.Reconcile(ctx, req); err != nil {
				return fmt.Errorf("%T: %w", r, err)
			}
			if n := writes.Load(); n > 0 {
				return fmt.Errorf("%T: %d writes, the last %v; events %q", r, n, last.Load(), recorder.Take())
			}
		}
		return nil
	}
	eventually(t, settle, "a reconcile that writes nothing", reconcile)
	for i := range 3 {
		if err := reconcile(t.Context()); err != nil {
			t.Fatalf("reconcile %d of an unchanged cluster: %v", i+1, err)
		}
	}
	if notes := recorder.Take(); len(notes) > 0 {
		t.Errorf("a no-op reconcile recorded events: %q", notes)
	}
}

func TestSpecRefusedLeavesNothingHalfApplied(t *testing.T) {
	ns := newNamespace(t)
	c := newCluster(ns, "refused", 1, "standard")
	// The CRD cannot check quantities' signs cheaply in CEL; the StatefulSet
	// validation refuses this, and the operator must say so.
	c.Spec.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("-1")
	if err := k8s.Create(t.Context(), c); err != nil {
		t.Fatalf("creating cluster: %v", err)
	}
	eventually(t, settle, "Degraded condition names the refused field", func(ctx context.Context) error {
		got, err := get(ctx, ns, "refused", &holdfastv1.PostgresCluster{})
		if err != nil {
			return err
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, holdfastv1.ConditionDegraded)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != "SpecRefused" ||
			!strings.Contains(cond.Message, "resources.requests[cpu]") {
			return fmt.Errorf("Degraded = %+v", cond)
		}
		if got.Status.Phase != holdfastv1.PhaseDegraded {
			return fmt.Errorf("phase %s", got.Status.Phase)
		}
		return nil
	})
	eventually(t, settle, "a Warning Event says why", func(ctx context.Context) error {
		return wantEvent(ctx, ns, "refused", "SpecRefused", "resources.requests[cpu]")
	})
	for name, obj := range map[string]client.Object{
		"refused": &appsv1.StatefulSet{}, "refused-rw": &corev1.Service{}, "refused-config": &corev1.ConfigMap{},
	} {
		if _, err := get(t.Context(), ns, name, obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s exists (err %v): a refused spec must apply nothing", obj, name, err)
		}
	}

	updateSpec(t, ns, "refused", func(c *holdfastv1.PostgresCluster) {
		c.Spec.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("100m")
	})
	// No node runs pods here, so the cluster may well be degraded for that
	// reason; what must go is the refusal.
	eventually(t, settle, "fixed spec applied and the refusal cleared", func(ctx context.Context) error {
		if _, err := get(ctx, ns, "refused", &appsv1.StatefulSet{}); err != nil {
			return err
		}
		got, err := get(ctx, ns, "refused", &holdfastv1.PostgresCluster{})
		if err != nil {
			return err
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, holdfastv1.ConditionDegraded)
		if cond == nil || cond.Reason == "SpecRefused" || cond.ObservedGeneration != got.Generation {
			return fmt.Errorf("Degraded = %+v", cond)
		}
		return nil
	})
}

func TestDeletionFollowsRetentionPolicy(t *testing.T) {
	ns := newNamespace(t)
	keep := newCluster(ns, "keep", 1, "standard")
	drop := newCluster(ns, "drop", 1, "standard")
	drop.Spec.Storage.RetentionPolicy.WhenDeleted = holdfastv1.ClaimDelete
	for _, c := range []*holdfastv1.PostgresCluster{keep, drop} {
		if err := k8s.Create(t.Context(), c); err != nil {
			t.Fatalf("creating %s: %v", c.Name, err)
		}
		eventually(t, settle, "claim of "+c.Name+"-0 made by the StatefulSet controller", func(ctx context.Context) error {
			_, err := get(ctx, ns, "pgdata-"+c.Name+"-0", &corev1.PersistentVolumeClaim{})
			return err
		})
	}
	eventually(t, settle, "StatefulSet controller hands the Delete claim to its StatefulSet", func(ctx context.Context) error {
		pvc, err := get(ctx, ns, "pgdata-drop-0", &corev1.PersistentVolumeClaim{})
		if err != nil {
			return err
		}
		for _, r := range pvc.OwnerReferences {
			if r.Kind == "StatefulSet" && r.Name == "drop" {
				return nil
			}
		}
		return fmt.Errorf("owners %+v", pvc.OwnerReferences)
	})
	for _, c := range []*holdfastv1.PostgresCluster{keep, drop} {
		if err := k8s.Delete(t.Context(), c); err != nil {
			t.Fatalf("deleting %s: %v", c.Name, err)
		}
	}
	for _, name := range []string{"keep", "drop"} {
		eventually(t, settle, "garbage collector removes StatefulSet and pod of "+name, func(ctx context.Context) error {
			if _, err := get(ctx, ns, name, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("StatefulSet still there (%v)", err)
			}
			if _, err := get(ctx, ns, name+"-0", &corev1.Pod{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("pod still there (%v)", err)
			}
			return nil
		})
	}
	eventually(t, settle, "the Delete policy's claim is gone", func(ctx context.Context) error {
		if _, err := get(ctx, ns, "pgdata-drop-0", &corev1.PersistentVolumeClaim{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("claim still there (%v)", err)
		}
		return nil
	})
	// By now the garbage collector has acted on everything the two clusters
	// owned, so a claim still here was kept, not merely not yet deleted.
	pvc, err := get(t.Context(), ns, "pgdata-keep-0", &corev1.PersistentVolumeClaim{})
	if err != nil {
		t.Fatalf("the Retain policy's claim: %v", err)
	}
	if pvc.DeletionTimestamp != nil || len(pvc.OwnerReferences) != 0 {
		t.Errorf("kept claim is being deleted or still owned: %+v", pvc.ObjectMeta)
	}
}

func TestInstallManifestsMeetRestrictedStandard(t *testing.T) {
	// TestMain applied config/default; the operator's namespace enforces the
	// restricted standard, so the Deployment's pod exists only if it meets it.
	eventually(t, settle, "operator pod admitted", func(ctx context.Context) error {
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"app.kubernetes.io/name": "holdfast-operator"}); err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			var rs appsv1.ReplicaSetList
			_ = k8s.List(ctx, &rs, client.InNamespace(operatorNamespace))
			return fmt.Errorf("no operator pod (replica sets: %d)", len(rs.Items))
		}
		return nil
	})
}
