package postgres

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ParseLSN reads a WAL position written as X/Y.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("LSN %q: want X/Y", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return h<<32 | l, nil
}

// SwitchPoint finds in a timeline history file (the primary's
// 0000000N.history) where timeline tli ended; ok is false when the history
// does not hold tli.
func SwitchPoint(history string, tli int) (lsn uint64, ok bool, err error) {
	sc := bufio.NewScanner(strings.NewReader(history))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		t, err := strconv.Atoi(fields[0])
		if err != nil {
			return 0, false, fmt.Errorf("history line %q: %w", sc.Text(), err)
		}
		if t == tli {
			lsn, err := ParseLSN(fields[1])
			return lsn, err == nil, err
		}
	}
	return 0, false, sc.Err()
}

// Diverged reports whether a server on timeline tli that has WAL up to pos
// can no longer follow a primary on timeline primaryTLI with the given
// history: it holds WAL past the point where the primary's history left tli.
func Diverged(tli int, pos uint64, primaryTLI int, history string) (bool, error) {
	if primaryTLI == tli {
		return false, nil
	}
	if primaryTLI < tli {
		return true, nil // the primary's history never reached ours
	}
	switchAt, ok, err := SwitchPoint(history, tli)
	if err != nil {
		return false, err
	}
	return !ok || pos > switchAt, nil
}

// WALPosition is how far a replica's WAL reaches: the greater of what it
// received and what it replayed. A WAL receiver that starts on a new
// timeline counts from the start of its first segment again, so the
// received position alone can lie before what was replayed, and before a
// fork. A position that does not parse counts as 0, and its error is
// returned with the other's value.
func (s Status) WALPosition() (uint64, error) {
	var pos uint64
	var errs error
	for _, text := range []string{s.ReceivedLSN, s.ReplayedLSN} {
		if text == "" {
			continue
		}
		p, err := ParseLSN(text)
		errs = errors.Join(errs, err)
		pos = max(pos, p)
	}
	return pos, errs
}
