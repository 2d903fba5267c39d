package postgrescluster

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
)

const gi = 1 << 30

func claim(name, request, capacity string) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}}
	pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(request)}
	pvc.Status.Phase = corev1.ClaimBound
	if capacity != "" {
		pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)}
	}
	return pvc
}

// usage is a report of a data volume of size bytes, used percent full.
func usage(size int64, percent int) *instanceapi.Report {
	used := size * int64(percent) / 100
	return &instanceapi.Report{Volumes: []instanceapi.VolumeUsage{{Name: instanceapi.DataVolume, CapacityBytes: size, UsedBytes: used, AvailableBytes: size - used}}}
}

func autoGrowing(size, step, max string) *holdfastv1.PostgresCluster {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "pg", Generation: 1}}
	c.Spec.Storage.Size = resource.MustParse(size)
	c.Spec.Storage.AutoGrow = &holdfastv1.AutoGrowSpec{ThresholdPercent: 80, Step: step, MaxSize: resource.MustParse(max)}
	return c
}

func TestGrowClaim(t *testing.T) {
	c := autoGrowing("1Gi", "25%", "3Gi")
	for _, tc := range []struct {
		name    string
		c       *holdfastv1.PostgresCluster
		pvc     *corev1.PersistentVolumeClaim
		rep     *instanceapi.Report
		largest string
		want    string // "" keeps the claim's size
		why     string
	}{
		{name: "below the threshold", c: c, pvc: claim("pgdata-pg-0", "1Gi", "1Gi"), rep: usage(gi, 79), largest: "1Gi"},
		{name: "at the threshold, by a percentage", c: c, pvc: claim("pgdata-pg-0", "1Gi", "1Gi"), rep: usage(gi, 80), largest: "1Gi", want: "1280Mi", why: "80% full"},
		{name: "by a quantity", c: autoGrowing("1Gi", "512Mi", "3Gi"), pvc: claim("pgdata-pg-0", "1Gi", "1Gi"), rep: usage(gi, 90), largest: "1Gi", want: "1536Mi", why: "90% full"},
		{name: "capped at the maximum", c: c, pvc: claim("pgdata-pg-0", "2900Mi", "2900Mi"), rep: usage(2900<<20, 90), largest: "2900Mi", want: "3Gi", why: "to 3Gi at most"},
		{name: "at the maximum", c: c, pvc: claim("pgdata-pg-0", "3Gi", "3Gi"), rep: usage(3*gi, 99), largest: "3Gi"},
		{name: "while the last step lands", c: c, pvc: claim("pgdata-pg-0", "1280Mi", "1Gi"), rep: usage(gi, 90), largest: "1280Mi"},
		{name: "a report older than the last resize", c: c, pvc: claim("pgdata-pg-0", "2Gi", "2Gi"), rep: usage(gi, 90), largest: "2Gi"},
		{name: "no report", c: c, pvc: claim("pgdata-pg-0", "1Gi", "1Gi"), largest: "1Gi"},
		{name: "a claim behind another catches up", c: c, pvc: claim("pgdata-pg-2", "1Gi", "1Gi"), rep: usage(gi, 10), largest: "2Gi", want: "2Gi", why: "another instance's claim"},
		{name: "spec.storage.size comes first", c: autoGrowing("4Gi", "25%", "8Gi"), pvc: claim("pgdata-pg-0", "1Gi", "1Gi"), rep: usage(gi, 10), largest: "1Gi", want: "4Gi", why: "spec.storage.size"},
		{name: "without autoGrow, full stays full", c: &holdfastv1.PostgresCluster{Spec: holdfastv1.PostgresClusterSpec{Storage: holdfastv1.StorageSpec{Size: resource.MustParse("1Gi")}}},
			pvc: claim("pgdata-pg-0", "1Gi", "1Gi"), rep: usage(gi, 99), largest: "2Gi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := growClaim(tc.c, tc.pvc, tc.rep, resource.MustParse(tc.largest))
			if tc.want == "" {
				if why != "" {
					t.Errorf("grows to %s (%s); want it kept", got.String(), why)
				}
				return
			}
			if want := resource.MustParse(tc.want); got.Cmp(want) != 0 || !strings.Contains(why, tc.why) {
				t.Errorf("grows to %s (%q); want %s (%q)", got.String(), why, tc.want, tc.why)
			}
		})
	}
}

func TestObserveVolumes(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	healthy := func(c *holdfastv1.PostgresCluster) holdfastv1.PostgresClusterStatus {
		st := holdfastv1.PostgresClusterStatus{Phase: holdfastv1.PhaseHealthy, Instances: []holdfastv1.InstanceStatus{{Name: "pg-0"}, {Name: "pg-1"}}}
		setCondition(&st, c, holdfastv1.ConditionProgressing, false, "Stable", "")
		setCondition(&st, c, holdfastv1.ConditionDegraded, false, "NoFailures", "")
		return st
	}
	c := autoGrowing("1Gi", "25%", "3Gi")

	t.Run("usage and claims in status", func(t *testing.T) {
		st := healthy(c)
		observeVolumes(&st, c, []corev1.PersistentVolumeClaim{*claim("pgdata-pg-0", "1Gi", "1Gi"), *claim("pgdata-pg-1", "1Gi", "1Gi")},
			map[string]*instanceapi.Report{"pg-0": usage(gi, 50)}, now)
		v := st.Instances[0].Volume
		if v == nil || v.Claim != "pgdata-pg-0" || v.UsedPercent != 50 || v.UsedBytes != gi/2 || v.Size.String() != "1Gi" || v.Capacity == nil || v.Full || v.Resizing != "" {
			t.Fatalf("pg-0's volume: %+v", v)
		}
		if st.Phase != holdfastv1.PhaseHealthy {
			t.Errorf("phase %s; want Healthy", st.Phase)
		}
	})

	t.Run("a resize under way is progress", func(t *testing.T) {
		st := healthy(c)
		pvc := claim("pgdata-pg-0", "2Gi", "1Gi")
		pvc.Annotations = map[string]string{AnnotationResizeRequested: now.Add(-10 * time.Second).Format(time.RFC3339)}
		observeVolumes(&st, c, []corev1.PersistentVolumeClaim{*pvc}, nil, now)
		cond := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionProgressing)
		asked := now.Add(-10 * time.Second).UTC().Format(time.RFC3339)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != ReasonVolumeResizing || !strings.Contains(cond.Message, "from 1Gi to 2Gi (asked at "+asked+")") {
			t.Errorf("Progressing: %+v", cond)
		}
		// A later look with nothing changed must say the same, or every
		// look rewrites the status.
		later := healthy(c)
		observeVolumes(&later, c, []corev1.PersistentVolumeClaim{*pvc}, nil, now.Add(7*time.Second))
		if again := meta.FindStatusCondition(later.Conditions, holdfastv1.ConditionProgressing); again == nil || again.Message != cond.Message {
			t.Errorf("Progressing 7 s later: %+v; want the same message %q", again, cond.Message)
		}
		if st.Phase != holdfastv1.PhaseUpdating || meta.IsStatusConditionTrue(st.Conditions, holdfastv1.ConditionDegraded) {
			t.Errorf("phase %s, Degraded %v; want Updating, not Degraded", st.Phase, meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded))
		}
	})

	t.Run("a resize nobody answers is stuck", func(t *testing.T) {
		st := healthy(c)
		pvc := claim("pgdata-pg-0", "2Gi", "1Gi")
		pvc.Annotations = map[string]string{AnnotationResizeRequested: now.Add(-3 * time.Minute).Format(time.RFC3339)}
		observeVolumes(&st, c, []corev1.PersistentVolumeClaim{*pvc}, nil, now)
		cond := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != ReasonVolumeResizeStuck || !strings.Contains(cond.Message, "no resizer has grown it since "+now.Add(-3*time.Minute).UTC().Format(time.RFC3339)) {
			t.Errorf("Degraded: %+v", cond)
		}
		if st.Phase != holdfastv1.PhaseDegraded {
			t.Errorf("phase %s; want Degraded", st.Phase)
		}
	})

	t.Run("a resize the resizer refused is stuck at once, with its message", func(t *testing.T) {
		st := healthy(c)
		pvc := claim("pgdata-pg-0", "2Gi", "1Gi")
		pvc.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: corev1.PersistentVolumeClaimControllerResizeInfeasible}
		pvc.Status.Conditions = []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimControllerResizeError, Status: corev1.ConditionTrue, Message: "not enough space on the host"}}
		observeVolumes(&st, c, []corev1.PersistentVolumeClaim{*pvc}, nil, now)
		cond := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded)
		if cond == nil || cond.Reason != ReasonVolumeResizeStuck || !strings.Contains(cond.Message, "not enough space on the host") {
			t.Errorf("Degraded: %+v", cond)
		}
	})

	t.Run("full with no room to grow", func(t *testing.T) {
		st := healthy(c)
		observeVolumes(&st, c, []corev1.PersistentVolumeClaim{*claim("pgdata-pg-0", "3Gi", "3Gi")}, map[string]*instanceapi.Report{"pg-0": usage(3*gi, 96)}, now)
		cond := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != ReasonVolumeFull || !strings.Contains(cond.Message, "96% full") || !strings.Contains(cond.Message, "maxSize 3Gi") {
			t.Errorf("Degraded: %+v", cond)
		}
		if !st.Instances[0].Volume.Full || st.Phase != holdfastv1.PhaseDegraded {
			t.Errorf("volume %+v, phase %s; want full and Degraded", st.Instances[0].Volume, st.Phase)
		}
	})

	t.Run("a full volume is named before what it makes fail", func(t *testing.T) {
		st := healthy(c)
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, "InstanceError", "pg-0: no space left on device")
		observeVolumes(&st, c, []corev1.PersistentVolumeClaim{*claim("pgdata-pg-0", "3Gi", "3Gi")}, map[string]*instanceapi.Report{"pg-0": usage(3*gi, 100)}, now)
		cond := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded)
		if cond == nil || cond.Reason != ReasonVolumeFull || !strings.Contains(cond.Message, "and InstanceError: pg-0: no space left on device") {
			t.Errorf("Degraded: %+v", cond)
		}
	})

	t.Run("full but able to grow is not degraded", func(t *testing.T) {
		st := healthy(c)
		observeVolumes(&st, c, []corev1.PersistentVolumeClaim{*claim("pgdata-pg-0", "1Gi", "1Gi")}, map[string]*instanceapi.Report{"pg-0": usage(gi, 96)}, now)
		if meta.IsStatusConditionTrue(st.Conditions, holdfastv1.ConditionDegraded) || st.Instances[0].Volume.Full {
			t.Errorf("Degraded %+v, volume %+v; want neither", meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded), st.Instances[0].Volume)
		}
	})

	t.Run("a silent instance keeps its last figures", func(t *testing.T) {
		was := autoGrowing("1Gi", "25%", "3Gi")
		was.Status.Instances = []holdfastv1.InstanceStatus{{Name: "pg-0", Volume: &holdfastv1.VolumeStatus{UsedBytes: 7, AvailableBytes: 3, UsedPercent: 70}}}
		st := healthy(was)
		observeVolumes(&st, was, []corev1.PersistentVolumeClaim{*claim("pgdata-pg-0", "1Gi", "1Gi")}, nil, now)
		if v := st.Instances[0].Volume; v == nil || v.UsedPercent != 70 || v.UsedBytes != 7 {
			t.Errorf("volume %+v; want the last figures", v)
		}
	})
}

func TestStepUp(t *testing.T) {
	for step, want := range map[string]string{"25%": "1280Mi", "1%": "1035Mi", "100%": "2Gi", "1Gi": "2Gi", "1": "1025Mi", "300M": "1311Mi"} {
		if got := stepUp(resource.MustParse("1Gi"), step); got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("1Gi by %s: %s; want %s", step, got.String(), want)
		}
	}
}
