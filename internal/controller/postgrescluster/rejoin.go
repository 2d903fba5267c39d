package postgrescluster

import (
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// notStreamingGrace is how long a running replica may go without streaming
// from its primary before the cluster counts as degraded: a primary's
// restart or a short network cut passes within it; a replica whose primary
// no longer has the WAL it needs loops for ever.
const notStreamingGrace = 10 * time.Second

// replicasNotStreaming describes, with what each says it does about it,
// the replicas that have run without streaming for longer than
// notStreamingGrace at now.
func replicasNotStreaming(pods []corev1.Pod, reports map[string]*instanceapi.Report, now time.Time) []string {
	var out []string
	for _, p := range pods {
		rep := reports[p.Name]
		if rep == nil || rep.NotStreamingSince == nil || rep.Desired == nil || rep.Desired.Role != postgres.Replica ||
			now.Sub(*rep.NotStreamingSince) <= notStreamingGrace {
			continue
		}
		says := rep.Message
		if rep.Error != "" {
			says = rep.Error
		}
		out = append(out, fmt.Sprintf("%s: not streaming from the primary since %s: %s",
			p.Name, rep.NotStreamingSince.UTC().Format(time.RFC3339), says))
	}
	return out
}

// rejoinLog remembers, per instance, the last rejoin announced, so that
// each gets one Event however often the instance reports it.
type rejoinLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// first says whether the rejoin at at of instance key is new, and notes it.
func (l *rejoinLog) first(key string, at time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if l.last[key].Equal(at) {
		return false
	}
	l.last[key] = at
	return true
}

// announceRejoins records an Event for each replica that has newly fallen
// back to the archive or to a fresh clone to follow its primary again.
// After an operator restart the latest of each is announced once more.
func (r *Reconciler) announceRejoins(c *holdfastv1.PostgresCluster, reports map[string]*instanceapi.Report) {
	for name, rep := range reports {
		j := rep.Rejoin
		if j == nil || !r.rejoins.first(c.Namespace+"/"+name, j.At) {
			continue
		}
		reason := "ReplicaRecloned"
		if j.How == instanceapi.RejoinArchive {
			reason = "ReplicaReplaysArchivedWAL"
		}
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, reason, "Rejoin", "%s: %s", name, j.Message)
	}
}
