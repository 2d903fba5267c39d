package instance

import (
	"strings"
	"testing"
)

// TestRoleStatementsCarryNoPassword: the statements that set up every
// cluster's roles carry SCRAM verifiers, never a password, so that
// log_statement = ddl cannot write one into the server log.
func TestRoleStatementsCarryNoPassword(t *testing.T) {
	repl := Credentials{Username: "streaming_replica", Password: "repl-Secret-1"}
	su := Credentials{Username: "postgres", Password: "su-Secret-2"}
	app := Credentials{Username: "app", Password: "app-Secret'3"}
	stmts, err := roleStatements(repl, su, app, "app")
	if err != nil {
		t.Fatal(err)
	}
	verifiers := 0
	for _, s := range stmts {
		for _, pw := range []string{repl.Password, su.Password, app.Password, "app-Secret''3"} {
			if strings.Contains(s, pw) {
				t.Errorf("a statement carries a password: %s", s)
			}
		}
		if strings.Contains(s, "PASSWORD 'SCRAM-SHA-256$4096:") {
			verifiers++
		}
	}
	if verifiers != 3 {
		t.Errorf("%d statements set a SCRAM verifier, want 3 (replication, superuser, app): %q", verifiers, stmts)
	}
}
