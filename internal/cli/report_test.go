package cli

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{holdfastv1.AddToScheme, corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Values no byte of which may reach a bundle.
var secretValues = map[string]string{
	"password": "superuser-Pa55word-0f-verbs",
	"uri":      "postgresql://app:app-Pa55word-0f-verbs@verbs-rw.db:5432/app",
	"secret":   "s3-Secret-Access-Key-0f-verbs",
	"tls.key":  "-----BEGIN PRIVATE KEY-----\nMIIEvQ-verbs-ca-key\n-----END PRIVATE KEY-----\n",
}

// reportFixture is a cluster verbs of two instances, with its objects,
// and objects of another cluster and of the operator beside it.
func reportFixture(t *testing.T) client.Client {
	t.Helper()
	const ns = "db"
	labels := map[string]string{resources.LabelCluster: "verbs", resources.LabelName: "postgresql"}
	other := map[string]string{resources.LabelCluster: "other"}
	meta := func(name string, l map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: maps.Clone(l), UID: types.UID("uid-" + name)}
	}
	started := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	pod := func(name string, l map[string]string, restarted bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: meta(name, l), Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			InitContainerStatuses: []corev1.ContainerStatus{{Name: resources.ContainerBootstrap,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: resources.ContainerPostgres, State: started}},
		}}
		if restarted {
			p.Status.ContainerStatuses[0].RestartCount = 1
			p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}
		}
		return p
	}
	event := func(name, kind, object string, uid string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: kind, Name: object, Namespace: ns, UID: types.UID(uid)},
			Reason:         "Test", Message: "about " + object, LastTimestamp: metav1.NewTime(time.Date(2026, 12, 5, 9, 0, len(name), 0, time.UTC))}
	}
	secret := func(name string, l map[string]string, data map[string]string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: meta(name, l), Type: corev1.SecretTypeOpaque, Data: map[string][]byte{}}
		// What kubectl apply leaves: the whole Secret again.
		s.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Join(slices.Collect(maps.Values(data)), ",")}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		return s
	}
	pgc := &holdfastv1.PostgresCluster{ObjectMeta: meta("verbs", nil), Spec: holdfastv1.PostgresClusterSpec{
		Instances: 2,
		Backup: &holdfastv1.BackupConfig{Repository: holdfastv1.RepositorySpec{S3: &holdfastv1.S3Repository{
			Endpoint: "https://s3.example", Bucket: "bucket", CredentialsSecret: "s3-creds"}}},
	}, Status: holdfastv1.PostgresClusterStatus{Phase: holdfastv1.PhaseHealthy, CurrentPrimary: "verbs-0"}}
	opPod := pod("holdfast-operator-abc", map[string]string{resources.LabelName: "holdfast-operator"}, false)
	opPod.Namespace = "holdfast-system"
	opPod.Status.InitContainerStatuses = nil
	opPod.Status.ContainerStatuses[0].Name = "manager"

	objs := []client.Object{
		pgc,
		pod("verbs-0", labels, true), pod("verbs-1", labels, false), pod("other-0", other, false), opPod,
		&appsv1.StatefulSet{ObjectMeta: meta("verbs", labels)},
		&corev1.Service{ObjectMeta: meta("verbs-rw", labels)}, &corev1.Service{ObjectMeta: meta("verbs-ro", labels)},
		&corev1.Service{ObjectMeta: meta("other-rw", other)},
		&corev1.PersistentVolumeClaim{ObjectMeta: meta("pgdata-verbs-0", labels)}, &corev1.PersistentVolumeClaim{ObjectMeta: meta("pgdata-verbs-1", labels)},
		&holdfastv1.Backup{ObjectMeta: meta("verbs-nightly", nil), Spec: holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: "verbs"}}},
		&holdfastv1.Backup{ObjectMeta: meta("other-nightly", nil), Spec: holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: "other"}}},
		&holdfastv1.BackupSchedule{ObjectMeta: meta("verbs-daily", nil), Spec: holdfastv1.BackupScheduleSpec{Cluster: holdfastv1.ClusterReference{Name: "verbs"}, Schedule: "@daily"}},
		event("e1", "PostgresCluster", "verbs", "uid-verbs"),
		event("e2", "Pod", "verbs-0", "uid-verbs-0"),
		event("e3", "Pod", "verbs-2", "uid-long-gone"), // a pod scaled away since
		event("e4", "Pod", "other-0", "uid-other-0"),
		event("e5", "PersistentVolumeClaim", "pgdata-verbs-0", "uid-pgdata-verbs-0"),
		secret("verbs-superuser", labels, map[string]string{"username": "postgres", "password": secretValues["password"]}),
		secret("verbs-app", labels, map[string]string{"password": secretValues["password"] + "-app", "uri": secretValues["uri"]}),
		secret("verbs-ca", nil, map[string]string{"tls.key": secretValues["tls.key"]}), // unlabelled, found by name
		secret("s3-creds", nil, map[string]string{"accessKeyId": "AKIA0f-verbs", "secretAccessKey": secretValues["secret"]}),
		secret("other-superuser", other, map[string]string{"password": "not-ours"}),
	}
	return fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).Build()
}

// fakeLogs serves, for each container, a log that names it and the run;
// the operator's container's is forbidden.
func fakeLogs() *k8sfake.Clientset {
	cs := k8sfake.NewClientset()
	cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		o := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
		if o.Container == "manager" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods/log"}, "holdfast-operator-abc", errors.New("no RBAC"))
		}
		run := "current"
		if o.Previous {
			run = "previous"
		}
		return true, &runtime.Unknown{Raw: []byte(`{"level":"info","msg":"` + o.Container + ` ` + run + `"}` + "\n")}, nil
	})
	return cs
}

func writeTestReport(t *testing.T) (map[string]string, reportSummary) {
	t.Helper()
	var buf bytes.Buffer
	now := time.Date(2026, 12, 5, 9, 16, 19, 0, time.UTC)
	sum, err := writeReport(t.Context(), &buf, reportFixture(t), fakeLogs(),
		reportRequest{namespace: "db", cluster: "verbs", operatorNamespace: "holdfast-system", now: now})
	if err != nil {
		t.Fatal(err)
	}
	return testutil.ReadTarGz(t, &buf), sum
}

func TestReportLayout(t *testing.T) {
	files, sum := writeTestReport(t)
	const dir = "holdfast-report-verbs-20261205T091619Z/"
	want := []string{
		"ERRORS.txt", "backups.yaml", "backupschedules.yaml", "cluster.yaml", "events.yaml",
		"logs/verbs-0/bootstrap-controller.log", "logs/verbs-0/postgres.log", "logs/verbs-0/postgres.previous.log",
		"logs/verbs-1/bootstrap-controller.log", "logs/verbs-1/postgres.log",
		"pods.yaml", "pvcs.yaml", "report.txt", "secrets.yaml", "services.yaml", "statefulset.yaml",
	}
	var got []string
	for name := range files {
		got = append(got, strings.TrimPrefix(name, dir))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("bundle files:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var pgc holdfastv1.PostgresCluster
	if err := yaml.UnmarshalStrict([]byte(files[dir+"cluster.yaml"]), &pgc); err != nil {
		t.Fatalf("cluster.yaml: %v", err)
	}
	if pgc.Kind != "PostgresCluster" || pgc.APIVersion != "holdfast.dev/v1alpha1" || pgc.Name != "verbs" || pgc.Status.CurrentPrimary != "verbs-0" {
		t.Errorf("cluster.yaml: %s %s %s primary %q", pgc.APIVersion, pgc.Kind, pgc.Name, pgc.Status.CurrentPrimary)
	}
	names := func(file string) []string {
		var list struct {
			Kind  string `json:"kind"`
			Items []struct {
				Kind     string            `json:"kind"`
				Metadata metav1.ObjectMeta `json:"metadata"`
			} `json:"items"`
		}
		if err := yaml.Unmarshal([]byte(files[dir+file]), &list); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if list.Kind != "List" {
			t.Errorf("%s: kind %q, want List", file, list.Kind)
		}
		var out []string
		for _, it := range list.Items {
			if it.Kind == "" || len(it.Metadata.ManagedFields) > 0 {
				t.Errorf("%s: %s has kind %q and managed fields %v", file, it.Metadata.Name, it.Kind, it.Metadata.ManagedFields)
			}
			out = append(out, it.Metadata.Name)
		}
		slices.Sort(out)
		return out
	}
	for file, want := range map[string][]string{
		"pods.yaml":            {"verbs-0", "verbs-1"},
		"services.yaml":        {"verbs-ro", "verbs-rw"},
		"pvcs.yaml":            {"pgdata-verbs-0", "pgdata-verbs-1"},
		"backups.yaml":         {"verbs-nightly"},
		"backupschedules.yaml": {"verbs-daily"},
		// Not e4, about another cluster's pod; e3 is about an instance
		// of this one gone since.
		"events.yaml": {"e1", "e2", "e3", "e5"},
	} {
		if got := names(file); !slices.Equal(got, want) {
			t.Errorf("%s holds %v, want %v", file, got, want)
		}
	}
	if !strings.Contains(files[dir+"logs/verbs-0/postgres.previous.log"], "postgres previous") ||
		!strings.Contains(files[dir+"logs/verbs-1/postgres.log"], "postgres current") {
		t.Errorf("logs: previous %q, current %q", files[dir+"logs/verbs-0/postgres.previous.log"], files[dir+"logs/verbs-1/postgres.log"])
	}
	// The operator's logs were forbidden: noted, and the rest written.
	if e := files[dir+"ERRORS.txt"]; !strings.Contains(e, "operator/holdfast-operator-abc/manager.log") || !strings.Contains(e, "forbidden") {
		t.Errorf("ERRORS.txt: %q", e)
	}
	if sum.pods != 2 || sum.logs != 5 || sum.operatorPods != 1 || sum.operatorLogs != 0 || sum.secrets != 4 || sum.events != 4 || sum.errors != 1 {
		t.Errorf("summary: %s", sum)
	}
	if !strings.Contains(files[dir+"report.txt"], sum.String()) {
		t.Errorf("report.txt does not summarise the bundle: %q", files[dir+"report.txt"])
	}
}

func TestReportRedactsSecrets(t *testing.T) {
	files, _ := writeTestReport(t)
	const dir = "holdfast-report-verbs-20261205T091619Z/"
	for name, content := range files {
		for key, v := range secretValues {
			if strings.Contains(content, v) {
				t.Errorf("%s holds the value of a Secret's %s", name, key)
			}
		}
		if strings.Contains(content, "AKIA0f-verbs") {
			t.Errorf("%s holds the access key id", name)
		}
	}
	var got struct {
		Secrets []redactedSecret `json:"secrets"`
	}
	if err := yaml.UnmarshalStrict([]byte(files[dir+"secrets.yaml"]), &got); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got.Secrets {
		names = append(names, s.Name)
		if s.Type != corev1.SecretTypeOpaque {
			t.Errorf("%s: type %q", s.Name, s.Type)
		}
	}
	// Labelled with the cluster, or named after it or by its spec; not another cluster's.
	if want := []string{"s3-creds", "verbs-app", "verbs-ca", "verbs-superuser"}; !slices.Equal(names, want) {
		t.Errorf("secrets %v, want %v", names, want)
	}
	for _, s := range got.Secrets {
		if s.Name == "verbs-superuser" && (s.Keys["password"] != len(secretValues["password"]) || s.Keys["username"] != len("postgres") || len(s.Keys) != 2) {
			t.Errorf("verbs-superuser keys %v, want each key's length", s.Keys)
		}
	}
}

func TestReportNeedsTheCluster(t *testing.T) {
	var buf bytes.Buffer
	_, err := writeReport(t.Context(), &buf, reportFixture(t), fakeLogs(),
		reportRequest{namespace: "db", cluster: "nosuch", operatorNamespace: "holdfast-system", now: time.Now()})
	if !apierrors.IsNotFound(err) {
		t.Errorf("report of a missing cluster: %v, want NotFound", err)
	}
}
