package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"holdfast.dev/holdfast/internal/rig/testutil"
)

const superPassword = "super-secret"

// server is a postgres that, like an instance, asks every TCP client for a
// SCRAM password.
type server struct {
	*testutil.Postgres
}

func startServer(t *testing.T) server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real postgres server")
	}
	return server{testutil.NewPasswordPostgres(t, superPassword, "--encoding=UTF8", "--locale=C.UTF-8")}
}

func (s server) connectAs(ctx context.Context, user, password, database string) (*pgx.Conn, error) {
	if database == "" {
		database = "postgres"
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d sslmode=disable connect_timeout=5", s.Port))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password, cfg.Database = user, password, database
	return pgx.ConnectConfig(ctx, cfg)
}

func (s server) connector() Connector {
	return func(ctx context.Context, database string) (*pgx.Conn, error) {
		return s.connectAs(ctx, "postgres", superPassword, database)
	}
}

func (s server) exec(t *testing.T, database, sql string) {
	t.Helper()
	conn, err := s.connector()(t.Context(), database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (s server) query(t *testing.T, database, sql string, dest ...any) {
	t.Helper()
	conn, err := s.connector()(t.Context(), database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if err := conn.QueryRow(t.Context(), sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// reconcile observes, plans and applies, and returns the outcomes.
func (s server) reconcile(t *testing.T, roles []Role, dbs []Database) (Observed, Plan, map[Subject]*Outcome) {
	t.Helper()
	ctx := t.Context()
	obs, err := Observe(ctx, s.connector(), dbs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanFor(roles, dbs, obs)
	if err != nil {
		t.Fatal(err)
	}
	return obs, p, Apply(ctx, s.connector(), p.Steps)
}

func wantApplied(t *testing.T, out map[Subject]*Outcome) {
	t.Helper()
	for s, o := range out {
		if o.Err != nil {
			t.Errorf("%s: %v", s, o.Err)
		}
	}
}

// loginError is the error of logging in as user with password, nil when it works.
func (s server) loginError(t *testing.T, user, password string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := s.connectAs(ctx, user, password, "")
	if err == nil {
		conn.Close(ctx)
	}
	return err
}

func TestApplyAgainstPostgres(t *testing.T) {
	s := startServer(t)
	s.exec(t, "", `CREATE ROLE hand_made LOGIN`)

	first, second := "first-password", "second-password"
	reader := Role{Name: "reader", Attributes: Attributes{Login: true, ConnectionLimit: 5, ValidUntil: &expiry2027},
		InRoles: []string{"pg_read_all_data", "team"}, Password: &first}
	team := Role{Name: "team", Attributes: noLimit}
	legacy := Role{Name: "legacy", Attributes: Attributes{Login: true, ConnectionLimit: -1}}
	shop := Database{Name: "shop", Owner: "team", Encoding: "UTF8", Locale: "C.UTF-8", Extensions: []string{"pgcrypto"}}
	scratch := Database{Name: "scratch", Owner: "legacy"}
	kept := Database{Name: "kept", Owner: "postgres"}
	roles := []Role{reader, team, legacy}
	dbs := []Database{shop, scratch, kept}

	t.Run("roles and databases are created; the new role logs in with its password", func(t *testing.T) {
		_, _, out := s.reconcile(t, roles, dbs)
		wantApplied(t, out)
		if err := s.loginError(t, "reader", first); err != nil {
			t.Fatalf("reader cannot log in with its password: %v", err)
		}
		var ext string
		s.query(t, "shop", `SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'`, &ext)
		var digest string
		s.query(t, "shop", `SELECT encode(digest('x', 'sha256'), 'hex')`, &digest)
		var owner, enc, collate string
		s.query(t, "", `SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE datname = 'shop'`, &owner, &enc, &collate)
		if owner != "team" || enc != "UTF8" || collate != "C.UTF-8" {
			t.Errorf("shop: owner %s, encoding %s, collate %s", owner, enc, collate)
		}
		var limit int
		var until time.Time
		s.query(t, "", `SELECT rolconnlimit, rolvaliduntil FROM pg_roles WHERE rolname = 'reader'`, &limit, &until)
		if limit != 5 || !until.Equal(expiry2027) {
			t.Errorf("reader: connection limit %d, valid until %s", limit, until)
		}
	})

	t.Run("a second look finds nothing to do", func(t *testing.T) {
		_, p, _ := s.reconcile(t, roles, dbs)
		for _, st := range p.Steps {
			t.Errorf("step on an unchanged server: %s", st.Says)
		}
	})

	t.Run("a changed password: the old stops working, the new works", func(t *testing.T) {
		roles[0].Password, roles[0].SetPassword = &second, true
		_, _, out := s.reconcile(t, roles, dbs)
		wantApplied(t, out)
		if err := s.loginError(t, "reader", second); err != nil {
			t.Errorf("the new password is refused: %v", err)
		}
		var pgErr *pgconn.PgError
		if err := s.loginError(t, "reader", first); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("the old password: %v, want invalid_password (28P01)", err)
		}
		roles[0].SetPassword = false
	})

	t.Run("a password changed by hand is set back to its Secret's", func(t *testing.T) {
		s.exec(t, "", `ALTER ROLE reader PASSWORD 'changed-by-hand'`)
		_, p, out := s.reconcile(t, roles, dbs)
		wantApplied(t, out)
		if len(p.Steps) != 1 || !strings.Contains(p.Steps[0].Says, "changed outside the spec") {
			t.Errorf("steps %+v, want the password set back alone", p.Steps)
		}
		if err := s.loginError(t, "reader", second); err != nil {
			t.Errorf("the Secret's password is refused: %v", err)
		}
		if err := s.loginError(t, "reader", "changed-by-hand"); err == nil {
			t.Error("the password set by hand still works")
		}
		if _, again, _ := s.reconcile(t, roles, dbs); len(again.Steps) != 0 {
			t.Errorf("steps after the password was set back: %+v", again.Steps)
		}
	})

	t.Run("a membership taken off the list is revoked", func(t *testing.T) {
		roles[0].InRoles = []string{"pg_read_all_data"}
		_, _, out := s.reconcile(t, roles, dbs)
		wantApplied(t, out)
		var member []string
		s.query(t, "", `SELECT ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
			WHERE m.member = 'reader'::regrole ORDER BY 1)`, &member)
		if !slices.Equal(member, []string{"pg_read_all_data"}) {
			t.Errorf("reader is a member of %v", member)
		}
	})

	t.Run("a role that owns a database is not dropped, and holds nothing else back", func(t *testing.T) {
		roles[2] = Role{Name: "legacy", Absent: true}
		roles = append(roles, Role{Name: "extra", Attributes: noLimit})
		_, _, out := s.reconcile(t, roles, dbs)
		err := out[Subject{KindRole, "legacy"}].Err
		if err == nil || !strings.Contains(err.Error(), `drop role legacy: ERROR: role "legacy" cannot be dropped because some objects depend on it`) {
			t.Errorf("dropping legacy, owner of scratch: %v", err)
		}
		if o := out[Subject{KindRole, "extra"}]; o == nil || o.Err != nil {
			t.Errorf("extra: %+v", o)
		}
	})

	t.Run("absent databases: delete drops one with sessions in it, retain keeps one; then the role drops", func(t *testing.T) {
		session, err := s.connector()(t.Context(), "scratch")
		if err != nil {
			t.Fatal(err)
		}
		defer session.Close(context.Background())
		dbs[1] = Database{Name: "scratch", Absent: true, Drop: true}
		dbs[2] = Database{Name: "kept", Absent: true}
		obs, _, out := s.reconcile(t, roles, dbs)
		wantApplied(t, out)
		if _, ok := obs.Roles["legacy"]; !ok {
			t.Fatal("legacy was gone before this step")
		}
		var scratchLeft, keptLeft, legacyLeft bool
		s.query(t, "", `SELECT EXISTS (SELECT FROM pg_database WHERE datname = 'scratch'), EXISTS (SELECT FROM pg_database WHERE datname = 'kept'),
			EXISTS (SELECT FROM pg_roles WHERE rolname = 'legacy')`, &scratchLeft, &keptLeft, &legacyLeft)
		if scratchLeft || !keptLeft || legacyLeft {
			t.Errorf("scratch there: %v (want dropped), kept there: %v (want kept), legacy there: %v (want dropped)", scratchLeft, keptLeft, legacyLeft)
		}
	})

	t.Run("the hand-made role is left alone and reported unmanaged", func(t *testing.T) {
		obs, _, _ := s.reconcile(t, roles, dbs)
		if got := Unmanaged(obs, roles, "postgres"); !slices.Equal(got, []string{"hand_made"}) {
			t.Errorf("unmanaged %v, want [hand_made]", got)
		}
		var login bool
		s.query(t, "", `SELECT rolcanlogin FROM pg_roles WHERE rolname = 'hand_made'`, &login)
		if !login {
			t.Error("hand_made was altered")
		}
	})

	t.Run("an existing database's encoding is reported, not changed", func(t *testing.T) {
		dbs[0].Encoding = "LATIN1"
		_, p, out := s.reconcile(t, roles, dbs)
		wantApplied(t, out)
		if msg := p.Unfixable[Subject{KindDatabase, "shop"}]; !strings.Contains(msg, "its encoding is UTF8, not LATIN1") {
			t.Errorf("unfixable: %q", msg)
		}
	})
}
