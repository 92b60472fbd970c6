package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// command prepares a short-lived child (go build, pgbench, psql) that
// cancelling ctx stops.
func command(ctx context.Context, cred *syscall.Credential, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.SysProcAttr = procAttr(cred)
	// The whole group, because go build leaves compilers and linkers behind
	// if only the go command itself is stopped.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs cmd and returns its output (stdout and stderr together). The
// error of a failed run carries the output, since that is where the tools
// say what went wrong.
func run(ctx context.Context, cmd *exec.Cmd) (string, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), ctx.Err()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, tail(out.String(), 3000))
	}
	return out.String(), nil
}

// server is a long-running child (pgrules, PgBouncer) that the harness stops
// itself, in order, at the end.
type server struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // how it exited; set before done is closed
}

func startServer(name, logPath string, cred *syscall.Credential, env []string, prog string, args ...string) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(prog, args...)
	cmd.SysProcAttr = procAttr(cred)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// stop asks the server to exit and kills it if it has not within timeout.
func (s *server) stop(timeout time.Duration) error {
	select {
	case <-s.done:
		return nil // already gone; ready() reports why if it matters
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(timeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed it", s.name, timeout)
	}
}

func (s *server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	return tail(string(b), 3000)
}

// ready waits until a PostgreSQL connection through the server to url
// succeeds and runs a query, which proves more than an open port: that the
// server reaches the upstream and accepts this user and database.
func (s *server) ready(ctx context.Context, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("%s exited while starting (%v); its log:\n%s", s.name, s.err, s.logTail())
		default:
		}
		if last = ping(ctx, url); last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s: %v; its log:\n%s", s.name, within, last, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	return err
}

// execSQL runs statements on a fresh connection to url.
func execSQL(ctx context.Context, url, sql string) ([]*pgconn.Result, error) {
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sql, err)
	}
	return res, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, which
// Linux fixes at 100 for user space whatever the kernel's own tick rate.
const userHZ = 100

// cpu is the CPU time the server's process (all its threads) has used so
// far, user and system time together.
func (s *server) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s's CPU time: %w", s.name, err)
	}
	ticks, err := parseStatCPU(string(b))
	if err != nil {
		return 0, fmt.Errorf("%s's CPU time: %w", s.name, err)
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// parseStatCPU returns utime+stime, in clock ticks, from the line of
// /proc/<pid>/stat. The fields are counted from the last ")": the
// command's name before it may itself hold spaces and parentheses.
func parseStatCPU(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", tail(stat, 200))
	}
	// After the name come state (field 3) ... utime (14) and stime (15).
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name in %q", len(f), tail(stat, 200))
	}
	var total int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time %q: %w", v, err)
		}
		total += n
	}
	return total, nil
}
