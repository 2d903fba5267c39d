package postgres

import (
	"bufio"
	"errors"
	"strings"
)

// CheckpointLocation reads the latest checkpoint's location from
// pg_controldata's output (run with LC_ALL=C). After a clean shutdown it
// is the shutdown checkpoint: every commit the server took lies before it.
func CheckpointLocation(controldata string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(controldata))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Latest checkpoint location:"); ok {
			lsn := strings.TrimSpace(v)
			if _, err := ParseLSN(lsn); err != nil {
				return "", err
			}
			return lsn, nil
		}
	}
	return "", errors.New("pg_controldata printed no latest checkpoint location")
}
