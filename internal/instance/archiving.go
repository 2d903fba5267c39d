package instance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"holdfast.dev/holdfast/internal/postgres"
)

// archiving judges the WAL archiving of a running primary ordered to
// archive; nil for any other instance.
func (m *Manager) archiving(d *Desired, st *postgres.Status) *ArchiveReport {
	if d == nil || d.Archive == nil || st == nil || st.InRecovery || st.Archiver == nil {
		return nil
	}
	s := &m.stanza
	s.mu.Lock()
	key := stanzaKey(*d.Archive)
	failed, made := s.failed, s.made == key
	if s.failedFor != key {
		failed = nil
	}
	s.mu.Unlock()
	switch {
	case made:
	case failed != nil:
		return &ArchiveReport{Message: "creating the pgBackRest stanza: " + failed.Error()}
	default:
		return nil // not known yet: the stanza is being made
	}
	if a := st.Archiver; a.Failing {
		return &ArchiveReport{Message: fmt.Sprintf("WAL segment %s could not be archived: %s",
			a.LastFailedWAL, m.archivePushError(d.Archive.Stanza, a.LastFailedWAL))}
	}
	return &ArchiveReport{OK: true, Message: fmt.Sprintf("WAL is archived to stanza %s at %s", d.Archive.Stanza, d.Archive.Location)}
}

// maxArchiveMessage bounds pgBackRest's message in the report and the
// cluster's condition.
const maxArchiveMessage = 600

// archivePushError is pgBackRest's message for the segment that failed.
// The asynchronous archiver leaves it in its queue, as <segment>.error or,
// for a failure of the whole batch, global.error: a code line, then the
// message.
func (m *Manager) archivePushError(stanza, segment string) string {
	out := filepath.Join(m.spoolDir(), "archive", stanza, "out")
	for _, name := range []string{segment + ".error", "global.error"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			continue
		}
		code, msg, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		if msg == "" {
			msg = code
		}
		// An S3 refusal carries the store's whole XML answer: its start
		// says what went wrong.
		msg = strings.Join(strings.Fields(msg), " ")
		if len(msg) > maxArchiveMessage {
			msg = strings.ToValidUTF8(msg[:maxArchiveMessage], "") + " …"
		}
		return msg
	}
	return "pgBackRest's archive-push failed; postgres's log holds its message"
}
