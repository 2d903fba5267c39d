// Package instance is the in-pod instance manager, PID 1 of every database
// container: it runs and supervises postgres, converges it to the desired
// state the operator sends (initdb, clone, promote, demote, rewind, fence,
// restore, backups), renews the primary's Lease, and serves its Report,
// the probes and the operator's orders over HTTP. The contract with the
// operator is package api; the operator imports that, never this.
package instance
