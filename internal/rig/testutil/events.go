package testutil

import (
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
)

// Notes is an events.EventRecorder that keeps the notes of the Events a
// reconciler records, as "<type> <reason>: <note>".
type Notes struct {
	mu    sync.Mutex
	notes []string
}

// Eventf records an Event's note.
func (r *Notes) Eventf(_, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, eventtype+" "+reason+": "+fmt.Sprintf(note, args...))
}

// Take returns the notes recorded since the last Take.
func (r *Notes) Take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.notes
	r.notes = nil
	return n
}
