// Package chart tests the Helm chart charts/holdfast with the Helm SDK: it
// lints, and what it renders is what config/ installs (the same operator pod,
// the same RBAC rules controller-gen writes, the same CRDs), with the values
// that change it.
package chart

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "../../charts/holdfast"
	release   = "holdfast"
	namespace = "holdfast-system"
)

func TestLint(t *testing.T) {
	for _, set := range []string{
		"",
		"metrics.serviceMonitor.enabled=true,image.pullPolicy=Always,nodeSelector.disk=ssd",
		"metrics.enabled=false",
	} {
		lint := action.NewLint()
		lint.Strict = true
		lint.Namespace = namespace
		result := lint.Run([]string{chartDir}, values(t, set))
		if result.TotalChartsLinted != 1 {
			t.Errorf("--set %q: linted %d charts, want 1", set, result.TotalChartsLinted)
		}
		for _, err := range result.Errors {
			t.Errorf("helm lint --strict --set %q: %v", set, err)
		}
		for _, m := range result.Messages {
			// Strict lint fails on warnings; the info left is the
			// recommended icon, which a chart kept in the repository needs not.
			if m.Severity > support.InfoSev || !strings.Contains(m.Err.Error(), "icon") {
				t.Errorf("helm lint --set %q: %v", set, m)
			}
		}
	}
}

// TestDefaultsMirrorConfigManager: with no values the chart's operator pod
// is config/manager/manager.yaml's.
func TestDefaultsMirrorConfigManager(t *testing.T) {
	got := render(t, "").deployment(t, "holdfast-operator")
	var want appsv1.Deployment
	readYAML(t, "../../config/manager/manager.yaml", &want)

	if *got.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *got.Spec.Replicas)
	}
	c := got.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--leader-elect") {
		t.Errorf("args %q lack --leader-elect", c.Args)
	}
	if ps, cs := got.Spec.Template.Spec.SecurityContext, c.SecurityContext; ps == nil || cs == nil ||
		ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || cs.RunAsNonRoot == nil || !*cs.RunAsNonRoot {
		t.Errorf("the pod and its container must run as non-root: pod %+v, container %+v", ps, cs)
	}

	// The chart's own labels aside, everything else is the same, down to
	// the probes, resources and security context. The metrics address is
	// spelt out so the port is a value; :8080 is the binary's default.
	wantPod := want.Spec.Template.Spec.DeepCopy()
	wantPod.Containers[0].Args = append(wantPod.Containers[0].Args, "--metrics-bind-address=:8080")
	wantPod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector.MatchLabels =
		got.Spec.Selector.MatchLabels
	if !equality.Semantic.DeepEqual(got.Spec.Template.Spec, *wantPod) {
		t.Errorf("the chart's operator pod differs from config/manager/manager.yaml's:\n%s", diffYAML(t, *wantPod, got.Spec.Template.Spec))
	}
	if got.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != want.Spec.Selector.MatchLabels["app.kubernetes.io/name"] {
		t.Errorf("selector %v lacks config/manager's name label %v", got.Spec.Selector.MatchLabels, want.Spec.Selector.MatchLabels)
	}
	if !selects(got.Spec.Selector.MatchLabels, got.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pod labels %v", got.Spec.Selector.MatchLabels, got.Spec.Template.Labels)
	}
}

func TestValuesChangeTheOperator(t *testing.T) {
	r := render(t, "image.tag=v1.2.3,image.pullPolicy=Always,replicaCount=3,resources.limits.memory=1Gi,"+
		"nodeSelector.disk=ssd,tolerations[0].key=dedicated,tolerations[0].operator=Exists,podLabels.team=db,"+
		"imagePullSecrets[0].name=ghcr")
	d := r.deployment(t, "holdfast-operator")
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != "ghcr.io/holdfast-dev/holdfast:v1.2.3" {
		t.Errorf("image %q, want the tag from values", c.Image)
	}
	// The operator's tag alone does not move the databases' image.
	if !slices.Contains(c.Args, "--instance-image=ghcr.io/holdfast-dev/holdfast:0.1.0-dev") {
		t.Errorf("args %q: the instance image should stay at the chart's appVersion", c.Args)
	}
	if c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("imagePullPolicy %q, want Always", c.ImagePullPolicy)
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
	}
	if m := c.Resources.Limits.Memory().String(); m != "1Gi" {
		t.Errorf("memory limit %s, want 1Gi", m)
	}
	if pod.NodeSelector["disk"] != "ssd" || len(pod.Tolerations) != 1 || pod.Tolerations[0].Key != "dedicated" {
		t.Errorf("nodeSelector %v, tolerations %v", pod.NodeSelector, pod.Tolerations)
	}
	if d.Spec.Template.Labels["team"] != "db" || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("pod labels %v, selector %v", d.Spec.Template.Labels, d.Spec.Selector.MatchLabels)
	}
	if len(pod.ImagePullSecrets) != 1 || pod.ImagePullSecrets[0].Name != "ghcr" {
		t.Errorf("imagePullSecrets %v", pod.ImagePullSecrets)
	}

	c = render(t, "watchNamespaces[0]=team-a,watchNamespaces[1]=team-b,logLevel=debug").deployment(t, "holdfast-operator").Spec.Template.Spec.Containers[0]
	for _, want := range []string{"--watch-namespaces=team-a,team-b", "--log-level=debug"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %q lack %s", c.Args, want)
		}
	}

	c = render(t, "image.registry=registry.example.com:5000,image.repository=mirror/holdfast,instanceImage.tag=v9").
		deployment(t, "holdfast-operator").Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com:5000/mirror/holdfast:0.1.0-dev" {
		t.Errorf("image %q from a registry and repository of our own", c.Image)
	}
	if !slices.Contains(c.Args, "--instance-image=registry.example.com:5000/mirror/holdfast:v9") {
		t.Errorf("args %q: the instance image takes the operator's registry and repository and its own tag", c.Args)
	}

	affinity := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "pool", Operator: corev1.NodeSelectorOpIn, Values: []string{"system"}}}}},
	}}}
	pod = render(t, "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool,"+
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In,"+
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]=system").
		deployment(t, "holdfast-operator").Spec.Template.Spec
	if !equality.Semantic.DeepEqual(pod.Affinity, affinity) {
		t.Errorf("affinity from values replaces the default:\n%s", diffYAML(t, affinity, pod.Affinity))
	}
}

func TestMetrics(t *testing.T) {
	r := render(t, "metrics.port=9090")
	c := r.deployment(t, "holdfast-operator").Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--metrics-bind-address=:9090") || !hasPort(c, "metrics", 9090) {
		t.Errorf("metrics on 9090: args %q, ports %v", c.Args, c.Ports)
	}
	if r.has("ServiceMonitor", "holdfast-operator") || r.has("Service", "holdfast-operator-metrics") {
		t.Error("a ServiceMonitor and its Service are rendered though serviceMonitor.enabled is false by default")
	}

	c = render(t, "metrics.enabled=false").deployment(t, "holdfast-operator").Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--metrics-bind-address=0") || hasPort(c, "metrics", 8080) {
		t.Errorf("metrics off: args %q, ports %v", c.Args, c.Ports)
	}

	r = render(t, "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prometheus")
	var svc corev1.Service
	r.decode(t, "Service", "holdfast-operator-metrics", &svc)
	if !selects(svc.Spec.Selector, r.deployment(t, "holdfast-operator").Spec.Template.Labels) ||
		len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("metrics Service %+v", svc.Spec)
	}
	var sm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name, Namespace string
			Labels          map[string]string
		}
		Spec struct {
			Selector  struct{ MatchLabels map[string]string }
			Endpoints []struct {
				Port, Interval string
				HonorLabels    bool
			}
		}
	}
	r.decode(t, "ServiceMonitor", "holdfast-operator", &sm)
	if sm.Metadata.Labels["release"] != "prometheus" || !selects(sm.Spec.Selector.MatchLabels, svc.Labels) ||
		len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" ||
		// Without it Prometheus renames the series' namespace label, and
		// the alerts would match the operator's namespace.
		!sm.Spec.Endpoints[0].HonorLabels {
		t.Errorf("ServiceMonitor %+v", sm)
	}
}

// TestRBACIsControllerGens: the chart grants the rules config/rbac holds,
// no more, bound to the operator's ServiceAccount in the release namespace.
func TestRBACIsControllerGens(t *testing.T) {
	r := render(t, "")
	var role, wantRole rbacv1.ClusterRole
	r.decode(t, "ClusterRole", "holdfast-operator", &role)
	readYAML(t, "../../config/rbac/role.yaml", &wantRole)
	if len(wantRole.Rules) == 0 || !equality.Semantic.DeepEqual(role.Rules, wantRole.Rules) {
		t.Errorf("ClusterRole rules differ from config/rbac/role.yaml's:\n%s", diffYAML(t, wantRole.Rules, role.Rules))
	}
	var election, wantElection rbacv1.Role
	r.decode(t, "Role", "holdfast-leader-election", &election)
	readYAML(t, "../../config/rbac/leader_election_role.yaml", &wantElection)
	if !equality.Semantic.DeepEqual(election.Rules, wantElection.Rules) {
		t.Errorf("leader election Role rules differ from config/rbac's:\n%s", diffYAML(t, wantElection.Rules, election.Rules))
	}
	if election.Namespace != namespace {
		t.Errorf("leader election Role in %q, want the release namespace", election.Namespace)
	}

	sa := r.deployment(t, "holdfast-operator").Spec.Template.Spec.ServiceAccountName
	if !r.has("ServiceAccount", sa) {
		t.Errorf("the operator runs as ServiceAccount %q, which the chart does not make", sa)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}}
	var crb rbacv1.ClusterRoleBinding
	r.decode(t, "ClusterRoleBinding", "holdfast-operator", &crb)
	if crb.RoleRef.Name != role.Name || crb.RoleRef.Kind != "ClusterRole" || !reflect.DeepEqual(crb.Subjects, subject) {
		t.Errorf("ClusterRoleBinding %+v %+v", crb.RoleRef, crb.Subjects)
	}
	var rb rbacv1.RoleBinding
	r.decode(t, "RoleBinding", "holdfast-leader-election", &rb)
	if rb.RoleRef.Name != election.Name || rb.RoleRef.Kind != "Role" || !reflect.DeepEqual(rb.Subjects, subject) {
		t.Errorf("RoleBinding %+v %+v", rb.RoleRef, rb.Subjects)
	}
}

// TestNamesFollowTheRelease: a second release in another namespace makes
// cluster-scoped objects of its own.
func TestNamesFollowTheRelease(t *testing.T) {
	r := renderAs(t, "pg-operators", "")
	for _, kind := range []string{"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} {
		if !r.has(kind, "pg-operators-holdfast-operator") {
			t.Errorf("no %s pg-operators-holdfast-operator in %v", kind, r.names())
		}
	}
	if d := r.deployment(t, "pg-operators-holdfast-operator"); d.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] != "pg-operators" {
		t.Errorf("selector %v does not name the release", d.Spec.Selector.MatchLabels)
	}
}

// TestCRDsAreConfigs: the chart installs the CRDs controller-gen writes
// (make manifests copies them; this fails before a commit if they drift).
func TestCRDsAreConfigs(t *testing.T) {
	want, err := filepath.Glob("../../config/crd/bases/*.yaml")
	if err != nil || len(want) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	got, err := filepath.Glob(chartDir + "/crds/*")
	if err != nil {
		t.Fatal(err)
	}
	if names(got) != names(want) {
		t.Errorf("chart crds/ holds %s, config/crd/bases %s: run make manifests", names(got), names(want))
	}
	for _, f := range want {
		w, g := readFile(t, f), readFile(t, filepath.Join(chartDir, "crds", filepath.Base(f)))
		if !bytes.Equal(w, g) {
			t.Errorf("crds/%s differs from config/crd/bases: run make manifests", filepath.Base(f))
		}
	}
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ch.CRDObjects()); n != len(want) {
		t.Errorf("Helm sees %d CRDs in the chart, want %d", n, len(want))
	}
}

// rendered is a release's manifest, object by object, keyed Kind/name.
type rendered map[string][]byte

func render(t *testing.T, set string) rendered {
	t.Helper()
	return renderAs(t, release, set)
}

// renderAs renders the chart as `helm template NAME charts/holdfast -n
// holdfast-system --set SET` does, with no cluster.
func renderAs(t *testing.T, name, set string) rendered {
	t.Helper()
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = name
	install.Namespace = namespace
	install.Replace = true
	rel, err := install.Run(ch, values(t, set))
	if err != nil {
		t.Fatalf("rendering with --set %q: %v", set, err)
	}
	manifest := rel.(*releasev1.Release).Manifest
	r := rendered{}
	dec := utilyaml.NewDocumentDecoder(io.NopCloser(strings.NewReader(manifest)))
	buf := make([]byte, len(manifest)+1)
	for {
		n, err := dec.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("splitting the manifest: %v", err)
		}
		doc := bytes.Clone(buf[:n])
		var meta struct {
			Kind     string
			Metadata struct{ Name string }
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue
		}
		key := meta.Kind + "/" + meta.Metadata.Name
		if _, dup := r[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		r[key] = doc
	}
	return r
}

func (r rendered) has(kind, name string) bool { _, ok := r[kind+"/"+name]; return ok }

func (r rendered) names() []string {
	var keys []string
	for k := range r {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decode reads an object strictly: a field the type does not have (a
// misspelt or misplaced one in a template) is an error.
func (r rendered) decode(t *testing.T, kind, name string, into any) {
	t.Helper()
	doc, ok := r[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s %s rendered; the release has %v", kind, name, r.names())
	}
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
}

func (r rendered) deployment(t *testing.T, name string) appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	r.decode(t, "Deployment", name, &d)
	if len(d.Spec.Template.Spec.Containers) != 1 || d.Spec.Replicas == nil {
		t.Fatalf("Deployment %s: %d containers, replicas %v", name, len(d.Spec.Template.Spec.Containers), d.Spec.Replicas)
	}
	return d
}

// values parses `--set` syntax.
func values(t *testing.T, set string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if set != "" {
		if err := strvals.ParseInto(set, v); err != nil {
			t.Fatalf("--set %q: %v", set, err)
		}
	}
	return v
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readYAML(t *testing.T, name string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(readFile(t, name), into); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func hasPort(c corev1.Container, name string, port int32) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name && p.ContainerPort == port })
}

func names(files []string) string {
	var n []string
	for _, f := range files {
		n = append(n, filepath.Base(f))
	}
	return strings.Join(n, " ")
}

// diffYAML shows want and got in full: the objects are small.
func diffYAML(t *testing.T, want, got any) string {
	t.Helper()
	w, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	g, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("want:\n%s\ngot:\n%s", w, g)
}
