package tempdb

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Options shape a new cluster.
type Options struct {
	// HBA lines are placed before the default "trust everything local"
	// lines of pg_hba.conf, so they win for the users they name.
	HBA []string
	// Settings are appended to postgresql.conf.
	Settings map[string]string
	// Port to listen on; 0 picks a free one.
	Port int
}

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	Dir    string // the temporary directory: data/, the socket and the log
	Port   int
	BinDir string
	cred   *syscall.Credential // run the server's programs as this user, if set
}

// SuperUser is the bootstrap superuser of every cluster this package makes.
const SuperUser = "postgres"

// BinDir finds the PostgreSQL server programs: $PGRULES_PG_BIN, then
// `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if d := os.Getenv("PGRULES_PG_BIN"); d != "" {
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server programs found (install postgresql, or set PGRULES_PG_BIN to the directory holding initdb)")
}

func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start initialises and starts a new cluster.
func Start(opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgrules-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, BinDir: bin, Port: opts.Port}
	if err := c.init(opts); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init(opts Options) error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, so PostgreSQL must run as the postgres user, which does not exist: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(c.Dir, uid, gid); err != nil {
			return err
		}
	}
	if c.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return err
		}
		c.Port = p
	}
	if err := c.run("initdb", "-D", c.DataDir(), "-U", SuperUser, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"); err != nil {
		return err
	}
	conf := map[string]string{
		"listen_addresses":          "'127.0.0.1'",
		"port":                      strconv.Itoa(c.Port),
		"unix_socket_directories":   "'" + c.Dir + "'",
		"fsync":                     "off",
		"full_page_writes":          "off",
		"synchronous_commit":        "off",
		"max_connections":           "300",
		"max_prepared_transactions": "20",
		"log_min_messages":          "warning",
	}
	for k, v := range opts.Settings {
		conf[k] = v
	}
	var b strings.Builder
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, conf[k])
	}
	if err := c.appendFile("postgresql.conf", b.String()); err != nil {
		return err
	}
	hba := strings.Join(opts.HBA, "\n") + "\nlocal all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
	if err := c.writeFile("pg_hba.conf", hba); err != nil {
		return err
	}
	return c.Start()
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// LogFile is the server log.
func (c *Cluster) LogFile() string { return filepath.Join(c.Dir, "postgres.log") }

// Start starts the server of an initialised cluster (again, after Stop).
func (c *Cluster) Start() error {
	return c.run("pg_ctl", "-D", c.DataDir(), "-l", c.LogFile(), "-w", "-t", "60", "start")
}

// Stop stops the server with a fast shutdown, keeping the files.
func (c *Cluster) Stop() error {
	return c.run("pg_ctl", "-D", c.DataDir(), "-m", "fast", "-w", "-t", "60", "stop")
}

// Restart stops and starts the server.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.Start()
}

// Destroy stops the server and removes every file of the cluster.
func (c *Cluster) Destroy() error {
	err := c.Stop()
	if rmErr := os.RemoveAll(c.Dir); err == nil {
		err = rmErr
	}
	return err
}

// URL is a connection URL for user and database over TCP.
func (c *Cluster) URL(user, database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", user, c.Port, database)
}

// Bin is the path of one of the server's programs (psql, pgbench, ...).
func (c *Cluster) Bin(name string) string { return filepath.Join(c.BinDir, name) }

func (c *Cluster) run(prog string, args ...string) error {
	cmd := exec.Command(c.Bin(prog), args...)
	cmd.Dir = c.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Env = append(os.Environ(), "HOME="+c.Dir)
	}
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(c.LogFile())
		return fmt.Errorf("%s %s: %w\n%s%s", prog, strings.Join(args, " "), err, out.String(), tail(log, 2000))
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (c *Cluster) appendFile(name, text string) error {
	f, err := os.OpenFile(filepath.Join(c.DataDir(), name), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (c *Cluster) writeFile(name, text string) error {
	path := filepath.Join(c.DataDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	if c.cred != nil {
		return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
	}
	return nil
}
