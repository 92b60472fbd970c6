package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgrules/pgrules/internal/tempdb"
)

// Things a section may need; preflight checks them all before anything
// slow starts, so a missing tool fails in a second, not after a build.
const (
	needPostgres  = "postgres"
	needPgbench   = "pgbench"
	needPgbouncer = "pgbouncer"
	needPgrules   = "pgrules"
)

const installHint = "`make bench` installs what the benchmarks need (scripts/deps.sh bench)"

// harness owns everything the sections share: the throwaway PostgreSQL, the
// proxies in front of it, the temporary files, and the order in which all of
// it is torn down. Each component starts on first use.
type harness struct {
	opts     options
	progress io.Writer
	versions map[string]string

	cleanups []cleanup
	tmp      string // the program's temporary directory (root-owned)
	cred     *syscall.Credential
	goBin    string
	pgbncBin string

	pg          *tempdb.Cluster
	rulesBin    string
	rulesPort   int
	bouncerPort int
	pgbenchDB   string
	// The proxies' processes, whose CPU time a section may read.
	rulesSrv   *server
	bouncerSrv *server
}

type cleanup struct {
	what string
	fn   func() error
}

func newHarness(opts options, progress io.Writer) (*harness, error) {
	h := &harness{opts: opts, progress: progress, versions: map[string]string{}}
	if os.Geteuid() == 0 {
		// PostgreSQL and PgBouncer both refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, so PostgreSQL and PgBouncer must run as the postgres user, which does not exist (%v); %s", err, installHint)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		h.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	tmp, err := os.MkdirTemp("", "pgrules-bench-")
	if err != nil {
		return nil, err
	}
	h.tmp = tmp
	h.onClose("remove "+tmp, func() error { return os.RemoveAll(tmp) })
	return h, nil
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, "bench: "+format+"\n", args...)
}

// onClose registers a clean-up step; close runs them last first, so that
// clients and proxies stop before the server they talk to.
func (h *harness) onClose(what string, fn func() error) {
	h.cleanups = append(h.cleanups, cleanup{what, fn})
}

func (h *harness) close() error {
	var errs []error
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		if err := h.cleanups[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.cleanups[i].what, err))
		}
	}
	h.cleanups = nil
	return errors.Join(errs...)
}

// preflight checks that every tool the sections need is there and records
// its version for the report.
func (h *harness) preflight(ctx context.Context, needs map[string]bool) error {
	var missing []string
	version := func(key string, prog string, args ...string) {
		out, err := run(ctx, command(ctx, nil, prog, args...))
		if err == nil {
			h.versions[key], _, _ = strings.Cut(strings.TrimSpace(out), "\n")
		}
	}
	if needs[needPostgres] || needs[needPgbench] {
		bin, err := tempdb.BinDir()
		if err != nil {
			missing = append(missing, err.Error())
		} else {
			version("postgres", filepath.Join(bin, "postgres"), "--version")
			if needs[needPgbench] {
				if _, err := os.Stat(filepath.Join(bin, "pgbench")); err != nil {
					missing = append(missing, "pgbench is not in "+bin+" (Debian: postgresql-contrib)")
				} else {
					version("pgbench", filepath.Join(bin, "pgbench"), "--version")
				}
			}
		}
	}
	if needs[needPgbouncer] {
		h.pgbncBin = findPgbouncer()
		if h.pgbncBin == "" {
			missing = append(missing, "pgbouncer is not on PATH nor in /usr/sbin")
		} else {
			version("pgbouncer", h.pgbncBin, "--version")
		}
	}
	if needs[needPgrules] {
		// A -pgrules-bin was checked by parseFlags; without one, go builds it.
		if h.opts.pgrulesBin == "" {
			if bin, err := exec.LookPath("go"); err != nil {
				missing = append(missing, "go is not on PATH (needed to build pgrules)")
			} else {
				h.goBin = bin
				if out, err := run(ctx, command(ctx, nil, bin, "env", "GOVERSION")); err == nil {
					h.versions["go"] = strings.TrimSpace(out)
				}
			}
		}
		if rev, err := run(ctx, command(ctx, nil, "git", "rev-parse", "--short", "HEAD")); err == nil {
			h.versions["pgrules"] = "commit " + strings.TrimSpace(rev) + " plus the working tree"
		}
	}
	if _, ok := h.versions["go"]; !ok {
		h.versions["go"] = runtime.Version()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools:\n  %s\n%s", strings.Join(missing, "\n  "), installHint)
	}
	return nil
}

func findPgbouncer() string {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// postgres is the throwaway server every section measures against.
func (h *harness) postgres(ctx context.Context) (*tempdb.Cluster, error) {
	if h.pg != nil {
		return h.pg, nil
	}
	h.logf("starting a throwaway PostgreSQL")
	settings := map[string]string{
		// Room for pgbench's scale-10 tables (about 160 MB) in shared
		// buffers, so reads measure the path through the proxies and not
		// copies from the kernel's page cache.
		"shared_buffers": "'512MB'",
	}
	maps.Copy(settings, statsSettings)
	c, err := tempdb.Start(tempdb.Options{Settings: settings})
	if err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	h.pg = c
	h.onClose("stop PostgreSQL", c.Destroy)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if res, err := execSQL(ctx, c.URL(tempdb.SuperUser, "postgres"), "SHOW server_version"); err == nil && len(res) == 1 && len(res[0].Rows) == 1 {
		h.versions["postgres_server"] = string(res[0].Rows[0][0])
	}
	return c, nil
}

// url is a connection URL for database on the local port of PostgreSQL or
// of one of the proxies in front of it.
func url(port int, database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", tempdb.SuperUser, port, database)
}

// pgrules builds the proxy (once) and runs it as its own process in front of
// PostgreSQL, returning its port.
func (h *harness) pgrules(ctx context.Context) (int, error) {
	if h.rulesPort != 0 {
		return h.rulesPort, nil
	}
	pg, err := h.postgres(ctx)
	if err != nil {
		return 0, err
	}
	bin, err := h.buildPgrules(ctx)
	if err != nil {
		return 0, err
	}
	port, err := tempdb.FreePort()
	if err != nil {
		return 0, err
	}
	args := []string{"serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--upstream", url(pg.Port, "postgres"),
		"--log-level", "warn",
		"--shutdown-timeout", "2s",
	}
	env := append(os.Environ(), h.opts.pgrulesEnv...)
	h.logf("starting pgrules on port %d%s", port, strings.TrimRight(" "+strings.Join(h.opts.pgrulesEnv, " "), " "))
	srv, err := startServer("pgrules", filepath.Join(h.tmp, "pgrules.log"), nil, env, bin, args...)
	if err != nil {
		return 0, err
	}
	h.onClose("stop pgrules", func() error { return srv.stop(10 * time.Second) })
	if err := srv.ready(ctx, url(port, "postgres"), 15*time.Second); err != nil {
		return 0, err
	}
	h.rulesPort, h.rulesSrv = port, srv
	return port, nil
}

func (h *harness) buildPgrules(ctx context.Context) (string, error) {
	if h.rulesBin != "" {
		return h.rulesBin, nil
	}
	if h.opts.pgrulesBin != "" {
		h.rulesBin = h.opts.pgrulesBin
		return h.rulesBin, nil
	}
	out, err := run(ctx, command(ctx, nil, h.goBin, "env", "GOMOD"))
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(out)
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the benchmark from inside the pgrules module (e.g. `make bench` at its root), or pass -pgrules-bin")
	}
	bin := filepath.Join(h.tmp, "pgrules")
	h.logf("building pgrules")
	build := command(ctx, nil, h.goBin, "build", "-o", bin, "./cmd/pgrules")
	build.Dir = filepath.Dir(gomod)
	if _, err := run(ctx, build); err != nil {
		return "", fmt.Errorf("building pgrules: %w", err)
	}
	h.rulesBin = bin
	return bin, nil
}

// pgbouncer runs PgBouncer in session mode in front of PostgreSQL, with its
// configuration in a temporary directory of its own (owned by the postgres
// user when running as root, since PgBouncer must not run as root), and
// returns its port.
func (h *harness) pgbouncer(ctx context.Context) (int, error) {
	if h.bouncerPort != 0 {
		return h.bouncerPort, nil
	}
	pg, err := h.postgres(ctx)
	if err != nil {
		return 0, err
	}
	if h.pgbncBin == "" {
		return 0, errors.New("pgbouncer was not found by preflight")
	}
	dir, err := os.MkdirTemp("", "pgrules-bench-pgbouncer-")
	if err != nil {
		return 0, err
	}
	h.onClose("remove "+dir, func() error { return os.RemoveAll(dir) })
	port, err := tempdb.FreePort()
	if err != nil {
		return 0, err
	}
	// auth_type trust still wants every user in auth_file. The pool is
	// larger than any client count a section uses so that no client ever
	// waits for a server connection, which would measure queueing instead
	// of the pooler. Connection logging is off, as pgrules logs at warn.
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = trust
auth_file = %s
pool_mode = session
max_client_conn = 200
default_pool_size = 50
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
`, pg.Port, port, dir, filepath.Join(dir, "userlist.txt"))
	files := map[string]string{
		"pgbouncer.ini": ini,
		"userlist.txt":  fmt.Sprintf("%q \"\"\n", tempdb.SuperUser),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			return 0, err
		}
	}
	if h.cred != nil {
		for _, name := range []string{"", "pgbouncer.ini", "userlist.txt"} {
			if err := os.Chown(filepath.Join(dir, name), int(h.cred.Uid), int(h.cred.Gid)); err != nil {
				return 0, err
			}
		}
	}
	h.logf("starting PgBouncer (session mode) on port %d", port)
	srv, err := startServer("pgbouncer", filepath.Join(dir, "pgbouncer.log"), h.cred, os.Environ(), h.pgbncBin, filepath.Join(dir, "pgbouncer.ini"))
	if err != nil {
		return 0, err
	}
	h.onClose("stop PgBouncer", func() error { return srv.stop(10 * time.Second) })
	if err := srv.ready(ctx, url(port, "postgres"), 15*time.Second); err != nil {
		return 0, err
	}
	h.bouncerPort, h.bouncerSrv = port, srv
	return port, nil
}
