// Command install-manifest writes dist/install.yaml from config/default
// (`make manifests` runs it; `make verify-generated` fails when the committed
// file differs).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"holdfast.dev/holdfast/internal/distmanifest"
)

func main() {
	from := flag.String("kustomization", "config/default", "the kustomization to build")
	out := flag.String("o", "dist/install.yaml", "the file to write")
	flag.Parse()
	if err := run(*from, *out); err != nil {
		fmt.Fprintln(os.Stderr, "install-manifest:", err)
		os.Exit(1)
	}
}

func run(from, out string) error {
	manifest, err := distmanifest.Build(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("making %s: %w", filepath.Dir(out), err)
	}
	if err := os.WriteFile(out, manifest, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}
