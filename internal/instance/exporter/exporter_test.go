package exporter

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

func TestSynchronousStandbysRequired(t *testing.T) {
	for names, want := range map[string]int{
		"":                     0,
		"ANY 1 (pg_1, pg_2)":   1,
		"any 2 (\"a\", b, c)":  2,
		"FIRST 2 (a, b, c)":    2,
		"3 (a, b, c)":          3,
		"a, b":                 1,
		"*":                    1,
		" ANY 1 (\"demo-1\") ": 1,
	} {
		if got := SynchronousStandbysRequired(names); got != want {
			t.Errorf("%q: %d, want %d", names, got, want)
		}
	}
}

type down struct{ report instanceapi.Report }

func (d down) Report() instanceapi.Report { return d.report }
func (down) Monitor(context.Context, func(*pgx.Conn) error) error {
	return errors.New("connecting to postgres: no such file or directory")
}

// A postgres that is down says so, with the series that do not need it,
// and none that would pass stale figures for live ones.
func TestAPostgresThatIsDownIsDown(t *testing.T) {
	src := down{instanceapi.Report{Fenced: true, Postgres: &postgres.Status{Timeline: 3, CurrentLSN: "0/3000000"},
		Volumes: []instanceapi.VolumeUsage{{Name: instanceapi.DataVolume, CapacityBytes: 1 << 30, UsedBytes: 600 << 20, AvailableBytes: 424 << 20}}}}
	c := New(src, "1.2.3")
	want := `
# HELP holdfast_build_info Holdfast's version, as a label; always 1.
# TYPE holdfast_build_info gauge
holdfast_build_info{version="1.2.3"} 1
# HELP holdfast_instance_fenced 1 while the instance manager fences postgres (it takes no writes).
# TYPE holdfast_instance_fenced gauge
holdfast_instance_fenced 1
# HELP holdfast_pg_up 1 when postgres answered the scrape's queries.
# TYPE holdfast_pg_up gauge
holdfast_pg_up 0
# HELP holdfast_volume_used_bytes Bytes used on the volume's filesystem.
# TYPE holdfast_volume_used_bytes gauge
holdfast_volume_used_bytes{volume="data"} 6.291456e+08
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "holdfast_build_info", "holdfast_instance_fenced", "holdfast_pg_up",
		"holdfast_pg_timeline", "holdfast_pg_wal_lsn_bytes", "holdfast_pg_in_recovery", "holdfast_volume_used_bytes"); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("the series do not gather cleanly: %v", err)
	}
	if len(families) == 0 {
		t.Error("nothing gathered")
	}
}
