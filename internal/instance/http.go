package instance

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/instance/exporter"
)

// ProbeHandler serves the probes, in plain HTTP on StatusPort: they say
// whether the instance is healthy and nothing else.
//
//	GET /healthz     200 while the manager's loop runs (it restarts postgres itself)
//	GET /readyz      200 while the instance serves its role
//	GET /startupz    200 once postgres has come up in its role
func (m *Manager) ProbeHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+LivenessPath, func(w http.ResponseWriter, _ *http.Request) {
		probe(w, m.Alive(), "the instance manager's loop has stalled")
	})
	mux.HandleFunc("GET "+ReadinessPath, func(w http.ResponseWriter, _ *http.Request) {
		r := m.Report()
		probe(w, r.Ready, r.Message+" "+r.Error)
	})
	mux.HandleFunc("GET "+StartupPath, func(w http.ResponseWriter, _ *http.Request) {
		r := m.Report()
		probe(w, r.Started, r.Message+" "+r.Error)
	})
	return mux
}

// APIHandler serves the instance API, behind APITLS on APIPort, to the
// operator's client certificate (api.OperatorClientName); a promise also
// to a peer instance's replication certificate.
//
//	GET /v1/status   the Report, as JSON; with ?after=N&waitMillis=M,
//	                 once its Changes differs from N, or M ms have passed
//	PUT /v1/desired  a Desired, as JSON; 409 when stale, 423 for a
//	                 promotion while a promise holds
//	POST /v1/promise a primary's PromiseRequest: 200 when this replica
//	                 promises, 409 with the reason when not
//	POST /v1/backups a BackupOrder: starts a backup (202) or reports the
//	                 one of that id
//	GET /v1/backups/{id}, DELETE /v1/backups/{id}: a backup's
//	                 BackupReport (404 when this process never ran it), or
//	                 its cancellation
//
// A caller without a certificate of the cluster's CA is turned away by
// the TLS handshake; one with another name gets 403.
func (m *Manager) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StatusPath, from(func(w http.ResponseWriter, req *http.Request) {
		if q := req.URL.Query(); q.Has(api.StatusWaitParam) {
			after, err1 := strconv.ParseInt(q.Get(api.StatusAfterParam), 10, 64)
			wait, err2 := strconv.ParseInt(q.Get(api.StatusWaitParam), 10, 64)
			if err := errors.Join(err1, err2); err != nil {
				http.Error(w, "the wait for a change: "+err.Error(), http.StatusBadRequest)
				return
			}
			m.awaitChange(req.Context(), after, time.Duration(wait)*time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(m.StatusReport(req.Context()))
	}, operatorOnly...))
	mux.HandleFunc("PUT "+DesiredPath, from(func(w http.ResponseWriter, req *http.Request) {
		var d Desired
		if !decodeBody(w, req, &d, "the desired state") {
			return
		}
		switch err := m.SetDesired(d); {
		case errors.Is(err, ErrStale):
			http.Error(w, err.Error(), http.StatusConflict)
		case errors.Is(err, ErrPromised):
			http.Error(w, err.Error(), http.StatusLocked)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}, operatorOnly...))
	mux.HandleFunc("POST "+PromisePath, from(func(w http.ResponseWriter, req *http.Request) {
		var p PromiseRequest
		if !decodeBody(w, req, &p, "the promise request") {
			return
		}
		switch err := m.GivePromise(p); {
		case errors.Is(err, errRefused):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}, operatorPeer...))
	mux.HandleFunc("POST "+BackupsPath, from(func(w http.ResponseWriter, req *http.Request) {
		var o BackupOrder
		if !decodeBody(w, req, &o, "the backup order") {
			return
		}
		r, err := m.StartBackup(o)
		switch {
		case errors.Is(err, ErrBusy):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(r)
		}
	}, operatorOnly...))
	mux.HandleFunc("GET "+BackupsPath+"/{id}", from(func(w http.ResponseWriter, req *http.Request) {
		r, ok := m.BackupState(req.PathValue("id"))
		if !ok {
			http.Error(w, "this instance has no backup of that id (it may have restarted since)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r)
	}, operatorOnly...))
	mux.HandleFunc("DELETE "+BackupsPath+"/{id}", from(func(w http.ResponseWriter, req *http.Request) {
		if !m.CancelBackup(req.PathValue("id")) {
			http.Error(w, "this instance has no backup of that id", http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}, operatorOnly...))
	return mux
}

// decodeBody reads a JSON body of at most 1 MiB with no unknown fields
// into v; on failure it answers 400 and says false.
func decodeBody(w http.ResponseWriter, req *http.Request, v any, what string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		http.Error(w, "decoding "+what+": "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func probe(w http.ResponseWriter, ok bool, why string) {
	if ok {
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	http.Error(w, strings.TrimSpace(why), http.StatusServiceUnavailable)
}

// MetricsHandler serves the instance's Prometheus series, with the Go
// runtime's and the process's, from a registry of its own: the global
// one would mix in whatever else this binary registers.
func (m *Manager) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		exporter.New(metricsSource{m}, m.cfg.Version),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// metricsSource is the manager as the exporter reads it: its report with
// the volume's usage.
type metricsSource struct{ *Manager }

func (s metricsSource) Report() Report { return s.reportWithVolumes() }
