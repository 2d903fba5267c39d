package envtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

func object(kind, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "holdfast.dev/v1alpha1",
		"kind":       kind,
		"metadata":   map[string]any{"name": name},
		"spec":       spec,
	}}
}

func TestBackupAdmissionRejectsBadSpecs(t *testing.T) {
	ns := newNamespace(t)
	goodSchedule := func() map[string]any {
		return map[string]any{"cluster": map[string]any{"name": "db"}, "schedule": "*/5 * * * *"}
	}
	repo := func(endpoint, bucket string) map[string]any {
		return map[string]any{"repository": map[string]any{"s3": map[string]any{
			"endpoint": endpoint, "bucket": bucket, "credentialsSecret": "s3"}}}
	}
	tests := []struct {
		name string
		obj  *unstructured.Unstructured
		want []string
	}{
		{"backup of no cluster", object("Backup", "b1", map[string]any{}),
			[]string{"spec.cluster", "Required value"}},
		{"backup by an unknown method", object("Backup", "b2", map[string]any{"cluster": map[string]any{"name": "db"}, "method": "rsync"}),
			[]string{"spec.method", `supported values: "logical", "volumeSnapshot", "pgbackrest"`}},
		{"backup with a deadline too short to do anything", object("Backup", "b3", map[string]any{"cluster": map[string]any{"name": "db"}, "deadlineSeconds": int64(5)}),
			[]string{"spec.deadlineSeconds", "greater than or equal to 30"}},
		{"schedule in words", object("BackupSchedule", "s1", func() map[string]any { s := goodSchedule(); s["schedule"] = "every day"; return s }()),
			[]string{"spec.schedule must be five cron fields"}},
		{"schedule with six fields (seconds)", object("BackupSchedule", "s2", func() map[string]any { s := goodSchedule(); s["schedule"] = "0 */5 * * * *"; return s }()),
			[]string{"spec.schedule must be five cron fields"}},
		{"time zone with a space", object("BackupSchedule", "s3", func() map[string]any { s := goodSchedule(); s["timeZone"] = "Europe/Paris now"; return s }()),
			[]string{"spec.timeZone", "should match"}},
		{"empty retention", object("BackupSchedule", "s4", func() map[string]any { s := goodSchedule(); s["retention"] = map[string]any{}; return s }()),
			[]string{"spec.retention needs keepLast or maxAge"}},
		{"retention keeping none", object("BackupSchedule", "s5", func() map[string]any {
			s := goodSchedule()
			s["retention"] = map[string]any{"keepLast": int64(0)}
			return s
		}()), []string{"spec.retention.keepLast", "greater than or equal to 1"}},
		{"schedule name too long for its CronJob", object("BackupSchedule", strings.Repeat("s", 41), goodSchedule()),
			[]string{"metadata.name must be at most 40 characters"}},
	}
	cluster := func(name string, mutate func(u *unstructured.Unstructured)) *unstructured.Unstructured {
		u := goodCluster(name)
		mutate(u)
		return u
	}
	tests = append(tests, []struct {
		name string
		obj  *unstructured.Unstructured
		want []string
	}{
		{"repository over plain HTTP", cluster("c1", func(u *unstructured.Unstructured) {
			set(u, repo("http://s3.example.com", "backups"), "spec", "backup")
		}), []string{"spec.backup.repository.s3.endpoint", "should match"}},
		{"bucket with upper case", cluster("c2", func(u *unstructured.Unstructured) {
			set(u, repo("https://s3.example.com", "Backups"), "spec", "backup")
		}), []string{"spec.backup.repository.s3.bucket", "should match"}},
		{"repository of no kind", cluster("c3", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"repository": map[string]any{}}, "spec", "backup")
		}), []string{"a backup repository needs s3"}},
		{"restore naming no source", cluster("c4", func(u *unstructured.Unstructured) {
			set(u, map[string]any{}, "spec", "bootstrap", "restore")
		}), []string{"spec.bootstrap.restore needs backup"}},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.obj.SetNamespace(ns)
			wantRejected(t, createStrict(t.Context(), tt.obj), tt.want...)
		})
	}

	t.Run("a backup's spec cannot change", func(t *testing.T) {
		b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fixed"},
			Spec: holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: "db"}}}
		if err := k8s.Create(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		// The operator adds its finalizer meanwhile: change the latest version.
		var err error
		eventually(t, settle, "an update that is not a conflict", func(ctx context.Context) error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(b), b); err != nil {
				return err
			}
			b.Spec.Cluster.Name = "other"
			if err = k8s.Update(ctx, b); apierrors.IsConflict(err) {
				return err
			}
			return nil
		})
		wantRejected(t, err, "a Backup's spec cannot change")
	})
}

// backupDone waits until the Backup is done and returns it.
func backupDone(t *testing.T, ns, name string) *holdfastv1.Backup {
	t.Helper()
	var b *holdfastv1.Backup
	eventually(t, settle, "Backup "+name+" is done", func(ctx context.Context) error {
		var err error
		if b, err = get(ctx, ns, name, &holdfastv1.Backup{}); err != nil {
			return err
		}
		if !b.Done() {
			return fmt.Errorf("phase %q: %s", b.Status.Phase, b.Status.Message)
		}
		return nil
	})
	return b
}

func TestBackupsThatCannotRunFailAndSayWhy(t *testing.T) {
	ns := newNamespace(t)
	plain := newCluster(ns, "plain", 1, "standard")
	if err := k8s.Create(t.Context(), plain); err != nil {
		t.Fatal(err)
	}
	withRepo := newCluster(ns, "withrepo", 1, "standard")
	withRepo.Spec.Backup = &holdfastv1.BackupConfig{Repository: holdfastv1.RepositorySpec{S3: &holdfastv1.S3Repository{
		Endpoint: "https://s3.example.com", Bucket: "backups", CredentialsSecret: "s3"}}}
	if err := k8s.Create(t.Context(), withRepo); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cluster string
		method        holdfastv1.BackupMethod
		reason, says  string
	}{
		{"no-cluster", "nowhere", holdfastv1.BackupLogical, holdfastv1.BackupReasonClusterNotFound, "PostgresCluster nowhere does not exist"},
		{"no-repository", "plain", holdfastv1.BackupLogical, holdfastv1.BackupReasonNoRepository, "has no spec.backup.repository"},
		{"snapshot-without-replica", "withrepo", holdfastv1.BackupVolumeSnapshot, holdfastv1.BackupReasonNoInstance, "a volumeSnapshot backup stops a replica"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tt.name},
				Spec: holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: tt.cluster}, Method: tt.method}}
			if err := k8s.Create(t.Context(), b); err != nil {
				t.Fatal(err)
			}
			got := backupDone(t, ns, tt.name)
			if got.Status.Phase != holdfastv1.BackupFailed || got.Status.Reason != tt.reason || !strings.Contains(got.Status.Message, tt.says) {
				t.Errorf("status: %s %s %q; want Failed %s saying %q", got.Status.Phase, got.Status.Reason, got.Status.Message, tt.reason, tt.says)
			}
			if got.Status.StoppedAt == nil {
				t.Error("a failed backup has no stoppedAt")
			}
			eventually(t, settle, "a Warning Event says why", func(ctx context.Context) error {
				return wantEvent(ctx, ns, tt.name, tt.reason, tt.says)
			})
			// A failed Backup, its files never written, is deleted at once.
			if err := k8s.Delete(t.Context(), got); err != nil {
				t.Fatal(err)
			}
			eventually(t, settle, "the failed Backup is deleted", func(ctx context.Context) error {
				if _, err := get(ctx, ns, tt.name, &holdfastv1.Backup{}); !apierrors.IsNotFound(err) {
					return fmt.Errorf("still there (%v)", err)
				}
				return nil
			})
		})
	}
	t.Run("a backup that cannot start times out", func(t *testing.T) {
		// withrepo's one instance never becomes ready here (no node runs it).
		b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "stuck"},
			Spec: holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: "withrepo"}, DeadlineSeconds: 30}}
		if err := k8s.Create(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, "it waits, saying why", func(ctx context.Context) error {
			got, err := get(ctx, ns, "stuck", &holdfastv1.Backup{})
			if err != nil {
				return err
			}
			if got.Status.Phase != holdfastv1.BackupPending || !strings.Contains(got.Status.Message, "no instance of the cluster is ready") {
				return fmt.Errorf("status %s %q", got.Status.Phase, got.Status.Message)
			}
			return nil
		})
		var got *holdfastv1.Backup
		eventually(t, time.Minute, "Failed past its deadline", func(ctx context.Context) error {
			var err error
			if got, err = get(ctx, ns, "stuck", &holdfastv1.Backup{}); err != nil {
				return err
			}
			if !got.Done() {
				return fmt.Errorf("phase %s", got.Status.Phase)
			}
			return nil
		})
		if got.Status.Phase != holdfastv1.BackupFailed || got.Status.Reason != holdfastv1.BackupReasonDeadlineExceeded ||
			!strings.Contains(got.Status.Message, "could not start within 30s; last seen: no instance of the cluster is ready") {
			t.Errorf("status: %s %s %q", got.Status.Phase, got.Status.Reason, got.Status.Message)
		}
	})
	// The clusters are left as they were: a backup that cannot run touches nothing.
	for _, name := range []string{"plain", "withrepo"} {
		got, err := get(t.Context(), ns, name, &holdfastv1.PostgresCluster{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Generation != 1 {
			t.Errorf("cluster %s changed: generation %d", name, got.Generation)
		}
	}
}

func TestRestoreFromAMissingBackupIsRefusedWhole(t *testing.T) {
	ns := newNamespace(t)
	c := newCluster(ns, "restored", 2, "standard")
	c.Spec.Bootstrap.Restore = &holdfastv1.RestoreSpec{Backup: &holdfastv1.BackupReference{Name: "nope"}}
	if err := k8s.Create(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	wantBlocked := func(reason, says string) {
		t.Helper()
		eventually(t, settle, "Ready is False: "+reason, func(ctx context.Context) error {
			got, err := get(ctx, ns, "restored", &holdfastv1.PostgresCluster{})
			if err != nil {
				return err
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, holdfastv1.ConditionReady)
			if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != reason || !strings.Contains(cond.Message, says) {
				return fmt.Errorf("Ready = %+v", cond)
			}
			return nil
		})
		eventually(t, settle, "a Warning Event says why", func(ctx context.Context) error {
			return wantEvent(ctx, ns, "restored", reason, says)
		})
	}
	wantBlocked("RestoreSourceMissing", "Backup nope does not exist")

	// A Backup that fails (its cluster does not exist) never becomes a source.
	b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nope"},
		Spec: holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: "gone"}}}
	if err := k8s.Create(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	wantBlocked("RestoreSourceMissing", "Backup nope failed")

	for name, obj := range map[string]client.Object{
		"restored": &appsv1.StatefulSet{}, "restored-superuser": &corev1.Secret{}, "restored-rw": &corev1.Service{},
		"restored-restore-repository": &corev1.Secret{},
	} {
		if _, err := get(t.Context(), ns, name, obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s exists (err %v): a cluster whose restore source is missing must make nothing", obj, name, err)
		}
	}
}

func TestBackupScheduleRunsACronJobAndPrunes(t *testing.T) {
	ns := newNamespace(t)
	s := &holdfastv1.BackupSchedule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nightly"},
		Spec: holdfastv1.BackupScheduleSpec{
			Cluster: holdfastv1.ClusterReference{Name: "db"}, Schedule: "30 2 * * *", TimeZone: ptr.To("Europe/Paris"),
			Retention: holdfastv1.RetentionSpec{KeepLast: ptr.To[int32](2)},
		}}
	if err := k8s.Create(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	name := resources.ScheduleRunnerName(s)
	eventually(t, settle, "the CronJob carries the schedule out", func(ctx context.Context) error {
		cj, err := get(ctx, ns, name, &batchv1.CronJob{})
		if err != nil {
			return err
		}
		spec := cj.Spec
		if spec.Schedule != "30 2 * * *" || ptr.Deref(spec.TimeZone, "") != "Europe/Paris" || spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
			return fmt.Errorf("CronJob spec: %q %v %s", spec.Schedule, spec.TimeZone, spec.ConcurrencyPolicy)
		}
		if _, ok := spec.JobTemplate.Spec.Template.Labels[resources.LabelCluster]; ok {
			return fmt.Errorf("the Jobs' pods carry %s, which selects the cluster's instances", resources.LabelCluster)
		}
		pod := spec.JobTemplate.Spec.Template.Spec
		if pod.ServiceAccountName != name || !strings.Contains(strings.Join(pod.Containers[0].Command, " "), "backup create --schedule nightly") {
			return fmt.Errorf("job pod: account %s, command %q", pod.ServiceAccountName, pod.Containers[0].Command)
		}
		if _, err := get(ctx, ns, name, &rbacv1.RoleBinding{}); err != nil {
			return err
		}
		got, err := get(ctx, ns, "nightly", &holdfastv1.BackupSchedule{})
		if err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(got.Status.Conditions, holdfastv1.ConditionReady); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", cond)
		}
		return nil
	})

	t.Run("a time zone the CronJob refuses is reported", func(t *testing.T) {
		bad := s.DeepCopy()
		bad.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "martian"}
		bad.Spec.TimeZone = ptr.To("Mars/Olympus_Mons")
		if err := k8s.Create(t.Context(), bad); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, "Ready is False: CronJobRefused", func(ctx context.Context) error {
			got, err := get(ctx, ns, "martian", &holdfastv1.BackupSchedule{})
			if err != nil {
				return err
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, holdfastv1.ConditionReady)
			if cond == nil || cond.Reason != "CronJobRefused" || !strings.Contains(cond.Message, "timeZone") {
				return fmt.Errorf("Ready = %+v", cond)
			}
			return nil
		})
	})

	t.Run("retention keeps the newest two", func(t *testing.T) {
		// Backups of a cluster that does not exist fail at once, which is
		// all retention needs; it ranks them by creation, a second apart.
		var names []string
		for i := range 4 {
			b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("nightly-%d", i),
				Labels: map[string]string{resources.LabelBackupSchedule: "nightly"}},
				Spec: holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: "db"}}}
			if err := k8s.Create(t.Context(), b); err != nil {
				t.Fatal(err)
			}
			names = append(names, b.Name)
			backupDone(t, ns, b.Name)
			// Creation timestamps have whole seconds: the next Backup must
			// be created in a later one to rank after this one.
			eventually(t, 3*time.Second, "the clock passes the creation's second", func(context.Context) error {
				if time.Now().Unix() <= b.CreationTimestamp.Unix() {
					return fmt.Errorf("still in second %d", b.CreationTimestamp.Unix())
				}
				return nil
			})
		}
		eventually(t, settle, "the two oldest are pruned", func(ctx context.Context) error {
			var list holdfastv1.BackupList
			if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{resources.LabelBackupSchedule: "nightly"}); err != nil {
				return err
			}
			var left []string
			for _, b := range list.Items {
				left = append(left, b.Name)
			}
			if strings.Join(left, ",") != strings.Join(names[2:], ",") {
				return fmt.Errorf("left %v, want %v", left, names[2:])
			}
			got, err := get(ctx, ns, "nightly", &holdfastv1.BackupSchedule{})
			if err != nil {
				return err
			}
			if got.Status.Pruned != 2 || got.Status.LastBackup != names[3] {
				return fmt.Errorf("status: pruned %d, last %s", got.Status.Pruned, got.Status.LastBackup)
			}
			return nil
		})
	})
}
