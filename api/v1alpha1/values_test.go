package v1alpha1

import (
	"math"
	"testing"
	"time"
)

func TestAgeDuration(t *testing.T) {
	tests := []struct {
		age  Age
		want time.Duration
		bad  bool
	}{
		{"30d", 30 * 24 * time.Hour, false},
		{"2w", 14 * 24 * time.Hour, false},
		{"168h", 168 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"90s", 90 * time.Second, false},
		{"999999w999999w", math.MaxInt64, false},
		{"30", 0, true},
		{"d", 0, true},
		{"1.5h", 0, true},
		{"30 d", 0, true},
	}
	for _, tt := range tests {
		got, err := tt.age.Duration()
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("Age(%q).Duration() = %v, %v; want %v, error %v", tt.age, got, err, tt.want, tt.bad)
		}
	}
}

func TestTimestampParse(t *testing.T) {
	want := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, s := range []Timestamp{"2026-11-26T10:00:00Z", "2026-11-26T11:00:00+01:00", "2026-11-26T10:00:00.000000Z"} {
		got, err := s.Parse()
		if err != nil || !got.Equal(want) {
			t.Errorf("Timestamp(%q).Parse() = %v, %v; want %v", s, got, err, want)
		}
	}
	if got, err := Timestamp("2026-11-26T10:00:00.123456789Z").Parse(); err != nil || got.Nanosecond() != 123456789 {
		t.Errorf("fractional seconds: %v, %v", got, err)
	}
	if _, err := Timestamp("2026-11-26 10:00:00").Parse(); err == nil {
		t.Error("a time without T and zone parsed")
	}
}
