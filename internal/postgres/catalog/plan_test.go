package catalog

import (
	"encoding/base64"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	expiry2027 = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	// The same instant as postgres reports it, in another zone.
	expiry2027Paris = expiry2027.In(time.FixedZone("CET", 3600))
	pw              = "s3cret-pa55"
)

func observed(roles map[string]ObservedRole, dbs map[string]ObservedDatabase) Observed {
	if roles == nil {
		roles = map[string]ObservedRole{}
	}
	if dbs == nil {
		dbs = map[string]ObservedDatabase{}
	}
	return Observed{Roles: roles, Databases: dbs}
}

var noLimit = Attributes{ConnectionLimit: -1}

func TestPlan(t *testing.T) {
	reader := Role{Name: "reader", Attributes: Attributes{Login: true, ConnectionLimit: 10, ValidUntil: &expiry2027},
		InRoles: []string{"pg_read_all_data"}, Password: &pw}
	readerHas := ObservedRole{Attributes: Attributes{Login: true, ConnectionLimit: 10, ValidUntil: &expiry2027Paris},
		MemberOf: []string{"pg_read_all_data"}}
	tests := []struct {
		name      string
		roles     []Role
		dbs       []Database
		obs       Observed
		want      []string // SQL, with the password's verifier as PASSWORD <verifier>
		unfixable map[Subject]string
	}{
		{name: "nothing declared, nothing done", obs: observed(map[string]ObservedRole{"hand_made": {}}, nil)},
		{
			name:  "a new role gets every attribute, its password and its memberships",
			roles: []Role{reader},
			obs:   observed(nil, nil),
			want: []string{
				`CREATE ROLE "reader" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 10 VALID UNTIL '2027-01-01T00:00:00Z' PASSWORD <verifier>`,
				`GRANT "pg_read_all_data" TO "reader"`,
			},
		},
		{
			name:  "a role as declared: nothing, the same expiry in another zone included",
			roles: []Role{reader},
			obs:   observed(map[string]ObservedRole{"reader": readerHas}, nil),
		},
		{
			name: "only the attributes that differ are altered",
			roles: []Role{{Name: "reader", Attributes: Attributes{Login: true, CreateDB: true, ConnectionLimit: -1},
				InRoles: []string{"pg_read_all_data"}, Password: &pw}},
			obs: observed(map[string]ObservedRole{"reader": readerHas}, nil),
			want: []string{
				`ALTER ROLE "reader" WITH CREATEDB CONNECTION LIMIT -1 VALID UNTIL 'infinity'`,
			},
		},
		{
			name:  "a password the server keeps as declared: nothing",
			roles: []Role{reader},
			obs:   observed(map[string]ObservedRole{"reader": withVerifier(readerHas, verifierOf(t, pw))}, nil),
		},
		{
			name:  "a password changed by hand is set back",
			roles: []Role{reader},
			obs:   observed(map[string]ObservedRole{"reader": withVerifier(readerHas, verifierOf(t, "changed-by-hand"))}, nil),
			want:  []string{`ALTER ROLE "reader" WITH PASSWORD <verifier>`},
		},
		{
			name:  "a password removed by hand, or kept as MD5, is set back",
			roles: []Role{reader, {Name: "old", Password: &pw, Attributes: Attributes{ConnectionLimit: -1}}},
			obs: observed(map[string]ObservedRole{"reader": withVerifier(readerHas, ""),
				"old": withVerifier(ObservedRole{Attributes: Attributes{ConnectionLimit: -1}}, "md5a3556571e93b0d20722ba62be61e8c2d")}, nil),
			want: []string{`ALTER ROLE "reader" WITH PASSWORD <verifier>`, `ALTER ROLE "old" WITH PASSWORD <verifier>`},
		},
		{
			name:  "a changed password is set, alone",
			roles: []Role{{Name: "reader", Attributes: reader.Attributes, InRoles: reader.InRoles, Password: &pw, SetPassword: true}},
			obs:   observed(map[string]ObservedRole{"reader": readerHas}, nil),
			want:  []string{`ALTER ROLE "reader" WITH PASSWORD <verifier>`},
		},
		{
			name:  "without a password nothing is set, changed or not",
			roles: []Role{{Name: "reader", Attributes: reader.Attributes, InRoles: reader.InRoles, SetPassword: true}},
			obs:   observed(map[string]ObservedRole{"reader": readerHas}, nil),
		},
		{
			name:  "memberships: the missing granted, the undeclared revoked",
			roles: []Role{{Name: "app_rw", Attributes: noLimit, InRoles: []string{"writers", "readers"}}},
			obs: observed(map[string]ObservedRole{"app_rw": {Attributes: noLimit, MemberOf: []string{"admins", "readers"}},
				"writers": {}, "readers": {}, "admins": {}}, nil),
			want: []string{`GRANT "writers" TO "app_rw"`, `REVOKE "admins" FROM "app_rw"`},
		},
		{
			name:  "an absent role is dropped, a missing absent one left be",
			roles: []Role{{Name: "gone", Absent: true}, {Name: "never", Absent: true}},
			obs:   observed(map[string]ObservedRole{"gone": {}}, nil),
			want:  []string{`DROP ROLE "gone"`},
		},
		{
			name: "roles are made, then memberships, then databases, and roles dropped last",
			roles: []Role{
				{Name: "old_owner", Absent: true},
				{Name: "member", Attributes: noLimit, InRoles: []string{"group_role"}},
				{Name: "group_role", Attributes: noLimit},
			},
			dbs: []Database{
				{Name: "shop", Owner: "group_role", Encoding: "UTF8", Locale: "C.UTF-8", Extensions: []string{"pgcrypto", "uuid-ossp"}},
				{Name: "legacy", Absent: true, Drop: true},
			},
			obs: observed(map[string]ObservedRole{"old_owner": {}}, map[string]ObservedDatabase{"legacy": {Owner: "old_owner"}}),
			want: []string{
				`CREATE ROLE "member" WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1 VALID UNTIL 'infinity'`,
				`CREATE ROLE "group_role" WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1 VALID UNTIL 'infinity'`,
				`GRANT "group_role" TO "member"`,
				`CREATE DATABASE "shop" OWNER "group_role" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'`,
				`shop: CREATE EXTENSION IF NOT EXISTS "pgcrypto"`,
				`shop: CREATE EXTENSION IF NOT EXISTS "uuid-ossp"`,
				`DROP DATABASE "legacy" WITH (FORCE)`,
				`DROP ROLE "old_owner"`,
			},
		},
		{
			name: "an existing database: owner changed, missing extensions made, encoding and locale only reported",
			dbs:  []Database{{Name: "shop", Owner: "shop_owner", Encoding: "LATIN1", Locale: "C.utf8", Extensions: []string{"pgcrypto", "citext"}}},
			obs: observed(nil, map[string]ObservedDatabase{"shop": {Owner: "postgres", Encoding: "UTF8", Collate: "C.UTF-8", Ctype: "C.UTF-8",
				Extensions: []string{"citext", "plpgsql"}}}),
			want: []string{
				`ALTER DATABASE "shop" OWNER TO "shop_owner"`,
				`shop: CREATE EXTENSION IF NOT EXISTS "pgcrypto"`,
			},
			unfixable: map[Subject]string{{KindDatabase, "shop"}: "its encoding is UTF8, not LATIN1: encoding and locale are set only when a database is created"},
		},
		{
			name: "an existing database as declared, encoding and locale spelt otherwise",
			dbs:  []Database{{Name: "shop", Owner: "shop_owner", Encoding: "utf-8", Locale: "C.utf8"}},
			obs:  observed(nil, map[string]ObservedDatabase{"shop": {Owner: "shop_owner", Encoding: "UTF8", Collate: "C.UTF-8", Ctype: "C.UTF-8"}}),
		},
		{
			name: "retain forgets, delete drops only what exists",
			dbs:  []Database{{Name: "kept", Absent: true}, {Name: "never", Absent: true, Drop: true}},
			obs:  observed(nil, map[string]ObservedDatabase{"kept": {Owner: "x"}}),
		},
		{
			name:  "names and values are quoted",
			roles: []Role{{Name: `we"ird`, Attributes: Attributes{ConnectionLimit: -1}}},
			dbs:   []Database{{Name: "d", Owner: `we"ird`, Locale: `it's\`}},
			obs:   observed(nil, nil),
			want: []string{
				`CREATE ROLE "we""ird" WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1 VALID UNTIL 'infinity'`,
				`CREATE DATABASE "d" OWNER "we""ird" TEMPLATE template0 LC_COLLATE E'it''s\\' LC_CTYPE E'it''s\\'`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanFor(tt.roles, tt.dbs, tt.obs)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, st := range p.Steps {
				got = append(got, render(t, st))
				if strings.Contains(st.Says, pw) || strings.Contains(st.Says, "SCRAM") {
					t.Errorf("a step says its password: %q", st.Says)
				}
			}
			if !slices.Equal(tt.want, got) {
				t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if !maps.Equal(tt.unfixable, p.Unfixable) {
				t.Errorf("unfixable %q, want %q", p.Unfixable, tt.unfixable)
			}
		})
	}
}

var verifierLiteral = regexp.MustCompile(`'SCRAM-SHA-256\$([0-9]+):([A-Za-z0-9+/=]+)\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+'`)

// render writes a step as the table does: its SQL, prefixed with the
// database it runs in, with a verifier of pw checked and replaced.
func render(t *testing.T, st Step) string {
	t.Helper()
	sql := st.SQL
	if m := verifierLiteral.FindStringSubmatch(sql); m != nil {
		iter, _ := strconv.Atoi(m[1])
		salt, err := base64.StdEncoding.DecodeString(m[2])
		if err != nil {
			t.Fatal(err)
		}
		want, err := scramVerifier(pw, salt, iter)
		if err != nil {
			t.Fatal(err)
		}
		if m[0] != "'"+want+"'" {
			t.Errorf("verifier %s is not pw's", m[0])
		}
		sql = strings.Replace(sql, m[0], "<verifier>", 1)
	}
	if st.Database != "" {
		sql = st.Database + ": " + sql
	}
	return sql
}

func withVerifier(r ObservedRole, v string) ObservedRole {
	r.Verifier = &v
	return r
}

func verifierOf(t *testing.T, password string) string {
	t.Helper()
	v, err := scramVerifier(password, []byte("0123456789abcdef"), scramIterations)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMatches: a verifier is checked against a password as postgres
// would check a login, whatever its salt and iterations.
func TestMatches(t *testing.T) {
	other, err := scramVerifier(pw, []byte("another salt"), 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		verifier, password string
		want               bool
	}{
		{verifierOf(t, pw), pw, true},
		{other, pw, true},
		{verifierOf(t, pw), pw + "x", false},
		{"", pw, false},
		{"md5a3556571e93b0d20722ba62be61e8c2d", pw, false},
		{"SCRAM-SHA-256$4096:not base64!$a:b", pw, false},
		{"SCRAM-SHA-256$x:c2FsdA==$a:b", pw, false},
		{verifierOf(t, "anything"), "pässwörd", true}, // postgres normalises it: not checked here
	} {
		if got := matches(tc.verifier, tc.password); got != tc.want {
			t.Errorf("matches(%.40q, %q) = %v, want %v", tc.verifier, tc.password, got, tc.want)
		}
	}
}

func TestPasswordLiteral(t *testing.T) {
	a, err := PasswordLiteral(pw)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := PasswordLiteral(pw)
	if !verifierLiteral.MatchString(a) || a == b {
		t.Errorf("an ASCII password goes as a verifier salted afresh each time: %s, %s", a, b)
	}
	// Postgres normalises other passwords (SASLprep) before hashing them.
	if got, _ := PasswordLiteral(`pässwörd'\`); got != `E'pässwörd''\\'` {
		t.Errorf("a non-ASCII password goes as the escaped literal, got %s", got)
	}
}

func TestUnmanaged(t *testing.T) {
	obs := observed(map[string]ObservedRole{"postgres": {}, "pg_monitor": {}, "app": {}, "streaming_replica": {},
		"declared": {}, "gone": {}, "zed": {}, "hand_made": {}}, nil)
	got := Unmanaged(obs, []Role{{Name: "declared"}, {Name: "gone", Absent: true}}, "postgres", "streaming_replica", "app")
	if want := []string{"hand_made", "zed"}; !slices.Equal(got, want) {
		t.Errorf("unmanaged %q, want %q", got, want)
	}
}
