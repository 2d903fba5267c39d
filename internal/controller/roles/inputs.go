package roles

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres/catalog"
	"holdfast.dev/holdfast/internal/resources"
)

// inputs are the declaration, with each password read from its Secret.
type inputs struct {
	roles     []catalog.Role
	databases []catalog.Database
	// secretProblems says, per role, why its password Secret cannot be used.
	secretProblems map[string]string
	// digests are, per role, the digest of the password in its Secret.
	digests map[string]string
}

func (r *Reconciler) inputs(ctx context.Context, c *holdfastv1.PostgresCluster) inputs {
	in := inputs{secretProblems: map[string]string{}, digests: map[string]string{}}
	applied := map[string]string{}
	for _, s := range c.Status.Roles {
		applied[s.Name] = s.PasswordDigest
	}
	for _, spec := range c.Spec.Roles {
		role := catalog.Role{Name: spec.Name, Absent: spec.Ensure == holdfastv1.EnsureAbsent}
		if !role.Absent {
			role.Attributes = catalog.Attributes{Login: spec.Login, Superuser: spec.Superuser, CreateDB: spec.CreateDB,
				CreateRole: spec.CreateRole, Replication: spec.Replication, BypassRLS: spec.BypassRLS,
				ConnectionLimit: ptr.Deref(spec.ConnectionLimit, -1)}
			if spec.ValidUntil != "" {
				// The schema's pattern admits only what Parse reads.
				if t, err := spec.ValidUntil.Parse(); err == nil {
					role.ValidUntil = &t
				}
			}
			for _, g := range spec.InRoles {
				role.InRoles = append(role.InRoles, string(g))
			}
			if spec.PasswordSecret != nil {
				pw, err := r.password(ctx, c, spec)
				if err != nil {
					in.secretProblems[spec.Name] = err.Error()
				} else {
					d := digest(c, spec.Name, pw)
					role.Password, role.SetPassword = &pw, d != applied[spec.Name]
					in.digests[spec.Name] = d
				}
			}
		}
		in.roles = append(in.roles, role)
	}
	for _, spec := range c.Spec.Databases {
		db := catalog.Database{Name: spec.Name, Absent: spec.Ensure == holdfastv1.EnsureAbsent,
			Drop: spec.ReclaimPolicy == holdfastv1.ReclaimDelete, Owner: string(spec.Owner),
			Encoding: spec.Encoding, Locale: spec.Locale}
		if db.Owner == "" {
			db.Owner = "postgres"
		}
		for _, e := range spec.Extensions {
			db.Extensions = append(db.Extensions, string(e))
		}
		in.databases = append(in.databases, db)
	}
	return in
}

// password reads a role's password from its Secret. The error says what
// is wrong with the Secret, never what it holds.
func (r *Reconciler) password(ctx context.Context, c *holdfastv1.PostgresCluster, spec holdfastv1.RoleSpec) (string, error) {
	name := spec.PasswordSecret.Name
	var s corev1.Secret
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s)
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("password Secret %s not found: the role's password is not set", name)
	case err != nil:
		return "", fmt.Errorf("reading password Secret %s: %w", name, err)
	}
	pw := string(s.Data[resources.SecretKeyPassword])
	if pw == "" {
		return "", fmt.Errorf("password Secret %s has no key %s, or it is empty", name, resources.SecretKeyPassword)
	}
	if u, ok := s.Data[resources.SecretKeyUsername]; ok && string(u) != spec.Name {
		return "", fmt.Errorf("password Secret %s is for user %q, not role %s", name, string(u), spec.Name)
	}
	return pw, nil
}

// digest identifies a password in status without giving it away: salted
// with the cluster's UID and the role's name, so that equal passwords do
// not look alike across roles and clusters.
func digest(c *holdfastv1.PostgresCluster, role, password string) string {
	sum := sha256.Sum256([]byte(string(c.UID) + "\x00" + role + "\x00" + password))
	return "sha256:" + hex.EncodeToString(sum[:])
}
