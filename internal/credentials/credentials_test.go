package credentials

import (
	"strings"
	"testing"
)

func TestPassword(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		p, err := Password()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != PasswordLength {
			t.Fatalf("len(%q) = %d, want %d", p, len(p), PasswordLength)
		}
		if strings.Trim(p, alphabet) != "" {
			t.Fatalf("%q has characters outside the alphabet", p)
		}
		if seen[p] {
			t.Fatalf("password %q repeated", p)
		}
		seen[p] = true
	}
}
