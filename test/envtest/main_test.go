// Package envtest tests the API and the operator against a real
// kube-apiserver, etcd and kube-controller-manager built from the pinned
// Kubernetes modules (hack/build-k8s.sh), with the operator running in-process.
package envtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"holdfast.dev/holdfast/internal/operator"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/testcluster"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

var (
	cp      *testcluster.ControlPlane
	scheme  *runtime.Scheme
	k8s     client.Client // an uncached admin client
	opOpts  = operator.Options{Resources: resources.Options{InstanceImage: "holdfast:test"}, MetricsAddr: "0", HealthAddr: "0", SkipNameValidation: true}
	repoDir = filepath.Join("..", "..")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("envtest: skipped in -short mode")
		os.Exit(0)
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "envtest: KUBEBUILDER_ASSETS is not set; run `make test`, which builds the control plane and sets it")
		os.Exit(1)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	logFile, err := os.CreateTemp("", "holdfast-envtest-kcm-*.log")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer logFile.Close()

	cp, err = testcluster.Start(testcluster.Options{
		CRDDirs:           []string{filepath.Join(repoDir, "config", "crd", "bases")},
		ControllerManager: true,
		Scheduler:         true,
		Log:               logFile,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		return 1
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "envtest:", err)
		}
	}()

	scheme, err = operator.Scheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s, err = client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// Install Holdfast as a user would, and run the operator in-process as
	// the ServiceAccount those manifests give it, so that every test also
	// proves the RBAC rules suffice.
	if out, err := kubectl("apply", "--server-side", "-k", filepath.Join(repoDir, "config", "default")); err != nil {
		fmt.Fprintf(os.Stderr, "envtest: installing config/default: %v\n%s", err, out)
		return 1
	}
	asOperator := rest.CopyConfig(cp.Config)
	asOperator.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + operatorNamespace + ":holdfast-operator",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"},
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := operator.NewManager(asOperator, opOpts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(ctx) }()

	code := m.Run()
	cancel()
	if err := <-stopped; err != nil {
		fmt.Fprintln(os.Stderr, "operator:", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "kube-controller-manager log:", logFile.Name())
	}
	return code
}

// zapLevel keeps the operator's log to errors unless HOLDFAST_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("HOLDFAST_TEST_VERBOSE") != "" {
		return zapcore.InfoLevel
	}
	return zapcore.ErrorLevel
}

const operatorNamespace = "holdfast-system"

// kubectl runs the pinned kubectl against the control plane.
func kubectl(args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
	return cmd.CombinedOutput()
}

// eventually polls check until it returns nil, and fails the test with the
// last error when the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func(ctx context.Context) error) {
	t.Helper()
	testutil.Eventually(t, 100*time.Millisecond, timeout, what, check)
}

// newNamespace makes a namespace for one test, under the restricted Pod
// Security Standard so that every pod the test causes must meet it.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "holdfast-test-",
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
		},
	}}
	if err := k8s.Create(t.Context(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), ns)
	})
	return ns.Name
}
