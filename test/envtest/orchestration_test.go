package envtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/instance"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// podRunner does a kubelet's part for one cluster's pods, so that the
// operator can be tested with real instance managers and real postgres
// before the sandbox's node exists: it runs `holdfast instance run`'s
// manager for each pod the StatefulSet controller creates, with the pod's
// Secrets and ConfigMap as files, on its own loopback address
// (127.0.0.10+ordinal, standing in for a pod IP), and reports the pod
// Running, with that IP, and Ready while the instance's /readyz says so.
type podRunner struct {
	t       *testing.T
	ns      string
	cluster string
	base    string
	runAs   *syscall.Credential

	mu      sync.Mutex
	running map[string]*runningPod
}

type runningPod struct {
	ip     string
	mgr    *instance.Manager
	srv    *instance.Servers
	cancel context.CancelFunc
	done   chan error
}

func newPodRunner(t *testing.T, ns, cluster string) *podRunner {
	runAs, base := testutil.PostgresHost(t)
	r := &podRunner{t: t, ns: ns, cluster: cluster, base: base, runAs: runAs, running: map[string]*runningPod{}}
	ctx, cancel := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for ctx.Err() == nil {
			r.sync(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-loopDone
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, p := range r.running {
			p.cancel()
			<-p.done
			p.srv.Close()
		}
	})
	return r
}

// sync starts instances for new pods and reports every pod's state.
func (r *podRunner) sync(ctx context.Context) {
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(r.ns), client.MatchingLabels{resources.LabelCluster: r.cluster}); err != nil {
		return
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		r.mu.Lock()
		p, ok := r.running[pod.Name]
		r.mu.Unlock()
		if !ok {
			var err error
			if p, err = r.start(ctx, pod); err != nil {
				r.t.Logf("starting %s: %v", pod.Name, err)
				continue
			}
			r.mu.Lock()
			r.running[pod.Name] = p
			r.mu.Unlock()
		}
		r.report(ctx, pod, p)
	}
}

func (r *podRunner) start(ctx context.Context, pod *corev1.Pod) (*runningPod, error) {
	dir := filepath.Join(r.base, pod.Name)
	secrets := filepath.Join(dir, "secrets")
	if err := r.mountSecrets(ctx, pod, secrets); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	testutil.Own(r.t, dir, 0o755, r.runAs)
	testutil.Own(r.t, data, 0o700, r.runAs)

	ip := "127.0.0." + strconv.Itoa(10+podOrdinal(pod.Name))
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	cfg := instance.Config{
		Name: pod.Name, DataDir: filepath.Join(data, "pgdata"), RunDir: filepath.Join(dir, "run"), PGBinDir: testutil.PostgresBinDir,
		Port: 5432, ListenAddresses: ip, SecretsDir: secrets,
		StatusAddr: net.JoinHostPort(ip, strconv.Itoa(instance.StatusPort)), APIAddr: net.JoinHostPort(ip, strconv.Itoa(instance.APIPort)),
		Database: env["HOLDFAST_DATABASE"], Owner: env["HOLDFAST_OWNER"],
		StopTimeout: 30 * time.Second, RunAs: r.runAs,
	}
	m := instance.NewManager(cfg, ctrl.Log.WithName(pod.Name))
	srv, err := m.Listen()
	if err != nil {
		return nil, err
	}
	mctx, cancel := context.WithCancel(context.Background())
	p := &runningPod{ip: ip, mgr: m, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- m.Run(mctx) }()
	return p, nil
}

// mountSecrets writes, as a kubelet does, the Secrets the pod's projected
// secrets volume names, at the paths it gives them.
func (r *podRunner) mountSecrets(ctx context.Context, pod *corev1.Pod, dir string) error {
	for _, v := range pod.Spec.Volumes {
		if v.Name != resources.VolumeSecrets || v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.Secret == nil {
				continue
			}
			var s corev1.Secret
			err := k8s.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: src.Secret.Name}, &s)
			if apierrors.IsNotFound(err) && src.Secret.Optional != nil && *src.Secret.Optional {
				continue
			}
			if err != nil {
				return err
			}
			for _, item := range src.Secret.Items {
				path := filepath.Join(dir, item.Path)
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					return err
				}
				if err := os.WriteFile(path, s.Data[item.Key], 0o600); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("pod %s has no %s volume", pod.Name, resources.VolumeSecrets)
}

// report writes what a kubelet would: Running, the pod IP, and Ready from
// the readiness probe the pod spec names.
func (r *podRunner) report(ctx context.Context, pod *corev1.Pod, p *runningPod) {
	ready := corev1.ConditionFalse
	if resp, err := http.Get("http://" + net.JoinHostPort(p.ip, strconv.Itoa(instance.StatusPort)) + pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Path); err == nil {
		if resp.StatusCode == http.StatusOK {
			ready = corev1.ConditionTrue
		}
		resp.Body.Close()
	}
	if pod.Status.PodIP == p.ip && pod.Status.Phase == corev1.PodRunning {
		if c := podCondition(pod, corev1.PodReady); c != nil && c.Status == ready {
			return
		}
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = p.ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: p.ip}}
	now := metav1.Now()
	for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		if c := podCondition(pod, typ); c != nil {
			if c.Status != ready {
				c.Status, c.LastTransitionTime = ready, now
			}
		} else {
			pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: typ, Status: ready, LastTransitionTime: now})
		}
	}
	_ = k8s.Status().Update(ctx, pod) // a conflict is retried on the next round
}

func podCondition(pod *corev1.Pod, typ corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == typ {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func podOrdinal(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
	return n
}

// TestOperatorBootstrapsRealInstances runs the operator against instance
// managers running real postgres: it must make demo-0 the primary, clone
// the others from it, label the pods so the Services follow the roles, and
// report the cluster Healthy with 3 of 3 ready.
func TestOperatorBootstrapsRealInstances(t *testing.T) {
	ns := newNamespace(t)
	c := newCluster(ns, "real", 3, "standard")
	if err := k8s.Create(t.Context(), c); err != nil {
		t.Fatalf("creating cluster: %v", err)
	}
	newPodRunner(t, ns, "real")

	start := time.Now()
	eventually(t, 3*time.Minute, "cluster Healthy with 3 of 3 ready", func(ctx context.Context) error {
		got, err := get(ctx, ns, "real", &holdfastv1.PostgresCluster{})
		if err != nil {
			return err
		}
		st := got.Status
		ready := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionReady)
		if st.Phase != holdfastv1.PhaseHealthy || st.ReadyInstances != 3 || st.CurrentPrimary != "real-0" || ready == nil || ready.Status != metav1.ConditionTrue {
			return fmt.Errorf("phase %s ready %d primary %q instances %+v", st.Phase, st.ReadyInstances, st.CurrentPrimary, st.Instances)
		}
		for _, is := range st.Instances {
			if is.Timeline != 1 {
				return fmt.Errorf("instance %s timeline %d", is.Name, is.Timeline)
			}
		}
		return nil
	})
	t.Logf("from creation to 3/3 ready: %s", time.Since(start))

	for name, role := range map[string]string{"real-0": "primary", "real-1": "replica", "real-2": "replica"} {
		pod, err := get(t.Context(), ns, name, &corev1.Pod{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Labels[resources.LabelRole] != role {
			t.Errorf("pod %s labelled %q, want %q", name, pod.Labels[resources.LabelRole], role)
		}
	}

	// The app Secret's credentials work against the primary, and what is
	// written there is read on each replica.
	var app corev1.Secret
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "real-app"}, &app); err != nil {
		t.Fatal(err)
	}
	// The instances listen at loopback addresses no certificate names:
	// the client verifies the server's chain to the CA the cluster publishes.
	var ca corev1.ConfigMap
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: resources.ConfigMapCAName(c)}, &ca); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, []byte(ca.Data["ca.crt"]), 0o600); err != nil {
		t.Fatal(err)
	}
	connect := func(ctx context.Context, ip string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=%s password=%s dbname=%s sslmode=verify-ca sslrootcert=%s connect_timeout=3",
			ip, app.Data["username"], app.Data["password"], app.Data["dbname"], caFile))
	}
	primary, err := connect(t.Context(), "127.0.0.10")
	if err != nil {
		t.Fatalf("connecting to the primary with the app Secret: %v", err)
	}
	defer primary.Close(context.Background())
	if _, err := primary.Exec(t.Context(), `CREATE TABLE t (v text); INSERT INTO t VALUES ('hello')`); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"127.0.0.11", "127.0.0.12"} {
		eventually(t, 30*time.Second, "row on "+ip, func(ctx context.Context) error {
			conn, err := connect(ctx, ip)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var v string
			return conn.QueryRow(ctx, `SELECT v FROM t`).Scan(&v)
		})
	}

	t.Run("kubectl get pgc shows the printer columns", func(t *testing.T) {
		out, err := kubectl("get", "pgc", "-n", ns)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME INSTANCES READY PRIMARY PHASE OPERATION AGE" {
			t.Fatalf("kubectl get pgc:\n%s", out)
		}
		if got := strings.Fields(lines[1]); len(got) != 6 || strings.Join(got[:5], " ") != "real 3 3 real-0 Healthy" {
			t.Errorf("row %q, want real 3 3 real-0 Healthy <age> (no operation)", lines[1])
		}
	})

	t.Run("an unchanged healthy cluster reconciles without writes", func(t *testing.T) { checkNoWrites(t, ns, "real") })
}
