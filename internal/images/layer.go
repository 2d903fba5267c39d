package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one entry of a layer made from memory.
type File struct {
	Path     string // relative, no leading slash
	Mode     int64  // permission bits, with tar's setuid/setgid/sticky bits
	Dir      bool
	UID, GID int
	Data     []byte
	// Link, if set, makes the entry a symbolic link to it.
	Link string
}

// FilesLayer makes an OCI layer of the given entries, in the given order,
// each with modification time t. go-containerregistry's crane.Layer cannot
// set modes, owners or directories, which a base image needs (/tmp is 1777,
// the binary 0755).
func FilesLayer(files []File, t time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.Path, Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: t, Format: tar.FormatUSTAR}
		switch {
		case f.Dir:
			h.Typeflag = tar.TypeDir
			h.Name = strings.TrimSuffix(f.Path, "/") + "/"
		case f.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", f.Path, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer: %w", err)
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// NormalizeTar copies a tar stream, keeping its order, contents, modes,
// numeric owners and extended attributes, and giving every entry the
// modification time t and no access or change time. Names lose their
// leading "./" (and the root entry goes) as in layers docker writes.
//
// mutate.Time does not do: it keeps PAX atime and ctime records (setting
// them to t) and holds the whole layer in memory, some hundreds of MB for
// a postgres rootfs. The order is the input's: mmdebstrap's tar sorts by
// name already.
func NormalizeTar(r io.Reader, w io.Writer, t time.Time) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		h.Name = strings.TrimPrefix(h.Name, "./")
		if h.Name == "" {
			continue
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = strings.TrimPrefix(h.Linkname, "./")
		}
		h.ModTime = t
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.Uname, h.Gname = "", ""
		for _, k := range []string{"mtime", "atime", "ctime", "uname", "gname"} {
			delete(h.PAXRecords, k)
		}
		// Let the writer pick the simplest format that holds the entry:
		// USTAR, or PAX for long names and extended attributes.
		h.Format = tar.FormatUnknown
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("writing %s: %w", h.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("copying %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("closing tar: %w", err)
	}
	return nil
}
