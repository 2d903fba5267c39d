package v1alpha1

// Declarative roles and databases (spec.roles, spec.databases): what the
// user declares and what the operator reports back. The roles controller
// applies them on the primary; see docs/roles.md.

// Ensure says whether a declared role or database must exist.
// +kubebuilder:validation:Enum=present;absent
type Ensure string

const (
	EnsurePresent Ensure = "present"
	EnsureAbsent  Ensure = "absent"
)

// ReclaimPolicy says what ensure: absent does to a database.
// +kubebuilder:validation:Enum=retain;delete
type ReclaimPolicy string

const (
	// ReclaimRetain forgets the database and keeps it, data and all.
	ReclaimRetain ReclaimPolicy = "retain"
	// ReclaimDelete drops it, disconnecting its sessions.
	ReclaimDelete ReclaimPolicy = "delete"
)

// RoleSpec is a role the operator keeps on the primary. Roles the spec
// does not name are never touched, and a role removed from the list is
// forgotten, not dropped: only ensure: absent drops one.
//
// +kubebuilder:validation:XValidation:rule="self.ensure == 'present' || !(has(self.login) || has(self.superuser) || has(self.createdb) || has(self.createrole) || has(self.replication) || has(self.bypassrls) || has(self.validUntil) || has(self.inRoles) || has(self.passwordSecret) || (has(self.connectionLimit) && self.connectionLimit != -1))",message="a role with ensure: absent is dropped: give it no other field than name"
// +kubebuilder:validation:XValidation:rule="!has(self.inRoles) || !(self.name in self.inRoles)",message="a role cannot be a member of itself: remove its own name from inRoles"
// +kubebuilder:validation:XValidation:rule="!has(self.passwordSecret) || (has(self.login) && self.login)",message="a password is only used to log in: set login: true or remove passwordSecret"
// +kubebuilder:validation:XValidation:rule="!has(self.replication) || !self.replication || (has(self.login) && self.login)",message="a replication role must log in to stream: set login: true"
type RoleSpec struct {
	// Name of the role. postgres, streaming_replica, names starting with
	// pg_, and the bootstrap owner (spec.bootstrap.initdb.owner) are
	// Holdfast's or the server's and cannot be declared.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['postgres', 'streaming_replica', 'public', 'none', 'current_user', 'current_role', 'session_user']) && !self.startsWith('pg_')",messageExpression="'spec.roles: ' + self + ' cannot be declared: postgres, streaming_replica and names starting with pg_ belong to the server and to Holdfast, and public, none, current_user, current_role and session_user are reserved words for roles'"
	Name string `json:"name"`

	// Ensure: present (the default) creates the role and keeps its
	// attributes; absent drops it.
	// +kubebuilder:default=present
	// +optional
	Ensure Ensure `json:"ensure,omitempty"`

	// Login, Superuser, CreateDB, CreateRole, Replication and BypassRLS are
	// the role's attributes (LOGIN, SUPERUSER, CREATEDB, ...); each is off
	// unless set.
	// +optional
	Login bool `json:"login,omitempty"`
	// +optional
	Superuser bool `json:"superuser,omitempty"`
	// +optional
	CreateDB bool `json:"createdb,omitempty"`
	// +optional
	CreateRole bool `json:"createrole,omitempty"`
	// +optional
	Replication bool `json:"replication,omitempty"`
	// +optional
	BypassRLS bool `json:"bypassrls,omitempty"`

	// ConnectionLimit is how many connections the role may hold at once;
	// -1, the default, is no limit. (A pointer, so that 0 is a limit a Go
	// client can set.)
	// +kubebuilder:validation:Minimum=-1
	// +kubebuilder:default=-1
	// +optional
	ConnectionLimit *int32 `json:"connectionLimit,omitempty"`

	// ValidUntil is when the role's password stops being accepted, RFC 3339
	// (2027-01-01T00:00:00Z). Absent, it never expires.
	// +optional
	ValidUntil Timestamp `json:"validUntil,omitempty"`

	// InRoles are the roles this role is a member of, and the only ones:
	// a membership the list does not name is revoked.
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +optional
	InRoles []RoleName `json:"inRoles,omitempty"`

	// PasswordSecret names a Secret in the cluster's namespace whose key
	// password is the role's password (and whose key username, if any, is
	// the role's name), as a kubernetes.io/basic-auth Secret holds them.
	// A change of the password reaches the role. Absent, Holdfast leaves
	// the role's password alone.
	// +optional
	PasswordSecret *PasswordSecretReference `json:"passwordSecret,omitempty"`
}

// RoleName names a role, the server's (pg_monitor) or a declared one.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
type RoleName string

// PasswordSecretReference names a Secret in the cluster's namespace.
type PasswordSecretReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// DatabaseSpec is a database the operator keeps on the primary.
//
// +kubebuilder:validation:XValidation:rule="self.ensure == 'absent' || has(self.owner)",message="a database with ensure: present needs an owner"
type DatabaseSpec struct {
	// Name of the database. postgres, template0, template1 and the
	// bootstrap database (spec.bootstrap.initdb.database) cannot be declared.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['postgres', 'template0', 'template1'])",message="spec.databases: postgres, template0 and template1 belong to the server and cannot be declared"
	Name string `json:"name"`

	// Owner is the role that owns the database: a role of spec.roles with
	// ensure: present, the bootstrap owner, or postgres.
	// +optional
	Owner RoleName `json:"owner,omitempty"`

	// Encoding (UTF8, LATIN1, ...) and Locale (lc_collate and lc_ctype,
	// such as C.UTF-8) are set when the database is created. A database
	// that already exists keeps its own: a difference is reported in
	// status, not applied. Absent, the server's defaults.
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-]+$`
	// +optional
	Encoding string `json:"encoding,omitempty"`
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.@-]+$`
	// +optional
	Locale string `json:"locale,omitempty"`

	// Extensions are created in the database (CREATE EXTENSION IF NOT
	// EXISTS). One removed from the list stays: dropping an extension
	// drops what depends on it.
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +optional
	Extensions []ExtensionName `json:"extensions,omitempty"`

	// Ensure: present (the default) creates the database; absent lets it go
	// as ReclaimPolicy says.
	// +kubebuilder:default=present
	// +optional
	Ensure Ensure `json:"ensure,omitempty"`

	// ReclaimPolicy says what ensure: absent does: retain (the default)
	// forgets the database and keeps it; delete drops it.
	// +kubebuilder:default=retain
	// +optional
	ReclaimPolicy ReclaimPolicy `json:"reclaimPolicy,omitempty"`
}

// ExtensionName names an extension, as CREATE EXTENSION takes it (uuid-ossp).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_-]*$`
type ExtensionName string

// RoleStatus says whether a declared role is as the spec says.
type RoleStatus struct {
	Name string `json:"name"`
	// Applied: the role is as declared (or dropped, for ensure: absent).
	Applied bool `json:"applied"`
	// Message says why not, in postgres's words where postgres refused.
	// +optional
	Message string `json:"message,omitempty"`
	// PasswordDigest identifies the password last set from the role's
	// Secret: a salted SHA-256, never the password. A Secret whose digest
	// differs gets its password set again.
	// +optional
	PasswordDigest string `json:"passwordDigest,omitempty"`
}

// DatabaseStatus says whether a declared database is as the spec says.
type DatabaseStatus struct {
	Name string `json:"name"`
	// Applied: the database is as declared (or dropped or forgotten, for
	// ensure: absent).
	Applied bool `json:"applied"`
	// Message says why not, in postgres's words where postgres refused.
	// +optional
	Message string `json:"message,omitempty"`
}

// Condition types the roles controller reports.
const (
	// ConditionRolesReconciled: every role of spec.roles is as declared.
	ConditionRolesReconciled = "RolesReconciled"
	// ConditionDatabasesReconciled: every database of spec.databases is as declared.
	ConditionDatabasesReconciled = "DatabasesReconciled"
)
