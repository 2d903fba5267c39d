package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// PostgresBinDir is Debian's postgresql-15, which `make test` installs.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// PostgresHost prepares a test to run real postgres servers: it fails
// the test when postgresql-15 is missing, and returns the user postgres must
// run as (postgres refuses root, so a root test runs it as the postgres
// user, as a pod runs it as uid 999; nil when the test is not root) and a
// folder, removed afterwards, that this user can reach.
func PostgresHost(t testing.TB) (*syscall.Credential, string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(PostgresBinDir, "postgres")); err != nil {
		t.Fatalf("postgresql-15 is not installed (%v): run `make test`, which installs it", err)
	}
	var runAs *syscall.Credential
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		runAs = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not t.TempDir(): its parent is private to root, so postgres could not
	// reach the data directories inside.
	base, err := os.MkdirTemp("", "holdfast-postgres-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	Own(t, base, 0o755, runAs)
	return runAs, base
}

// Own sets path's mode and, when owner is set, hands it to owner.
func Own(t testing.TB, path string, mode os.FileMode, owner *syscall.Credential) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if owner != nil {
		if err := os.Chown(path, int(owner.Uid), int(owner.Gid)); err != nil {
			t.Fatal(err)
		}
	}
}

// Postgres is a throwaway postgres-15 server on 127.0.0.1 for a test.
type Postgres struct {
	t     testing.TB
	runAs *syscall.Credential
	// Data is its data directory; Port its TCP port on 127.0.0.1.
	Data string
	Port int
}

// NewPostgres runs initdb with extra arguments (--auth=trust, a
// --pwfile, ...) into a new folder and starts the server; it is stopped
// when the test ends.
func NewPostgres(t testing.TB, initdbArgs ...string) *Postgres {
	t.Helper()
	runAs, base := PostgresHost(t)
	return newPostgres(t, runAs, base, initdbArgs...)
}

// NewPasswordPostgres is a NewPostgres whose superuser, postgres, has
// password and, as on an instance, must give it over TCP (SCRAM); the
// socket trusts.
func NewPasswordPostgres(t testing.TB, password string, initdbArgs ...string) *Postgres {
	t.Helper()
	runAs, base := PostgresHost(t)
	// In base, not t.TempDir(): initdb, run as postgres, must read it.
	pwfile := filepath.Join(base, "pw")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return newPostgres(t, runAs, base, append([]string{"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + pwfile}, initdbArgs...)...)
}

func newPostgres(t testing.TB, runAs *syscall.Credential, base string, initdbArgs ...string) *Postgres {
	t.Helper()
	s := &Postgres{t: t, runAs: runAs, Data: filepath.Join(base, "data"), Port: FreePort(t)}
	s.Run("initdb", append([]string{"-D", s.Data, "-U", "postgres"}, initdbArgs...)...)
	s.Start()
	t.Cleanup(func() { s.Run("pg_ctl", "stop", "-m", "immediate", "-D", s.Data) })
	return s
}

// Run runs one of postgres's programs as the user postgres runs as.
func (s *Postgres) Run(name string, args ...string) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(PostgresBinDir, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.runAs}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// Start starts the server, and waits until it takes connections.
func (s *Postgres) Start() {
	s.t.Helper()
	s.Run("pg_ctl", "start", "-w", "-D", s.Data, "-l", s.Data+".log",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", s.Port, filepath.Dir(s.Data)))
}

// Stop stops the server at once, as a crash would.
func (s *Postgres) Stop() {
	s.t.Helper()
	s.Run("pg_ctl", "stop", "-m", "immediate", "-D", s.Data)
}
