package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

// TestRolesInSandbox drives declared roles and databases through the
// CRD exactly as docs/roles.md shows them, and checks them by logging in
// over TLS (verify-full through the -rw Service): a role logs in with its
// Secret's password, a new password replaces the old, a membership is
// revoked, a role and a database are dropped, a database is let go and
// kept, and a hand-made role is left alone and reported unmanaged.
func TestRolesInSandbox(t *testing.T) {
	e := startSandbox(t)
	e.installOperator()
	e.mustKubectl("", "create", "namespace", ns)
	t.Cleanup(func() { _, _ = e.kubectl("", "delete", "namespace", ns, "--wait=false") })
	const doc = "../../docs/roles.md"
	apply := func(block string) {
		t.Helper()
		e.mustKubectl(testutil.DocBlock(t, doc, block), "-n", ns, "apply", "-f", "-")
	}
	const first, second = "first-Secret-password", "second-Secret-password"

	began := time.Now()
	apply("password-secret")
	apply("cluster")
	e.waitReady(t, "demo", 1, 6*time.Minute)
	e.waitDeclared(t, "demo", 1)
	t.Logf("roles and databases as declared %s after the cluster was applied", time.Since(began).Round(time.Second))
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}

	t.Run("reader logs in with its Secret's password, in the roles it declares", func(t *testing.T) {
		e.withVerified(t, "demo", "reader", first, "shop", func(ctx context.Context, conn *pgx.Conn) error {
			var member []string
			var limit int
			var ssl bool
			if err := conn.QueryRow(ctx, `SELECT ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
				WHERE m.member = current_user::regrole ORDER BY 1), (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),
				(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())`).Scan(&member, &limit, &ssl); err != nil {
				return err
			}
			if !slices.Equal(member, []string{"analysts", "pg_read_all_data"}) || limit != 10 || !ssl {
				return fmt.Errorf("member of %v, connection limit %d, ssl %v", member, limit, ssl)
			}
			return nil
		})
	})

	t.Run("shop is owned by shop_owner and has pgcrypto", func(t *testing.T) {
		e.withVerified(t, "demo", "postgres", e.secretValue(ns, "demo-superuser", "password"), "shop", func(ctx context.Context, conn *pgx.Conn) error {
			var owner, encoding, digest string
			if err := conn.QueryRow(ctx, `SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database
				WHERE datname = current_database()`).Scan(&owner, &encoding); err != nil {
				return err
			}
			// pgcrypto's digest() answers only where the extension is.
			if err := conn.QueryRow(ctx, `SELECT encode(digest('x', 'sha256'), 'hex')`).Scan(&digest); err != nil {
				return err
			}
			if owner != "shop_owner" || encoding != "UTF8" {
				return fmt.Errorf("shop owned by %s, encoding %s", owner, encoding)
			}
			return nil
		})
	})

	t.Run("a hand-made role is left alone and reported unmanaged", func(t *testing.T) {
		e.superSQL(t, "demo", `CREATE ROLE hand_made LOGIN`)
		// The operator looks again at least once a minute.
		poll(t, 2*time.Minute, "hand_made in status.unmanagedRoles", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pgc", "demo", "-o", "jsonpath={.status.unmanagedRoles}")
			if err == nil && out != `["hand_made"]` {
				err = errorString("unmanagedRoles " + out)
			}
			return err
		})
	})

	t.Run("a new password in the Secret: the old stops working, the new works", func(t *testing.T) {
		changed := time.Now()
		apply("new-password")
		poll(t, 2*time.Minute, "reader in with the new password, refused the old", func() error {
			if err := e.loginError(t, "demo", "reader", second); err != nil {
				return fmt.Errorf("the new password: %w", err)
			}
			var pgErr *pgconn.PgError
			if err := e.loginError(t, "demo", "reader", first); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				return fmt.Errorf("the old password: %v, want invalid_password (28P01)", err)
			}
			return nil
		})
		t.Logf("the new password worked, and the old did not, %s after the Secret changed", time.Since(changed).Round(100*time.Millisecond))
	})

	t.Run("a password changed by hand is set back to the Secret's", func(t *testing.T) {
		changed := time.Now()
		e.superSQL(t, "demo", `ALTER ROLE reader PASSWORD 'changed-by-hand'`)
		// Nothing in the API changed: the roles controller's next resync
		// (a minute) finds it.
		poll(t, 2*time.Minute, "reader in with the Secret's password again", func() error {
			return e.loginError(t, "demo", "reader", second)
		})
		if err := e.loginError(t, "demo", "reader", "changed-by-hand"); err == nil {
			t.Error("the password set by hand still works")
		}
		t.Logf("the Secret's password was set back %s after it was changed by hand", time.Since(changed).Round(100*time.Millisecond))
	})

	t.Run("the changed spec revokes, drops, deletes and retains", func(t *testing.T) {
		apply("cluster-changed")
		e.waitDeclared(t, "demo", 2)
		super := e.secretValue(ns, "demo-superuser", "password")
		e.withVerified(t, "demo", "postgres", super, "postgres", func(ctx context.Context, conn *pgx.Conn) error {
			var member []string
			var legacy, handMade, scratch, archive bool
			if err := conn.QueryRow(ctx, `SELECT ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
				WHERE m.member = 'reader'::regrole ORDER BY 1),
				EXISTS (SELECT FROM pg_roles WHERE rolname = 'legacy_batch'), EXISTS (SELECT FROM pg_roles WHERE rolname = 'hand_made'),
				EXISTS (SELECT FROM pg_database WHERE datname = 'scratch'), EXISTS (SELECT FROM pg_database WHERE datname = 'archive')`).
				Scan(&member, &legacy, &handMade, &scratch, &archive); err != nil {
				return err
			}
			var wrong []string
			if !slices.Equal(member, []string{"pg_read_all_data"}) {
				wrong = append(wrong, fmt.Sprintf("reader is a member of %v, want [pg_read_all_data]", member))
			}
			if legacy {
				wrong = append(wrong, "legacy_batch (ensure: absent) is there")
			}
			if !handMade {
				wrong = append(wrong, "hand_made is gone")
			}
			if scratch {
				wrong = append(wrong, "scratch (ensure: absent, reclaimPolicy: delete) is there")
			}
			if !archive {
				wrong = append(wrong, "archive (ensure: absent, reclaimPolicy: retain) is gone")
			}
			if len(wrong) > 0 {
				return errorString(strings.Join(wrong, "; "))
			}
			return nil
		})
		if err := e.loginError(t, "demo", "reader", second); err != nil {
			t.Errorf("reader cannot log in after the change: %v", err)
		}
		out := e.mustKubectl("", "-n", ns, "get", "pgc", "demo", "-o", `jsonpath={.status.databases[?(@.name=="archive")].message}`)
		if !strings.Contains(out, "kept") {
			t.Errorf("archive's status message %q does not say it was kept", out)
		}
	})
	if t.Failed() {
		e.dumpState(t)
	}
}

// waitDeclared waits until the roles controller reports the cluster's
// roles and databases as declared at generation.
func (e *sandboxEnv) waitDeclared(t *testing.T, cluster string, generation int) {
	t.Helper()
	want := fmt.Sprintf("True/Applied/%d True/Applied/%d", generation, generation)
	poll(t, 3*time.Minute, cluster+": RolesReconciled and DatabasesReconciled True at generation "+fmt.Sprint(generation), func() error {
		out, err := e.kubectl("", "-n", ns, "get", "pgc", cluster, "-o",
			`jsonpath={range .status.conditions[?(@.type=="RolesReconciled")]}{.status}/{.reason}/{.observedGeneration}{end} `+
				`{range .status.conditions[?(@.type=="DatabasesReconciled")]}{.status}/{.reason}/{.observedGeneration}{end}`)
		if err == nil && out != want {
			msg, _ := e.kubectl("", "-n", ns, "get", "pgc", cluster, "-o", `jsonpath={.status.conditions[?(@.reason!="")].message}`)
			err = errorString(out + ": " + msg)
		}
		return err
	})
}

// connectVerified connects to database through cluster's -rw Service as
// user over TLS, verifying the server as <cluster>-rw.<ns>.svc.cluster.local
// against the CA the cluster publishes (sslmode=verify-full).
func (e *sandboxEnv) connectVerified(ctx context.Context, cluster, user, password, database string) (*pgx.Conn, error) {
	ca, err := e.kubectl("", "-n", ns, "get", "configmap", cluster+"-ca", "-o", `jsonpath={.data.ca\.crt}`)
	if err != nil {
		return nil, fmt.Errorf("reading the published CA: %v: %s", err, ca)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(ca)) {
		return nil, errorString("ConfigMap " + cluster + "-ca holds no certificate")
	}
	ip, err := e.kubectl("", "-n", ns, "get", "service", cluster+"-rw", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return nil, fmt.Errorf("reading %s-rw: %v: %s", cluster, err, ip)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 sslmode=verify-full connect_timeout=5", ip))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password, cfg.Database = user, password, database
	// The host dials the Service's address and verifies its DNS name.
	cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: cluster + "-rw." + ns + ".svc.cluster.local", MinVersion: tls.VersionTLS12}
	cfg.Fallbacks = nil
	return pgx.ConnectConfig(ctx, cfg)
}

// withVerified polls f on a fresh verified connection until it succeeds.
func (e *sandboxEnv) withVerified(t *testing.T, cluster, user, password, database string, f func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	poll(t, time.Minute, user+" on "+database, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := e.connectVerified(ctx, cluster, user, password, database)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return f(ctx, conn)
	})
}

// superSQL runs statements as cluster's superuser over a verified connection.
func (e *sandboxEnv) superSQL(t *testing.T, cluster, statements string) {
	t.Helper()
	e.withVerified(t, cluster, "postgres", e.secretValue(ns, cluster+"-superuser", "password"), "postgres",
		func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, statements)
			return err
		})
}

// loginError is what logging in as user with password gives: nil when it works.
func (e *sandboxEnv) loginError(t *testing.T, cluster, user, password string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	conn, err := e.connectVerified(ctx, cluster, user, password, "postgres")
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
