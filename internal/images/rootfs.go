package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RootfsSpec says what Debian root filesystem to make for the postgres image.
type RootfsSpec struct {
	Major   int       // PostgreSQL major version: the package postgresql-<Major>
	Suite   string    // Debian suite, e.g. bookworm
	Sources []byte    // apt sources in one format (deb822 or one-line), given to mmdebstrap on stdin
	Time    time.Time // SOURCE_DATE_EPOCH
}

// PostgresUID is the postgres user's uid and gid in the image: the
// database pods' runAsUser (resources.PostgresUID, which the tests
// compare), and the official postgres image's.
const PostgresUID = 999

// rootfsRecipe changes whenever what mmdebstrap is asked to do changes in a
// way the arguments do not show, so that cached rootfs tars are remade.
const rootfsRecipe = "1"

// args are mmdebstrap's arguments: the rootfs goes to stdout as a tar, the
// sources come from stdin.
func (s RootfsSpec) args() []string {
	return []string{
		"--variant=minbase",
		"--format=tar",
		"--include=" + strings.Join(s.packages(), ","),
		// Docs, man pages and translations are not needed to run a server;
		// the copyright files stay, as the licences ask.
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/info/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-include=/usr/share/locale/locale.alias",
		// Before postgresql-common is installed: Debian's default cluster
		// would be an initdb with a random system identifier, and the
		// instance manager makes its own data directory anyway.
		`--essential-hook=mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/holdfast.conf"`,
		// The postgres user gets the uid and gid the database pods run as
		// (resources.PostgresUID, the official image's): postgres and
		// initdb refuse to run as a uid with no passwd entry.
		// postgresql-common's adduser then finds the system user there, and
		// the passwd package's postinst adds its shadow entry.
		fmt.Sprintf(`--essential-hook=echo "postgres:x:%[1]d:%[1]d:PostgreSQL administrator:/var/lib/postgresql:/bin/bash" >> "$1/etc/passwd" && echo "postgres:x:%[1]d:" >> "$1/etc/group"`, PostgresUID),
		// Before locales is configured, so that its postinst generates
		// en_US.UTF-8 (C.UTF-8 is built into glibc).
		`--essential-hook=echo "en_US.UTF-8 UTF-8" > "$1/etc/locale.gen"`,
		// The host's resolv.conf and hostname, the snakeoil key ssl-cert makes
		// (random on every run), logs and caches: nothing an image should
		// carry, and all of it would make two builds differ.
		`--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname" "$1/etc/ssl/private/ssl-cert-snakeoil.key" "$1/etc/ssl/certs/ssl-cert-snakeoil.pem"`,
		`--customize-hook=find "$1/etc/ssl/certs" -lname ssl-cert-snakeoil.pem -delete`,
		`--customize-hook=rm -rf "$1"/var/log/* "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old`,
		// What path-exclude leaves: the man page links update-alternatives
		// makes (to pages that were never unpacked), and the empty folders
		// of excluded docs.
		`--customize-hook=rm -rf "$1"/usr/share/man/* "$1"/usr/share/info/*`,
		`--customize-hook=find "$1/usr/share/doc" -depth -mindepth 1 -type d -empty -delete`,
		s.Suite, "-", "-",
	}
}

func (s RootfsSpec) packages() []string {
	return []string{fmt.Sprintf("postgresql-%d", s.Major), "pgbackrest", "locales", "ca-certificates"}
}

// Key names the rootfs in the cache: a hash of everything that makes it
// (the recipe, mmdebstrap's arguments and version, the sources, the epoch).
// The mirror's content is the one input it cannot see: a point release on
// the mirror gives a new rootfs only once the key changes, e.g. by a new
// SOURCE_DATE_EPOCH.
func (s RootfsSpec) Key(mmdebstrapVersion string) string {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\nmmdebstrap %s\nepoch %d\n", rootfsRecipe, mmdebstrapVersion, s.Time.Unix())
	for _, a := range s.args() {
		fmt.Fprintf(h, "arg %q\n", a)
	}
	h.Write(s.Sources)
	return fmt.Sprintf("postgres-%d-%s-%s", s.Major, s.Suite, hex.EncodeToString(h.Sum(nil))[:12])
}

// MmdebstrapVersion is what `mmdebstrap --version` says.
func MmdebstrapVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "mmdebstrap", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("mmdebstrap --version (hack/install-deps.sh installs it): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// BuildRootfs runs mmdebstrap and writes the normalized rootfs tar to out
// (through a temporary file, so out is whole or absent). It needs root, for
// mmdebstrap's root mode.
func BuildRootfs(ctx context.Context, s RootfsSpec, out string) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".tmp-")
	if err != nil {
		return fmt.Errorf("rootfs temp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	cmd := exec.CommandContext(ctx, "mmdebstrap", s.args()...)
	cmd.Stdin = bytes.NewReader(s.Sources)
	// A fixed PATH: mmdebstrap runs helpers (mmtarfilter, in python) that a
	// user's PATH may shadow, slowly (pyenv's shims) or differently.
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(s.Time.Unix(), 10),
		"LC_ALL=C.UTF-8",
		"TMPDIR=" + os.TempDir(),
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("mmdebstrap stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mmdebstrap: %w", err)
	}
	w := bufio.NewWriterSize(tmp, 1<<20)
	normErr := NormalizeTar(stdout, w, s.Time)
	if normErr != nil {
		// Unblock mmdebstrap if it is still writing.
		_, _ = io.Copy(io.Discard, stdout)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("mmdebstrap %s: %w\n%s", s.Suite, err, tail(stderr.String(), 40))
	}
	if normErr != nil {
		return fmt.Errorf("normalizing the rootfs: %w", normErr)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing the rootfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing the rootfs: %w", err)
	}
	// CreateTemp made it 0600; make images may run as another user later.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("rootfs permissions: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("placing the rootfs: %w", err)
	}
	return nil
}

// CachedRootfs returns the path of the rootfs tar for s under dir, building
// it first when the cache does not hold it.
func CachedRootfs(ctx context.Context, s RootfsSpec, dir string) (path string, built bool, err error) {
	v, err := MmdebstrapVersion(ctx)
	if err != nil {
		return "", false, err
	}
	path = filepath.Join(dir, s.Key(v)+".tar")
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("rootfs cache: %w", err)
	}
	// make test builds it from two packages at once on a fresh machine
	// (the image tests and the e2e tests' images): one builds, the other
	// waits and reuses it.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", false, fmt.Errorf("rootfs cache lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("rootfs cache lock: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := BuildRootfs(ctx, s, path); err != nil {
		return "", false, err
	}
	return path, true, nil
}

// HostSources reads the machine's apt sources the way apt does
// (/etc/apt/sources.list, then sources.list.d/*.list and *.sources, other
// names ignored) under root, for mmdebstrap's stdin. mmdebstrap takes one
// format there, so a machine with both is refused.
func HostSources(root string) ([]byte, error) {
	files := []string{filepath.Join(root, "etc/apt/sources.list")}
	d := filepath.Join(root, "etc/apt/sources.list.d")
	entries, err := os.ReadDir(d)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading %s: %w", d, err)
	}
	var more []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".list") || strings.HasSuffix(n, ".sources") {
			more = append(more, filepath.Join(d, n))
		}
	}
	sort.Strings(more)
	files = append(files, more...)

	var oneLine, deb822 [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading apt sources: %w", err)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		if strings.HasSuffix(f, ".sources") {
			deb822 = append(deb822, b)
		} else {
			oneLine = append(oneLine, b)
		}
	}
	switch {
	case len(oneLine) > 0 && len(deb822) > 0:
		return nil, fmt.Errorf("apt sources under %s mix one-line (.list) and deb822 (.sources) files; mmdebstrap reads one format on stdin", root)
	case len(deb822) > 0:
		// deb822 stanzas are separated by blank lines.
		return bytes.Join(trimAll(deb822), []byte("\n")), nil
	case len(oneLine) > 0:
		return bytes.Join(trimAll(oneLine), nil), nil
	}
	return nil, fmt.Errorf("no apt sources under %s", root)
}

func trimAll(bs [][]byte) [][]byte {
	out := make([][]byte, len(bs))
	for i, b := range bs {
		out[i] = append(bytes.TrimSpace(b), '\n')
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
