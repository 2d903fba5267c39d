package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"

	"holdfast.dev/holdfast/internal/rig/testutil"
)

// userVerbs runs holdfast's psql, logs, report and hibernate against a
// 2-instance cluster of its own, as a user types them.
func (e *sandboxEnv) userVerbs(t *testing.T) {
	const cluster = "verbs"
	e.mustKubectl(clusterManifest(cluster, 2, ""), "apply", "-f", "-")
	t.Cleanup(func() {
		_, _ = e.kubectl("", "-n", ns, "delete", "pgc", cluster, "--ignore-not-found", "--wait=true", "--timeout=2m")
		_, _ = e.kubectl("", "-n", ns, "delete", "pvc", "-l", "holdfast.dev/cluster="+cluster, "--wait=false")
	})
	e.waitReady(t, cluster, 2, 6*time.Minute)

	// holdfast runs `holdfast VERB verbs -n e2e --kubeconfig K ARGS...`,
	// with stdin if given, and gives its output and error.
	holdfast := func(t *testing.T, timeout time.Duration, stdin, verb string, args ...string) (stdout, stderr string, err error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, e.holdfast, append([]string{verb, cluster, "-n", ns, "--kubeconfig", e.kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return out.String(), errOut.String(), err
	}
	mustHoldfast := func(t *testing.T, timeout time.Duration, stdin, verb string, args ...string) (stdout, stderr string) {
		t.Helper()
		stdout, stderr, err := holdfast(t, timeout, stdin, verb, args...)
		if err != nil {
			t.Fatalf("holdfast %s %s %v: %v\n%s%s", verb, cluster, args, err, stdout, stderr)
		}
		return stdout, stderr
	}
	sql := func(t *testing.T, args ...string) string {
		t.Helper()
		out, _ := mustHoldfast(t, time.Minute, "", "psql", args...)
		return strings.TrimSpace(out)
	}

	t.Run("psql reaches the primary, a replica with --replica, and exits as psql does", func(t *testing.T) {
		if got := sql(t, "--", "-Atc", "SELECT pg_is_in_recovery()"); got != "f" {
			t.Errorf("pg_is_in_recovery() through psql: %q, want f (the primary)", got)
		}
		if got := sql(t, "--replica", "--", "-Atc", "SELECT pg_is_in_recovery()"); got != "t" {
			t.Errorf("pg_is_in_recovery() through psql --replica: %q, want t (a replica)", got)
		}
		sql(t, "--", "-c", "CREATE TABLE t(x int)")
		sql(t, "--", "-c", "INSERT INTO t VALUES (42)")
		// SQL on stdin, as from a script file.
		if out, _ := mustHoldfast(t, time.Minute, "SELECT x + 1 FROM t;\n", "psql", "--", "-At"); strings.TrimSpace(out) != "43" {
			t.Errorf("SQL on stdin: %q, want 43", out)
		}
		_, stderr, err := holdfast(t, time.Minute, "", "psql", "--", "-c", "SELECT * FROM no_such_table")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("failing SQL: %v, want a non-zero exit", err)
		}
		if !strings.Contains(stderr, `relation "no_such_table" does not exist`) {
			t.Errorf("failing SQL: stderr %q, want psql's error", stderr)
		}
		// psql's own code, carried through the API server's exec: a script
		// stopped on an error exits 3.
		_, _, err = holdfast(t, time.Minute, "SELECT 1;\nSELECT * FROM no_such_table;\n", "psql", "--", "-v", "ON_ERROR_STOP=1")
		if !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Errorf("a script stopped on an error: %v, want exit code 3, as psql's", err)
		}
	})

	pod := regexp.MustCompile(`^\[(verbs-[01])\] `)
	t.Run("logs prints each pod's lines after its name; --pretty renders the JSON ones", func(t *testing.T) {
		// A new instance's log is a few dozen lines: 3 of each.
		out, _ := mustHoldfast(t, time.Minute, "", "logs", "--tail", "3")
		seen := map[string]int{}
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			m := pod.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("a line with no pod's name: %q", line)
			}
			seen[m[1]]++
		}
		if seen["verbs-0"] != 3 || seen["verbs-1"] != 3 {
			t.Errorf("lines per pod with --tail 3: %v, want 3 of each\n%s", seen, out)
		}
		// All of it: what kubectl logs shows, each line after its pod.
		out, _ = mustHoldfast(t, time.Minute, "", "logs")
		for _, p := range []string{"verbs-0", "verbs-1"} {
			first, _, _ := strings.Cut(e.mustKubectl("", "-n", ns, "logs", p, "-c", "postgres"), "\n")
			if !strings.Contains(out, "["+p+"] "+first+"\n") {
				t.Errorf("logs lacks %s's first line %q", p, first)
			}
		}

		out, _ = mustHoldfast(t, time.Minute, "", "logs", "--tail", "50", "--pretty")
		rendered := regexp.MustCompile(`^\[verbs-[01]\] \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) (DEBUG|INFO |WARN |ERROR) `)
		n := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `{"level"`) {
				t.Errorf("a JSON line left raw by --pretty: %q", line)
			}
			if rendered.MatchString(line) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("--pretty rendered no instance manager line:\n%s", out)
		}
	})

	t.Run("logs --follow streams every pod's new lines until interrupted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, e.holdfast, "logs", cluster, "-n", ns, "--kubeconfig", e.kubeconfig, "--follow", "--tail", "1")
		// Ctrl-C, as a user stops it.
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 10 * time.Second
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// A line each server writes once logs follows: the streams open
		// on their own time, so it is written again until both show.
		marker := fmt.Sprintf("holdfast-e2e-follow-%d", time.Now().UnixNano())
		raise := "DO $$BEGIN RAISE LOG '" + marker + "'; END$$"
		seen := map[string]bool{}
		poll(t, 2*time.Minute, "the marker from both pods through logs --follow", func() error {
			sql(t, "--", "-c", raise)
			sql(t, "--replica", "--", "-c", raise)
			wait := time.After(2 * time.Second)
		read:
			for {
				select {
				case line, ok := <-lines:
					if !ok {
						t.Fatalf("logs --follow ended: %s", stderr.String())
					}
					if m := pod.FindStringSubmatch(line); m != nil && strings.Contains(line, "LOG:  "+marker) {
						seen[m[1]] = true
					}
				case <-wait:
					break read
				}
			}
			if !seen["verbs-0"] || !seen["verbs-1"] {
				return errorString(fmt.Sprintf("marker seen from %v", seen))
			}
			return nil
		})
		cancel()
		// Wait says the context ended; the exit status is the command's.
		if err := cmd.Wait(); cmd.ProcessState == nil || !cmd.ProcessState.Success() {
			t.Errorf("logs --follow interrupted: %v, want a clean exit\n%s", err, stderr.String())
		}
	})

	t.Run("report writes a bundle with the cluster, its logs and no Secret value", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "r.tar.gz")
		out, _ := mustHoldfast(t, 5*time.Minute, "", "report", "-f", file)
		if first, _, _ := strings.Cut(out, "\n"); first != file {
			t.Errorf("report printed %q, want the file first", out)
		}
		t.Logf("report: %s", strings.TrimSpace(out))
		bundle, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer bundle.Close()
		files := testutil.ReadTarGz(t, bundle)
		byBase := map[string]string{}
		for name, content := range files {
			// Every file is under the bundle's folder.
			dir, rest, _ := strings.Cut(name, "/")
			if !strings.HasPrefix(dir, "holdfast-report-verbs-") {
				t.Errorf("%s: not under the bundle's folder", name)
			}
			byBase[rest] = content
		}
		for _, want := range []string{
			"cluster.yaml", "pods.yaml", "statefulset.yaml", "services.yaml", "pvcs.yaml", "backups.yaml",
			"backupschedules.yaml", "events.yaml", "secrets.yaml", "report.txt",
			"logs/verbs-0/postgres.log", "logs/verbs-1/postgres.log",
			"logs/verbs-0/bootstrap-controller.log", "logs/verbs-1/bootstrap-controller.log",
		} {
			if _, ok := byBase[want]; !ok {
				t.Errorf("the bundle lacks %s", want)
			}
		}
		if errs, ok := byBase["ERRORS.txt"]; ok {
			t.Errorf("an administrator's report misses parts:\n%s", errs)
		}
		var pgc holdfastv1.PostgresCluster
		if err := yaml.UnmarshalStrict([]byte(byBase["cluster.yaml"]), &pgc); err != nil {
			t.Errorf("cluster.yaml: %v", err)
		}
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.status.currentPrimary}")
		if pgc.Name != cluster || pgc.Spec.Instances != 2 || pgc.Status.CurrentPrimary != primary {
			t.Errorf("cluster.yaml: %s, %d instances, primary %q; want verbs, 2, %q", pgc.Name, pgc.Spec.Instances, pgc.Status.CurrentPrimary, primary)
		}
		for _, log := range []string{"logs/verbs-0/postgres.log", "logs/verbs-1/postgres.log"} {
			if strings.Count(byBase[log], "\n") < 5 {
				t.Errorf("%s: %q, want the instance's log", log, byBase[log])
			}
		}
		operatorLogs := 0
		for name, content := range byBase {
			if path.Dir(path.Dir(name)) == "operator" && strings.HasSuffix(name, ".log") && content != "" {
				operatorLogs++
			}
		}
		if operatorLogs < 2 {
			t.Errorf("%d operator logs in the bundle, want both operator pods'", operatorLogs)
		}
		if !strings.Contains(byBase["secrets.yaml"], "verbs-superuser") {
			t.Errorf("secrets.yaml does not name the superuser's Secret:\n%s", byBase["secrets.yaml"])
		}

		// The values of every Secret of the cluster, read as a user would.
		// A Secret's connection details (the user's name, the -rw
		// Service's, the port, the database) are named elsewhere too:
		// what must not leak is the rest (passwords, the URI that holds
		// one, keys, certificates).
		public := map[string]bool{"username": true, "host": true, "port": true, "dbname": true}
		values := 0
		for _, secret := range []string{"verbs-superuser", "verbs-app", "verbs-replication", "verbs-ca", "verbs-server-tls", "verbs-replication-tls"} {
			var data map[string]string
			if err := json.Unmarshal([]byte(e.mustKubectl("", "-n", ns, "get", "secret", secret, "-o", "jsonpath={.data}")), &data); err != nil {
				t.Fatalf("secret %s: %v", secret, err)
			}
			for key, b64 := range data {
				v, err := base64.StdEncoding.DecodeString(b64)
				if err != nil {
					t.Fatal(err)
				}
				if public[key] || len(v) < 8 {
					continue
				}
				values++
				for name, content := range files {
					if strings.Contains(content, string(v)) {
						t.Errorf("%s holds the value of %s's %s", name, secret, key)
					}
				}
			}
		}
		if values < 8 {
			t.Errorf("checked %d Secret values, want every password, key and certificate", values)
		}
	})

	t.Run("fence on stops a replica's postgres and keeps its pod, off brings it back; the primary is refused", func(t *testing.T) {
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.status.currentPrimary}")
		replica := cluster + "-1"
		if primary == replica {
			replica = cluster + "-0"
		}
		if _, stderr, err := holdfast(t, 2*time.Minute, "", "fence", primary, "on"); err == nil || !strings.Contains(stderr, primary+" is the primary: only a replica is fenced") {
			t.Errorf("fence of the primary %s: %v %q; want it refused, saying why", primary, err, stderr)
		}
		uid := e.mustKubectl("", "-n", ns, "get", "pod", replica, "-o", "jsonpath={.metadata.uid}")
		out, progress := mustHoldfast(t, 3*time.Minute, "", "fence", replica, "on")
		t.Logf("fence on: %s%s", progress, out)
		if !strings.Contains(out, replica+" is fenced") {
			t.Errorf("fence on printed %q, progress %q", out, progress)
		}
		if op := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.status.operation.kind} {.status.operation.phase} {.status.operation.instance}"); op != "Fence Fenced "+replica {
			t.Errorf("operation %q while fenced", op)
		}
		m := e.instanceMetrics(t, replica)
		if fenced, _ := m.Value("holdfast_instance_fenced"); fenced != 1 {
			t.Errorf("holdfast_instance_fenced %v on %s while fenced", fenced, replica)
		}
		if up, _ := m.Value("holdfast_pg_up"); up != 0 {
			t.Errorf("holdfast_pg_up %v on %s while fenced: its postgres runs", up, replica)
		}
		if now := e.mustKubectl("", "-n", ns, "get", "pod", replica, "-o", "jsonpath={.metadata.uid}"); now != uid {
			t.Errorf("the fenced replica's pod was replaced (%s, was %s)", now, uid)
		}
		sql(t, "--", "-c", "INSERT INTO t VALUES (43)")

		out, progress = mustHoldfast(t, 3*time.Minute, "", "fence", replica, "off")
		t.Logf("fence off: %s%s", progress, out)
		if !strings.Contains(out, replica+" is no longer fenced, and ready") {
			t.Errorf("fence off printed %q, progress %q", out, progress)
		}
		if rec := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.status.history[-1:].kind} {.status.history[-1:].outcome}"); rec != "Fence Succeeded" {
			t.Errorf("last operation %q after fence off; want a Fence that Succeeded", rec)
		}
		poll(t, time.Minute, replica+" to replay the row written while it was fenced", func() error {
			// --replica picks the cluster's one replica.
			out, stderr, err := holdfast(t, time.Minute, "", "psql", "--replica", "--", "-Atc", "SELECT count(*) FROM t WHERE x = 43")
			if got := strings.TrimSpace(out); err != nil || got != "1" {
				return fmt.Errorf("%s has %q rows of 43 (%v %s)", replica, got, err, stderr)
			}
			return nil
		})
		sql(t, "--", "-c", "DELETE FROM t WHERE x = 43")
	})

	t.Run("hibernate on stops every pod, off brings the cluster back with its data", func(t *testing.T) {
		out, progress := mustHoldfast(t, 15*time.Minute, "", "hibernate", "on")
		t.Logf("hibernate on: %s%s", progress, out)
		if !strings.Contains(out, "is hibernated") || !strings.Contains(progress, "Hibernate: Stopping") {
			t.Errorf("hibernate on printed %q, progress %q", out, progress)
		}
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.status.phase}"); got != "Hibernated" {
			t.Errorf("phase %q after hibernate on, want Hibernated", got)
		}
		if pods := e.mustKubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster="+cluster, "-o", "name"); pods != "" {
			t.Errorf("pods after hibernate on: %s", pods)
		}
		began := time.Now()
		if out, _ := mustHoldfast(t, time.Minute, "", "hibernate", "on"); !strings.Contains(out, "already hibernated") || time.Since(began) > 20*time.Second {
			t.Errorf("hibernate on again: %q after %s, want already hibernated at once", out, time.Since(began))
		}
		if _, stderr, err := holdfast(t, time.Minute, "", "psql", "--", "-c", "SELECT 1"); err == nil || !strings.Contains(stderr, "hibernated") {
			t.Errorf("psql on a hibernated cluster: %v %q, want it told", err, stderr)
		}

		out, progress = mustHoldfast(t, 15*time.Minute, "", "hibernate", "off")
		t.Logf("hibernate off: %s%s", progress, out)
		if !strings.Contains(out, "awake and Healthy") || !strings.Contains(progress, "Wake: Starting") {
			t.Errorf("hibernate off printed %q, progress %q", out, progress)
		}
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", cluster, "-o", "jsonpath={.status.phase} {.status.readyInstances}"); got != "Healthy 2" {
			t.Errorf("phase and ready %q after hibernate off, want Healthy 2", got)
		}
		if got := sql(t, "--", "-Atc", "SELECT x FROM t"); got != "42" {
			t.Errorf("the row written before hibernation: %q, want 42", got)
		}
	})
}
