package imagestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// unpackLayers applies uncompressed layers to a new folder, as a pull does.
func unpackLayers(t *testing.T, layers ...[]byte) (string, error) {
	t.Helper()
	root := t.TempDir()
	blobs := t.TempDir()
	u, err := newUnpacker(root)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	for i, b := range layers {
		p := filepath.Join(blobs, string(rune('a'+i)))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := u.apply(context.Background(), p, plainLayer(b)); err != nil {
			return root, err
		}
	}
	return root, u.finish()
}

func TestUnpackReplacements(t *testing.T) {
	root, err := unpackLayers(t,
		tarOf(t,
			dir("d/", 0o700, root0, root0),
			file("d/child", 0o644, root0, root0, "child\n"),
			dir("a/", 0o755, root0, root0),
			file("a/f", 0o644, root0, root0, "f\n"),
			file("f", 0o644, root0, root0, "a file where a folder comes\n"),
		),
		tarOf(t,
			// A folder becomes a file: its mode must not come back at the end.
			file("d", 0o644, root0, root0, "now a file\n"),
			// A folder becomes a link to another: writes through it go there.
			whiteout(".wh.a"),
			dir("b/", 0o755, root0, root0),
			symlink("a", "/b", root0, root0),
			file("a/g", 0o644, root0, root0, "g\n"),
			// A file becomes a folder.
			dir("f/", 0o750, root0, root0),
			file("f/inside", 0o644, root0, root0, "inside\n"),
		),
	)
	if err != nil {
		t.Fatal(err)
	}
	if fi := lstat(t, filepath.Join(root, "d")); fi.Mode() != 0o644 {
		t.Errorf("d has mode %v, want -rw-r--r--", fi.Mode())
	}
	if got := readFile(t, filepath.Join(root, "b", "g")); got != "g\n" {
		t.Errorf("b/g holds %q, want g", got)
	}
	if got := readFile(t, filepath.Join(root, "f", "inside")); got != "inside\n" {
		t.Errorf("f/inside holds %q, want inside", got)
	}
	if fi := lstat(t, filepath.Join(root, "f")); fi.Mode() != os.ModeDir|0o750 {
		t.Errorf("f has mode %v, want drwxr-x---", fi.Mode())
	}
}

func TestUnpackRefusesBadEntries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		layer []any
		want  error
		keep  string // must still be there
	}{
		{"symlink loop", []any{symlink("x", "y", root0, root0), symlink("y", "x", root0, root0), file("x/f", 0o644, root0, root0, "")}, syscall.ELOOP, "."},
		{"parent is a file", []any{file("x", 0o644, root0, root0, ""), file("x/f", 0o644, root0, root0, "")}, syscall.ENOTDIR, "x"},
		{"whiteout of the folder itself", []any{dir("x/", 0o755, root0, root0), whiteout("x/.wh..")}, nil, "x"},
		{"hard link to a missing file", []any{hardlink("x", "nowhere")}, os.ErrNotExist, "."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, err := unpackLayers(t, tarOf(t, tc.layer...))
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(root, tc.keep)); err != nil {
				t.Errorf("%s/%s gone: %v", root, tc.keep, err)
			}
		})
	}
}

// Layers write through the links a Debian root has, as the container would.
func TestUnpackFollowsLinksInRoot(t *testing.T) {
	root, err := unpackLayers(t,
		tarOf(t,
			dir("usr/lib/", 0o755, root0, root0),
			dir("usr/share/", 0o755, root0, root0),
			dir("usr/local/", 0o755, root0, root0),
			dir("run/", 0o755, root0, root0),
			symlink("lib", "usr/lib", root0, root0),
			symlink("usr/lib64", "local", root0, root0),
			symlink("usr/share/up", "../local", root0, root0),
			dir("var/", 0o755, root0, root0),
			symlink("var/run", "/run", root0, root0),
		),
		tarOf(t,
			file("lib/a", 0o644, root0, root0, "a"),
			file("usr/lib64/b", 0o644, root0, root0, "b"),
			file("usr/share/up/c", 0o644, root0, root0, "c"),
			dir("var/run/postgresql/", 0o2775, 999, 999),
		),
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"usr/lib/a", "usr/local/b", "usr/local/c"} {
		if got := readFile(t, filepath.Join(root, p)); got != filepath.Base(p) {
			t.Errorf("%s holds %q, want %q", p, got, filepath.Base(p))
		}
	}
	if fi := lstat(t, filepath.Join(root, "run/postgresql")); fi.Mode() != os.ModeDir|os.ModeSetgid|0o775 {
		t.Errorf("run/postgresql has mode %v", fi.Mode())
	}
	if fi := lstat(t, filepath.Join(root, "var/run")); fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("var/run is no longer a link: %v", fi.Mode())
	}
}
