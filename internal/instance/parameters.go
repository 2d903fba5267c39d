package instance

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"holdfast.dev/holdfast/internal/postgres"
)

// paramState is what the converge loop knows of the user's settings.
type paramState struct {
	// accepted are the settings postgres last accepted, and checked says
	// they have been; refused is postgres's word on refusedFor, the last
	// ones ordered, when it refused them.
	accepted   map[string]string
	checked    bool
	refused    string
	refusedFor map[string]string
}

// acceptedParameters are the settings to write: the ones ordered, once
// postgres itself has accepted them, or else the last it accepted. A value
// postgres refuses ("lots" connections) must not reach postgresql.conf: a
// reload would ignore the whole file, and the next start would fail.
func (m *Manager) acceptedParameters(ctx context.Context, server postgres.ServerConf, ordered map[string]string) map[string]string {
	p := &m.params
	switch {
	case p.checked && maps.Equal(ordered, p.accepted):
		p.refused = ""
		return p.accepted
	case p.refused != "" && maps.Equal(ordered, p.refusedFor):
		return p.accepted
	}
	server.Parameters = ordered
	refusal, err := m.checkConf(ctx, postgres.RenderConf(server))
	switch {
	case err != nil:
		// The check itself could not run (no data directory yet): postgres
		// will say what it thinks when it starts.
		m.log.Error(err, "checking the settings with postgres")
		return ordered
	case refusal != "":
		if p.refused != refusal {
			m.log.Info("postgres refuses the settings; the last it accepted stay in force", "postgres", refusal)
		}
		p.refused, p.refusedFor = refusal, maps.Clone(ordered)
		return p.accepted
	}
	p.accepted, p.checked, p.refused = maps.Clone(ordered), true, ""
	return p.accepted
}

// checkConf has postgres read conf as its configuration file and returns
// what it refuses in it ("" when it accepts it all); err is set when the
// check could not run.
func (m *Manager) checkConf(ctx context.Context, conf string) (refusal string, err error) {
	if _, err := os.Stat(filepath.Join(m.cfg.DataDir, "PG_VERSION")); err != nil {
		return "", err
	}
	// In the run folder: a file in the data directory would be copied
	// along by every clone and backup.
	cand := filepath.Join(m.cfg.RunDir, "postgresql.conf.check")
	if err := m.writeFile(cand, []byte(conf), 0o600); err != nil {
		return "", err
	}
	defer os.Remove(cand)
	// -C reads and checks the whole file, then prints one setting and
	// exits; it runs beside a running server.
	cmd := m.command(ctx, "postgres", "-D", m.cfg.DataDir, "-c", "config_file="+cand, "-C", "port")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = nil, &out
	if cmd.Run() == nil {
		return "", nil
	}
	var said []string
	for _, line := range strings.Split(out.String(), "\n") {
		// "… LOG:  invalid value for parameter "max_connections": "lots"",
		// then "FATAL: configuration file … contains errors".
		if _, msg, ok := strings.Cut(line, "LOG:  "); ok {
			said = append(said, strings.TrimSpace(msg))
		}
	}
	if len(said) == 0 {
		said = append(said, strings.TrimSpace(out.String()))
	}
	return strings.Join(said, "; "), nil
}
