package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Snapshotter takes snapshots of the provisioner's volumes as copies of
// their folders under <Root>/snapshots, for the upstream CSI snapshot
// sidecar, which calls it in place of a CSI driver's gRPC API. A copy is
// made file by file, not at one instant: of a volume that a process is
// writing to, it is no consistent image, so a database is snapshotted
// stopped (see docs/design/backups-research.md, section 3).
type Snapshotter struct {
	Root string
	// Client reads a volume's capacity, which a snapshot reports as its
	// restore size.
	Client kubernetes.Interface
}

// snapshotRecord is kept for each snapshot in <Root>/snapshots/.records:
// GetSnapshotStatus must answer with the time and size that CreateSnapshot
// answered.
type snapshotRecord struct {
	Volume    string    `json:"volume"`
	CreatedAt time.Time `json:"createdAt"`
	Size      int64     `json:"size"`
}

func snapshotsDir(root string) string { return filepath.Join(root, "snapshots") }

// snapshotPath is the folder of the snapshot whose handle is id. Handles come
// from API objects that users may write (a pre-provisioned
// VolumeSnapshotContent names any handle), so anything that is not a plain
// name is refused rather than joined into a path.
func snapshotPath(root, id string) (string, error) {
	if !plainName(id) {
		return "", fmt.Errorf("snapshot handle %q is not a plain name", id)
	}
	return filepath.Join(snapshotsDir(root), id), nil
}

// plainName says whether s names an entry in a folder. Names starting with a
// dot are refused too: those are the copies still in progress.
func plainName(s string) bool {
	return s != "" && !strings.HasPrefix(s, ".") && !strings.ContainsRune(s, filepath.Separator)
}

// CreateSnapshot copies the volume's folder to the snapshot's. The sidecar
// calls it again when it could not record an earlier answer, so a snapshot
// that exists is answered as it was made.
func (s Snapshotter) CreateSnapshot(ctx context.Context, name, volumeHandle string, _, _ map[string]string) (driver, id string, created time.Time, size int64, ready bool, err error) {
	dst, err := snapshotPath(s.Root, name)
	if err != nil {
		return "", "", time.Time{}, 0, false, err
	}
	// The snapshots folder is a plain name too, but no volume.
	if !plainName(volumeHandle) || volumeHandle == filepath.Base(snapshotsDir(s.Root)) {
		return "", "", time.Time{}, 0, false, fmt.Errorf("volume handle %q is not a volume's name", volumeHandle)
	}
	if rec, err := readRecord(s.Root, name); err == nil {
		if rec.Volume != volumeHandle {
			return "", "", time.Time{}, 0, false, fmt.Errorf("snapshot %s exists, of volume %s, not %s", name, rec.Volume, volumeHandle)
		}
		return DriverName, name, rec.CreatedAt, rec.Size, true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", time.Time{}, 0, false, err
	}

	src := filepath.Join(s.Root, volumeHandle)
	if st, err := os.Stat(src); err != nil {
		return "", "", time.Time{}, 0, false, fmt.Errorf("volume %s: %w", volumeHandle, err)
	} else if !st.IsDir() {
		return "", "", time.Time{}, 0, false, fmt.Errorf("volume %s: %s is not a folder", volumeHandle, src)
	}
	if err := os.MkdirAll(snapshotsDir(s.Root), 0o700); err != nil {
		return "", "", time.Time{}, 0, false, fmt.Errorf("making the snapshots folder: %w", err)
	}
	// Copied aside and renamed, so that a snapshot's folder is whole whenever
	// it exists, even if the sandbox stops halfway.
	tmp := filepath.Join(snapshotsDir(s.Root), ".new-"+name)
	if err := os.RemoveAll(tmp); err != nil {
		return "", "", time.Time{}, 0, false, fmt.Errorf("clearing an earlier attempt: %w", err)
	}
	created = time.Now()
	copied, err := copyTree(ctx, src, tmp)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return "", "", time.Time{}, 0, false, fmt.Errorf("snapshot %s of volume %s: %w", name, volumeHandle, err)
	}
	size, err = s.volumeCapacity(ctx, volumeHandle)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return "", "", time.Time{}, 0, false, err
	}
	if size == 0 {
		size = copied
	}
	rec := snapshotRecord{Volume: volumeHandle, CreatedAt: created, Size: size}
	if err := writeRecord(s.Root, name, rec); err != nil {
		_ = os.RemoveAll(tmp)
		return "", "", time.Time{}, 0, false, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp)
		return "", "", time.Time{}, 0, false, fmt.Errorf("snapshot %s: %w", name, err)
	}
	return DriverName, name, created, size, true, nil
}

// volumeCapacity is the capacity of the volume whose handle is its PV's
// name: a restore needs a claim at least that large, as with a real driver.
// It is 0 when the volume has no PV to read it from.
func (s Snapshotter) volumeCapacity(ctx context.Context, handle string) (int64, error) {
	if s.Client == nil {
		return 0, nil
	}
	pv, err := s.Client.CoreV1().PersistentVolumes().Get(ctx, handle, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the capacity of volume %s: %w", handle, err)
	}
	q := pv.Spec.Capacity[corev1.ResourceStorage]
	return q.Value(), nil
}

// DeleteSnapshot removes a snapshot; one that is already gone is no error.
func (s Snapshotter) DeleteSnapshot(_ context.Context, id string, _ map[string]string) error {
	dir, err := snapshotPath(s.Root, id)
	if err != nil {
		return err
	}
	// The record goes last: while it is there, a half-deleted snapshot is
	// still found and deleted again.
	for _, p := range []string{dir, filepath.Join(snapshotsDir(s.Root), ".new-"+id), recordPath(s.Root, id)} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("deleting snapshot %s: %w", id, err)
		}
	}
	return nil
}

// GetSnapshotStatus answers for snapshots that exist (pre-provisioned
// contents name them by handle); they are always ready.
func (s Snapshotter) GetSnapshotStatus(_ context.Context, id string, _ map[string]string) (ready bool, created time.Time, size int64, groupSnapshotID string, err error) {
	if _, err := snapshotPath(s.Root, id); err != nil {
		return false, time.Time{}, 0, "", err
	}
	rec, err := readRecord(s.Root, id)
	if err != nil {
		return false, time.Time{}, 0, "", fmt.Errorf("snapshot %s: %w", id, err)
	}
	return true, rec.CreatedAt, rec.Size, "", nil
}

// recordPath is in a folder of its own, so that no handle's record can be
// another handle's folder.
func recordPath(root, id string) string {
	return filepath.Join(snapshotsDir(root), ".records", id+".json")
}

// readRecord reads the record of a snapshot whose handle is a plain name.
func readRecord(root, id string) (snapshotRecord, error) {
	var rec snapshotRecord
	b, err := os.ReadFile(recordPath(root, id))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("reading %s: %w", recordPath(root, id), err)
	}
	// A record without its folder is a snapshot that stopped halfway,
	// either being made or being deleted.
	if _, err := os.Stat(filepath.Join(snapshotsDir(root), id)); err != nil {
		return rec, err
	}
	return rec, nil
}

// writeRecord writes the record whole or not at all.
func writeRecord(root, id string, rec snapshotRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := recordPath(root, id)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("writing the record of snapshot %s: %w", id, err)
	}
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("writing the record of snapshot %s: %w", id, err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("writing the record of snapshot %s: %w", id, err)
	}
	return nil
}
