package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLinksOnlyWhatRunsInAPod: the image's binary does not link the
// sandbox, the benchmarks or the test rig, nor the libraries only they use.
func TestLinksOnlyWhatRunsInAPod(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps listed %d packages: not the binary's dependencies", len(deps))
	}
	rig := []string{
		"holdfast.dev/holdfast/internal/rig/", "holdfast.dev/holdfast/internal/cli/sandboxcmd",
		"github.com/virtual-kubelet/", "github.com/vishvananda/netlink", "github.com/kubernetes-csi/external-snapshotter/v8/pkg/",
	}
	for _, d := range deps {
		for _, r := range rig {
			if d == r || strings.HasPrefix(d, strings.TrimSuffix(r, "/")+"/") {
				t.Errorf("holdfastd links %s", d)
			}
		}
	}
	for _, want := range []string{"holdfast.dev/holdfast/internal/operator", "holdfast.dev/holdfast/internal/instance"} {
		if !slices.Contains(deps, want) {
			t.Errorf("holdfastd does not link %s", want)
		}
	}
}
