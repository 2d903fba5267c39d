package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "15", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "15", "bin", "postgres"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	table := Table{PostgresRoot: root}
	pg15 := filepath.Join(root, "15", "bin")

	tests := []struct {
		image string
		path  string // first PATH entry, for postgres images
		err   string
	}{
		{image: "docker.io/library/postgres:15", path: pg15},
		{image: "postgres:15", path: pg15},
		// Built here: pulled from the sandbox's registry, never mapped.
		{image: "ghcr.io/holdfast-dev/holdfast-postgres:15", err: "neither in the sandbox's registry"},
		{image: "ghcr.io/holdfast-dev/holdfast:dev", err: "neither in the sandbox's registry"},
		{image: "postgres:15.8-bookworm", path: pg15},
		{image: "ghcr.io/cloudnative-pg/postgresql:15", path: pg15},
		{image: "registry.developers.crunchydata.com/crunchydata/crunchy-postgres:15-1", path: pg15},
		{image: "localhost:5000/postgres:15", path: pg15},
		{image: "postgres:16", err: "apt-get install postgresql-16"},
		{image: "postgres:latest", err: "neither in the sandbox's registry nor in its transition table"},
		{image: "nginx", err: "neither in the sandbox's registry nor in its transition table"},
		{image: "evil.example/postgres-exporter:15", err: "neither in the sandbox's registry nor in its transition table"},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			p, err := table.Resolve(tt.image)
			switch {
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("Resolve(%q) error %v, want one saying %q", tt.image, err, tt.err)
				}
			case err != nil:
				t.Errorf("Resolve(%q): %v", tt.image, err)
			case tt.path != "" && (len(p.PathPrefix) == 0 || p.PathPrefix[0] != tt.path):
				t.Errorf("Resolve(%q) PATH %v, want %s first", tt.image, p.PathPrefix, tt.path)
			}
		})
	}
}
