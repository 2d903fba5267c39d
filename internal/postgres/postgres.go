// Package postgres holds what Holdfast knows about PostgreSQL itself:
// its port, its roles, the settings Holdfast owns and how settings are written.
package postgres

import (
	"fmt"
	"slices"
	"strings"
)

const (
	// Port is where every instance listens.
	Port = 5432
	// SuperUser is the bootstrap superuser.
	SuperUser = "postgres"
	// ReplicationUser is the role replicas stream with.
	ReplicationUser = "streaming_replica"
	// MonitorUser is the role metrics are read as: it holds pg_monitor
	// and logs in over the pod's socket only, by peer authentication, so
	// it has no password to keep.
	MonitorUser = "holdfast_monitor"
)

// OwnedParameters are the settings Holdfast sets itself, which users may
// not, each with the hint the refusal gives. The CRD's CEL rule on
// spec.postgresql.parameters holds the same map, and the envtest suite
// checks that every one of these is refused at admission with its hint.
var OwnedParameters = map[string]string{
	"archive_command":           "Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)",
	"archive_library":           "Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)",
	"archive_mode":              "Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)",
	"restore_command":           "Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)",
	"cluster_name":              "Holdfast places the server files and sockets itself",
	"config_file":               "Holdfast places the server files and sockets itself",
	"data_directory":            "Holdfast places the server files and sockets itself",
	"external_pid_file":         "Holdfast places the server files and sockets itself",
	"hba_file":                  "Holdfast places the server files and sockets itself",
	"ident_file":                "Holdfast places the server files and sockets itself",
	"unix_socket_directories":   "Holdfast places the server files and sockets itself",
	"include":                   "settings come only from spec.postgresql.parameters, not from files",
	"include_dir":               "settings come only from spec.postgresql.parameters, not from files",
	"include_if_exists":         "settings come only from spec.postgresql.parameters, not from files",
	"listen_addresses":          "instances listen on port 5432 on every address; reach them through the cluster Services",
	"port":                      "instances listen on port 5432 on every address; reach them through the cluster Services",
	"hot_standby":               "Holdfast sets up streaming replication, rewind and promotion itself",
	"primary_conninfo":          "Holdfast sets up streaming replication, rewind and promotion itself",
	"primary_slot_name":         "Holdfast sets up streaming replication, rewind and promotion itself",
	"promote_trigger_file":      "Holdfast sets up streaming replication, rewind and promotion itself",
	"wal_level":                 "Holdfast sets up streaming replication, rewind and promotion itself",
	"wal_log_hints":             "Holdfast sets up streaming replication, rewind and promotion itself",
	"recovery_target":           "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"recovery_target_action":    "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"recovery_target_inclusive": "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"recovery_target_lsn":       "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"recovery_target_name":      "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"recovery_target_time":      "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"recovery_target_timeline":  "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"recovery_target_xid":       "to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target",
	"ssl":                       "Holdfast will configure TLS and its certificates itself",
	"ssl_ca_file":               "Holdfast will configure TLS and its certificates itself",
	"ssl_cert_file":             "Holdfast will configure TLS and its certificates itself",
	"ssl_key_file":              "Holdfast will configure TLS and its certificates itself",
	"synchronous_standby_names": "use spec.synchronous for synchronous replication",
}

// IsOwned reports whether Holdfast owns the named setting.
func IsOwned(name string) bool {
	_, ok := OwnedParameters[strings.ToLower(name)]
	return ok
}

// DefaultImage is the container image of a major version when the spec
// names none: Holdfast's (`make images`), which has pgBackRest beside
// postgres; the community image has no pgBackRest.
func DefaultImage(major int32) string {
	return fmt.Sprintf("ghcr.io/holdfast-dev/holdfast-postgres:%d", major)
}

// RenderParameters writes settings as postgresql.conf lines, sorted by name
// so that equal settings always render to equal text.
func RenderParameters[V ~string](params map[string]V) string {
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "%s = %s\n", name, QuoteValue(string(params[name])))
	}
	return b.String()
}

// QuoteValue quotes a setting's value for postgresql.conf, where a single
// quote inside a quoted value is written twice.
func QuoteValue(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}
