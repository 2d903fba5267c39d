// Package alerts tests Holdfast's alerting rules and Grafana dashboard in
// config/monitoring with the real promtool: the rules load, their unit
// tests pass, every alert is tested firing and silent, the PrometheusRule
// manifests hold the same rules, and no rule or panel reads a series that
// Holdfast does not serve.
package alerts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	monitoringDir = "../../config/monitoring"
	ruleFile      = monitoringDir + "/holdfast-rules.yaml"
	ruleTestFile  = monitoringDir + "/holdfast-rules.test.yaml"
)

// promtool is the binary `make test` names in $PROMTOOL, else the one
// hack/build-promtool.sh links for the pinned version.
func promtool(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs promtool, which make test builds")
	}
	bin := os.Getenv("PROMTOOL")
	if bin == "" {
		out, err := exec.Command("../../hack/build-promtool.sh", "--dir").Output()
		if err != nil {
			t.Fatalf("hack/build-promtool.sh --dir: %v", err)
		}
		bin = filepath.Join(strings.TrimSpace(string(out)), "promtool")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("promtool is not built (%v): run `make test`, which builds it with hack/build-promtool.sh", err)
	}
	return bin
}

// runPromtool runs promtool with args and fails the test with its output
// when it fails.
func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(promtool(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestRulesCheck(t *testing.T) {
	runPromtool(t, "check", "rules", "--lint=all", "--lint-fatal", ruleFile)
}

// TestRulesUnitTests runs holdfast-rules.test.yaml: each alert fires on
// the series that should raise it, with its labels and annotations, and
// stays silent on those that should not.
func TestRulesUnitTests(t *testing.T) {
	runPromtool(t, "test", "rules", ruleTestFile)
}
