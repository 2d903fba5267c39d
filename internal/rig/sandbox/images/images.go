// Package images is the sandbox's transition table: from the container
// images that cannot be built on this machine (the community postgres
// images and those other operators ship) to the local programs that stand
// in for them. Holdfast's own images are built (make images) and pulled
// from the sandbox's registry instead.
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
	// PathPrefix goes in front of the container's PATH.
	PathPrefix []string
	// Entrypoint runs when the container gives no command, as an image's
	// ENTRYPOINT would.
	Entrypoint []string
}

// Table resolves images.
type Table struct {
	// PostgresRoot holds one folder per major version with bin/ inside
	// (Debian: /usr/lib/postgresql).
	PostgresRoot string
}

// The rows of the table, matched against the image without its registry host.
var (
	// The community image and the images operators ship (CloudNativePG,
	// Crunchy) all name the major version first in the tag.
	postgresImage = regexp.MustCompile(`^(?:library/|cloudnative-pg/|crunchydata/)?(?:postgres|postgresql|crunchy-postgres):(\d+)(?:[.-][\w.-]*)?$`)
)

// Resolve finds the program for image, or says why there is none.
func (t Table) Resolve(image string) (Program, error) {
	name := stripRegistry(image)
	switch {
	case postgresImage.MatchString(name):
		major := postgresImage.FindStringSubmatch(name)[1]
		bin := filepath.Join(t.PostgresRoot, major, "bin")
		if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
			return Program{}, fmt.Errorf("image %s needs PostgreSQL %s on this machine (apt-get install postgresql-%s): %w", image, major, major, err)
		}
		return Program{PathPrefix: []string{bin}, Entrypoint: []string{"postgres"}}, nil
	}
	return Program{}, fmt.Errorf("image %s is neither in the sandbox's registry nor in its transition table (see docs/sandbox.md)", image)
}

// stripRegistry drops a leading registry host (it has a dot or a port, or is localhost).
func stripRegistry(image string) string {
	first, rest, ok := strings.Cut(image, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return rest
	}
	return image
}
