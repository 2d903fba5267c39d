package postgrescluster

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
)

// Reasons of the conditions about the cluster's data and its archive.
const (
	reasonAdoptedExistingData = "AdoptedExistingData"
	reasonArchiving           = "Archiving"
	reasonArchivingFailed     = "ArchivingFailed"
)

// observeData sets the conditions the instances' reports decide about the
// data: AdoptedExistingData once an instance says it took over an earlier
// cluster's data, and ContinuousArchiving from what the primary says of
// its WAL archiving. A condition no report speaks to stays as it was.
func observeData(st *holdfastv1.PostgresClusterStatus, c *holdfastv1.PostgresCluster, reports map[string]*instanceapi.Report) {
	if meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionAdoptedExistingData) == nil {
		// Set once: which instances adopted, and when, is in the Events.
		if from := adoptedFrom(c, reports); from != "" {
			setCondition(st, c, holdfastv1.ConditionAdoptedExistingData, true, reasonAdoptedExistingData,
				fmt.Sprintf("the claims held the data of an earlier cluster named %s (UID %s): it is kept as this cluster's, with the passwords of this cluster's Secrets", c.Name, from))
		}
	}
	if archiveOrder(c) == nil {
		meta.RemoveStatusCondition(&st.Conditions, holdfastv1.ConditionContinuousArchiving)
		return
	}
	if rep := reports[st.CurrentPrimary]; rep != nil && rep.Archiving != nil {
		reason := reasonArchiving
		if !rep.Archiving.OK {
			reason = reasonArchivingFailed
		}
		setCondition(st, c, holdfastv1.ConditionContinuousArchiving, rep.Archiving.OK, reason, rep.Archiving.Message)
	}
}

// adoptedFrom is the UID of the earlier cluster whose data an instance of
// this one adopted, or "".
func adoptedFrom(c *holdfastv1.PostgresCluster, reports map[string]*instanceapi.Report) string {
	names := make([]string, 0, len(reports))
	for name := range reports {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if a := reports[name].Adopted; a != nil && a.Incarnation == string(c.UID) {
			return a.From
		}
	}
	return ""
}

// announceData says with Events what observeData changed between the
// status as it was stored, was, and as it is written, now.
func (r *Reconciler) announceData(c *holdfastv1.PostgresCluster, was, now *holdfastv1.PostgresClusterStatus) {
	for _, typ := range []string{holdfastv1.ConditionAdoptedExistingData, holdfastv1.ConditionContinuousArchiving} {
		before, after := meta.FindStatusCondition(was.Conditions, typ), meta.FindStatusCondition(now.Conditions, typ)
		if after == nil || (before != nil && before.Status == after.Status && before.Message == after.Message) {
			continue
		}
		kind := corev1.EventTypeNormal
		if after.Reason == reasonArchivingFailed {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(c, nil, kind, after.Reason, "Observe", "%s", after.Message)
	}
}
