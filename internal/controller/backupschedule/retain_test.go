package backupschedule

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func TestRetain(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	// Newest first, as the controller lists them: name, phase, age in hours.
	mk := func(spec ...string) []holdfastv1.Backup {
		var out []holdfastv1.Backup
		for i, s := range spec {
			name, phase, _ := strings.Cut(s, ":")
			out = append(out, holdfastv1.Backup{
				ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(now.Add(-time.Duration(i+1) * time.Hour))},
				Status:     holdfastv1.BackupStatus{Phase: holdfastv1.BackupPhase(phase)},
			})
		}
		return out
	}
	names := func(bs []holdfastv1.Backup) string {
		var n []string
		for _, b := range bs {
			n = append(n, b.Name)
		}
		return strings.Join(n, ",")
	}
	tests := []struct {
		name      string
		backups   []holdfastv1.Backup
		retention holdfastv1.RetentionSpec
		pruned    string
	}{
		{"no retention keeps all", mk("a:Completed", "b:Completed"), holdfastv1.RetentionSpec{}, ""},
		{"keep last two", mk("a:Completed", "b:Completed", "c:Completed", "d:Failed"),
			holdfastv1.RetentionSpec{KeepLast: ptr.To[int32](2)}, "c,d"},
		{"running backups are not counted or pruned", mk("a:Running", "b:Completed", "c:Completed", "d:Completed"),
			holdfastv1.RetentionSpec{KeepLast: ptr.To[int32](2)}, "d"},
		{"the newest completed survives a row of failures", mk("a:Failed", "b:Failed", "c:Completed", "d:Completed"),
			holdfastv1.RetentionSpec{KeepLast: ptr.To[int32](2)}, "d"},
		{"max age", mk("a:Completed", "b:Completed", "c:Completed"),
			holdfastv1.RetentionSpec{MaxAge: "2h30m"}, "c"},
		{"max age never prunes the newest completed", mk("a:Failed", "b:Completed", "c:Completed"),
			holdfastv1.RetentionSpec{MaxAge: "30m"}, "a,c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, prune := retain(tt.backups, tt.retention, now)
			if got := names(prune); got != tt.pruned {
				t.Errorf("pruned %q, want %q", got, tt.pruned)
			}
		})
	}
}
