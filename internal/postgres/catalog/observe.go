package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Connector opens a connection to one database of the server; "" is the
// maintenance database. The caller closes it.
type Connector func(ctx context.Context, database string) (*pgx.Conn, error)

// Observe reads the server's roles, their memberships and its databases,
// and the extensions of those of dbs that exist and declare any.
func Observe(ctx context.Context, connect Connector, dbs []Database) (Observed, error) {
	conn, err := connect(ctx, "")
	if err != nil {
		return Observed{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	obs := Observed{Roles: map[string]ObservedRole{}, Databases: map[string]ObservedDatabase{}}
	if err := readRoles(ctx, conn, obs.Roles); err != nil {
		return Observed{}, err
	}
	if err := readVerifiers(ctx, conn, obs.Roles); err != nil {
		return Observed{}, err
	}
	if err := readDatabases(ctx, conn, obs.Databases); err != nil {
		return Observed{}, err
	}
	for _, d := range dbs {
		have, ok := obs.Databases[d.Name]
		if d.Absent || !ok || len(d.Extensions) == 0 {
			continue
		}
		if have.Extensions, err = readExtensions(ctx, connect, d.Name); err != nil {
			return Observed{}, err
		}
		obs.Databases[d.Name] = have
	}
	return obs, nil
}

func readRoles(ctx context.Context, conn *pgx.Conn, into map[string]ObservedRole) error {
	rows, err := conn.Query(ctx, `
SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls,
       r.rolconnlimit, r.rolvaliduntil,
       ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1)
FROM pg_roles r`)
	if err != nil {
		return fmt.Errorf("reading pg_roles: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var r ObservedRole
		var until pgtype.Timestamptz
		if err := rows.Scan(&name, &r.Login, &r.Superuser, &r.CreateDB, &r.CreateRole, &r.Replication, &r.BypassRLS,
			&r.ConnectionLimit, &until, &r.MemberOf); err != nil {
			return fmt.Errorf("reading pg_roles: %w", err)
		}
		r.ValidUntil = expiry(until)
		into[name] = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading pg_roles: %w", err)
	}
	return nil
}

// readVerifiers reads each role's password as the server keeps it, so
// that a password changed outside the declaration is seen. Only a
// superuser may read pg_authid; for anyone else they stay unknown.
func readVerifiers(ctx context.Context, conn *pgx.Conn, into map[string]ObservedRole) error {
	read := map[string]string{}
	rows, err := conn.Query(ctx, `SELECT rolname, coalesce(rolpassword, '') FROM pg_authid`)
	if err == nil {
		for rows.Next() {
			var name, verifier string
			if err := rows.Scan(&name, &verifier); err != nil {
				rows.Close()
				return fmt.Errorf("reading pg_authid: %w", err)
			}
			read[name] = verifier
		}
		rows.Close()
		err = rows.Err()
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == insufficientPrivilege:
		return nil
	case err != nil:
		return fmt.Errorf("reading pg_authid: %w", err)
	}
	for name, verifier := range read {
		if r, ok := into[name]; ok {
			r.Verifier = &verifier
			into[name] = r
		}
	}
	return nil
}

// insufficientPrivilege is SQLSTATE 42501.
const insufficientPrivilege = "42501"

// expiry reads rolvaliduntil: NULL and infinity never expire.
func expiry(t pgtype.Timestamptz) *time.Time {
	switch {
	case !t.Valid || t.InfinityModifier == pgtype.Infinity:
		return nil
	case t.InfinityModifier == pgtype.NegativeInfinity:
		return &time.Time{}
	}
	return &t.Time
}

func readDatabases(ctx context.Context, conn *pgx.Conn, into map[string]ObservedDatabase) error {
	rows, err := conn.Query(ctx, `
SELECT datname::text, pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text
FROM pg_database`)
	if err != nil {
		return fmt.Errorf("reading pg_database: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var d ObservedDatabase
		if err := rows.Scan(&name, &d.Owner, &d.Encoding, &d.Collate, &d.Ctype); err != nil {
			return fmt.Errorf("reading pg_database: %w", err)
		}
		into[name] = d
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading pg_database: %w", err)
	}
	return nil
}

func readExtensions(ctx context.Context, connect Connector, db string) ([]string, error) {
	conn, err := connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT extname::text FROM pg_extension`)
	if err != nil {
		return nil, fmt.Errorf("reading the extensions of database %s: %w", db, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading the extensions of database %s: %w", db, err)
	}
	slices.Sort(names)
	// Not nil: read, and empty.
	return append([]string{}, names...), nil
}
