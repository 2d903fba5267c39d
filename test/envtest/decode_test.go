package envtest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/decodeguard"
)

// Values tried at each leaf of a schema, by the leaf's kind. Some are meant
// to be refused; the test only asks that whatever is admitted decodes.
var (
	timeValues = []any{
		"2026-12-02T15:58:47Z", "2026-12-02T15:58:47.5Z", "2026-12-02T15:58:47.123456Z",
		"2026-12-02T15:58:47.123456789Z", "2026-12-02T15:58:47.1234567891234Z", "2026-12-02T15:58:47+01:00",
		"2026-12-02T15:58:47.123-05:30", "2026-12-02t15:58:47z", "2026-12-02T15:58:47", "2026-12-02T15:58:47,5Z",
		"2026-12-02T15:58:47x5Z", "2026-12-02T24:00:00Z", "2026-12-02T15:58:60Z", "2026-12-02T15:58:47+24:00",
		"2026-12-02T15:58:47-23:59", "2026-12-02 15:58:47Z", "2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z",
	}
	quantityValues = []any{
		"1", "1Gi", "1.5Gi", "100m", "1e3", "1E3", "+1Gi", "-1", "0", ".5", "5.", "1e400", "9999999999999999999999999Ei",
		"1 Gi", "0x10", int64(1), 1.5,
	}
	// 3, 6, 15 and 80 fit fields whose bounds and rules admit little else:
	// instances above the fixture's quorum, leaseDurationSeconds with the
	// other failover defaults, postgresVersion, autoGrow's thresholdPercent.
	integerValues = []any{int64(0), int64(1), int64(-1), int64(3), int64(6), int64(15), int64(80), int64(2147483647),
		int64(2147483648), int64(-2147483649), int64(9007199254740993), 1.0, 1e3}
	// The last four fit patterned fields: an S3 endpoint, a cron
	// schedule, an LSN, and a role's name other than "a" (which the
	// fixture declares, so it cannot be the bootstrap owner).
	stringValues = []any{"30d", "168h", "1h30m", "2026-12-02T15:58:47Z", "a", "1Gi",
		"https://s3.example.com", "0 * * * *", "0/3000060", "b_1"}
)

// exempt are leaves of Kubernetes' own types whose admitted values their
// own Go types cannot all read. metav1.Condition's lastTransitionTime is
// date-time with no narrower rule (a lower-case t passes), and its type
// is not ours to change: the decode guard covers it, and
// TestAnUndecodableObjectBlindsNothing uses exactly that value.
var exempt = regexp.MustCompile(`^status\.conditions\.\[\]\.lastTransitionTime$`)

// TestEveryAdmittedValueDecodes walks every field of every CRD Holdfast
// installs and, for each value the API server admits there, decodes the
// API server's answer the way the operator's typed client does. One
// object that does not decode stops the operator's informer from listing
// its kind at all; a new field whose Go type reads less than its schema
// admits fails here.
func TestEveryAdmittedValueDecodes(t *testing.T) {
	ns := newNamespace(t)
	codecs := serializer.NewCodecFactory(scheme)
	httpClient, err := rest.HTTPClientFor(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	fixtures := map[string]map[string]any{
		"PostgresCluster": {"spec": map[string]any{
			"instances": int64(3), "postgresVersion": int64(15),
			"storage":     map[string]any{"size": "1Gi", "autoGrow": map[string]any{"maxSize": "3Gi"}},
			"synchronous": map[string]any{"quorum": int64(1)},
			"backup": map[string]any{"repository": map[string]any{"s3": map[string]any{
				"endpoint": "https://s3.example.com", "bucket": "holdfast", "credentialsSecret": "s3"}}},
			"bootstrap": map[string]any{"restore": map[string]any{"backup": map[string]any{"name": "b"}}},
			// A role that may have a password and memberships, and one
			// that may own a database, tried as "a".
			"roles": []any{
				map[string]any{"name": "r", "login": true, "passwordSecret": map[string]any{"name": "pw"}, "inRoles": []any{"pg_monitor"}},
				map[string]any{"name": "a"},
			},
			"databases": []any{map[string]any{"name": "shop", "owner": "postgres"}},
		}},
		"Backup":         {"spec": map[string]any{"cluster": map[string]any{"name": "demo"}}},
		"BackupSchedule": {"spec": map[string]any{"cluster": map[string]any{"name": "demo"}, "schedule": "0 * * * *"}},
	}

	files, err := filepath.Glob(filepath.Join(repoDir, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs found: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(raw, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		kind := crd.Spec.Names.Kind
		t.Run(kind, func(t *testing.T) {
			fixture, ok := fixtures[kind]
			if !ok {
				t.Fatalf("no fixture for %s: add one, so that its fields are tried", kind)
			}
			v := crd.Spec.Versions[0]
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: kind}
			rc, err := apiutil.RESTClientForGVK(gvk, false, false, cp.Config, codecs, httpClient)
			if err != nil {
				t.Fatal(err)
			}
			d := decoder{t: t, rc: rc, ns: ns, resource: crd.Spec.Names.Plural, gvk: gvk, root: v.Schema.OpenAPIV3Schema}
			base := d.object("decode-base", fixture)
			if err := d.create(base, false); err != nil {
				t.Fatalf("creating the fixture %s: %v", kind, err)
			}
			var leaves int
			walk(*v.Schema.OpenAPIV3Schema, nil, func(path []string, s apiextv1.JSONSchemaProps) {
				name := strings.Join(path, ".")
				values, needed := leafValues(s)
				if len(path) == 0 || (path[0] != "spec" && path[0] != "status") || exempt.MatchString(name) || values == nil {
					return
				}
				leaves++
				admitted := 0
				for i, val := range values {
					var err error
					if path[0] == "spec" {
						obj := d.object(fmt.Sprintf("decode-%d", i), fixture)
						d.put(obj, path, val)
						err = d.create(obj, true)
					} else {
						patch := map[string]any{}
						d.put(patch, path, val)
						err = d.patchStatus("decode-base", patch)
					}
					switch {
					case err == nil:
						admitted++
					case !isRefusal(err):
						t.Errorf("%s = %#v was admitted but does not decode: %v", name, val, err)
					}
				}
				if needed && admitted == 0 {
					t.Errorf("no value tried at %s was admitted, so this test cannot tell whether that field decodes: make the fixture fit", name)
				}
			})
			t.Logf("%d leaves tried", leaves)
		})
	}
}

// decoder makes objects of one kind and sends them through the API server.
type decoder struct {
	t        *testing.T
	rc       rest.Interface
	ns       string
	resource string
	gvk      schema.GroupVersionKind
	root     *apiextv1.JSONSchemaProps
}

// object is a fresh copy of the fixture, named.
func (d *decoder) object(name string, fixture map[string]any) map[string]any {
	obj := runtime.DeepCopyJSON(fixture)
	obj["apiVersion"] = d.gvk.GroupVersion().String()
	obj["kind"] = d.gvk.Kind
	obj["metadata"] = map[string]any{"name": name, "namespace": d.ns}
	return obj
}

// put sets the leaf at path to val, making what lies on the way with the
// fields its schema requires.
func (d *decoder) put(obj map[string]any, path []string, val any) {
	out := with(obj, *d.root, path, val).(map[string]any)
	maps.Copy(obj, out)
}

func with(cur any, s apiextv1.JSONSchemaProps, path []string, val any) any {
	if len(path) == 0 {
		return val
	}
	switch seg := path[0]; seg {
	case "[]":
		items := *s.Items.Schema
		var elem any
		if arr, ok := cur.([]any); ok && len(arr) > 0 {
			elem = arr[0]
		} else {
			elem = sample(items)
		}
		return []any{with(elem, items, path[1:], val)}
	default:
		m, ok := cur.(map[string]any)
		if !ok {
			m, _ = sample(s).(map[string]any)
		}
		m = maps.Clone(m)
		key, ps := seg, s.Properties[seg]
		if seg == "{}" {
			key, ps = "k", *s.AdditionalProperties.Schema
		}
		m[key] = with(m[key], ps, path[1:], val)
		return m
	}
}

// sample is a value that fits a schema, with an object's required fields.
func sample(s apiextv1.JSONSchemaProps) any {
	if len(s.Enum) > 0 {
		var v any
		_ = json.Unmarshal(s.Enum[0].Raw, &v)
		return v
	}
	if s.XIntOrString {
		return "1"
	}
	switch s.Type {
	case "array":
		if s.MinItems != nil && *s.MinItems > 0 {
			return []any{sample(*s.Items.Schema)}
		}
		return []any{}
	case "integer":
		if s.Minimum != nil && *s.Minimum > 1 {
			return int64(*s.Minimum)
		}
		return int64(1)
	case "number":
		return 1.0
	case "boolean":
		return true
	case "string":
		if s.Format == "date-time" {
			return "2026-12-02T15:58:47.000000Z" // fits a MicroTime too
		}
		for _, c := range []string{"a", "app", "1Gi", "0/5000138", "https://s3.example.com", "0 * * * *", "UTC", "30d"} {
			if (s.Pattern == "" || regexp.MustCompile(s.Pattern).MatchString(c)) && (s.MinLength == nil || int64(len(c)) >= *s.MinLength) {
				return c
			}
		}
		return "a"
	}
	m := map[string]any{}
	for _, r := range s.Required {
		m[r] = sample(s.Properties[r])
	}
	return m
}

// create sends obj to the API server (as a dry run when asked) and decodes
// its answer as the operator's typed client does.
func (d *decoder) create(obj map[string]any, dryRun bool) error {
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	req := d.rc.Post().Namespace(d.ns).Resource(d.resource).SetHeader("Content-Type", "application/json").Body(body)
	if dryRun {
		req = req.Param("dryRun", "All")
	}
	into, _ := scheme.New(d.gvk)
	return req.Do(d.t.Context()).Into(into)
}

// patchStatus merge-patches the status of the named object, as a dry run,
// and decodes the answer.
func (d *decoder) patchStatus(name string, patch map[string]any) error {
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	into, _ := scheme.New(d.gvk)
	return d.rc.Patch(types.MergePatchType).Namespace(d.ns).Resource(d.resource).Name(name).SubResource("status").
		Param("dryRun", "All").Body(body).Do(d.t.Context()).Into(into)
}

// isRefusal: the API server said no. Anything else after admission is the
// client failing to read what the server stored.
func isRefusal(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}

// walk visits every node of a schema with its path; array items are "[]"
// and map values "{}".
func walk(s apiextv1.JSONSchemaProps, path []string, visit func([]string, apiextv1.JSONSchemaProps)) {
	visit(path, s)
	for _, k := range slices.Sorted(maps.Keys(s.Properties)) {
		walk(s.Properties[k], append(slices.Clone(path), k), visit)
	}
	if s.Items != nil && s.Items.Schema != nil {
		walk(*s.Items.Schema, append(slices.Clone(path), "[]"), visit)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		walk(*s.AdditionalProperties.Schema, append(slices.Clone(path), "{}"), visit)
	}
}

// leafValues are the values to try at a node, nil for a node that is not
// a leaf or whose every admitted value its Go type reads (a boolean).
func leafValues(s apiextv1.JSONSchemaProps) (values []any, needed bool) {
	switch {
	case s.Format == "date-time":
		return timeValues, true
	case s.XIntOrString:
		return quantityValues, true
	case len(s.Enum) > 0:
		for _, e := range s.Enum {
			var v any
			_ = json.Unmarshal(e.Raw, &v)
			values = append(values, v)
		}
		return append(values, "x", ""), true
	case s.Type == "integer":
		return integerValues, true
	case s.Type == "string":
		return stringValues, true
	}
	return nil, false
}

// TestAnUndecodableObjectBlindsNothing writes a value the API server admits
// but the operator's types cannot read (a condition time with a lower-case
// t, which metav1.Time refuses) into one cluster's status. Without the
// decode guard, the operator's informer could no longer list any
// PostgresCluster, and the other cluster's scale-up would go unseen.
func TestAnUndecodableObjectBlindsNothing(t *testing.T) {
	ns := newNamespace(t)
	class := storageClass(t, "1Gi")
	for _, name := range []string{"bad", "good"} {
		if err := k8s.Create(t.Context(), newCluster(ns, name, 1, class)); err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
	}
	eventually(t, settle, "both clusters have a status", func(ctx context.Context) error {
		for _, name := range []string{"bad", "good"} {
			c, err := get(ctx, ns, name, &holdfastv1.PostgresCluster{})
			if err != nil {
				return err
			}
			if c.Status.ObservedGeneration == 0 {
				return fmt.Errorf("%s has no status yet", name)
			}
		}
		return nil
	})

	// The admin client is uncached and typed: it too would fail to read
	// the object, so the patch goes in as raw JSON.
	patch := []byte(`{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Odd","message":"written by hand",` +
		`"lastTransitionTime":"2026-12-02t15:58:47z"}]}}`)
	bad := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"}}
	err := k8s.Status().Patch(t.Context(), bad, client.RawPatch(types.MergePatchType, patch))
	if err == nil || isRefusal(err) {
		// The typed client reads the answer back: that must fail to
		// decode, or this test no longer writes an undecodable object.
		t.Fatalf("the API server's answer to the patch decoded or was refused (%v): this test needs another value it admits and the types refuse", err)
	}

	updateSpec(t, ns, "good", func(c *holdfastv1.PostgresCluster) { c.Spec.Instances = 2 })
	eventually(t, settle, "the other cluster scaled to 2", func(ctx context.Context) error {
		sts, err := get(ctx, ns, "good", &appsv1.StatefulSet{})
		if err != nil {
			return err
		}
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 2 {
			return fmt.Errorf("StatefulSet good has %v replicas", sts.Spec.Replicas)
		}
		return nil
	})
	eventually(t, settle, "an Undecodable Event on the bad cluster", func(ctx context.Context) error {
		return wantEvent(ctx, ns, "bad", decodeguard.ReasonUndecodable, "cannot read this PostgresCluster")
	})
	// The guard replaced the conditions it could not read; from then on the
	// operator manages the cluster again.
	eventually(t, settle, "the bad cluster is managed again", func(ctx context.Context) error {
		c, err := get(ctx, ns, "bad", &holdfastv1.PostgresCluster{})
		if err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(c.Status.Conditions, holdfastv1.ConditionProgressing); cond == nil {
			return fmt.Errorf("conditions %+v: the operator has not written its own yet", c.Status.Conditions)
		}
		return nil
	})
}
