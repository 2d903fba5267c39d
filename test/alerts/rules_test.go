package alerts

import (
	"bytes"
	"flag"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite config/monitoring/prometheusrule.yaml's groups and the chart's copy of the rules from holdfast-rules.yaml")

const (
	prometheusRuleFile = monitoringDir + "/prometheusrule.yaml"
	chartRuleFile      = "../../charts/holdfast/files/holdfast-rules.yaml"
	alertsDoc          = "../../docs/alerts.md"
)

type ruleFileSpec struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func readRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFileSpec
	if err := yaml.UnmarshalStrict(readFile(t, ruleFile), &f); err != nil {
		t.Fatalf("%s: %v", ruleFile, err)
	}
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s holds no rules", ruleFile)
	}
	return rules
}

// TestManifestsHoldTheRuleFile: config/monitoring's PrometheusRule and the
// chart's copy alert as the plain rule file does, so none can drift.
func TestManifestsHoldTheRuleFile(t *testing.T) {
	src := readFile(t, ruleFile)
	if *update {
		writeFile(t, chartRuleFile, src)
		writeFile(t, prometheusRuleFile, prometheusRule(t, readFile(t, prometheusRuleFile), src))
	}
	if !bytes.Equal(readFile(t, chartRuleFile), src) {
		t.Errorf("charts/holdfast/files/holdfast-rules.yaml differs from %s: run go test ./test/alerts -update", ruleFile)
	}

	var want struct {
		Groups any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(src, &want); err != nil {
		t.Fatal(err)
	}
	var got struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name, Namespace string
			Labels          map[string]string
		} `json:"metadata"`
		Spec struct {
			Groups any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, prometheusRuleFile), &got); err != nil {
		t.Fatalf("%s: %v", prometheusRuleFile, err)
	}
	if got.APIVersion != "monitoring.coreos.com/v1" || got.Kind != "PrometheusRule" || got.Metadata.Name == "" {
		t.Errorf("%s is a %s %s named %q, want a monitoring.coreos.com/v1 PrometheusRule", prometheusRuleFile, got.APIVersion, got.Kind, got.Metadata.Name)
	}
	if !reflect.DeepEqual(got.Spec.Groups, want.Groups) {
		t.Errorf("%s's groups differ from %s's: run go test ./test/alerts -update", prometheusRuleFile, ruleFile)
	}
}

// prometheusRule keeps the manifest's head, up to spec:, and puts the rule
// file's groups under it, comments and all.
func prometheusRule(t *testing.T, manifest, rules []byte) []byte {
	t.Helper()
	head, _, ok := bytes.Cut(manifest, []byte("\nspec:\n"))
	_, groups, found := bytes.Cut(rules, []byte("\ngroups:\n"))
	if !ok || !found {
		t.Fatalf("%s needs a spec: line and %s a groups: line", prometheusRuleFile, ruleFile)
	}
	var b bytes.Buffer
	b.Write(head)
	b.WriteString("\nspec:\n  groups:\n")
	for line := range strings.Lines(string(groups)) {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

type ruleTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `json:"exp_labels"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestEveryAlertFiresAndStaysSilent: promtool passes an alert that no case
// names, and a case naming no alert expects silence and gets it, so the
// coverage is checked here. Each rule needs a case where an alert with its
// labels (its severity) fires; each alert name one where it stays silent.
func TestEveryAlertFiresAndStaysSilent(t *testing.T) {
	var tests ruleTests
	if err := yaml.Unmarshal(readFile(t, ruleTestFile), &tests); err != nil {
		t.Fatalf("%s: %v", ruleTestFile, err)
	}
	rules := readRules(t)
	silent := map[string]bool{}
	var fired []map[string]string
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if !slices.ContainsFunc(rules, func(r rule) bool { return r.Alert == a.Alertname }) {
				t.Errorf("%s tests alert %q at %s, which no rule raises", ruleTestFile, a.Alertname, a.EvalTime)
			}
			if len(a.ExpAlerts) == 0 {
				silent[a.Alertname] = true
			}
			for _, e := range a.ExpAlerts {
				fired = append(fired, withAlertname(e.ExpLabels, a.Alertname))
			}
		}
	}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		if !silent[r.Alert] {
			t.Errorf("%s has no case where %s stays silent", ruleTestFile, r.Alert)
		}
		want := withAlertname(r.Labels, r.Alert)
		if !slices.ContainsFunc(fired, func(got map[string]string) bool { return holds(got, want) }) {
			t.Errorf("%s has no case where %s fires with labels %v", ruleTestFile, r.Alert, r.Labels)
		}
	}
}

func withAlertname(labels map[string]string, name string) map[string]string {
	l := map[string]string{"alertname": name}
	for k, v := range labels {
		l[k] = v
	}
	return l
}

func holds(labels, subset map[string]string) bool {
	for k, v := range subset {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestAlertsAreDocumented: every alert has a severity, a summary naming
// the namespace, and a description naming the cluster that ends with its
// runbook in docs/alerts.md, which has it.
func TestAlertsAreDocumented(t *testing.T) {
	doc := string(readFile(t, alertsDoc))
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ +(\S+) *$`).FindAllStringSubmatch(doc, -1) {
		headings[strings.ToLower(m[1])] = true
	}
	for _, r := range readRules(t) {
		if r.Alert == "" {
			continue
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		if r.Annotations["summary"] == "" {
			t.Errorf("%s has no summary", r.Alert)
		}
		anchor := strings.ToLower(r.Alert)
		if !strings.HasSuffix(r.Annotations["description"], "Runbook: docs/alerts.md#"+anchor) {
			t.Errorf("%s's description %q does not end with its runbook, docs/alerts.md#%s", r.Alert, r.Annotations["description"], anchor)
		}
		if !headings[anchor] {
			t.Errorf("docs/alerts.md has no heading %s for the runbook", r.Alert)
		}
		for _, l := range []string{"namespace", "cluster"} {
			if !strings.Contains(r.Annotations["description"], "$labels."+l) {
				t.Errorf("%s's description does not name the %s", r.Alert, l)
			}
		}
		if !strings.Contains(r.Annotations["summary"], "$labels.namespace") {
			t.Errorf("%s's summary does not name the namespace", r.Alert)
		}
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
