// Package apply keeps objects in the shape the operator wants with
// server-side apply, and skips the request when the live object already has
// that shape, so that reconciling an unchanged cluster writes nothing.
package apply

import (
	"context"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// Result says what Ensure did.
type Result string

const (
	Unchanged Result = "unchanged"
	Created   Result = "created"
	Updated   Result = "updated"
)

// Applier applies objects under one field manager.
type Applier struct {
	Client     client.Client
	FieldOwner string
}

// Ensure makes the object named by desired hold every field desired sets,
// owned by owner. desired must carry its TypeMeta.
func (a Applier) Ensure(ctx context.Context, owner, desired client.Object) (Result, error) {
	kind := desired.GetObjectKind().GroupVersionKind()
	if err := controllerutil.SetControllerReference(owner, desired, a.Client.Scheme()); err != nil {
		return "", fmt.Errorf("setting owner of %s %s: %w", kind.Kind, desired.GetName(), err)
	}
	want, err := toMap(desired)
	if err != nil {
		return "", fmt.Errorf("converting %s %s: %w", kind.Kind, desired.GetName(), err)
	}

	live, err := a.Client.Scheme().New(kind)
	if err != nil {
		return "", fmt.Errorf("making an empty %s: %w", kind, err)
	}
	liveObj, ok := live.(client.Object)
	if !ok {
		return "", fmt.Errorf("%s is not a client.Object", kind)
	}
	result := Updated
	switch err := a.Client.Get(ctx, client.ObjectKeyFromObject(desired), liveObj); {
	case apierrors.IsNotFound(err):
		result = Created
	case err != nil:
		return "", fmt.Errorf("reading %s %s: %w", kind.Kind, desired.GetName(), err)
	default:
		have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(liveObj)
		if err != nil {
			return "", fmt.Errorf("converting live %s %s: %w", kind.Kind, desired.GetName(), err)
		}
		if Contains(have, want) {
			return Unchanged, nil
		}
	}

	u := &unstructured.Unstructured{Object: want}
	u.SetGroupVersionKind(kind)
	if err := a.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(a.FieldOwner), client.ForceOwnership); err != nil {
		return "", fmt.Errorf("applying %s %s: %w", kind.Kind, desired.GetName(), err)
	}
	return result, nil
}

// GVK fills in an object's TypeMeta from the scheme, for builders' callers
// that hold typed objects without it.
func GVK(obj client.Object, scheme *runtime.Scheme) error {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return err
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return nil
}

// toMap turns a typed object into the map to apply: without status, which
// the main resource ignores, and without null fields, which a typed struct
// writes for every unset pointer-free zero such as creationTimestamp.
func toMap(obj client.Object) (map[string]any, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	return dropNulls(m).(map[string]any), nil
}

func dropNulls(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				delete(v, k)
				continue
			}
			v[k] = dropNulls(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = dropNulls(e)
		}
		return v
	default:
		return v
	}
}

// Contains reports whether have holds every field want sets, with the same
// value. Fields the API server defaulted in have are ignored; lists must
// match element by element.
func Contains(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok && !isEmpty(wv) {
				return false
			}
			if ok && !Contains(hv, wv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		if len(h) != len(w) {
			return false
		}
		for i := range w {
			if !Contains(h[i], w[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(have, want)
	}
}

// isEmpty is true of values the API server drops on the way in, such as {} or [].
func isEmpty(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for _, e := range v {
			if !isEmpty(e) {
				return false
			}
		}
		return true
	case []any:
		return len(v) == 0
	default:
		return false
	}
}
