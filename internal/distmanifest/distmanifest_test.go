package distmanifest

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestCommittedManifestIsCurrent fails when config/ changed and
// dist/install.yaml was not remade (make manifests).
func TestCommittedManifestIsCurrent(t *testing.T) {
	want, err := Build("../../config/default")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../dist/install.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("dist/install.yaml is stale: run make manifests")
	}
}

// TestObjectsComeBeforeWhatNeedsThem: kubectl apply -f creates objects in
// file order, so the Namespace and the CRDs must lead.
func TestObjectsComeBeforeWhatNeedsThem(t *testing.T) {
	manifest, err := Build("../../config/default")
	if err != nil {
		t.Fatal(err)
	}
	namespaces := map[string]bool{}
	kinds := map[string]int{}
	var others []string // neither Namespaces nor CRDs, in order
	for _, doc := range strings.Split(string(manifest), "\n---\n") {
		var obj struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		switch {
		case obj.Kind == "":
			continue
		case obj.Kind == "Namespace":
			namespaces[obj.Metadata.Name] = true
		case obj.Kind == "CustomResourceDefinition":
			if len(others) > 0 {
				t.Errorf("CRD %s comes after %v", obj.Metadata.Name, others)
			}
		case obj.Metadata.Namespace != "" && !namespaces[obj.Metadata.Namespace]:
			t.Errorf("%s %s comes before its Namespace %s", obj.Kind, obj.Metadata.Name, obj.Metadata.Namespace)
		}
		if obj.Kind != "Namespace" && obj.Kind != "CustomResourceDefinition" {
			others = append(others, obj.Kind)
		}
		kinds[obj.Kind]++
	}
	for kind, n := range map[string]int{"Namespace": 1, "CustomResourceDefinition": 3, "ClusterRole": 1, "Deployment": 1} {
		if kinds[kind] != n {
			t.Errorf("%d %s, want %d (all: %v)", kinds[kind], kind, n, kinds)
		}
	}
}
