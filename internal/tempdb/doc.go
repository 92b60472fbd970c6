// Package tempdb starts a throwaway PostgreSQL cluster in a temporary
// directory (initdb + pg_ctl) and removes it afterwards. The tests, the
// benchmarks and `pgrules demo` all use it.
//
// initdb refuses to run as root, so when the process is root the server's
// programs run as the "postgres" system user, which owns the directory.
package tempdb
