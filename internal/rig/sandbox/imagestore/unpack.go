package imagestore

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// OCI whiteouts: a layer's ".wh.<name>" deletes name from the layers below,
// and ".wh..wh..opq" in a folder hides everything the layers below put there.
const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// maxLinks is how many symbolic links one path may go through, as Linux's
// MAXSYMLINKS.
const maxLinks = 40

// unpacker applies layers in order to a folder, as an overlay of them would
// show it.
//
// Every write goes through an os.Root of the folder or of a folder in it,
// which refuses any path that would leave it, by ".." or a symbolic link. Parent folders are resolved
// first the way the container will see them, with the folder as "/": a
// layer may write through /var/run -> /run, and ../ or a link to / lands
// inside the folder instead of on this machine.
type unpacker struct {
	root  *os.Root
	chown bool // only root may give files away; unprivileged, files stay ours, as with tar
	buf   []byte
	// dirs caches resolved parent folders; anything removed but a regular
	// file may change a resolution, so removals clear it.
	dirs map[string]string
	// meta is the mode, owner and time of each folder a layer named, set
	// when all layers are in: writing into a folder changes its time, and a
	// read-only mode would stop the writes of an unprivileged unpack.
	meta map[string]dirMeta
	// written are the paths the current layer wrote, which its opaque
	// whiteouts keep.
	written map[string]struct{}
	// last is the folder the last entry went into, lastPath its resolved path.
	last     *os.Root
	lastPath string
}

type dirMeta struct {
	mode     fs.FileMode
	uid, gid int
	mtime    time.Time
}

func newUnpacker(dir string) (*unpacker, error) {
	// MkdirTemp made the folder 0700; a container running as another user
	// must be able to get in when the image does not say.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &unpacker{
		root:  root,
		chown: os.Geteuid() == 0,
		buf:   make([]byte, 1<<20),
		dirs:  map[string]string{},
		meta:  map[string]dirMeta{},
	}, nil
}

func (u *unpacker) close() {
	u.dropFolder()
	u.root.Close()
}

// apply unpacks the layer whose verified blob is at blobPath.
func (u *unpacker) apply(ctx context.Context, blobPath string, l v1.Layer) error {
	rc, err := uncompressed(blobPath, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	u.written = map[string]struct{}{}
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := u.entry(tr, hdr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header) error {
	// Rooting the name before cleaning it keeps "../x" and "/x" inside.
	name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			u.meta["."] = metaOf(hdr)
		}
		return nil
	}
	dir, base := path.Dir(name), path.Base(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(dir, base)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		// Device nodes and fifos: the container gets this machine's /dev.
		return nil
	}

	parent, err := u.resolve(dir, true)
	if err != nil {
		return err
	}
	target := path.Join(parent, base)
	in, err := u.folder(parent)
	if err != nil {
		return err
	}
	fi, err := in.Lstat(base)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fi = nil
	case err != nil:
		return err
	case !(fi.IsDir() && hdr.Typeflag == tar.TypeDir):
		// A layer's entry replaces what the layers below had there; only
		// folders merge.
		if err := u.remove(target, fi); err != nil {
			return err
		}
		if in, err = u.folder(parent); err != nil {
			return err
		}
		fi = nil
	}
	u.written[target] = struct{}{}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi == nil {
			if err := in.Mkdir(base, 0o700); err != nil {
				return err
			}
		}
		u.meta[target] = metaOf(hdr)
		return nil
	case tar.TypeSymlink:
		if err := in.Symlink(hdr.Linkname, base); err != nil {
			return err
		}
		if u.chown {
			return in.Lchown(base, hdr.Uid, hdr.Gid)
		}
		return nil
	case tar.TypeLink:
		old, err := u.resolveName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link to %s: %w", hdr.Linkname, err)
		}
		return u.root.Link(old, target)
	default:
		return u.file(in, base, tr, hdr)
	}
}

// folder returns an os.Root of parent, a resolved folder. Operations on a
// name in it then cost one system call instead of one per path component,
// which makes most of an unpack's time. Entries come grouped by folder, so
// keeping the last one is enough.
func (u *unpacker) folder(parent string) (*os.Root, error) {
	if u.last != nil && u.lastPath == parent {
		return u.last, nil
	}
	u.dropFolder()
	r, err := u.root.OpenRoot(parent)
	if err != nil {
		return nil, err
	}
	u.last, u.lastPath = r, parent
	return r, nil
}

// dropFolder forgets the last folder: once something is removed, the folder
// could be one no longer in the tree, and writes into it would be lost.
func (u *unpacker) dropFolder() {
	if u.last != nil {
		u.last.Close()
		u.last = nil
	}
}

// file writes a regular file's content, owner, mode and time.
func (u *unpacker) file(in *os.Root, name string, r io.Reader, hdr *tar.Header) error {
	f, err := in.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// The wrappers hide ReadFrom, which would copy through a fresh 32 KiB
	// buffer per file instead of ours.
	_, err = io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{r}, u.buf)
	if err == nil && u.chown {
		err = f.Chown(hdr.Uid, hdr.Gid)
	}
	if err == nil {
		// After Chown, which clears setuid and setgid.
		err = f.Chmod(hdr.FileInfo().Mode())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return in.Chtimes(name, hdr.ModTime, hdr.ModTime)
}

func (u *unpacker) whiteout(dir, base string) error {
	parent, err := u.resolve(dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	if base == opaqueWhiteout {
		return u.opaque(parent)
	}
	hidden := strings.TrimPrefix(base, whiteoutPrefix)
	if hidden == "" || hidden == "." || hidden == ".." {
		return fmt.Errorf("whiteout names no file")
	}
	return u.remove(path.Join(parent, hidden), nil)
}

// opaque empties dir of what the layers below put there, keeping what the
// current layer wrote before its opaque whiteout.
func (u *unpacker) opaque(dir string) error {
	return fs.WalkDir(u.root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if _, ok := u.written[p]; ok {
			return nil // a folder this layer wrote may still hold lower entries
		}
		if err := u.remove(p, nil); err != nil {
			return err
		}
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

// remove removes p and all below it; fi is p's Lstat if the caller has it.
func (u *unpacker) remove(p string, fi fs.FileInfo) error {
	if fi == nil {
		var err error
		if fi, err = u.root.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if !fi.Mode().IsRegular() {
		clear(u.dirs)
		u.dropFolder()
	}
	if fi.IsDir() {
		for q := range u.meta {
			if q == p || strings.HasPrefix(q, p+"/") {
				delete(u.meta, q)
			}
		}
	}
	return u.root.RemoveAll(p)
}

// resolveName resolves a hard link's target name: its parent as resolve
// does, the name itself not followed (a hard link to a symbolic link links
// the symbolic link).
func (u *unpacker) resolveName(name string) (string, error) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		return "", syscall.EISDIR
	}
	parent, err := u.resolve(path.Dir(name), false)
	if err != nil {
		return "", err
	}
	return path.Join(parent, path.Base(name)), nil
}

// resolve turns dir, a clean path relative to the root ("." for the root
// itself), into the path of the folder the container will see there, with
// no symbolic links in it. Symbolic links are followed with the root as
// "/", so no target leads out. With create, missing folders are made, as
// tar does for entries whose parents a layer leaves out.
func (u *unpacker) resolve(dir string, create bool) (string, error) {
	if dir == "." {
		return ".", nil
	}
	if r, ok := u.dirs[dir]; ok {
		return r, nil
	}
	resolved, rest, links := ".", strings.Split(dir, "/"), 0
	for len(rest) > 0 {
		next := path.Join(resolved, rest[0])
		rest = rest[1:]
		fi, err := u.root.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := u.root.Mkdir(next, 0o755); err != nil {
				return "", err
			}
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxLinks {
				return "", fmt.Errorf("%s: %w", dir, syscall.ELOOP)
			}
			target, err := u.root.Readlink(next)
			if err != nil {
				return "", err
			}
			if !path.IsAbs(target) {
				target = path.Join(resolved, target)
			}
			// Cleaned from "/", ".." stops at the root as it does at "/".
			target = strings.TrimPrefix(path.Clean("/"+target), "/")
			if target != "" {
				rest = append(strings.Split(target, "/"), rest...)
			}
			resolved = "."
			continue
		case !fi.IsDir():
			return "", fmt.Errorf("%s: %w", next, syscall.ENOTDIR)
		}
		resolved = next
	}
	u.dirs[dir] = resolved
	return resolved, nil
}

// finish gives the folders the layers named their mode, owner and time,
// deepest first: unprivileged, a folder whose mode takes away our search
// permission would keep us from the folders below it.
func (u *unpacker) finish() error {
	paths := slices.Sorted(maps.Keys(u.meta))
	slices.Reverse(paths) // a parent sorts before its children
	for _, p := range paths {
		m := u.meta[p]
		if u.chown {
			if err := u.root.Lchown(p, m.uid, m.gid); err != nil {
				return err
			}
		}
		if err := u.root.Chmod(p, m.mode); err != nil {
			return err
		}
		if err := u.root.Chtimes(p, m.mtime, m.mtime); err != nil {
			return err
		}
	}
	return nil
}

func metaOf(hdr *tar.Header) dirMeta {
	return dirMeta{mode: hdr.FileInfo().Mode(), uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
}
