package chart

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

const monitoringOn = "metrics.podMonitor.enabled=true,metrics.prometheusRule.enabled=true"

type podMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name, Namespace string
		Labels          map[string]string
	}
	Spec podMonitorSpec
}

type podMonitorSpec struct {
	NamespaceSelector struct {
		Any        bool     `json:"any,omitempty"`
		MatchNames []string `json:"matchNames,omitempty"`
	}
	Selector            metav1.LabelSelector
	PodMetricsEndpoints []struct {
		Port, Path, Interval string
		Relabelings          []struct {
			SourceLabels []string `json:"sourceLabels"`
			TargetLabel  string   `json:"targetLabel"`
		}
	}
}

func TestMonitoringIsOptional(t *testing.T) {
	r := render(t, "")
	for _, kind := range []string{"PodMonitor", "PrometheusRule"} {
		for key := range r {
			if strings.HasPrefix(key, kind+"/") {
				t.Errorf("%s rendered, though metrics.podMonitor and metrics.prometheusRule are off by default", key)
			}
		}
	}

	lint := action.NewLint()
	lint.Strict = true
	lint.Namespace = namespace
	result := lint.Run([]string{chartDir}, values(t, monitoringOn+",watchNamespaces[0]=team-a"))
	for _, err := range result.Errors {
		t.Errorf("helm lint --strict --set %s: %v", monitoringOn, err)
	}
	for _, m := range result.Messages {
		if m.Severity > support.InfoSev || !strings.Contains(m.Err.Error(), "icon") {
			t.Errorf("helm lint --set %s: %v", monitoringOn, m)
		}
	}
}

// TestPodMonitorScrapesInstances: the PodMonitor is config/monitoring's,
// and it finds what the operator makes: the instance pods, by their labels,
// their metrics port, and the cluster's name in their cluster label.
func TestPodMonitorScrapesInstances(t *testing.T) {
	r := render(t, monitoringOn+",metrics.podMonitor.interval=15s,metrics.podMonitor.labels.release=prometheus")
	var got, want podMonitor
	r.decode(t, "PodMonitor", "holdfast-instances", &got)
	readYAML(t, "../../config/monitoring/podmonitor.yaml", &want)
	if got.APIVersion != "monitoring.coreos.com/v1" || got.Metadata.Namespace != namespace || got.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("PodMonitor %s %+v", got.APIVersion, got.Metadata)
	}
	if len(got.Spec.PodMetricsEndpoints) != 1 || got.Spec.PodMetricsEndpoints[0].Interval != "15s" {
		t.Fatalf("endpoints %+v, want one scraped every 15s", got.Spec.PodMetricsEndpoints)
	}
	got.Spec.PodMetricsEndpoints[0].Interval = want.Spec.PodMetricsEndpoints[0].Interval
	if !reflect.DeepEqual(got.Spec, want.Spec) {
		t.Errorf("the chart's PodMonitor differs from config/monitoring/podmonitor.yaml's:\n%s", diffYAML(t, want.Spec, got.Spec))
	}

	c := &holdfastv1.PostgresCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-db", Namespace: "shop"},
		Spec: holdfastv1.PostgresClusterSpec{Instances: 3, PostgresVersion: 15,
			Storage: holdfastv1.StorageSpec{Size: resource.MustParse("1Gi")}},
	}
	pod := resources.StatefulSet(c, resources.Options{InstanceImage: "holdfast:test"}).Spec.Template
	sel, err := metav1.LabelSelectorAsSelector(&got.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("selector %v does not select the instance pods' labels %v", sel, pod.Labels)
	}
	ep := got.Spec.PodMetricsEndpoints[0]
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool {
		return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == ep.Port })
	}) {
		t.Errorf("the instance pods have no port %q", ep.Port)
	}
	// Prometheus names a pod label's meta label with every character that
	// is not a letter or digit turned into an underscore.
	clusterLabel := "__meta_kubernetes_pod_label_" + regexp.MustCompile(`[^a-zA-Z0-9]`).ReplaceAllString(resources.LabelCluster, "_")
	targets := map[string]string{}
	for _, rl := range ep.Relabelings {
		if len(rl.SourceLabels) == 1 {
			targets[rl.TargetLabel] = rl.SourceLabels[0]
		}
	}
	wantTargets := map[string]string{"cluster": clusterLabel, "namespace": "__meta_kubernetes_namespace", "pod": "__meta_kubernetes_pod_name"}
	if !reflect.DeepEqual(targets, wantTargets) {
		t.Errorf("relabelings give %v, want %v", targets, wantTargets)
	}
	if pod.Labels[resources.LabelCluster] != c.Name {
		t.Errorf("pod label %s is %q, not the cluster's name", resources.LabelCluster, pod.Labels[resources.LabelCluster])
	}

	if !want.Spec.NamespaceSelector.Any || !got.Spec.NamespaceSelector.Any {
		t.Errorf("namespaceSelector %+v, want any namespace", got.Spec.NamespaceSelector)
	}
	r = render(t, "metrics.podMonitor.enabled=true,watchNamespaces[0]=team-a,watchNamespaces[1]=team-b")
	var limited podMonitor
	r.decode(t, "PodMonitor", "holdfast-instances", &limited)
	if ns := limited.Spec.NamespaceSelector; ns.Any || !slices.Equal(ns.MatchNames, []string{"team-a", "team-b"}) {
		t.Errorf("with watchNamespaces, namespaceSelector %+v, want those namespaces", ns)
	}
}

// TestPrometheusRuleHoldsTheRules: the chart alerts with
// config/monitoring/holdfast-rules.yaml's groups, untouched by templating.
func TestPrometheusRuleHoldsTheRules(t *testing.T) {
	r := render(t, monitoringOn+",metrics.prometheusRule.labels.release=prometheus")
	var got struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name, Namespace string
			Labels          map[string]string
		}
		Spec struct{ Groups any }
	}
	r.decode(t, "PrometheusRule", "holdfast-alerts", &got)
	var want struct{ Groups any }
	readYAML(t, "../../config/monitoring/holdfast-rules.yaml", &want)
	if got.APIVersion != "monitoring.coreos.com/v1" || got.Metadata.Namespace != namespace || got.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("PrometheusRule %s %+v", got.APIVersion, got.Metadata)
	}
	if want.Groups == nil || !reflect.DeepEqual(got.Spec.Groups, want.Groups) {
		t.Errorf("the chart's PrometheusRule groups differ from config/monitoring/holdfast-rules.yaml's:\n%s", diffYAML(t, want.Groups, got.Spec.Groups))
	}
}
