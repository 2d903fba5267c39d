package postgres

import "testing"

func TestDiverged(t *testing.T) {
	history := "1\t0/402D300\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n"
	tests := []struct {
		name       string
		tli        int
		pos        string
		primaryTLI int
		want       bool
	}{
		{"same timeline", 1, "0/9000000", 1, false},
		{"behind the switch point", 1, "0/402D000", 3, false},
		{"exactly at the switch point", 1, "0/402D300", 3, false},
		{"past the switch point", 1, "0/402D3A8", 3, true},
		{"second timeline past its switch", 2, "0/5000001", 3, true},
		{"timeline unknown to the primary", 7, "0/1", 9, true},
		{"primary behind our timeline", 3, "0/1", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pos, err := ParseLSN(tt.pos)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Diverged(tt.tli, pos, tt.primaryTLI, history)
			if err != nil || got != tt.want {
				t.Errorf("Diverged = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]uint64{"0/0": 0, "0/402D300": 0x402D300, "1/0": 1 << 32, "FF/FFFFFFFF": 0xFFFFFFFFFF} {
		if got, err := ParseLSN(in); err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "12", "x/1", "1/x"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}
