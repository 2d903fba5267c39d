package main

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"holdfast.dev/holdfast/internal/rig/sandbox"
)

// The Deployment config/default installs runs the image `make images` tags,
// and the sandbox, which installs config/default, pulls it from its registry.
func TestManagerRunsTheBuiltImage(t *testing.T) {
	v, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	want := holdfastRef(strings.TrimSpace(string(v)))
	b, err := os.ReadFile("../../config/manager/manager.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Image string   `json:"image"`
						Args  []string `json:"args"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers in manager.yaml, want 1", len(cs))
	}
	if cs[0].Image != want {
		t.Errorf("operator image %q, want %q", cs[0].Image, want)
	}
	found := false
	for _, a := range cs[0].Args {
		if img, ok := strings.CutPrefix(a, "--instance-image="); ok {
			found = true
			if img != want {
				t.Errorf("--instance-image=%s, want %s", img, want)
			}
		}
	}
	if !found {
		t.Error("manager.yaml passes no --instance-image")
	}
	if !strings.HasPrefix(want, sandbox.MirroredPrefix) {
		t.Errorf("the sandbox's registry mirrors %s, so its node cannot pull %s", sandbox.MirroredPrefix, want)
	}
}
