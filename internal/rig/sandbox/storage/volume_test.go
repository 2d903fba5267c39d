package storage

import (
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

const mib = 1 << 20

// unmountAtEnd unmounts every volume under root when the test ends, before
// its temporary folder goes, so that no mount or loop device outlives it.
func unmountAtEnd(t *testing.T, root string) {
	t.Helper()
	t.Cleanup(func() {
		if err := UnmountAll(root); err != nil {
			t.Errorf("unmounting the test's volumes: %v", err)
		}
	})
}

// volumeHost is a provisioner on a fresh root, its volumes unmounted at the end.
func volumeHost(t *testing.T) HostPath {
	t.Helper()
	needRoot(t)
	root := t.TempDir()
	unmountAtEnd(t, root)
	return HostPath{Root: root, NodeHostname: "node"}
}

// boundClaim provisions a volume for a claim of size and returns the claim
// and its PV as the PV controller leaves them once bound.
func boundClaim(t *testing.T, h HostPath, name, size string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	t.Helper()
	pvc := claim(nil, size)
	pvc.Name, pvc.UID = name, types.UID("uid-"+name)
	pv, _, err := h.Provision(t.Context(), controller.ProvisionOptions{
		PVName: "pvc-" + name, PVC: pvc, StorageClass: class(ClassDelete, corev1.PersistentVolumeReclaimDelete, false),
	})
	if err != nil {
		t.Fatal(err)
	}
	pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID}
	pvc.Spec.VolumeName = pv.Name
	pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, AccessModes: pvc.Spec.AccessModes, Capacity: pv.Spec.Capacity}
	return pvc, pv
}

// statfs is the total and available bytes of the filesystem at dir.
func statfs(t *testing.T, dir string) (total, avail int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize
}

// writeFile writes n bytes that depend on seed to path, to the disk, and
// returns their hash.
func writeFile(path string, n int64, seed uint64) ([]byte, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{byte(seed)}), n)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return h.Sum(nil), err
}

// hashFile hashes what the disk holds of path, not what the page cache does.
func hashFile(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil)
}

// checkSize checks that the filesystem at dir is size bytes, with all but
// used and btrfs's few MiB of its own available.
func checkSize(t *testing.T, dir string, size, used int64) {
	t.Helper()
	total, avail := statfs(t, dir)
	if free := size - used; total != size || avail < free-8*mib || avail > free {
		t.Errorf("statfs of %s: %d MiB, %d MiB available; want %d MiB, nearly %d MiB available", dir, total/mib, avail/mib, size/mib, free/mib)
	}
}

// checkGone checks that a volume left no mount, folder or image.
func checkGone(t *testing.T, v volume) {
	t.Helper()
	if mounted, err := isMountPoint(v.dir); err != nil || mounted {
		t.Errorf("%s is still mounted: %v", v.dir, err)
	}
	for _, p := range []string{v.dir, v.image, v.whole} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there: %v", p, err)
		}
	}
}

func TestVolumeHasTheClaimsSize(t *testing.T) {
	h := volumeHost(t)
	_, pv := boundClaim(t, h, "small", "64Mi")
	dir := pv.Spec.CSI.VolumeAttributes[PathAttribute]
	checkSize(t, dir, 64*mib, 0)
	if _, err := writeFile(filepath.Join(dir, "too-big"), 70*mib, 1); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writing 70 MiB into a 64 MiB volume: %v, want ENOSPC", err)
	}
	if st, err := os.Stat(filepath.Join(h.Root, ".images", "pvc-small.img")); err != nil || st.Size() != 64*mib {
		t.Errorf("the image: %v, want 64 MiB", err)
	}

	// A claim smaller than btrfs's smallest gets the smallest, and says so.
	_, tiny := boundClaim(t, h, "tiny", "10Mi")
	if got := tiny.Spec.Capacity[corev1.ResourceStorage]; got.Value() != minVolumeSize {
		t.Errorf("a 10Mi claim's PV has %s, want 16Mi", got.String())
	}
	checkSize(t, tiny.Spec.CSI.VolumeAttributes[PathAttribute], minVolumeSize, 0)
}

func TestProvisionAgainReusesTheVolumeAndDeleteRemovesIt(t *testing.T) {
	h := volumeHost(t)
	pvc, pv := boundClaim(t, h, "data", "64Mi")
	v := volumeOf(h.Root, pv.Name)
	if err := os.WriteFile(filepath.Join(v.dir, "kept"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loopOf(v.dir, v.image); err != nil {
		t.Fatal(err)
	}

	// The library calls again when it could not create the PV.
	if _, _, err := h.Provision(t.Context(), controller.ProvisionOptions{PVName: pv.Name, PVC: pvc, StorageClass: class(ClassDelete, corev1.PersistentVolumeReclaimDelete, false)}); err != nil {
		t.Fatal(err)
	}
	if ms, err := mountsAt(v.dir, true); err != nil || len(ms) != 1 {
		t.Errorf("mounts of the volume after a second Provision: %v %v, want one", ms, err)
	}
	if _, err := os.Stat(filepath.Join(v.dir, "kept")); err != nil {
		t.Errorf("the second Provision lost the volume's file: %v", err)
	}

	// Unmounted as the sandbox does when it stops, a whole volume is
	// mounted again as it was.
	if err := UnmountAll(h.Root); err != nil {
		t.Fatal(err)
	}
	if ms, err := mountsAt(h.Root, true); err != nil || len(ms) != 0 {
		t.Errorf("mounts under the root after UnmountAll: %v %v", ms, err)
	}
	if _, _, err := h.Provision(t.Context(), controller.ProvisionOptions{PVName: pv.Name, PVC: pvc, StorageClass: class(ClassDelete, corev1.PersistentVolumeReclaimDelete, false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(v.dir, "kept")); err != nil {
		t.Errorf("the volume mounted again lost its file: %v", err)
	}
	dev, err := loopOf(v.dir, v.image)
	if err != nil {
		t.Fatal(err)
	}

	if err := h.Delete(t.Context(), pv); err != nil {
		t.Fatal(err)
	}
	checkGone(t, v)
	// Nothing else holds the filesystem, so its loop device is let go.
	backing := filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(backing)
		if err != nil || !strings.Contains(string(b), v.image) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s still holds %s after Delete", dev, b)
			break
		}
	}
	if err := h.Delete(t.Context(), pv); err != nil {
		t.Errorf("Delete of a deleted volume: %v, want none", err)
	}
}

func TestRestoredVolumeHasTheClaimsSizeAndTheSnapshot(t *testing.T) {
	h := volumeHost(t)
	writePGDATA(t, filepath.Join(h.Root, "snapshots", "snapshot-a"))
	vs, content := readySnapshot("ready", "snapshot-a", DriverName, 64*mib)
	//lint:ignore SA1019 the client module generates no apply configurations, so it has no NewClientset
	h.Snapshots = snapshotfake.NewSimpleClientset(vs, content)
	pvc := claim(snapshotRef("ready"), "64Mi")
	provision := func() *corev1.PersistentVolume {
		pv, _, err := h.Provision(t.Context(), controller.ProvisionOptions{PVName: "pvc-restored", PVC: pvc, StorageClass: class(ClassDelete, corev1.PersistentVolumeReclaimDelete, false)})
		if err != nil {
			t.Fatal(err)
		}
		return pv
	}
	dir := provision().Spec.CSI.VolumeAttributes[PathAttribute]
	checkPGDATA(t, dir)
	checkSize(t, dir, 64*mib, 0)

	// Called again, Provision keeps the copy, even what changed in it since.
	if err := os.WriteFile(filepath.Join(dir, "pgdata", "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "written-since"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	provision()
	if _, err := os.Stat(filepath.Join(dir, "written-since")); err != nil {
		t.Errorf("a second Provision copied the snapshot anew: %v", err)
	}

	// A copy cut short is made anew, not taken as whole.
	if err := os.Remove(volumeOf(h.Root, "pvc-restored").whole); err != nil {
		t.Fatal(err)
	}
	provision()
	if _, err := os.Stat(filepath.Join(dir, "written-since")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a volume that was not whole was reused: %v", err)
	}
	checkPGDATA(t, dir)
}

// resizeClient is a fake API holding a bound claim and its PV, the claim
// asking for request.
func resizeClient(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, request string) *fake.Clientset {
	pvc = pvc.DeepCopy()
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(request)
	return fake.NewClientset(pvc, pv)
}

func resizeConditionTypes(pvc *corev1.PersistentVolumeClaim) []corev1.PersistentVolumeClaimConditionType {
	var out []corev1.PersistentVolumeClaimConditionType
	for _, c := range pvc.Status.Conditions {
		if slices.Contains(resizeConditions, c.Type) {
			out = append(out, c.Type)
		}
	}
	return out
}

// events drains what a fake recorder recorded.
func events(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestResizeGrowsTheVolumeInUse(t *testing.T) {
	h := volumeHost(t)
	pvc, pv := boundClaim(t, h, "growing", "64Mi")
	dir := pv.Spec.CSI.VolumeAttributes[PathAttribute]
	before, err := writeFile(filepath.Join(dir, "before"), 40*mib, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeFile(filepath.Join(dir, "later"), 100*mib, 3); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("100 MiB more in a 64 MiB volume: %v, want ENOSPC", err)
	}
	if err := os.Remove(filepath.Join(dir, "later")); err != nil {
		t.Fatal(err)
	}

	// Held open, the filesystem could not be unmounted to grow it.
	held, err := os.Open(filepath.Join(dir, "before"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cs := resizeClient(pvc, pv, "128Mi")
	rec := record.NewFakeRecorder(16)
	r := resizer{client: cs, root: h.Root, recorder: rec}
	if err := r.reconcile(t.Context(), "ns/growing"); err != nil {
		t.Fatal(err)
	}
	checkMarkedResizing(t, cs, "128Mi")

	// btrfs grows to 256 MiB at least, so the claim gets that.
	checkSize(t, dir, 256*mib, 40*mib)
	if _, err := writeFile(filepath.Join(dir, "later"), 100*mib, 3); err != nil {
		t.Errorf("100 MiB more in the grown volume: %v", err)
	}
	if got := hashFile(t, filepath.Join(dir, "before")); !slices.Equal(got, before) {
		t.Error("the file written before the resize changed")
	}
	if got := gotPV(t, cs, pv.Name).Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("256Mi")) != 0 {
		t.Errorf("the PV's capacity is %s, want 256Mi", got.String())
	}
	gotPVC, err := cs.CoreV1().PersistentVolumeClaims("ns").Get(t.Context(), "growing", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := gotPVC.Status
	if got := st.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("256Mi")) != 0 {
		t.Errorf("the claim's capacity is %s, want 256Mi", got.String())
	}
	if got := st.AllocatedResources[corev1.ResourceStorage]; got.Cmp(resource.MustParse("128Mi")) != 0 {
		t.Errorf("the claim's allocated storage is %s, want the 128Mi asked for", got.String())
	}
	if len(st.AllocatedResourceStatuses) != 0 || len(resizeConditionTypes(gotPVC)) != 0 {
		t.Errorf("the claim still shows a resize: %v %v", st.AllocatedResourceStatuses, st.Conditions)
	}
	got := events(rec)
	if !slices.ContainsFunc(got, func(e string) bool { return strings.HasPrefix(e, "Normal VolumeResizeSuccessful") }) {
		t.Errorf("events %q, want a VolumeResizeSuccessful", got)
	}

	// Done, the claim asks for no more than it has: nothing to do.
	if err := r.reconcile(t.Context(), "ns/growing"); err != nil || len(events(rec)) != 0 {
		t.Errorf("reconciling a grown claim again: %v, want nothing done", err)
	}
}

func TestResizeBeyondTheDiskIsInfeasible(t *testing.T) {
	h := volumeHost(t)
	pvc, pv := boundClaim(t, h, "greedy", "64Mi")
	dir := pv.Spec.CSI.VolumeAttributes[PathAttribute]
	cs := resizeClient(pvc, pv, "1Pi")
	rec := record.NewFakeRecorder(16)
	r := resizer{client: cs, root: h.Root, recorder: rec}

	if err := r.reconcile(t.Context(), "ns/greedy"); err == nil || !strings.Contains(err.Error(), "free") {
		t.Fatalf("growing to 1Pi: %v, want a refusal that names the free space", err)
	}
	checkSize(t, dir, 64*mib, 0)
	if st, err := os.Stat(volumeOf(h.Root, pv.Name).image); err != nil || st.Size() != 64*mib {
		t.Errorf("the image after a refused resize: %v, want 64 MiB", err)
	}
	gotPVC, err := cs.CoreV1().PersistentVolumeClaims("ns").Get(t.Context(), "greedy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := gotPVC.Status
	if st.AllocatedResourceStatuses[corev1.ResourceStorage] != corev1.PersistentVolumeClaimControllerResizeInfeasible {
		t.Errorf("allocatedResourceStatuses %v, want storage: ControllerResizeInfeasible", st.AllocatedResourceStatuses)
	}
	if got := st.AllocatedResources[corev1.ResourceStorage]; got.Cmp(resource.MustParse("1Pi")) != 0 {
		t.Errorf("allocated storage %s, want 1Pi", got.String())
	}
	if types := resizeConditionTypes(gotPVC); !slices.Equal(types, []corev1.PersistentVolumeClaimConditionType{corev1.PersistentVolumeClaimControllerResizeError}) ||
		!strings.Contains(st.Conditions[len(st.Conditions)-1].Message, "free") {
		t.Errorf("conditions %v, want ControllerResizeError naming the free space", st.Conditions)
	}
	if got := events(rec); len(got) != 1 || !strings.HasPrefix(got[0], "Warning VolumeResizeFailed") {
		t.Errorf("events %q, want one VolumeResizeFailed", got)
	}
	if got := gotPV(t, cs, pv.Name).Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("64Mi")) != 0 {
		t.Errorf("the PV's capacity is %s, want 64Mi still", got.String())
	}

	// Retried, the same refusal records nothing new.
	if err := r.reconcile(t.Context(), "ns/greedy"); err == nil {
		t.Error("the retry worked; want the same refusal")
	}
	if got := events(rec); len(got) != 0 {
		t.Errorf("the retry recorded %q, want nothing", got)
	}
}

// checkMarkedResizing checks that the first status the resizer wrote for a
// claim said what the external-resizer says before it grows a volume.
func checkMarkedResizing(t *testing.T, cs *fake.Clientset, request string) {
	t.Helper()
	for _, a := range cs.Actions() {
		update, ok := a.(k8stesting.UpdateAction)
		if !ok || a.GetResource().Resource != "persistentvolumeclaims" || a.GetSubresource() != "status" {
			continue
		}
		st := update.GetObject().(*corev1.PersistentVolumeClaim).Status
		if got := st.AllocatedResources[corev1.ResourceStorage]; got.Cmp(resource.MustParse(request)) != 0 ||
			st.AllocatedResourceStatuses[corev1.ResourceStorage] != corev1.PersistentVolumeClaimControllerResizeInProgress ||
			!slices.ContainsFunc(st.Conditions, func(c corev1.PersistentVolumeClaimCondition) bool {
				return c.Type == corev1.PersistentVolumeClaimResizing && c.Status == corev1.ConditionTrue
			}) {
			t.Errorf("the claim's first status update: %+v; want Resizing, %s allocated, ControllerResizeInProgress", st, request)
		}
		return
	}
	t.Error("the resizer wrote no claim status")
}

func gotPV(t *testing.T, cs *fake.Clientset, name string) *corev1.PersistentVolume {
	t.Helper()
	pv, err := cs.CoreV1().PersistentVolumes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:          "/plain",
		`/a\040b`:         "/a b",
		`/tab\011end\134`: "/tab\tend\\",
		`/short\04`:       `/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
