package instance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Config is where an instance keeps things and how it reaches its peers.
// In a pod it comes from the flags' defaults and the environment the
// StatefulSet sets; tests run several instances side by side on one machine.
type Config struct {
	Name string // the pod name: application_name and slot name
	// Cluster is namespace/name of the cluster; a data volume that carries
	// another cluster's state (restored from its snapshot) is told apart by it.
	Cluster  string
	DataDir  string // PGDATA
	RunDir   string // socket and password file; an emptyDir, so it outlives a container restart
	PGBinDir string // postgres, initdb, pg_basebackup, pg_rewind; "" searches PATH
	Port     int
	// ListenAddresses is where postgres listens; empty means every address
	// (a pod has its own network namespace).
	ListenAddresses string
	StatusAddr      string // the probes, plain HTTP
	APIAddr         string // the instance API, mutual TLS
	MetricsAddr     string // the Prometheus series, plain HTTP; "" serves none
	// Version is Holdfast's, for holdfast_build_info.
	Version string
	// SecretsDir holds <role>/username and <role>/password for superuser,
	// replication and app, and the certificates (resources.TLSServerDir,
	// resources.TLSReplicationDir).
	SecretsDir string
	// RepositoryDir holds the backup repository's credentials (the Secret
	// spec.backup.repository names); RestoreRepositoryDir those of the
	// repository a new cluster is restored from.
	RepositoryDir, RestoreRepositoryDir string
	// Database and Owner are created by initdb on the first primary.
	Database, Owner string
	// MaxLagBytes is the replay lag beyond which a replica is not ready.
	MaxLagBytes int64
	// StopTimeout bounds a fast shutdown before postgres is killed.
	StopTimeout time.Duration
	// RunAs is the user postgres runs as when this process is root (which
	// postgres refuses); nil runs it as this process's user.
	RunAs *syscall.Credential

	// Incarnation is the PostgresCluster's UID: a cluster deleted and
	// created again under the same name is another incarnation, and the
	// state the old one saved on a kept volume is not this one's.
	Incarnation string
}

// Credentials of one role, read from the mounted Secret.
type Credentials struct{ Username, Password string }

func (c Config) credentials(role string) (Credentials, error) {
	read := func(key string) (string, error) {
		b, err := os.ReadFile(filepath.Join(c.SecretsDir, role, key))
		if err != nil {
			return "", fmt.Errorf("reading the %s %s: %w", role, key, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	u, err := read("username")
	if err != nil {
		return Credentials{}, err
	}
	p, err := read("password")
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{u, p}, nil
}

func (c Config) bin(name string) string {
	if c.PGBinDir == "" {
		return name
	}
	return filepath.Join(c.PGBinDir, name)
}

// desiredFile keeps the last accepted Desired beside PGDATA, so that an
// instance that restarts resumes its role without waiting for the operator.
func (c Config) desiredFile() string {
	return filepath.Join(filepath.Dir(c.DataDir), "holdfast-desired.json")
}

// loadDesired reads the last accepted Desired. It returns nil when there
// is none, or when it was another cluster's (a volume restored from its
// snapshot) or another incarnation's of this one (a cluster re-created on
// its kept claims): those orders, and their epochs, are not this
// cluster's, and the state the operator sends now is all that counts.
// foreign is the other incarnation whose state was dropped, if any.
func (c Config) loadDesired() (d *Desired, foreign string, err error) {
	b, err := os.ReadFile(c.desiredFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading the last desired state: %w", err)
	}
	d = &Desired{}
	if err := json.Unmarshal(b, d); err != nil {
		return nil, "", fmt.Errorf("%w: parsing %s: %v", errUnreadableDesired, c.desiredFile(), err)
	}
	if d.Cluster != "" && c.Cluster != "" && d.Cluster != c.Cluster {
		return nil, "", nil
	}
	if c.otherIncarnation(d.Incarnation) {
		return nil, d.Incarnation, nil
	}
	return d, "", nil
}

// otherIncarnation says whether incarnation is known to differ from this
// instance's. State saved before incarnations were recorded carries none,
// and counts as this one's.
func (c Config) otherIncarnation(incarnation string) bool {
	return incarnation != "" && c.Incarnation != "" && incarnation != c.Incarnation
}

// errUnreadableDesired: the saved desired state does not parse (a disk
// that lost a write). The instance then waits for the operator's word, as
// on its first start, rather than fail on every start.
var errUnreadableDesired = errors.New("the saved desired state is unreadable")

func (c Config) saveDesired(d Desired) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return writeFileAtomic(c.desiredFile(), b, 0o600, nil)
}

// writeFileAtomic writes through a temporary file and a rename, so that a
// crash leaves the old or the new content, never half of it.
func writeFileAtomic(path string, data []byte, mode os.FileMode, owner *syscall.Credential) error {
	tmp := path + ".tmp"
	if err := writeSynced(tmp, data, mode); err != nil {
		return err
	}
	if owner != nil {
		if err := os.Chown(tmp, int(owner.Uid), int(owner.Gid)); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return nil
}

// writeSynced writes a file and flushes it to disk: without the flush, a
// machine that crashes just after the rename may keep the new name with
// no content.
func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
