package postgres

import (
	"fmt"
	"slices"
	"strings"
)

// Role is what an instance is, or is asked to be.
type Role string

const (
	Primary Role = "primary"
	Replica Role = "replica"
)

// ServerConf is what decides the settings Holdfast owns on one instance.
type ServerConf struct {
	Name string // instance name: cluster_name and application_name
	// ListenAddresses is where postgres listens; empty means every address.
	ListenAddresses string
	Port            int
	SocketDir       string
	HBAFile         string
	// Parameters are the user's settings, written first so that ours win.
	Parameters map[string]string
	Role       Role
	// PrimaryConnInfo and SlotName are set on a replica.
	PrimaryConnInfo string
	SlotName        string
	// SyncStandbys and SyncQuorum set quorum commit on a primary.
	SyncStandbys []string
	SyncQuorum   int
	// ArchiveCommand archives a WAL segment; empty keeps none.
	ArchiveCommand string
	// RestoreCommand, on a replica, fetches from the archive a WAL segment
	// its primary no longer has; empty leaves streaming as the only source.
	RestoreCommand string
	// HoldReplay makes a replica wait, rather than cancel its queries,
	// when replay conflicts with them: a dump running on it must not be
	// cancelled half way ("canceling statement due to conflict with recovery").
	HoldReplay bool
	// TLS, when set, turns ssl on with these files.
	TLS *TLSFiles
}

// TLSFiles are the server's certificate, its key and the CA that
// client certificates must chain to.
type TLSFiles struct {
	Cert, Key, CA string
}

// RenderConf writes postgresql.conf. Everything a replica needs to follow a
// primary is reloadable (PostgreSQL 13+), so a role's settings can change
// without a restart.
func RenderConf(c ServerConf) string {
	var b strings.Builder
	b.WriteString("# Written by the Holdfast instance manager; edits are overwritten.\n")
	b.WriteString(RenderParameters(c.Parameters))
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, QuoteValue(v)) }
	listen := c.ListenAddresses
	if listen == "" {
		listen = "*"
	}
	set("listen_addresses", listen)
	set("port", fmt.Sprint(c.Port))
	set("unix_socket_directories", c.SocketDir)
	set("hba_file", c.HBAFile)
	set("cluster_name", c.Name)
	set("wal_level", "replica")
	set("hot_standby", "on")
	set("wal_log_hints", "on")
	// Always on, so that adding a repository is a reload, not a restart;
	// without one, a command that succeeds lets WAL be recycled.
	set("archive_mode", "on")
	archive := c.ArchiveCommand
	if archive == "" {
		archive = "true"
	}
	set("archive_command", archive)
	set("archive_timeout", "60s")
	set("max_wal_senders", "16")
	set("max_replication_slots", "16")
	set("wal_keep_size", "256MB")
	set("hot_standby_feedback", "on")
	// A replica pointed at a new primary retries its connection this often
	// (the default, 5s, would dominate a failover; every attempt is a
	// short-lived process, cheap at this rate).
	set("wal_retrieve_retry_interval", "200ms")
	set("password_encryption", "scram-sha-256")
	if t := c.TLS; t != nil {
		set("ssl", "on")
		set("ssl_cert_file", t.Cert)
		set("ssl_key_file", t.Key)
		set("ssl_ca_file", t.CA)
		set("ssl_min_protocol_version", "TLSv1.2")
	}
	set("logging_collector", "off")
	set("log_destination", "stderr")
	if c.Role == Replica && c.HoldReplay {
		set("max_standby_streaming_delay", "-1")
		set("max_standby_archive_delay", "-1")
	}
	if c.Role == Replica {
		set("primary_conninfo", c.PrimaryConnInfo)
		set("primary_slot_name", c.SlotName)
		if c.RestoreCommand != "" {
			set("restore_command", c.RestoreCommand)
		}
	} else {
		set("synchronous_standby_names", SyncStandbyNames(c.SyncQuorum, c.SyncStandbys))
	}
	return b.String()
}

// SyncStandbyNames is quorum commit over the named standbys, or "" (asynchronous).
func SyncStandbyNames(quorum int, standbys []string) string {
	if quorum <= 0 || len(standbys) == 0 {
		return ""
	}
	names := slices.Clone(standbys)
	slices.Sort(names)
	for i, n := range names {
		names[i] = `"` + n + `"`
	}
	return fmt.Sprintf("ANY %d (%s)", quorum, strings.Join(names, ", "))
}

// RenderHBA writes pg_hba.conf. Over the network only TLS is admitted:
// users prove a SCRAM password, and the replication role (replicationUser)
// a client certificate of the cluster's CA, named after it. Any other
// connection finds no entry, and postgres refuses it with its own
// message ("no pg_hba.conf entry ... no encryption"). Over the socket,
// inside the pod, users still prove a password, but for the monitoring
// role, which only processes in the pod can reach there (RenderIdent).
// trustLocalSuperuser lets the superuser in over the socket without one:
// a data directory restored from another cluster's physical backup holds
// that cluster's password, until this one's is set.
func RenderHBA(trustLocalSuperuser bool, replicationUser string) string {
	trust := ""
	if trustLocalSuperuser {
		trust = "local   all          " + SuperUser + "                     trust\n"
	}
	return `# Written by the Holdfast instance manager; edits are overwritten.
# TYPE   DATABASE     USER               ADDRESS   METHOD
` + trust + `local    all          ` + MonitorUser + `                     peer map=` + MonitorUser + `
local    all          all                          scram-sha-256
local    replication  all                          scram-sha-256
hostssl  replication  ` + replicationUser + `  all       cert
hostssl  all          all                all       scram-sha-256
`
}

// RenderIdent writes pg_ident.conf: any process in the pod may log in
// over the socket as the monitoring role, and only as it.
func RenderIdent() string {
	return `# Written by the Holdfast instance manager; edits are overwritten.
# MAPNAME          SYSTEM-USERNAME   PG-USERNAME
` + MonitorUser + `   /^.*$             ` + MonitorUser + `
`
}

// SlotName is the physical replication slot the primary keeps for an instance.
func SlotName(instance string) string {
	return "holdfast_" + strings.NewReplacer("-", "_", ".", "_").Replace(instance)
}

// ConnInfo renders libpq key=value pairs, quoting values as libpq requires.
func ConnInfo(kv map[string]string) string {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(kv[k])
		parts = append(parts, k+"='"+v+"'")
	}
	return strings.Join(parts, " ")
}
