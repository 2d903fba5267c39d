package instance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// adoptionFile records the adoption beside PGDATA: the report says so
// after a restart too, until the operator has seen it.
func (c Config) adoptionFile() string {
	return filepath.Join(filepath.Dir(c.DataDir), "holdfast-adopted.json")
}

// adoption is the adoption recorded by this incarnation, or nil.
func (c Config) adoption() (*Adoption, error) {
	b, err := os.ReadFile(c.adoptionFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the adoption record: %w", err)
	}
	var a Adoption
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", c.adoptionFile(), err)
	}
	if a.Incarnation != c.Incarnation {
		return nil, nil // an older adoption, by an incarnation that is gone
	}
	return &a, nil
}

// adoptData takes over the data directory an earlier incarnation of the
// cluster, from, left on the volume. The data stays; what belonged to the
// old incarnation goes: its saved orders (loadDesired already dropped
// them) and the asynchronous archiver's queue, which was bound for its
// repository. The data holds the old incarnation's passwords, so the
// manager reaches postgres over its socket without one until this
// cluster's are set, as after a restore. It then reports the adoption,
// also when from is "" and the adoption happened before a restart.
func (m *Manager) adoptData(from string) error {
	if from != "" && exists(filepath.Join(m.cfg.DataDir, "PG_VERSION")) {
		if err := os.RemoveAll(m.spoolDir()); err != nil {
			return fmt.Errorf("clearing the earlier cluster's WAL archiving queue: %w", err)
		}
		if err := m.writeFile(m.foreignPasswordsMarker(), nil, 0o600); err != nil {
			return err
		}
		b, err := json.Marshal(Adoption{Incarnation: m.cfg.Incarnation, From: from})
		if err != nil {
			return err
		}
		// Written last: a crash before it repeats the steps above, which
		// are the same the second time.
		if err := m.writeFile(m.cfg.adoptionFile(), b, 0o600); err != nil {
			return err
		}
		m.log.Info("adopted the data an earlier cluster of this name left on the volume; its saved orders are dropped", "from", from)
	}
	a, err := m.cfg.adoption()
	if err != nil {
		return err
	}
	m.setReport(func(r *Report) { r.Adopted = a })
	return nil
}

// passwordsReplayed ends, on a replica that adopted data, the wait for
// this cluster's passwords: it streams from the primary, which has set
// them (the replication role's is among them), so replay brings them here.
func (m *Manager) passwordsReplayed() error {
	if !m.foreignPasswords() {
		return nil
	}
	if err := os.Remove(m.foreignPasswordsMarker()); err != nil {
		return fmt.Errorf("clearing the adopted-passwords marker: %w", err)
	}
	m.log.Info("streaming from the primary, which set this cluster's passwords")
	return nil
}
