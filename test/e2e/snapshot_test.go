package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const snapNS = "snapshot-e2e"

// TestSnapshotOfAHostpathVolume checks the sandbox's VolumeSnapshots as the
// operator will use them: a pod writes a file into a claim, a VolumeSnapshot
// of the claim becomes ready with a restore size, a claim made from it (at
// once, before it is ready) binds to a copy in which another pod finds the
// file with its content, mode and owner, and deleting the snapshot removes
// its folder.
func TestSnapshotOfAHostpathVolume(t *testing.T) {
	e := startSandbox(t)
	poll(t, time.Minute, "the default ServiceAccount", func() error {
		_, err := e.kubectl("", "get", "serviceaccount", "default")
		return err
	})
	if out := e.mustKubectl("", "get", "volumesnapshotclass", "sandbox-snapshots", "-o",
		`jsonpath={.driver} {.deletionPolicy} {.metadata.annotations.snapshot\.storage\.kubernetes\.io/is-default-class}`); out != "hostpath.sandbox.holdfast.dev Delete true" {
		t.Errorf("VolumeSnapshotClass sandbox-snapshots: %q", out)
	}
	if out := e.mustKubectl("", "get", "csidriver", "hostpath.sandbox.holdfast.dev", "-o", "jsonpath={.spec.attachRequired}"); out != "false" {
		t.Errorf("CSIDriver attachRequired %q, want false", out)
	}
	e.mustKubectl("", "create", "namespace", snapNS)
	t.Cleanup(func() { _, _ = e.kubectl("", "delete", "namespace", snapNS, "--wait=false") })

	e.mustKubectl(snapshotSource, "apply", "-f", "-")
	e.waitPodDone(t, "writer")
	written := e.mustKubectl("", "-n", snapNS, "logs", "writer")
	if !strings.Contains(written, "content=written before the snapshot") {
		t.Fatalf("the writer's log: %s", written)
	}
	sourcePV := e.mustKubectl("", "-n", snapNS, "get", "pvc", "source", "-o", "jsonpath={.spec.volumeName}")
	if out := e.mustKubectl("", "get", "pv", sourcePV, "-o", "jsonpath={.spec.csi.driver} {.spec.csi.volumeHandle}"); out != "hostpath.sandbox.holdfast.dev "+sourcePV {
		t.Errorf("the claim's volume: csi %q, want the sandbox's driver and the PV's name as handle", out)
	}

	// The restored claim comes at once: the provisioner waits for the snapshot.
	e.mustKubectl(snapshotAndRestore, "apply", "-f", "-")
	var content string
	poll(t, 2*time.Minute, "the VolumeSnapshot ready", func() error {
		out, err := e.kubectl("", "-n", snapNS, "get", "volumesnapshot", "snap", "-o",
			`jsonpath={.status.readyToUse} {.status.restoreSize} {.status.boundVolumeSnapshotContentName} {.spec.volumeSnapshotClassName}`)
		if err != nil {
			return err
		}
		f := strings.Fields(out)
		if len(f) != 4 || f[0] != "true" {
			return errorString("status: " + out)
		}
		if f[1] != "1Gi" || f[3] != "sandbox-snapshots" {
			t.Errorf("VolumeSnapshot: restoreSize %s and class %s, want 1Gi (the claim's capacity) and the default class", f[1], f[3])
		}
		content = f[2]
		return nil
	})
	out := e.mustKubectl("", "get", "volumesnapshotcontent", content, "-o", "jsonpath={.spec.driver} {.status.snapshotHandle} {.status.readyToUse}")
	f := strings.Fields(out)
	if len(f) != 3 || f[0] != "hostpath.sandbox.holdfast.dev" || f[2] != "true" {
		t.Fatalf("VolumeSnapshotContent %s: %q", content, out)
	}
	snapshotDir := filepath.Join(e.dir, "volumes", "snapshots", f[1])
	if _, err := os.Stat(filepath.Join(snapshotDir, "pgdata", "file")); err != nil {
		t.Errorf("the snapshot's copy of the file: %v", err)
	}

	e.waitPodDone(t, "reader")
	read := e.mustKubectl("", "-n", snapNS, "logs", "reader")
	t.Logf("the writer printed:\n%s\nthe reader of the restored claim printed:\n%s", written, read)
	// The writer's stat line holds the folder's and file's modes and owners.
	for _, want := range []string{statLine(t, written), "content=written before the snapshot"} {
		if !strings.Contains(read, want) {
			t.Errorf("the reader's log lacks %q:\n%s\nthe writer's:\n%s", want, read, written)
		}
	}
	if !strings.Contains(read, "pgdata=700 1234 ") && !strings.Contains(read, "pgdata=2700 1234 ") {
		t.Errorf("the restored data folder is not 0700 and the pod user's:\n%s", read)
	}
	// The copy is the restored volume's own: the snapshot keeps the original.
	if b, err := os.ReadFile(filepath.Join(snapshotDir, "pgdata", "file")); err != nil || string(b) != "written before the snapshot\n" {
		t.Errorf("the snapshot's file after the reader wrote to its copy: %q, %v", b, err)
	}

	e.mustKubectl("", "-n", snapNS, "delete", "volumesnapshot", "snap", "--wait=false")
	poll(t, 2*time.Minute, "the snapshot, its content and its folder gone", func() error {
		if out, err := e.kubectl("", "-n", snapNS, "get", "volumesnapshot", "snap"); err == nil || !strings.Contains(out, "NotFound") {
			return errorString("VolumeSnapshot still there: " + out)
		}
		if out, err := e.kubectl("", "get", "volumesnapshotcontent", content); err == nil || !strings.Contains(out, "NotFound") {
			return errorString("VolumeSnapshotContent still there: " + out)
		}
		if _, err := os.Stat(snapshotDir); !os.IsNotExist(err) {
			return errorString("folder still there: " + snapshotDir)
		}
		return nil
	})
}

// statLine picks the line with the modes and owners from a pod's log.
func statLine(t *testing.T, log string) string {
	t.Helper()
	for l := range strings.SplitSeq(log, "\n") {
		if strings.HasPrefix(l, "pgdata=") {
			return l
		}
	}
	t.Fatalf("no pgdata= line in:\n%s", log)
	return ""
}

// waitPodDone waits until a pod that runs to its end has succeeded.
func (e *sandboxEnv) waitPodDone(t *testing.T, pod string) {
	t.Helper()
	poll(t, 2*time.Minute, pod+" succeeded", func() error {
		out, err := e.kubectl("", "-n", snapNS, "get", "pod", pod, "-o", "jsonpath={.status.phase}")
		if err == nil && out != "Succeeded" {
			err = errorString(pod + " phase " + out)
		}
		return err
	})
}

// printData prints the data folder's and file's mode and owner, and the file.
const printData = `echo "pgdata=$(stat -c '%a %u %g' /data/pgdata) file=$(stat -c '%a %u %g' /data/pgdata/file)"; echo "content=$(cat /data/pgdata/file)"`

// dataPod runs script once with claim at /data, as a user of its own with an
// fsGroup, as postgres pods do.
func dataPod(name, claim, script string) string {
	return `
apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: ` + snapNS + `}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1234, runAsGroup: 1234, fsGroup: 2345, runAsNonRoot: true}
  volumes: [{name: data, persistentVolumeClaim: {claimName: ` + claim + `}}]
  containers:
  - {name: main, image: postgres:15, command: [sh, -c, ` + strconv.Quote("set -e; "+script) + `], volumeMounts: [{name: data, mountPath: /data}]}
`
}

var snapshotSource = `
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: source, namespace: snapshot-e2e}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---` + dataPod("writer", "source", `mkdir /data/pgdata; chmod 700 /data/pgdata
echo 'written before the snapshot' > /data/pgdata/file; chmod 640 /data/pgdata/file
`+printData)

var snapshotAndRestore = `
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap, namespace: snapshot-e2e}
spec:
  source: {persistentVolumeClaimName: source}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restored, namespace: snapshot-e2e}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}
---` + dataPod("reader", "restored", printData+`
echo 'the copy is the restored volume own' > /data/pgdata/file`)
