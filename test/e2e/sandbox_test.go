// Package e2e drives the holdfast binary as a user would, in the sandbox:
// its control plane, Services, process node, and PostgresClusters run by
// the operator installed from dist/install.yaml. One sandbox runs at a time
// on a machine (they share the pod bridge), so these tests run in order.
package e2e

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	hfsandbox "holdfast.dev/holdfast/internal/rig/sandbox"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

func TestSandboxUpDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	bins := os.Getenv("KUBEBUILDER_ASSETS")
	if bins == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; run `make test`")
	}
	tmp := t.TempDir()
	holdfast := filepath.Join(tmp, "holdfast")
	if out, err := exec.Command("go", "build", "-o", holdfast, "../../cmd/holdfast").CombinedOutput(); err != nil {
		t.Fatalf("building holdfast: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "sandbox")
	apiPort, etcdPort := testutil.FreePort(t), freePortPair(t)
	sandbox := func(args ...string) (string, error) {
		args = append(args, "--dir", dir, "--bin-dir", bins, "--api-port", strconv.Itoa(apiPort), "--etcd-port", strconv.Itoa(etcdPort))
		out, err := exec.Command(holdfast, append([]string{"sandbox"}, args...)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _, _ = sandbox("down") })

	// What a killed sandbox leaves: a pod's namespace on the bridge, holding
	// the first pod address, which the new sandbox hands out again.
	leftover := network.Namespace("00000000-0000-4000-8000-000000000001")
	if err := hfsandbox.PodBridge.Ensure(); err != nil {
		t.Fatal(err)
	}
	if err := hfsandbox.PodBridge.AddPod(leftover, net.IPv4(10, 244, 0, 2).To4()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hfsandbox.PodBridge.RemovePod(leftover) })

	out, err := sandbox("up")
	if err != nil {
		t.Fatalf("sandbox up: %v\n%s", err, out)
	}
	if _, err := os.Stat(network.NamespacePath(leftover)); err == nil {
		t.Errorf("the namespace a killed sandbox left is still there after up")
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "sandbox.log")); !strings.Contains(string(log), "removed 1 pod network namespaces a killed sandbox left") {
		t.Errorf("sandbox up did not say it removed the leftover namespace:\n%s", log)
	}
	for _, step := range []string{"starting etcd", "starting kube-apiserver", "control plane ready", "export KUBECONFIG="} {
		if !strings.Contains(out, step) {
			t.Errorf("sandbox up did not say %q:\n%s", step, out)
		}
	}
	kubeconfig, err := sandbox("kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(bins, "kubectl"), append([]string{"--kubeconfig", strings.TrimSpace(kubeconfig)}, args...)...).CombinedOutput()
		return string(out), err
	}
	// The controller manager runs with service-account credentials: it
	// creates the default ServiceAccount and mints tokens for it.
	poll(t, time.Minute, "default ServiceAccount", func() error {
		_, err := kubectl("get", "serviceaccount", "default")
		return err
	})
	if out, err := kubectl("create", "token", "default"); err != nil || !strings.HasPrefix(out, "ey") {
		t.Errorf("minting a token: %v %s", err, out)
	}
	// The Deployment and ReplicaSet controllers run: a Deployment gets a pod.
	if out, err := kubectl("create", "deployment", "web", "--image=nginx"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	poll(t, time.Minute, "a pod for the Deployment", func() error {
		out, err := kubectl("get", "pods", "-l", "app=web", "-o", "name")
		if err == nil && !strings.Contains(out, "pod/web-") {
			err = errorString("no pod yet: " + out)
		}
		return err
	})

	t.Run("hostpath volumes: Retain keeps the folder, Delete removes it", func(t *testing.T) {
		for _, tc := range []struct{ class, claim string }{{"", "kept"}, {"holdfast-hostpath-delete", "dropped"}} {
			manifest := `{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"` + tc.claim + `"},
				"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}`
			if tc.class != "" {
				manifest += `,"storageClassName":"` + tc.class + `"`
			}
			manifest += `}}`
			cmd := exec.Command(filepath.Join(bins, "kubectl"), "--kubeconfig", strings.TrimSpace(kubeconfig), "apply", "-f", "-")
			cmd.Stdin = strings.NewReader(manifest)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("creating claim %s: %v %s", tc.claim, err, out)
			}
		}
		volumeOf := map[string]string{}
		for _, claim := range []string{"kept", "dropped"} {
			poll(t, time.Minute, "claim "+claim+" bound", func() error {
				out, err := kubectl("get", "pvc", claim, "-o", "jsonpath={.status.phase} {.spec.volumeName}")
				if err != nil {
					return err
				}
				phase, pv, _ := strings.Cut(out, " ")
				if phase != "Bound" {
					return errorString("phase " + phase)
				}
				volumeOf[claim] = pv
				return nil
			})
			if _, err := os.Stat(filepath.Join(dir, "volumes", volumeOf[claim])); err != nil {
				t.Errorf("claim %s: no folder for its volume: %v", claim, err)
			}
		}
		if out, err := kubectl("delete", "pvc", "kept", "dropped", "--wait=true"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		poll(t, time.Minute, "the Delete volume and its folder removed", func() error {
			if _, err := kubectl("get", "pv", volumeOf["dropped"]); err == nil {
				return errorString("volume still there")
			}
			if _, err := os.Stat(filepath.Join(dir, "volumes", volumeOf["dropped"])); err == nil {
				return errorString("folder still there")
			}
			return nil
		})
		poll(t, time.Minute, "the Retain volume released and kept", func() error {
			out, err := kubectl("get", "pv", volumeOf["kept"], "-o", "jsonpath={.status.phase}")
			if err != nil {
				return err
			}
			if out != "Released" {
				return errorString("phase " + out)
			}
			return nil
		})
		if _, err := os.Stat(filepath.Join(dir, "volumes", volumeOf["kept"])); err != nil {
			t.Errorf("the Retain volume's folder is gone: %v", err)
		}
	})

	t.Run("S3: signed requests through the Service's name as pods use it; other keys refused", func(t *testing.T) {
		info, err := hfsandbox.ReadS3(dir)
		if err != nil {
			t.Fatal(err)
		}
		// Pods read the Secret; it must name the same store and keys.
		for key, want := range map[string]string{"endpoint": info.Endpoint, "bucket": info.Bucket, "region": info.Region,
			"accessKeyId": info.AccessKeyID, "secretAccessKey": info.SecretAccessKey, "ca\\.crt": info.CACert} {
			out, err := kubectl("get", "secret", hfsandbox.S3SecretName, "-o", "jsonpath={.data."+key+"}")
			if err != nil {
				t.Fatalf("Secret %s: %v %s", hfsandbox.S3SecretName, err, out)
			}
			if got, err := base64.StdEncoding.DecodeString(out); err != nil || string(got) != want {
				t.Errorf("Secret %s key %s does not match %s/s3/endpoint.json", hfsandbox.S3SecretName, key, dir)
			}
		}
		// The name through CoreDNS, the ClusterIP through kube-proxy, and the
		// certificate's DNS name: the path a pod's pgBackRest takes.
		clusterDNS := resolverVia(net.JoinHostPort(hfsandbox.ClusterDNS, "53"), "udp", nil)
		client, err := info.Client(info.Endpoint, clusterDNS)
		if err != nil {
			t.Fatal(err)
		}
		const key, body = "e2e/object", "written through the Service"
		testutil.Eventually(t, 200*time.Millisecond, time.Minute, "a signed PUT to "+info.Endpoint, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := client.PutObject(ctx, info.Bucket, key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
			return err
		})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		obj, err := client.GetObject(ctx, info.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || string(got) != body {
			t.Errorf("GET %s: %q, %v; want %q", key, got, err, body)
		}
		listed := false
		for o := range client.ListObjects(ctx, info.Bucket, minio.ListObjectsOptions{Prefix: "e2e/"}) {
			if o.Err != nil {
				t.Fatalf("listing: %v", o.Err)
			}
			listed = listed || o.Key == key
		}
		if !listed {
			t.Errorf("%s is not listed", key)
		}
		wrongSecret, unknownKey := info, info
		wrongSecret.SecretAccessKey += "x"
		unknownKey.AccessKeyID = "nobody"
		for want, bad := range map[string]hfsandbox.S3Info{"SignatureDoesNotMatch": wrongSecret, "InvalidAccessKeyId": unknownKey} {
			client, err := bad.Client(bad.Endpoint, clusterDNS)
			if err != nil {
				t.Fatal(err)
			}
			_, err = client.PutObject(ctx, bad.Bucket, key, strings.NewReader("forged"), 6, minio.PutObjectOptions{})
			if code := minio.ToErrorResponse(err).Code; code != want {
				t.Errorf("writing with bad keys: %v (code %q), want %s", err, code, want)
			}
		}
	})

	if out, err := sandbox("up"); err != nil || !strings.Contains(out, "already up") {
		t.Errorf("a second up: %v\n%s", err, out)
	}
	t.Run("a second sandbox is refused the pod network while this one runs", func(t *testing.T) {
		other := filepath.Join(tmp, "other")
		args := []string{"sandbox", "--dir", other, "--bin-dir", bins, "--api-port", strconv.Itoa(testutil.FreePort(t)), "--etcd-port", strconv.Itoa(freePortPair(t))}
		out, err := exec.Command(holdfast, append(args[:1:1], append([]string{"up"}, args[1:]...)...)...).CombinedOutput()
		t.Cleanup(func() {
			_ = exec.Command(holdfast, append(args[:1:1], append([]string{"down"}, args[1:]...)...)...).Run()
		})
		if err == nil || !strings.Contains(string(out), "another sandbox (pid ") || !strings.Contains(string(out), dir) {
			t.Errorf("a second sandbox up: %v; want a refusal that names %s:\n%s", err, dir, out)
		}
	})
	if out, err := sandbox("status"); err != nil || !strings.Contains(out, "is running") {
		t.Errorf("status: %v\n%s", err, out)
	}

	if out, err := sandbox("down"); err != nil || !strings.Contains(out, "has stopped") {
		t.Fatalf("sandbox down: %v\n%s", err, out)
	}
	if left := processesMentioning(dir); len(left) > 0 {
		t.Errorf("processes left after down: %v", left)
	}
	// The Deployment's pod had a network namespace; down removes it and the bridge.
	if out, _ := exec.Command("ip", "netns", "list").CombinedOutput(); regexp.MustCompile(`hf-[0-9a-f]{8}-`).Match(out) {
		t.Errorf("pod network namespaces left after down:\n%s", out)
	}
	if out, err := exec.Command("ip", "link", "show", "hf0").CombinedOutput(); err == nil {
		t.Errorf("the pod bridge is left after down:\n%s", out)
	}
	if out, _ := sandbox("status"); !strings.Contains(out, "not running") {
		t.Errorf("status after down: %s", out)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func poll(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	testutil.Eventually(t, 200*time.Millisecond, timeout, what, func(context.Context) error { return check() })
}

// freePortPair finds a port whose successor is free too (etcd's peer port).
func freePortPair(t *testing.T) int {
	for range 50 {
		p := testutil.FreePort(t)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no pair of free ports")
	return 0
}

func processesMentioning(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), dir+"/") {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}
