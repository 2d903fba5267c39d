package postgres

import (
	"strings"
	"testing"
)

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

func TestRenderConfHoldsReplayOnlyForADumpOnAReplica(t *testing.T) {
	for _, tt := range []struct {
		role Role
		hold bool
		want bool
	}{{Replica, true, true}, {Replica, false, false}, {Primary, true, false}} {
		conf := RenderConf(ServerConf{Name: "x", Port: 5432, Role: tt.role, HoldReplay: tt.hold})
		if got := strings.Contains(conf, "max_standby_streaming_delay = '-1'"); got != tt.want {
			t.Errorf("role %s, hold %v: max_standby_streaming_delay -1 is there: %v, want %v\n%s", tt.role, tt.hold, got, tt.want, conf)
		}
	}
	if conf := RenderConf(ServerConf{Name: "x", Port: 5432, Role: Primary}); !strings.Contains(conf, "archive_mode = 'on'") || !strings.Contains(conf, "archive_command = 'true'") {
		t.Errorf("without a repository, archive_mode must be on with a command that keeps nothing:\n%s", conf)
	}
}

func TestRenderConfTurnsTLSOnOnlyWithFiles(t *testing.T) {
	if conf := RenderConf(ServerConf{Name: "x", Port: 5432, Role: Primary}); strings.Contains(conf, "ssl") {
		t.Errorf("ssl settings without certificate files:\n%s", conf)
	}
	conf := RenderConf(ServerConf{Name: "x", Port: 5432, Role: Primary, TLS: &TLSFiles{Cert: "/run/tls/server.crt", Key: "/run/tls/server.key", CA: "/run/tls/ca.crt"}})
	for _, want := range []string{"ssl = 'on'", "ssl_cert_file = '/run/tls/server.crt'", "ssl_key_file = '/run/tls/server.key'",
		"ssl_ca_file = '/run/tls/ca.crt'", "ssl_min_protocol_version = 'TLSv1.2'"} {
		if !strings.Contains(conf, want) {
			t.Errorf("%q missing:\n%s", want, conf)
		}
	}
}
