package cli

import (
	"testing"

	"go.uber.org/zap/zapcore"
)

func TestParseLogLevel(t *testing.T) {
	for in, want := range map[string]zapcore.Level{"": zapcore.InfoLevel, "info": zapcore.InfoLevel, "debug": zapcore.DebugLevel, "error": zapcore.ErrorLevel, "3": zapcore.Level(-3)} {
		if got, err := parseLogLevel(in); err != nil || got != want {
			t.Errorf("parseLogLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"verbose", "-1", "200"} {
		if _, err := parseLogLevel(in); err == nil {
			t.Errorf("parseLogLevel(%q) took it", in)
		}
	}
	// debug lets logr's V(1) through, info does not.
	for level, v1 := range map[string]bool{"debug": true, "info": false} {
		l, _ := parseLogLevel(level)
		if got := newLogger(l).V(1).Enabled(); got != v1 {
			t.Errorf("--log-level=%s: V(1) enabled %v, want %v", level, got, v1)
		}
	}
}
