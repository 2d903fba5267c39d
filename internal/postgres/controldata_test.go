package postgres

import "testing"

func TestCheckpointLocation(t *testing.T) {
	out := "pg_control version number:            1300\nLatest checkpoint location:           0/E00BDB0\nLatest checkpoint's REDO location:    0/E00BD78\n"
	if got, err := CheckpointLocation(out); err != nil || got != "0/E00BDB0" {
		t.Errorf("CheckpointLocation = %q, %v", got, err)
	}
	for _, bad := range []string{"", "Latest checkpoint location:           soon\n"} {
		if got, err := CheckpointLocation(bad); err == nil {
			t.Errorf("CheckpointLocation(%q) = %q, want an error", bad, got)
		}
	}
}
