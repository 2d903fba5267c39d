package api

const (
	// StatusPort serves the probes, in plain HTTP: they expose nothing
	// but health, and a kubelet presents no client certificate.
	StatusPort = 8000
	// APIPort serves the instance API over mutual TLS: the instance's
	// server certificate, and a client certificate of the cluster's CA.
	APIPort = 8443
	// MetricsPort serves the instance's Prometheus series, in plain HTTP
	// (postgres_exporter's port, which scrape configs expect).
	MetricsPort = 9187
	// StartupPath answers 200 once postgres has started in its role.
	StartupPath = "/startupz"
	// LivenessPath answers 200 while the instance manager and postgres are alive.
	LivenessPath = "/healthz"
	// ReadinessPath answers 200 while the instance can serve its role.
	ReadinessPath = "/readyz"
)

// LeaseHolderPodAnnotation on the primary Lease is the UID of the pod
// whose instance manager renewed it last: a primary whose container
// restarted may take its role back on the Lease; a new pod of the same
// name (its data may be another's by then) may not.
const LeaseHolderPodAnnotation = "holdfast.dev/holder-pod"

const (
	// StatusPath serves the instance's Report.
	StatusPath = "/v1/status"
	// DesiredPath takes the operator's Desired state.
	DesiredPath = "/v1/desired"
	// BackupsPath takes backup orders (POST); BackupsPath/<id> reports
	// one backup (GET) or cancels it (DELETE).
	BackupsPath = "/v1/backups"
	// PromisePath takes a primary's PromiseRequest (POST): 200 when the
	// replica promises, 409 with the reason when it will not.
	PromisePath = "/v1/promise"
)

// OperatorClientName is the common name of the operator's client
// certificate, the only one the instance API takes orders from. An
// instance asking a replica for a promise presents the replication
// certificate (postgres.ReplicationUser).
const OperatorClientName = "holdfast-operator"
