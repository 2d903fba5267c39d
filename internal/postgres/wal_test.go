package postgres

import "testing"

func TestWALSegmentNames(t *testing.T) {
	const mb16 = 16 << 20
	for _, c := range []struct {
		lsn     string
		tli     int
		segSize uint64
		want    string
	}{
		// A position at a segment boundary needs the next segment: a
		// replica stopped after a pg_switch_wal() asks for that one.
		{"0/7000000", 3, mb16, "000000030000000000000007"},
		{"0/6FFFFFF", 3, mb16, "000000030000000000000006"},
		{"1/A0000028", 1, mb16, "0000000100000001000000A0"},
		{"0/300000", 2, 1 << 20, "000000020000000000000003"},
		{"2/00100000", 2, 1 << 20, "000000020000000200000001"},
	} {
		lsn, err := ParseLSN(c.lsn)
		if err != nil {
			t.Fatal(err)
		}
		seg := WALSegment(lsn, c.segSize)
		if got := WALFileName(c.tli, seg, c.segSize); got != c.want {
			t.Errorf("%s on timeline %d with %d-byte segments: %s, want %s", c.lsn, c.tli, c.segSize, got, c.want)
		}
		back, err := ParseWALFileName(c.want, c.segSize)
		if err != nil || back != seg {
			t.Errorf("ParseWALFileName(%s) = %d, %v; want %d", c.want, back, err, seg)
		}
	}
	for _, bad := range []string{"", "00000001000000000000000", "0000000100000000000000ZZ"} {
		if _, err := ParseWALFileName(bad, 16<<20); err == nil {
			t.Errorf("ParseWALFileName(%q) accepted", bad)
		}
	}
}
