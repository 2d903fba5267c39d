package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/sandbox"
)

// TestRecreatedClusterInSandbox deletes a cluster, whose claims are kept,
// and creates it again under its name, as issue 14 describes: without its
// repository, then with a repository the previous one lacked, then with
// the same repository on fresh claims. Each incarnation must come up on
// the data it finds, with its own passwords, and archive WAL to a stanza
// of its own.
func TestRecreatedClusterInSandbox(t *testing.T) {
	e := startSandbox(t)
	e.installOperator()
	e.mustKubectl("", "create", "namespace", ns)
	repo := e.s3Repository(t)

	e.mustKubectl(clusterManifest("src", 2, "")+repo, "apply", "-f", "-")
	e.waitReady(t, "src", 2, 6*time.Minute)
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}
	e.sqlAs(t, "src", e.serviceIP(t, "src-rw"), `CREATE TABLE e2e (id int PRIMARY KEY, note text);
		INSERT INTO e2e SELECT g, md5(g::text) FROM generate_series(1, 1000) g`)
	e.waitRowAs(t, "src", e.podIP(t, "src-1"), 1000, md5hex(1000))
	rows := e.tableDigest(t, "src", e.serviceIP(t, "src-rw"))
	stop := func(t *testing.T) {
		if t.Failed() {
			e.dumpState(t)
			t.FailNow()
		}
	}

	t.Run("re-created without spec.backup, it adopts the data on its claims", func(t *testing.T) {
		defer stop(t)
		oldPassword := e.secretValue(ns, "src-app", "password")
		e.deleteCluster(t, "src", false)
		e.mustKubectl(clusterManifest("src", 2, ""), "apply", "-f", "-")
		e.waitReady(t, "src", 2, 4*time.Minute)
		e.wantAdopted(t, "src")
		if got := e.tableDigest(t, "src", e.serviceIP(t, "src-rw")); got != rows {
			t.Errorf("rows after re-creation: %s; before: %s", got, rows)
		}
		newPassword := e.secretValue(ns, "src-app", "password")
		if newPassword == oldPassword {
			t.Fatal("the re-created cluster's Secret kept the old password; the test proves nothing")
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if conn, err := e.connectAs(ctx, e.serviceIP(t, "src-rw"), "app", oldPassword); err == nil {
			conn.Close(ctx)
			t.Error("the old cluster's app password still logs in")
		}
		if c := e.clusterCondition(t, "src", "ContinuousArchiving"); c != "" {
			t.Errorf("ContinuousArchiving %q on a cluster without a repository", c)
		}
	})

	t.Run("re-created with a repository the previous one lacked, it archives and backs up", func(t *testing.T) {
		defer stop(t)
		e.deleteCluster(t, "src", false)
		e.mustKubectl(clusterManifest("src", 2, "")+repo, "apply", "-f", "-")
		e.waitReady(t, "src", 2, 4*time.Minute)
		e.wantAdopted(t, "src")
		e.wantArchiving(t, "src")
		path := e.pgbackrestBackup(t, "adopted", "src")
		if got := e.tableDigest(t, "src", e.serviceIP(t, "src-rw")); got != rows {
			t.Errorf("rows after re-creation: %s; before: %s", got, rows)
		}

		// The same repository again, on fresh claims: a new postgres
		// system, which must not share the stanza the previous one made.
		e.deleteCluster(t, "src", true)
		e.mustKubectl(clusterManifest("src", 2, "")+repo, "apply", "-f", "-")
		e.waitReady(t, "src", 2, 4*time.Minute)
		e.wantArchiving(t, "src")
		if again := e.pgbackrestBackup(t, "fresh", "src"); again == path {
			t.Errorf("both incarnations back up to %s", path)
		}

		// The first Backup still restores from where it was written.
		e.mustKubectl(clusterManifest("back", 1, "")+`
  bootstrap:
    restore:
      backup:
        name: adopted`, "apply", "-f", "-")
		e.waitReady(t, "back", 1, 4*time.Minute)
		if got := e.tableDigest(t, "back", e.serviceIP(t, "back-rw")); got != rows {
			t.Errorf("restored from the earlier incarnation's backup: %s; want %s", got, rows)
		}
	})
}

// s3Repository puts the sandbox store's keys in Secret backup-s3 of the
// test namespace, as a user would, and returns the spec.backup that names it.
func (e *sandboxEnv) s3Repository(t *testing.T) string {
	t.Helper()
	s3, err := sandbox.ReadS3(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	e.mustKubectl("", "-n", ns, "create", "secret", "generic", "backup-s3",
		"--from-literal=accessKeyId="+s3.AccessKeyID, "--from-literal=secretAccessKey="+s3.SecretAccessKey,
		"--from-literal=ca.crt="+s3.CACert)
	return fmt.Sprintf(`
  backup:
    repository:
      s3:
        endpoint: %s
        bucket: %s
        path: e2e
        credentialsSecret: backup-s3`, s3.Endpoint, s3.Bucket)
}

// deleteCluster deletes a cluster as a user would and waits until its
// pods and Secrets are gone, and with them its claims if dropClaims;
// otherwise it checks that the claims stay.
func (e *sandboxEnv) deleteCluster(t *testing.T, name string, dropClaims bool) {
	t.Helper()
	e.mustKubectl("", "-n", ns, "delete", "pgc", name, "--timeout=2m")
	poll(t, 3*time.Minute, name+"'s pods and Secrets gone", func() error {
		out, err := e.kubectl("", "-n", ns, "get", "pods,secrets", "-l", "holdfast.dev/cluster="+name, "-o", "name")
		if err != nil {
			return err
		}
		if out != "" {
			return errorString(out)
		}
		return nil
	})
	claims := []string{"pgdata-" + name + "-0", "pgdata-" + name + "-1"}
	if dropClaims {
		e.mustKubectl("", append([]string{"-n", ns, "delete", "pvc", "--timeout=2m"}, claims...)...)
		return
	}
	e.mustKubectl("", append([]string{"-n", ns, "get", "pvc"}, claims...)...)
}

// clusterCondition is "status reason: message" of a cluster's condition, or "".
func (e *sandboxEnv) clusterCondition(t *testing.T, cluster, typ string) string {
	t.Helper()
	return e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o",
		`jsonpath={range .status.conditions[?(@.type=="`+typ+`")]}{.status} {.reason}: {.message}{end}`)
}

// wantAdopted checks the condition and the Event of this incarnation that
// say it adopted the data on its claims.
func (e *sandboxEnv) wantAdopted(t *testing.T, cluster string) {
	t.Helper()
	if c := e.clusterCondition(t, cluster, "AdoptedExistingData"); !strings.HasPrefix(c, "True AdoptedExistingData: the claims held the data of an earlier cluster") {
		t.Errorf("AdoptedExistingData: %q", c)
	}
	uid := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.metadata.uid}")
	poll(t, 30*time.Second, "an AdoptedExistingData Event", func() error {
		out, err := e.kubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.uid="+uid+",reason=AdoptedExistingData", "-o", "name")
		if err != nil {
			return err
		}
		if out == "" {
			return errorString("none")
		}
		return nil
	})
}

// wantArchiving closes the primary's WAL segment and waits until it is
// archived and the cluster says ContinuousArchiving=True.
func (e *sandboxEnv) wantArchiving(t *testing.T, cluster string) {
	t.Helper()
	rw := e.serviceIP(t, cluster+"-rw")
	var segment string
	e.superQuery(t, cluster, rw, `SELECT pg_walfile_name(pg_switch_wal())`, &segment)
	poll(t, 2*time.Minute, "segment "+segment+" archived and ContinuousArchiving=True", func() error {
		var last string
		var failed int64
		e.superQuery(t, cluster, rw, `SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver`, &last, &failed)
		c := e.clusterCondition(t, cluster, "ContinuousArchiving")
		if last < segment || !strings.HasPrefix(c, "True ") {
			return fmt.Errorf("last archived %q, %d failures; condition %q", last, failed, c)
		}
		return nil
	})
}

// pgbackrestBackup takes a pgBackRest Backup of the cluster and returns
// the repository folder it was written to, which names the cluster's UID.
func (e *sandboxEnv) pgbackrestBackup(t *testing.T, name, cluster string) string {
	t.Helper()
	e.mustKubectl(backupManifest(name, cluster)+"  method: pgbackrest\n", "apply", "-f", "-")
	status := e.waitBackup(t, name, "Completed")
	uid := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.metadata.uid}")
	if want := "e2e/" + ns + "/" + cluster + "/" + uid + "/pgbackrest"; status["path"] != want {
		t.Errorf("Backup %s written to %q; want %q", name, status["path"], want)
	}
	return status["path"]
}
