package alerts

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const dashboardFile = monitoringDir + "/grafana-dashboard.json"

type dashboard struct {
	Templating struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
		}
	}
	Panels []panel
}

type panel struct {
	ID         int
	Type       string
	Title      string
	Datasource *struct{ Type, UID string }
	Targets    []struct {
		Expr       string
		Datasource *struct{ Type, UID string }
	}
	// A collapsed row holds its panels.
	Panels []panel
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, dashboardFile), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// panels lists every panel but the rows, rows' panels included.
func (d dashboard) panels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// TestDashboardVariables: the data source is chosen, and the namespace
// and cluster variables list what Holdfast serves.
func TestDashboardVariables(t *testing.T) {
	vars := map[string]string{}
	for _, v := range readDashboard(t).Templating.List {
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
		}
		vars[v.Name] = v.Type + " " + q.Query
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil || m[2] != v.Name {
			t.Errorf("variable %s: query %q, want label_values(<series>, %s)", v.Name, q.Query, v.Name)
			continue
		}
		checkServed(t, "variable "+v.Name, m[1])
	}
	if vars["datasource"] != "datasource prometheus" {
		t.Errorf("variable datasource: %q, want a Prometheus data source", vars["datasource"])
	}
	for _, name := range []string{"namespace", "cluster"} {
		if !strings.HasPrefix(vars[name], "query ") {
			t.Errorf("no query variable %s: %v", name, vars)
		}
	}
}

var (
	namespaceMatcher = regexp.MustCompile(`(^|,)\s*namespace\s*=\s*"\$namespace"\s*(,|$)`)
	clusterMatcher   = regexp.MustCompile(`(^|,)\s*cluster\s*=\s*"\$cluster"\s*(,|$)`)
)

// TestDashboardQueries: every panel asks the chosen data source, reads
// only served series, and shows the chosen cluster's alone.
func TestDashboardQueries(t *testing.T) {
	ids := map[int]string{}
	for _, p := range readDashboard(t).panels() {
		where := fmt.Sprintf("panel %q", p.Title)
		if other, dup := ids[p.ID]; dup {
			t.Errorf("%s has the id %d of panel %q", where, p.ID, other)
		}
		ids[p.ID] = p.Title
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want ${datasource}", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no queries", where)
		}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: a query's datasource %+v, want ${datasource}", where, tg.Datasource)
			}
			for _, s := range checkServed(t, where, tg.Expr) {
				if strings.HasPrefix(s.Metric, "holdfast_") &&
					(!namespaceMatcher.MatchString(s.Matchers) || !clusterMatcher.MatchString(s.Matchers)) {
					t.Errorf("%s reads %s{%s}, not only $namespace's $cluster", where, s.Metric, s.Matchers)
				}
			}
		}
	}
}

// grafanaVars are the variables the queries may use, with a value each
// that makes them PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$namespace", "shop", "$cluster", "pg")

// TestDashboardQueriesParse has promtool check every query's syntax, as
// recording rules of a throwaway rule file.
func TestDashboardQueriesParse(t *testing.T) {
	type record struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var records []record
	for _, p := range readDashboard(t).panels() {
		for _, tg := range p.Targets {
			records = append(records, record{fmt.Sprintf("dashboard:panel_%d:%d", p.ID, len(records)), grafanaVars.Replace(tg.Expr)})
		}
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": records}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", file)
}
