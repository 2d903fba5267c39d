package storage

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// The uid and gid a pod's files have, as the node leaves them.
const podUID, podGID = 1234, 2345

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("giving files to other users needs root")
	}
}

// writePGDATA makes a volume as a postgres pod leaves it: a 0700 data
// folder owned by the pod's user in a group-shared volume, a file, a
// symlink and a socket.
func writePGDATA(t *testing.T, dir string) {
	t.Helper()
	pgdata := filepath.Join(dir, "pgdata")
	for _, p := range []string{dir, pgdata, filepath.Join(pgdata, "base")} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(pgdata, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("PG_VERSION", filepath.Join(pgdata, "version-link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(pgdata, ".s.PGSQL.5432"), syscall.S_IFSOCK|0o777, 0); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{filepath.Join(pgdata, "PG_VERSION"), filepath.Join(pgdata, "base"), pgdata} {
		if err := os.Lchown(p, podUID, podGID); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Lchown(filepath.Join(pgdata, "version-link"), podUID, podGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, podGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o770|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
}

// checkPGDATA checks that dir holds what writePGDATA wrote.
func checkPGDATA(t *testing.T, dir string) {
	t.Helper()
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		path     string
		mode     fs.FileMode
		uid, gid uint32
		mtime    bool
	}{
		{"", 0o770 | fs.ModeDir | fs.ModeSetgid, 0, podGID, false},
		{"pgdata", 0o700 | fs.ModeDir, podUID, podGID, true},
		{"pgdata/base", 0o700 | fs.ModeDir, podUID, podGID, true},
		{"pgdata/PG_VERSION", 0o600, podUID, podGID, true},
	} {
		st, err := os.Lstat(filepath.Join(dir, c.path))
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode() != c.mode || sys.Uid != c.uid || sys.Gid != c.gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", c.path, st.Mode(), sys.Uid, sys.Gid, c.mode, c.uid, c.gid)
		}
		if c.mtime && !st.ModTime().Equal(old) {
			t.Errorf("%s: mtime %v, want %v", c.path, st.ModTime(), old)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pgdata", "PG_VERSION")); err != nil || string(b) != "15\n" {
		t.Errorf("PG_VERSION: %q, %v", b, err)
	}
	if link, err := os.Readlink(filepath.Join(dir, "pgdata", "version-link")); err != nil || link != "PG_VERSION" {
		t.Errorf("version-link: %q, %v", link, err)
	}
	if st, err := os.Lstat(filepath.Join(dir, "pgdata", "version-link")); err == nil && st.Sys().(*syscall.Stat_t).Uid != podUID {
		t.Errorf("version-link is owned by %d, want %d", st.Sys().(*syscall.Stat_t).Uid, podUID)
	}
	if _, err := os.Lstat(filepath.Join(dir, "pgdata", ".s.PGSQL.5432")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket was copied: %v", err)
	}
}

func TestCopyTreeKeepsOwnersModesAndTimes(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	writePGDATA(t, src)
	n, err := copyTree(t.Context(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("copied %d bytes, want 3", n)
	}
	checkPGDATA(t, dst)
	if _, err := copyTree(t.Context(), src, dst); err == nil {
		t.Error("copying over an existing folder worked; want an error")
	}
}

// pv is a volume as the provisioner makes it, for the snapshotter to read.
func pv(name, capacity string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)}},
	}
}

func TestSnapshotter(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	writePGDATA(t, filepath.Join(root, "pvc-1"))
	s := Snapshotter{Root: root, Client: fake.NewClientset(pv("pvc-1", "1Gi"))}
	ctx := t.Context()

	driver, id, created, size, ready, err := s.CreateSnapshot(ctx, "snapshot-a", "pvc-1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if driver != DriverName || id != "snapshot-a" || !ready || size != 1<<30 || time.Since(created) > time.Minute {
		t.Errorf("CreateSnapshot = %s %s %v %d %v, want %s snapshot-a, now, 1Gi, ready", driver, id, created, size, ready, DriverName)
	}
	checkPGDATA(t, filepath.Join(root, "snapshots", "snapshot-a"))

	// The sidecar asks again when it could not record the answer: same answer, no new copy.
	if err := os.WriteFile(filepath.Join(root, "pvc-1", "pgdata", "PG_VERSION"), []byte("changed"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, again, size2, _, err := s.CreateSnapshot(ctx, "snapshot-a", "pvc-1", nil, nil)
	if err != nil || !again.Equal(created) || size2 != size {
		t.Errorf("second CreateSnapshot: %v %d %v, want %v %d", again, size2, err, created, size)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "snapshots", "snapshot-a", "pgdata", "PG_VERSION")); string(b) != "15\n" {
		t.Errorf("the snapshot was copied again: PG_VERSION %q", b)
	}
	if _, _, _, _, _, err := s.CreateSnapshot(ctx, "snapshot-a", "pvc-2", nil, nil); err == nil {
		t.Error("the same snapshot name for another volume worked; want an error")
	}

	ready, when, size3, _, err := s.GetSnapshotStatus(ctx, "snapshot-a", nil)
	if err != nil || !ready || !when.Equal(created) || size3 != size {
		t.Errorf("GetSnapshotStatus = %v %v %d %v", ready, when, size3, err)
	}

	// Without a PV (a volume made by hand) the size is what was copied.
	if err := os.MkdirAll(filepath.Join(root, "loose"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "loose", "f"), []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, size, _, err := s.CreateSnapshot(ctx, "snapshot-b", "loose", nil, nil); err != nil || size != 5 {
		t.Errorf("snapshot of a volume without PV: size %d, %v; want 5", size, err)
	}

	for _, bad := range []string{"", "..", "../pvc-1", "a/b", ".new-x"} {
		if _, _, _, _, _, err := s.CreateSnapshot(ctx, bad, "pvc-1", nil, nil); err == nil {
			t.Errorf("CreateSnapshot named %q worked; want an error", bad)
		}
		if _, _, _, _, _, err := s.CreateSnapshot(ctx, "snapshot-c", bad, nil, nil); err == nil {
			t.Errorf("CreateSnapshot of volume %q worked; want an error", bad)
		}
		if err := s.DeleteSnapshot(ctx, bad, nil); err == nil && bad != "" {
			t.Errorf("DeleteSnapshot(%q) worked; want an error", bad)
		}
	}
	if _, _, _, _, _, err := s.CreateSnapshot(ctx, "snapshot-c", "snapshots", nil, nil); err == nil {
		t.Error("a snapshot of the snapshots folder worked; want an error")
	}
	if _, _, _, _, _, err := s.CreateSnapshot(ctx, "snapshot-c", "pvc-missing", nil, nil); err == nil {
		t.Error("snapshot of a volume without a folder worked; want an error")
	}

	for range 2 {
		if err := s.DeleteSnapshot(ctx, "snapshot-a", nil); err != nil {
			t.Fatalf("DeleteSnapshot (twice is no error): %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", "snapshot-a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the snapshot's folder is still there: %v", err)
	}
	if _, _, _, _, err := s.GetSnapshotStatus(ctx, "snapshot-a", nil); err == nil {
		t.Error("GetSnapshotStatus of a deleted snapshot worked; want an error")
	}
}

func claim(dataSource *corev1.TypedObjectReference, request string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "restored", Namespace: "ns"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(request)}},
			DataSourceRef:    dataSource,
			StorageClassName: ptr.To(ClassDelete),
		},
	}
}

func snapshotRef(name string) *corev1.TypedObjectReference {
	return &corev1.TypedObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: name}
}

// readySnapshot is a VolumeSnapshot and its content as the upstream
// controllers leave them once the snapshotter has answered.
func readySnapshot(name, handle, driver string, restoreSize int64) (*snapshotv1.VolumeSnapshot, *snapshotv1.VolumeSnapshotContent) {
	vs := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Status: &snapshotv1.VolumeSnapshotStatus{
			BoundVolumeSnapshotContentName: ptr.To("content-" + name),
			ReadyToUse:                     ptr.To(true),
		},
	}
	content := &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "content-" + name},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			Driver:            driver,
			VolumeSnapshotRef: corev1.ObjectReference{Namespace: "ns", Name: name, UID: vs.UID},
		},
		Status: &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To(handle), RestoreSize: ptr.To(restoreSize)},
	}
	return vs, content
}

func TestProvision(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	writePGDATA(t, filepath.Join(root, "snapshots", "snapshot-a"))
	ready, readyContent := readySnapshot("ready", "snapshot-a", DriverName, 1<<30)
	foreign, foreignContent := readySnapshot("foreign", "snapshot-a", "other.csi.example", 1<<30)
	notReady := &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "not-ready", Namespace: "ns"}}
	//lint:ignore SA1019 the client module generates no apply configurations, so it has no NewClientset
	h := HostPath{Root: root, NodeHostname: "node", Snapshots: snapshotfake.NewSimpleClientset(ready, readyContent, foreign, foreignContent, notReady)}
	unmountAtEnd(t, root)
	sc := class(ClassDelete, corev1.PersistentVolumeReclaimDelete, false)
	provision := func(pvName string, pvc *corev1.PersistentVolumeClaim) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
		return h.Provision(t.Context(), controller.ProvisionOptions{PVName: pvName, PVC: pvc, StorageClass: sc})
	}

	t.Run("a plain claim gets an empty filesystem as a volume of the sandbox's driver", func(t *testing.T) {
		pv, _, err := provision("pvc-plain", claim(nil, "1Gi"))
		if err != nil {
			t.Fatal(err)
		}
		csi := pv.Spec.CSI
		if csi == nil || csi.Driver != DriverName || csi.VolumeHandle != "pvc-plain" || csi.VolumeAttributes[PathAttribute] != filepath.Join(root, "pvc-plain") || pv.Spec.HostPath != nil {
			t.Errorf("volume source %+v", pv.Spec.PersistentVolumeSource)
		}
		if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			t.Errorf("reclaim policy %s, want the class's Delete", pv.Spec.PersistentVolumeReclaimPolicy)
		}
		if entries, err := os.ReadDir(filepath.Join(root, "pvc-plain")); err != nil || len(entries) != 0 {
			t.Errorf("the new folder: %v %v, want empty", entries, err)
		}
		if mounted, err := isMountPoint(filepath.Join(root, "pvc-plain")); err != nil || !mounted {
			t.Errorf("the volume's folder is no mount point: %v %v", mounted, err)
		}
		if err := h.Delete(t.Context(), pv); err != nil {
			t.Fatal(err)
		}
		checkGone(t, volumeOf(root, "pvc-plain"))
	})

	t.Run("a claim from a ready snapshot gets a copy of it", func(t *testing.T) {
		pv, _, err := provision("pvc-restored", claim(snapshotRef("ready"), "1Gi"))
		if err != nil {
			t.Fatal(err)
		}
		checkPGDATA(t, pv.Spec.CSI.VolumeAttributes[PathAttribute])
		// The library calls again when creating the PV failed: the whole copy is reused.
		if _, _, err := provision("pvc-restored", claim(snapshotRef("ready"), "1Gi")); err != nil {
			t.Fatal(err)
		}
		// The older dataSource field works as dataSourceRef does.
		old := claim(nil, "1Gi")
		old.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: "ready"}
		if pv, _, err := provision("pvc-old-field", old); err != nil {
			t.Fatal(err)
		} else {
			checkPGDATA(t, pv.Spec.CSI.VolumeAttributes[PathAttribute])
		}
	})

	for _, tc := range []struct {
		name   string
		claim  *corev1.PersistentVolumeClaim
		state  controller.ProvisioningState
		errSay string
	}{
		{"a snapshot not ready yet is waited for", claim(snapshotRef("not-ready"), "1Gi"), controller.ProvisioningNoChange, "not ready"},
		{"a snapshot not made yet is waited for", claim(snapshotRef("later"), "1Gi"), controller.ProvisioningNoChange, "later"},
		{"another driver's snapshot is refused", claim(snapshotRef("foreign"), "1Gi"), controller.ProvisioningFinished, "other.csi.example"},
		{"a claim smaller than the snapshot is refused", claim(snapshotRef("ready"), "512Mi"), controller.ProvisioningFinished, "more than the 512Mi"},
		{"a clone is refused", claim(&corev1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "x"}, "1Gi"), controller.ProvisioningFinished, "only from VolumeSnapshots"},
		{"another namespace's snapshot is refused", claim(&corev1.TypedObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: "ready", Namespace: ptr.To("other")}, "1Gi"), controller.ProvisioningFinished, "namespace other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pvName := "pvc-" + strings.ReplaceAll(tc.name, " ", "-")
			_, state, err := provision(pvName, tc.claim)
			if err == nil || state != tc.state || !strings.Contains(err.Error(), tc.errSay) {
				t.Errorf("Provision: %v, %v; want %v and an error saying %q", state, err, tc.state, tc.errSay)
			}
			checkGone(t, volumeOf(root, pvName))
		})
	}

	t.Run("Delete removes only volume folders of Root", func(t *testing.T) {
		for _, path := range []string{filepath.Join(root, "snapshots"), filepath.Join(root, "snapshots", "snapshot-a"), "/etc", root} {
			bad := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: corev1.PersistentVolumeSpec{
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: DriverName, VolumeHandle: "bad", VolumeAttributes: map[string]string{PathAttribute: path},
				}},
			}}
			if err := h.Delete(t.Context(), bad); err == nil {
				t.Errorf("Delete of a volume at %s worked; want a refusal", path)
			}
		}
		if _, err := os.Stat(filepath.Join(root, "snapshots", "snapshot-a")); err != nil {
			t.Errorf("the snapshot is gone: %v", err)
		}
		var ignored *controller.IgnoredError
		other := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
			CSI: &corev1.CSIPersistentVolumeSource{Driver: "other.csi.example", VolumeHandle: "x"},
		}}}
		if err := h.Delete(t.Context(), other); !errors.As(err, &ignored) {
			t.Errorf("Delete of another driver's volume: %v, want IgnoredError", err)
		}
	})
}
