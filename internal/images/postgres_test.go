package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"holdfast.dev/holdfast/internal/resources"
)

// The tests' rootfs: the same recipe `make images` uses, with its own epoch.
const testMajor = 15

var testEpoch = time.Unix(1747699200, 0).UTC()

func testSpec(t *testing.T) RootfsSpec {
	t.Helper()
	sources, err := HostSources("/")
	if err != nil {
		t.Fatal(err)
	}
	return RootfsSpec{Major: testMajor, Suite: "bookworm", Sources: sources, Time: testEpoch}
}

// needRootfsBuild skips unless mmdebstrap can run: it needs root (its root
// mode; make test runs as root) and minutes, which -short does not give.
func needRootfsBuild(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a Debian rootfs with mmdebstrap (minutes)")
	}
	if os.Getuid() != 0 {
		t.Skip("mmdebstrap's root mode and the chroot need root")
	}
}

// cacheDir is the rootfs cache `make images` uses, so that neither redoes
// the other's build.
func cacheDir() string { return filepath.Join(CacheDir(), "rootfs") }

// TestRootfsIsReproducible really runs mmdebstrap twice: what the cache
// holds can't tell whether a new build would give the same bytes. The second
// build is also placed in the cache when it has none, for the other tests.
func TestRootfsIsReproducible(t *testing.T) {
	needRootfsBuild(t)
	ctx := context.Background()
	spec := testSpec(t)
	dir := t.TempDir()
	var sums [2][32]byte
	for i := range sums {
		out := filepath.Join(dir, fmt.Sprintf("rootfs-%d.tar", i))
		start := time.Now()
		if err := BuildRootfs(ctx, spec, out); err != nil {
			t.Fatal(err)
		}
		sums[i] = fileSum(t, out)
		t.Logf("build %d: %s, sha256 %x", i+1, time.Since(start).Round(time.Second), sums[i])
	}
	if sums[0] != sums[1] {
		t.Fatalf("two mmdebstrap runs with SOURCE_DATE_EPOCH=%d gave different rootfs tars", spec.Time.Unix())
	}
	v, err := MmdebstrapVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(cacheDir(), spec.Key(v)+".tar")
	if _, err := os.Stat(cached); os.IsNotExist(err) {
		if err := os.MkdirAll(cacheDir(), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "rootfs-1.tar"), cached); err != nil {
			t.Logf("not cached: %v", err) // another file system: the next test builds it
		}
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestPostgresImage makes the image twice from one rootfs (same digest),
// unpacks it and runs its postgres and pgbackrest, in a chroot in a mount
// namespace of their own, as the image's user: the versions they report are
// the labels'.
func TestPostgresImage(t *testing.T) {
	needRootfsBuild(t)
	rootfs, _, err := CachedRootfs(context.Background(), testSpec(t), cacheDir())
	if err != nil {
		t.Fatal(err)
	}
	img, err := PostgresImage(rootfs, testMajor, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	again, err := PostgresImage(rootfs, testMajor, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	d1 := sameDigest(t, img, again)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(m.Layers))
	}
	t.Logf("postgres image %s, layer %.1f MB compressed", d1, float64(m.Layers[0].Size)/1e6)

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	labels := cf.Config.Labels
	pgPkg, brPkg := labels[LabelPostgresPackage], labels[LabelPgbackrestPackage]
	if pgPkg == "" || brPkg == "" || labels[LabelVersion] != Upstream(pgPkg) {
		t.Fatalf("labels %v: want the package versions", labels)
	}

	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	untar := exec.Command("tar", "-x", "--numeric-owner", "--xattrs", "-C", root)
	untar.Stdin = mutate.Extract(img)
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("unpacking the image: %v\n%s", err, out)
	}

	var uid, gid uint32
	if _, err := fmt.Sscanf(cf.Config.User, "%d:%d", &uid, &gid); err != nil || uid != resources.PostgresUID || gid != resources.PostgresUID {
		t.Fatalf("image user %q: want %d:%d, the uid the database pods run as", cf.Config.User, resources.PostgresUID, resources.PostgresUID)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = cf.Config.Env
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Chroot:     root,
			Cloneflags: syscall.CLONE_NEWNS,
			Credential: &syscall.Credential{Uid: uid, Gid: gid},
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s in the image: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return strings.TrimSpace(out.String())
	}
	// The image's user is the rootfs's postgres.
	if got := run("/usr/bin/id", "-un"); got != "postgres" {
		t.Errorf("the image's user %s is %q, want postgres", cf.Config.User, got)
	}
	// PATH from the config finds the server.
	want := fmt.Sprintf("postgres (PostgreSQL) %s (Debian %s)", Upstream(pgPkg), pgPkg)
	if got := run("/bin/sh", "-c", "postgres --version"); got != want {
		t.Errorf("postgres --version = %q, want %q", got, want)
	}
	if got, want := run("/usr/bin/pgbackrest", "version"), "pgBackRest "+Upstream(brPkg); got != want {
		t.Errorf("pgbackrest version = %q, want %q", got, want)
	}
	if got := run("/usr/bin/locale", "-a"); !strings.Contains(got, "en_US.utf8") {
		t.Errorf("locales %q: want en_US.utf8", got)
	}

	// What the recipe strips is gone. Folders and links may stay (links to
	// excluded docs; apt remakes lists/partial and lists/lock when it
	// cleans), but no file.
	for _, p := range []string{"etc/ssl/private/ssl-cert-snakeoil.key", "etc/resolv.conf", "etc/hostname",
		fmt.Sprintf("var/lib/postgresql/%d/main", testMajor)} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("/%s is in the image", p)
		}
	}
	for _, dir := range []string{"usr/share/man", "usr/share/info", "usr/share/doc", "var/lib/apt/lists", "var/cache/apt", "var/log"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || d.Name() == "copyright" || p == filepath.Join(root, "var/lib/apt/lists/lock") {
				return err
			}
			return fmt.Errorf("%s is in the image", strings.TrimPrefix(p, root))
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Error(err)
		}
	}
}
