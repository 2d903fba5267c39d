package cli

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

// operatorSelector finds the operator's pods: the name label both installs
// give them (config/default, and the chart's holdfast.selectorLabels).
var operatorSelector = client.MatchingLabels{resources.LabelName: "holdfast-operator"}

func newReportCmd() *cobra.Command {
	var (
		flags             clusterFlags
		file              string
		operatorNamespace string
	)
	cmd := &cobra.Command{
		Use:   "report CLUSTER [-f FILE]",
		Short: "Write a support bundle of a cluster: its objects, events and logs, and the operator's logs",
		Long: `report writes a tar.gz to attach to a bug report. It holds the PostgresCluster (spec and status),
its pods, StatefulSet, Services, claims, Backups and BackupSchedules, the Events about them, the
logs of every container of each instance pod (and of the run before, after a restart), and the
operator's logs. The cluster's Secrets are in it only as names, types, keys and the length of
each value: never a value.

A part that cannot be read (no permission to read the operator's logs, say) is named in the
bundle's ERRORS.txt, and the rest is written.`,
		Example: `  holdfast report mydb
  holdfast report mydb -n prod -f /tmp/mydb.tar.gz --operator-namespace holdfast`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := flags.connectKube()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), flags.timeout)
			defer cancel()
			now := time.Now()
			if file == "" {
				file = reportName(args[0], now) + ".tar.gz"
			}
			f, err := os.Create(file)
			if err != nil {
				return err
			}
			req := reportRequest{namespace: k.namespace, cluster: args[0], operatorNamespace: operatorNamespace, now: now}
			sum, err := writeReport(ctx, f, k.client, k.clientset, req)
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("writing %s: %w", file, cerr)
			}
			if err != nil {
				os.Remove(file)
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\n", file, sum)
			return nil
		},
	}
	flags.add(cmd, 5*time.Minute)
	cmd.Flags().StringVarP(&file, "file", "f", "", "the bundle to write (default holdfast-report-CLUSTER-TIME.tar.gz)")
	cmd.Flags().StringVar(&operatorNamespace, "operator-namespace", "holdfast-system", "the namespace the operator runs in")
	return cmd
}

// reportName is the bundle's default name, and the folder in it: the
// cluster and the UTC time, with no colons, which some file systems refuse.
func reportName(cluster string, now time.Time) string {
	return "holdfast-report-" + cluster + "-" + now.UTC().Format("20060102T150405Z")
}

type reportRequest struct {
	namespace, cluster, operatorNamespace string
	now                                   time.Time
}

// reportSummary counts what a bundle holds.
type reportSummary struct {
	cluster                                                     string
	pods, services, claims, backups, schedules, events, secrets int
	statefulSets, logs, operatorPods, operatorLogs, errors      int
}

func (s reportSummary) String() string {
	errs := "nothing missing"
	if s.errors > 0 {
		errs = fmt.Sprintf("missing: %d, see ERRORS.txt", s.errors)
	}
	return fmt.Sprintf("cluster %s with %d pods, %d StatefulSet, %d Services, %d claims, %d Backups, %d BackupSchedules, %d Events, %d Secrets (redacted); %d container logs; %d logs of %d operator pods; %s",
		s.cluster, s.pods, s.statefulSets, s.services, s.claims, s.backups, s.schedules, s.events, s.secrets, s.logs, s.operatorLogs, s.operatorPods, errs)
}

// bundle writes files under one folder of a tar.gz, and notes the parts
// that could not be read.
type bundle struct {
	tw   *tar.Writer
	dir  string
	now  time.Time
	errs []string
}

func (b *bundle) add(name string, data []byte) error {
	hdr := &tar.Header{Name: path.Join(b.dir, name), Mode: 0o644, Size: int64(len(data)), ModTime: b.now, Typeflag: tar.TypeReg}
	if err := b.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing %s to the bundle: %w", name, err)
	}
	if _, err := b.tw.Write(data); err != nil {
		return fmt.Errorf("writing %s to the bundle: %w", name, err)
	}
	return nil
}

// missing notes a part that could not be read.
func (b *bundle) missing(part string, err error) {
	b.errs = append(b.errs, fmt.Sprintf("%s: %v", part, err))
}

// writeReport writes the bundle of req's cluster to w. Only failing to
// read the cluster itself, or to write, is an error: any other part that
// cannot be read is noted in ERRORS.txt.
func writeReport(ctx context.Context, w io.Writer, c client.Client, cs kubernetes.Interface, req reportRequest) (reportSummary, error) {
	sum := reportSummary{cluster: req.namespace + "/" + req.cluster}
	var pgc holdfastv1.PostgresCluster
	if err := c.Get(ctx, client.ObjectKey{Namespace: req.namespace, Name: req.cluster}, &pgc); err != nil {
		return sum, fmt.Errorf("reading cluster %s: %w", sum.cluster, err)
	}
	gz := gzip.NewWriter(w)
	b := &bundle{tw: tar.NewWriter(gz), dir: reportName(req.cluster, req.now), now: req.now}
	r := &reporter{c: c, cs: cs, b: b, pgc: &pgc, req: req, ours: objectSet{}}
	if err := r.write(ctx, &sum); err != nil {
		return sum, err
	}
	if err := b.tw.Close(); err != nil {
		return sum, fmt.Errorf("writing the bundle: %w", err)
	}
	if err := gz.Close(); err != nil {
		return sum, fmt.Errorf("writing the bundle: %w", err)
	}
	return sum, nil
}

// reporter gathers one bundle.
type reporter struct {
	c   client.Client
	cs  kubernetes.Interface
	b   *bundle
	pgc *holdfastv1.PostgresCluster
	req reportRequest
	// ours are the objects in the bundle, whose Events go in too.
	ours objectSet
}

func (r *reporter) write(ctx context.Context, sum *reportSummary) error {
	ns, sel := r.req.namespace, client.MatchingLabels{resources.LabelCluster: r.pgc.Name}
	if err := r.object("cluster.yaml", r.pgc); err != nil {
		return err
	}

	var pods corev1.PodList
	if err := r.list(ctx, "pods.yaml", &pods, client.InNamespace(ns), sel); err != nil {
		return err
	}
	sum.pods = len(pods.Items)

	var sts appsv1.StatefulSet
	switch err := r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: resources.StatefulSetName(r.pgc)}, &sts); {
	case err != nil:
		r.b.missing("statefulset.yaml", err)
	default:
		if err := r.object("statefulset.yaml", &sts); err != nil {
			return err
		}
		sum.statefulSets = 1
	}

	var services corev1.ServiceList
	if err := r.list(ctx, "services.yaml", &services, client.InNamespace(ns), sel); err != nil {
		return err
	}
	sum.services = len(services.Items)

	var claims corev1.PersistentVolumeClaimList
	if err := r.list(ctx, "pvcs.yaml", &claims, client.InNamespace(ns), sel); err != nil {
		return err
	}
	sum.claims = len(claims.Items)

	var backups holdfastv1.BackupList
	if err := r.c.List(ctx, &backups, client.InNamespace(ns)); err != nil {
		r.b.missing("backups.yaml", err)
	} else {
		backups.Items = slices.DeleteFunc(backups.Items, func(x holdfastv1.Backup) bool { return x.Spec.Cluster.Name != r.pgc.Name })
		if err := r.objects("backups.yaml", itemPointers(backups.Items)...); err != nil {
			return err
		}
		sum.backups = len(backups.Items)
	}
	var schedules holdfastv1.BackupScheduleList
	if err := r.c.List(ctx, &schedules, client.InNamespace(ns)); err != nil {
		r.b.missing("backupschedules.yaml", err)
	} else {
		schedules.Items = slices.DeleteFunc(schedules.Items, func(x holdfastv1.BackupSchedule) bool { return x.Spec.Cluster.Name != r.pgc.Name })
		if err := r.objects("backupschedules.yaml", itemPointers(schedules.Items)...); err != nil {
			return err
		}
		sum.schedules = len(schedules.Items)
	}

	n, err := r.secrets(ctx)
	if err != nil {
		return err
	}
	sum.secrets = n

	// Events last: they are about every object above.
	if sum.events, err = r.events(ctx); err != nil {
		return err
	}

	for i := range pods.Items {
		n, err := r.podLogs(ctx, "logs", &pods.Items[i])
		if err != nil {
			return err
		}
		sum.logs += n
	}

	var operators corev1.PodList
	if err := r.c.List(ctx, &operators, client.InNamespace(r.req.operatorNamespace), operatorSelector); err != nil {
		r.b.missing("operator", fmt.Errorf("listing the operator's pods in %s: %w", r.req.operatorNamespace, err))
	} else if len(operators.Items) == 0 {
		r.b.missing("operator", fmt.Errorf("no pods labelled %s=%s in namespace %s (--operator-namespace)",
			resources.LabelName, operatorSelector[resources.LabelName], r.req.operatorNamespace))
	}
	sum.operatorPods = len(operators.Items)
	for i := range operators.Items {
		n, err := r.podLogs(ctx, "operator", &operators.Items[i])
		if err != nil {
			return err
		}
		sum.operatorLogs += n
	}

	sum.errors = len(r.b.errs)
	if len(r.b.errs) > 0 {
		if err := r.b.add("ERRORS.txt", []byte(strings.Join(r.b.errs, "\n")+"\n")); err != nil {
			return err
		}
	}
	about := fmt.Sprintf("holdfast report %s\nwritten %s by holdfast %s\n%s\n",
		sum.cluster, r.req.now.UTC().Format(time.RFC3339), Version, sum)
	return r.b.add("report.txt", []byte(about))
}

// list lists objects into name, or notes why it could not.
func (r *reporter) list(ctx context.Context, name string, list client.ObjectList, opts ...client.ListOption) error {
	if err := r.c.List(ctx, list, opts...); err != nil {
		r.b.missing(name, err)
		return nil
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	objs := make([]client.Object, 0, len(items))
	for _, item := range items {
		o, ok := item.(client.Object)
		if !ok {
			return fmt.Errorf("rendering %s: %T is no object", name, item)
		}
		objs = append(objs, o)
	}
	return r.objects(name, objs...)
}

// object writes one object to name as YAML.
func (r *reporter) object(name string, obj client.Object) error {
	o, err := r.render(obj)
	if err != nil {
		return err
	}
	return r.yaml(name, o)
}

// objects writes objs to name as a List kubectl reads.
func (r *reporter) objects(name string, objs ...client.Object) error {
	items := make([]client.Object, 0, len(objs))
	for _, obj := range objs {
		o, err := r.render(obj)
		if err != nil {
			return err
		}
		items = append(items, o)
	}
	return r.yaml(name, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}

// render is obj as kubectl get -o yaml shows it, less its managed
// fields, bookkeeping of no use in a bug report; and it is noted as in
// the bundle, for its Events.
func (r *reporter) render(obj client.Object) (client.Object, error) {
	gvk, err := apiutil.GVKForObject(obj, r.c.Scheme())
	if err != nil {
		return nil, err
	}
	o := obj.DeepCopyObject().(client.Object)
	o.GetObjectKind().SetGroupVersionKind(gvk)
	o.SetManagedFields(nil)
	r.ours.add(gvk.Kind, o.GetName(), o.GetUID())
	return o, nil
}

func (r *reporter) yaml(name string, doc any) error {
	data, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("rendering %s: %w", name, err)
	}
	return r.b.add(name, data)
}

func itemPointers[T any, P interface {
	*T
	client.Object
}](items []T) []client.Object {
	objs := make([]client.Object, len(items))
	for i := range items {
		objs[i] = P(&items[i])
	}
	return objs
}

// redactedSecret is all a bundle tells of a Secret: never a value.
type redactedSecret struct {
	Name    string            `json:"name"`
	Type    corev1.SecretType `json:"type"`
	Created time.Time         `json:"created"`
	// Keys maps each key to the length of its value, in bytes.
	Keys map[string]int `json:"keys"`
}

// secrets writes secrets.yaml: the cluster's Secrets (labelled with it,
// or named by it or after it), redacted.
func (r *reporter) secrets(ctx context.Context) (int, error) {
	var list corev1.SecretList
	if err := r.c.List(ctx, &list, client.InNamespace(r.req.namespace), client.MatchingLabels{resources.LabelCluster: r.pgc.Name}); err != nil {
		r.b.missing("secrets.yaml", err)
	}
	found := map[string]*corev1.Secret{}
	for i := range list.Items {
		found[list.Items[i].Name] = &list.Items[i]
	}
	for _, name := range clusterSecretNames(r.pgc) {
		if found[name] != nil {
			continue
		}
		var s corev1.Secret
		switch err := r.c.Get(ctx, client.ObjectKey{Namespace: r.req.namespace, Name: name}, &s); {
		case apierrors.IsNotFound(err):
			// Not every cluster has every one: no backup, no restore.
		case err != nil:
			r.b.missing("secrets.yaml: "+name, err)
		default:
			found[name] = &s
		}
	}
	out := make([]redactedSecret, 0, len(found))
	for _, s := range found {
		out = append(out, redact(s))
		r.ours.add("Secret", s.Name, s.UID)
	}
	slices.SortFunc(out, func(a, b redactedSecret) int { return strings.Compare(a.Name, b.Name) })
	return len(out), r.yaml("secrets.yaml", map[string]any{"secrets": out})
}

// redact keeps of a Secret its name, type, creation and each key's length.
func redact(s *corev1.Secret) redactedSecret {
	keys := map[string]int{}
	for k, v := range s.Data {
		keys[k] = len(v)
	}
	for k, v := range s.StringData {
		keys[k] = len(v)
	}
	return redactedSecret{Name: s.Name, Type: s.Type, Created: s.CreationTimestamp.UTC(), Keys: keys}
}

// clusterSecretNames are the Secrets the cluster names or is given.
func clusterSecretNames(c *holdfastv1.PostgresCluster) []string {
	names := []string{
		resources.SecretSuperuserName(c), resources.SecretAppName(c), resources.SecretReplicationName(c),
		resources.SecretCAName(c), resources.SecretServerTLSName(c), resources.SecretReplicationTLSName(c),
		resources.SecretRestoreRepositoryName(c),
	}
	if b := c.Spec.Backup; b != nil && b.Repository.S3 != nil {
		names = append(names, b.Repository.S3.CredentialsSecret)
	}
	if t := c.Spec.Certificates; t != nil {
		names = append(names, t.ServerTLSSecret, t.ServerCASecret)
	}
	return slices.DeleteFunc(names, func(n string) bool { return n == "" })
}

// events writes events.yaml: the namespace's Events about the objects in
// the bundle, and about the cluster's pods and claims gone since, oldest
// first.
func (r *reporter) events(ctx context.Context) (int, error) {
	var list corev1.EventList
	if err := r.c.List(ctx, &list, client.InNamespace(r.req.namespace)); err != nil {
		r.b.missing("events.yaml", err)
		return 0, nil
	}
	instance := regexp.MustCompile(`^(` + resources.VolumeData + `-)?` + regexp.QuoteMeta(r.pgc.Name) + `-[0-9]+$`)
	events := slices.DeleteFunc(list.Items, func(e corev1.Event) bool {
		o := e.InvolvedObject
		pastInstance := (o.Kind == "Pod" || o.Kind == "PersistentVolumeClaim") && instance.MatchString(o.Name)
		return !r.ours.has(o.Kind, o.Name, o.UID) && !pastInstance
	})
	slices.SortStableFunc(events, func(a, b corev1.Event) int { return eventTime(&a).Compare(eventTime(&b)) })
	return len(events), r.objects("events.yaml", itemPointers(events)...)
}

// eventTime is when an Event last happened, whichever field says it.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		// A repeated Event of events.k8s.io keeps its first time in EventTime.
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// podLogs writes under folder/<pod>/ the log of each container of pod
// that has started, and of its run before when it restarted.
func (r *reporter) podLogs(ctx context.Context, folder string, pod *corev1.Pod) (int, error) {
	statuses := append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...)
	n := 0
	for _, s := range statuses {
		runs := []bool{}
		if s.State.Running != nil || s.State.Terminated != nil {
			runs = append(runs, false)
		}
		if s.LastTerminationState.Terminated != nil {
			runs = append(runs, true)
		}
		for _, previous := range runs {
			name := path.Join(folder, pod.Name, s.Name+".log")
			if previous {
				name = path.Join(folder, pod.Name, s.Name+".previous.log")
			}
			// Whole, in memory: the kubelet rotates a container's log at
			// 10 MiB by default.
			data, err := r.cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: s.Name, Previous: previous}).DoRaw(ctx)
			if err != nil {
				r.b.missing(name, err)
				continue
			}
			if err := r.b.add(name, data); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// objectSet holds objects by kind and name, and by UID.
type objectSet map[string]bool

func (s objectSet) add(kind, name string, uid types.UID) {
	s[kind+"/"+name] = true
	if uid != "" {
		s["uid/"+string(uid)] = true
	}
}

func (s objectSet) has(kind, name string, uid types.UID) bool {
	return s[kind+"/"+name] || uid != "" && s["uid/"+string(uid)]
}
