package instance

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/rig/testutil"
)

// TestAdoptsAnEarlierIncarnationsData is a cluster deleted with its claims
// kept and created again under its name, with new Secrets and no
// repository: each instance drops the orders the old cluster saved (a
// later epoch, WAL archiving to a repository whose keys are gone), keeps
// the data, takes the new passwords and says it adopted the data.
func TestAdoptsAnEarlierIncarnationsData(t *testing.T) {
	h := newHarness(t)
	loc, cred := testutil.S3Server(t)
	h.writeRepositoryCredentials(cred)
	archive := &ArchiveOrder{Stanza: "pg", Location: loc.Join("old", "pgbackrest")}

	h.incarnation = "uid-old"
	p, r := h.add("pg-0"), h.add("pg-1")
	h.epoch = 7 // the old cluster went through failovers
	d := h.primary(p, r)
	d.Archive, d.Incarnation = archive, h.incarnation
	h.want(p, d)
	h.waitFor(time.Minute, "the old primary is ready", h.ready(p, "primary"))
	rd := h.replica(p)
	rd.Archive, rd.Incarnation = archive, h.incarnation
	h.want(r, rd)
	h.waitFor(2*time.Minute, "the old replica streams", h.ready(r, "replica"))
	if err := h.exec(p, `CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('kept')`); err != nil {
		t.Fatal(err)
	}
	h.waitFor(time.Minute, "the replica has the row", h.hasRows(r, "kept"))
	oldPassword, err := os.ReadFile(filepath.Join(h.secrets, "app", "password"))
	if err != nil {
		t.Fatal(err)
	}
	h.stop(r)
	h.stop(p)

	// The new cluster: new Secrets, no repository, a new UID.
	for _, role := range []string{"superuser", "replication", "app"} {
		if err := os.WriteFile(filepath.Join(h.secrets, role, "password"), []byte(role+"-new-pw"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(h.base, "repository")); err != nil {
		t.Fatal(err)
	}
	h.incarnation = "uid-new"
	h.start(p)
	h.start(r)
	for _, n := range []*node{p, r} {
		h.waitFor(10*time.Second, n.name+" waits for this cluster's orders", func() error {
			rep := h.report(n)
			switch {
			case rep.Desired != nil:
				return fmt.Errorf("%s resumed the old cluster's orders: %+v", n.name, *rep.Desired)
			case rep.Adopted == nil || rep.Adopted.From != "uid-old" || rep.Adopted.Incarnation != "uid-new":
				return fmt.Errorf("%s reports adoption %+v", n.name, rep.Adopted)
			case !strings.HasPrefix(rep.Message, "waiting for the operator"):
				return fmt.Errorf("%s: %q (error %q)", n.name, rep.Message, rep.Error)
			}
			return nil
		})
	}
	// A late order of the old cluster is refused.
	if code, status := h.put(p, d); code != http.StatusBadRequest {
		t.Errorf("an order for the old incarnation: %s; want 400", status)
	}

	h.epoch = 1 // the new cluster counts from the start
	nd := h.primary(p, r)
	nd.Incarnation = h.incarnation
	h.want(p, nd)
	h.waitFor(time.Minute, "the adopted primary is ready", h.ready(p, "primary"))
	nr := h.replica(p)
	nr.Incarnation = h.incarnation
	h.want(r, nr)
	h.waitFor(2*time.Minute, "the adopted replica streams", h.ready(r, "replica"))
	// h.exec logs in as the app user with the new Secret's password.
	h.waitFor(30*time.Second, "the primary has its rows, with the new passwords", h.hasRows(p, "kept"))
	if err := h.exec(p, `INSERT INTO t VALUES ('new')`); err != nil {
		t.Fatal(err)
	}
	h.waitFor(time.Minute, "the replica has the new row", h.hasRows(r, "kept", "new"))
	switch c, err := pgx.Connect(t.Context(), h.dsn(p, "app", string(oldPassword), "app")); {
	case err == nil:
		c.Close(t.Context())
		t.Error("the old cluster's app password still logs in")
	case !strings.Contains(err.Error(), "password authentication failed"):
		t.Errorf("the old cluster's app password is refused for another reason than the password: %v", err)
	}
	for _, n := range []*node{p, r} {
		h.waitFor(30*time.Second, n.name+" asks for passwords on its socket again", func() error {
			if n.mgr.foreignPasswords() {
				return errors.New("the adopted-passwords marker is still there")
			}
			return nil
		})
		if rep := h.report(n); rep.Error != "" || rep.Archiving != nil {
			t.Errorf("%s: error %q, archiving %+v: the old repository must be forgotten", n.name, rep.Error, rep.Archiving)
		}
	}

	// A restart keeps this cluster's orders and still says it adopted.
	h.stop(r)
	h.start(r)
	h.waitFor(time.Minute, "the restarted replica resumes", h.ready(r, "replica"))
	if a := h.report(r).Adopted; a == nil || a.From != "uid-old" {
		t.Errorf("after a restart the replica reports adoption %+v", a)
	}
}

// TestArchivingFailureIsReported gives a second postgres system the stanza
// of another: pgBackRest refuses its WAL, and the primary's report says so
// with pgBackRest's message, while the first keeps reporting success.
func TestArchivingFailureIsReported(t *testing.T) {
	h := newHarness(t)
	loc, cred := testutil.S3Server(t)
	h.writeRepositoryCredentials(cred)
	archive := &ArchiveOrder{Stanza: "pg", Location: loc.Join("shared", "pgbackrest")}

	a := h.add("a-0")
	d := h.primary(a)
	d.Archive = archive
	h.want(a, d)
	h.waitFor(time.Minute, "the first primary is ready", h.ready(a, "primary"))
	h.archiveNow(a)
	if rep := h.report(a).Archiving; rep == nil || !rep.OK {
		t.Errorf("the first system's archiving: %+v; want OK", rep)
	}

	// Keys the store refuses: archive-push fails, and its message is
	// pgBackRest's, from its queue; the right keys again bring it back.
	bad := cred
	bad.SecretAccessKey = "not-the-key"
	h.writeRepositoryCredentials(bad)
	h.waitFor(10*time.Second, "pgBackRest's configuration has the refused keys", func() error {
		if conf, _ := os.ReadFile(a.mgr.pgbackrestConf()); !strings.Contains(string(conf), bad.SecretAccessKey) {
			return errors.New("not yet")
		}
		return nil
	})
	var seg string
	// Something to archive: a switch of an empty segment does nothing.
	h.superExec(a, "postgres", `CREATE TABLE wal (); DROP TABLE wal`)
	h.superQuery(a, "postgres", `SELECT pg_walfile_name(pg_switch_wal())`, &seg)
	h.waitFor(time.Minute, "refused keys are reported", func() error {
		rep := h.report(a).Archiving
		if rep == nil || rep.OK || !strings.Contains(rep.Message, seg) || strings.Contains(rep.Message, "postgres's log") {
			return fmt.Errorf("archiving %+v", rep)
		}
		return nil
	})
	t.Logf("refused keys: %s", h.report(a).Archiving.Message)
	h.writeRepositoryCredentials(cred)
	h.waitFor(2*time.Minute, "archiving recovers with the right keys", func() error {
		if rep := h.report(a).Archiving; rep == nil || !rep.OK {
			return fmt.Errorf("archiving %+v", rep)
		}
		return nil
	})

	// A repository that refuses: the stanza cannot be made there.
	// Back on the first, that failure is history, not the state (it once
	// stuck, and the cluster said ArchivingFailed while WAL was archived).
	away := d
	away.Archive = &ArchiveOrder{Stanza: "pg", Location: loc.Join("shared", "pgbackrest")}
	away.Archive.Location.Bucket = "no-such-bucket"
	h.want(a, away)
	h.waitFor(time.Minute, "the refusing repository is reported", func() error {
		if rep := h.report(a).Archiving; rep == nil || rep.OK || !strings.Contains(rep.Message, "creating the pgBackRest stanza") {
			return fmt.Errorf("archiving %+v", rep)
		}
		return nil
	})
	h.want(a, d)
	h.waitFor(time.Minute, "archiving is reported OK back on the first repository", func() error {
		if rep := h.report(a).Archiving; rep == nil || !rep.OK {
			return fmt.Errorf("archiving %+v", rep)
		}
		return nil
	})

	b := h.add("b-0")
	h.want(b, d)
	h.waitFor(time.Minute, "the second primary is ready", h.ready(b, "primary"))
	h.superQuery(b, "postgres", `SELECT pg_walfile_name(pg_switch_wal())`, &seg)
	took := h.waitFor(time.Minute, "the second system's archiving is reported failing", func() error {
		rep := h.report(b).Archiving
		if rep == nil || rep.OK {
			return fmt.Errorf("archiving %+v", rep)
		}
		if !strings.Contains(rep.Message, "system-id") && !strings.Contains(rep.Message, "do not match") {
			return fmt.Errorf("message %q lacks pgBackRest's reason", rep.Message)
		}
		return nil
	})
	t.Logf("reported after %s: %s", took, h.report(b).Archiving.Message)
}
