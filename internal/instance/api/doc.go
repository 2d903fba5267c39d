// Package api is the contract between the operator and the instance
// manager in each pod: the desired state the operator sends (Desired and
// the orders in it), the Report an instance answers with, the backup
// orders and reports, the port and paths the manager serves and the probes
// call, and the operator's HTTP client for them. Both sides import it; it
// imports neither, so the operator does not link the in-pod manager.
package api
