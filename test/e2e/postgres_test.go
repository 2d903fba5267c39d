package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/sandbox/faults"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

const ns = "e2e"

// TestPostgresClusterInSandbox runs PostgresClusters under the operator,
// installed in the sandbox as users install it, on real pods: creation,
// replication through the Services, pod loss, scaling, deletion and a bad
// image. The steps share one cluster and run in order.
func TestPostgresClusterInSandbox(t *testing.T) {
	e := startSandbox(t)
	e.installOperator()
	e.mustKubectl("", "create", "namespace", ns)
	t.Cleanup(func() { _, _ = e.kubectl("", "delete", "namespace", ns, "--wait=false") })

	var primary string
	t.Run("a 3-instance cluster becomes ready", func(t *testing.T) {
		began := time.Now()
		e.mustKubectl(clusterManifest("pg", 3, ""), "apply", "-f", "-")
		e.waitReady(t, "pg", 3, 6*time.Minute)
		t.Logf("3 of 3 instances ready %s after the cluster was applied", time.Since(began).Round(time.Second))
		// Replicas cloning while the cluster is created is work under way:
		// the cluster never passed through Degraded.
		uid := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.metadata.uid}")
		if out := e.mustKubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.uid="+uid+",reason=PhaseDegraded", "-o", `jsonpath={range .items[*]}{.message}{"\n"}{end}`); out != "" {
			t.Errorf("a normal creation passed through Degraded: %s", out)
		}
		primary = e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		if primary != "pg-0" {
			t.Errorf("primary %q, want pg-0", primary)
		}
	})
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}

	t.Run("every pod runs an image the registry serves, pulled by digest into its own root", func(t *testing.T) {
		built := e.layoutDigests(t)
		check := func(namespace, selector string) {
			out := e.mustKubectl("", "-n", namespace, "get", "pods", "-l", selector, "-o",
				`jsonpath={range .items[*]}{range .status.initContainerStatuses[*]}{.image} {.imageID}{"\n"}{end}{range .status.containerStatuses[*]}{.image} {.imageID}{"\n"}{end}{end}`)
			if out == "" {
				t.Errorf("no pods match %s in %s", selector, namespace)
			}
			for _, line := range strings.Split(out, "\n") {
				image, id, _ := strings.Cut(line, " ")
				repo, _, _ := strings.Cut(image, ":")
				if want := repo + "@" + built[image]; built[image] == "" || id != want {
					t.Errorf("%s: a container of %s has imageID %q, want %q (the digest make images built)", selector, image, id, want)
				}
			}
		}
		check(operatorNS, "app.kubernetes.io/name=holdfast-operator")
		check(ns, "holdfast.dev/cluster=pg")
		// The root is the image's, not this machine's: the sandbox's own
		// folder, on this machine, is not there.
		if out, err := e.kubectl("", "-n", ns, "exec", "pg-0", "-c", resources.ContainerPostgres, "--", "test", "-e", e.kubeconfig); err == nil {
			t.Errorf("pg-0 sees %s of the host: it runs over the host's root, not its image's (%s)", e.kubeconfig, out)
		}
		e.mustKubectl("", "-n", ns, "exec", "pg-0", "-c", resources.ContainerPostgres, "--", "test", "-x", "/usr/lib/postgresql/15/bin/postgres")
	})

	t.Run("holdfast status shows the cluster as its status says", func(t *testing.T) {
		run := func(args ...string) string {
			out, err := exec.Command(e.holdfast, append([]string{"status", "pg", "-n", ns, "--kubeconfig", e.kubeconfig}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("holdfast status %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		view := run()
		for _, section := range []string{"Cluster " + ns + "/pg", "Instances", "Replication", "Volumes", "Backups", "Operations (newest first)", "Certificates", "Conditions"} {
			if !strings.Contains(view, "\n"+section+"\n") && !strings.HasPrefix(view, section+"\n") {
				t.Errorf("the view lacks the section %q:\n%s", section, view)
			}
		}
		if strings.Contains(view, "\x1b[") {
			t.Errorf("colour codes in a pipe:\n%s", view)
		}
		var r struct {
			Cluster struct {
				Primary string `json:"primary"`
				Ready   int32  `json:"ready"`
			} `json:"cluster"`
			Instances []struct {
				Name string `json:"name"`
				Role string `json:"role"`
				Node string `json:"node"`
			} `json:"instances"`
		}
		if err := json.Unmarshal([]byte(run("-o", "json")), &r); err != nil {
			t.Fatal(err)
		}
		status := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.currentPrimary} {.status.readyInstances} {range .status.instances[*]}{.name}={.role} {end}`)
		got := fmt.Sprintf("%s %d ", r.Cluster.Primary, r.Cluster.Ready)
		for _, in := range r.Instances {
			got += in.Name + "=" + in.Role + " "
			if in.Node != "holdfast-sandbox" {
				t.Errorf("instance %s on node %q, want the sandbox's node from its pod", in.Name, in.Node)
			}
		}
		if strings.TrimSpace(got) != strings.TrimSpace(status) {
			t.Errorf("holdfast status -o json says %q, the cluster's status %q", got, status)
		}
	})

	t.Run("kubectl get -o wide adds the timeline, the lag and the last backup", func(t *testing.T) {
		poll(t, time.Minute, "the primary's timeline in the wide view", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o", "wide")
			if err != nil {
				return err
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 {
				return errorString(out)
			}
			for _, col := range []string{"TIMELINE", "LAG", "LAST BACKUP"} {
				if !strings.Contains(lines[0], col) {
					return errorString("no column " + col + " in " + lines[0])
				}
			}
			// Columns are aligned, and an empty one prints blank: read the
			// row where the header puts TIMELINE.
			at := strings.Index(lines[0], "TIMELINE")
			if at >= len(lines[1]) {
				return errorString("no timeline in " + lines[1])
			}
			if f := strings.Fields(lines[1][at:]); len(f) == 0 || f[0] != "1" {
				return errorString("timeline not 1 in " + lines[1])
			}
			return nil
		})
	})

	t.Run("a row written through -rw is on every replica and read through -ro", func(t *testing.T) {
		e.sql(t, e.serviceIP(t, "pg-rw"), "CREATE TABLE e2e (id int PRIMARY KEY, note text); INSERT INTO e2e VALUES (1, 'first')")
		for _, pod := range []string{"pg-1", "pg-2"} {
			e.waitRow(t, e.podIP(t, pod), 1, "first")
		}
		e.waitRow(t, e.serviceIP(t, "pg-ro"), 1, "first")
	})

	t.Run("a client verifies the primary through -rw by its Service name and the CA the cluster publishes", func(t *testing.T) {
		ca := e.mustKubectl("", "-n", ns, "get", "configmap", "pg-ca", "-o", `jsonpath={.data.ca\.crt}`)
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(ca)) {
			t.Fatalf("ConfigMap pg-ca holds no certificate: %q", ca)
		}
		serverSecret := e.mustKubectl("", "-n", ns, "get", "secret", "pg-server-tls", "-o", `jsonpath={.data.tls\.crt}`)
		certPEM, err := base64.StdEncoding.DecodeString(serverSecret)
		if err != nil {
			t.Fatal(err)
		}
		issued, err := pki.ParseCertificate(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require connect_timeout=5",
			e.serviceIP(t, "pg-rw"), e.secretValue(ns, "pg-app", "username"), e.secretValue(ns, "pg-app", "password")))
		if err != nil {
			t.Fatal(err)
		}
		// verify-full by the Service's DNS name; the host dials its address.
		cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "pg-rw." + ns + ".svc.cluster.local", MinVersion: tls.VersionTLS12}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("verify-full through pg-rw: %v", err)
		}
		defer conn.Close(ctx)
		var ssl bool
		var version string
		if err := conn.QueryRow(ctx, `SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl, &version); err != nil || !ssl {
			t.Fatalf("pg_stat_ssl: ssl=%v %v", ssl, err)
		}
		served := conn.PgConn().Conn().(*tls.Conn).ConnectionState().PeerCertificates[0]
		if served.SerialNumber.Cmp(issued.SerialNumber) != 0 {
			t.Errorf("served certificate serial %x, the Secret's %x", served.SerialNumber, issued.SerialNumber)
		}
		t.Logf("connected through pg-rw with %s, verified as pg-rw.%s.svc.cluster.local", version, ns)

		// psql, as the docs show it, from the host (which dials the
		// Service's address: the host's resolver does not know the
		// cluster's names) and from inside a pod, by name.
		rwName := "pg-rw." + ns + ".svc.cluster.local"
		caFile := filepath.Join(e.dir, "pg-ca.crt")
		if err := os.WriteFile(caFile, []byte(ca), 0o644); err != nil {
			t.Fatal(err)
		}
		password := e.secretValue(ns, "pg-app", "password")
		psql := filepath.Join(testutil.PostgresBinDir, "psql")
		query := "SELECT inet_server_addr() IS NOT NULL AND ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
		fromHost := exec.Command(psql, "host="+rwName+" hostaddr="+e.serviceIP(t, "pg-rw")+" dbname=app user=app sslmode=verify-full sslrootcert="+caFile+" connect_timeout=5",
			"-Atc", query)
		fromHost.Env = append(os.Environ(), "PGPASSWORD="+password)
		if out, err := fromHost.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "t" {
			t.Errorf("psql verify-full from the host: %v: %s", err, out)
		}
		inPod := func(sslmode string) (string, error) {
			return e.kubectl("", "-n", ns, "exec", "pg-1", "-c", resources.ContainerPostgres, "--", "env", "PGPASSWORD="+password, psql,
				"host="+rwName+" dbname=app user=app sslmode="+sslmode+" sslrootcert="+resources.SecretsMountPath+"/"+resources.TLSServerDir+"/ca.crt connect_timeout=5",
				"-Atc", query)
		}
		if out, err := inPod("verify-full"); err != nil || strings.TrimSpace(out) != "t" {
			t.Errorf("psql verify-full from pod pg-1 by the name %s: %v: %s", rwName, err, out)
		}
		// Plain text is refused, with postgres's own words.
		out, err := inPod("disable")
		if err == nil || !strings.Contains(out, "no pg_hba.conf entry") || !strings.Contains(out, "no encryption") {
			t.Errorf("psql sslmode=disable from pod pg-1 was not refused by pg_hba: %v: %s", err, out)
		}
		plain, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 dbname=app user=app password=%s sslmode=disable connect_timeout=5", e.serviceIP(t, "pg-rw"), password))
		if err != nil {
			t.Fatal(err)
		}
		if c, err := pgx.ConnectConfig(ctx, plain); err == nil {
			c.Close(ctx)
			t.Error("a plaintext connection through pg-rw was let in")
		} else if !strings.Contains(err.Error(), "no pg_hba.conf entry") {
			t.Errorf("a plaintext connection through pg-rw failed for another reason than pg_hba: %v", err)
		}

		// Replication: encrypted, and authenticated by the replication
		// certificate (pg_hba admits the role only by its certificate).
		e.withConn(t, "both standbys streaming over TLS with the replication certificate", "pg", e.podIP(t, primary), true, func(ctx context.Context, conn *pgx.Conn) error {
			var encrypted, byCert, all int
			if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE s.client_dn = '/CN=streaming_replica' AND r.usename = 'streaming_replica'), count(*)
				FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)`).Scan(&encrypted, &byCert, &all); err != nil {
				return err
			}
			if encrypted != 2 || byCert != 2 || all != 2 {
				return errorString(fmt.Sprintf("of %d replication connections %d encrypted and %d with the replication certificate, want 2 of 2", all, encrypted, byCert))
			}
			return nil
		})
	})

	t.Run("the WAL positions in status follow writes while nothing else changes", func(t *testing.T) {
		lsn := func() string {
			return e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.instances[?(@.role=="primary")].currentLSN}`)
		}
		before := lsn()
		e.sql(t, e.serviceIP(t, "pg-rw"), "CREATE TABLE positions AS SELECT g FROM generate_series(1, 10000) g")
		began := time.Now()
		poll(t, time.Minute, "the primary's currentLSN in status moved on from "+before, func() error {
			if now := lsn(); now == before || now == "" {
				return errorString("currentLSN " + now)
			}
			return nil
		})
		t.Logf("status showed the new position %s after the write", time.Since(began).Round(100*time.Millisecond))
	})

	t.Run("each instance serves its metrics, which follow the cluster", func(t *testing.T) {
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		for i := range 3 {
			pod := fmt.Sprintf("pg-%d", i)
			m := e.instanceMetrics(t, pod)
			recovery := 1.0
			if pod == primary {
				recovery = 0
			}
			for _, want := range []struct {
				name   string
				labels []string
				value  float64
			}{
				{"holdfast_pg_up", nil, 1},
				{"holdfast_pg_in_recovery", nil, recovery},
				{"holdfast_instance_fenced", nil, 0},
				{"holdfast_build_info", nil, 1},
			} {
				if v, ok := m.Value(want.name, want.labels...); !ok || v != want.value {
					t.Errorf("%s: %s = %v (present %v), want %v", pod, want.name, v, ok, want.value)
				}
			}
			for _, name := range []string{"holdfast_pg_timeline", "holdfast_volume_used_bytes", "holdfast_volume_size_bytes",
				"holdfast_pg_connections", "holdfast_pg_xid_age", "holdfast_pg_checkpoints_total", "holdfast_pg_archiver_archived_total"} {
				if _, ok := m.Value(name); !ok {
					t.Errorf("%s: no %s", pod, name)
				}
			}
			if pod != primary {
				continue
			}
			for j := range 3 {
				if standby := fmt.Sprintf("pg-%d", j); standby != primary {
					if _, ok := m.Value("holdfast_pg_standby_replay_lag_bytes", "standby", standby); !ok {
						t.Errorf("the primary reports no replay lag for %s", standby)
					}
				}
			}
			required, ok1 := m.Value("holdfast_pg_synchronous_standbys_required")
			streaming, ok2 := m.Value("holdfast_pg_synchronous_standbys")
			if !ok1 || !ok2 || streaming < required {
				t.Errorf("the primary counts %v synchronous standbys streaming (present %v), %v required (present %v)", streaming, ok2, required, ok1)
			}
		}
		// The data volume's usage follows what is written.
		used := func() float64 {
			v, _ := e.instanceMetrics(t, primary).Value("holdfast_volume_used_bytes", "volume", "data")
			return v
		}
		before := used()
		e.sql(t, e.serviceIP(t, "pg-rw"), "CREATE TABLE bulk AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 60000) g")
		poll(t, time.Minute, "the primary's volume usage to rise with 60 MB written", func() error {
			if now := used(); now < before+32<<20 {
				return errorString(fmt.Sprintf("holdfast_volume_used_bytes %v, was %v", now, before))
			}
			return nil
		})
		e.sql(t, e.serviceIP(t, "pg-rw"), "DROP TABLE bulk")

		// The operator's view of the same cluster.
		poll(t, time.Minute, "the operator's series of cluster pg", func() error {
			m, err := e.operatorMetrics()
			if err != nil {
				return err
			}
			for name, want := range map[string]float64{"holdfast_cluster_primary_available": 1, "holdfast_cluster_instances": 3, "holdfast_cluster_ready_instances": 3} {
				if v, ok := m.Value(name, "namespace", ns, "cluster", "pg"); !ok || v != want {
					return errorString(fmt.Sprintf("%s = %v (present %v), want %v", name, v, ok, want))
				}
			}
			if v, _ := m.Value("holdfast_certificate_expiry_timestamp_seconds", "namespace", ns, "cluster", "pg"); v < float64(time.Now().Unix()) {
				return errorString(fmt.Sprintf("holdfast_certificate_expiry_timestamp_seconds %v: not in the future", v))
			}
			return nil
		})
	})

	t.Run("a replica cut off from its primary lags in the primary's series, and catches up once healed", func(t *testing.T) {
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		replica := "pg-1"
		if primary == replica {
			replica = "pg-2"
		}
		lag := func() (float64, bool) {
			return e.instanceMetrics(t, primary).Value("holdfast_pg_standby_replay_lag_bytes", "standby", replica)
		}
		uid := e.mustKubectl("", "-n", ns, "get", "pod", replica, "-o", "jsonpath={.metadata.uid}")
		heal, err := faults.CutFrom(network.Namespace(uid), e.podIP(t, primary))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = heal() })
		// About 24 MB of WAL that the cut replica cannot receive; the other
		// replica keeps the quorum, if there is one.
		e.sql(t, e.serviceIP(t, "pg-rw"), "CREATE TABLE lagging AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 20000) g")
		poll(t, 30*time.Second, replica+"'s replay lag to exceed 16 MB in the primary's series", func() error {
			if v, ok := lag(); !ok || v < 16<<20 {
				return fmt.Errorf("holdfast_pg_standby_replay_lag_bytes{standby=%q} = %v (present %v)", replica, v, ok)
			}
			return nil
		})
		if err := heal(); err != nil {
			t.Fatal(err)
		}
		poll(t, 2*time.Minute, replica+"'s replay lag to fall back under 1 MB once healed", func() error {
			if v, ok := lag(); !ok || v >= 1<<20 {
				return fmt.Errorf("holdfast_pg_standby_replay_lag_bytes{standby=%q} = %v (present %v)", replica, v, ok)
			}
			return nil
		})
		e.sql(t, e.serviceIP(t, "pg-rw"), "DROP TABLE lagging")
	})

	t.Run("parameters reach every instance; a refused one leaves the cluster serving", func(t *testing.T) {
		patch := func(params string) {
			e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"postgresql":{"parameters":`+params+`}}}`)
		}
		show := func(pod, setting, want string) {
			t.Helper()
			e.withConn(t, setting+" "+want, "pg", e.podIP(t, pod), true, func(ctx context.Context, conn *pgx.Conn) error {
				var v string
				if err := conn.QueryRow(ctx, "SHOW "+setting).Scan(&v); err != nil {
					return err
				}
				if v != want {
					return errorString(setting + " " + v)
				}
				return nil
			})
		}
		pods := []string{"pg-0", "pg-1", "pg-2"}
		began := time.Now()
		patch(`{"work_mem":"8MB"}`)
		for _, pod := range pods {
			show(pod, "work_mem", "8MB")
		}
		t.Logf("work_mem 8MB on all 3 instances %s after the patch", time.Since(began).Round(10*time.Millisecond))

		// A setting that needs a restart rolls the cluster: TestOperationsInSandbox.

		patch(`{"max_connections":"lots"}`)
		poll(t, time.Minute, "Degraded InvalidParameter with postgres's words", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o",
				`jsonpath={.status.phase} {.status.conditions[?(@.type=="Degraded")].reason}: {.status.conditions[?(@.type=="Degraded")].message}`)
			if err == nil && (!strings.HasPrefix(out, "Degraded InvalidParameter: ") || !strings.Contains(out, `invalid value for parameter "max_connections": "lots"`)) {
				err = errorString(out)
			}
			return err
		})
		e.sql(t, e.serviceIP(t, "pg-rw"), "INSERT INTO e2e VALUES (100, 'while a setting is refused')")
		show("pg-0", "max_connections", "100")

		// Back to the manifest's settings: nothing pending, nothing refused.
		patch(`{"work_mem":null,"max_connections":null}`)
		e.waitReady(t, "pg", 3, 2*time.Minute)
		if out := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.instances[*].pendingRestart}`); out != "" {
			t.Errorf("still pending after the settings went back: %s", out)
		}
		show("pg-1", "work_mem", "4MB")
	})

	t.Run("a deleted replica comes back with the same name, claim and data", func(t *testing.T) {
		oldUID := e.mustKubectl("", "-n", ns, "get", "pod", "pg-2", "-o", "jsonpath={.metadata.uid}")
		volume := e.mustKubectl("", "-n", ns, "get", "pvc", "pgdata-pg-2", "-o", "jsonpath={.spec.volumeName}")
		e.mustKubectl("", "-n", ns, "delete", "pod", "pg-2", "--wait=false")
		poll(t, 3*time.Minute, "pg-2 back and ready", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pod", "pg-2", "-o",
				`jsonpath={.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}`)
			if err != nil {
				return err
			}
			if uid, ready, _ := strings.Cut(out, " "); uid == oldUID || ready != "True" {
				return errorString("pg-2: " + out)
			}
			return nil
		})
		if now := e.mustKubectl("", "-n", ns, "get", "pvc", "pgdata-pg-2", "-o", "jsonpath={.spec.volumeName}"); now != volume {
			t.Errorf("pg-2's claim is bound to %s, was %s", now, volume)
		}
		e.waitRow(t, e.podIP(t, "pg-2"), 1, "first")
		e.waitReady(t, "pg", 3, 3*time.Minute)
	})

	t.Run("scaling 3 to 5 to 2 creates and removes pods in order and keeps the claims", func(t *testing.T) {
		watch := e.watchPods(t, "pg")
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"instances":5}}`)
		e.waitReady(t, "pg", 5, 6*time.Minute)
		e.sql(t, e.serviceIP(t, "pg-rw"), "INSERT INTO e2e VALUES (2, 'after scale-up')")
		e.waitRow(t, e.podIP(t, "pg-4"), 2, "after scale-up")
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"instances":2}}`)
		poll(t, 3*time.Minute, "pods pg-2 to pg-4 gone", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster=pg", "-o", "name")
			if err != nil {
				return err
			}
			if out != "pod/pg-0\npod/pg-1" {
				return errorString(out)
			}
			return nil
		})
		e.waitReady(t, "pg", 2, 3*time.Minute)
		for _, v := range watch.stop() {
			t.Error(v)
		}
		for i := range 5 {
			if _, err := e.kubectl("", "-n", ns, "get", "pvc", fmt.Sprintf("pgdata-pg-%d", i)); err != nil {
				t.Errorf("claim of pg-%d gone after scaling down (whenScaled: Retain): %v", i, err)
			}
		}
		e.waitRow(t, e.serviceIP(t, "pg-rw"), 2, "after scale-up")
	})

	t.Run("deleting a cluster keeps its claims by default and removes them when asked", func(t *testing.T) {
		e.mustKubectl("", "-n", ns, "delete", "pgc", "pg")
		poll(t, 2*time.Minute, "pg's pods gone", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster=pg", "-o", "name")
			if err == nil && out != "" {
				err = errorString(out)
			}
			return err
		})
		for i := range 5 {
			if _, err := e.kubectl("", "-n", ns, "get", "pvc", fmt.Sprintf("pgdata-pg-%d", i)); err != nil {
				t.Errorf("claim of pg-%d gone after the cluster was deleted (whenDeleted: Retain): %v", i, err)
			}
		}
		e.mustKubectl(clusterManifest("gone", 1, `
    retentionPolicy:
      whenDeleted: Delete`), "apply", "-f", "-")
		e.waitReady(t, "gone", 1, 4*time.Minute)
		e.mustKubectl("", "-n", ns, "delete", "pgc", "gone")
		poll(t, 2*time.Minute, "gone's claim removed", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pvc", "pgdata-gone-0", "-o", "name")
			if err == nil {
				return errorString("still there: " + out)
			}
			if !strings.Contains(out, "NotFound") {
				return errorString(out)
			}
			return nil
		})
		e.mustKubectl("", "-n", ns, "delete", "pvc", "--all")
	})

	t.Run("a bad image gives a clear status, not a hang", func(t *testing.T) {
		// A tag the sandbox's registry does not have: the registry's answer is the message.
		m := strings.Replace(clusterManifest("bad", 1, ""), "postgresVersion: 15", "postgresVersion: 15\n  image: ghcr.io/holdfast-dev/holdfast-postgres:15-no-such-tag", 1)
		e.mustKubectl(m, "apply", "-f", "-")
		poll(t, 2*time.Minute, "the cluster Degraded, naming the image", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pgc", "bad", "-o",
				`jsonpath={.status.phase} {.status.conditions[?(@.type=="Degraded")].message}`)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(out, "Degraded ") || !strings.Contains(out, "15-no-such-tag") || !strings.Contains(out, "MANIFEST_UNKNOWN") {
				return errorString(out)
			}
			return nil
		})
		reason := e.mustKubectl("", "-n", ns, "get", "pod", "bad-0", "-o", `jsonpath={.status.containerStatuses[0].state.waiting.reason}`)
		if reason != "ErrImagePull" && reason != "ImagePullBackOff" {
			t.Errorf("bad-0's container waits with reason %q, want ErrImagePull or ImagePullBackOff", reason)
		}
		// The fix reaches the pod that never started: there is no primary
		// for a rolling update to wait for, and the operator replaces it.
		uid := e.mustKubectl("", "-n", ns, "get", "pod", "bad-0", "-o", "jsonpath={.metadata.uid}")
		e.mustKubectl("", "-n", ns, "patch", "pgc", "bad", "--type=json", "-p", `[{"op":"remove","path":"/spec/image"}]`)
		e.waitReady(t, "bad", 1, 4*time.Minute)
		if now := e.mustKubectl("", "-n", ns, "get", "pod", "bad-0", "-o", "jsonpath={.metadata.uid}"); now == uid {
			t.Errorf("bad-0 is the pod that could not pull its image")
		}
		if h := e.mustKubectl("", "-n", ns, "get", "pgc", "bad", "-o", "jsonpath={.status.history[0].kind} {.status.history[0].reason}"); !strings.Contains(h, "RollingUpdate bad-0 runs an older pod template and has never been ready") {
			t.Errorf("history: %q, want the replacement on record", h)
		}
		// The operator counts the operation on its metrics endpoint.
		poll(t, time.Minute, "the leading operator's metrics counting the replacement", func() error {
			metrics, err := e.operatorMetrics()
			if err != nil {
				return err
			}
			if v, _ := metrics.Value("holdfast_operations_total", "namespace", ns, "cluster", "bad", "kind", "RollingUpdate", "outcome", "Succeeded"); v != 1 {
				return errorString(fmt.Sprintf("holdfast_operations_total of the replacement: %v, want 1", v))
			}
			return nil
		})
		e.mustKubectl("", "-n", ns, "delete", "pgc", "bad")
		e.mustKubectl("", "-n", ns, "delete", "pvc", "--all")
	})
	t.Run("kubectl holdfast verbs: psql, logs, report, hibernate", e.userVerbs)
	t.Run("a replica whose WAL the primary recycled while it was scaled away clones afresh", e.replicaWhoseWALIsGoneRejoins)
}

func clusterManifest(name string, instances int, storageExtra string) string {
	return fmt.Sprintf(`apiVersion: holdfast.dev/v1alpha1
kind: PostgresCluster
metadata:
  name: %s
  namespace: %s
spec:
  instances: %d
  postgresVersion: 15
  storage:
    size: 1Gi%s
  resources:
    requests:
      memory: 128Mi
  postgresql:
    parameters:
      shared_buffers: 16MB
`, name, ns, instances, storageExtra)
}

// waitReady waits for the cluster to report n ready instances and Healthy.
func (e *sandboxEnv) waitReady(t *testing.T, cluster string, n int, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, fmt.Sprintf("%s: %d instances ready and Healthy", cluster, n), func() error {
		// The conditions and the instances' messages come along, so that a
		// timeout says why.
		out, err := e.kubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.status.readyInstances} {.status.phase}"+
			"{range .status.conditions[*]} | {.type}={.status} {.reason}: {.message}{end}"+
			"{range .status.instances[*]} | {.name}: {.message}{end}")
		if err != nil {
			return err
		}
		if got, _, _ := strings.Cut(out, " | "); got != fmt.Sprintf("%d Healthy", n) {
			return errorString(out)
		}
		return nil
	})
}

func (e *sandboxEnv) serviceIP(t *testing.T, svc string) string {
	t.Helper()
	return e.mustKubectl("", "-n", ns, "get", "service", svc, "-o", "jsonpath={.spec.clusterIP}")
}

func (e *sandboxEnv) podIP(t *testing.T, pod string) string {
	t.Helper()
	return e.mustKubectl("", "-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.podIP}")
}

// sql runs statements at host as pg's app user, retrying until the Service routes there.
func (e *sandboxEnv) sql(t *testing.T, host, statements string) {
	t.Helper()
	e.sqlAs(t, "pg", host, statements)
}

// waitRow waits until host serves the row id with note.
func (e *sandboxEnv) waitRow(t *testing.T, host string, id int, note string) {
	t.Helper()
	e.waitRowAs(t, "pg", host, id, note)
}

// podWatch records a cluster's pods a few times a second and checks the
// StatefulSet's ordering: a pod exists only when every lower ordinal is
// ready, and pods go from the highest ordinal down.
type podWatch struct {
	done       chan struct{}
	violations chan []string
}

func (e *sandboxEnv) watchPods(t *testing.T, cluster string) *podWatch {
	w := &podWatch{done: make(chan struct{}), violations: make(chan []string, 1)}
	go func() {
		var found []string
		seen := map[int]bool{}
		first := true
		for {
			select {
			case <-w.done:
				w.violations <- found
				return
			case <-time.After(250 * time.Millisecond):
			}
			out, err := e.kubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster="+cluster, "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}`)
			if err != nil {
				continue
			}
			ready := map[int]bool{}
			exists := map[int]bool{}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				var ord int
				if _, err := fmt.Sscanf(f[0], cluster+"-%d", &ord); err != nil {
					continue
				}
				exists[ord] = true
				ready[ord] = len(f) > 1 && f[1] == "True"
			}
			var ords []int
			for o := range exists {
				ords = append(ords, o)
			}
			slices.Sort(ords)
			if first {
				// Pods there when the watch began were not created under it.
				for _, o := range ords {
					seen[o] = true
				}
				first = false
			}
			for _, o := range ords {
				for lower := 0; lower < o; lower++ {
					if !exists[lower] {
						found = append(found, fmt.Sprintf("%s-%d exists while %s-%d does not", cluster, o, cluster, lower))
					} else if !seen[o] && !ready[lower] {
						// OrderedReady: a pod is created only once its predecessors are ready.
						found = append(found, fmt.Sprintf("%s-%d appeared while %s-%d was not ready", cluster, o, cluster, lower))
					}
				}
			}
			for _, o := range ords {
				seen[o] = true
			}
		}
	}()
	return w
}

func (w *podWatch) stop() []string {
	close(w.done)
	v := <-w.violations
	// One report per kind of violation is enough.
	slices.Sort(v)
	return slices.Compact(v)
}

// dumpState logs what a failed step leaves behind.
func (e *sandboxEnv) dumpState(t *testing.T) {
	out, _ := e.kubectl("", "get", "pods,pgc,pvc,events", "-A", "-o", "wide")
	t.Logf("cluster state:\n%s", out)
}
