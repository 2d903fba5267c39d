package catalog

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// PlanFor returns the statements that bring obs to the declared roles and
// databases. Roles and databases the declaration does not name are left
// alone. The order lets each statement find what it needs: roles are
// created and altered first, then memberships granted and revoked, then
// databases made, altered and dropped and their extensions created, and
// roles dropped last, once the databases they owned may be gone.
func PlanFor(roles []Role, dbs []Database, obs Observed) (Plan, error) {
	p := Plan{Unfixable: map[Subject]string{}}
	var grants, drops []Step
	for _, r := range roles {
		s := Subject{KindRole, r.Name}
		have, exists := obs.Roles[r.Name]
		switch {
		case r.Absent && exists:
			drops = append(drops, Step{Subject: s, SQL: "DROP ROLE " + ident(r.Name), Says: "drop role " + r.Name})
		case r.Absent:
		case !exists:
			step := Step{Subject: s, SQL: "CREATE ROLE " + ident(r.Name) + " WITH " + strings.Join(options(r.Attributes, nil), " "),
				Says: "create role " + r.Name}
			if r.Password != nil {
				lit, err := PasswordLiteral(*r.Password)
				if err != nil {
					return Plan{}, fmt.Errorf("role %s: %w", r.Name, err)
				}
				step.SQL += " PASSWORD " + lit
				step.Says += " with the password from its Secret"
			}
			p.Steps = append(p.Steps, step)
			grants = append(grants, memberships(r, nil)...)
		default:
			if opts := options(r.Attributes, &have.Attributes); len(opts) > 0 {
				p.Steps = append(p.Steps, Step{Subject: s, SQL: "ALTER ROLE " + ident(r.Name) + " WITH " + strings.Join(opts, " "),
					Says: "alter role " + r.Name + " " + strings.Join(opts, " ")})
			}
			// A password changed outside the declaration (by hand) is set
			// back: the Secret is the password.
			drifted := r.Password != nil && have.Verifier != nil && !matches(*have.Verifier, *r.Password)
			if r.Password != nil && (r.SetPassword || drifted) {
				lit, err := PasswordLiteral(*r.Password)
				if err != nil {
					return Plan{}, fmt.Errorf("role %s: %w", r.Name, err)
				}
				says := "set the password of role " + r.Name + " from its Secret"
				if !r.SetPassword {
					says += ": the server's was another, changed outside the spec"
				}
				p.Steps = append(p.Steps, Step{Subject: s, SQL: "ALTER ROLE " + ident(r.Name) + " WITH PASSWORD " + lit, Says: says})
			}
			grants = append(grants, memberships(r, have.MemberOf)...)
		}
	}
	p.Steps = append(p.Steps, grants...)
	for _, d := range dbs {
		p.Steps = append(p.Steps, planDatabase(d, obs, p.Unfixable)...)
	}
	p.Steps = append(p.Steps, drops...)
	return p, nil
}

func planDatabase(d Database, obs Observed, unfixable map[Subject]string) []Step {
	s := Subject{KindDatabase, d.Name}
	have, exists := obs.Databases[d.Name]
	switch {
	case d.Absent && d.Drop && exists:
		// FORCE: sessions still connected would make DROP fail forever.
		return []Step{{Subject: s, SQL: "DROP DATABASE " + ident(d.Name) + " WITH (FORCE)", Says: "drop database " + d.Name}}
	case d.Absent:
		return nil
	case !exists:
		sql := "CREATE DATABASE " + ident(d.Name) + " OWNER " + ident(d.Owner) + " TEMPLATE template0"
		if d.Encoding != "" {
			sql += " ENCODING " + literal(d.Encoding)
		}
		if d.Locale != "" {
			sql += " LC_COLLATE " + literal(d.Locale) + " LC_CTYPE " + literal(d.Locale)
		}
		return append([]Step{{Subject: s, SQL: sql, Says: "create database " + d.Name + " owned by " + d.Owner}},
			extensions(d, nil)...)
	}
	var steps []Step
	if have.Owner != d.Owner {
		steps = append(steps, Step{Subject: s, SQL: "ALTER DATABASE " + ident(d.Name) + " OWNER TO " + ident(d.Owner),
			Says: "give database " + d.Name + " to " + d.Owner + " (owned by " + have.Owner + ")"})
	}
	var differ []string
	if d.Encoding != "" && normalName(d.Encoding) != normalName(have.Encoding) {
		differ = append(differ, fmt.Sprintf("its encoding is %s, not %s", have.Encoding, d.Encoding))
	}
	if d.Locale != "" && (normalName(d.Locale) != normalName(have.Collate) || normalName(d.Locale) != normalName(have.Ctype)) {
		differ = append(differ, fmt.Sprintf("its locale is %s (lc_ctype %s), not %s", have.Collate, have.Ctype, d.Locale))
	}
	if len(differ) > 0 {
		unfixable[s] = strings.Join(differ, " and ") + ": encoding and locale are set only when a database is created"
	}
	return append(steps, extensions(d, have.Extensions)...)
}

// normalName compares encodings and locales as postgres and libc do,
// ignoring case and punctuation: UTF8 is utf-8, C.UTF-8 is C.utf8.
func normalName(s string) string {
	return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
}

func extensions(d Database, have []string) []Step {
	var steps []Step
	for _, e := range d.Extensions {
		if !slices.Contains(have, e) {
			steps = append(steps, Step{Subject: Subject{KindDatabase, d.Name}, Database: d.Name,
				SQL: "CREATE EXTENSION IF NOT EXISTS " + ident(e), Says: "create extension " + e + " in database " + d.Name})
		}
	}
	return steps
}

// memberships grants the roles r should be in and revokes the others.
func memberships(r Role, have []string) []Step {
	var steps []Step
	s := Subject{KindRole, r.Name}
	for _, g := range r.InRoles {
		if !slices.Contains(have, g) {
			steps = append(steps, Step{Subject: s, SQL: "GRANT " + ident(g) + " TO " + ident(r.Name),
				Says: "grant role " + g + " to " + r.Name})
		}
	}
	for _, g := range have {
		if !slices.Contains(r.InRoles, g) {
			steps = append(steps, Step{Subject: s, SQL: "REVOKE " + ident(g) + " FROM " + ident(r.Name),
				Says: "revoke role " + g + " from " + r.Name})
		}
	}
	return steps
}

// options are the CREATE/ALTER ROLE options that set want: all of them,
// or with have, those that differ.
func options(want Attributes, have *Attributes) []string {
	var out []string
	flag := func(name string, w bool, h func(*Attributes) bool) {
		if have != nil && h(have) == w {
			return
		}
		if w {
			out = append(out, name)
		} else {
			out = append(out, "NO"+name)
		}
	}
	flag("LOGIN", want.Login, func(a *Attributes) bool { return a.Login })
	flag("SUPERUSER", want.Superuser, func(a *Attributes) bool { return a.Superuser })
	flag("CREATEDB", want.CreateDB, func(a *Attributes) bool { return a.CreateDB })
	flag("CREATEROLE", want.CreateRole, func(a *Attributes) bool { return a.CreateRole })
	flag("REPLICATION", want.Replication, func(a *Attributes) bool { return a.Replication })
	flag("BYPASSRLS", want.BypassRLS, func(a *Attributes) bool { return a.BypassRLS })
	if have == nil || have.ConnectionLimit != want.ConnectionLimit {
		out = append(out, fmt.Sprintf("CONNECTION LIMIT %d", want.ConnectionLimit))
	}
	if have == nil || !sameExpiry(want.ValidUntil, have.ValidUntil) {
		until := "infinity"
		if want.ValidUntil != nil {
			until = want.ValidUntil.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, "VALID UNTIL "+literal(until))
	}
	return out
}

// sameExpiry compares expiries as postgres keeps them, to the microsecond.
func sameExpiry(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal quotes s as an SQL string constant. A backslash makes it an
// escape string, which reads alike whatever standard_conforming_strings
// the user set.
func literal(s string) string {
	if !strings.Contains(s, `\`) {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return "E'" + strings.NewReplacer(`\`, `\\`, "'", "''").Replace(s) + "'"
}
