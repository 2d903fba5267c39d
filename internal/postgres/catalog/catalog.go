package catalog

import (
	"slices"
	"strings"
	"time"
)

// Attributes are a role's options, as CREATE ROLE and pg_roles have them.
type Attributes struct {
	Login, Superuser, CreateDB, CreateRole, Replication, BypassRLS bool
	// ConnectionLimit is -1 for no limit.
	ConnectionLimit int32
	// ValidUntil is when the password expires; nil never.
	ValidUntil *time.Time
}

// Role is a role as declared.
type Role struct {
	Name string
	// Absent asks for the role to be dropped; the other fields are unused.
	Absent bool
	Attributes
	// InRoles are every role it is a member of.
	InRoles []string
	// Password, when not nil, is set when the role is created, and on an
	// existing role when SetPassword says it changed since it was last set.
	Password    *string
	SetPassword bool
}

// Database is a database as declared.
type Database struct {
	Name string
	// Absent lets the database go: it is dropped when Drop is set too,
	// and forgotten otherwise.
	Absent, Drop bool
	Owner        string
	// Encoding and Locale apply at creation only; "" is the server's default.
	Encoding, Locale string
	Extensions       []string
}

// ObservedRole is a role as the server holds it.
type ObservedRole struct {
	Attributes
	// MemberOf are the roles it is a member of, sorted.
	MemberOf []string
	// Verifier is its password as the server keeps it
	// (pg_authid.rolpassword, "" for none); nil when it was not read.
	Verifier *string
}

// ObservedDatabase is a database as the server holds it.
type ObservedDatabase struct {
	Owner, Encoding, Collate, Ctype string
	// Extensions installed in it; nil when they were not read.
	Extensions []string
}

// Observed is what the server holds.
type Observed struct {
	Roles     map[string]ObservedRole
	Databases map[string]ObservedDatabase
}

// Kind tells roles from databases.
type Kind string

const (
	KindRole     Kind = "role"
	KindDatabase Kind = "database"
)

// Subject is the role or database a step or an outcome is about.
type Subject struct {
	Kind Kind
	Name string
}

func (s Subject) String() string { return string(s.Kind) + " " + s.Name }

// Step is one statement of a plan.
type Step struct {
	Subject Subject
	// Database is where the statement runs; "" is the maintenance
	// database (postgres).
	Database string
	SQL      string
	// Says what the step does (drop role x), for errors, logs and
	// Events. Unlike SQL, it never holds a password or its verifier.
	Says string
}

// Plan is what brings the server to the declaration: statements, and the
// differences no statement may fix (a database's encoding once created).
type Plan struct {
	Steps []Step
	// Unfixable says, per subject, what differs and stays so.
	Unfixable map[Subject]string
}

// reservedRole: roles the server and Holdfast keep, never reported as
// unmanaged (pg_* are the server's predefined roles).
func reservedRole(name string, also []string) bool {
	return strings.HasPrefix(name, "pg_") || slices.Contains(also, name)
}

// Unmanaged lists, sorted, the server's roles that neither the
// declaration nor keep names, and that are not the server's own (pg_*).
func Unmanaged(obs Observed, declared []Role, keep ...string) []string {
	var out []string
	for name := range obs.Roles {
		if reservedRole(name, keep) || slices.ContainsFunc(declared, func(r Role) bool { return r.Name == name }) {
			continue
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
