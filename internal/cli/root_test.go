package cli

import "testing"

// The image's binary (NewRoot with nothing extra) runs what pods run:
// the operator, the instance manager, and `backup create`, which the
// BackupSchedules' CronJobs call. A split that dropped it left every
// scheduled backup failing with `unknown command "backup"`.
func TestTheImagesBinaryRunsWhatPodsRun(t *testing.T) {
	root := NewRoot()
	for _, path := range [][]string{{"operator"}, {"instance", "run"}, {"backup", "create"}} {
		cmd, _, err := root.Find(path)
		if err != nil || cmd == root {
			t.Errorf("holdfast %v: not in the image's binary (%v)", path, err)
		}
	}
}
