package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Labels of the postgres image: the Debian package versions inside.
const (
	LabelPostgresPackage   = "dev.holdfast.postgresql.package-version"
	LabelPgbackrestPackage = "dev.holdfast.pgbackrest.package-version"
)

// Rootfs is what the postgres image's config is made from, read from the
// rootfs itself rather than assumed.
type Rootfs struct {
	PostgresVersion   string // postgresql-<major>'s Debian version, e.g. 15.20-0+deb12u1
	PgbackrestVersion string // pgbackrest's Debian version, e.g. 2.45-1
	UID, GID          int    // the postgres user's
}

// Upstream is a Debian version without its epoch and revision: 15.20 of
// 15.20-0+deb12u1, what the program itself reports.
func Upstream(debian string) string {
	if i := strings.Index(debian, ":"); i >= 0 {
		debian = debian[i+1:]
	}
	if i := strings.LastIndex(debian, "-"); i >= 0 {
		debian = debian[:i]
	}
	return debian
}

// ReadRootfs reads the package versions (from dpkg's status) and the
// postgres user (from /etc/passwd) out of a rootfs tar.
func ReadRootfs(path string, major int) (Rootfs, error) {
	f, err := os.Open(path)
	if err != nil {
		return Rootfs{}, fmt.Errorf("opening rootfs: %w", err)
	}
	defer f.Close()
	var status, passwd []byte
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for status == nil || passwd == nil {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Rootfs{}, fmt.Errorf("reading rootfs %s: %w", path, err)
		}
		switch h.Name {
		case "var/lib/dpkg/status":
			status, err = io.ReadAll(tr)
		case "etc/passwd":
			passwd, err = io.ReadAll(tr)
		}
		if err != nil {
			return Rootfs{}, fmt.Errorf("reading %s from the rootfs: %w", h.Name, err)
		}
	}
	if status == nil || passwd == nil {
		return Rootfs{}, fmt.Errorf("rootfs %s has no var/lib/dpkg/status or etc/passwd", path)
	}
	var r Rootfs
	pkg := fmt.Sprintf("postgresql-%d", major)
	if r.PostgresVersion, err = packageVersion(status, pkg); err != nil {
		return Rootfs{}, err
	}
	if r.PgbackrestVersion, err = packageVersion(status, "pgbackrest"); err != nil {
		return Rootfs{}, err
	}
	if r.UID, r.GID, err = passwdUser(passwd, "postgres"); err != nil {
		return Rootfs{}, err
	}
	return r, nil
}

// packageVersion finds an installed package's version in dpkg's status file
// (deb822 stanzas).
func packageVersion(status []byte, name string) (string, error) {
	for _, stanza := range bytes.Split(status, []byte("\n\n")) {
		var pkg, version, state string
		for _, line := range strings.Split(string(stanza), "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				continue
			}
			switch k {
			case "Package":
				pkg = v
			case "Version":
				version = v
			case "Status":
				state = v
			}
		}
		if pkg == name && state == "install ok installed" {
			return version, nil
		}
	}
	return "", fmt.Errorf("package %s is not installed in the rootfs", name)
}

func passwdUser(passwd []byte, name string) (uid, gid int, err error) {
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] != name {
			continue
		}
		if uid, err = strconv.Atoi(f[2]); err != nil {
			return 0, 0, fmt.Errorf("uid of %s: %w", name, err)
		}
		if gid, err = strconv.Atoi(f[3]); err != nil {
			return 0, 0, fmt.Errorf("gid of %s: %w", name, err)
		}
		return uid, gid, nil
	}
	return 0, 0, fmt.Errorf("no user %s in the rootfs's /etc/passwd", name)
}

// PostgresImage makes the postgres image of a normalized rootfs tar (from
// BuildRootfs): one layer, run as the rootfs's postgres user, with the
// server's binaries on PATH and the versions inside as labels. t is the
// image's creation time, the rootfs's SOURCE_DATE_EPOCH. No Holdfast commit
// goes in: the image is the same for every commit that builds it from the
// same rootfs.
func PostgresImage(rootfsTar string, major int, t time.Time) (v1.Image, error) {
	info, err := ReadRootfs(rootfsTar, major)
	if err != nil {
		return nil, err
	}
	// Compressed once, kept in memory: the layout writes the blob after the
	// digest was computed, and gzip of some hundreds of MB is the slow part.
	layer, err := tarball.LayerFromFile(rootfsTar, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("rootfs layer: %w", err)
	}
	bin := fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
	return assemble([]layered{{layer, fmt.Sprintf("mmdebstrap --variant=minbase --include=postgresql-%d,pgbackrest,locales,ca-certificates", major)}},
		v1.Config{
			User: fmt.Sprintf("%d:%d", info.UID, info.GID),
			Env: []string{
				"PATH=" + bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"LANG=en_US.UTF-8",
			},
			WorkingDir: "/var/lib/postgresql",
			Labels: map[string]string{
				LabelVersion:           Upstream(info.PostgresVersion),
				LabelSource:            Source,
				LabelPostgresPackage:   info.PostgresVersion,
				LabelPgbackrestPackage: info.PgbackrestVersion,
			},
		}, t)
}
