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
)

// OwnedParameters are the settings Holdfast sets itself; users may not. The
// CRD's CEL rule on spec.postgresql.parameters lists the same names, and the
// envtest suite checks that every one of these is refused at admission.
var OwnedParameters = []string{
	"archive_command", "archive_library", "archive_mode", "cluster_name",
	"config_file", "data_directory", "external_pid_file", "hba_file",
	"hot_standby", "ident_file", "listen_addresses", "port",
	"primary_conninfo", "primary_slot_name", "promote_trigger_file",
	"recovery_target", "recovery_target_action", "recovery_target_inclusive",
	"recovery_target_lsn", "recovery_target_name", "recovery_target_time",
	"recovery_target_timeline", "recovery_target_xid", "restore_command",
	"ssl", "ssl_ca_file", "ssl_cert_file", "ssl_key_file",
	"synchronous_standby_names", "unix_socket_directories", "wal_level",
	"wal_log_hints",
}

// IsOwned reports whether Holdfast owns the named setting.
func IsOwned(name string) bool {
	return slices.Contains(OwnedParameters, strings.ToLower(name))
}

// DefaultImage is the container image of a major version when the spec names none.
func DefaultImage(major int32) string {
	return fmt.Sprintf("docker.io/library/postgres:%d", major)
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
