package postgrescluster

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
)

func TestObserveData(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "src", Namespace: "ns", UID: "uid-new", Generation: 1}}
	c.Spec.Backup = &holdfastv1.BackupConfig{Repository: holdfastv1.RepositorySpec{S3: &holdfastv1.S3Repository{
		Endpoint: "https://s3.example", Bucket: "b", CredentialsSecret: "s3"}}}
	st := holdfastv1.PostgresClusterStatus{CurrentPrimary: "src-0"}
	failing := &instanceapi.ArchiveReport{Message: "WAL segment 000000010000000000000003 could not be archived: [044]: WAL file system-id does not match"}
	reports := map[string]*instanceapi.Report{
		"src-0": {Archiving: failing},
		"src-1": {Adopted: &instanceapi.Adoption{Incarnation: "uid-new", From: "uid-old"}},
	}

	observeData(&st, c, reports)
	adopted := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionAdoptedExistingData)
	if adopted == nil || adopted.Status != metav1.ConditionTrue || !strings.Contains(adopted.Message, "uid-old") {
		t.Errorf("AdoptedExistingData: %+v; want True naming the earlier cluster's UID", adopted)
	}
	arch := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionContinuousArchiving)
	if arch == nil || arch.Status != metav1.ConditionFalse || arch.Reason != reasonArchivingFailed || arch.Message != failing.Message {
		t.Errorf("ContinuousArchiving: %+v; want False with the primary's message", arch)
	}

	// The same reports again change nothing, and nor does a primary that
	// did not answer: no status write for them.
	before := *st.DeepCopy()
	observeData(&st, c, reports)
	observeData(&st, c, map[string]*instanceapi.Report{})
	if !equality.Semantic.DeepEqual(before, st) {
		t.Errorf("an unchanged look changed the status:\n%+v\n%+v", before.Conditions, st.Conditions)
	}

	// Archiving recovers; the adoption stays said.
	observeData(&st, c, map[string]*instanceapi.Report{"src-0": {Archiving: &instanceapi.ArchiveReport{OK: true, Message: "WAL is archived"}}})
	if arch := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionContinuousArchiving); arch == nil || arch.Status != metav1.ConditionTrue || arch.Reason != reasonArchiving {
		t.Errorf("ContinuousArchiving after recovery: %+v; want True", arch)
	}
	if meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionAdoptedExistingData) == nil {
		t.Error("AdoptedExistingData went away")
	}

	// Without a repository there is nothing to archive to.
	c.Spec.Backup = nil
	observeData(&st, c, reports)
	if arch := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionContinuousArchiving); arch != nil {
		t.Errorf("ContinuousArchiving without a repository: %+v; want none", arch)
	}

	// An adoption recorded by an earlier incarnation is not this cluster's.
	fresh := holdfastv1.PostgresClusterStatus{}
	observeData(&fresh, c, map[string]*instanceapi.Report{"src-0": {Adopted: &instanceapi.Adoption{Incarnation: "uid-older", From: "uid-oldest"}}})
	if cond := meta.FindStatusCondition(fresh.Conditions, holdfastv1.ConditionAdoptedExistingData); cond != nil {
		t.Errorf("an earlier incarnation's adoption set %+v", cond)
	}
}
