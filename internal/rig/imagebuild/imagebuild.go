// Package imagebuild builds Holdfast's images for the rig: the sandboxes
// of the end-to-end tests and benchmarks run the images `make images`
// builds, pulled from the sandbox's registry, as a user's cluster would.
package imagebuild

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
)

var (
	once   sync.Once
	layout string
	err    error
)

// Layout builds the images of the Holdfast module at root, or reuses the
// build cache's (hack/images), and returns the OCI layout's path for
// `holdfast sandbox up --images`. It builds once per process: a test
// binary's sandboxes share one layout.
func Layout(ctx context.Context, root string) (string, error) {
	once.Do(func() {
		cmd := exec.CommandContext(ctx, "go", "run", "./hack/images", "-q")
		cmd.Dir = root
		var out []byte
		out, err = cmd.Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				err = fmt.Errorf("building the images (go run ./hack/images): %w\n%s", err, ee.Stderr)
			} else {
				err = fmt.Errorf("building the images (go run ./hack/images): %w", err)
			}
			return
		}
		layout = strings.TrimSpace(string(out))
	})
	return layout, err
}
