// Package apply keeps objects in the shape the operator wants with
// server-side apply, and skips the request when the live object already has
// that shape, so that reconciling an unchanged cluster writes nothing.
package apply

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
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

// Change is one object Ensure found out of shape.
type Change struct {
	Object client.Object
	Result Result
}

// Ensure makes each object named in desired hold every field it sets, owned
// by owner. Objects already in shape cost no write. The changes are first
// applied as a dry run, and applied for real only if the API server accepts
// every one of them, so that a bad spec leaves nothing half-applied. Every
// object must carry its TypeMeta.
func (a Applier) Ensure(ctx context.Context, owner client.Object, desired ...client.Object) ([]Change, error) {
	type pending struct {
		change Change
		u      *unstructured.Unstructured
	}
	var todo []pending
	for _, d := range desired {
		res, u, err := a.diff(ctx, owner, d)
		if err != nil {
			return nil, err
		}
		if res != Unchanged {
			todo = append(todo, pending{Change{d, res}, u})
		}
	}
	for _, dryRun := range []bool{true, false} {
		for _, p := range todo {
			opts := []client.ApplyOption{client.FieldOwner(a.FieldOwner), client.ForceOwnership}
			if dryRun {
				opts = append(opts, client.DryRunAll)
			}
			if err := a.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(p.u.DeepCopy()), opts...); err != nil {
				return nil, fmt.Errorf("applying %s %s: %w", p.u.GetKind(), p.u.GetName(), err)
			}
		}
	}
	changes := make([]Change, len(todo))
	for i, p := range todo {
		changes[i] = p.change
	}
	return changes, nil
}

// diff tells whether desired needs applying, and returns what to apply.
func (a Applier) diff(ctx context.Context, owner, desired client.Object) (Result, *unstructured.Unstructured, error) {
	kind := desired.GetObjectKind().GroupVersionKind()
	if err := controllerutil.SetControllerReference(owner, desired, a.Client.Scheme()); err != nil {
		return "", nil, fmt.Errorf("setting owner of %s %s: %w", kind.Kind, desired.GetName(), err)
	}
	want, err := toMap(desired)
	if err != nil {
		return "", nil, fmt.Errorf("converting %s %s: %w", kind.Kind, desired.GetName(), err)
	}
	u := &unstructured.Unstructured{Object: want}
	u.SetGroupVersionKind(kind)

	live, err := a.Client.Scheme().New(kind)
	if err != nil {
		return "", nil, fmt.Errorf("making an empty %s: %w", kind, err)
	}
	liveObj, ok := live.(client.Object)
	if !ok {
		return "", nil, fmt.Errorf("%s is not a client.Object", kind)
	}
	switch err := a.Client.Get(ctx, client.ObjectKeyFromObject(desired), liveObj); {
	case apierrors.IsNotFound(err):
		return Created, u, nil
	case err != nil:
		return "", nil, fmt.Errorf("reading %s %s: %w", kind.Kind, desired.GetName(), err)
	}
	// Typed reads come back without their TypeMeta.
	liveObj.GetObjectKind().SetGroupVersionKind(kind)
	have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(liveObj)
	if err != nil {
		return "", nil, fmt.Errorf("converting live %s %s: %w", kind.Kind, desired.GetName(), err)
	}
	diff := Difference(have, want)
	if diff == "" {
		return Unchanged, nil, nil
	}
	log.FromContext(ctx).V(1).Info("out of shape", "kind", kind.Kind, "name", desired.GetName(), "field", diff)
	return Updated, u, nil
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
	return Difference(have, want) == ""
}

// Difference names the first field want sets that have lacks or holds
// with another value, or returns "" when have contains want.
func Difference(have, want any) string {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			if len(w) == 0 && have == nil {
				return ""
			}
			return "."
		}
		for _, k := range slices.Sorted(maps.Keys(w)) {
			hv, ok := h[k]
			if !ok {
				if isEmpty(w[k]) {
					continue
				}
				return "." + k
			}
			if d := Difference(hv, w[k]); d != "" {
				return "." + k + strings.TrimSuffix(d, ".")
			}
		}
		return ""
	case []any:
		h, ok := have.([]any)
		if !ok {
			if len(w) == 0 && have == nil {
				return ""
			}
			return "."
		}
		if len(h) != len(w) {
			return fmt.Sprintf(" (%d items, want %d)", len(h), len(w))
		}
		for i := range w {
			if d := Difference(h[i], w[i]); d != "" {
				return fmt.Sprintf("[%d]%s", i, strings.TrimSuffix(d, "."))
			}
		}
		return ""
	default:
		if reflect.DeepEqual(have, want) {
			return ""
		}
		return fmt.Sprintf(" (%v, want %v)", have, want)
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

// Refused says whether the API server refused the objects themselves (they
// are invalid): retrying cannot help until what makes them changes.
func Refused(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}
