package operator

import (
	"maps"
	"slices"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/cache"
)

func TestWatchNamespacesLimitTheCache(t *testing.T) {
	if o := inNamespaces(cache.Options{}, nil); o.DefaultNamespaces != nil {
		t.Errorf("no namespaces named: the cache is limited to %v, want every namespace", o.DefaultNamespaces)
	}
	o := inNamespaces(cache.Options{SyncPeriod: nil}, []string{"team-a", "team-b"})
	if got := slices.Sorted(maps.Keys(o.DefaultNamespaces)); !slices.Equal(got, []string{"team-a", "team-b"}) {
		t.Errorf("the cache watches %v, want team-a and team-b", got)
	}
}
