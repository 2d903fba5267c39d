package roles

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/certificates"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

const superPassword = "super-secret"

// fixture is a cluster whose primary is a real postgres on this machine,
// serving TLS with the server certificate the operator's Keeper issued.
type fixture struct {
	t       *testing.T
	client  client.Client
	r       *Reconciler
	events  *testutil.Notes
	cluster client.ObjectKey
	port    int
}

func newFixture(t *testing.T, c *holdfastv1.PostgresCluster, objs ...client.Object) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real postgres server")
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, holdfastv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: c.Name + "-0", Namespace: c.Namespace,
			Labels: map[string]string{resources.LabelCluster: c.Name, resources.LabelRole: string(holdfastv1.RolePrimary)}},
		Status: corev1.PodStatus{PodIP: "127.0.0.1"},
	}
	super := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: resources.SecretSuperuserName(c), Namespace: c.Namespace},
		Data: map[string][]byte{"username": []byte("postgres"), "password": []byte(superPassword)}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(objs, c, pod, super)...).
		WithStatusSubresource(&holdfastv1.PostgresCluster{}).Build()
	ctx := t.Context()
	if _, err := (&certificates.Keeper{Client: cl}).Ensure(ctx, c, time.Now()); err != nil {
		t.Fatal(err)
	}
	var tlsSecret corev1.Secret
	if err := cl.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.SecretServerTLSName(c)}, &tlsSecret); err != nil {
		t.Fatal(err)
	}
	pg := testutil.NewPasswordPostgres(t, superPassword)
	serveTLS(t, pg, tlsSecret.Data[certificates.KeyCert], tlsSecret.Data[certificates.KeyKey])
	ev := &testutil.Notes{}
	return &fixture{t: t, client: cl, events: ev, cluster: client.ObjectKeyFromObject(c), port: pg.Port,
		r: &Reconciler{Client: cl, APIReader: cl, Recorder: ev, Port: pg.Port}}
}

// serveTLS restarts pg with ssl on and the given certificate and key.
func serveTLS(t *testing.T, pg *testutil.Postgres, cert, key []byte) {
	t.Helper()
	pg.Stop()
	owner, _ := testutil.PostgresHost(t)
	for name, data := range map[string][]byte{"server.crt": cert, "server.key": key} {
		path := filepath.Join(pg.Data, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		testutil.Own(t, path, 0o600, owner)
	}
	conf, err := os.OpenFile(filepath.Join(pg.Data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conf.WriteString("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"); err != nil {
		t.Fatal(err)
	}
	conf.Close()
	pg.Start()
}

func (f *fixture) reconcile() ctrl.Result {
	f.t.Helper()
	res, err := f.r.Reconcile(f.t.Context(), ctrl.Request{NamespacedName: f.cluster})
	if err != nil {
		f.t.Fatalf("reconcile: %v", err)
	}
	return res
}

func (f *fixture) get() *holdfastv1.PostgresCluster {
	f.t.Helper()
	var c holdfastv1.PostgresCluster
	if err := f.client.Get(f.t.Context(), f.cluster, &c); err != nil {
		f.t.Fatal(err)
	}
	return &c
}

func (f *fixture) login(user, password string) error {
	ctx, cancel := context.WithTimeout(f.t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=require", f.port, user, password))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func (f *fixture) setPassword(name, password string) {
	f.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.cluster.Namespace}}
	if err := f.client.Get(f.t.Context(), client.ObjectKeyFromObject(s), s); err != nil {
		f.t.Fatal(err)
	}
	s.Data["password"] = []byte(password)
	if err := f.client.Update(f.t.Context(), s); err != nil {
		f.t.Fatal(err)
	}
}

func testCluster() *holdfastv1.PostgresCluster {
	return &holdfastv1.PostgresCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db", UID: "uid-1", Generation: 1},
		Spec: holdfastv1.PostgresClusterSpec{
			Instances: 1,
			Bootstrap: holdfastv1.BootstrapSpec{InitDB: holdfastv1.InitDBSpec{Database: "app", Owner: "app"}},
			Roles: []holdfastv1.RoleSpec{
				{Name: "reader", Ensure: holdfastv1.EnsurePresent, Login: true,
					InRoles: []holdfastv1.RoleName{"pg_monitor"}, PasswordSecret: &holdfastv1.PasswordSecretReference{Name: "reader-pw"}},
				{Name: "owner_role", Ensure: holdfastv1.EnsurePresent},
			},
			Databases: []holdfastv1.DatabaseSpec{{Name: "shop", Owner: "owner_role", Ensure: holdfastv1.EnsurePresent,
				ReclaimPolicy: holdfastv1.ReclaimRetain, Extensions: []holdfastv1.ExtensionName{"pgcrypto"}}},
		},
		Status: holdfastv1.PostgresClusterStatus{CurrentPrimary: "demo-0",
			Conditions: []metav1.Condition{{Type: holdfastv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "AllInstancesReady",
				LastTransitionTime: metav1.Now()}}},
	}
}

func findCondition(t *testing.T, c *holdfastv1.PostgresCluster, typ string) metav1.Condition {
	t.Helper()
	cond := meta.FindStatusCondition(c.Status.Conditions, typ)
	if cond == nil {
		t.Fatalf("no condition %s among %+v", typ, c.Status.Conditions)
	}
	return *cond
}

// TestReconcileAgainstPostgres runs the reconciler on a fake API against a
// real postgres that serves TLS with the certificate the operator issues:
// it connects verify-full by the pod's name, applies the declaration,
// reports it, picks up a new password, reports a missing Secret once, and
// writes nothing when nothing changed.
func TestReconcileAgainstPostgres(t *testing.T) {
	pw := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "reader-pw", Namespace: "db"},
		Data: map[string][]byte{"username": []byte("reader"), "password": []byte("first")}}
	f := newFixture(t, testCluster(), pw)

	if res := f.reconcile(); res.RequeueAfter != resync {
		t.Errorf("requeue after %s, want the resync %s", res.RequeueAfter, resync)
	}
	c := f.get()
	if len(c.Status.Roles) != 2 || !c.Status.Roles[0].Applied || !c.Status.Roles[1].Applied ||
		!strings.HasPrefix(c.Status.Roles[0].PasswordDigest, "sha256:") || c.Status.Roles[1].PasswordDigest != "" {
		t.Errorf("status.roles %+v", c.Status.Roles)
	}
	if len(c.Status.Databases) != 1 || !c.Status.Databases[0].Applied {
		t.Errorf("status.databases %+v", c.Status.Databases)
	}
	if len(c.Status.UnmanagedRoles) != 0 {
		t.Errorf("unmanaged %v: postgres is the server's", c.Status.UnmanagedRoles)
	}
	for _, typ := range []string{holdfastv1.ConditionRolesReconciled, holdfastv1.ConditionDatabasesReconciled} {
		if cond := findCondition(t, c, typ); cond.Status != metav1.ConditionTrue || cond.Reason != ReasonApplied {
			t.Errorf("%s: %+v", typ, cond)
		}
	}
	findCondition(t, c, holdfastv1.ConditionReady) // the cluster controller's, kept
	if notes := f.events.Take(); len(notes) != 3 || !strings.Contains(strings.Join(notes, "\n"),
		"Normal RoleApplied: create role reader with the password from its Secret; grant role pg_monitor to reader") {
		t.Errorf("events %q", notes)
	}
	if err := f.login("reader", "first"); err != nil {
		t.Errorf("reader logs in over TLS: %v", err)
	}
	digest := c.Status.Roles[0].PasswordDigest

	t.Run("an unchanged cluster: no write, no Event", func(t *testing.T) {
		before := f.get().ResourceVersion
		f.reconcile()
		if after := f.get().ResourceVersion; after != before {
			t.Errorf("status written: resourceVersion %s -> %s", before, after)
		}
		if notes := f.events.Take(); len(notes) > 0 {
			t.Errorf("events %q", notes)
		}
	})

	t.Run("a new password in the Secret is set, and its digest recorded", func(t *testing.T) {
		f.setPassword("reader-pw", "second")
		f.reconcile()
		if err := f.login("reader", "second"); err != nil {
			t.Errorf("the new password: %v", err)
		}
		if err := f.login("reader", "first"); err == nil {
			t.Error("the old password still works")
		}
		if d := f.get().Status.Roles[0].PasswordDigest; d == digest || d == "" {
			t.Errorf("digest %q after the change, %q before", d, digest)
		}
		if notes := f.events.Take(); len(notes) != 1 || !strings.Contains(notes[0], "set the password of role reader from its Secret") ||
			strings.Contains(notes[0], "second") {
			t.Errorf("events %q", notes)
		}
	})

	t.Run("a missing Secret: the role's status, the condition and one Event say so; nothing else stops", func(t *testing.T) {
		if err := f.client.Delete(t.Context(), pw); err != nil {
			t.Fatal(err)
		}
		c := f.get()
		c.Spec.Databases = append(c.Spec.Databases, holdfastv1.DatabaseSpec{Name: "more", Owner: "owner_role",
			Ensure: holdfastv1.EnsurePresent, ReclaimPolicy: holdfastv1.ReclaimRetain})
		c.Generation = 2
		if err := f.client.Update(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		if res := f.reconcile(); res.RequeueAfter != 5*time.Second {
			t.Errorf("requeue after %s, want the first backoff, 5s", res.RequeueAfter)
		}
		c = f.get()
		if r := c.Status.Roles[0]; r.Applied || r.Message != "password Secret reader-pw not found: the role's password is not set" {
			t.Errorf("reader: %+v", r)
		}
		if cond := findCondition(t, c, holdfastv1.ConditionRolesReconciled); cond.Status != metav1.ConditionFalse ||
			cond.Reason != ReasonPasswordSecretMissing || !strings.Contains(cond.Message, "role reader: password Secret reader-pw not found") {
			t.Errorf("RolesReconciled %+v", cond)
		}
		if len(c.Status.Databases) != 2 || !c.Status.Databases[1].Applied {
			t.Errorf("the new database waits for the role's Secret: %+v", c.Status.Databases)
		}
		notes := f.events.Take()
		if !strings.Contains(strings.Join(notes, "\n"), "Warning PasswordSecretMissing: role reader: password Secret reader-pw not found") {
			t.Errorf("events %q", notes)
		}
		if res := f.reconcile(); res.RequeueAfter != 10*time.Second {
			t.Errorf("requeue after %s, want the second backoff, 10s", res.RequeueAfter)
		}
		if notes := f.events.Take(); len(notes) > 0 {
			t.Errorf("the same trouble told again: %q", notes)
		}
	})
}

// TestPrimaryVerifiedByTheServerCA: a server whose certificate another CA
// signed than the one the operator keeps for the pods is not trusted with
// the superuser's password; the failure is reported from the third try in
// a row.
func TestPrimaryVerifiedByTheServerCA(t *testing.T) {
	pw := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "reader-pw", Namespace: "db"},
		Data: map[string][]byte{"password": []byte("first")}}
	f := newFixture(t, testCluster(), pw)
	other, err := pki.NewCA("someone else")
	if err != nil {
		t.Fatal(err)
	}
	var ca corev1.Secret
	if err := f.client.Get(t.Context(), client.ObjectKey{Namespace: "db", Name: "demo-server-tls"}, &ca); err != nil {
		t.Fatal(err)
	}
	ca.Data[certificates.KeyCACert] = pki.CertPEM(other.Cert)
	if err := f.client.Update(t.Context(), &ca); err != nil {
		t.Fatal(err)
	}
	// Something to report first, as a cluster that ran before has.
	c := f.get()
	c.Status.Conditions = append(c.Status.Conditions, metav1.Condition{Type: holdfastv1.ConditionRolesReconciled,
		Status: metav1.ConditionTrue, Reason: ReasonApplied, LastTransitionTime: metav1.Now()})
	if err := f.client.Status().Update(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	for try := 1; try <= 3; try++ {
		f.reconcile()
		cond := findCondition(t, f.get(), holdfastv1.ConditionRolesReconciled)
		if reported := cond.Status == metav1.ConditionFalse; reported != (try == 3) {
			t.Errorf("try %d: %+v", try, cond)
		}
		if try == 3 && (cond.Reason != ReasonPrimaryUnreachable || !strings.Contains(cond.Message, "certificate")) {
			t.Errorf("try %d: %+v", try, cond)
		}
	}
	if err := f.login("reader", "first"); err == nil {
		t.Error("reader was created through a server the operator could not verify")
	}
}

// TestNoPrimaryWritesOneCondition: with no primary, one condition each,
// written once; and a cluster that declares nothing is left alone.
func TestNoPrimaryWritesOneCondition(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, holdfastv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c := testCluster()
	c.Status.CurrentPrimary = ""
	plain := testCluster()
	plain.Name, plain.Spec.Roles, plain.Spec.Databases = "plain", nil, nil
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c, plain).WithStatusSubresource(&holdfastv1.PostgresCluster{}).Build()
	r := &Reconciler{Client: cl, APIReader: cl, Recorder: &testutil.Notes{}}
	var versions []string
	for range 3 {
		if _, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c)}); err != nil {
			t.Fatal(err)
		}
		if err := cl.Get(t.Context(), client.ObjectKeyFromObject(c), c); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, c.ResourceVersion)
	}
	if versions[1] != versions[2] {
		t.Errorf("written again and again with no primary: %v", versions)
	}
	if cond := findCondition(t, c, holdfastv1.ConditionRolesReconciled); cond.Reason != ReasonPrimaryUnavailable {
		t.Errorf("RolesReconciled %+v", cond)
	}
	before := plain.ResourceVersion
	if _, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(plain)}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Get(t.Context(), client.ObjectKeyFromObject(plain), plain); err != nil {
		t.Fatal(err)
	}
	if plain.ResourceVersion != before {
		t.Error("a cluster that declares nothing was written")
	}
}
