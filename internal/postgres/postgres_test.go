package postgres

import "testing"

func TestRenderParameters(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]string
		want   string
	}{
		{"empty", nil, ""},
		{"sorted", map[string]string{"work_mem": "4MB", "max_connections": "200"}, "max_connections = '200'\nwork_mem = '4MB'\n"},
		{"quote doubled", map[string]string{"search_path": "'$user', public"}, "search_path = '''$user'', public'\n"},
		{"backslash kept", map[string]string{"log_line_prefix": `%m \ %p`}, "log_line_prefix = '%m \\ %p'\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RenderParameters(tt.params); got != tt.want {
				t.Errorf("RenderParameters(%v) = %q, want %q", tt.params, got, tt.want)
			}
		})
	}
}

func TestIsOwned(t *testing.T) {
	for _, name := range []string{"port", "PORT", "Data_Directory", "archive_command"} {
		if !IsOwned(name) {
			t.Errorf("IsOwned(%q) = false, want true", name)
		}
	}
	for _, name := range []string{"work_mem", "shared_buffers", "portal"} {
		if IsOwned(name) {
			t.Errorf("IsOwned(%q) = true, want false", name)
		}
	}
}
