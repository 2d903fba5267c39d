package apply

import "testing"

func TestContains(t *testing.T) {
	tests := []struct {
		name       string
		have, want any
		ok         bool
	}{
		{"equal scalars", "a", "a", true},
		{"different scalars", "a", "b", false},
		{"int types differ", int64(1), int32(1), false},
		{"defaulted field ignored", map[string]any{"a": "x", "b": "y"}, map[string]any{"a": "x"}, true},
		{"missing field", map[string]any{"b": "y"}, map[string]any{"a": "x"}, false},
		{"changed nested", map[string]any{"a": map[string]any{"b": int64(1)}}, map[string]any{"a": map[string]any{"b": int64(2)}}, false},
		{"empty map dropped by server", map[string]any{}, map[string]any{"resources": map[string]any{}}, true},
		{"empty list dropped by server", map[string]any{}, map[string]any{"items": []any{}}, true},
		{"list element defaulted", []any{map[string]any{"name": "a", "protocol": "TCP"}}, []any{map[string]any{"name": "a"}}, true},
		{"list longer", []any{"a", "b"}, []any{"a"}, false},
		{"list shorter", []any{"a"}, []any{"a", "b"}, false},
		{"list order matters", []any{"a", "b"}, []any{"b", "a"}, false},
		{"map against nil", nil, map[string]any{"a": "x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Contains(tt.have, tt.want); got != tt.ok {
				t.Errorf("Contains(%v, %v) = %v, want %v", tt.have, tt.want, got, tt.ok)
			}
		})
	}
}

func TestDifferenceNamesTheField(t *testing.T) {
	have := map[string]any{"spec": map[string]any{"ports": []any{map[string]any{"port": int64(5432)}}}}
	want := map[string]any{"spec": map[string]any{"ports": []any{map[string]any{"port": int64(5433)}}}}
	if got, wantDiff := Difference(have, want), ".spec.ports[0].port (5432, want 5433)"; got != wantDiff {
		t.Errorf("Difference = %q, want %q", got, wantDiff)
	}
}
