package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const nodeNS = "node-e2e"

// TestNodeRunsPodsAsAKubeletWould checks the sandbox's process node on
// plain pods: init containers in order, the pod's user and groups, env from
// Secrets, ConfigMaps and the downward API, exec/HTTP/TCP probes, restarts
// with back-off, liveness kills, bad commands, and graceful deletion.
func TestNodeRunsPodsAsAKubeletWould(t *testing.T) {
	e := startSandbox(t)
	poll(t, time.Minute, "the default ServiceAccount", func() error {
		_, err := e.kubectl("", "get", "serviceaccount", "default")
		return err
	})
	e.mustKubectl("", "create", "namespace", nodeNS)
	t.Cleanup(func() { _, _ = e.kubectl("", "delete", "namespace", nodeNS, "--wait=false") })
	e.mustKubectl(nodeObjects, "apply", "-f", "-")

	t.Run("a pod runs its init containers in order, as its user, with its env, probes and volumes", func(t *testing.T) {
		e.waitPodReady(t, "life")
		out := e.mustKubectl("", "-n", nodeNS, "logs", "life", "-c", "main")
		for _, want := range []string{"order=one two", "id=1234:1234:1234 2345", "env=from-secret from-configmap life", "claim-group=2345"} {
			if !strings.Contains(out, want) {
				t.Errorf("main's log lacks %q:\n%s", want, out)
			}
		}
		// kubectl exec enters the running container: its volumes, its user.
		if out := e.mustKubectl("", "-n", nodeNS, "exec", "life", "-c", "main", "--", "sh", "-c", "id -u; cat /work/order"); out != "1234\none\ntwo" {
			t.Errorf("kubectl exec said %q, want the container's uid and its emptyDir's contents", out)
		}
	})

	t.Run("a changed ConfigMap and Secret reach a running pod's volumes", func(t *testing.T) {
		read := func() (string, error) {
			return e.kubectl("", "-n", nodeNS, "exec", "life", "-c", "main", "--", "sh", "-c", "cat /etc/cfg/value; echo; cat /etc/sec/value")
		}
		if out, err := read(); err != nil || out != "from-configmap\nfrom-secret" {
			t.Fatalf("volumes before the change: %q (%v)", out, err)
		}
		began := time.Now()
		e.mustKubectl("", "-n", nodeNS, "patch", "configmap", "cm", "--type=merge", "-p", `{"data":{"value":"changed-configmap"}}`)
		e.mustKubectl("", "-n", nodeNS, "patch", "secret", "s", "--type=merge", "-p", `{"stringData":{"value":"changed-secret"}}`)
		poll(t, time.Minute, "the new values in the running container", func() error {
			out, err := read()
			if err == nil && out != "changed-configmap\nchanged-secret" {
				err = errorString(out)
			}
			return err
		})
		t.Logf("new values in the container %s after the patches", time.Since(began).Round(100*time.Millisecond))
	})

	t.Run("a container that exits is restarted with back-off", func(t *testing.T) {
		poll(t, 2*time.Minute, "crash restarted and backing off", func() error {
			out, err := e.kubectl("", "-n", nodeNS, "get", "pod", "crash", "-o",
				`jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].state.waiting.reason}`)
			if err != nil {
				return err
			}
			f := strings.Fields(out)
			if len(f) != 3 || f[0] == "0" || f[1] != "3" || f[2] != "CrashLoopBackOff" {
				return errorString(out)
			}
			return nil
		})
	})

	t.Run("a failing liveness probe restarts the container", func(t *testing.T) {
		poll(t, 2*time.Minute, "unhealthy restarted by its liveness probe", func() error {
			out, err := e.kubectl("", "-n", nodeNS, "get", "pod", "unhealthy", "-o",
				`jsonpath={.status.containerStatuses[0].restartCount}|{.status.containerStatuses[0].lastState.terminated.message}`)
			if err != nil {
				return err
			}
			count, msg, _ := strings.Cut(out, "|")
			if count == "0" || !strings.Contains(msg, "liveness probe failed") {
				return errorString(out)
			}
			return nil
		})
	})

	t.Run("a command that does not exist is a StartError, not a hang", func(t *testing.T) {
		poll(t, time.Minute, "badcmd's StartError", func() error {
			out, err := e.kubectl("", "-n", nodeNS, "get", "pod", "badcmd", "-o",
				`jsonpath={.status.containerStatuses[0].lastState.terminated.reason}{.status.containerStatuses[0].state.terminated.reason}|{.status.containerStatuses[0].lastState.terminated.message}{.status.containerStatuses[0].state.terminated.message}`)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(out, "StartError|") || !strings.Contains(out, "no-such-program") {
				return errorString(out)
			}
			return nil
		})
	})

	t.Run("deletion sends SIGTERM, waits the grace period, then SIGKILL", func(t *testing.T) {
		e.waitPodReady(t, "stubborn")
		uids := map[string]string{}
		for _, pod := range []string{"life", "stubborn"} {
			uids[pod] = e.mustKubectl("", "-n", nodeNS, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
		}
		claim := e.mustKubectl("", "-n", nodeNS, "get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}")
		began := time.Now()
		e.mustKubectl("", "-n", nodeNS, "delete", "pod", "life", "stubborn", "--wait=false")
		gone := map[string]time.Duration{}
		poll(t, time.Minute, "both pods gone", func() error {
			for _, pod := range []string{"life", "stubborn"} {
				if _, ok := gone[pod]; ok {
					continue
				}
				if out, err := e.kubectl("", "-n", nodeNS, "get", "pod", pod); err != nil && strings.Contains(out, "NotFound") {
					gone[pod] = time.Since(began)
				}
			}
			if len(gone) < 2 {
				return errorString("waiting")
			}
			return nil
		})
		// life exits on SIGTERM at once; stubborn ignores it and is killed after its 4 s.
		if gone["life"] > 3*time.Second {
			t.Errorf("life, which exits on SIGTERM, took %s to go (grace 30 s)", gone["life"])
		}
		if gone["stubborn"] < 4*time.Second || gone["stubborn"] > 15*time.Second {
			t.Errorf("stubborn, which ignores SIGTERM, went after %s; want its 4 s grace, then SIGKILL", gone["stubborn"])
		}
		b, err := os.ReadFile(filepath.Join(e.dir, "volumes", claim, "marker"))
		if err != nil || strings.TrimSpace(string(b)) != "terminated" {
			t.Errorf("life's SIGTERM handler left %q (%v) in its claim, want \"terminated\"", b, err)
		}
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		for pod, uid := range uids {
			if strings.Contains(string(out), uid) {
				t.Errorf("%s's network namespace is still there:\n%s", pod, out)
			}
		}
	})
}

func (e *sandboxEnv) waitPodReady(t *testing.T, pod string) {
	t.Helper()
	poll(t, 2*time.Minute, pod+" ready", func() error {
		out, err := e.kubectl("", "-n", nodeNS, "get", "pod", pod, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && out != "True" {
			err = errorString(pod + " ready=" + out)
		}
		return err
	})
}

// An HTTP server in perl, which every Debian machine has: the sandbox
// runs host programs, and the probes need something to answer them.
var perlHTTP = strconv.Quote(`use IO::Socket::INET; $SIG{TERM} = sub { exit 0 }; my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die $!; while (my $c = $s->accept) { print $c "HTTP/1.0 200 OK\r\n\r\nok"; close $c }`)

var nodeObjects = `
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: node-e2e}
stringData: {value: from-secret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: node-e2e}
data: {value: from-configmap}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: node-e2e}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: life, namespace: node-e2e}
spec:
  securityContext: {runAsUser: 1234, runAsGroup: 1234, fsGroup: 2345, runAsNonRoot: true}
  volumes:
  - {name: work, emptyDir: {}}
  - {name: data, persistentVolumeClaim: {claimName: data}}
  - {name: cfg, configMap: {name: cm}}
  - {name: sec, secret: {secretName: s}}
  initContainers:
  - {name: one, image: postgres:15, command: [sh, -c, "echo one >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  - {name: two, image: postgres:15, command: [sh, -c, "echo two >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - name: main
    image: postgres:15
    command: [sh, -c]
    args:
    - |
      echo "order=$(cat /work/order | tr '\n' ' ' | sed 's/ $//')"
      echo "id=$(id -u):$(id -g):$(id -G)"
      echo "env=$FROM_SECRET $FROM_CM $POD_NAME"
      echo "claim-group=$(stat -c %g /data)"
      trap 'echo terminated > /data/marker; exit 0' TERM
      touch /work/ready
      while true; do sleep 0.2; done
    env:
    - {name: FROM_SECRET, valueFrom: {secretKeyRef: {name: s, key: value}}}
    - {name: FROM_CM, valueFrom: {configMapKeyRef: {name: cm, key: value}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    volumeMounts: [{name: work, mountPath: /work}, {name: data, mountPath: /data}, {name: cfg, mountPath: /etc/cfg}, {name: sec, mountPath: /etc/sec}]
    readinessProbe: {exec: {command: [test, -f, /work/ready]}, periodSeconds: 1}
  - name: web
    image: postgres:15
    command: [perl, -e, ` + perlHTTP + `]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1, initialDelaySeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn, namespace: node-e2e}
spec:
  terminationGracePeriodSeconds: 4
  containers:
  - {name: main, image: postgres:15, command: [sh, -c, "trap '' TERM; while true; do sleep 0.2; done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crash, namespace: node-e2e}
spec:
  containers:
  - {name: main, image: postgres:15, command: [sh, -c, "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy, namespace: node-e2e}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: postgres:15
    command: [sh, -c, "while true; do sleep 0.2; done"]
    livenessProbe: {exec: {command: ["false"]}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: badcmd, namespace: node-e2e}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: postgres:15, command: [no-such-program]}
`
