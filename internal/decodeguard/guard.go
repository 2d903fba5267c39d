package decodeguard

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	kjson "sigs.k8s.io/json"
)

// ReasonUndecodable is the reason of the Event and conditions on an object
// the operator cannot decode.
const ReasonUndecodable = "Undecodable"

// Guard decodes the kinds it guards one object at a time.
type Guard struct {
	dyn    dynamic.Interface
	scheme *runtime.Scheme
	kinds  map[reflect.Type]guarded

	mu       sync.Mutex
	recorder events.EventRecorder
	reported map[types.UID]string // the error last reported for each object
}

type guarded struct {
	gvk        schema.GroupVersionKind
	gvr        schema.GroupVersionResource
	conditions []metav1.Condition
}

// New makes a guard that reaches the API server with cfg.
func New(cfg *rest.Config, scheme *runtime.Scheme) (*Guard, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the dynamic client: %w", err)
	}
	return &Guard{dyn: dyn, scheme: scheme, kinds: map[reflect.Type]guarded{}, reported: map[types.UID]string{}}, nil
}

// Guard puts obj's kind under the guard. An undecodable object of the kind
// gets conditions (their reason and message are filled in) written to its
// status, replacing the ones it had: give none for a kind whose status has
// no conditions.
func (g *Guard) Guard(obj runtime.Object, conditions ...metav1.Condition) error {
	gvks, _, err := g.scheme.ObjectKinds(obj)
	if err != nil {
		return fmt.Errorf("guarding %T: %w", obj, err)
	}
	gvr, _ := meta.UnsafeGuessKindToResource(gvks[0])
	g.kinds[reflect.TypeOf(obj)] = guarded{gvk: gvks[0], gvr: gvr, conditions: conditions}
	return nil
}

// UseRecorder sets where reports go as Events; until then they are only
// written to the objects' status.
func (g *Guard) UseRecorder(r events.EventRecorder) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.recorder = r
}

// NewInformer is the controller-runtime cache's informer constructor: for a
// guarded kind it swaps the typed ListerWatcher for the guard's own.
//
// The cache narrows its ListerWatcher to the namespaces and selectors it was
// given; the guard's lists and watches every namespace, which is what the
// operator caches for the kinds it guards.
func (g *Guard) NewInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, idx toolscache.Indexers) toolscache.SharedIndexInformer {
	if k, ok := g.kinds[reflect.TypeOf(obj)]; ok {
		lw = &listerWatcher{g: g, k: k}
	}
	return toolscache.NewSharedIndexInformer(lw, obj, resync, idx)
}

// decode turns one object into its typed form; on failure it returns a
// typed object carrying only the metadata, and the error.
func (g *Guard) decode(k guarded, u *unstructured.Unstructured) (runtime.Object, error) {
	obj, err := g.scheme.New(k.gvk)
	if err != nil {
		return nil, fmt.Errorf("making a %s: %w", k.gvk.Kind, err)
	}
	raw, err := u.MarshalJSON()
	if err == nil {
		// The API client's own decoder: what fails here fails there.
		err = kjson.UnmarshalCaseSensitivePreserveInts(raw, obj)
	}
	if err == nil {
		g.forget(u.GetUID())
		return obj, nil
	}
	bare, _ := g.scheme.New(k.gvk)
	m, _ := meta.Accessor(bare)
	m.SetName(u.GetName())
	m.SetNamespace(u.GetNamespace())
	m.SetUID(u.GetUID())
	m.SetResourceVersion(u.GetResourceVersion())
	m.SetGeneration(u.GetGeneration())
	m.SetAnnotations(u.GetAnnotations())
	bare.GetObjectKind().SetGroupVersionKind(k.gvk)
	return bare, err
}

func (g *Guard) forget(uid types.UID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.reported, uid)
}

// report tells the object's owner once per distinct error, away from the
// informer's goroutine.
func (g *Guard) report(k guarded, obj runtime.Object, err error) {
	m, _ := meta.Accessor(obj)
	msg := fmt.Sprintf("the operator cannot read this %s, so it does not manage it until it is fixed: %v", k.gvk.Kind, err)
	g.mu.Lock()
	if g.reported[m.GetUID()] == msg {
		g.mu.Unlock()
		return
	}
	g.reported[m.GetUID()] = msg
	rec := g.recorder
	g.mu.Unlock()
	log := logf.Log.WithName("decodeguard").WithValues("kind", k.gvk.Kind, "namespace", m.GetNamespace(), "name", m.GetName())
	log.Error(err, "leaving out an object the operator cannot decode")
	go func() {
		if rec != nil {
			rec.Eventf(obj, nil, corev1.EventTypeWarning, ReasonUndecodable, "Decode", "%s", msg)
		}
		if len(k.conditions) == 0 {
			return
		}
		if perr := g.patchConditions(k, m, msg); perr != nil {
			log.Error(perr, "writing the Undecodable condition")
		}
	}()
}

// patchConditions replaces the object's conditions: they are the part of
// its status that every reader looks at, and a merge patch cannot make an
// object any less decodable than it was.
func (g *Guard) patchConditions(k guarded, m metav1.Object, msg string) error {
	now := metav1.Now()
	conds := make([]metav1.Condition, len(k.conditions))
	for i, c := range k.conditions {
		c.Reason, c.Message, c.LastTransitionTime, c.ObservedGeneration = ReasonUndecodable, msg, now, m.GetGeneration()
		conds[i] = c
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = g.dyn.Resource(k.gvr).Namespace(m.GetNamespace()).Patch(ctx, m.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}
