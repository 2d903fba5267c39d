// Package catalog brings a postgres server's roles and databases to a
// declared shape. It reads what the server holds (Observe), plans the
// statements that make it match the declaration (Plan, a pure function
// table-tested without a server), and runs them (Apply), reporting each
// role's and database's outcome in postgres's own words.
//
// It knows SQL and the system catalogs, nothing of Kubernetes: it must not
// import the API types, the controllers or client-go. A password reaches
// it as a string and leaves only as a SCRAM verifier (or, when postgres
// must normalise it, as a literal); it never goes into a Step's
// description, an error or a log line.
package catalog
