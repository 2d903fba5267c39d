package snapshot

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

const clientModule = "github.com/kubernetes-csi/external-snapshotter/client/v8"

// TestCRDsMatchTheModule fails when the embedded CRDs are not those of the
// client module that go.mod requires: run hack/refresh-snapshot-crds.sh.
func TestCRDsMatchTheModule(t *testing.T) {
	// Without a version, go mod download takes the one go.mod selects.
	out, err := exec.Command("go", "mod", "download", "-json", clientModule).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", clientModule, err)
	}
	var mod struct{ Dir, Version string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s said %s (%v)", clientModule, out, err)
	}
	upstream, err := filepath.Glob(filepath.Join(mod.Dir, "config", "crd", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range upstream {
		if filepath.Base(p) != "kustomization.yaml" {
			want = append(want, filepath.Base(p))
		}
	}
	entries, err := crdFiles.ReadDir("crds")
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, e := range entries {
		have = append(have, e.Name())
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(have, want) {
		t.Fatalf("embedded CRDs %v, but %s@%s has %v; run hack/refresh-snapshot-crds.sh", have, clientModule, mod.Version, want)
	}
	for _, name := range want {
		upstream, err := os.ReadFile(filepath.Join(mod.Dir, "config", "crd", name))
		if err != nil {
			t.Fatal(err)
		}
		embedded, err := crdFiles.ReadFile("crds/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if string(embedded) != string(upstream) {
			t.Errorf("crds/%s differs from %s@%s; run hack/refresh-snapshot-crds.sh", name, clientModule, mod.Version)
		}
	}
}

// TestCRDsParse checks that the sandbox installs all six CRDs, the group
// snapshot ones included, each serving v1 (the group snapshot CRDs still
// store v1beta2).
func TestCRDsParse(t *testing.T) {
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, crd := range crds {
		names = append(names, crd.Name)
		served := false
		for _, v := range crd.Spec.Versions {
			served = served || (v.Name == "v1" && v.Served)
		}
		if !served {
			t.Errorf("CRD %s does not serve v1", crd.Name)
		}
	}
	slices.Sort(names)
	want := []string{
		"volumegroupsnapshotclasses.groupsnapshot.storage.k8s.io",
		"volumegroupsnapshotcontents.groupsnapshot.storage.k8s.io",
		"volumegroupsnapshots.groupsnapshot.storage.k8s.io",
		"volumesnapshotclasses.snapshot.storage.k8s.io",
		"volumesnapshotcontents.snapshot.storage.k8s.io",
		"volumesnapshots.snapshot.storage.k8s.io",
	}
	if !slices.Equal(names, want) {
		t.Errorf("CRDs %v, want %v", names, want)
	}
}
