package node

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/utils/ptr"
)

// The kubelet's layout of a volume of files, which programs that watch
// for rotated certificates or configuration expect: the files live in a
// hidden folder named after the time they were written, dataLink points
// at it, and each top-level name is a link through dataLink.
const (
	dataLink    = "..data"
	dataLinkTmp = "..data_tmp"
	// tsPrefix starts the hidden folders' names; ".." keeps them out of
	// any key's way, since keys may not start with "..".
	tsPrefix = ".."
	tsLayout = "2006_01_02_15_04_05."
)

// writeAtomic makes dir hold exactly files, as the kubelet's atomic writer
// does: they go into a new hidden folder and dataLink moves to it in one
// rename, so that a reader sees the whole old set or the whole new one,
// never a mix. Files are owned by root and, when the pod has an fsGroup,
// by that group. It writes nothing, and says so, when dir already holds
// this content.
func (w volumeWriter) writeAtomic(dir string, files []file, defaultMode *int32) (bool, error) {
	if err := checkPaths(files); err != nil {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	old, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if old != "" {
		same, err := holds(filepath.Join(dir, old), files)
		if err != nil {
			return false, fmt.Errorf("reading the files written before: %w", err)
		}
		if same {
			return false, nil
		}
	}
	ts, err := w.writeTimestamped(dir, files, defaultMode)
	if err != nil {
		return false, err
	}
	if err := swapData(dir, ts); err != nil {
		_ = os.RemoveAll(filepath.Join(dir, ts))
		return false, err
	}
	if err := linkTopLevel(dir, files); err != nil {
		return true, err
	}
	if old == "" {
		return true, nil
	}
	if err := unlinkGone(dir, old, files); err != nil {
		return true, err
	}
	return true, os.RemoveAll(filepath.Join(dir, old))
}

func checkPaths(files []file) error {
	for _, f := range files {
		if f.path == "" || strings.Contains(f.path, "..") || filepath.IsAbs(f.path) {
			return fmt.Errorf("file path %q escapes its volume", f.path)
		}
	}
	return nil
}

// holds tells whether the folder ts has exactly files, byte for byte.
// Modes and owners are not compared: they come from the pod's spec, which
// does not change.
func holds(ts string, files []file) (bool, error) {
	want := map[string][]byte{}
	for _, f := range files {
		want[filepath.Clean(f.path)] = f.data // a later source wins, as when written
	}
	found := 0
	err := filepath.WalkDir(ts, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(ts, p)
		if err != nil {
			return err
		}
		data, ok := want[rel]
		if !ok {
			return errDiffers
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			return errDiffers
		}
		found++
		return nil
	})
	if errors.Is(err, errDiffers) || errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil && found == len(want), err
}

var errDiffers = errors.New("differs")

// writeTimestamped writes files into a new hidden folder of dir and
// returns its name.
func (w volumeWriter) writeTimestamped(dir string, files []file, defaultMode *int32) (string, error) {
	ts, err := os.MkdirTemp(dir, tsPrefix+time.Now().UTC().Format(tsLayout))
	if err != nil {
		return "", err
	}
	// MkdirTemp makes it private; the pod's users must get through it.
	if err := os.Chmod(ts, 0o755); err != nil {
		_ = os.RemoveAll(ts)
		return "", err
	}
	if err := w.writeFiles(ts, files, defaultMode); err != nil {
		_ = os.RemoveAll(ts)
		return "", err
	}
	return filepath.Base(ts), nil
}

// writeFiles writes files under dir with their modes and owners.
func (w volumeWriter) writeFiles(dir string, files []file, defaultMode *int32) error {
	gid := -1
	if w.fsGroup != nil {
		gid = int(*w.fsGroup)
	}
	for _, f := range files {
		mode := ptr.Deref(f.mode, ptr.Deref(defaultMode, 0o644))
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			return err
		}
		if err := os.Chown(p, 0, gid); err != nil {
			return err
		}
		if err := os.Chmod(p, fs.FileMode(mode)&fs.ModePerm); err != nil {
			return err
		}
	}
	return nil
}

// swapData points dataLink at ts in one rename.
func swapData(dir, ts string) error {
	tmp := filepath.Join(dir, dataLinkTmp)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(ts, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return fmt.Errorf("swapping %s to %s: %w", dataLink, ts, err)
	}
	return nil
}

// linkTopLevel makes each top-level name of files a link through dataLink;
// links made before stay, since they resolve through dataLink.
func linkTopLevel(dir string, files []file) error {
	for name := range topLevel(files) {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataLink, name), p); err != nil {
			return err
		}
	}
	return nil
}

// unlinkGone removes the links to top-level names that the folder old had
// and files no longer have.
func unlinkGone(dir, old string, files []file) error {
	entries, err := os.ReadDir(filepath.Join(dir, old))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing was linked through it
	}
	if err != nil {
		return err
	}
	keep := topLevel(files)
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if st, err := os.Lstat(p); err == nil && st.Mode()&fs.ModeSymlink != 0 {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func topLevel(files []file) map[string]bool {
	out := map[string]bool{}
	for _, f := range files {
		out[strings.Split(filepath.Clean(f.path), string(filepath.Separator))[0]] = true
	}
	return out
}
