// Package distmanifest builds dist/install.yaml, the one file that installs
// Holdfast with `kubectl apply`, from the kustomize tree config/default, with
// kustomize's own library so the file is what `kubectl apply -k` applies.
// Build-time only: nothing the operator or the instance runs imports it.
package distmanifest

import (
	"bytes"
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Header opens the file: it says where it comes from and how to remake it.
const Header = `# Holdfast: CRDs, RBAC and the operator Deployment in holdfast-system.
#   kubectl apply -f dist/install.yaml        (or kubectl apply --server-side -f)
# Generated from config/default by 'make manifests' (go run ./hack/install-manifest); do not edit.
`

// Build renders the kustomization in dir.
func Build(dir string) ([]byte, error) {
	opts := krusty.MakeDefaultOptions()
	// Namespaces and CRDs before what lives in them, as kubectl apply -k
	// orders them: a single-file apply creates objects in file order.
	opts.Reorder = krusty.ReorderOptionLegacy
	resources, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	body, err := resources.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: writing YAML: %w", dir, err)
	}
	return append([]byte(Header+"---\n"), bytes.TrimLeft(body, "\n")...), nil
}
