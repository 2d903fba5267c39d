// Package images is the sandbox's one table from container images to the
// local programs that stand in for them: the sandbox runs no container
// runtime, so an image names what a container's root holds.
package images

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Program is what a container of an image runs with.
type Program struct {
	// Files are placed in the container's root: path inside -> path on this machine.
	Files map[string]string
	// PathPrefix goes in front of the container's PATH.
	PathPrefix []string
	// Entrypoint runs when the container gives no command, as an image's
	// ENTRYPOINT would.
	Entrypoint []string
}

// Table resolves images; HoldfastBinary is the holdfast binary on this machine.
type Table struct {
	HoldfastBinary string
	// PostgresRoot holds one folder per major version with bin/ inside
	// (Debian: /usr/lib/postgresql).
	PostgresRoot string
}

// The rows of the table, matched against the image without its registry host.
var (
	holdfastImage = regexp.MustCompile(`^(?:holdfast-dev/)?holdfast(?::[\w.-]+)?$`)
	// The community image and the images operators ship (CloudNativePG,
	// Crunchy) all name the major version first in the tag.
	postgresImage = regexp.MustCompile(`^(?:library/|cloudnative-pg/|crunchydata/|holdfast-dev/holdfast-)?(?:postgres|postgresql|crunchy-postgres):(\d+)(?:[.-][\w.-]*)?$`)
)

// Resolve finds the program for image, or says why there is none.
func (t Table) Resolve(image string) (Program, error) {
	name := stripRegistry(image)
	switch {
	case holdfastImage.MatchString(name):
		return Program{Files: map[string]string{"/holdfast": t.HoldfastBinary}, Entrypoint: []string{"/holdfast"}}, nil
	case postgresImage.MatchString(name):
		major := postgresImage.FindStringSubmatch(name)[1]
		bin := filepath.Join(t.PostgresRoot, major, "bin")
		if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
			return Program{}, fmt.Errorf("image %s needs PostgreSQL %s on this machine (apt-get install postgresql-%s): %w", image, major, major, err)
		}
		return Program{PathPrefix: []string{bin}, Entrypoint: []string{"postgres"}}, nil
	}
	return Program{}, fmt.Errorf("image %s is not in the sandbox's image table (see docs/sandbox.md): the sandbox runs holdfast and postgres images only", image)
}

// stripRegistry drops a leading registry host (it has a dot or a port, or is localhost).
func stripRegistry(image string) string {
	first, rest, ok := strings.Cut(image, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return rest
	}
	return image
}
