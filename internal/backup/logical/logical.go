// Package logical takes and restores logical backups: pg_dump of each
// database in custom format, and pg_dumpall of the roles without their
// passwords, streamed to and from a backup repository.
//
// A backup's folder holds globals.sql, one <n>.dump per database, and
// manifest.json, written last: a folder without a manifest is not a backup.
package logical

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"holdfast.dev/holdfast/internal/objectstore"
)

// Tools runs the postgres client programs against the server being dumped
// or restored into. The commands it returns must already carry how to
// connect as a superuser (PGHOST, PGPORT, PGUSER, PGPASSFILE).
type Tools func(ctx context.Context, name string, args ...string) *exec.Cmd

// Manifest describes a finished logical backup.
type Manifest struct {
	Format        int        `json:"format"`
	ServerVersion int        `json:"serverVersion"` // server_version_num
	StartedAt     time.Time  `json:"startedAt"`
	StoppedAt     time.Time  `json:"stoppedAt"`
	Globals       string     `json:"globals"`
	Databases     []Database `json:"databases"`
}

// Database is one dumped database.
type Database struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Bytes int64  `json:"bytes"`
}

// Size is the bytes the backup's dumps occupy.
func (m Manifest) Size() int64 {
	var n int64
	for _, d := range m.Databases {
		n += d.Bytes
	}
	return n
}

const (
	manifestFile = "manifest.json"
	globalsFile  = "globals.sql"
	format       = 1
)

// Dump writes a logical backup of databases to store. serverVersion is
// the server's server_version_num; a restore needs tools at least as new.
func Dump(ctx context.Context, store *objectstore.Store, tools Tools, databases []string, serverVersion int) (Manifest, error) {
	m := Manifest{Format: format, ServerVersion: serverVersion, StartedAt: time.Now().UTC(), Globals: globalsFile}
	if _, err := stream(ctx, store, globalsFile, tools(ctx, "pg_dumpall", "--globals-only", "--no-role-passwords", "--no-tablespaces")); err != nil {
		return m, fmt.Errorf("dumping the roles: %w", err)
	}
	for i, db := range databases {
		file := strconv.Itoa(i) + ".dump"
		n, err := stream(ctx, store, file, tools(ctx, "pg_dump", "--format=custom", "--dbname="+db))
		if err != nil {
			return m, fmt.Errorf("dumping database %s: %w", db, err)
		}
		m.Databases = append(m.Databases, Database{Name: db, File: file, Bytes: n})
	}
	m.StoppedAt = time.Now().UTC()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	if _, err := store.Put(ctx, manifestFile, bytes.NewReader(b)); err != nil {
		return m, err
	}
	return m, nil
}

// stream runs cmd and uploads what it prints. A failed command fails the
// upload too: its output is not trusted even if the store took it.
func stream(ctx context.Context, store *objectstore.Store, name string, cmd *exec.Cmd) (int64, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", cmd.Args[0], err)
	}
	n, putErr := store.Put(ctx, name, out)
	if putErr != nil {
		// Unblock the command if it is still writing.
		_, _ = io.Copy(io.Discard, out)
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%s: %w: %s", cmd.Args[0], err, lastLine(stderr.String()))
	}
	return n, putErr
}

// ReadManifest reads the manifest of the backup in store.
func ReadManifest(ctx context.Context, store *objectstore.Store) (Manifest, error) {
	var m Manifest
	r, err := store.Get(ctx, manifestFile)
	if err != nil {
		if objectstore.IsNotFound(err) {
			return m, fmt.Errorf("%s holds no finished logical backup (no %s)", store.Location(), manifestFile)
		}
		return m, err
	}
	defer r.Close()
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return m, fmt.Errorf("reading the manifest of %s: %w", store.Location(), err)
	}
	if m.Format != format {
		return m, fmt.Errorf("the backup at %s has format %d; this version reads %d", store.Location(), m.Format, format)
	}
	return m, nil
}

// Restore replays the backup m (read by ReadManifest) in store into an
// empty server that has its own superuser: first the roles, then every
// database with its owner.
func Restore(ctx context.Context, store *objectstore.Store, m Manifest, tools Tools) error {
	if err := restoreGlobals(ctx, store, tools, m.Globals); err != nil {
		return err
	}
	for _, db := range m.Databases {
		args := []string{"--exit-on-error", "--dbname=postgres"}
		if db.Name != "postgres" {
			// The database is made as it was: encoding, locale, owner.
			args = append(args, "--create")
		}
		r, err := store.Get(ctx, db.File)
		if err != nil {
			return err
		}
		cmd := tools(ctx, "pg_restore", args...)
		cmd.Stdin = r
		out, err := cmd.CombinedOutput()
		r.Close()
		if err != nil {
			return fmt.Errorf("restoring database %s: %w: %s", db.Name, err, lastLine(string(out)))
		}
	}
	return nil
}

// restoreGlobals creates the backup's roles. The new server already has
// its own superuser (and may have other roles of the same names), so
// "already exists" is expected; any other error fails the restore.
func restoreGlobals(ctx context.Context, store *objectstore.Store, tools Tools, file string) error {
	r, err := store.Get(ctx, file)
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := tools(ctx, "psql", "--no-psqlrc", "--quiet", "--dbname=postgres", "--file=-")
	cmd.Stdin = r
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("restoring the roles: %w: %s", err, lastLine(stderr.String()))
	}
	if bad := unexpectedErrors(stderr.String()); len(bad) > 0 {
		return fmt.Errorf("restoring the roles: %s", strings.Join(bad, "; "))
	}
	return nil
}

// unexpectedErrors lists psql's ERROR lines other than "already exists".
func unexpectedErrors(stderr string) []string {
	var bad []string
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "ERROR:") && !strings.Contains(line, "already exists") {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	return bad
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
