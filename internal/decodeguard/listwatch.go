package decodeguard

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// listerWatcher lists and watches one guarded kind as unstructured objects
// and decodes them one at a time.
type listerWatcher struct {
	g *Guard
	k guarded
}

func (lw *listerWatcher) List(opts metav1.ListOptions) (runtime.Object, error) {
	return lw.ListWithContext(context.Background(), opts)
}

func (lw *listerWatcher) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return lw.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported keeps the reflector on list-then-watch:
// the guard decodes list items and watch events alike, and plain lists are
// simpler to reason about.
func (lw *listerWatcher) IsWatchListSemanticsUnSupported() bool { return true }

func (lw *listerWatcher) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	ul, err := lw.g.dyn.Resource(lw.k.gvr).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	listGVK := lw.k.gvk.GroupVersion().WithKind(lw.k.gvk.Kind + "List")
	list, err := lw.g.scheme.New(listGVK)
	if err != nil {
		return nil, fmt.Errorf("making a %s: %w", listGVK.Kind, err)
	}
	lm, err := meta.ListAccessor(list)
	if err != nil {
		return nil, err
	}
	lm.SetResourceVersion(ul.GetResourceVersion())
	lm.SetContinue(ul.GetContinue())
	items := make([]runtime.Object, 0, len(ul.Items))
	for i := range ul.Items {
		obj, err := lw.g.decode(lw.k, &ul.Items[i])
		if err != nil {
			lw.g.report(lw.k, obj, err)
			continue
		}
		items = append(items, obj)
	}
	if err := meta.SetList(list, items); err != nil {
		return nil, fmt.Errorf("filling the %s: %w", listGVK.Kind, err)
	}
	return list, nil
}

func (lw *listerWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := lw.g.dyn.Resource(lw.k.gvr).Watch(ctx, opts)
	if err != nil {
		return nil, err
	}
	// An object that stops decoding is deleted from the informer's view;
	// one that decodes again comes back as an ordinary update.
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok || ev.Type == watch.Error {
			return ev, true
		}
		obj, err := lw.g.decode(lw.k, u)
		if err != nil && ev.Type != watch.Bookmark && ev.Type != watch.Deleted {
			lw.g.report(lw.k, obj, err)
			ev.Type = watch.Deleted
		}
		ev.Object = obj
		return ev, true
	}), nil
}
