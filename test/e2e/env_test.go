package e2e

import (
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"holdfast.dev/holdfast/internal/images"
	"holdfast.dev/holdfast/internal/instance"
	"holdfast.dev/holdfast/internal/rig/imagebuild"
	"holdfast.dev/holdfast/internal/rig/sandbox"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// sandboxEnv is a sandbox started for one test, with the holdfast binary
// built from this tree.
type sandboxEnv struct {
	t          *testing.T
	bins       string // the Kubernetes binaries
	holdfast   string
	dir        string
	kubeconfig string
	apiPort    int
	etcdPort   int
	// images is the OCI layout of the images built from this tree, which
	// the sandbox's registry serves.
	images string
}

// startSandbox builds holdfast and brings a sandbox up; it goes down when
// the test ends.
func startSandbox(t *testing.T) *sandboxEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a sandbox")
	}
	if os.Getuid() != 0 {
		t.Skip("the sandbox's node needs root for its namespaces")
	}
	bins := os.Getenv("KUBEBUILDER_ASSETS")
	if bins == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; run `make test`")
	}
	// Not t.TempDir: pods run as other users and must reach their volumes.
	tmp, err := os.MkdirTemp("", "holdfast-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &sandboxEnv{t: t, bins: bins, holdfast: filepath.Join(tmp, "holdfast"), dir: filepath.Join(tmp, "sandbox"),
		apiPort: testutil.FreePort(t), etcdPort: freePortPair(t)}
	if out, err := exec.Command("go", "build", "-o", e.holdfast, "../../cmd/holdfast").CombinedOutput(); err != nil {
		t.Fatalf("building holdfast: %v\n%s", err, out)
	}
	if e.images, err = imagebuild.Layout(t.Context(), "../.."); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := e.sandbox("down"); err != nil {
			t.Errorf("sandbox down: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("sandbox state kept for debugging in %s", tmp)
			return
		}
		os.RemoveAll(tmp)
	})
	if out, err := e.sandbox("up"); err != nil {
		t.Fatalf("sandbox up: %v\n%s", err, out)
	}
	kc, err := e.sandbox("kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	e.kubeconfig = strings.TrimSpace(kc)
	return e
}

func (e *sandboxEnv) sandbox(args ...string) (string, error) {
	args = append(args, "--dir", e.dir, "--bin-dir", e.bins, "--api-port", strconv.Itoa(e.apiPort), "--etcd-port", strconv.Itoa(e.etcdPort), "--images", e.images)
	out, err := exec.Command(e.holdfast, append([]string{"sandbox"}, args...)...).CombinedOutput()
	return string(out), err
}

// kubectl runs the pinned kubectl against the sandbox; stdin, if given, is its input.
func (e *sandboxEnv) kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(e.bins, "kubectl"), append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// mustKubectl runs kubectl and fails the test when it fails.
func (e *sandboxEnv) mustKubectl(stdin string, args ...string) string {
	e.t.Helper()
	out, err := e.kubectl(stdin, args...)
	if err != nil {
		e.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// installOperator applies the one-file install a user applies to a real
// cluster, with the command docs/install.md shows (dist/install.yaml is
// config/default built, checked fresh by make verify-generated), and
// waits for the operator's pods to be ready.
func (e *sandboxEnv) installOperator() {
	e.t.Helper()
	poll(e.t, time.Minute, "the default ServiceAccount", func() error {
		_, err := e.kubectl("", "get", "serviceaccount", "default")
		return err
	})
	e.mustKubectl("", "apply", "-f", "../../dist/install.yaml")
	e.mustKubectl("", "wait", "--for", "condition=Established", "crd/postgresclusters.holdfast.dev", "--timeout=60s")
	poll(e.t, 3*time.Minute, "both operator pods ready, one of them leading", func() error {
		out, err := e.kubectl("", "-n", "holdfast-system", "get", "pods", "-o",
			`jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}`)
		if err != nil {
			return err
		}
		if out != "TrueTrue" {
			return errorString("operator pods ready: " + out)
		}
		_, err = e.operatorLeader()
		return err
	})
}

// operatorLeader names the operator pod that holds the leader lease.
func (e *sandboxEnv) operatorLeader() (string, error) {
	holder, err := e.kubectl("", "-n", "holdfast-system", "get", "lease", "holdfast-operator.holdfast.dev", "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		return "", err
	}
	// controller-runtime names the holder <hostname>_<random>; the
	// hostname is the pod's name.
	pod, _, ok := strings.Cut(holder, "_")
	if !ok {
		return "", errorString("leader lease holder " + holder)
	}
	return pod, nil
}

// leadingOperator names the operator pod that leads, and gives its UID.
func (e *sandboxEnv) leadingOperator(t *testing.T) (name, uid string) {
	t.Helper()
	name, err := e.operatorLeader()
	if err != nil {
		t.Fatal(err)
	}
	return name, e.mustKubectl("", "-n", "holdfast-system", "get", "pod", name, "-o", "jsonpath={.metadata.uid}")
}

// secretValue reads one key of a Secret.
func (e *sandboxEnv) secretValue(ns, name, key string) string {
	e.t.Helper()
	out := e.mustKubectl("", "-n", ns, "get", "secret", name, "-o", "jsonpath={.data."+key+"}")
	b, err := base64.StdEncoding.DecodeString(out)
	if err != nil {
		e.t.Fatalf("secret %s/%s key %s: %v", ns, name, key, err)
	}
	return string(b)
}

// tagImage gives ref, an image the sandbox's registry holds, another tag
// there, as a release pipeline pushes a new tag of an image.
func (e *sandboxEnv) tagImage(ref, tag string) {
	e.t.Helper()
	reg, err := sandbox.ReadRegistry(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	transport, err := reg.Transport()
	if err != nil {
		e.t.Fatal(err)
	}
	src, err := reg.Reference(ref)
	if err != nil {
		e.t.Fatal(err)
	}
	from, err := name.ParseReference(src)
	if err != nil {
		e.t.Fatal(err)
	}
	desc, err := remote.Get(from, remote.WithTransport(transport), remote.WithContext(e.t.Context()))
	if err != nil {
		e.t.Fatalf("reading %s from the sandbox's registry: %v", src, err)
	}
	if err := remote.Tag(from.Context().Tag(tag), desc, remote.WithTransport(transport), remote.WithContext(e.t.Context())); err != nil {
		e.t.Fatalf("tagging %s as %s: %v", src, tag, err)
	}
}

// layoutDigests maps each image the sandbox's registry was given (by the
// name make images tags it with) to its manifest's digest.
func (e *sandboxEnv) layoutDigests(t *testing.T) map[string]string {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(e.images)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range m.Manifests {
		out[d.Annotations[images.RefAnnotation]] = d.Digest.String()
	}
	return out
}

// operatorMetrics scrapes the leading operator's metrics endpoint (plain
// HTTP on :8080 of its pod, which the host reaches on the pod bridge).
func (e *sandboxEnv) operatorMetrics() (testutil.Metrics, error) {
	leader, err := e.operatorLeader()
	if err != nil {
		return nil, err
	}
	ip, err := e.kubectl("", "-n", operatorNS, "get", "pod", leader, "-o", "jsonpath={.status.podIP}")
	if err != nil {
		return nil, err
	}
	return testutil.Scrape("http://" + net.JoinHostPort(ip, "8080") + "/metrics")
}

// instanceMetrics scrapes the instance manager of pod, on its metrics port.
func (e *sandboxEnv) instanceMetrics(t *testing.T, pod string) testutil.Metrics {
	t.Helper()
	m, err := testutil.Scrape("http://" + net.JoinHostPort(e.podIP(t, pod), strconv.Itoa(instance.MetricsPort)) + "/metrics")
	if err != nil {
		t.Fatalf("scraping %s: %v", pod, err)
	}
	return m
}
