// Package pgbackrest drives pgBackRest (2.45, Debian's) inside an instance's
// pod: its configuration for an S3 repository, WAL archiving, physical
// backups and their description, and restores to a point in time.
//
// pgBackRest runs with pg1-path local and no repository host, so it needs
// no SSH and no TLS server: every command runs in the pod whose data
// directory it reads or writes.
package pgbackrest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"time"

	"holdfast.dev/holdfast/internal/objectstore"
)

// Repo is a stanza in an S3 repository.
type Repo struct {
	Stanza   string
	Location objectstore.Location // the repository folder is Location.Prefix
	Cred     objectstore.Credentials
	// CAFile is where Cred.CA is as a file; pgBackRest reads it from there.
	CAFile string
	// StorageHost, when set, is the address pgBackRest connects to instead
	// of the endpoint's name, for a client that cannot resolve that name.
	// pgBackRest 2.45 then checks the certificate against the address,
	// which it does not name, so the check is off.
	StorageHost string
}

// Server is the postgres server pgBackRest reads or restores into.
type Server struct {
	DataDir   string
	SocketDir string
	Port      int
	User      string
	// SpoolDir keeps the asynchronous archiver's queue; it belongs beside
	// the data directory, on the same volume, to survive a restart.
	SpoolDir string
	// LockDir is pgBackRest's lock folder, which must be writable.
	LockDir string
}

// Config renders pgbackrest.conf. It holds the repository's keys, so it is
// written 0600: pgBackRest refuses secure options on its command line.
func Config(r Repo, s Server) (string, error) {
	u, err := url.Parse(r.Location.Endpoint)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("repository endpoint %q: want https://host[:port]", r.Location.Endpoint)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	region := r.Location.Region
	if region == "" {
		region = "us-east-1"
	}
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	b.WriteString("# Written by the Holdfast instance manager; edits are overwritten.\n[global]\n")
	line("repo1-type", "s3")
	line("repo1-path", "/"+strings.Trim(r.Location.Prefix, "/"))
	line("repo1-s3-bucket", r.Location.Bucket)
	line("repo1-s3-endpoint", u.Hostname())
	line("repo1-storage-port", port)
	line("repo1-s3-region", region)
	line("repo1-s3-uri-style", "path")
	line("repo1-s3-key", r.Cred.AccessKeyID)
	line("repo1-s3-key-secret", r.Cred.SecretAccessKey)
	switch {
	case r.StorageHost != "":
		line("repo1-storage-host", r.StorageHost)
		line("repo1-storage-verify-tls", "n")
	case len(r.Cred.CA) > 0:
		line("repo1-storage-ca-file", r.CAFile)
	}
	// Holdfast expires sets itself, by Backup; pgBackRest's own retention
	// counts whole days and would expire sets a Backup still names.
	line("repo1-retention-full", "9999999")
	line("compress-type", "lz4")
	line("process-max", "2")
	line("start-fast", "y")
	line("archive-async", "y")
	line("spool-path", s.SpoolDir)
	line("lock-path", s.LockDir)
	line("log-level-console", "warn")
	line("log-level-stderr", "error")
	line("log-level-file", "off")
	// A store that does not answer fails the command in seconds, not minutes.
	line("io-timeout", "20")
	line("db-timeout", "60")
	fmt.Fprintf(&b, "\n[%s]\n", r.Stanza)
	line("pg1-path", s.DataDir)
	line("pg1-socket-path", s.SocketDir)
	line("pg1-port", fmt.Sprint(s.Port))
	line("pg1-user", s.User)
	return b.String(), nil
}

// ArchiveCommand is postgres's archive_command for the configuration at confPath.
func ArchiveCommand(confPath, stanza string) string {
	return fmt.Sprintf("pgbackrest --config=%s --stanza=%s archive-push %%p", confPath, stanza)
}

// RestoreCommand is postgres's restore_command reading the stanza's WAL archive.
func RestoreCommand(confPath, stanza string) string {
	return fmt.Sprintf(`pgbackrest --config=%s --stanza=%s archive-get %%f "%%p"`, confPath, stanza)
}

// Tool runs pgbackrest with the given configuration; the command it
// returns carries how to connect to postgres.
type Tool func(ctx context.Context, args ...string) *exec.Cmd

// run runs one pgbackrest command and returns its output, with its last
// error line in the error.
func run(ctx context.Context, tool Tool, args ...string) ([]byte, error) {
	cmd := tool(ctx, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(string(out))
		}
		return out, fmt.Errorf("pgbackrest %s: %w: %s", strings.Join(args, " "), err, lastLines(msg, 3))
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// StanzaCreate makes the stanza in the repository; on an existing, valid
// stanza it does nothing.
func StanzaCreate(ctx context.Context, tool Tool, stanza string) error {
	_, err := run(ctx, tool, "--stanza="+stanza, "stanza-create")
	return err
}

// StanzaCreateOffline makes the stanza from the data directory alone,
// before postgres runs (pgBackRest reads its control file).
func StanzaCreateOffline(ctx context.Context, tool Tool, stanza, dataDir string) error {
	_, err := run(ctx, tool, "--stanza="+stanza, "--pg1-path="+dataDir, "--no-online", "stanza-create")
	return err
}

// Check proves that WAL reaches the archive: it switches WAL and waits for
// the segment to be archived.
func Check(ctx context.Context, tool Tool, stanza string) error {
	_, err := run(ctx, tool, "--stanza="+stanza, "check")
	return err
}

// Set describes one backup set as `pgbackrest info` tells it.
type Set struct {
	Label      string    `json:"label"`
	Type       string    `json:"type"`
	StartedAt  time.Time `json:"startedAt"`
	StoppedAt  time.Time `json:"stoppedAt"`
	BeginWAL   string    `json:"beginWAL"`
	EndWAL     string    `json:"endWAL"`
	BeginLSN   string    `json:"beginLSN"`
	EndLSN     string    `json:"endLSN"`
	Size       int64     `json:"size"`       // of the database
	StoredSize int64     `json:"storedSize"` // in the repository, compressed
	Annotation map[string]string
}

// AnnotationKey tags each set with the Backup that made it.
const AnnotationKey = "holdfast-backup"

// Backup takes a backup of typ (full, diff or incr), tagged id, and
// returns its set.
func Backup(ctx context.Context, tool Tool, stanza, typ, id string) (Set, error) {
	if _, err := run(ctx, tool, "--stanza="+stanza, "--type="+typ, "--annotation="+AnnotationKey+"="+id, "backup"); err != nil {
		return Set{}, err
	}
	sets, err := Info(ctx, tool, stanza)
	if err != nil {
		return Set{}, err
	}
	for _, s := range slices.Backward(sets) {
		if s.Annotation[AnnotationKey] == id {
			return s, nil
		}
	}
	return Set{}, fmt.Errorf("pgbackrest info lists no set annotated %s=%s", AnnotationKey, id)
}

// Expire removes a set, and the sets that depend on it, from the repository.
func Expire(ctx context.Context, tool Tool, stanza, label string) error {
	_, err := run(ctx, tool, "--stanza="+stanza, "--set="+label, "expire")
	return err
}

// info is the part of `pgbackrest info --output=json` Holdfast reads.
type info struct {
	Name   string `json:"name"`
	Backup []struct {
		Label   string `json:"label"`
		Type    string `json:"type"`
		Archive struct {
			Start string `json:"start"`
			Stop  string `json:"stop"`
		} `json:"archive"`
		LSN struct {
			Start string `json:"start"`
			Stop  string `json:"stop"`
		} `json:"lsn"`
		Timestamp struct {
			Start int64 `json:"start"`
			Stop  int64 `json:"stop"`
		} `json:"timestamp"`
		Info struct {
			Size       int64 `json:"size"`
			Repository struct {
				Size int64 `json:"size"`
			} `json:"repository"`
		} `json:"info"`
		Annotation map[string]string `json:"annotation"`
	} `json:"backup"`
}

// Info lists the stanza's sets, oldest first.
func Info(ctx context.Context, tool Tool, stanza string) ([]Set, error) {
	out, err := run(ctx, tool, "--stanza="+stanza, "--output=json", "info")
	if err != nil {
		return nil, err
	}
	return parseInfo(out, stanza)
}

func parseInfo(out []byte, stanza string) ([]Set, error) {
	var stanzas []info
	if err := json.Unmarshal(out, &stanzas); err != nil {
		return nil, fmt.Errorf("reading pgbackrest info: %w", err)
	}
	for _, st := range stanzas {
		if st.Name != stanza {
			continue
		}
		var sets []Set
		for _, b := range st.Backup {
			sets = append(sets, Set{
				Label: b.Label, Type: b.Type,
				StartedAt: time.Unix(b.Timestamp.Start, 0).UTC(), StoppedAt: time.Unix(b.Timestamp.Stop, 0).UTC(),
				BeginWAL: b.Archive.Start, EndWAL: b.Archive.Stop, BeginLSN: b.LSN.Start, EndLSN: b.LSN.Stop,
				Size: b.Info.Size, StoredSize: b.Info.Repository.Size, Annotation: b.Annotation,
			})
		}
		return sets, nil
	}
	return nil, fmt.Errorf("pgbackrest info knows no stanza %s", stanza)
}

// Target is a point in time to recover to; the zero Target recovers to
// the end of the archive.
type Target struct {
	Time string `json:"time,omitempty"` // a timestamp postgres reads, with its zone: 2026-11-26 10:00:00.123456+00
	LSN  string `json:"lsn,omitempty"`  // 0/5000138
}

// Restore restores set label of the stanza into the empty dataDir, set up
// to recover to target and then promote (a new timeline). restoreCommand
// is the restore_command the server recovers with.
func Restore(ctx context.Context, tool Tool, stanza, label, dataDir, restoreCommand string, target Target) error {
	args := []string{"--stanza=" + stanza, "--set=" + label, "--pg1-path=" + dataDir,
		"--recovery-option=restore_command=" + restoreCommand}
	switch {
	case target.Time != "" && target.LSN != "":
		return errors.New("a recovery target is a time or an LSN, not both")
	case target.Time != "":
		args = append(args, "--type=time", "--target="+target.Time, "--target-action=promote")
	case target.LSN != "":
		args = append(args, "--type=lsn", "--target="+target.LSN, "--target-action=promote")
	}
	_, err := run(ctx, tool, append(args, "restore")...)
	return err
}
